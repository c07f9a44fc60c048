"""Batch specs: every way a spec can be wrong is a one-line SpecError naming file, job and field; valid specs
are expanded (sweeps), completed with defaults and ordered parents first."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from core.kinds.noop import NoopParams
from core.kinds.train import TrainParams
from core.params import config_to_params
from scheduler.errors import SpecError, UserError, response_for
from scheduler.spec import BatchSpec, JobSpec, load_spec, parse_spec
from tests.scheduler.spec_helpers import assert_one_line, by_name, check, load, names, spec_error, write

# ----------------------------------------------------------------------------------------------------
# The file and the top level


def test_spec_error_is_a_user_error_with_exit_code_2() -> None:
    e = SpecError("b.yaml", "boom", job="j", field="f")
    assert isinstance(e, UserError)
    assert response_for(e).exit_code == 2
    assert str(e) == "b.yaml: job 'j': field 'f': boom"
    assert (e.path, e.job, e.field, e.message) == ("b.yaml", "j", "f", "boom")
    assert str(SpecError("b.yaml", "boom")) == "b.yaml: boom"


def test_nonexistent_spec_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(path, tmp_path)
    e = info.value
    assert_one_line(e)
    assert (e.path, e.job, e.field) == (str(path), None, None)
    assert e.message.startswith("cannot read spec: ")
    assert "No such file" in e.message


def test_spec_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path, tmp_path)
    e = info.value
    assert_one_line(e)
    assert (e.path, e.job, e.field) == (str(tmp_path), None, None)
    assert e.message.startswith("cannot read spec: ")


def test_spec_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("batch: caf\xe9\njobs:\n  - {name: a, kind: noop}\n".encode("latin-1"))
    with pytest.raises(SpecError) as info:
        load_spec(path, tmp_path)
    assert (info.value.path, info.value.job, info.value.field) == (str(path), None, None)
    assert_one_line(info.value)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - name: a
            kind: noop: extra
        """)
    check(e, None, None, "malformed YAML at line 4, column 15", "mapping values are not allowed")


