"""The model at work: the ONNX Runtime engine, device plans, photo intake, the routing rule and the LitAPIs
(``engine_api``, ``route_api``, ``explain_api``) that a worker runs.

May import: ONNX Runtime, NumPy, Pillow, ``model``'s torch-free modules, ``service.runtime`` (the batching loop, the
hand-off), ``service.http`` (uploads, logs), ``service.explain`` and ``service.metrics``.
"""
