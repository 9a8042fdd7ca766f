"""The serving side: the HTTP service that routes ticket photos with the shipped ONNX model. Never imports torch.

Rooms: ``http`` (what speaks HTTP), ``runtime`` (the process model around LitServe), ``inference`` (the engine, intake,
routing and the LitAPIs), ``explain`` (explanations of one photo). At the top: ``server`` (assembles the app),
``settings`` (the one settings class) and ``metrics`` (Prometheus, shared by every room).
May import: ``model``'s torch-free modules (``config``, ``card``, ``preprocess``, ``metrics``, ``numpy_*``,
``receptive_field``, ``checkpoint``), never ``export``, torch or the command line (``triage_cli``).
"""
