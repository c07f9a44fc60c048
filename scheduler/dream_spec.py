"""A ``dream`` entry of a spec, expanded into its DAG: one ``dream_tile`` job per tile, one ``dream_merge`` per level.

For each iteration i and level L = 0..levels, the 4^L tiles of L each need the image made before them (the merge
of level L-1, or of the last level of iteration i-1; the first tile of the dream reads the image file) and the
merge of (i, L) needs exactly the tiles of (i, L): fan-in counted in SQL. Named

    <dream>/i<iteration>/L<level>/t<tile>      <dream>/i<iteration>/L<level>/merge

Only the last merge stands for the dream: ``needs: <dream>`` and ``foreach: <dream>`` mean it.
"""

from __future__ import annotations

from typing import Any

from core.config import DreamParams


def tile_name(dream: str, iteration: int, level: int, tile: int) -> str:
    return f"{dream}/i{iteration}/L{level}/t{tile}"


def merge_name(dream: str, iteration: int, level: int) -> str:
    return f"{dream}/i{iteration}/L{level}/merge"


def dream_jobs(dream: str, params: DreamParams) -> list[tuple[str, str, dict[str, Any], tuple[str, ...]]]:
    """The jobs of one dream as (name, kind, params, internal parents), parents before children."""
    config = params.dream_config()
    size = config.side
    out: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = []
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
                out.append((names[-1], "dream_tile", tile, (previous,) if previous else ()))
            last_level = level == config.levels
            merge = {"size": size, "iteration": it, "level": level, "last_level": last_level,
                     "final": last_level and it == config.iterations - 1, "clip": float(params.clip)}
            previous = merge_name(dream, it, level)
            out.append((previous, "dream_merge", merge, tuple(names)))
    return out
