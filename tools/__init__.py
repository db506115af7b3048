"""Development tools outside the runtime package: benchmarks, chaos, provider stand-ins."""