def test_malformed_yaml_unclosed_flow(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - name: a
            params: {seconds: 1
          - name: c
        """)
    check(e, None, None, "malformed YAML at line 5")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just a string\n", "42\n"],
                         ids=["empty", "comment", "list", "string", "number"])
def test_document_not_a_mapping(tmp_path: Path, text: str) -> None:
    e = spec_error(tmp_path, text)
    check(e, None, None, "a spec must be a mapping with 'batch' and 'jobs'")


def test_unknown_top_level_field(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        job:
          - {name: a, kind: noop}
        jobs:
          - {name: a, kind: noop}
        """)
    check(e, None, "job", "unknown field; expected one of: batch, defaults, jobs")


@pytest.mark.parametrize("batch_line", ["", "batch:\n", "batch: ''\n", "batch: '   '\n", "batch: [b]\n",
                                        "batch: 7\n"],
                         ids=["missing", "null", "empty", "blank", "list", "number"])
def test_batch_name_required(tmp_path: Path, batch_line: str) -> None:
    e = spec_error(tmp_path, batch_line + "jobs:\n  - {name: a, kind: noop}\n")
    check(e, None, "batch", "required, a non-empty string")


def test_batch_name_is_stripped(tmp_path: Path) -> None:
    spec = load(tmp_path, "batch: '  my-batch '\njobs:\n  - {name: a, kind: noop}\n")
    assert spec.name == "my-batch"


@pytest.mark.parametrize("jobs_line", ["", "jobs:\n", "jobs: []\n", "jobs: {a: {kind: noop}}\n", "jobs: a\n"],
                         ids=["missing", "null", "empty", "mapping", "string"])
def test_jobs_required_non_empty_list(tmp_path: Path, jobs_line: str) -> None:
    e = spec_error(tmp_path, "batch: b\n" + jobs_line)
    check(e, None, "jobs", "required, a non-empty list of jobs")


@pytest.mark.parametrize("index,jobs", [(0, "  - train\n"), (1, "  - {name: a, kind: noop}\n  - [b]\n"),
                                        (1, "  - {name: a, kind: noop}\n  -\n")],
                         ids=["string", "list", "null"])
def test_job_not_a_mapping(tmp_path: Path, index: int, jobs: str) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n" + jobs)
    check(e, None, f"jobs[{index}]", "each job must be a mapping")


# ----------------------------------------------------------------------------------------------------
# Defaults


def test_defaults_not_a_mapping(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\ndefaults: [priority]\njobs:\n  - {name: a, kind: noop}\n")
    check(e, None, "defaults", "must be a mapping")


def test_unknown_field_in_defaults(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\ndefaults: {retries: 3}\njobs:\n  - {name: a, kind: noop}\n")
    check(e, None, "defaults.retries",
          "unknown field; expected one of: max_attempts, params, priority, queue, timeout")


def test_defaults_params_not_a_mapping(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\ndefaults: {params: [dataset]}\njobs:\n  - {name: a, kind: train}\n")
    check(e, None, "defaults.params", "must be a mapping")


def test_defaults_param_no_kind_of_the_batch_has(tmp_path: Path) -> None:
    # z_dim is a train parameter, but this batch only has noop and sleep jobs
    e = spec_error(tmp_path, """\
        batch: b
        defaults:
          params: {seconds: 0, z_dim: 8}
        jobs:
          - {name: a, kind: noop}
          - {name: s, kind: sleep}
        """)
    check(e, None, "defaults.params.z_dim", "no job kind of this batch has this parameter")


def test_defaults_param_unknown_to_every_kind(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        defaults:
          params: {zdim: 8}
        jobs:
          - {name: t, kind: train}
          - {name: a, kind: noop}
        """)
    check(e, None, "defaults.params.zdim", "no job kind of this batch has this parameter")


# ----------------------------------------------------------------------------------------------------
# Names, fields, kinds


def test_missing_name_is_numbered(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: a, kind: noop}\n  - {kind: noop}\n")
    check(e, "#2", "name", "required")


@pytest.mark.parametrize("name", ["my job", "a/b", "-lead", ".hidden", "x" * 101, "tr[ain]", "é", "a:b"])
def test_bad_name_chars(tmp_path: Path, name: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: {name!r}, kind: noop}}\n")
    check(e, name, "name", "letters, digits, '_', '.', '-' (at most 100)")


@pytest.mark.parametrize("value,job", [("7", "7"), ("[a]", "['a']"), ("''", "")],
                         ids=["int", "list", "empty"])
def test_name_not_a_string(tmp_path: Path, value: str, job: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: {value}, kind: noop}}\n")
    check(e, job, "name")


@pytest.mark.parametrize("name", ["a", "A_1", "_x", "0", "a.b-c_d", "x" * 100])
def test_good_names(tmp_path: Path, name: str) -> None:
    spec = load(tmp_path, f"batch: b\njobs:\n  - {{name: {name!r}, kind: noop}}\n")
    assert names(spec) == [name]


def test_name_with_trailing_newline_rejected(tmp_path: Path) -> None:
    e = spec_error(tmp_path, 'batch: b\njobs:\n  - {name: "train\\n", kind: noop}\n')
    check(e, "train\n", "name")


def test_duplicate_name(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: a, kind: noop}
          - {name: b, kind: noop}
          - {name: a, kind: sleep}
        """)
    check(e, "a", "name", "duplicate job name")


def test_unknown_job_field(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: a, kind: noop, deps: [x]}\n")
    check(e, "a", "deps", "unknown field; expected one of: foreach, kind, max_attempts, name, needs, params, "
                          "priority, queue, search, sweep, timeout")


@pytest.mark.parametrize("kind_part,shown", [("kind: fit", "'fit'"), ("kind: Train", "'Train'"),
                                             ("kind: 1", "1"), ("", "None")],
                         ids=["fit", "case", "int", "missing"])
def test_unknown_kind(tmp_path: Path, kind_part: str, shown: str) -> None:
    sep = ", " if kind_part else ""
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: a{sep}{kind_part}}}\n")
    check(e, "a", "kind", f"unknown kind {shown}; expected one of: cluster, dream, encode, noop, sample, sleep, train")
    assert e.message == f"unknown kind {shown}; expected one of: cluster, dream, encode, noop, sample, sleep, train"


def test_kind_that_is_a_list(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: a, kind: [noop]}\n")
    check(e, "a", "kind", "unknown kind")


def test_params_not_a_mapping(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: a, kind: noop, params: [seconds]}\n")
    check(e, "a", "params", "must be a mapping")


# ----------------------------------------------------------------------------------------------------
# Parameters


def test_unknown_param(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {zdim: 8}}\n")
    check(e, "t", "params.zdim", "unknown parameter; expected one of: ", "z_dim")


def test_param_of_another_kind(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: n, kind: noop, params: {epochs: 2}}\n")
    check(e, "n", "params.epochs",
          "unknown parameter; expected one of: allocate_mb, fail, seconds, stuck, transient_failures, value")


def test_param_name_not_a_string(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: n, kind: noop, params: {1: 2}}\n")
    check(e, "n", "params.1", "unknown parameter")


@pytest.mark.parametrize("param,value,expected", [
    ("z_dim", "'8'", "expected int, got '8'"),
    ("z_dim", "true", "expected int, got True"),
    ("z_dim", "8.5", "expected int, got 8.5"),
    ("epochs", "ten", "expected int, got 'ten'"),
    ("epochs", "2.0", "expected int, got 2.0"),
    ("learning_rate", "true", "expected float, got True"),
    ("learning_rate", "fast", "expected float, got 'fast'"),
    ("limit", "'5'", "expected int, got '5'"),  # Optional[int] given a value: int's own error
    ("image_size", "'64'", "expected int, got '64'"),
    ("data_path", "7", "expected str, got 7"),
    ("filters", "'32'", "expected int, got '32'"),  # a scalar is a list of one: checked as an item
    ("dataset", "5", "expected str, got 5"),
    ("model", "vae", "expected one of 'conv_ae' | 'pool_ae' | 'face_ae' | 'cnn', got 'vae'"),
], ids=["z_dim-str", "z_dim-bool", "z_dim-float", "epochs-str", "epochs-float", "lr-bool", "lr-str",
        "limit-str", "image_size-str", "data_path-int", "filters-scalar-str", "dataset-int", "model"])
def test_wrong_param_type(tmp_path: Path, param: str, value: str, expected: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: t, kind: train, params: {{{param}: {value}}}}}\n")
    check(e, "t", f"params.{param}", expected)


def test_scalar_filters_refused_by_conv_aes_three_filters_rule(tmp_path: Path) -> None:
    # filters: 32 is accepted as [32], then refused because conv_ae takes three counts
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {filters: 32}}\n")
    check(e, "t", "params.filters")
    assert e.message == "conv_ae takes three filter counts"


