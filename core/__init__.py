"""latentfarm core: the machine-learning code. Pure functions, config dataclasses in, arrays and metrics out.

Importing this package, the job kinds' declarations (``core.kinds``) or what they use (``core.params``,
``core.errors``, ``core.data_files``, ``core.models.defaults``, ``core.dream``) never imports TensorFlow or Keras:
control-plane nodes validate specs with them without TensorFlow installed.
"""
