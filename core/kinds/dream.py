"""``dream``: the carving deep dream (``core.dream``) as a DAG of jobs, one per tile per level.

A spec's ``dream`` entry is not a job: it expands (``expand``) into one ``dream_tile`` job per tile and one
``dream_merge`` job per level, for each iteration. The 4^L tiles of level L each need the image made before them
(the merge of level L-1, or of the last level of the iteration before; the dream's first tile reads the image
file) and the merge of (iteration, L) needs exactly the tiles of (iteration, L): fan-in counted in SQL. Named

    <dream>/i<iteration>/L<level>/t<tile>      <dream>/i<iteration>/L<level>/merge

Only the last merge stands for the dream: ``needs: <dream>`` and ``foreach: <dream>`` mean it. Per-level values
are one value for all levels or a mapping level -> value, e.g. ``maps: {0: 56, 1: [12, 56, 3, 40]}`` (a list: one
map per tile, cycled).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.dream import BASE, DreamConfig, check_geometry
from core.errors import ConfigError
from core.kinds.base import GeneratedJob, Input, Kind, Parent
from core.memory import dream_bytes
from core.models.defaults import cnn_feature_maps
from core.params import require

MAX_DREAM_JOBS = 100_000  # one dream's tile and merge jobs, all written at submit


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

    def dream_config(self) -> DreamConfig:
        """The ``core.dream.DreamConfig`` of these params."""
        return DreamConfig(levels=self.levels, iterations=self.iterations, size=self.size, maps=self.maps,
                           epochs=self.epochs, epsilon=self.epsilon, threshold=self.threshold)


@dataclass(frozen=True)
class DreamTileParams:
    """One tile of one level of one dream iteration: downscale, gradient ascent, upscale, correction.

    Made by a ``dream`` entry (see DreamParams), not written in a spec. Its input is the image its
    ``dream_merge`` parent made, or, for the first tile of a dream, the ``image`` file.
    """

    size: int = 112  # the dream's working side
    iteration: int = 0  # the dream's pass it belongs to, from 0
    level: int = 0  # its level: the image cut into 2^level x 2^level tiles
    tile: int = 0  # its index among the level's 4^level tiles, row by row
    map: int = 0  # the "features" map it raises
    epochs: int = 20  # gradient-ascent steps
    epsilon: float = 0.05  # the step size, in standard deviations of the 28x28 input
    threshold: float = 0.0  # the ascent stops at the first step that raises the activation by less
    image: str | None = None  # the input image file: set on the first tile of a dream only

    def validate(self) -> None:
        check_geometry(self.level, self.size, "level")
        require(0 <= self.tile < 4 ** self.level, "tile", f"must be from 0 to {4 ** self.level - 1}, got {self.tile}")
        require(self.iteration >= 0, "iteration", f"must be >= 0, got {self.iteration}")
        require(self.map >= 0, "map", f"must be >= 0, got {self.map}")
        require(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        require(self.epsilon > 0, "epsilon", f"must be > 0, got {self.epsilon}")
        require(self.image is None or (self.iteration == 0 and self.level == 0), "image",
                "only the first tile of a dream reads the image file")


@dataclass(frozen=True)
class DreamMergeParams:
    """Write one level's tiles (its parents) into the image and standardize it. The last level of an iteration
    also keeps the iteration's PNG; the last merge of a dream keeps the final image (PNG and .npy).

    It is told whether it is last rather than how many levels and iterations there are, so that a dream given
    more iterations reuses every job of the iterations before its last one from the cache.
    """

    size: int = 112  # the dream's working side
    iteration: int = 0  # the dream's pass it belongs to, from 0
    level: int = 0  # the level whose tiles it writes into the image
    last_level: bool = True  # the finest level: its image is the iteration's
    final: bool = True  # the last merge of the dream
    clip: float = 0.98  # PNG contrast: the central fraction of values spread over 0..255 (the rest clipped)

    def validate(self) -> None:
        require(self.level >= 0, "level", f"must be >= 0, got {self.level}")
        require(self.iteration >= 0, "iteration", f"must be >= 0, got {self.iteration}")
        require(self.last_level or not self.final, "final", "only a merge of the last level can be final")
        require(0 < self.clip <= 1, "clip", f"must be in (0, 1], got {self.clip}")


def tile_name(dream: str, iteration: int, level: int, tile: int) -> str:
    return f"{dream}/i{iteration}/L{level}/t{tile}"


def merge_name(dream: str, iteration: int, level: int) -> str:
    return f"{dream}/i{iteration}/L{level}/merge"


def expand(dream: str, params: DreamParams) -> list[GeneratedJob]:
    """The jobs of one dream, parents before children; its last merge is the one exported."""
    config = params.dream_config()
    size = config.side
    out: list[GeneratedJob] = []
    previous: str | None = None  # the merge whose image the next level's tiles cut from
    for it in range(config.iterations):
        for level in range(config.levels + 1):
            names = []
            for index in range(4 ** level):  # 2^level x 2^level tiles, row by row
                tile: dict[str, Any] = {
                    "size": size, "iteration": it, "level": level, "tile": index,
                    "map": config.map_for(level, index), "epochs": config.epochs_for(level),
                    "epsilon": config.epsilon_for(level), "threshold": float(config.threshold),
                    "image": params.image if previous is None else None,
                }
                names.append(tile_name(dream, it, level, index))
                out.append(GeneratedJob(names[-1], "dream_tile", tile, (previous,) if previous else ()))
            last_level = level == config.levels
            merge = {"size": size, "iteration": it, "level": level, "last_level": last_level,
                     "final": last_level and it == config.iterations - 1, "clip": float(params.clip)}
            previous = merge_name(dream, it, level)
            # A merge needs exactly its level's tiles: the entry's own needs (the cnn) are its tiles'.
            out.append(GeneratedJob(previous, "dream_merge", merge, tuple(names), entry_needs=False))
    last = out[-1]
    out[-1] = GeneratedJob(last.name, last.kind, last.params, last.needs, exported=True, entry_needs=False)
    return out


def check_tile_parents(params: Mapping[str, Any], parents: Sequence[Parent]) -> None:
    """A tile's map exists in the features layer of the cnn it needs."""
    cnn = next(p for p in parents if p.kind == "train" and p.params.get("model") == "cnn")
    n_maps = cnn_feature_maps(cnn.params)
    if params["map"] >= n_maps:
        raise ConfigError("maps", f"map {params['map']} (level {params['level']}) is out of range: the features layer "
                          f"of {cnn.name!r} has {n_maps} maps (0 to {n_maps - 1})")


def memory(params: Mapping[str, Any], parents: Sequence[Parent], lookup: Callable[[str], Parent]) -> int | None:
    return dream_bytes(int(params["size"]))


_CNN = Input("train", "the cnn whose feature maps the dream raises", models=("cnn",))
KINDS = (
    Kind("dream", DreamParams, "gpu", "the carving deep dream: expands into dream_tile and dream_merge jobs",
         inputs=(_CNN,), files=("image",), expand=expand),
    Kind("dream_tile", DreamTileParams, "gpu", "one tile of one level: gradient ascent on a cnn feature map",
         handler="workers.handlers.dream:run_dream_tile", inputs=(_CNN,), files=("image",),
         check_parents=check_tile_parents, memory=memory, made_by="dream"),
    # reads its level's tiles (not a counted input: their number depends on the level)
    Kind("dream_merge", DreamMergeParams, "gpu", "one level's tiles written back into the image, standardized",
         handler="workers.handlers.dream:run_dream_merge", made_by="dream", reads_parents=True, memory=memory,
         gallery=("iterations.png",)),
)