def test_scalar_filters_accepted_as_a_list_of_one(tmp_path: Path) -> None:
    spec = load(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {model: face_ae, filters: 32}}\n")
    assert spec.jobs[0].params["filters"] == [32]


def test_wrong_type_inside_a_list_param(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {filters: [8, x, 32]}}\n")
    check(e, "t", "params.filters[1]", "expected int, got 'x'")


def test_bool_param_rejects_int(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: n, kind: noop, params: {fail: 1}}\n")
    check(e, "n", "params.fail", "expected bool, got 1")


@pytest.mark.parametrize("epochs", [-1, 0])
def test_epochs_below_one(tmp_path: Path, epochs: int) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: t, kind: train, params: {{epochs: {epochs}}}}}\n")
    check(e, "t", "params.epochs", f"must be >= 1, got {epochs}")


def test_negative_noop_seconds(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: n, kind: sleep, params: {seconds: -0.5}}\n")
    check(e, "n", "params.seconds", "must be >= 0, got -0.5")


def test_bad_loss_literal(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {loss: l2}}\n")
    check(e, "t", "params.loss", "expected one of 'bce' | 'mse', got 'l2'")


def test_unknown_dataset(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: cifar10}}\n")
    check(e, "t", "params.dataset")
    assert e.message == "unknown dataset 'cifar10'; expected one of: digits, mnist, olivetti, npz, images, wifi"


def test_learning_rate_in_exponent_notation(tmp_path: Path) -> None:
    spec = load(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {learning_rate: 1e-3}}\n")
    assert spec.jobs[0].params["learning_rate"] == pytest.approx(0.001)


# ----------------------------------------------------------------------------------------------------
# Data files


def test_data_path_does_not_exist(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: t, kind: train, params: {dataset: mnist, data_path: nowhere/mnist.npz}}
        """)
    check(e, "t", "params.data_path", "mnist data file not found: ")
    assert str(tmp_path / "nowhere" / "mnist.npz") in e.message  # resolved against the spec's directory


def test_data_path_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    e = spec_error(tmp_path, "batch: b\njobs:\n"
                             "  - {name: t, kind: train, params: {dataset: mnist, data_path: d}}\n")
    check(e, "t", "params.data_path", "mnist data file not found")


def test_data_file_not_readable_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file os.access says is unreadable (simulated: the tests may run as root, who reads any file)."""
    import core.data_files

    data = tmp_path / "mnist.npz"
    data.write_bytes(b"PK\x03\x04 not really")
    real_access = os.access
    monkeypatch.setattr(core.data_files.os, "access",
                        lambda p, mode: False if Path(p) == data else real_access(p, mode))
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: mnist, "
                             "data_path: mnist.npz}}\n")
    check(e, "t", "params.data_path", f"mnist data file is not readable: {data}")


def test_mnist_without_data_path_and_none_in_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: mnist}}\n",
                   data_dir)
    check(e, "t", "params.dataset", f"mnist data file not found: {data_dir / 'mnist.npz'}")


def test_mnist_from_data_dir(tmp_path: Path, shared_data: Path) -> None:
    spec = load(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: mnist}}\n",
                shared_data)
    assert spec.jobs[0].params["data_path"] == str((shared_data / "mnist.npz").resolve())


def test_mnist_absolute_data_path(tmp_path: Path, shared_data: Path) -> None:
    mnist = shared_data / "mnist.npz"  # inside the data directory: a data root
    spec = load(tmp_path, f"batch: b\njobs:\n  - {{name: t, kind: train, params: {{dataset: mnist, "
                          f"data_path: '{mnist}'}}}}\n", shared_data)
    assert spec.jobs[0].params["data_path"] == str(mnist.resolve())


