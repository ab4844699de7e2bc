"""Generation in Ray Serve, benchmarks and judges: reasoning accuracy and harmful score."""
