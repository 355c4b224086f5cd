"""`crowdpulse bench`: the worker side by side with the hardware limits and a naive baseline (docs/performance.md)."""