def test_relative_data_path_resolved_against_spec_dir_then_the_data_dir(tmp_path: Path, shared_data: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    spec_dir = tmp_path / "specs"
    (spec_dir / "data").mkdir(parents=True)
    shutil.copyfile(shared_data / "mnist.npz", spec_dir / "data" / "mnist.npz")
    data_dir = tmp_path / "data-dir"
    data_dir.mkdir()
    shutil.copyfile(shared_data / "mnist.npz", data_dir / "other.npz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not relative to the working directory
    path = write(spec_dir, """\
        batch: b
        jobs:
          - {name: t, kind: train, params: {dataset: mnist, data_path: data/mnist.npz}}
          - {name: u, kind: train, params: {dataset: mnist, data_path: other.npz}}
        """)
    spec = load_spec(path, data_dir)
    jobs = by_name(spec)
    assert jobs["t"].params["data_path"] == str((spec_dir / "data" / "mnist.npz").resolve())
    assert jobs["u"].params["data_path"] == str((data_dir / "other.npz").resolve())  # not in the spec's folder


@pytest.mark.parametrize("given", ["../up.npz", "data/../../up.npz", "{tmp}/up.npz", "/etc/passwd",
                                   "/proc/self/environ", "../../../../../../etc/shadow", "{tmp}/does-not-exist.npz"])
def test_a_data_file_outside_the_data_roots_is_refused_without_saying_whether_it_exists(
        tmp_path: Path, shared_data: Path, given: str) -> None:
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    shutil.copyfile(shared_data / "mnist.npz", tmp_path / "up.npz")
    given = given.replace("{tmp}", str(tmp_path))
    e = spec_error(spec_dir, f"batch: b\njobs:\n  - {{name: t, kind: train, params: {{dataset: mnist, "
                             f"data_path: '{given}'}}}}\n", tmp_path / "no-data")
    check(e, "t", "params.data_path", f"{given}: outside the data roots")
    assert "not found" not in str(e) and "readable" not in str(e)


def test_a_link_placed_in_a_data_root_is_followed(tmp_path: Path, shared_data: Path) -> None:
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "shared").symlink_to(shared_data)  # put there by whoever owns the folder: theirs to answer for
    spec = load(spec_dir, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: mnist, "
                          "data_path: shared/mnist.npz}}\n")
    assert spec.jobs[0].params["data_path"] == str((shared_data / "mnist.npz").resolve())


def test_relative_spec_path_and_relative_data_path(tmp_path: Path, shared_data: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    shutil.copyfile(shared_data / "mnist.npz", spec_dir / "m.npz")
    write(spec_dir, "batch: b\njobs:\n"
                    "  - {name: t, kind: train, params: {dataset: mnist, data_path: m.npz}}\n")
    monkeypatch.chdir(tmp_path)
    spec = load_spec("specs/batch.yaml", tmp_path / "no-data")
    assert spec.path == "specs/batch.yaml"
    assert spec.jobs[0].params["data_path"] == str((spec_dir / "m.npz").resolve())


def test_digits_needs_no_file(tmp_path: Path) -> None:
    spec = load(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: digits}}\n")
    assert spec.jobs[0].params["dataset"] == "digits"
    assert spec.jobs[0].params["data_path"] is None


def test_parse_spec_uses_base_dir_for_relative_data_path(tmp_path: Path, shared_data: Path) -> None:
    shutil.copyfile(shared_data / "mnist.npz", tmp_path / "m.npz")
    raw = {"batch": "b", "jobs": [{"name": "t", "kind": "train",
                                   "params": {"dataset": "mnist", "data_path": "m.npz"}}]}
    spec = parse_spec(raw, "<api>", tmp_path, tmp_path / "no-data")
    assert spec.path == "<api>"
    assert spec.jobs[0].params["data_path"] == str((tmp_path / "m.npz").resolve())
    with pytest.raises(SpecError) as info:
        parse_spec(raw, "<api>", tmp_path / "other", tmp_path / "no-data")
    check(info.value, "t", "params.data_path", "not found")
    assert info.value.path == "<api>"


# ----------------------------------------------------------------------------------------------------
# needs and cycles


def test_needs_unknown_job(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: a, kind: noop}\n"
                             "  - {name: c, kind: noop, needs: [a, z]}\n")
    check(e, "c", "needs", "needs unknown job 'z'")


def test_needs_unknown_job_from_a_swept_job(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: a, kind: noop, needs: z, sweep: {value: [1, 2]}}\n")
    check(e, "a[value=1]", "needs", "needs unknown job 'z'")


@pytest.mark.parametrize("needs", ["3", "[a, 3]", "{a: 1}", "[[a]]", "true"])
def test_needs_wrong_type(tmp_path: Path, needs: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: a, kind: noop}}\n"
                             f"  - {{name: c, kind: noop, needs: {needs}}}\n")
    check(e, "c", "needs", "must be a job name or a list of job names")


