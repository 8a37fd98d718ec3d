"""Offline accuracy-versus-latency sweeps and model choice for a latency budget."""
