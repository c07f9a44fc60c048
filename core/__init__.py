"""latentfarm core: the machine-learning code. Pure functions, config dataclasses in, arrays and metrics out.

Importing this package, or its config modules (``core.params``, ``core.config``, ``core.data_files``),
never imports TensorFlow or Keras: control-plane nodes validate specs with them without TensorFlow installed.
"""
