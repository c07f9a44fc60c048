"""Which data a job reads: its own dataset params, or (when it has none) those of the model it uses."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from core.config import DataParams, TrainConfig
from core.data_files import dataset_identity
from core.params import parse_config
from storage.records import Job
from workers.context import JobContext


def data_params(config: Any, fallback: Job | None = None) -> DataParams:
    """``config``'s dataset params if it names a dataset, else those of the ``fallback`` train job."""
    if getattr(config, "dataset", None) is not None:
        return DataParams(**{f.name: getattr(config, f.name) for f in dataclasses.fields(DataParams)})
    if fallback is None:
        raise ValueError("no dataset given and no model to take it from")
    trained = parse_config(TrainConfig, fallback.params)
    return DataParams(**{f.name: getattr(trained, f.name) for f in dataclasses.fields(DataParams)})


def load_data(ctx: JobContext, params: DataParams) -> Any:
    """Load the dataset and record its identity (name + file sha256) on the job, as its fingerprint saw it."""
    from core.datasets import load_for

    assert params.dataset is not None
    path = Path(params.data_path) if params.data_path else None
    ctx.progress(0.0, f"dataset {dataset_identity(params.dataset, path)}" + (f" at {path}" if path else ""))
    return load_for(params)
