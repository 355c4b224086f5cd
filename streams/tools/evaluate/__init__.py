"""`crowdpulse evaluate`: options, the run through a real worker, the pure scoring, plots and the report."""
