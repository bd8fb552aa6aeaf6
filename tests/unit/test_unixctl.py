"""unixctl calls to a real python-ovs unixctl server in a child process: replies, errors,
and a deadline when the daemon never answers (as ``ovs-appctl --timeout``)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ovsvnet.errors import OvsUnreachableError, OvsvnetError
from ovsvnet.system import unixctl

SERVER = r"""
import sys, ovs.unixctl, ovs.unixctl.server, ovs.poller
def echo(conn, argv, aux): conn.reply(" ".join(argv))
def fail(conn, argv, aux): conn.reply_error("no such bridge")
def hang(conn, argv, aux): pass  # never answers
for name, fn in (("echo", echo), ("fail", fail), ("hang", hang)):
    ovs.unixctl.command_register(name, "", 0, 5, fn, None)
err, server = ovs.unixctl.server.UnixctlServer.create(sys.argv[1])
print("ready", flush=True)
while True:
    server.run()
    p = ovs.poller.Poller(); server.wait(p); p.block()
"""


@pytest.fixture
def ctl(tmp_path):
    path = tmp_path / "daemon.ctl"
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield path
    proc.kill()
    proc.wait()


def test_a_reply_and_a_daemon_error(ctl):
    # python-ovs 3.1's server ends a reply with a newline, as OVS's C daemons do; 4.0's not
    assert unixctl.call(ctl, "echo", "fdb/show", "br0").rstrip("\n") == "fdb/show br0"
    with pytest.raises(OvsvnetError, match="fail: no such bridge"):
        unixctl.call(ctl, "fail")


def test_a_daemon_that_never_answers_is_unreachable_after_the_timeout(ctl):
    start = time.monotonic()
    with pytest.raises(OvsUnreachableError, match="no answer within 0.5s"):
        unixctl.call(ctl, "hang", timeout=0.5)
    assert time.monotonic() - start < 3


def test_no_socket_is_unreachable(tmp_path):
    with pytest.raises(OvsUnreachableError, match="no control socket"):
        unixctl.call(tmp_path / "nothing.ctl", "version")
    assert unixctl.daemon_ctl(str(tmp_path), "ovs-vswitchd") is None
