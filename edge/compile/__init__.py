"""Compilation for the target: OpenVINO IR and compile settings, TensorRT engines (built on the target)."""
