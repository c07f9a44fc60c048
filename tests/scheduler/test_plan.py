"""Planning: fingerprints (what a job computes, not where its files are) and dependency edges."""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

import scheduler.plan
from core.kinds import KINDS
from core.kinds.dream import DreamMergeParams, DreamTileParams
from core.kinds.noop import NoopParams
from core.kinds.train import TrainParams
from core.params import config_to_params, parse_config
from scheduler.plan import LOCATION_PARAMS, BatchPlan, fingerprint, job_data_identity, plan_batch
from scheduler.spec import BatchSpec, load_spec
from storage.records import NewJob


def load(tmp_path: Path, text: str, data_dir: Path | None = None, name: str = "batch.yaml") -> BatchSpec:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_spec(path, data_dir or tmp_path / "no-data")


def fps(plan: BatchPlan) -> dict[str, str]:
    return {j.name: j.fingerprint for j in plan.jobs}


def train_fp(tmp_path: Path, params: str, data_dir: Path | None = None, name: str = "batch.yaml") -> str:
    text = f"batch: b\njobs:\n  - {{name: t, kind: train, params: {params}}}\n"
    spec = load(tmp_path, text, data_dir, name)
    return plan_batch(spec).jobs[0].fingerprint


TRAIN = config_to_params(TrainParams())


# ----------------------------------------------------------------------------------------------------
# fingerprint()


def test_fingerprint_is_a_sha256_hex_and_deterministic() -> None:
    a = fingerprint("train", TRAIN, ["p1", "p2"], "digits:bundled")
    b = fingerprint("train", dict(TRAIN), ["p1", "p2"], "digits:bundled")
    assert a == b
    assert len(a) == 64 and int(a, 16) >= 0


def test_fingerprint_ignores_param_order_and_parent_order() -> None:
    reversed_params = dict(reversed(list(TRAIN.items())))
    assert fingerprint("train", TRAIN, ["a", "b"], None) == fingerprint("train", reversed_params, ["b", "a"],
                                                                        None)


# Every parameter of every kind but the file location, each with a value different from its default.
DATA_VALUES = {"dataset": "mnist", "limit": 100, "image_size": 64, "color": "rgb", "test_size": 0.3}
OTHER_VALUES = {
    "train": {**DATA_VALUES, "model": "pool_ae", "epochs": 11, "batch_size": 64, "z_dim": 32, "filters": [32, 64, 64],
              "loss": "mse", "optimizer": "sgd", "learning_rate": 0.01, "validation_split": 0.2, "seed": 1,
              "keep_checkpoint": True},
    "encode": {**DATA_VALUES, "batch_size": 64, "plot": "tsne", "plot_sample": 100},
    "sample": {"sampler": "normal", "n": 10, "k_sigma": 1.0, "box_quantile": 0.01, "steps": 3, "grid": 9, "seed": 1},
    "cluster": {**DATA_VALUES, "dataset": "wifi", "pca": 2, "scale": "whiten", "k": [2, 3], "algorithm": "minibatch",
                "n_init": 3,
                "silhouette_sample": 100, "plot": "tsne", "plot_sample": 100, "seed": 1},
    "noop": {"seconds": 1.0, "fail": True, "value": 2.0, "transient_failures": 1, "stuck": True, "allocate_mb": 1},
    # the dream entry is never a job itself, but its params must still tell dreams apart (sweeps, names)
    "dream": {"levels": 1, "iterations": 2, "size": 1120, "maps": {0: 1, 1: [2, 3], 2: 4}, "epochs": {0: 5, 1: 6, 2: 7},
              "epsilon": 0.1, "threshold": 0.01, "clip": 0.9},
    "dream_tile": {"size": 224, "iteration": 1, "level": 1, "tile": 3, "map": 5, "epochs": 10, "epsilon": 0.1,
                   "threshold": 0.01},
    "dream_merge": {"size": 224, "iteration": 1, "level": 1, "last_level": False, "final": False, "clip": 0.9},
}
OTHER_VALUES["study"] = {"space": {"z_dim": {"choice": [2, 4]}}, "metric": "loss", "maximize": True, "trials": 5,
                         "parallel": 2, "sampler": "random", "pruner": "median", "seed": 1, "startup": 3}
