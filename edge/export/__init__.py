"""ONNX export of trained models, checked against PyTorch on real samples (build side)."""

from edge.export.onnx_export import ParityReport, export_onnx, parity_check

__all__ = ["ParityReport", "export_onnx", "parity_check"]
