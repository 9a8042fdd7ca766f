"""Everything that adapts or replaces LitServe's process model: packet pipes instead of queues, the photo hand-off
files, the patient batching loop, the supervisor, worker loss and restarts, parent death and held requests.

May import: LitServe and uvicorn (their private names only through ``service.runtime.internals``), ``service.http``,
``service.inference.engine_api``, ``service.metrics`` and ``service.settings``.
"""
