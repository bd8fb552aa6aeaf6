"""Daemon logs (the agent and its registry glue): one ``key=value`` line per event, on
stdlib :mod:`logging`.

Lines look as before (``ts=... level=info event=peer-up origin=hv2 ...``) so existing log
readers keep working; under systemd (``$JOURNAL_STREAM`` set) each line starts with the
``<N>`` priority prefix journald understands, so ``journalctl -p warning`` shows warnings
and errors only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

LOGGER = logging.getLogger("ovsvnet.agent")

#: logging level -> syslog priority (RFC 5424) for journald's ``<N>`` prefix.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
                logging.ERROR: "error", logging.CRITICAL: "crit"}
_LEVELS = {name: level for level, name in _LEVEL_NAMES.items()}


def _value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text or '"' in text) else text


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... event=... k=v ...`` from records made by :func:`event`."""

    def __init__(self, journald: bool = False):
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"ts={ts}", f"level={_LEVEL_NAMES.get(record.levelno, 'info')}",
                 f"event={record.getMessage()}"]
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={_value(value)}")
        line = " ".join(parts)
        if self.journald:
            line = f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line


def setup(stream: Any = None) -> None:
    """Send the agent's events to stderr (journald under systemd), once."""
    if LOGGER.handlers:
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter(journald=bool(os.environ.get("JOURNAL_STREAM"))))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


def event(name: str, level: str = "info", **fields: Any) -> None:
    """Log one event: ``event("peer-up", origin="hv2", address="10.0.0.2")``."""
    LOGGER.log(_LEVELS.get(level, logging.INFO), name, extra={"fields": fields})
