"""Verification: Keras against onnxruntime, for every graph the export ships.

Heavy side. May import the shared modules, ``pipeline.runtime`` (to run artifacts exactly as users
do) and ``pipeline.export``'s emitters; ``coverage`` also takes the default task and model builder
from ``pipeline.training`` to make its cases. Tolerances live in ``tolerances``.
"""
