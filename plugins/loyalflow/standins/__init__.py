"""Local stand-ins for providers, used by tests, chaos and benchmarks."""
