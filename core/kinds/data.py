"""The dataset parameters shared by every kind that loads a dataset (train, encode, cluster)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from core.data_files import DATASETS, PATH_REQUIRED
from core.params import require


@dataclass(frozen=True)
class DataParams:
    """Which data a job reads. Shared by every kind that loads a dataset."""

    dataset: str | None = "digits"  # digits | mnist | olivetti | npz | images | wifi (tabular, for cluster)
    data_path: str | None = None  # the file (a folder for images); default: its usual name in LATENTFARM_DATA_DIR
    limit: int | None = None  # use the first N training and first N test items only (quick runs, tests)
    image_size: int | None = None  # resize images to this square size (olivetti: 64, image folders: 96)
    color: Literal["grey", "rgb"] = "grey"  # image folders: keep colour or convert to grey
    test_size: float = 0.2  # the test fraction for datasets that ship without a split (digits, wifi, olivetti...)

    def validate_data(self, required: bool = True) -> None:
        require(self.limit is None or self.limit >= 2, "limit", f"must be >= 2, got {self.limit}")
        require(self.image_size is None or 8 <= self.image_size <= 1024, "image_size",
                f"must be from 8 to 1024, got {self.image_size}")
        require(0 < self.test_size < 1, "test_size", f"must be in (0, 1), got {self.test_size}")
        if self.dataset is None:
            require(not required, "dataset", "required")
            require(self.data_path is None, "data_path", "given without a dataset: set params.dataset too")
            return
        require(self.dataset in DATASETS, "dataset",
                f"unknown dataset {self.dataset!r}; expected one of: {', '.join(DATASETS)}")
        require(self.dataset not in PATH_REQUIRED or self.data_path is not None, "data_path",
                f"required for dataset {self.dataset!r}")


def data_params(params: Any) -> DataParams:
    """The dataset fields of any kind's params (a subclass of DataParams, or parsed train params)."""
    return DataParams(**{f.name: getattr(params, f.name) for f in dataclasses.fields(DataParams)})
