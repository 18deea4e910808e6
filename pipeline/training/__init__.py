"""Training: the default task, data splits, the Keras model and its training loop; ``gru-build``.

Heavy side (TensorFlow, Keras). May import the shared modules, ``pipeline.settings``,
``pipeline.export``, ``pipeline.verification`` and ``pipeline.report``; nothing imports it
except its CLI.
"""