@pytest.mark.parametrize("needs", ["a", "[a]", "[b, a]"])
def test_self_dependency(tmp_path: Path, needs: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: b, kind: noop}}\n"
                             f"  - {{name: a, kind: noop, needs: {needs}}}\n")
    check(e, "a", "needs", "a job cannot need itself")


def test_swept_self_dependency(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: a, kind: noop, needs: a, sweep: {value: [1, 2]}}\n")
    check(e, "a[value=1]", "needs", "a job cannot need itself")


def test_two_cycle(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: a, kind: noop, needs: b}
          - {name: b, kind: noop, needs: a}
        """)
    check(e, "a", "needs", "dependency cycle: a -> b -> a")


def test_three_cycle(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: ok, kind: noop}
          - {name: a, kind: noop, needs: [ok, c]}
          - {name: b, kind: noop, needs: a}
          - {name: c, kind: noop, needs: b}
        """)
    check(e, "a", "needs", "dependency cycle: a -> c -> b -> a")


def test_cycle_through_swept_jobs(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: a, kind: noop, needs: b, sweep: {value: [1]}}
          - {name: b, kind: noop, needs: a}
        """)
    check(e, "a[value=1]", "needs", "dependency cycle: a[value=1] -> b -> a[value=1]")


def test_cycle_error_names_a_job_in_the_cycle(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: c, kind: noop, needs: a}
          - {name: a, kind: noop, needs: b}
          - {name: b, kind: noop, needs: a}
        """)
    assert e.field == "needs"
    assert "a -> b -> a" in e.message or "b -> a -> b" in e.message
    assert e.job in {"a", "b"}


# ----------------------------------------------------------------------------------------------------
# queue, priority, max_attempts, timeout


@pytest.mark.parametrize("queue", ["GPU", "gpu queue", "''", "x" * 51, "7", "[gpu]", "null"])
def test_bad_queue(tmp_path: Path, queue: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: a, kind: noop, queue: {queue}}}\n")
    check(e, "a", "queue", "must be a queue name such as 'gpu' or 'cpu'")


def test_queue_with_trailing_newline_rejected(tmp_path: Path) -> None:
    e = spec_error(tmp_path, 'batch: b\njobs:\n  - {name: a, kind: noop, queue: "cpu\\n"}\n')
    check(e, "a", "queue")


def test_bad_queue_from_defaults(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\ndefaults: {queue: 'Fast Lane'}\njobs:\n  - {name: a, kind: noop}\n")
    check(e, "a", "defaults.queue", "got 'Fast Lane'")  # the value came from defaults: say so


@pytest.mark.parametrize("value", ["-1", "10", "high", "true", "2.5", "null"])
def test_priority_out_of_range_or_type(tmp_path: Path, value: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: a, kind: noop, priority: {value}}}\n")
    check(e, "a", "priority", "must be an integer from 0 to 9, got ")


@pytest.mark.parametrize("value", ["0", "-3", "101", "true", "1.5"])
def test_bad_max_attempts(tmp_path: Path, value: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: a, kind: noop, max_attempts: {value}}}\n")
    check(e, "a", "max_attempts", "must be an integer from 1 to 100, got ")


@pytest.mark.parametrize("value", ["-1", "0", "0.0", "true", "false", "'1h'", "[60]"])
def test_bad_timeout(tmp_path: Path, value: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: a, kind: noop, timeout: {value}}}\n")
    check(e, "a", "timeout", "must be a number of seconds > 0, got ")


@pytest.mark.parametrize("value", ["0", "9"])
def test_priority_bounds_accepted(tmp_path: Path, value: str) -> None:
    spec = load(tmp_path, f"batch: b\njobs:\n  - {{name: a, kind: noop, priority: {value}}}\n")
    assert spec.jobs[0].priority == int(value)


# ----------------------------------------------------------------------------------------------------
# sweep errors


@pytest.mark.parametrize("sweep", ["[z_dim]", "z_dim", "8"])
def test_sweep_not_a_mapping(tmp_path: Path, sweep: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: t, kind: train, sweep: {sweep}}}\n")
    check(e, "t", "sweep", "must be a mapping of parameter -> list of values")


def test_sweep_over_unknown_param(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, sweep: {zdim: [8, 16]}}\n")
    check(e, "t", "sweep.zdim", "unknown parameter of kind 'train'")


@pytest.mark.parametrize("values", ["[]", "8", "null", "{a: 1}"])
def test_sweep_values_not_a_non_empty_list(tmp_path: Path, values: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: t, kind: train, sweep: {{z_dim: {values}}}}}\n")
    check(e, "t", "sweep.z_dim", "must be a non-empty list of values")


def test_sweep_param_also_in_params(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n"
                             "  - {name: t, kind: train, params: {z_dim: 8}, sweep: {z_dim: [8, 16]}}\n")
    check(e, "t", "sweep.z_dim", "set both in params and in sweep")


