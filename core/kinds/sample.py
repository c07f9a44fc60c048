"""``sample``: draw z-points with a sampler, decode them, and score the images (``core.sampling``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from core.kinds.base import Input, Kind, Parent
from core.memory import data_shape, sample_bytes
from core.params import require

SAMPLERS = ("uniform_box", "normal", "fitted_normal", "pca_ellipsoid", "interpolate")


@dataclass(frozen=True)
class SampleParams:
    """Draw z-points with a sampler, decode them, and score the images (needs an encode job; a cnn to score)."""

    # where the z-points are drawn: the latents' bounding box, N(0, I), a normal fitted to the latents, inside their
    # PCA ellipsoid, or on lines between encoded test images
    sampler: Literal["uniform_box", "normal", "fitted_normal", "pca_ellipsoid", "interpolate"] = "fitted_normal"
    n: int = 1000  # how many images to draw and score
    k_sigma: float = 2.0  # pca_ellipsoid: the ellipsoid's radius in standard deviations along each PCA axis
    box_quantile: float = 0.0  # uniform_box: bounded by each component's quantiles q and 1 - q (0: its min and
    # max; the corners of a min-max box lie far from every code in 16 dimensions)
    steps: int = 10  # interpolate: images per line between two encoded test images
    grid: int = 100  # how many of the images go into the PNG grid
    seed: int = 0  # seeds the draws

    def validate(self) -> None:
        require(self.n >= 2, "n", f"must be >= 2, got {self.n}")
        require(self.k_sigma > 0, "k_sigma", f"must be > 0, got {self.k_sigma}")
        require(0 <= self.box_quantile < 0.5, "box_quantile", f"must be from 0 to below 0.5, got {self.box_quantile}")
        require(self.steps >= 2, "steps", f"must be >= 2, got {self.steps}")
        require(1 <= self.grid <= 400, "grid", f"must be from 1 to 400, got {self.grid}")


def memory(params: Mapping[str, Any], parents: Sequence[Parent], lookup: Callable[[str], Parent]) -> int | None:
    """``n`` decoded images of the size the autoencoder (the encode parent's train parent) was trained on."""
    encoded = next((p for p in parents if p.kind == "encode"), None)
    trained = next((t for t in map(lookup, encoded.needs) if t.kind == "train"), None) if encoded else None
    if trained is None:
        return None
    shape = data_shape(trained.params)
    return None if shape is None else sample_bytes(int(params["n"]), shape, trained.params)


KINDS = (
    Kind("sample", SampleParams, "gpu", "draws z-points with a sampler, decodes them and scores the images",
         handler="workers.handlers.sample:run_sample",
         inputs=(Input("encode", "the latents and the autoencoder to decode with"),
                 Input("train", "the CNN that scores the samples", min=0, models=("cnn",))),
         memory=memory, gallery=("samples.png",), late_params=("box_quantile",)),
)
