"""Benchmarks for ovsvnet: data plane, control plane and convergence, each against a
baseline measured in the same run on the same machine.

Run everything with ``python -m bench.run`` (about 20 minutes, root) or a smoke pass with
``python -m bench.run --quick`` (under 3 minutes, asserts nothing about speed). Results go
to ``bench/results/`` (JSON, Markdown tables, PNG plots); see BENCHMARKS.md.
"""
