"""Which data a job reads: its own dataset params, or (when it has none) those of the model it uses."""

from __future__ import annotations

import dataclasses
from typing import Any

from core.config import DataParams, TrainConfig
from core.params import parse_config
from storage.records import Job


def data_params(config: Any, fallback: Job | None = None) -> DataParams:
    """``config``'s dataset params if it names a dataset, else those of the ``fallback`` train job."""
    if getattr(config, "dataset", None) is not None:
        return DataParams(**{f.name: getattr(config, f.name) for f in dataclasses.fields(DataParams)})
    if fallback is None:
        raise ValueError("no dataset given and no model to take it from")
    trained = parse_config(TrainConfig, fallback.params)
    return DataParams(**{f.name: getattr(trained, f.name) for f in dataclasses.fields(DataParams)})


def load_data(params: DataParams) -> Any:
    from core.datasets import load_for

    return load_for(params)
