"""Output for people (aligned tables, a live progress line) and for scripts (JSON, CSV)."""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from scheduler.control import Snapshot
from storage.records import Job, Metric


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2, sort_keys=False)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned plain-text table."""
    cells = [[_cell(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return ago(value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def ago(t: datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    s = (datetime.now(timezone.utc) - t).total_seconds()
    if s < 60:
        return f"{s:.0f}s ago"
    if s < 3600:
        return f"{s / 60:.0f}m ago"
    if s < 86400:
        return f"{s / 3600:.1f}h ago"
    return t.strftime("%Y-%m-%d %H:%M")


def duration(start: datetime | None, end: datetime | None) -> str | None:
    if start is None:
        return None
    end = end or datetime.now(timezone.utc)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    return f"{(end - start).total_seconds():.1f}s"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def jobs_table(jobs: Sequence[Job], metrics: dict[str, dict[int, float | None]] | None = None) -> str:
    """A row per job; ``metrics``: extra columns, a value per job id."""
    extra = metrics or {}
    rows = [(j.id, j.batch_id, j.name, j.kind, j.status.value + (" (cached)" if j.cached_from else ""),
             f"{j.progress:.0%}", j.attempts, duration(j.started_at, j.finished_at), j.worker,
             *[extra[k].get(j.id) for k in extra]) for j in jobs]
    return table(["job", "batch", "name", "kind", "status", "progress", "tries", "time", "worker", *extra], rows)


def metrics_table(metrics: Sequence[Metric], indent: str = "") -> str:
    """One row per (job, step), one column per metric key."""
    keys = sorted({m.key for m in metrics})
    grid: dict[tuple[int, int], dict[str, float]] = {}
    for m in metrics:
        grid.setdefault((m.job_id, m.step), {})[m.key] = m.value
    rows = [(job, step, *[vals.get(k) for k in keys]) for (job, step), vals in sorted(grid.items())]
    return "\n".join(indent + line for line in table(["job", "step", *keys], rows).splitlines())


def progress_line(snap: Snapshot) -> str:
    """``batch 3 [######......] 12/48, 10 succeeded, 2 running | train[z_dim=8] 40%, ...``"""
    summary = snap.summary
    c = summary.counts
    done = sum(c.get(k, 0) for k in ("succeeded", "failed", "cancelled", "pruned"))
    width = 24
    filled = int(width * done / max(summary.total, 1))
    parts = [f"batch {summary.batch.id} [{'#' * filled}{'.' * (width - filled)}] {done}/{summary.total}"]
    parts += [f"{c[k]} {k}" for k in ("succeeded", "running", "queued", "pending", "failed", "cancelled", "pruned")
              if c.get(k)]
    line = ", ".join(parts)
    if snap.leftovers:
        line += f" (and {snap.leftovers} jobs an interrupted run left)"
    if snap.running:
        line += " | " + ", ".join(f"{j.name} {j.progress:.0%}" for j in snap.running)
    return line


class ProgressPrinter:
    """Shows snapshots: one line rewritten in place on a terminal, a line per change on a pipe; a warning (jobs that
    wait on a queue no live worker consumes) on a line of its own whenever the warnings change."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = ""
        self.warned: tuple[str, ...] = ()

    def __call__(self, snap: Snapshot) -> None:
        if snap.warnings != self.warned:
            self.warned = snap.warnings
            for warning in snap.warnings:
                self.out.write(("\r\033[K" if self.tty else "") + f"warning: {warning}\n")
            self.last = ""  # the progress line again, below them
        line = progress_line(snap)
        if line != self.last:
            self.out.write("\r\033[K" + line[:200] if self.tty else line + "\n")
            self.out.flush()
            self.last = line
        if snap.worker_stopped:
            self.out.write("\nthe worker stopped before the batch finished\n")
        elif snap.summary.settled and self.tty:
            self.out.write("\n")
