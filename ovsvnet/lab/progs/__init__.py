"""Small programs the lab runs inside its namespaces, as
``python -m ovsvnet.lab.progs.NAME ARGS`` (``ip netns exec NS ...``).

Each imports only the standard library and prints what its caller parses; none imports the
rest of ovsvnet, so starting one stays cheap.
"""
