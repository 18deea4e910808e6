"""Training: the default task, data splits, the Keras model and its training loop; ``gru-build``.

Layer: training, the top of the package. Heavy side (TensorFlow, Keras). May import every layer
below it (pipeline.packaging to export, verify and publish what it trained; pipeline.keras_source;
pipeline.report; the shared modules); nothing imports it.
"""
