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

Every error names the file, the job and the field, and is raised before anything is written. Each entry is
expanded by ``spec_entries``, its needs resolved and the jobs ordered by ``spec_needs``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.data_files import registered_ref
from core.kinds import KINDS
from scheduler.errors import SpecError, SpecErrors
from scheduler.settings import default_job_memory
from scheduler.spec_entries import DEFAULT_MAX_ATTEMPTS, NAME_RE, Context, JobSpec, expand_entry, no_unknown
from scheduler.spec_needs import check_inputs, resolve_needs, topological
from scheduler.spec_search import Searches, SearchSpec, expand_search
from storage.records import RegisteredDataset

__all__ = ["DEFAULT_MAX_ATTEMPTS", "MAX_JOBS", "BatchSpec", "JobSpec", "check_shape", "first_line", "load_spec",
           "parse_spec", "read_spec_text"]

TOP_FIELDS = {"batch", "defaults", "jobs"}
DEFAULT_FIELDS = {"params", "queue", "priority", "max_attempts", "timeout"}
MAX_JOBS = 100_000  # jobs in one batch, after sweeps, foreach and dreams are expanded
MAX_SPEC_VALUES = 100_000  # values in a parsed spec, YAML aliases expanded
MAX_SPEC_DEPTH = 64


class _SpecLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML 1.1 reads ``1e-3`` as a string; users mean a float (learning rates), as YAML 1.2 does. libyaml's
    scanner and parser where PyYAML was built with it (its wheels are): 3 to 5 times faster than the pure-Python
    ones on a large spec (1 MiB of ``[1,1,...]``: 2.1 s instead of 10.4 s)."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass(frozen=True)
class BatchSpec:
    name: str
    path: str
    raw: Mapping[str, Any]  # the spec as parsed from YAML, stored with the batch
    jobs: tuple[JobSpec, ...]  # in dependency order: every job comes after the jobs it needs
    searches: tuple[SearchSpec, ...] = ()  # its searches: their trials' jobs are made after submit


def load_spec(path: str | Path, data_dir: Path, memory_budget: int | None = None,
              datasets: Mapping[str, RegisteredDataset] | None = None) -> BatchSpec:
    """Read and validate a spec file. Raises SpecError naming the file, the job and the field."""
    path_str = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(path_str, f"cannot read spec: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise SpecError(path_str, f"not a UTF-8 text file (byte {e.start})") from e
    return parse_spec(read_spec_text(text, path_str), path_str, Path(path).resolve().parent, data_dir, memory_budget,
                      datasets)


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


def parse_spec(raw: Any, path: str, base_dir: Path, data_dir: Path, memory_budget: int | None = None,
               datasets: Mapping[str, RegisteredDataset] | None = None) -> BatchSpec:
    """Validate an already-parsed spec (YAML or JSON). Relative data paths are taken from ``base_dir``, then from
    ``data_dir``; files must lie in one of the two (the data roots). A job whose memory estimate exceeds
    ``memory_budget`` (default: ``Settings``' default, half the machine's memory) is refused. ``datasets``: the
    farm's registered datasets by name (``scheduler.datasets.registered``), which a spec may name instead of files;
    they are checked from what their registration recorded, so no copy of them is needed here."""
    check_shape(raw, path)
    if not isinstance(raw, dict):
        raise SpecError(path, "a spec must be a mapping with 'batch' and 'jobs'")
    no_unknown(raw, TOP_FIELDS, path, None, "")
    name = raw.get("batch")
    if not isinstance(name, str) or not name.strip():
        raise SpecError(path, "required, a non-empty string", field="batch")
    if len(name.strip()) > 200 or not name.isprintable():
        raise SpecError(path, "at most 200 printable characters", field="batch")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SpecError(path, "must be a mapping", field="defaults")
    no_unknown(defaults, DEFAULT_FIELDS, path, None, "defaults.")
    entries = raw.get("jobs")
    if not isinstance(entries, list) or not entries:
        raise SpecError(path, "required, a non-empty list of jobs", field="jobs")

    default_params = defaults.get("params") or {}
    if not isinstance(default_params, dict):
        raise SpecError(path, "must be a mapping", field="defaults.params")
    _check_default_params(default_params, entries, path)
    ctx = Context(path, base_dir, data_dir, defaults, default_params, MAX_JOBS, datasets or {})

    expanded: list[tuple[dict[str, Any], JobSpec]] = []
    expansions: dict[str, list[JobSpec]] = {}
    seen_entries: set[str] = set()
    errors = SpecErrors(path)  # every entry is checked: all its errors are told at once (up to MAX_ERRORS)
    for i, entry in enumerate(entries):
        with errors.collect():
            if not isinstance(entry, dict):
                raise SpecError(path, "each job must be a mapping", field=f"jobs[{i}]")
            jname = entry.get("name")
            if not isinstance(jname, str) or not NAME_RE.fullmatch(jname):
                raise SpecError(path, "required; letters, digits, '_', '.', '-' (at most 100)",
                                job=str(jname) if jname is not None else f"#{i + 1}", field="name")
            if jname in seen_entries:
                raise SpecError(path, "duplicate job name", job=jname, field="name")
            seen_entries.add(jname)
            over = _foreach(entry, jname, expansions, path)
            expand = expand_search if "search" in entry else expand_entry
            for job in expand(entry, jname, ctx, over, MAX_JOBS - len(expanded)):
                expanded.append((entry, job))
                if job.exported:
                    expansions.setdefault(jname, []).append(job)
            if len(expanded) > MAX_JOBS:
                raise SpecError(path, f"the batch has more than {MAX_JOBS} jobs: split it", job=jname)
        if errors.full or len(expanded) > MAX_JOBS:
            break
    errors.raise_any()  # the needs of later entries may name a failed one: checked once every entry is right

    by_name: dict[str, JobSpec] = {}
    for _, job in expanded:
        if job.name in by_name:
            raise SpecError(path, "two jobs expand to this name: rename one", job=job.name, field="name")
        by_name[job.name] = job
    searches = Searches(expanded, expansions, by_name, path)
    resolved = [resolve_needs(*searches.resolving(entry, job), by_name, path) for entry, job in expanded]
    budget = memory_budget or default_job_memory()
    final = {j.name: j for j in resolved}
    facts = {registered_ref(d.name, d.sha256): d.meta for d in (datasets or {}).values()}
    failed: set[str] = set()  # entries with an error already: one error per entry (a sweep fails alike)
    for (entry, _), job in zip(expanded, resolved, strict=True):
        if entry.get("name") in failed:
            continue
        told = len(errors.errors)
        with errors.collect():
            check_inputs(job, searches.parents(job, final), path, final, budget, facts)
        if len(errors.errors) > told:
            failed.add(str(entry.get("name")))
        if errors.full:
            break
    errors.raise_any()
    jobs, found = searches.split(topological(resolved, path), MAX_JOBS)
    return BatchSpec(name=name.strip(), path=path, raw=raw, jobs=tuple(jobs), searches=found)


def _check_default_params(default_params: Mapping[str, Any], entries: list[Any], path: str) -> None:
    """A default param must belong to at least one kind used in the batch (so a typo is not silently ignored)."""
    kinds = {e.get("kind") for e in entries if isinstance(e, dict) and isinstance(e.get("kind"), str)}
    known: set[str] = set()
    for k in kinds:
        if k in KINDS:
            known |= {f.name for f in dataclasses.fields(KINDS[k].params)}
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
