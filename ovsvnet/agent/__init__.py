"""``ovsvnet agent``: the daemon that discovers peers and keeps tunnels and flows right.

``core`` (the loop), ``discovery`` (the UDP socket and announcements), ``control`` (the
unixctl socket: status, sync). May import the pure core, :mod:`ovsvnet.ops`,
:mod:`ovsvnet.registry` and :mod:`ovsvnet.system`; never the CLI or the lab.
"""
