"""The API's search route: a search of a batch, as ``latentfarm search`` shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from scheduler import search_report
from scheduler.web.deps import Id, Plane, authorized, known_query
from scheduler.web.schemas import API, ERRORS

router = APIRouter(prefix=API, dependencies=[Depends(authorized), Depends(known_query)])
SearchName = Annotated[str, Path(min_length=1, max_length=100, description="the search entry's name")]


class TrialOut(BaseModel):
    number: int | None = Field(description="its number in the search; null for an earlier job's result of the "
                                           "same space, told to the study")
    job_id: int | None
    job: str | None = Field(description="its job's name")
    job_status: str | None
    state: Literal["running", "complete", "pruned", "failed"]
    values: dict[str, Any] = Field(description="the searched parameters' values")
    value: float | None = Field(description="the metric's final value (complete trials)")
    last: float | None = Field(description="the metric at its last step so far")
    steps: int = Field(description="the steps (epochs) it trained: 0 for a cache hit or an earlier result")
    cached_from: int | None
    finished_at: datetime | None


class BestSoFarOut(BaseModel):
    trial: int
    value: float
    best: float = Field(description="the best value of the trials ended so far")
    steps: int = Field(description="the steps (epochs) every trial had trained when it ended")
    at: datetime


class SearchOut(BaseModel):
    batch: int
    name: str
    job_id: int = Field(description="its study job: running while the search runs")
    status: Literal["running", "succeeded", "failed", "cancelled"]
    config: dict[str, Any] = Field(description="the search block: space, metric, maximize, trials, parallel, "
                                               "sampler, pruner, seed, startup")
    budget: int = Field(description="the trials it runs")
    counts: dict[str, int] = Field(description="its trials by state")
    steps: int = Field(description="the steps (epochs) its trials trained")
    best: TrialOut | None
    best_job_id: int | None
    trials: list[TrialOut]
    earlier: list[TrialOut]
    best_so_far: list[BestSoFarOut]
    importance: dict[str, float] = Field(description="Optuna's parameter importance (fANOVA); empty with fewer "
                                                     "than two complete trials")


def search_out(r: search_report.SearchReport) -> dict[str, Any]:
    s = r.search
    return {"batch": s.batch_id, "name": s.name, "job_id": s.job_id, "status": s.status, "config": s.config,
            "budget": r.config.budget, "counts": r.counts, "steps": r.steps,
            "best": vars(r.best) if r.best else None, "best_job_id": r.best.job_id if r.best else None,
            "trials": [vars(t) for t in r.trials], "earlier": [vars(t) for t in r.earlier],
            "best_so_far": [vars(p) for p in r.best_so_far], "importance": r.importance}


@router.get("/batches/{batch_id}/search/{name}", response_model=SearchOut, responses=ERRORS, tags=["batches"])
def get_search(batch_id: Id, name: SearchName, cp: Plane) -> dict[str, Any]:
    """A search of the batch: its trials with their values, state and metric, its best trial, the best value so
    far as trials ended, and Optuna's parameter importance."""
    with cp.store.session() as s:
        return search_out(search_report.report(s, batch_id, name))
