"""One entry of a spec's ``jobs`` list, expanded into jobs: its fields checked, its sweep (and foreach) multiplied
out, each job's params validated by its kind's dataclass, its files found, and an expanding kind's jobs made by the
kind's own ``expand`` hook. Every error names the file, the job and the field."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data_files import DATA_FILES, check_image_file, check_pixels, registered_ref, resolve_data_file, within_roots
from core.errors import ConfigError, DataError
from core.kinds import KINDS, SPEC_KINDS
from core.params import config_to_params, parse_config
from scheduler.datasets import fits
from scheduler.errors import SpecError
from storage.records import RegisteredDataset

# A job survives two lost workers or transient errors; errors in the spec or data are never retried.
DEFAULT_MAX_ATTEMPTS = 3
JOB_FIELDS = {"name", "kind", "params", "needs", "queue", "priority", "max_attempts", "timeout", "sweep", "foreach",
              "search"}
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # used with fullmatch: no trailing newline slips by
QUEUE_RE = re.compile(r"[a-z0-9_-]{1,50}")


@dataclass(frozen=True)
class JobSpec:
    """One job after sweep expansion, with its params validated and completed with defaults."""

    name: str
    kind: str
    params: Mapping[str, Any]
    needs: tuple[str, ...]  # names of the (expanded) jobs it depends on
    queue: str
    priority: int
    max_attempts: int
    timeout: float | None
    sweep_values: Mapping[str, Any] = field(default_factory=dict)  # its own sweep's and its foreach job's values
    pinned: tuple[str, ...] = ()  # the expansion of its foreach job it was made for
    group: str | None = None  # the expansion of an expanding entry (a dream) this job is part of
    entry_needs: bool = True  # whether the entry's `needs` apply (a dream's merges need only their tiles)
    exported: bool = True  # whether `needs: <entry>` / `foreach: <entry>` mean this job (a dream: its last merge)


def no_unknown(mapping: Mapping[str, Any], allowed: set[str], path: str, job: str | None, prefix: str) -> None:
    unknown = sorted(set(mapping) - allowed, key=str)
    if unknown:
        raise SpecError(path, f"unknown field; expected one of: {', '.join(sorted(allowed))}", job=job,
                        field=prefix + str(unknown[0]))


def fmt(v: Any) -> str:
    """A swept value as it appears in a job's name: ``train[z_dim=8]``, lists joined by '-'."""
    return "-".join(map(str, v)) if isinstance(v, list) else str(v)


def _int_field(entry: Mapping[str, Any], defaults: Mapping[str, Any], key: str, default: int, lo: int, hi: int,
               path: str, job: str) -> int:
    value = entry.get(key, defaults.get(key, default))
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SpecError(path, f"must be an integer from {lo} to {hi}, got {value!r}", job=job,
                        field=key if key in entry else f"defaults.{key}")
    return value


@dataclass(frozen=True)
class Context:
    """What every entry of one spec is expanded with."""

    path: str  # the spec's name in errors
    base_dir: Path  # relative file paths are taken from here (the spec's folder; the data directory for the API)
    data_dir: Path  # where datasets' usual files are
    defaults: Mapping[str, Any]  # the spec's `defaults`
    default_params: Mapping[str, Any]  # its `defaults.params`
    max_jobs: int  # the batch's limit, for the error message
    datasets: Mapping[str, RegisteredDataset] = field(default_factory=dict)  # the farm's registered datasets


