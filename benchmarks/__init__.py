"""Side-by-side measurements; each module's `run()` returns one JSON-able report.

`python -m benchmarks` runs them all and writes benchmarks/results/<module>.json.
"""
