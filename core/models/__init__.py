"""The models: one builder per ``TrainParams.model`` (``build.build_model`` picks one), what they return and how
a saved autoencoder is taken apart again (``common``), and their names and defaults (``defaults``, without Keras).

Importing this package imports no Keras: only the builder modules do.
"""