def expand_entry(entry: dict[str, Any], jname: str, ctx: Context, over: list[JobSpec] | None,
                 room: int) -> list[JobSpec]:
    """The jobs of one entry: one per combination of its sweep (times its foreach job's); at most ``room``."""
    path = ctx.path
    no_unknown(entry, JOB_FIELDS, path, jname, "")
    kind = entry.get("kind")
    if isinstance(kind, str) and kind in KINDS and KINDS[kind].made_by:
        made_by = KINDS[kind].made_by
        raise SpecError(path, f"{kind} jobs are made by a {made_by!r} entry, not written by hand: use kind: "
                        f"{made_by}", job=jname, field="kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise SpecError(path, f"unknown kind {kind!r}; expected one of: {', '.join(SPEC_KINDS)}", job=jname,
                        field="kind")
    info = KINDS[kind]
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise SpecError(path, "must be a mapping", job=jname, field="params")
    defaults = ctx.defaults
    queue = entry.get("queue", defaults.get("queue", info.queue))
    if not isinstance(queue, str) or not QUEUE_RE.fullmatch(queue):
        raise SpecError(path, f"must be a queue name such as 'gpu' or 'cpu', got {queue!r}", job=jname,
                        field="queue" if "queue" in entry else "defaults.queue")
    priority = _int_field(entry, defaults, "priority", 5, 0, 9, path, jname)
    max_attempts = _int_field(entry, defaults, "max_attempts", DEFAULT_MAX_ATTEMPTS, 1, 100, path, jname)
    timeout = entry.get("timeout", defaults.get("timeout"))
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise SpecError(path, f"must be a number of seconds > 0, got {timeout!r}", job=jname,
                        field="timeout" if "timeout" in entry else "defaults.timeout")

    sweep = entry.get("sweep") or {}
    if not isinstance(sweep, dict):
        raise SpecError(path, "must be a mapping of parameter -> list of values", job=jname, field="sweep")
    fields = {f.name for f in dataclasses.fields(info.params)}
    for key, values in sweep.items():
        if key not in fields:
            raise SpecError(path, "unknown parameter of kind " + repr(kind), job=jname, field=f"sweep.{key}")
        if key in params:
            raise SpecError(path, "set both in params and in sweep", job=jname, field=f"sweep.{key}")
        if not isinstance(values, list) or not values:
            raise SpecError(path, "must be a non-empty list of values", job=jname, field=f"sweep.{key}")
        shown = [fmt(v) for v in values]
        if len(set(shown)) != len(shown):
            raise SpecError(path, f"repeats a value: {values!r}", job=jname, field=f"sweep.{key}")

    keys = list(sweep)
    for parent in over or []:
        clash = sorted(set(keys) & set(parent.sweep_values))
        if clash:
            raise SpecError(path, f"also swept by its foreach job {parent.name!r}", job=jname,
                            field=f"sweep.{clash[0]}")
    jobs = []
    parents: list[JobSpec | None] = list(over) if over else [None]
    count = len(parents) * math.prod(len(sweep[k]) for k in keys)
    if count > room:
        raise SpecError(path, f"expands to {count} jobs; a batch has at most {ctx.max_jobs}: split it", job=jname,
                        field="sweep" if keys else "foreach")
    for parent, combo in itertools.product(parents, itertools.product(*(sweep[k] for k in keys))):
        values = dict(zip(keys, combo, strict=True))
        labels = {**(parent.sweep_values if parent else {}), **values}
        name = jname + ("[" + ",".join(f"{k}={fmt(v)}" for k, v in labels.items()) + "]" if labels else "")
        merged = {k: v for k, v in ctx.default_params.items() if k in fields}
        merged.update(params)
        merged.update(values)

        try:
            config: Any = parse_config(info.params, merged)
        except ConfigError as e:
            where = _origin(e.field.split("[")[0] if isinstance(e.field, str) else e.field, values, params,
                            ctx.default_params)
            raise SpecError(path, e.message, job=name, field=f"{where}.{e.field}") from e
        for file_param in info.files:
            where = _origin(file_param, values, params, ctx.default_params)
            config = dataclasses.replace(config, **{file_param: _input_file(
                getattr(config, file_param), ctx, name, f"{where}.{file_param}")})
        full = config_to_params(config)
        if full.get("dataset") is not None:
            full["data_path"] = _data_path(full, ctx, name)
        common: dict[str, Any] = dict(queue=queue, priority=priority, max_attempts=max_attempts,
                                      timeout=float(timeout) if timeout is not None else None, sweep_values=labels)
        pinned = (parent.name,) if parent else ()
        if info.expand is None:
            jobs.append(JobSpec(name=name, kind=kind, params=full, needs=(), pinned=pinned, **common))
            continue
        for g in info.expand(name, config):
            jobs.append(JobSpec(name=g.name, kind=g.kind, params=g.params, needs=g.needs,
                                pinned=pinned if g.entry_needs else (), group=name, entry_needs=g.entry_needs,
                                exported=g.exported, **common))
    return jobs


