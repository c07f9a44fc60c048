"""A spec's searches: an entry with ``search:`` (``core.kinds.search``), the per-trial chains made from it with
``foreach:``, and the jobs that need the whole search or its best trial.

Trials are asked after submit, as slots free up, so their jobs cannot be written with the batch. What is written
instead, and validated like every other entry at submit:

- the entry becomes one ``study`` job named as the entry, running while the search runs;
- the entry and each entry made per trial (``foreach:`` the search, or ``foreach:`` such an entry) are expanded once
  against a template trial labelled ``trial=#``: their params are validated, their files found, their inputs
  checked. These templates are kept with the search (``SearchSpec.jobs``); each asked trial instantiates them,
  ``#`` replaced by the trial's number and values: ``tune[trial=3,z_dim=12,...]``, ``encode[trial=3,...]``;
- a job that needs the search (``needs: tune``, every complete trial), its best trial (``needs: tune.best``), or an
  entry made per trial (``needs: encode`` / ``encode.best``) needs the study job in the batch, and waits for it;
  when the search ends its real parents are added (``SearchSpec.gates``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError
from core.kinds import KINDS
from core.kinds.search import KINDS as SEARCH_KINDS
from core.kinds.search import SearchParams
from core.params import config_to_params, parse_config
from scheduler.errors import SpecError
from scheduler.spec_entries import Context, JobSpec, expand_entry, fmt

STUDY = SEARCH_KINDS[0]  # the kind of the job that stands for a search in its batch
TRIAL = "trial"  # the label of a trial's jobs: tune[trial=3,z_dim=12,...]
TEMPLATE = "#"  # its value in the templates expanded at submit
BEST = ".best"  # needs: tune.best (or encode.best): the best trial's job
ALL, BEST_MODE = "all", "best"


@dataclass(frozen=True)
class SearchSpec:
    """One search of a spec, validated: what its study and its trials' jobs are made from."""

    name: str  # the entry's name, and its study job's
    config: Mapping[str, Any]  # the search block with its defaults (SearchParams as params)
    jobs: tuple[JobSpec, ...]  # the templates made per trial, parents first: the trial itself first
    gates: Mapping[str, tuple[tuple[str, str], ...]]  # a job of the batch -> (template it needs, all | best)

    @property
    def budget(self) -> int:
        return parse_config(SearchParams, self.config).budget


def is_template(job: JobSpec) -> bool:
    """Whether ``job`` is a template made per trial (a search's trial, or a job of a chain made ``foreach`` it)."""
    return job.sweep_values.get(TRIAL) == TEMPLATE


def trial_label(number: int, values: Mapping[str, Any]) -> str:
    """The label of trial ``number`` in its jobs' names: ``trial=3,z_dim=12,learning_rate=0.001234``."""
    shown = [f"{TRIAL}={number}"] + [f"{k}={_short(v)}" for k, v in values.items()]
    return ",".join(shown)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else fmt(v)


def instance_name(template: str, number: int, values: Mapping[str, Any]) -> str:
    """The name of trial ``number``'s job made from the template named ``template``."""
    return template.replace(f"[{TRIAL}={TEMPLATE}", "[" + trial_label(number, values), 1)


