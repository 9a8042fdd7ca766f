"""The ``triage`` command line: train, export, parity, serve, predict and explain.

The one place that may import training (``model.train``) and ``export``, and only lazily, inside the command that
needs them, so that ``triage serve`` and ``triage predict`` stay torch-free.
"""
