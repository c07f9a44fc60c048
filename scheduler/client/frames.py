"""The client's answers as pandas DataFrames, and artifacts decoded by their media type.

The jobs table (``jobs_frame``) has one row per job and, in order:

- ``id``, ``batch``, ``name``, ``kind``, ``status``;
- one column per parameter: the job's own value, or, where the job has no such parameter, the value it inherits
  from its ancestors (an encode of ``train[z_dim=8]`` has ``z_dim`` 8), so ``df.groupby("z_dim")`` groups a chain;
- ``inherited``: the names of the parameters of that row whose values are inherited (a tuple, empty if none);
- one column per metric: the job's final value of it (its last step: the last epoch). A metric named as a
  column before it (the ``value`` param and metric of a noop) is ``metrics.<name>``.

``df.attrs`` lists the columns of each group: ``params``, ``inherited`` (the names inherited in some row) and
``metrics``.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from scheduler.errors import ArtifactCorrupt

BASE = ("id", "batch", "name", "kind", "status")
METRIC_PREFIX = "metrics."


def jobs_frame(jobs: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The jobs table of the module docstring, from jobs as ``Backend.jobs`` answers them."""
    jobs = list(jobs)
    params: dict[str, None] = {}
    inherited_names: dict[str, None] = {}
    metric_keys: set[str] = set()
    rows = []
    for j in jobs:
        own = j["params"] or {}
        from_ancestors = {k: v for k, v in (j.get("inherited") or {}).items() if k not in own}
        params.update(dict.fromkeys(own))
        inherited_names.update(dict.fromkeys(from_ancestors))
        metric_keys.update(j.get("metrics") or {})
        rows.append((j, {**from_ancestors, **own}, tuple(from_ancestors)))
    param_columns = [*params, *(n for n in inherited_names if n not in params)]
    taken = set(BASE) | set(param_columns) | {"inherited"}
    metric_columns = {k: f"{METRIC_PREFIX}{k}" if k in taken else k for k in sorted(metric_keys)}
    data: dict[str, Any] = {
        "id": [j["id"] for j, _, _ in rows], "batch": [j["batch_id"] for j, _, _ in rows],
        **{c: [j[c] for j, _, _ in rows] for c in ("name", "kind", "status")},
        **{p: param_column([values.get(p) for _, values, _ in rows]) for p in param_columns},
        "inherited": pd.Series([names for _, _, names in rows], dtype=object),
        **{column: pd.array([(j.get("metrics") or {}).get(k, math.nan) for j, _, _ in rows], dtype=float)
           for k, column in metric_columns.items()},
    }
    df = pd.DataFrame(data, columns=[*BASE, *param_columns, "inherited", *metric_columns.values()])
    df.attrs = {"params": param_columns, "inherited": list(inherited_names), "metrics": list(metric_columns.values())}
    return df


def param_column(values: list[Any]) -> Any:
    """A parameter's values as a column of their type: integers (``Int64``) and booleans with missing values
    stay integers and booleans, numbers are floats (NaN where missing); text, lists and mixtures are objects."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pd.array(values, dtype="boolean")
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.array(values, dtype="Int64")
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pd.array([math.nan if v is None else v for v in values], dtype=float)
    return pd.Series(values, dtype=object)


def metrics_frame(metrics: Iterable[Mapping[str, Any]], names: Mapping[int, str] | None = None,
                  wide: bool = False) -> pd.DataFrame:
    """Metrics in long form (``job``, ``name`` when ``names`` is given, ``key``, ``step``, ``value``, ``time``), or
    wide: one row per step (per job and step for several jobs), one column per key."""
    columns = ["job", "key", "step", "value", "time"]
    df = pd.DataFrame([[m["job_id"], m["key"], m["step"], m["value"], m["time"]] for m in metrics], columns=columns)
    df["value"] = df["value"].astype(float)
    df["time"] = _times(df["time"])
    if names is not None:
        df.insert(1, "name", df["job"].map(names))
    if not wide:
        return df
    index = ["job", "name", "step"] if names is not None else ["step"]
    out = df.pivot_table(index=index, columns="key", values="value", aggfunc="last")
    out.columns.name = None
    return out


def compare_frame(result: Mapping[str, Any]) -> pd.DataFrame:
    """A comparison (``Backend.compare``) as a table: a row per value of the parameter (the column named after it),
    with ``jobs``, ``best``, ``mean``, ``worst``, ``best_job``, ``best_name``, ``inherited`` and ``winner`` (the
    best row; none when no row has a value). ``attrs``: ``metric``, ``by``, ``kind``, ``higher_is_better``,
    ``best`` (the winner's index or None)."""
    by = result["by"]
    columns = [by, "jobs", "best", "mean", "worst", "best_job", "best_name", "inherited"]
    rows = [[r["value"], *(r[c] for c in columns[1:])] for r in result["rows"]]
    df = pd.DataFrame(rows, columns=columns)
    df["winner"] = [i == result["best"] for i in range(len(df))]
    df.attrs = {k: result[k] for k in ("metric", "by", "kind", "higher_is_better", "best")}
    return df


def search_frames(result: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A search's trials (one row each: ``number``, ``job_id``, ``job``, ``state``, ``value``, ``last``, ``steps``,
    then the searched parameters' values, then the rest) and its best value so far as trials ended."""
    trials = list(result["trials"]) + list(result["earlier"])
    names: dict[str, None] = {}
    for t in trials:
        names.update(dict.fromkeys(t["values"]))
    head = ["number", "job_id", "job", "state", "value", "last", "steps"]
    tail = ["job_status", "cached_from", "finished_at"]
    df = pd.DataFrame([[*(t[c] for c in head), *(t["values"].get(n) for n in names), *(t[c] for c in tail)]
                       for t in trials], columns=[*head, *names, *tail])
    df["finished_at"] = _times(df["finished_at"])
    curve = pd.DataFrame(result["best_so_far"], columns=["trial", "value", "best", "steps", "at"])
    curve["at"] = _times(curve["at"])
    return df, curve


def _times(values: Any) -> Any:
    """Times as UTC timestamps, whether read from the store (datetimes) or from the API (ISO 8601 text)."""
    return pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")


# -- artifacts --

RASTER = "image/"  # decoded with Pillow, except:
NOT_RASTER = frozenset({"image/svg+xml"})


def decode(data: bytes, media_type: str, what: str) -> Any:
    """An artifact's bytes as a Python value by its media type: a PIL image for ``image/*`` (raster), a numpy array
    for ``application/x-npy``, the parsed value for ``application/json``, else the bytes themselves. Bytes that do
    not parse as their type say so (ArtifactCorrupt, naming ``what``)."""
    try:
        if media_type.startswith(RASTER) and media_type not in NOT_RASTER:
            from PIL import Image, UnidentifiedImageError

            try:
                image = Image.open(io.BytesIO(data))
            except UnidentifiedImageError as e:  # its message names a BytesIO object: say what it means
                raise ArtifactCorrupt(f"{what}: not readable as {media_type}: not an image Pillow knows") from e
            image.load()
            return image
        if media_type == "application/x-npy":
            import numpy as np

            return np.load(io.BytesIO(data), allow_pickle=False)
        if media_type == "application/json":
            return json.loads(data)
    except (OSError, ValueError, SyntaxError) as e:  # Pillow's and numpy's "not this format"
        raise ArtifactCorrupt(f"{what}: not readable as {media_type}: {e}") from e
    return data