@pytest.mark.parametrize("values,job,expected", [
    ("[8, x]", "t[z_dim=x]", "expected int, got 'x'"),
    ("[8, true]", "t[z_dim=True]", "expected int, got True"),
    ("[8, 16.5]", "t[z_dim=16.5]", "expected int, got 16.5"),
    ("[0, 8]", "t[z_dim=0]", "must be >= 1, got 0"),
])
def test_sweep_value_of_wrong_type_or_range(tmp_path: Path, values: str, job: str, expected: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: t, kind: train, sweep: {{z_dim: {values}}}}}\n")
    check(e, job, "sweep.z_dim", expected)


def test_sweep_list_param_element_wrong_type(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n"
                             "  - {name: t, kind: train, sweep: {filters: [[8, 16, 32], [8, x, 32]]}}\n")
    check(e, "t[filters=8-x-32]", "sweep.filters[1]", "expected int, got 'x'")


def test_param_error_in_a_swept_job_names_params(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n"
                             "  - {name: t, kind: train, params: {epochs: 0}, sweep: {z_dim: [8]}}\n")
    check(e, "t[z_dim=8]", "params.epochs", "must be >= 1")


def test_sweep_with_repeated_values(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: noop, sweep: {value: [1, 2, 1]}}\n")
    assert e.job in {"t", "t[value=1]"}
    assert e.field in {"sweep.value", "name"}


def test_paired_needs_without_a_matching_parent(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: train, kind: train, sweep: {z_dim: [8, 16]}}
          - {name: encode, kind: noop, needs: train, sweep: {value: [1]}}
          - {name: check, kind: train, needs: train, sweep: {z_dim: [32]}}
        """)
    check(e, "check[z_dim=32]", "needs")


# ----------------------------------------------------------------------------------------------------
# Valid specs: defaults


def test_minimal_spec(tmp_path: Path) -> None:
    text = "batch: smoke\njobs:\n  - {name: a, kind: noop}\n"
    path = write(tmp_path, text)
    spec = load_spec(str(path), tmp_path)
    assert spec.name == "smoke"
    assert spec.path == str(path)
    assert spec.raw == yaml.safe_load(text)
    assert spec.jobs == (JobSpec(name="a", kind="noop", params={"seconds": 0.0, "fail": False, "value": 1.0,
                                                                "transient_failures": 0, "stuck": False,
                                                                "allocate_mb": 0},
                                 needs=(), queue="cpu", priority=5, max_attempts=3, timeout=None,
                                 sweep_values={}),)


def test_builtin_defaults_per_kind(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        defaults:
        jobs:
          - {name: n, kind: noop}
          - {name: s, kind: sleep, params: {seconds: 0.25}}
          - {name: t, kind: train}
        """)
    jobs = by_name(spec)
    assert [(j.queue, j.priority, j.max_attempts, j.timeout) for j in spec.jobs] == [("cpu", 5, 3, None),
                                                                                   ("cpu", 5, 3, None),
                                                                                   ("gpu", 5, 3, None)]
    assert jobs["s"].params["seconds"] == 0.25
    assert jobs["t"].params["dataset"] == "digits"


def test_defaults_applied_and_overridden(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        defaults:
          queue: fast
          priority: 7
          max_attempts: 3
          timeout: 60
          params: {dataset: digits, epochs: 2, seed: 4}
        jobs:
          - name: plain
            kind: train
          - name: custom
            kind: train
            queue: gpu
            priority: 0
            max_attempts: 1
            timeout: 2.5
            params: {epochs: 5}
        """)
    plain, custom = by_name(spec)["plain"], by_name(spec)["custom"]
    assert (plain.queue, plain.priority, plain.max_attempts, plain.timeout) == ("fast", 7, 3, 60.0)
    assert isinstance(plain.timeout, float)
    assert (plain.params["epochs"], plain.params["seed"], plain.params["dataset"]) == (2, 4, "digits")
    assert (custom.queue, custom.priority, custom.max_attempts, custom.timeout) == ("gpu", 0, 1, 2.5)
    assert (custom.params["epochs"], custom.params["seed"]) == (5, 4)


def test_default_params_only_go_to_kinds_that_have_them(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        defaults: {params: {dataset: digits}}
        jobs:
          - {name: n, kind: noop}
          - {name: t, kind: train}
        """)
    jobs = by_name(spec)
    assert jobs["n"].params == config_to_params(NoopParams())
    assert "dataset" not in jobs["n"].params
    assert jobs["t"].params["dataset"] == "digits"


