"""Training, evaluation and run directories (build side)."""
