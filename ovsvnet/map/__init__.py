"""``ovsvnet map``: the network drawn as a picture.

``model`` (pure: facts -> graph of hosts, vnets, tunnels), ``dot`` (pure: graph -> DOT),
``html`` (pure: SVG -> a self-contained page), ``render`` (runs Graphviz's ``dot``) and
``gather`` (reads the facts: this host's OVSDB, its agent, the registry). May import the
pure core, :mod:`ovsvnet.ops`, :mod:`ovsvnet.system`, :mod:`ovsvnet.agent.control` and
:mod:`ovsvnet.registry`; never the CLI or the lab.
"""
