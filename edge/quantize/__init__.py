"""INT8 quantization: NNCF for OpenVINO, explicit Q/DQ ONNX for TensorRT, sensitivity fallback (build side)."""
