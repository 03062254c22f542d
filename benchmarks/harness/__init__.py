"""The pieces of ``benchmarks/bench.py``: fixtures, child processes, peers, sinks, sections, output."""