def test_default_params_of_two_kinds(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        defaults: {params: {seconds: 0.5, epochs: 2}}
        jobs:
          - {name: n, kind: noop}
          - {name: t, kind: train}
        """)
    jobs = by_name(spec)
    assert jobs["n"].params == {"seconds": 0.5, "fail": False, "value": 1.0, "transient_failures": 0, "stuck": False,
                                "allocate_mb": 0}
    assert jobs["t"].params["epochs"] == 2
    assert "seconds" not in jobs["t"].params


def test_params_completed_with_defaults(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: t, kind: train, params: {epochs: 2, learning_rate: 1, filters: [8, 16, 32]}}
        """)
    params = dict(spec.jobs[0].params)
    expected = config_to_params(TrainParams(epochs=2, learning_rate=1.0, filters=(8, 16, 32)))
    expected["data_path"] = None
    assert params == expected
    assert isinstance(params["learning_rate"], float)
    assert params["filters"] == [8, 16, 32]  # JSON-ready: a list, not a tuple
    assert set(params) == set(TrainParams.__dataclass_fields__)


def test_needs_accepts_a_string_and_dedupes(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: a, kind: noop}
          - {name: b, kind: noop, needs: a}
          - {name: c, kind: noop, needs: [a, b, a]}
        """)
    jobs = by_name(spec)
    assert jobs["b"].needs == ("a",)
    assert jobs["c"].needs == ("a", "b")


# ----------------------------------------------------------------------------------------------------
# Valid specs: sweeps


def test_sweep_single_combination_name(tmp_path: Path) -> None:
    spec = load(tmp_path, "batch: b\njobs:\n"
                          "  - {name: train, kind: train, sweep: {z_dim: [8], loss: [bce]}}\n")
    assert names(spec) == ["train[z_dim=8,loss=bce]"]
    job = spec.jobs[0]
    assert dict(job.sweep_values) == {"z_dim": 8, "loss": "bce"}
    assert (job.params["z_dim"], job.params["loss"]) == (8, "bce")


def test_sweep_product_in_order(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - name: train
            kind: train
            params: {epochs: 3}
            sweep:
              z_dim: [8, 16]
              loss: [bce, mse]
        """)
    assert names(spec) == ["train[z_dim=8,loss=bce]", "train[z_dim=8,loss=mse]",
                           "train[z_dim=16,loss=bce]", "train[z_dim=16,loss=mse]"]
    assert [(j.params["z_dim"], j.params["loss"], j.params["epochs"]) for j in spec.jobs] == [
        (8, "bce", 3), (8, "mse", 3), (16, "bce", 3), (16, "mse", 3)]


def test_sweep_overrides_a_default_param_and_formats_lists(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        defaults: {params: {z_dim: 4}}
        jobs:
          - {name: t, kind: train, sweep: {z_dim: [8], filters: [[8, 16, 32]], learning_rate: [0.5]}}
        """)
    assert names(spec) == ["t[z_dim=8,filters=8-16-32,learning_rate=0.5]"]
    assert spec.jobs[0].params["z_dim"] == 8
    assert spec.jobs[0].params["filters"] == [8, 16, 32]


def test_needs_on_a_swept_name_means_every_expansion(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: report, kind: noop, needs: [train]}
          - {name: train, kind: train, sweep: {z_dim: [8, 16], loss: [bce, mse]}}
        """)
    assert names(spec) == ["train[z_dim=8,loss=bce]", "train[z_dim=8,loss=mse]",
                           "train[z_dim=16,loss=bce]", "train[z_dim=16,loss=mse]", "report"]
    assert by_name(spec)["report"].needs == tuple(names(spec)[:4])


def test_swept_child_pairs_with_swept_parent_by_value(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: train, kind: train, sweep: {z_dim: [8, 16]}}
          - {name: encode, kind: train, needs: train, sweep: {z_dim: [8, 16]}}
          - {name: report, kind: noop, needs: [encode]}
        """)
    jobs = by_name(spec)
    assert jobs["encode[z_dim=8]"].needs == ("train[z_dim=8]",)
    assert jobs["encode[z_dim=16]"].needs == ("train[z_dim=16]",)
    assert jobs["report"].needs == ("encode[z_dim=8]", "encode[z_dim=16]")


def test_pairing_uses_only_the_shared_sweep_params(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: train, kind: train, sweep: {z_dim: [8, 16], loss: [bce, mse]}}
          - {name: eval, kind: train, needs: train, sweep: {z_dim: [16], seed: [1, 2]}}
          - {name: other, kind: noop, needs: train, sweep: {value: [1]}}
        """)
    jobs = by_name(spec)
    assert jobs["eval[z_dim=16,seed=1]"].needs == ("train[z_dim=16,loss=bce]", "train[z_dim=16,loss=mse]")
    assert jobs["eval[z_dim=16,seed=2]"].needs == ("train[z_dim=16,loss=bce]", "train[z_dim=16,loss=mse]")
    # swept over nothing the parent is swept over: needs every expansion
    assert len(jobs["other[value=1]"].needs) == 4


