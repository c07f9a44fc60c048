"""docs/schema.md describes every table and column, and its example queries run and answer on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import text

from storage import batches, results, transitions
from storage.models import Base
from storage.records import NewJob
from storage.status import JobStatus
from storage.store import Store

DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"


def sections() -> dict[str, str]:
    parts = re.split(r"^## ", DOC.read_text(), flags=re.M)
    return {p.split("\n", 1)[0].strip(): p for p in parts[1:]}


def queries(dialect: str) -> list[str]:
    """The example queries for ``dialect``: those marked for it, and those marked for no database."""
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)
    other = {"postgresql": "-- SQLite", "sqlite": "-- PostgreSQL"}[dialect]
    return [b for b in blocks if not b.startswith(other)]


@pytest.mark.parametrize("table", sorted(Base.metadata.tables))
def test_every_table_and_column_is_documented(table: str) -> None:
    section = sections().get(table)
    assert section is not None, f"docs/schema.md has no section for the table {table}"
    missing = [c.name for c in Base.metadata.tables[table].columns if f"`{c.name}`" not in section]
    assert not missing, f"docs/schema.md does not describe {table}.{', '.join(missing)}"


def test_the_example_queries_answer(store: Store) -> None:
    z_dims = {4: 0.12, 8: 0.09, 16: 0.10}  # z_dim: test loss
    with store.session() as s:
        batch, ids = batches.create_batch(
            s, "sweep", {}, [NewJob(f"train[z_dim={z}]", "train", {"model": "conv_ae", "z_dim": z}, f"fp{z}", "gpu")
                             for z in z_dims] + [NewJob("broken", "noop", {}, "fpb", "cpu", max_attempts=2)], [])
    with store.session() as s:
        for z, loss in z_dims.items():
            jid = ids[f"train[z_dim={z}]"]
            transitions.transition(s, jid, JobStatus.PENDING, JobStatus.QUEUED)
            transitions.claim(s, jid, "gpu0@h", 60, gpu="0", host="h")
            for epoch in (1, 2):
                results.put_metrics(s, jid, {"loss": loss + 0.1 / epoch, "val_loss": loss + 0.2 / epoch}, epoch)
            results.put_metrics(s, jid, {"test_loss": loss})
            transitions.transition(s, jid, JobStatus.RUNNING, JobStatus.SUCCEEDED)
        transitions.transition(s, ids["broken"], JobStatus.PENDING, JobStatus.QUEUED)
        for attempt in (1, 2):
            transitions.claim(s, ids["broken"], "cpu0@h", 60, host="h")
            transitions.transition(s, ids["broken"], JobStatus.RUNNING,
                               JobStatus.QUEUED if attempt == 1 else JobStatus.FAILED, error="ValueError: bad")
    best, curves, trouble = [q for q in queries(store.engine.dialect.name) if "search" not in q][:3]
    with store.engine.connect() as c:
        rows = c.execute(text(best)).all()
        assert [(str(r.z_dim), r.test_loss) for r in rows] == [("8", 0.09), ("16", 0.10), ("4", 0.12)]
        rows = c.execute(text(curves.replace("j.batch_id = 1", f"j.batch_id = {batch}"))).all()
        assert [(r.name, r.epoch) for r in rows] == [(f"train[z_dim={z}]", e) for z in (16, 4, 8) for e in (1, 2)]
        assert rows[0].loss == pytest.approx(0.20) and rows[0].val_loss == pytest.approx(0.30)
        rows = c.execute(text(trouble)).all()
        assert [(r.name, r.status, r.attempts, r.worker, r.host, r.error) for r in rows] == [
            ("broken", "failed", 2, "cpu0@h", "h", "ValueError: bad")]