OTHER_VALUES["sleep"] = OTHER_VALUES["noop"]
# Params a value above needs to be valid on its own (a required one, or the bounds it must lie within).
VALID_WITH = {"dream": {"image": "/d/in.jpg"}, "dream_tile": {"level": 2},
              "study": {"space": {"z_dim": {"int": [2, 8]}}, "metric": "val_loss", "trials": 4},
              "dream_merge": {"final": False}}
KIND_PARAMS = [(kind, name) for kind in sorted(KINDS)
               for name in sorted(set(KINDS[kind].params.__dataclass_fields__) - LOCATION_PARAMS)]


@pytest.mark.parametrize("kind,param", KIND_PARAMS, ids=[f"{k}-{p}" for k, p in KIND_PARAMS])
def test_fingerprint_changes_with_every_param(kind: str, param: str) -> None:
    assert kind in OTHER_VALUES, f"add the new kind {kind!r} to this test"
    assert param in OTHER_VALUES[kind], f"add a value for the new parameter {kind}.{param} to this test"
    base = config_to_params(KINDS[kind].params())
    other = OTHER_VALUES[kind][param]
    assert other != base[param]
    changed = {**base, param: other}
    assert fingerprint(kind, changed, [], None) != fingerprint(kind, base, [], None)


def test_other_values_are_valid_params() -> None:
    for kind, values in OTHER_VALUES.items():
        for param, value in values.items():
            if param == "dataset" and value in ("npz", "images"):
                continue
            # raises if the test's value is itself invalid
            parse_config(KINDS[kind].params, {**VALID_WITH.get(kind, {}), param: value})


def test_other_values_cover_every_kind() -> None:
    assert set(OTHER_VALUES) == set(KINDS)


def test_fingerprint_changes_with_noop_params() -> None:
    base = config_to_params(NoopParams())
    for key, value in {"seconds": 1.0, "fail": True, "value": 2.0}.items():
        assert fingerprint("noop", {**base, key: value}, [], None) != fingerprint("noop", base, [], None), key


def test_fingerprint_ignores_data_path() -> None:
    assert LOCATION_PARAMS == frozenset({"data_path", "image"})
    a = fingerprint("train", {**TRAIN, "data_path": "/a/mnist.npz"}, [], "mnist:abc")
    b = fingerprint("train", {**TRAIN, "data_path": "/b/other.npz"}, [], "mnist:abc")
    assert a == b


def test_fingerprint_ignores_the_image_path() -> None:
    # a dream's input image counts by its sha256 (the data identity), not by where it is
    tile = config_to_params(DreamTileParams())
    a = fingerprint("dream_tile", {**tile, "image": "/a/in.jpg"}, ["cnn"], "image:abc")
    b = fingerprint("dream_tile", {**tile, "image": "/b/renamed.jpg"}, ["cnn"], "image:abc")
    assert a == b
    assert fingerprint("dream_tile", {**tile, "image": "/a/in.jpg"}, ["cnn"], "image:abd") != a


def test_location_params_are_the_file_params() -> None:
    # every param naming an input file is a location: its content is fingerprinted through job_data_identity
    assert {name for info in KINDS.values() for name in info.files} | {"data_path"} == LOCATION_PARAMS


def test_fingerprint_changes_with_kind() -> None:
    params = config_to_params(NoopParams())
    assert fingerprint("noop", params, [], None) != fingerprint("sleep", params, [], None)


def test_fingerprint_changes_with_parents() -> None:
    base = fingerprint("noop", {}, ["p1"], None)
    assert fingerprint("noop", {}, ["p2"], None) != base
    assert fingerprint("noop", {}, [], None) != base
    assert fingerprint("noop", {}, ["p1", "p2"], None) != base


def test_fingerprint_changes_with_data_identity() -> None:
    base = fingerprint("train", TRAIN, [], "mnist:aaaa")
    assert fingerprint("train", TRAIN, [], "mnist:bbbb") != base
    assert fingerprint("train", TRAIN, [], None) != base


# Golden values: a change here means every stored result of that kind stops being reused. That is right when the
# job's parameters or code changed (then bump FINGERPRINT_VERSION if the code alone changed); update them knowingly.
GOLDEN = {
    "noop": "e4cad4f359718220173acf825624f1df19da3e7948d1acb1407e7e15b3edf646",
    # TrainParams with DataParams (image_size, color, test_size) and None for the model's z_dim/filters/lr
    "train": "e527868db5daa7a788b77b9287bf3d2c60e0da50729cc521c3cce707bab99c44",
    "cluster": "a68c8d0ec8220424d9c8d0bb7aa82f2c2174884660821a2a1d729bcf57ed45ed",
    # a dream's later tiles and its merges: every stored dream step is reused by these
    "dream_tile": "6168d08a1df7797bb9545bde3ab7be677b3e02ed95931bb05f8ea8cb603c9839",
    "dream_merge": "5cb538bc939fb9fe388fd2e3bdd83f0ee288edcb8de2382a8dbfec2a0da25fd9",
}