def test_unswept_child_of_swept_parent_and_swept_child_of_unswept_parent(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: prep, kind: noop}
          - {name: train, kind: train, needs: prep, sweep: {z_dim: [8, 16]}}
        """)
    assert names(spec) == ["prep", "train[z_dim=8]", "train[z_dim=16]"]
    assert all(j.needs == ("prep",) for j in spec.jobs[1:])


# ----------------------------------------------------------------------------------------------------
# Valid specs: order


def assert_parents_first(spec: BatchSpec) -> None:
    seen: set[str] = set()
    for j in spec.jobs:
        assert set(j.needs) <= seen, f"{j.name} comes before one of {j.needs}"
        seen.add(j.name)


def test_independent_jobs_keep_spec_order(tmp_path: Path) -> None:
    jobs = "".join(f"  - {{name: j{i}, kind: noop}}\n" for i in (3, 1, 2, 0))
    spec = load(tmp_path, "batch: b\njobs:\n" + jobs)
    assert names(spec) == ["j3", "j1", "j2", "j0"]


def test_order_is_topological_and_stable(tmp_path: Path) -> None:
    text = """\
        batch: b
        jobs:
          - {name: report, kind: noop, needs: [eval, c]}
          - {name: eval, kind: noop, needs: b}
          - {name: c, kind: noop, needs: a}
          - {name: a, kind: noop}
          - {name: b, kind: noop}
        """
    spec = load(tmp_path, text)
    assert_parents_first(spec)
    assert names(spec) == ["a", "b", "c", "eval", "report"]
    assert names(load(tmp_path, text)) == names(spec)  # the same spec, the same order


def test_diamond_order(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: join, kind: noop, needs: [left, right]}
          - {name: right, kind: noop, needs: root}
          - {name: left, kind: noop, needs: root}
          - {name: root, kind: noop}
        """)
    assert_parents_first(spec)
    assert names(spec) == ["root", "right", "left", "join"]
    assert by_name(spec)["join"].needs == ("left", "right")


def test_swept_graph_is_parents_first(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: report, kind: noop, needs: encode}
          - {name: encode, kind: train, needs: train, sweep: {z_dim: [8, 16]}}
          - {name: train, kind: train, sweep: {z_dim: [8, 16]}}
        """)
    assert_parents_first(spec)
    assert names(spec) == ["train[z_dim=8]", "train[z_dim=16]", "encode[z_dim=8]", "encode[z_dim=16]",
                           "report"]


def test_job_spec_is_frozen(tmp_path: Path) -> None:
    spec = load(tmp_path, "batch: b\njobs:\n  - {name: a, kind: noop}\n")
    with pytest.raises(AttributeError):
        spec.jobs[0].name = "b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        spec.name = "c"  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------------
# Limits: what no spec needs is refused before it costs memory or reaches the database


def test_a_sweep_past_the_batch_limit_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    values = list(range(400))
    e = spec_error(tmp_path, f"""
        batch: big
        jobs:
          - name: a
            kind: noop
            sweep: {{value: {values}, seconds: {values}}}
        """)
    assert (e.job, e.field) == ("a", "sweep")
    assert "expands to 160000 jobs; a batch has at most 100000" in e.message


def test_the_batch_limit_counts_every_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import scheduler.spec

    monkeypatch.setattr(scheduler.spec, "MAX_JOBS", 5)
    e = spec_error(tmp_path, """
        batch: big
        jobs:
          - {name: a, kind: noop, sweep: {value: [1, 2, 3]}}
          - {name: b, kind: noop, sweep: {value: [1, 2, 3]}}
        """)
    assert e.job == "b" and "at most 5" in e.message
    assert len(load(tmp_path, """
        batch: fits
        jobs:
          - {name: a, kind: noop, sweep: {value: [1, 2, 3]}}
          - {name: b, kind: noop, sweep: {value: [1, 2]}}
        """).jobs) == 5


@pytest.mark.parametrize("name", ['"a\\x00b"', '"tab\\there"', "x" * 201])
def test_a_batch_name_must_be_short_and_printable(tmp_path: Path, name: str) -> None:
    e = spec_error(tmp_path, f"batch: {name}\njobs: [{{name: a, kind: noop}}]\n")
    assert e.field == "batch" and "printable" in e.message


@pytest.mark.parametrize(("text", "says"), [
    ("batch: x\njobs: [{name: a, kind: noop, timeout: .nan}]\n", "not a finite number"),
    ("batch: x\njobs: [{name: a, kind: noop, params: {value: -.inf}}]\n", "not a finite number"),
    ("batch: x\njobs: [{name: a, kind: noop, timeout: 2020-02-30}]\n", "malformed YAML: day is out of range"),
    ("batch: x\njobs: " + "[" * 100 + "]" * 100 + "\n", "nested deeper than 64 levels"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nbatch: x\njobs: [*e]\n", "more than 100000 values"),
])
def test_values_no_spec_needs_are_refused(tmp_path: Path, text: str, says: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path, tmp_path)
    assert_one_line(info.value)
    assert says in info.value.message
