"""Verification: graphs or files plus a reference -> results (equivalence, stream, unrolled, other runtimes).

The reference (Keras' numbers) arrives as functions and objects from the caller (pipeline.packaging);
artifacts run through pipeline.runtime exactly as users run them. Tolerances live in ``tolerances``.
Layer: verification, a peer of export and report (neither imports the other). May import the shared
modules, pipeline.keras_source and pipeline.runtime; never pipeline.export, pipeline.packaging or
pipeline.training.
"""
