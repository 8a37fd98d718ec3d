"""Dataset readers, windowing, leak-free splits and noise (build side)."""
