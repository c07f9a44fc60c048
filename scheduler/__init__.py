"""latentfarm control plane: batch specs, planning, dispatch to Celery, the CLI. Runs without TensorFlow."""
