"""steplab experiments: training examples and, next, the AlgoPerf-style runner."""