def test_a_late_param_at_its_default_leaves_the_fingerprint_as_it_was() -> None:
    """Results stored before ``keep_checkpoint`` existed are still found by a job that leaves it at its default."""
    before = {k: v for k, v in TRAIN.items() if k != "keep_checkpoint"}
    assert fingerprint("train", before, [], "d") == fingerprint("train", {**before, "keep_checkpoint": False}, [], "d")
    assert fingerprint("train", before, [], "d") != fingerprint("train", {**before, "keep_checkpoint": True}, [], "d")


def test_fingerprint_golden_values() -> None:
    assert scheduler.plan.FINGERPRINT_VERSION == 1
    assert fingerprint("noop", config_to_params(NoopParams()), [], None) == GOLDEN["noop"]
    assert fingerprint("train", TRAIN, [], "digits:bundled") == GOLDEN["train"]
    assert fingerprint("cluster", config_to_params(KINDS["cluster"].params()), ["p"], None) == GOLDEN["cluster"]
    assert fingerprint("dream_tile", config_to_params(DreamTileParams()), ["p"], None) == GOLDEN["dream_tile"]
    assert fingerprint("dream_merge", config_to_params(DreamMergeParams()), ["p"], None) == GOLDEN["dream_merge"]


def test_fingerprint_changes_with_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = fingerprint("noop", {}, [], None)
    monkeypatch.setattr(scheduler.plan, "FINGERPRINT_VERSION", scheduler.plan.FINGERPRINT_VERSION + 1)
    assert fingerprint("noop", {}, [], None) != before


# ----------------------------------------------------------------------------------------------------
# plan_batch(): fingerprints of planned jobs


def test_plan_is_deterministic(tmp_path: Path) -> None:
    text = """\
        batch: b
        jobs:
          - {name: train, kind: train, params: {epochs: 2}, sweep: {z_dim: [8, 16]}}
          - {name: report, kind: noop, needs: train}
        """
    first = plan_batch(load(tmp_path, text))
    again = plan_batch(load(tmp_path, text, name="copy.yaml"))
    assert fps(first) == fps(again)
    assert fps(first) == fps(plan_batch(load(tmp_path, text)))


def test_plan_fingerprint_changes_with_a_param(tmp_path: Path) -> None:
    base = train_fp(tmp_path, "{epochs: 2}")
    assert train_fp(tmp_path, "{epochs: 2}") == base
    assert train_fp(tmp_path, "{epochs: 3}") != base
    assert train_fp(tmp_path, "{epochs: 2, seed: 1}") != base
    assert train_fp(tmp_path, "{epochs: 2, loss: mse}") != base


def test_plan_fingerprint_uses_completed_params(tmp_path: Path) -> None:
    # a parameter set to its default value is the same job as the parameter left out
    assert train_fp(tmp_path, "{epochs: 10, seed: 0, model: conv_ae}") == train_fp(tmp_path, "{}")
    assert train_fp(tmp_path, "{z_dim: null, filters: null, learning_rate: null}") == train_fp(tmp_path, "{}")
    assert train_fp(tmp_path, "{learning_rate: 1}") == train_fp(tmp_path, "{learning_rate: 1.0}")
    assert train_fp(tmp_path, "{model: face_ae, filters: 8}") == train_fp(tmp_path, "{model: face_ae, filters: [8]}")


@pytest.mark.parametrize("explicit", ["{z_dim: 16}", "{learning_rate: 0.001}", "{filters: [32, 64, 128]}"])
def test_plan_fingerprint_model_default_written_out(tmp_path: Path, explicit: str) -> None:
    assert train_fp(tmp_path, explicit) == train_fp(tmp_path, "{}")


def test_plan_fingerprint_changes_with_kind(tmp_path: Path) -> None:
    noop = plan_batch(load(tmp_path, "batch: b\njobs:\n  - {name: a, kind: noop}\n")).jobs[0]
    sleep = plan_batch(load(tmp_path, "batch: b\njobs:\n  - {name: a, kind: sleep}\n")).jobs[0]
    assert noop.params == sleep.params
    assert noop.fingerprint != sleep.fingerprint


