"""The cluster registry: a vnet defined once for many hosts, in a clustered OVSDB.

``model`` (schema, rows <-> definitions, the agent's plan: pure), ``client`` (commands),
``follow`` (the agent's IDL on it), ``sync`` (the registry inside the agent's loop),
``server`` (running a member: its database server and its TLS relay), ``pki`` (the two CAs
and the certificates of members and chassis), ``upgrade`` (converting an older schema).
May import the pure core, :mod:`ovsvnet.ovsdb`, :mod:`ovsvnet.ops` and :mod:`ovsvnet.system`;
never the CLI or the lab.
"""
