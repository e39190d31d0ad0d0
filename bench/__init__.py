"""`make bench`: the platform's benchmarks. Each area is a module ``bench.<area>`` whose
``main()`` measures, records its flat figures with :func:`bench.results.record` and returns
0 (or non-zero when a run failed; a missed target is not a failure)."""
