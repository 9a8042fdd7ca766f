"""The serving side: ONNX Runtime engine, routing, photo intake, HTTP APIs and the CLI. Never imports torch."""
