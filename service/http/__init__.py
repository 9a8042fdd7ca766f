"""What speaks HTTP: the ASGI middleware, the connection protocol, uploads and multipart streaming, the API key,
JSON logs, the OpenAPI description and the explanation page (with its ``static/`` files).

May import: Starlette, FastAPI, python-multipart, ``service.metrics``, ``service.inference`` (intake errors, the route
paths) and ``service.explain.options``; uvicorn's internals only through ``service.runtime.internals``.
"""
