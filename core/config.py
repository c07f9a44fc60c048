"""The job kinds and their parameters: one frozen dataclass per kind, one comment per field.

This module is what a batch spec is validated against (on the control plane, without TensorFlow) and what a
worker configures a job with. Add a kind here, then give it a handler in ``workers.handlers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from core.params import ConfigError, require

IMAGE_DATASETS = ("digits", "mnist", "olivetti", "npz", "images")
DATASETS = IMAGE_DATASETS + ("wifi",)
AUTOENCODERS = ("conv_ae", "pool_ae", "face_ae")
MODELS = AUTOENCODERS + ("cnn",)
DEFAULT_Z_DIM = {"conv_ae": 16, "face_ae": 256}  # pool_ae's code is fixed at 7x7x2; a cnn has none
DEFAULT_FILTERS = {"conv_ae": (32, 64, 128), "face_ae": (32, 64, 128, 256)}
DEFAULT_LEARNING_RATE = 1e-3
_WORDS = {2: "two", 3: "three"}
SAMPLERS = ("uniform_box", "normal", "fitted_normal", "pca_ellipsoid", "interpolate")
MAX_DREAM_JOBS = 100_000  # one dream's tile and merge jobs, all written at submit
CNN_FILTERS = (32, 64)  # the cnn's two conv layers; the second is "features", whose maps a dream raises


@dataclass(frozen=True)
class NoopConfig:
    """A job that does nothing useful: for tests, benchmarks and checking a farm end to end."""

    seconds: float = 0.0  # sleep this long, in short slices so a cancellation is seen
    fail: bool = False  # raise an error instead of succeeding (exercises the failure path)
    value: float = 1.0  # recorded as the metric `value`; also written to the artifact `out.json`
    transient_failures: int = 0  # the first N attempts fail with a connection error (exercises retries)
    stuck: bool = False  # sleep in one piece, never checking in (a job stuck in one long op: hard time limit)

    def validate(self) -> None:
        require(self.seconds >= 0, "seconds", f"must be >= 0, got {self.seconds}")
        require(self.transient_failures >= 0, "transient_failures", f"must be >= 0, got {self.transient_failures}")


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
        require(self.dataset not in ("npz", "images") or self.data_path is not None, "data_path",
                f"required for dataset {self.dataset!r}")


@dataclass(frozen=True)
class TrainConfig(DataParams):
    """Train an autoencoder or a CNN classifier on an image dataset; save it in Keras' ``.keras`` format."""

    model: Literal["conv_ae", "pool_ae", "face_ae", "cnn"] = "conv_ae"
    epochs: int = 10  # passes over the training images
    batch_size: int = 128  # images per gradient step
    z_dim: int | None = None  # the bottleneck size; default conv_ae 16, face_ae 256 (pool_ae, cnn: none)
    filters: tuple[int, ...] | None = None  # encoder Conv2D filters; default conv_ae 32,64,128, face_ae +256
    loss: Literal["bce", "mse"] = "bce"  # autoencoders' reconstruction loss (a cnn uses cross-entropy)
    optimizer: Literal["adam", "adadelta", "rmsprop", "sgd"] = "adam"
    learning_rate: float | None = None  # default 1e-3 (for adadelta too: Keras' default is 0.001, not the old 1.0)
    validation_split: float = 0.1  # the last fraction of the training images, held out for val_loss
    seed: int = 0  # seeds weight initialisation and shuffling

    def __post_init__(self) -> None:
        # The model's defaults are filled in here, so a default left out and the same value written out are one
        # job (one fingerprint), and the stored params say what was actually used.
        if self.z_dim is None and self.model in DEFAULT_Z_DIM:
            object.__setattr__(self, "z_dim", DEFAULT_Z_DIM[self.model])
        if self.filters is None and self.model in DEFAULT_FILTERS:
            object.__setattr__(self, "filters", DEFAULT_FILTERS[self.model])
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", DEFAULT_LEARNING_RATE)

    def validate(self) -> None:
        self.validate_data()
        require(self.dataset in IMAGE_DATASETS, "dataset", f"model {self.model} needs an image dataset, "
                f"not {self.dataset!r}")
        require(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.z_dim is None or self.z_dim >= 1, "z_dim", f"must be >= 1, got {self.z_dim}")
        require(self.filters is None or (len(self.filters) >= 1 and all(f >= 1 for f in self.filters)), "filters",
                f"must be positive integers, got {list(self.filters or ())}")
        counts = {"conv_ae": 3, "pool_ae": 2, "cnn": 2}
        require(self.model not in counts or self.filters is None or len(self.filters) == counts[self.model],
                "filters", f"{self.model} takes {_WORDS.get(counts.get(self.model, 0))} filter counts")
        if self.model == "face_ae" and self.image_size is not None:
            step = 2 ** len(self.filters or ())
            require(self.image_size % step == 0, "image_size",
                    f"face_ae with {len(self.filters or ())} stride-2 layers needs a multiple of {step}, "
                    f"got {self.image_size}")
        require(self.learning_rate is None or self.learning_rate > 0, "learning_rate",
                f"must be > 0, got {self.learning_rate}")
        require(0 <= self.validation_split < 1, "validation_split",
                f"must be in [0, 1), got {self.validation_split}")

    @property
    def latent_dim(self) -> int | None:
        return self.z_dim

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATE


@dataclass(frozen=True)
class EncodeConfig(DataParams):
    """Encode a dataset's train and test splits with a trained autoencoder (the train job it needs)."""

    dataset: str | None = None  # default: the dataset the autoencoder was trained on (with its data_path)
    batch_size: int = 256  # images per forward pass

    def validate(self) -> None:
        self.validate_data(required=False)
        require(self.dataset is None or self.dataset in IMAGE_DATASETS, "dataset",
                f"encode needs an image dataset, not {self.dataset!r}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class SampleConfig:
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


@dataclass(frozen=True)
class ClusterConfig(DataParams):
    """KMeans on raw features, PCA components or latents (from an encode job it needs); a k sweep; KMeans as a
    classifier (each cluster labelled with its training majority); a 2-D picture."""

    dataset: str | None = None  # the features' dataset; leave unset to cluster the latents of an encode job
    pca: int | None = None  # cluster the first N PCA components instead of the raw features
    k: tuple[int, ...] = (10,)  # one k, or several for a sweep (inertia and silhouette per k)
    algorithm: Literal["kmeans", "minibatch"] = "kmeans"  # minibatch: MiniBatchKMeans, for large n and k
    n_init: int = 10  # KMeans restarts
    silhouette_sample: int = 5000  # silhouette on a random sample of this many points (it is O(n^2))
    plot: Literal["pca", "tsne", "none"] = "pca"  # the 2-D picture, coloured by cluster and by label
    plot_sample: int = 2000  # points in the picture (t-SNE is slow)
    seed: int = 0

    def validate(self) -> None:
        self.validate_data(required=False)
        require(self.pca is None or self.pca >= 1, "pca", f"must be >= 1, got {self.pca}")
        require(len(self.k) >= 1 and all(2 <= k <= 10000 for k in self.k), "k",
                f"must be integers from 2 to 10000, got {list(self.k)}")
        require(len(set(self.k)) == len(self.k), "k", f"repeats a value: {list(self.k)}")
        require(self.n_init >= 1, "n_init", f"must be >= 1, got {self.n_init}")
        require(self.silhouette_sample >= 10, "silhouette_sample", f"must be >= 10, got {self.silhouette_sample}")
        require(self.plot_sample >= 10, "plot_sample", f"must be >= 10, got {self.plot_sample}")


def cnn_feature_maps(train_params: Mapping[str, Any]) -> int:
    """How many maps the "features" layer of a cnn trained with these params has."""
    filters = train_params.get("filters") or CNN_FILTERS
    return int(filters[-1])


def _per_level(field: str, value: Any, item: str) -> Any:
    """A value for every level, or a mapping level -> value (YAML gives int keys, JSON string keys).

    ``item``: "int", "float" or "maps" (an int or a non-empty list of ints). Returns it with int level keys.
    """
    def check(v: Any, where: str) -> Any:
        if item == "float" and isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if item in ("int", "maps") and isinstance(v, int) and not isinstance(v, bool):
            return v
        if item == "maps" and isinstance(v, (list, tuple)) and v \
                and all(isinstance(m, int) and not isinstance(m, bool) for m in v):
            return list(v)
        expected = {"int": "an integer", "float": "a number",
                    "maps": "a map index or a non-empty list of map indices"}[item]
        raise ConfigError(field, f"expected {expected}{where}, got {v!r}")

    if not isinstance(value, Mapping):
        return check(value, " or a mapping level -> value")
    out = {}
    for key, v in value.items():
        level = int(key) if isinstance(key, str) and key.isdigit() else key
        if not isinstance(level, int) or isinstance(level, bool) or level < 0:
            raise ConfigError(field, f"levels are integers >= 0, got the key {key!r}")
        out[level] = check(v, f" for level {level}")
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class DreamParams:
    """Carve a deep dream into an image with a trained cnn (the train job it needs).

    A ``dream`` entry of a spec is not one job: it expands into ``iterations`` x (levels 0..levels) x tiles
    ``dream_tile`` jobs and one ``dream_merge`` job per level. Per-level values are one value for all levels
    or a mapping level -> value, e.g. ``maps: {0: 56, 1: [12, 56, 3, 40]}`` (a list: one map per tile, cycled).
    """

    image: str = ""  # required: a jpg/png file; relative paths are taken from the spec's folder
    levels: int = 2  # the finest level: level L cuts the image into 2^L x 2^L tiles (at most 5)
    iterations: int = 4  # passes over all levels; each iteration's image is kept as a PNG
    size: int | None = None  # the working side: a multiple of 28 * 2^levels; default 28 * 2^levels * 5 (560)
    maps: Any = 0  # the "features" map to raise: an index, or per level an index or a list (one per tile)
    epochs: Any = 20  # gradient-ascent steps per tile (per level: a mapping)
    epsilon: Any = 0.05  # the step size, in standard deviations of the 28x28 input (per level: a mapping)
    threshold: float = 0.0  # a tile's ascent stops at the first step that raises the activation by less
    clip: float = 0.98  # PNG contrast: the central fraction of values spread over 0..255 (the rest clipped)

    def __post_init__(self) -> None:
        from core.dream import BASE

        object.__setattr__(self, "maps", _per_level("maps", self.maps, "maps"))
        object.__setattr__(self, "epochs", _per_level("epochs", self.epochs, "int"))
        object.__setattr__(self, "epsilon", _per_level("epsilon", self.epsilon, "float"))
        if self.size is None and isinstance(self.levels, int) and 0 <= self.levels <= 10:
            object.__setattr__(self, "size", BASE * 2 ** self.levels * 5)

    def validate(self) -> None:
        require(bool(self.image), "image", "required: the path of a jpg or png file")
        require(0 < self.clip <= 1, "clip", f"must be in (0, 1], got {self.clip}")
        self.dream_config().validate()
        require(self.job_count <= MAX_DREAM_JOBS, "iterations",
                f"{self.iterations} iterations of levels 0..{self.levels} make {self.job_count} jobs; "
                f"at most {MAX_DREAM_JOBS} per dream")

    @property
    def job_count(self) -> int:
        """How many jobs the dream expands into: per iteration, every level's tiles and one merge per level."""
        return self.iterations * sum(4 ** level + 1 for level in range(self.levels + 1))

    def dream_config(self) -> Any:
        """The ``core.dream.DreamConfig`` of these params."""
        from core.dream import DreamConfig

        return DreamConfig(levels=self.levels, iterations=self.iterations, size=self.size, maps=self.maps,
                           epochs=self.epochs, epsilon=self.epsilon, threshold=self.threshold)


@dataclass(frozen=True)
class DreamTileConfig:
    """One tile of one level of one dream iteration: downscale, gradient ascent, upscale, correction.

    Made by a ``dream`` entry (see DreamParams), not written in a spec. Its input is the image its
    ``dream_merge`` parent made, or, for the first tile of a dream, the ``image`` file.
    """

    size: int = 112  # the dream's working side
    iteration: int = 0
    level: int = 0
    tile: int = 0  # its index among the level's 4^level tiles, row by row
    map: int = 0  # the "features" map it raises
    epochs: int = 20
    epsilon: float = 0.05
    threshold: float = 0.0
    image: str | None = None  # the input image file: set on the first tile of a dream only

    def validate(self) -> None:
        from core.dream import BASE, MAX_LEVELS

        require(0 <= self.level <= MAX_LEVELS, "level", f"must be from 0 to {MAX_LEVELS}, got {self.level}")
        multiple = BASE * 2 ** self.level
        require(self.size >= multiple and self.size % multiple == 0, "size",
                f"must be a multiple of {multiple}, got {self.size}")
        require(0 <= self.tile < 4 ** self.level, "tile", f"must be from 0 to {4 ** self.level - 1}, got {self.tile}")
        require(self.iteration >= 0, "iteration", f"must be >= 0, got {self.iteration}")
        require(self.map >= 0, "map", f"must be >= 0, got {self.map}")
        require(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        require(self.epsilon > 0, "epsilon", f"must be > 0, got {self.epsilon}")
        require(self.image is None or (self.iteration == 0 and self.level == 0), "image",
                "only the first tile of a dream reads the image file")


@dataclass(frozen=True)
class DreamMergeConfig:
    """Write one level's tiles (its parents) into the image and standardize it. The last level of an iteration
    also keeps the iteration's PNG; the last merge of a dream keeps the final image (PNG and .npy).

    It is told whether it is last rather than how many levels and iterations there are, so that a dream given
    more iterations reuses every job of the iterations before its last one from the cache.
    """

    size: int = 112
    iteration: int = 0
    level: int = 0
    last_level: bool = True  # the finest level: its image is the iteration's
    final: bool = True  # the last merge of the dream
    clip: float = 0.98

    def validate(self) -> None:
        require(self.level >= 0, "level", f"must be >= 0, got {self.level}")
        require(self.iteration >= 0, "iteration", f"must be >= 0, got {self.iteration}")
        require(self.last_level or not self.final, "final", "only a merge of the last level can be final")
        require(0 < self.clip <= 1, "clip", f"must be in (0, 1], got {self.clip}")


@dataclass(frozen=True)
class Input:
    """A parent a kind consumes: how many jobs of that kind (and, for train, of which models) it needs."""

    kind: str
    role: str  # what it is used for, for error messages
    min: int = 1
    max: int = 1
    models: tuple[str, ...] | None = None  # for train parents: the models that qualify


@dataclass(frozen=True)
class KindInfo:
    """What the control plane needs to know about a job kind."""

    config: type[Any]  # a frozen dataclass of the kind's parameters
    queue: Literal["gpu", "cpu"]  # the Celery queue its jobs go to unless the spec says otherwise
    inputs: tuple[Input, ...] = ()  # the parents it reads results from (other parents only order the jobs)
    dataset_unless: str | None = None  # params.dataset is required unless the job needs a job of this kind
    files: tuple[str, ...] = ()  # params naming input files: their sha256, not their location, is fingerprinted
    expands: bool = False  # a spec entry that expands into jobs of other kinds (``dream``); never a job itself
    generated: bool = False  # made by an expanding entry only, never written in a spec
    reads_parents: bool | None = None  # its handler reads its parents' results (default: it has inputs)

    @property
    def reads_results(self) -> bool:
        return bool(self.inputs) if self.reads_parents is None else self.reads_parents


_DREAM_CNN = Input("train", "the cnn whose feature maps the dream raises", models=("cnn",))

KINDS: dict[str, KindInfo] = {
    "noop": KindInfo(NoopConfig, "cpu"),
    "sleep": KindInfo(NoopConfig, "cpu"),
    "train": KindInfo(TrainConfig, "gpu"),
    "encode": KindInfo(EncodeConfig, "gpu", (Input("train", "the autoencoder to encode with", models=AUTOENCODERS),)),
    "sample": KindInfo(SampleConfig, "gpu", (
        Input("encode", "the latents and the autoencoder to decode with"),
        Input("train", "the CNN that scores the samples", min=0, models=("cnn",)),
    )),
    "cluster": KindInfo(ClusterConfig, "cpu", (Input("encode", "the latents to cluster", min=0),),
                        dataset_unless="encode"),
    "dream": KindInfo(DreamParams, "gpu", (_DREAM_CNN,), files=("image",), expands=True),
    "dream_tile": KindInfo(DreamTileConfig, "gpu", (_DREAM_CNN,), files=("image",), generated=True),
    "dream_merge": KindInfo(DreamMergeConfig, "gpu", generated=True, reads_parents=True),  # its level's tiles
}
SPEC_KINDS = tuple(sorted(k for k, info in KINDS.items() if not info.generated))  # what a spec's `kind` may be


def uses_dataset(params: dict[str, Any]) -> bool:
    """Whether a job's params name a dataset (whose identity then goes into the job's fingerprint)."""
    return params.get("dataset") is not None