def test_plan_fingerprint_changes_with_a_parents_fingerprint(tmp_path: Path) -> None:
    template = """\
        batch: b
        jobs:
          - {{name: parent, kind: noop, params: {{value: {value}}}}}
          - {{name: child, kind: noop, needs: parent}}
          - {{name: grandchild, kind: noop, needs: child}}
          - {{name: loner, kind: noop}}
        """
    one = fps(plan_batch(load(tmp_path, template.format(value=1))))
    two = fps(plan_batch(load(tmp_path, template.format(value=2))))
    assert one["parent"] != two["parent"]
    assert one["child"] != two["child"]  # the child's own params are the same
    assert one["grandchild"] != two["grandchild"]
    assert one["loner"] == two["loner"]


def test_plan_child_fingerprint_is_fingerprint_of_parents(tmp_path: Path) -> None:
    plan = plan_batch(load(tmp_path, """\
        batch: b
        jobs:
          - {name: a, kind: noop}
          - {name: b, kind: noop, params: {value: 2}}
          - {name: c, kind: noop, needs: [b, a]}
        """))
    f = fps(plan)
    c = plan.jobs[2]
    assert c.fingerprint == fingerprint("noop", c.params, [f["a"], f["b"]], None)
    assert f["a"] == fingerprint("noop", config_to_params(NoopParams()), [], None)
    assert f["c"] != fingerprint("noop", c.params, [], None)


def test_same_job_in_another_batch_has_the_same_fingerprint(tmp_path: Path) -> None:
    a = plan_batch(load(tmp_path, "batch: one\njobs:\n  - {name: x, kind: noop}\n", name="one.yaml"))
    b = plan_batch(load(tmp_path, "batch: two\ndefaults: {priority: 9, queue: q}\njobs:\n"
                                  "  - {name: y, kind: noop, max_attempts: 5, timeout: 9}\n",
                        name="two.yaml"))
    # neither the names nor the scheduling fields say what is computed
    assert a.jobs[0].fingerprint == b.jobs[0].fingerprint


# ----------------------------------------------------------------------------------------------------
# plan_batch(): data files


def test_data_location_does_not_change_the_fingerprint(tmp_path: Path, shared_data: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    shutil.copyfile(shared_data / "mnist.npz", tmp_path / "a" / "mnist.npz")
    shutil.copyfile(shared_data / "mnist.npz", tmp_path / "b" / "renamed.npz")
    at_a = load(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: mnist, "
                          "data_path: a/mnist.npz}}\n")
    at_b = load(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: mnist, "
                          "data_path: b/renamed.npz}}\n")
    from_dir = load(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: mnist}}\n",
                    shared_data)
    assert len({at_a.jobs[0].params["data_path"], at_b.jobs[0].params["data_path"],
                from_dir.jobs[0].params["data_path"]}) == 3
    fa, fb, fd = (plan_batch(s).jobs[0].fingerprint for s in (at_a, at_b, from_dir))
    assert fa == fb == fd
    assert job_data_identity(at_a.jobs[0]) == job_data_identity(from_dir.jobs[0])
    assert job_data_identity(at_a.jobs[0]).startswith("mnist:")


def test_data_content_changes_the_fingerprint(tmp_path: Path, shared_data: Path) -> None:
    shutil.copyfile(shared_data / "mnist.npz", tmp_path / "real.npz")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "fake.npz",
             x_train=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), y_train=np.arange(4, dtype=np.uint8),
             x_test=rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), y_test=np.arange(2, dtype=np.uint8))
    real = train_fp(tmp_path, "{dataset: mnist, data_path: real.npz}")
    fake = train_fp(tmp_path, "{dataset: mnist, data_path: fake.npz}")
    assert real != fake
    assert fake == train_fp(tmp_path, "{dataset: mnist, data_path: fake.npz}")


def test_fingerprint_default_differs_from_another_value() -> None:
    # z_dim 16 (conv_ae's default, filled in) and z_dim 8 are different jobs
    assert TRAIN["z_dim"] == 16
    assert fingerprint("train", TRAIN, [], None) != fingerprint("train", {**TRAIN, "z_dim": 8}, [], None)


