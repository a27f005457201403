"""crmbook benchmarks: `make bench` (python -m benchmarks). Each case is timed against a named
baseline in the same run, in fresh processes, and reported as a ratio (the machine is shared)."""
