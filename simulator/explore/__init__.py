"""Many simulate() calls: sweeps, comparisons, capacity plans."""
