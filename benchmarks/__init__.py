"""zkpy's benchmark suite: `python -m benchmarks run` (end to end) and `python -m benchmarks micro`
(the pure core). See docs/benchmarks.md."""
