"""Batch specs: a YAML file of jobs, parsed into frozen, validated values.

    batch: ae-sweep                 # the batch's name
    defaults:                       # optional: applied to every job that does not set them
      priority: 5                   # 0 (last) .. 9 (first)
      max_attempts: 3               # runs at most: a lost worker or a transient error is retried
      timeout: 3600                 # seconds
      params: {dataset: digits}     # given to each job whose kind has such a parameter
    jobs:
      - name: train
        kind: train
        params: {epochs: 3}
        sweep: {z_dim: [8, 16]}     # one job per combination: train[z_dim=8], train[z_dim=16]
      - name: report
        kind: noop
        needs: [train]              # a swept name means every job it expanded into

A job that needs a swept entry and is swept over some of the same parameters depends only on the expansions
with equal values. ``foreach: train`` makes one job per expansion of ``train`` (a job defined above), named and
paired by its values: encode[z_dim=8] needs train[z_dim=8], and a sample job with ``foreach: encode`` then
needs encode[z_dim=8], and so on down a chain.

Every error names the file, the job and the field, and is raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.config import KINDS, SPEC_KINDS, cnn_feature_maps
from core.data_files import DataFileError, check_image_file, resolve_data_file
from core.params import ConfigError, config_to_params, parse_config
from scheduler.dream_spec import dream_jobs
from scheduler.errors import SpecError

TOP_FIELDS = {"batch", "defaults", "jobs"}
# A job survives two lost workers or transient errors; errors in the spec or data are never retried.
DEFAULT_MAX_ATTEMPTS = 3
MAX_JOBS = 100_000  # jobs in one batch, after sweeps, foreach and dreams are expanded
MAX_SPEC_VALUES = 100_000  # values in a parsed spec, YAML aliases expanded
MAX_SPEC_DEPTH = 64
DEFAULT_FIELDS = {"params", "queue", "priority", "max_attempts", "timeout"}
JOB_FIELDS = {"name", "kind", "params", "needs", "queue", "priority", "max_attempts", "timeout", "sweep", "foreach"}
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # used with fullmatch: no trailing newline slips by
QUEUE_RE = re.compile(r"[a-z0-9_-]{1,50}")


class _SpecLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; users mean a float (learning rates), as YAML 1.2 does."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


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


@dataclass(frozen=True)
class BatchSpec:
    name: str
    path: str
    raw: Mapping[str, Any]  # the spec as parsed from YAML, stored with the batch
    jobs: tuple[JobSpec, ...]  # in dependency order: every job comes after the jobs it needs


def load_spec(path: str | Path, data_dir: Path) -> BatchSpec:
    """Read and validate a spec file. Raises SpecError naming the file, the job and the field."""
    path_str = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(path_str, f"cannot read spec: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise SpecError(path_str, f"not a UTF-8 text file (byte {e.start})") from e
    return parse_spec(read_spec_text(text, path_str), path_str, Path(path).resolve().parent, data_dir)


def read_spec_text(text: str, path: str) -> Any:
    """Parse a spec's YAML (JSON is YAML too) without validating it; ``path`` names it in errors."""
    try:
        return yaml.load(text, Loader=_SpecLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(path, f"malformed YAML{where}: {problem}") from e
    except (ValueError, RecursionError) as e:  # a value its constructor refuses (2020-02-30), nesting
        raise SpecError(path, f"malformed YAML: {first_line(e)}") from e


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def check_shape(raw: Any, path: str) -> None:
    """Refuse what no spec needs and what the database or a JSON answer cannot hold, before it is validated: a
    few hundred bytes of YAML aliases that expand to billions of values, nesting deeper than any spec, and
    non-finite numbers (PostgreSQL refuses them in JSON; JSON has no NaN)."""
    stack: list[tuple[Any, int]] = [(raw, 0)]
    seen = 1
    while stack:
        value, depth = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(path, f"{value} is not a finite number (NaN and infinities cannot be stored)")
        children: list[Any] = []
        if isinstance(value, dict):
            children = [v for kv in value.items() for v in kv]
        elif isinstance(value, (list, tuple, set, frozenset)):
            children = list(value)
        if not children:
            continue
        seen += len(children)
        if seen > MAX_SPEC_VALUES:
            raise SpecError(path, f"more than {MAX_SPEC_VALUES} values (YAML aliases expanded)")
        if depth >= MAX_SPEC_DEPTH:
            raise SpecError(path, f"nested deeper than {MAX_SPEC_DEPTH} levels")
        stack.extend((v, depth + 1) for v in children)


def parse_spec(raw: Any, path: str, base_dir: Path, data_dir: Path) -> BatchSpec:
    """Validate an already-parsed spec (YAML or JSON). Relative data paths are taken from ``base_dir``."""
    check_shape(raw, path)
    if not isinstance(raw, dict):
        raise SpecError(path, "a spec must be a mapping with 'batch' and 'jobs'")
    _no_unknown(raw, TOP_FIELDS, path, None, "")
    name = raw.get("batch")
    if not isinstance(name, str) or not name.strip():
        raise SpecError(path, "required, a non-empty string", field="batch")
    if len(name.strip()) > 200 or not name.isprintable():
        raise SpecError(path, "at most 200 printable characters", field="batch")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SpecError(path, "must be a mapping", field="defaults")
    _no_unknown(defaults, DEFAULT_FIELDS, path, None, "defaults.")
    entries = raw.get("jobs")
    if not isinstance(entries, list) or not entries:
        raise SpecError(path, "required, a non-empty list of jobs", field="jobs")

    default_params = defaults.get("params") or {}
    if not isinstance(default_params, dict):
        raise SpecError(path, "must be a mapping", field="defaults.params")
    _check_default_params(default_params, entries, path)

    expanded: list[tuple[dict[str, Any], JobSpec]] = []
    expansions: dict[str, list[JobSpec]] = {}
    seen_entries: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise SpecError(path, "each job must be a mapping", field=f"jobs[{i}]")
        jname = entry.get("name")
        if not isinstance(jname, str) or not NAME_RE.fullmatch(jname):
            raise SpecError(path, "required; letters, digits, '_', '.', '-' (at most 100)",
                            job=str(jname) if jname is not None else f"#{i + 1}", field="name")
        if jname in seen_entries:
            raise SpecError(path, "duplicate job name", job=jname, field="name")
        seen_entries[jname] = entry
        over = _foreach(entry, jname, expansions, path)
        for job in _expand(entry, jname, defaults, default_params, path, base_dir, data_dir, over,
                           MAX_JOBS - len(expanded)):
            expanded.append((entry, job))
            if job.exported:
                expansions.setdefault(jname, []).append(job)
        if len(expanded) > MAX_JOBS:
            raise SpecError(path, f"the batch has more than {MAX_JOBS} jobs: split it", job=jname)

    by_name: dict[str, JobSpec] = {}
    for _, job in expanded:
        if job.name in by_name:
            raise SpecError(path, "two jobs expand to this name: rename one", job=job.name, field="name")
        by_name[job.name] = job
    resolved = [_resolve_needs(entry, job, expansions, by_name, path) for entry, job in expanded]
    for job in resolved:
        _check_inputs(job, [by_name[p] for p in job.needs], path)
    return BatchSpec(name=name.strip(), path=path, raw=raw, jobs=tuple(_topological(resolved, path)))


def _no_unknown(mapping: Mapping[str, Any], allowed: set[str], path: str, job: str | None, prefix: str) -> None:
    unknown = sorted(set(mapping) - allowed, key=str)
    if unknown:
        raise SpecError(path, f"unknown field; expected one of: {', '.join(sorted(allowed))}", job=job,
                        field=prefix + str(unknown[0]))


def _check_default_params(default_params: Mapping[str, Any], entries: list[Any], path: str) -> None:
    """A default param must belong to at least one kind used in the batch (so a typo is not silently ignored)."""
    kinds = {e.get("kind") for e in entries if isinstance(e, dict) and isinstance(e.get("kind"), str)}
    known: set[str] = set()
    for k in kinds:
        if k in KINDS:
            known |= {f.name for f in dataclasses.fields(KINDS[k].config)}
    for p in default_params:
        if p not in known:
            raise SpecError(path, "no job kind of this batch has this parameter", field=f"defaults.params.{p}")


def _foreach(entry: Mapping[str, Any], jname: str, expansions: Mapping[str, list[JobSpec]],
             path: str) -> list[JobSpec] | None:
    target = entry.get("foreach")
    if target is None:
        return None
    if not isinstance(target, str) or target not in expansions:
        raise SpecError(path, f"must name a job defined above this one, got {target!r}", job=jname, field="foreach")
    return expansions[target]


def _int_field(entry: Mapping[str, Any], defaults: Mapping[str, Any], key: str, default: int, lo: int, hi: int,
               path: str, job: str) -> int:
    value = entry.get(key, defaults.get(key, default))
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SpecError(path, f"must be an integer from {lo} to {hi}, got {value!r}", job=job,
                        field=key if key in entry else f"defaults.{key}")
    return value


def _expand(entry: dict[str, Any], jname: str, defaults: Mapping[str, Any], default_params: Mapping[str, Any],
            path: str, base_dir: Path, data_dir: Path, over: list[JobSpec] | None, room: int) -> list[JobSpec]:
    """The jobs of one entry: one per combination of its sweep (times its foreach job's); at most ``room``."""
    _no_unknown(entry, JOB_FIELDS, path, jname, "")
    kind = entry.get("kind")
    if isinstance(kind, str) and kind in KINDS and KINDS[kind].generated:
        raise SpecError(path, f"{kind} jobs are made by a 'dream' entry, not written by hand: use kind: dream",
                        job=jname, field="kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise SpecError(path, f"unknown kind {kind!r}; expected one of: {', '.join(SPEC_KINDS)}", job=jname,
                        field="kind")
    info = KINDS[kind]
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise SpecError(path, "must be a mapping", job=jname, field="params")
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
    fields = {f.name for f in dataclasses.fields(info.config)}
    for key, values in sweep.items():
        if key not in fields:
            raise SpecError(path, "unknown parameter of kind " + repr(kind), job=jname, field=f"sweep.{key}")
        if key in params:
            raise SpecError(path, "set both in params and in sweep", job=jname, field=f"sweep.{key}")
        if not isinstance(values, list) or not values:
            raise SpecError(path, "must be a non-empty list of values", job=jname, field=f"sweep.{key}")
        shown = [_fmt(v) for v in values]
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
        raise SpecError(path, f"expands to {count} jobs; a batch has at most {MAX_JOBS}: split it", job=jname,
                        field="sweep" if keys else "foreach")
    for parent, combo in itertools.product(parents, itertools.product(*(sweep[k] for k in keys))):
        values = dict(zip(keys, combo, strict=True))
        labels = {**(parent.sweep_values if parent else {}), **values}
        name = jname + ("[" + ",".join(f"{k}={_fmt(v)}" for k, v in labels.items()) + "]" if labels else "")
        merged = {k: v for k, v in default_params.items() if k in fields}
        merged.update(params)
        merged.update(values)
        try:
            config: Any = parse_config(info.config, merged)
        except ConfigError as e:
            name_of = e.field.split("[")[0] if isinstance(e.field, str) else e.field
            from_defaults = name_of in default_params and name_of not in params
            origin = "sweep" if name_of in values else "defaults.params" if from_defaults else "params"
            raise SpecError(path, e.message, job=name, field=f"{origin}.{e.field}") from e
        for file_param in info.files:
            from_defaults = file_param in default_params and file_param not in params
            origin = "sweep" if file_param in values else "defaults.params" if from_defaults else "params"
            config = dataclasses.replace(config, **{file_param: _input_image(
                getattr(config, file_param), base_dir, path, name, f"{origin}.{file_param}")})
        full = config_to_params(config)
        if full.get("dataset") is not None:
            full["data_path"] = _data_path(full, base_dir, data_dir, path, name)
        common: dict[str, Any] = dict(queue=queue, priority=priority, max_attempts=max_attempts,
                                      timeout=float(timeout) if timeout is not None else None, sweep_values=labels)
        pinned = (parent.name,) if parent else ()
        if not info.expands:
            jobs.append(JobSpec(name=name, kind=kind, params=full, needs=(), pinned=pinned, **common))
            continue
        generated = dream_jobs(name, config)
        for job_name, job_kind, job_params, internal in generated:
            tile = job_kind == "dream_tile"
            jobs.append(JobSpec(name=job_name, kind=job_kind, params=job_params, needs=internal,
                                pinned=pinned if tile else (), group=name, entry_needs=tile,
                                exported=job_name == generated[-1][0], **common))
    return jobs


def _input_image(given: str, base_dir: Path, path: str, job: str, field: str) -> str:
    """An input image's absolute path, checked now: a missing or undecodable file is a spec error."""
    resolved = Path(given) if Path(given).is_absolute() else base_dir / given
    try:
        check_image_file(resolved)
    except DataFileError as e:
        raise SpecError(path, str(e), job=job, field=field) from e
    return str(resolved.resolve())


def _fmt(v: Any) -> str:
    return "-".join(map(str, v)) if isinstance(v, list) else str(v)


def _data_path(params: dict[str, Any], base_dir: Path, data_dir: Path, path: str, job: str) -> str | None:
    """Resolve the dataset's file now, so a missing or unreadable file is a spec error, not a failed job."""
    given = params.get("data_path")
    if given is not None and not Path(given).is_absolute():
        given = str(base_dir / given)
    try:
        resolved = resolve_data_file(params["dataset"], given, data_dir)
    except DataFileError as e:
        raise SpecError(path, str(e), job=job, field="params.data_path" if given else "params.dataset") from e
    return str(resolved) if resolved is not None else None


def _resolve_needs(entry: Mapping[str, Any], job: JobSpec, expansions: Mapping[str, list[JobSpec]],
                   by_name: Mapping[str, JobSpec], path: str) -> JobSpec:
    needs = entry.get("needs") or []
    where = job.group or job.name  # a dream's errors name the dream, not one of its tiles
    if isinstance(needs, str):
        needs = [needs]
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise SpecError(path, "must be a job name or a list of job names", job=where, field="needs")
    parents: list[str] = list(job.pinned) + list(job.needs)
    if not job.entry_needs:
        return job
    for n in needs:
        if n == entry.get("foreach"):
            continue  # its own expansion is pinned already
        if n in expansions:
            group = expansions[n]
            shared = [k for k in job.sweep_values if all(k in g.sweep_values for g in group)]
            group = [g for g in group if all(g.sweep_values[k] == job.sweep_values[k] for k in shared)]
            if not group:
                pairs = ", ".join(f"{k}={_fmt(job.sweep_values[k])}" for k in shared)
                raise SpecError(path, f"needs {n!r}, but no job of that sweep has {pairs}", job=where,
                                field="needs")
            parents.extend(g.name for g in group)
        elif n in by_name:
            parents.append(n)
        else:
            raise SpecError(path, f"needs unknown job {n!r}", job=where, field="needs")
    if job.name in parents or entry["name"] in needs:
        raise SpecError(path, "a job cannot need itself", job=where, field="needs")
    return JobSpec(**{**job.__dict__, "needs": tuple(dict.fromkeys(parents))})


def _check_inputs(job: JobSpec, parents: list[JobSpec], path: str) -> None:
    """The parents a kind reads results from are there, in the right number and of the right model."""
    info = KINDS[job.kind]
    where = job.group or job.name  # a dream's errors name the dream, not one of its tiles
    for inp in info.inputs:
        found = [p for p in parents if p.kind == inp.kind
                 and (inp.models is None or p.params.get("model") in inp.models)]
        what = inp.kind + (f" job of model {' or '.join(inp.models)}" if inp.models else " job")
        if len(found) < inp.min:
            article = "an" if what[0] in "aeiou" else "a"
            raise SpecError(path, f"needs {article} {what} ({inp.role})", job=where, field="needs")
        if len(found) > inp.max:
            names = ", ".join(p.name for p in found)
            raise SpecError(path, f"needs at most {inp.max} {what} ({inp.role}), got {names}", job=where,
                            field="needs")
    if job.kind == "dream_tile":
        cnn = next(p for p in parents if p.kind == "train" and p.params.get("model") == "cnn")
        n_maps = cnn_feature_maps(cnn.params)
        if job.params["map"] >= n_maps:
            raise SpecError(path, f"map {job.params['map']} (level {job.params['level']}) is out of range: the "
                            f"features layer of {cnn.name!r} has {n_maps} maps (0 to {n_maps - 1})", job=where,
                            field="params.maps")
    if info.dataset_unless:
        has_input = any(p.kind == info.dataset_unless for p in parents)
        article = "an" if info.dataset_unless[0] in "aeiou" else "a"
        if job.params.get("dataset") is None and not has_input:
            raise SpecError(path, f"required unless the job needs {article} {info.dataset_unless} job", job=job.name,
                            field="params.dataset")
        if job.params.get("dataset") is not None and has_input:
            raise SpecError(path, f"set (here or by defaults.params) while the job also needs {article} "
                            f"{info.dataset_unless} job: it would cluster the dataset, not that job's output. "
                            "Remove one", job=job.name, field="params.dataset")


def _topological(jobs: list[JobSpec], path: str) -> list[JobSpec]:
    """Order jobs so parents come first (Kahn's algorithm, stable); a cycle is a SpecError naming a job in it."""
    by_name = {j.name: j for j in jobs}
    indegree = {j.name: len(j.needs) for j in jobs}
    children: dict[str, list[str]] = {j.name: [] for j in jobs}
    for j in jobs:
        for p in j.needs:
            children[p].append(j.name)
    ready = [j.name for j in jobs if indegree[j.name] == 0]
    order: list[JobSpec] = []
    while ready:
        n = ready.pop(0)
        order.append(by_name[n])
        for c in children[n]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    if len(order) != len(jobs):
        stuck = next(j for j in jobs if indegree[j.name] > 0)
        cycle = _find_cycle(stuck.name, by_name)
        raise SpecError(path, "dependency cycle: " + " -> ".join(cycle), job=cycle[0], field="needs")
    return order


def _find_cycle(start: str, by_name: Mapping[str, JobSpec]) -> list[str]:
    path: list[str] = []
    on_path: set[str] = set()

    def visit(n: str) -> list[str] | None:
        if n in on_path:
            return path[path.index(n):] + [n]
        on_path.add(n)
        path.append(n)
        for p in by_name[n].needs:
            found = visit(p)
            if found:
                return found
        on_path.discard(n)
        path.pop()
        return None

    return visit(start) or [start]
