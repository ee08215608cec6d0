"""Ready-made structures and data sets for examples, tests and benchmarks."""
