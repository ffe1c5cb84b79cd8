"""Reports from results: a run's report (generic, or the paper's with its tables and claims audit), reports over
many runs (sweeps), figures, the self-contained HTML page, and the statistics they rest on."""
