"""Model builders: each returns Keras models for one ``TrainConfig.model`` name."""
