"""``ovsvnet doctor``: check a host for what ovsvnet needs and say what to fix.

``findings`` (pure: facts -> one line each), ``probe`` (the bounded multicast probe),
``checks`` (gathers the facts and runs everything). May import :mod:`ovsvnet.ops`,
:mod:`ovsvnet.system` and the pure core; never the CLI.
"""
