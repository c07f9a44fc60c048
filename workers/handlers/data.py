"""Which data a job reads: its own dataset params, or (when it has none) those of the model it uses."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from core.data_files import dataset_identity
from core.datasets import Dataset, load_for
from core.kinds.data import DataParams, data_params
from core.kinds.train import TrainParams
from core.params import parse_config
from storage.records import Job
from workers.context import JobContext
from workers.datasets import local_data


def params_of(params: Any, fallback: Job | None = None) -> DataParams:
    """``params``' dataset fields if they name a dataset, else those of the ``fallback`` train job."""
    if getattr(params, "dataset", None) is not None:
        return data_params(params)
    if fallback is None:
        raise ValueError("no dataset given and no model to take it from")
    return data_params(parse_config(TrainParams, fallback.params))


def load_data(ctx: JobContext, params: DataParams) -> Dataset:
    """Load the dataset and record which one it is (name and file), as the job's fingerprint saw it. A registered
    dataset is read from the artifact store (``workers.datasets``): no local copy is needed."""
    assert params.dataset is not None
    path = Path(params.data_path) if params.data_path else None
    ctx.progress(0.0, f"dataset {dataset_identity(params.dataset, path)}" + (f" at {path}" if path else ""))
    if params.data_path:
        params = dataclasses.replace(params, data_path=local_data(ctx, params.data_path))
    return load_for(params)
