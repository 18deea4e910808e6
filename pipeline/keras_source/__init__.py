"""Keras source: load a user's Keras model, describe it, run it (float32, float64, chunk by chunk).

Layer: keras source, above runtime and the shared modules, below export, verification, report and
packaging. Heavy side (keras, imported lazily inside the functions that need it).
Modules: ``load`` (model files), ``describe`` (what the model is and takes; its p(class 1)),
``run`` (keras_proba, float64_copy, KerasChunkRunner).
"""
