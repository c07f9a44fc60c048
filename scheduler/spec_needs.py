"""The edges of a spec's jobs: each entry's ``needs`` resolved to expanded jobs (a swept name pairs by shared
sweep values), each kind's inputs checked (counts, models, and its own parent-check hook), and the jobs put in
dependency order, a cycle named."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from typing import Any

from core.errors import ConfigError
from core.kinds import KINDS
from core.memory import FACTS_KEY, gib
from scheduler.errors import SpecError
from scheduler.spec_entries import JobSpec, fmt


def resolve_needs(entry: Mapping[str, Any], job: JobSpec, expansions: Mapping[str, list[JobSpec]],
                  by_name: Mapping[str, JobSpec], path: str) -> JobSpec:
    """``job`` with its entry's ``needs`` (and its foreach pairing) added to the needs it was made with."""
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
                pairs = ", ".join(f"{k}={fmt(job.sweep_values[k])}" for k in shared)
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


def check_inputs(job: JobSpec, parents: list[JobSpec], path: str, by_name: Mapping[str, JobSpec],
                 memory_budget: int, facts: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """The parents a kind reads results from are there, in the right number and of the right model, and pass the
    kind's own parent checks; the job's memory estimate fits the per-job budget. ``facts``: the recorded meta of
    each registered dataset by its reference, which the kinds' memory hooks read in place of the file."""
    info = KINDS[job.kind]
    where = job.group or job.name  # a dream's errors name the dream, not one of its tiles
    for inp in info.inputs:
        found = [p for p in parents if inp.matches(p)]
        what = inp.kind + (f" job of model {' or '.join(inp.models)}" if inp.models else " job")
        if len(found) < inp.min:
            article = "an" if what[0] in "aeiou" else "a"
            raise SpecError(path, f"needs {article} {what} ({inp.role})", job=where, field="needs")
        if len(found) > inp.max:
            names = ", ".join(p.name for p in found)
            raise SpecError(path, f"needs at most {inp.max} {what} ({inp.role}), got {names}", job=where,
                            field="needs")
    if info.check_parents is not None:
        try:
            info.check_parents(job.params, parents)
        except ConfigError as e:
            raise SpecError(path, e.message, job=where, field=f"params.{e.field}") from e
    needed = None
    if info.memory is not None:
        def known(j: JobSpec) -> JobSpec:
            return _with_facts(j, facts or {})

        needed = info.memory(known(job).params, [known(p) for p in parents], lambda n: known(by_name[n]))
    if needed is not None and needed > memory_budget:
        raise SpecError(path, f"needs about {gib(needed)} of memory, more than the {gib(memory_budget)} a job may "
                        "use (LATENTFARM_JOB_MEMORY): use smaller images, a smaller model or batch, fewer samples "
                        "or a limit", job=where, field="params")


def _with_facts(job: JobSpec, facts: Mapping[str, Mapping[str, Any]]) -> JobSpec:
    """``job`` as a memory hook sees it: with its registered dataset's facts beside its params (FACTS_KEY)."""
    recorded = facts.get(str(job.params.get("data_path")))
    if recorded is None:
        return job
    return dataclasses.replace(job, params={**job.params, FACTS_KEY: recorded})


def topological(jobs: list[JobSpec], path: str) -> list[JobSpec]:
    """Order jobs so parents come first (Kahn's algorithm, stable); a cycle is a SpecError naming a job in it."""
    by_name = {j.name: j for j in jobs}
    indegree = {j.name: len(j.needs) for j in jobs}
    children: dict[str, list[str]] = {j.name: [] for j in jobs}
    for j in jobs:
        for p in j.needs:
            children[p].append(j.name)
    ready = deque(j.name for j in jobs if indegree[j.name] == 0)
    order: list[JobSpec] = []
    while ready:
        n = ready.popleft()
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
