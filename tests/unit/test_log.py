"""Daemon log lines: key=value as before, with journald's priority prefix under systemd."""

from __future__ import annotations

import io
import logging

from ovsvnet.system import log


def test_lines_are_key_value_and_quote_what_needs_it(monkeypatch):
    record = logging.LogRecord("ovsvnet.agent", logging.WARNING, __file__, 1, "peer-up", (),
                               None)
    record.fields = {"origin": "hv2", "error": "no route to host", "empty": ""}
    line = log.KeyValueFormatter().format(record)
    assert line.startswith("ts=") and " level=warn event=peer-up origin=hv2 " in line
    assert 'error="no route to host"' in line and 'empty=""' in line
    assert log.KeyValueFormatter(journald=True).format(record).startswith("<4>ts=")


def test_event_goes_through_stdlib_logging(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(log.LOGGER, "handlers", [])
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log.setup(stream)
    log.event("sync-failed", level="error", error="boom")
    log.event("synced", flows_changed=3)
    lines = stream.getvalue().splitlines()
    assert "level=error event=sync-failed error=boom" in lines[0]
    assert "level=info event=synced flows_changed=3" in lines[1]
