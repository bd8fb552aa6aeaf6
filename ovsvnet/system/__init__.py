"""Everything outside this process: programs, pidfiles, kernel facts, netlink, xfrm, and the
OVS daemons' OpenFlow and unixctl sockets. May import only the pure core (ovsvnet.errors,
ovsvnet.flows, ovsvnet.ipsec, ...); nothing here knows about vnets' storage or the CLI.
"""
