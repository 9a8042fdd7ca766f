"""The triage network, its data, training and the from-scratch NumPy engine.

Modules that import torch (``network``, ``train``, ``train_hardware``, ``augment``, ``crack_supervision``) are
imported explicitly by their users;
this package itself stays torch-free so the serving path can use ``config`` and ``preprocess``.
"""