def expand_search(entry: dict[str, Any], jname: str, ctx: Context, over: list[JobSpec] | None,
                  room: int) -> list[JobSpec]:
    """The study job and the template trial of an entry with ``search:``; SpecError naming the field."""
    path = ctx.path
    kind = entry.get("kind")
    info = KINDS.get(kind) if isinstance(kind, str) else None
    if info is None or not info.searchable:
        searchable = ", ".join(sorted(k.name for k in KINDS.values() if k.searchable))
        if info is None:
            return expand_entry(entry, jname, ctx, over, room)  # its own error: an unknown kind
        raise SpecError(path, f"only {searchable} entries take a search, not {kind}", job=jname, field="search")
    for other in ("sweep", "foreach"):
        if entry.get(other):
            raise SpecError(path, f"a search's entry takes no {other}: search its values instead", job=jname,
                            field=other)
    block = entry.get("search")
    if not isinstance(block, dict):
        raise SpecError(path, "must be a mapping: space, metric, trials, parallel, sampler, pruner",
                        job=jname, field="search")
    try:
        config: SearchParams = parse_config(SearchParams, block)
    except ConfigError as e:
        raise SpecError(path, e.message, job=jname, field=f"search.{e.field}") from e
    fields = {f.name for f in dataclasses.fields(info.params)}
    params = entry.get("params") or {}
    for name in config.dimensions():
        field = f"search.space.{name}"
        if name not in fields:
            raise SpecError(path, f"unknown parameter of kind {kind!r}", job=jname, field=field)
        if isinstance(params, dict) and name in params:
            raise SpecError(path, "set both in params and in search.space", job=jname, field=field)
        if name in info.files or name in ("dataset", "data_path") or name == info.search_steps:
            raise SpecError(path, "cannot be searched: it names the data or counts the steps the pruner "
                            "judges at", job=jname, field=field)
    if 1 + config.budget > room:
        raise SpecError(path, f"its {config.budget} trials would pass the batch's {ctx.max_jobs} jobs", job=jname,
                        field="search.trials")
    base = expand_entry({k: v for k, v in entry.items() if k != "search"}, jname, ctx, None, room)
    assert len(base) == 1, "a searchable kind expands to one job per entry"
    template = base[0]
    _check_points(config, info.params, template, path, jname)
    study = JobSpec(name=jname, kind=STUDY.name, params=config_to_params(config), needs=(), queue=STUDY.queue,
                    priority=template.priority, max_attempts=1, timeout=None, exported=False)
    trial = dataclasses.replace(template, name=f"{jname}[{TRIAL}={TEMPLATE}]", sweep_values={TRIAL: TEMPLATE})
    return [study, trial]


def _check_points(config: SearchParams, params_class: type, template: JobSpec, path: str, jname: str) -> None:
    """Each end of each range, and each choice, is a valid value of the parameter with the others as given."""
    base = dict(template.params)
    for name, dim in config.dimensions().items():
        points = list(dim.choices) if dim.type == "choice" else [dim.low, dim.high]
        for value in points:
            value = int(value) if dim.type == "int" else value
            try:
                parse_config(params_class, {**base, name: value})
            except ConfigError as e:
                where = f"search.space.{name}" if e.field.split("[")[0] == name else f"params.{e.field}"
                raise SpecError(path, f"{e.message} (with {name}={fmt(value)})", job=jname, field=where) from e


