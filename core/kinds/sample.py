"""``sample``: draw z-points with a sampler, decode them, and score the images (``core.sampling``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.kinds.base import Input, Kind
from core.params import require

SAMPLERS = ("uniform_box", "normal", "fitted_normal", "pca_ellipsoid", "interpolate")


@dataclass(frozen=True)
class SampleParams:
    """Draw z-points with a sampler, decode them, and score the images (needs an encode job; a cnn to score)."""

    sampler: Literal["uniform_box", "normal", "fitted_normal", "pca_ellipsoid", "interpolate"] = "fitted_normal"
    n: int = 1000  # how many images to draw and score
    k_sigma: float = 2.0  # pca_ellipsoid: the ellipsoid's radius in standard deviations along each PCA axis
    steps: int = 10  # interpolate: images per line between two encoded test images
    grid: int = 100  # how many of the images go into the PNG grid
    seed: int = 0

    def validate(self) -> None:
        require(self.n >= 2, "n", f"must be >= 2, got {self.n}")
        require(self.k_sigma > 0, "k_sigma", f"must be > 0, got {self.k_sigma}")
        require(self.steps >= 2, "steps", f"must be >= 2, got {self.steps}")
        require(1 <= self.grid <= 400, "grid", f"must be from 1 to 400, got {self.grid}")


KINDS = (
    Kind("sample", SampleParams, "gpu", "draws z-points with a sampler, decodes them and scores the images",
         handler="workers.handlers.sample:run_sample",
         inputs=(Input("encode", "the latents and the autoencoder to decode with"),
                 Input("train", "the CNN that scores the samples", min=0, models=("cnn",))),
         gallery=("samples.png",)),
)
