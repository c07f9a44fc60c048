"""``latentfarm search BATCH NAME``: a search's trials, best trial, best value so far and parameter importance."""

from __future__ import annotations

import click

from scheduler import search_report
from scheduler.cli.common import handles_errors, open_plane
from scheduler.cli.render import dumps, table
from scheduler.search_report import SearchReport

CURVE_WIDTH = 40  # characters of the best-so-far bars


@click.command()
@click.argument("batch", type=int)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the search as JSON.")
@handles_errors
def search(batch: int, name: str, as_json: bool) -> None:
    """The search NAME of BATCH: its trials (values, state, metric, epochs), the best trial and its job, the best
    value so far as trials ended, and which parameters mattered (Optuna's importance)."""
    cp = open_plane()
    with cp.store.session() as s:
        found = search_report.report(s, batch, name)
    if as_json:
        click.echo(dumps(found))
        return
    click.echo(render(found))


def render(r: SearchReport) -> str:
    c = r.config
    direction = "maximised" if c.maximize else "minimised"
    lines = [f"search {r.search.name!r} of batch {r.search.batch_id}: {r.search.status}; {c.sampler} sampler, "
             f"{c.pruner} pruner; {c.metric} {direction}",
             f"trials: {len(r.trials)} of {c.budget} asked, " + ", ".join(f"{n} {k}" for k, n in
                                                                          sorted(r.counts.items()))
             + f"; {r.steps} epochs trained" + (f"; {len(r.earlier)} earlier results told to it" if r.earlier
                                                else "")]
    names = list(c.dimensions())
    rows = [(t.number, t.job_id, t.state + (" (cached)" if t.cached_from else ""), t.value if t.value is not None
             else t.last, t.steps, *[_short(t.values.get(n)) for n in names]) for t in r.trials]
    lines += ["", table(["trial", "job", "state", c.metric, "epochs", *names], rows)]
    if r.best is not None:
        lines += ["", f"best: trial {r.best.number}, job {r.best.job_id} {r.best.job}: {c.metric} {r.best.value:.6g}"
                  f"  (latentfarm show {r.best.job_id})"]
    if r.best_so_far:
        values = [p.best for p in r.best_so_far]
        lo, hi = min(values), max(values)
        lines += ["", f"best {c.metric} so far, as trials ended (epochs spent):"]
        for p in r.best_so_far:
            span = (hi - p.best) / (hi - lo) if hi > lo else 1.0
            bar = "#" * max(1, round(CURVE_WIDTH * (span if not c.maximize else 1 - span)))
            lines.append(f"  trial {p.trial:>4}  {p.steps:>6} epochs  {p.best:.6g}  {bar}")
    if r.importance:
        lines += ["", "parameter importance (Optuna, fANOVA):"]
        lines += [f"  {k:<20} {v:.3f}" for k, v in sorted(r.importance.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def _short(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "-".join(map(str, v))
    return "-" if v is None else str(v)


COMMANDS = (search,)