class Searches:
    """A spec's searches while it is parsed: the needs that mean a search rewritten to its study job, the parents
    a job's inputs are checked against, and the templates set apart from the batch's jobs at the end."""

    def __init__(self, expanded: list[tuple[dict[str, Any], JobSpec]], expansions: Mapping[str, list[JobSpec]],
                 by_name: Mapping[str, JobSpec], path: str) -> None:
        self.path = path
        self.by_name = by_name
        self.studies = {j.name for _, j in expanded if j.kind == STUDY.name}
        # entry name -> its search, for every entry made per trial (the search's own entry included)
        self.per_trial: dict[str, str] = {}
        for entry, job in expanded:
            if is_template(job):
                root = job.name.split("[", 1)[0] if job.kind != STUDY.name else job.name
                self.per_trial[entry["name"]] = self._search_of(job, root)
        self.visible = {k: v for k, v in expansions.items() if k not in self.per_trial}
        self.expansions = expansions
        self.gates: dict[str, list[tuple[str, str]]] = {}

    def _search_of(self, job: JobSpec, name: str) -> str:
        if name in self.studies:
            return name
        for parent in job.pinned:  # a chain made foreach a per-trial entry: the search of its parent
            return self._search_of(self.by_name[parent], parent.split("[", 1)[0])
        return name

    def resolving(self, entry: dict[str, Any], job: JobSpec) -> tuple[dict[str, Any], JobSpec,
                                                                      Mapping[str, list[JobSpec]]]:
        """What ``resolve_needs`` is given for ``job``: its entry (with the needs that mean a search or one of its
        chains rewritten to the search's study job) and the expansions its names may pair with."""
        if not self.per_trial:
            return entry, job, self.expansions
        needs = entry.get("needs")
        names = [needs] if isinstance(needs, str) else needs if isinstance(needs, list) else []
        if is_template(job):
            for n in names:
                if isinstance(n, str) and n not in self.by_name and n.endswith(BEST) \
                        and n[:-len(BEST)] in self.per_trial:
                    raise SpecError(self.path, f"a job made per trial cannot need {n!r}: it needs its own trial's "
                                    "jobs by their entry's name", job=job.name, field="needs")
            return entry, job, self.expansions
        rewritten: list[Any] = []
        for n in names:
            target, mode = self._target(n)
            if target is None:
                rewritten.append(n)
                continue
            self.gates.setdefault(job.name, []).extend((t.name, mode) for t in self._paired(job, target, n))
            rewritten.append(self.per_trial[target])
        if job.name not in self.gates:
            return entry, job, self.visible
        return {**entry, "needs": list(dict.fromkeys(rewritten))}, job, self.visible

    def _target(self, n: Any) -> tuple[str | None, str]:
        if not isinstance(n, str) or n in self.by_name and n not in self.studies:
            return None, ALL
        if n.endswith(BEST) and n[:-len(BEST)] in self.per_trial:
            return n[:-len(BEST)], BEST_MODE
        if n in self.per_trial:
            return n, ALL
        return None, ALL

    def _paired(self, job: JobSpec, entry: str, written: str) -> list[JobSpec]:
        """The templates of ``entry`` that ``job`` needs: those with the values of its own sweep they share."""
        group = self.expansions[entry]
        shared = [k for k in job.sweep_values if k != TRIAL and all(k in g.sweep_values for g in group)]
        found = [g for g in group if all(g.sweep_values[k] == job.sweep_values[k] for k in shared)]
        if not found:
            raise SpecError(self.path, f"needs {written!r}, but no job of it has "
                            + ", ".join(f"{k}={fmt(job.sweep_values[k])}" for k in shared), job=job.name,
                            field="needs")
        return found

    def parents(self, job: JobSpec, final: Mapping[str, JobSpec]) -> list[JobSpec]:
        """The parents ``job``'s inputs are checked against: a search's template trials where it needs a search (two
        of them where it needs every trial, so a kind that reads one is told to need the best)."""
        gates = self.gates.get(job.name)
        if not gates:
            return [final[p] for p in job.needs]
        out = [final[p] for p in job.needs if p not in self.studies]
        for template, mode in gates:
            t = final[template]
            copies = 1 if mode == BEST_MODE else 2
            out += [dataclasses.replace(t, name=instance_name(t.name, i, {})) for i in range(copies)]
        return out

    def split(self, jobs: list[JobSpec], max_jobs: int) -> tuple[list[JobSpec], tuple[SearchSpec, ...]]:
        """The batch's jobs written at submit, and the searches with their templates (in dependency order)."""
        if not self.per_trial:
            return jobs, ()
        written = [j for j in jobs if not is_template(j)]
        found = []
        total = len(written)
        for study in sorted(self.studies):
            templates = tuple(j for j in jobs if is_template(j) and self._owner(j) == study)
            config = self.by_name[study].params
            gates = {name: tuple(g for g in pairs if self._owner(self.by_name[g[0]]) == study)
                     for name, pairs in self.gates.items()}
            spec = SearchSpec(study, config, templates, {k: v for k, v in gates.items() if v})
            total += spec.budget * len(templates)
            if total > max_jobs:
                raise SpecError(self.path, f"its trials' jobs would pass the batch's {max_jobs} jobs: fewer trials",
                                job=study, field="search.trials")
            found.append(spec)
        return written, tuple(found)

    def _owner(self, job: JobSpec) -> str:
        name = job.name.split("[", 1)[0]
        return self.per_trial.get(name, name)
