"""Example ONNX models and model store for pyserver."""
