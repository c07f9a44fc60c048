"""A spec's `search:` entries: what they expand to at submit (a study job, per-trial templates, the jobs gated on
the search) and every error one line naming the file, the entry and the field, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.spec_search import instance_name
from tests.scheduler.spec_helpers import load, spec_error

HEAD = """\
batch: b
defaults: {params: {dataset: digits}}
jobs:
"""
TUNE = """\
  - name: tune
    kind: train
    params: {model: conv_ae, epochs: 3}
    search:
      space: {z_dim: {int: [2, 16], log: true}, learning_rate: {float: [1.0e-4, 1.0e-2], log: true}}
      metric: val_loss
      trials: 4
"""


def test_a_search_becomes_a_study_job_and_templates_made_per_trial(tmp_path: Path) -> None:
    spec = load(tmp_path, HEAD + TUNE + """\
  - {name: enc, kind: encode, foreach: tune}
  - {name: sample, kind: sample, foreach: enc, sweep: {sampler: [normal, uniform_box]}}
  - {name: best, kind: encode, needs: tune.best}
  - {name: best_enc, kind: sample, needs: enc.best}
  - {name: all, kind: noop, needs: [tune, sample]}
""")
    assert [(j.name, j.kind, j.needs) for j in spec.jobs] == [
        ("tune", "study", ()), ("best", "encode", ("tune",)), ("best_enc", "sample", ("tune",)),
        ("all", "noop", ("tune",))]
    (found,) = spec.searches
    assert found.name == "tune" and found.budget == 4 and found.config["sampler"] == "tpe"
    assert [j.name for j in found.jobs] == ["tune[trial=#]", "enc[trial=#]", "sample[trial=#,sampler=normal]",
                                            "sample[trial=#,sampler=uniform_box]"]
    assert found.jobs[2].needs == ("enc[trial=#]",)
    assert found.gates == {"best": (("tune[trial=#]", "best"),), "best_enc": (("enc[trial=#]", "best"),),
                           "all": (("tune[trial=#]", "all"), ("sample[trial=#,sampler=normal]", "all"),
                                   ("sample[trial=#,sampler=uniform_box]", "all"))}
    assert instance_name("sample[trial=#,sampler=normal]", 3, {"z_dim": 4, "learning_rate": 0.00123456}) == \
        "sample[trial=3,z_dim=4,learning_rate=0.001235,sampler=normal]"


@pytest.mark.parametrize("block,field,fragment", [
    ("{space: {z_dim: {int: [2, 8]}}, trials: 3}", "search.metric", "required"),
    ("{space: {z_dim: {int: [2, 8]}}, metric: val_loss}", "search.trials", "required"),
    ("{space: {z_dim: {int: [2, 8]}}, metric: val_loss, trials: 3, sampler: bayes}", "search.sampler",
     "expected one of"),
    ("{space: {z_dim: {int: [2, 8]}}, metric: val_loss, trials: 3, pruner: early}", "search.pruner",
     "expected one of"),
    ("{space: {z_dim: {int: [8, 2]}}, metric: val_loss, trials: 3}", "search.space.z_dim.int", "low must be"),
    ("{space: {z_dim: {int: [0, 8]}}, metric: val_loss, trials: 3}", "search.space.z_dim", "with z_dim=0"),
    ("{space: {z_dim: {ints: [2, 8]}}, metric: val_loss, trials: 3}", "search.space.z_dim.ints", "unknown key"),
    ("{space: {learning_rate: {float: [0, 1], log: true}}, metric: val_loss, trials: 3}",
     "search.space.learning_rate.log", "low > 0"),
    ("{space: {size: {int: [2, 8]}}, metric: val_loss, trials: 3}", "search.space.size", "unknown parameter"),
    ("{space: {epochs: {int: [2, 8]}}, metric: val_loss, trials: 3}", "search.space.epochs", "set both"),
    ("{space: {dataset: {choice: [digits, mnist]}}, metric: val_loss, trials: 3}", "search.space.dataset",
     "cannot be searched"),
    ("{space: {learning_rate: {float: [1.0e-4, 1.0e-2]}}, metric: val_loss, sampler: grid}",
     "search.space.learning_rate", "a grid search takes choices"),
    ("{space: {z_dim: {choice: [2, 2]}}, metric: val_loss, trials: 3}", "search.space.z_dim.choice", "repeats"),
    ("{space: {z_dim: {choice: [2, 4]}}, metric: val_loss, sampler: grid, trials: 5}", "search.trials",
     "grid's 2 points"),
    ("[z_dim]", "search", "must be a mapping"),
])
def test_a_bad_search_block_names_its_field(tmp_path: Path, block: str, field: str, fragment: str) -> None:
    e = spec_error(tmp_path, HEAD + f"  - {{name: tune, kind: train, params: {{epochs: 2}}, search: {block}}}\n")
    assert e.job == "tune" and e.field is not None and e.field.endswith(field), str(e)
    assert fragment in e.message, str(e)


@pytest.mark.parametrize("extra,job,field,fragment", [
    ("  - {name: n, kind: noop, search: {space: {value: {float: [0, 1]}}, metric: value, trials: 2}}\n", "n",
     "search", "only train entries take a search"),
    ("  - {name: enc, kind: encode, needs: tune}\n", "enc", "needs", "needs at most 1 train job"),
    ("  - {name: enc, kind: encode, foreach: tune, needs: tune.best}\n", "enc[trial=#]", "needs",
     "cannot need 'tune.best'"),
    ("  - {name: s, kind: train, params: {z_dim: 4}, sweep: {epochs: [1, 2]}, search: {space: {learning_rate: "
     "{float: [0.001, 0.01]}}, metric: loss, trials: 2}}\n", "s", "sweep", "takes no sweep"),
    ("  - {name: s, kind: train, params: {z_dim: 4}, search: {space: {z_dim: {int: [2, 8]}}, metric: loss, "
     "trials: 2}}\n", "s", "search.space.z_dim", "set both in params and in search.space"),
])
def test_entries_around_a_search_are_checked(tmp_path: Path, extra: str, job: str, field: str,
                                             fragment: str) -> None:
    e = spec_error(tmp_path, HEAD + TUNE + extra)
    assert (e.job, e.field) == (job, field), str(e)
    assert fragment in e.message, str(e)