def test_data_identity_of_digits_and_noop(tmp_path: Path) -> None:
    spec = load(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train}\n  - {name: n, kind: noop}\n")
    assert job_data_identity(spec.jobs[0]) == "digits:bundled"
    assert job_data_identity(spec.jobs[1]) is None


def test_data_identity_of_dream_jobs(tmp_path: Path, shared_data: Path) -> None:
    image = tmp_path / "dream_input.jpg"
    image.symlink_to(shared_data / "dream_input.jpg")  # in the spec's folder: a data root
    spec = load(tmp_path, f"""\
        batch: b
        jobs:
          - {{name: cnn, kind: train, params: {{model: cnn}}}}
          - {{name: d, kind: dream, needs: cnn, params: {{image: {image}, levels: 0, iterations: 2}}}}
        """)
    identities = {j.name: job_data_identity(j) for j in spec.jobs}
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    assert identities == {"cnn": "digits:bundled", "d/i0/L0/t0": f"image:{digest}", "d/i0/L0/merge": None,
                          "d/i1/L0/t0": None, "d/i1/L0/merge": None}


def test_digits_and_mnist_differ(tmp_path: Path, shared_data: Path) -> None:
    assert train_fp(tmp_path, "{dataset: digits}") != train_fp(tmp_path, "{dataset: mnist}", shared_data)


# ----------------------------------------------------------------------------------------------------
# plan_batch(): jobs and edges


def test_plan_copies_the_spec(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: my-batch
        jobs:
          - {name: a, kind: noop, priority: 8, max_attempts: 2, timeout: 30, queue: fast}
          - {name: t, kind: train, needs: a}
        """)
    plan = plan_batch(spec)
    assert (plan.name, plan.spec_path, plan.spec) == ("my-batch", spec.path, spec.raw)
    assert plan.spec_path == str(tmp_path / "batch.yaml")
    assert all(isinstance(j, NewJob) for j in plan.jobs)
    a, t = plan.jobs
    def row(j: NewJob) -> tuple:
        return (j.name, j.kind, j.queue, j.priority, j.max_attempts, j.timeout)

    assert row(a) == ("a", "noop", "fast", 8, 2, 30.0)
    assert row(t) == ("t", "train", "gpu", 5, 3, None)
    assert a.params == dict(spec.jobs[0].params) and type(a.params) is dict
    assert t.params == dict(spec.jobs[1].params)


def test_edges_match_needs(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: report, kind: noop, needs: [encode, prep]}
          - {name: prep, kind: noop}
          - {name: train, kind: train, needs: prep, sweep: {z_dim: [8, 16]}}
          - {name: encode, kind: train, needs: train, sweep: {z_dim: [8, 16]}}
        """)
    plan = plan_batch(spec)
    assert [j.name for j in plan.jobs] == [j.name for j in spec.jobs]
    assert plan.edges == tuple((p, j.name) for j in spec.jobs for p in j.needs)
    assert set(plan.edges) == {
        ("prep", "train[z_dim=8]"), ("prep", "train[z_dim=16]"),
        ("train[z_dim=8]", "encode[z_dim=8]"), ("train[z_dim=16]", "encode[z_dim=16]"),
        ("encode[z_dim=8]", "report"), ("encode[z_dim=16]", "report"), ("prep", "report"),
    }
    assert len(plan.edges) == 7
    position = {j.name: i for i, j in enumerate(plan.jobs)}
    assert all(position[p] < position[c] for p, c in plan.edges)


def test_no_edges_without_needs(tmp_path: Path) -> None:
    plan = plan_batch(load(tmp_path, "batch: b\njobs:\n  - {name: a, kind: noop}\n"
                                     "  - {name: b, kind: noop}\n"))
    assert plan.edges == ()
    assert len(plan.jobs) == 2


def test_sweep_plan_has_distinct_fingerprints(tmp_path: Path) -> None:
    plan = plan_batch(load(tmp_path, """\
        batch: b
        jobs:
          - {name: train, kind: train, params: {epochs: 1}, sweep: {z_dim: [8, 16], loss: [bce, mse]}}
          - {name: encode, kind: noop, needs: train, sweep: {value: [1, 2]}}
          - {name: report, kind: noop, needs: encode}
        """))
    assert len(plan.jobs) == 7
    assert len({j.fingerprint for j in plan.jobs}) == 7
    assert len({j.name for j in plan.jobs}) == 7
