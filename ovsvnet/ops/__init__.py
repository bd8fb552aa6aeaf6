"""What the commands and the agent do to a host: vnets, peers, sync, and read-only views.

``host`` (facts: IPsec support, underlay, peers), ``state`` (reading ovsvnet's rows),
``reconcile`` (staging rows), ``sync`` (one transaction, then flows), ``vnets``, ``peers``,
``views``. May import the pure core, :mod:`ovsvnet.ovsdb` and :mod:`ovsvnet.system`; never
the CLI, the agent, the registry or the lab.
"""
