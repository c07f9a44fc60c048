"""Every example spec in examples/ validates and plans (with the real data files as the data directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.plan import plan_batch
from scheduler.spec import load_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_plans(path: Path, shared_data: Path) -> None:
    plan = plan_batch(load_spec(path, shared_data))
    assert plan.jobs and len({j.fingerprint for j in plan.jobs}) == len(plan.jobs)
