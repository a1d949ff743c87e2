"""What the benchmarks share besides the report: process measurements and the peers' parts."""