def _origin(param: str, swept: Mapping[str, Any], params: Mapping[str, Any], default_params: Mapping[str, Any]
            ) -> str:
    """Where a job's parameter came from, as the spec's field names it: its sweep, its params or the defaults."""
    if param in swept:
        return "sweep"
    return "defaults.params" if param in default_params and param not in params else "params"


def _locate(given: str, ctx: Context) -> Path:
    """A file a spec names, inside the data roots (the data directory and the spec's folder): relative to the spec's
    folder, or else to the data directory."""
    roots = (ctx.data_dir, ctx.base_dir)
    path = within_roots(given, ctx.base_dir, roots)
    if not Path(given).is_absolute() and not path.exists():
        other = within_roots(given, ctx.data_dir, roots)
        path = other if other.exists() else path
    return path


def _registered(given: str, ctx: Context) -> RegisteredDataset | None:
    """The registered dataset a spec's path means: a registered name that is no file or folder in the data roots
    (a path that exists keeps meaning that path, as before datasets could be registered)."""
    found = ctx.datasets.get(given)
    return found if found is not None and not _locate(given, ctx).exists() else None


def _reference(found: RegisteredDataset, wanted: str | None) -> str:
    """A job's reference to the registered dataset ``found``, read as the spec's dataset ``wanted`` (None: a dream's
    image), checked against what its registration recorded (DataError if it cannot be read so)."""
    problem = fits(found, wanted)
    if problem is not None:
        raise DataError(problem)
    if wanted is None:
        check_pixels((int(found.meta.get("width") or 0), int(found.meta.get("height") or 0)), found.name)
    return registered_ref(found.name, found.sha256)


def _input_file(given: str | None, ctx: Context, job: str, field: str) -> str | None:
    """An input image's absolute path, checked now: outside the data roots, missing or undecodable is a spec
    error. A registered image (``latentfarm data add``) by its reference, checked from what was recorded of it."""
    if not given:
        return given
    try:
        found = _registered(given, ctx)
        if found is not None:
            return _reference(found, None)
        resolved = _locate(given, ctx)
        check_image_file(resolved)
    except DataError as e:
        raise SpecError(ctx.path, str(e), job=job, field=field) from e
    return str(resolved.resolve())


def _data_path(params: dict[str, Any], ctx: Context, job: str) -> str | None:
    """Resolve the dataset's file now, so a file outside the data roots, missing or unreadable is a spec error, not
    a failed job. A registered dataset (``latentfarm data add``) is named by its reference: ``dataset: mnist`` means
    the registered ``mnist`` when there is one (else the data directory's file), ``data_path: NAME`` the registered
    NAME when no such file exists."""
    given = params.get("data_path")
    dataset = params["dataset"]
    try:
        found = _registered(given, ctx) if given is not None else \
            ctx.datasets.get(dataset) if dataset in DATA_FILES else None
        if found is not None:
            return _reference(found, dataset)
        if given is not None:
            given = str(_locate(given, ctx))
        resolved = resolve_data_file(dataset, given, ctx.data_dir)
    except DataError as e:
        raise SpecError(ctx.path, str(e), job=job, field="params.data_path" if given else "params.dataset") from e
    return str(resolved) if resolved is not None else None
