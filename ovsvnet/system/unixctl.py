"""Talk to OVS daemons (and ovsvnet's agent) over their unixctl sockets, as ``ovs-appctl``
does: python-ovs's JSON-RPC connection instead of a process per call, with a deadline."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import ovs.jsonrpc
import ovs.poller
import ovs.stream

from ovsvnet.errors import OvsUnreachableError, OvsvnetError
from ovsvnet.system import proc


def daemon_ctl(rundir: str, daemon: str) -> str | None:
    """The unixctl socket of an OVS daemon in ``rundir``.

    ``<daemon>.ctl`` when it was started with ``--unixctl`` there (the lab does), else the
    default ``<daemon>.<pid>.ctl`` named by its pidfile (packaged OVS).
    """
    plain = os.path.join(rundir, f"{daemon}.ctl")
    if os.path.exists(plain):
        return plain
    pid = proc.read_pid(os.path.join(rundir, f"{daemon}.pid"))
    if pid:
        ctl = os.path.join(rundir, f"{daemon}.{pid}.ctl")
        if os.path.exists(ctl):
            return ctl
    return None


def call(ctl: str | os.PathLike[str], command: str, *args: str, timeout: float = 10) -> str:
    """Run one unixctl command; its reply, or :class:`OvsvnetError` with the daemon's error
    (:class:`OvsUnreachableError` when nothing answers on ``ctl`` within ``timeout`` s, as
    ``ovs-appctl --timeout`` does: a wedged daemon must not hang its caller)."""
    path = str(ctl)
    if not Path(path).exists():
        raise OvsUnreachableError(f"no control socket {path}")
    deadline = time.monotonic() + timeout
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(f"unix:{path}"),
                                                 int(timeout * 1000))
    if error:
        raise OvsUnreachableError(f"cannot connect to {path}: {os.strerror(error)}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        request = ovs.jsonrpc.Message.create_request(command, list(args))
        error = rpc.send(request)
        reply = None
        while not error:
            rpc.run()
            error, reply = rpc.recv()
            if error == errno.EAGAIN:
                error = 0
            if reply is not None or error:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise OvsUnreachableError(f"{path}: {command}: no answer within {timeout:g}s")
            poller = ovs.poller.Poller()
            rpc.wait(poller)
            rpc.recv_wait(poller)
            poller.timer_wait(int(left * 1000))
            poller.block()
    finally:
        rpc.close()
    if error or reply is None:
        raise OvsUnreachableError(f"{path}: {command}: {os.strerror(error) if error else 'closed'}")
    if reply.error is not None:
        raise OvsvnetError(f"{command}: {str(reply.error).strip()}")
    return str(reply.result or "")


def vswitchd(rundir: str, command: str, *args: str) -> str:
    """A unixctl command to the ovs-vswitchd of ``rundir``."""
    ctl = daemon_ctl(rundir, "ovs-vswitchd")
    if ctl is None:
        raise OvsUnreachableError(f"no ovs-vswitchd control socket in {rundir} (use --rundir)")
    return call(ctl, command, *args)
