"""The on-device loop: assembler, preprocessing, deadline, decisions, log, metrics (gateway side: no torch)."""
