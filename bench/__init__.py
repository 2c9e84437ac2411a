"""Performance benchmarks (issue 6): ``python -m bench``; see docs/benchmarks.md."""
