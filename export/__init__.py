"""ONNX export, quantisation and engine parity for the triage network."""
