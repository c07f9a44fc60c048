"""The kinds that read other jobs' results (encode, sample, cluster): their parent rules, the datasets each kind
accepts, the data files looked up in the data dir, image folders, and what goes into their fingerprints.

Every error is a one-line SpecError naming the file, the (expanded) job and the field: 'needs' for a parent rule,
'params.dataset' for cluster's dataset rule.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.data_files import DATA_FILES, FOLDER_DATASETS
from core.kinds import KINDS
from core.kinds.cluster import ClusterParams
from core.kinds.encode import EncodeParams
from core.kinds.sample import SampleParams
from core.params import config_to_params
from scheduler.plan import job_data_identity, plan_batch
from tests.scheduler.spec_helpers import by_name, check, load, names, spec_error

AE_ROLE = "train job of model conv_ae or pool_ae or face_ae (the autoencoder to encode with)"
ENCODE_FOR_SAMPLE = "encode job (the latents and the autoencoder to decode with)"
CNN_ROLE = "train job of model cnn (the CNN that scores the samples)"
ENCODE_FOR_CLUSTER = "encode job (the latents to cluster)"
REPO = Path(__file__).resolve().parents[2]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------------
# The kinds' declared inputs


def test_declared_inputs() -> None:
    def inputs(kind: str) -> list[tuple]:
        return [(i.kind, i.min, i.max, i.models) for i in KINDS[kind].inputs]

    assert inputs("encode") == [("train", 1, 1, ("conv_ae", "pool_ae", "face_ae"))]
    assert inputs("sample") == [("encode", 1, 1, None), ("train", 0, 1, ("cnn",))]
    assert inputs("cluster") == [("encode", 0, 1, None)]
    assert inputs("train") == inputs("noop") == inputs("sleep") == []
    assert {k for k in KINDS if KINDS[k].check_parents} == {"cluster", "dream_tile"}


# ----------------------------------------------------------------------------------------------------
# encode: exactly one train job of an autoencoder model


def test_encode_without_needs(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: e, kind: encode}\n")
    check(e, "e", "needs", AE_ROLE)
    assert e.message == f"needs a {AE_ROLE}"


@pytest.mark.parametrize("parents,extra", [
    ("[c]", "  - {name: c, kind: train, params: {model: cnn}}\n"),
    ("[n]", "  - {name: n, kind: noop}\n"),
    ("[e0]", "  - {name: a, kind: train}\n  - {name: e0, kind: encode, needs: a}\n"),
], ids=["cnn-only", "noop-only", "encode-only"])
def test_encode_needs_no_autoencoder(tmp_path: Path, parents: str, extra: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n{extra}  - {{name: e, kind: encode, needs: {parents}}}\n")
    check(e, "e", "needs")
    assert e.message == f"needs a {AE_ROLE}"


def test_encode_needs_two_autoencoders(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: a1, kind: train}
          - {name: a2, kind: train, params: {model: pool_ae}}
          - {name: e, kind: encode, needs: [a1, a2]}
        """)
    check(e, "e", "needs")
    assert e.message == f"needs at most 1 {AE_ROLE}, got a1, a2"


def test_encode_of_a_swept_train_job_needs_every_expansion_so_too_many(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: t, kind: train, sweep: {z_dim: [8, 16]}}
          - {name: e, kind: encode, needs: t}
        """)
    check(e, "e", "needs")
    assert e.message == f"needs at most 1 {AE_ROLE}, got t[z_dim=8], t[z_dim=16]"


def test_swept_encode_names_the_expanded_job(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: e, kind: encode, sweep: {batch_size: [32, 64]}}\n")
    check(e, "e[batch_size=32]", "needs", AE_ROLE)


@pytest.mark.parametrize("model", ["conv_ae", "pool_ae", "face_ae"])
def test_encode_accepts_every_autoencoder(tmp_path: Path, model: str) -> None:
    spec = load(tmp_path, f"""\
        batch: b
        jobs:
          - {{name: e, kind: encode, needs: a}}
          - {{name: a, kind: train, params: {{model: {model}}}}}
        """)
    assert names(spec) == ["a", "e"]
    e = by_name(spec)["e"]
    assert e.needs == ("a",)
    assert (e.kind, e.queue) == ("encode", "gpu")
    assert dict(e.params) == config_to_params(EncodeParams())
    assert e.params["dataset"] is None and e.params["data_path"] is None  # the autoencoder's own data


def test_encode_other_parents_only_order_it(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: prep, kind: noop}
          - {name: judge, kind: train, params: {model: cnn}}
          - {name: ae, kind: train}
          - {name: e, kind: encode, needs: [prep, judge, ae]}
        """)
    assert by_name(spec)["e"].needs == ("prep", "judge", "ae")


def test_encode_on_wifi(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: a, kind: train}
          - {name: e, kind: encode, needs: a, params: {dataset: wifi}}
        """)
    check(e, "e", "params.dataset")
    assert e.message == "encode needs an image dataset, not 'wifi'"


# ----------------------------------------------------------------------------------------------------
# sample: exactly one encode job, at most one train job of model cnn


def test_sample_without_needs(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: s, kind: sample}\n")
    check(e, "s", "needs")
    assert e.message == f"needs an {ENCODE_FOR_SAMPLE}"


def test_sample_needs_a_cnn_but_no_encode(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: c, kind: train, params: {model: cnn}}
          - {name: a, kind: train}
          - {name: s, kind: sample, needs: [c, a]}
        """)
    check(e, "s", "needs", ENCODE_FOR_SAMPLE)


def test_sample_needs_two_encodes(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: a, kind: train}
          - {name: e1, kind: encode, needs: a}
          - {name: e2, kind: encode, needs: a, params: {batch_size: 8}}
          - {name: s, kind: sample, needs: [e1, e2]}
        """)
    check(e, "s", "needs")
    assert e.message == f"needs at most 1 {ENCODE_FOR_SAMPLE}, got e1, e2"


def test_sample_of_a_swept_encode(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: a, kind: train}
          - {name: e, kind: encode, needs: a, sweep: {batch_size: [8, 16]}}
          - {name: s, kind: sample, needs: e}
        """)
    check(e, "s", "needs")
    assert e.message == f"needs at most 1 {ENCODE_FOR_SAMPLE}, got e[batch_size=8], e[batch_size=16]"


def test_sample_needs_two_cnns(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: a, kind: train}
          - {name: e, kind: encode, needs: a}
          - {name: c1, kind: train, params: {model: cnn}}
          - {name: c2, kind: train, params: {model: cnn, seed: 1}}
          - {name: s, kind: sample, needs: [e, c1, c2]}
        """)
    check(e, "s", "needs")
    assert e.message == f"needs at most 1 {CNN_ROLE}, got c1, c2"


def test_swept_sample_names_the_expanded_job(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: s, kind: sample, sweep: {n: [10, 20]}}\n")
    check(e, "s[n=10]", "needs", ENCODE_FOR_SAMPLE)


def test_train_encode_sample_with_a_cnn(tmp_path: Path) -> None:
    text = """\
        batch: gen
        jobs:
          - {name: gen, kind: sample, needs: [enc, judge], params: {sampler: pca_ellipsoid, n: 16, k_sigma: 1.5}}
          - {name: enc, kind: encode, needs: ae}
          - {name: judge, kind: train, params: {model: cnn, epochs: 1}}
          - {name: ae, kind: train, params: {model: conv_ae, epochs: {epochs}, z_dim: 8}}
        """
    spec = load(tmp_path, text.replace("{epochs}", "1"))
    assert names(spec) == ["judge", "ae", "enc", "gen"]
    jobs = by_name(spec)
    assert jobs["enc"].needs == ("ae",)
    assert jobs["gen"].needs == ("enc", "judge")
    assert [j.queue for j in spec.jobs] == ["gpu"] * 4
    assert dict(jobs["gen"].params) == config_to_params(SampleParams(sampler="pca_ellipsoid", n=16, k_sigma=1.5))
    assert (jobs["ae"].params["model"], jobs["judge"].params["model"]) == ("conv_ae", "cnn")

    plan = plan_batch(spec)
    assert set(plan.edges) == {("ae", "enc"), ("enc", "gen"), ("judge", "gen")}
    fps = {j.name: j.fingerprint for j in plan.jobs}
    assert len(set(fps.values())) == 4
    assert job_data_identity(jobs["enc"]) is None  # its data is the autoencoder's: in the parent's fingerprint
    assert job_data_identity(jobs["ae"]) == "digits:bundled"

    other = {j.name: j.fingerprint for j in plan_batch(load(tmp_path, text.replace("{epochs}", "2"))).jobs}
    assert other["judge"] == fps["judge"]
    assert other["ae"] != fps["ae"] and other["enc"] != fps["enc"] and other["gen"] != fps["gen"]


def test_sample_without_a_cnn_and_with_other_parents(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: ae, kind: train, params: {model: pool_ae}}
          - {name: enc, kind: encode, needs: ae}
          - {name: s, kind: sample, needs: [enc, ae], sweep: {sampler: [normal, interpolate]}}
        """)
    jobs = by_name(spec)
    assert jobs["s[sampler=normal]"].needs == ("enc", "ae")  # the autoencoder only orders it
    assert jobs["s[sampler=interpolate]"].params["sampler"] == "interpolate"


# ----------------------------------------------------------------------------------------------------
# cluster: params.dataset, unless it needs an encode job (at most one)


def test_cluster_without_dataset_or_encode(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: c, kind: cluster}\n")
    check(e, "c", "params.dataset", "required unless the job needs a", "encode job")


def test_cluster_without_dataset_needing_only_a_train_job(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: a, kind: train}
          - {name: c, kind: cluster, needs: a, params: {dataset: null}}
        """)
    check(e, "c", "params.dataset", "required unless the job needs a", "encode job")


def test_swept_cluster_without_dataset_names_the_expanded_job(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: c, kind: cluster, sweep: {k: [2, 3]}}\n")
    check(e, "c[k=2]", "params.dataset", "encode job")


@pytest.mark.parametrize("params", ["{}", "{dataset: digits}"])
def test_cluster_needs_two_encodes(tmp_path: Path, params: str) -> None:
    e = spec_error(tmp_path, f"""\
        batch: b
        jobs:
          - {{name: a, kind: train}}
          - {{name: e1, kind: encode, needs: a}}
          - {{name: e2, kind: encode, needs: a, params: {{limit: 10, dataset: digits}}}}
          - {{name: c, kind: cluster, needs: [e1, e2], params: {params}}}
        """)
    check(e, "c", "needs")
    assert e.message == f"needs at most 1 {ENCODE_FOR_CLUSTER}, got e1, e2"


def test_cluster_on_the_latents_of_an_encode_job(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: ae, kind: train, params: {model: face_ae, dataset: digits}}
          - {name: enc, kind: encode, needs: ae}
          - {name: c, kind: cluster, needs: enc, params: {k: 10, pca: 4}}
        """)
    c = by_name(spec)["c"]
    assert (c.needs, c.queue) == (("enc",), "cpu")
    assert c.params["dataset"] is None and c.params["data_path"] is None
    assert (c.params["k"], c.params["pca"]) == ([10], 4)
    assert dict(c.params) == config_to_params(ClusterParams(k=(10,), pca=4))
    assert job_data_identity(c) is None
    plan = plan_batch(spec)
    assert ("enc", "c") in plan.edges


def test_cluster_on_wifi_with_a_k_sweep(tmp_path: Path, shared_data: Path) -> None:
    spec = load(tmp_path, """\
        batch: wifi
        jobs:
          - {name: c, kind: cluster, params: {dataset: wifi, plot: none}, sweep: {k: [2, 3, 4]}}
          - {name: all, kind: cluster, params: {dataset: wifi, k: [2, 3, 4]}}
        """, shared_data)
    assert names(spec) == ["c[k=2]", "c[k=3]", "c[k=4]", "all"]
    jobs = by_name(spec)
    wifi = str((shared_data / "wifi_localization.txt").resolve())
    assert [jobs[f"c[k={k}]"].params["k"] for k in (2, 3, 4)] == [[2], [3], [4]]
    assert jobs["all"].params["k"] == [2, 3, 4]  # one job, several k
    assert all(j.params["data_path"] == wifi and j.queue == "cpu" and j.needs == () for j in spec.jobs)
    plan = plan_batch(spec)
    assert len({j.fingerprint for j in plan.jobs}) == 4
    identity = f"wifi:{sha256(shared_data / 'wifi_localization.txt')}"
    assert {job_data_identity(j) for j in spec.jobs} == {identity}


def test_cluster_k_scalar_is_a_list_of_one(tmp_path: Path) -> None:
    spec = load(tmp_path, "batch: b\njobs:\n  - {name: c, kind: cluster, params: {dataset: digits, k: 10}}\n")
    assert spec.jobs[0].params["k"] == [10]
    same = load(tmp_path, "batch: b\njobs:\n  - {name: c, kind: cluster, params: {dataset: digits, k: [10]}}\n")
    assert plan_batch(spec).jobs[0].fingerprint == plan_batch(same).jobs[0].fingerprint


@pytest.mark.parametrize("k,field,message", [
    ("1", "params.k", "must be integers from 2 to 10000, got [1]"),
    ("[2, 2]", "params.k", "repeats a value: [2, 2]"),
    ("[]", "params.k", "must be integers from 2 to 10000, got []"),
    ("'10'", "params.k", "expected int, got '10'"),
    ("[2, x]", "params.k[1]", "expected int, got 'x'"),
])
def test_cluster_bad_k(tmp_path: Path, k: str, field: str, message: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: c, kind: cluster, params: {{dataset: digits, k: {k}}}}}\n")
    check(e, "c", field)
    assert e.message == message


def test_cluster_dataset_from_defaults(tmp_path: Path, shared_data: Path) -> None:
    spec = load(tmp_path, "batch: b\ndefaults: {params: {dataset: wifi, k: 3}}\njobs:\n"
                          "  - {name: c, kind: cluster}\n", shared_data)
    assert (spec.jobs[0].params["dataset"], spec.jobs[0].params["k"]) == ("wifi", [3])


def test_cluster_param_in_defaults_of_a_batch_without_cluster(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\ndefaults: {params: {k: 3}}\njobs:\n  - {name: t, kind: train}\n")
    assert (e.job, e.field, e.message) == (None, "defaults.params.k", "no job kind of this batch has this parameter")


# ----------------------------------------------------------------------------------------------------
# train: image datasets only


@pytest.mark.parametrize("model", ["conv_ae", "pool_ae", "face_ae", "cnn"])
def test_train_on_wifi(tmp_path: Path, shared_data: Path, model: str) -> None:
    e = spec_error(tmp_path, f"batch: b\njobs:\n  - {{name: t, kind: train, params: {{model: {model}, "
                             f"dataset: wifi}}}}\n", shared_data)
    check(e, "t", "params.dataset")
    assert e.message == f"model {model} needs an image dataset, not 'wifi'"


def test_train_on_wifi_from_defaults_and_from_a_sweep(tmp_path: Path, shared_data: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        defaults: {params: {dataset: wifi}}
        jobs:
          - {name: c, kind: cluster}
          - {name: t, kind: train}
        """, shared_data)
    check(e, "t", "defaults.params.dataset", "needs an image dataset, not 'wifi'")
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, sweep: {dataset: [digits, wifi]}}\n",
                   shared_data)
    check(e, "t[dataset=wifi]", "sweep.dataset", "model conv_ae needs an image dataset, not 'wifi'")


# ----------------------------------------------------------------------------------------------------
# Data files in the data dir: olivetti and wifi


def test_data_file_names() -> None:
    assert DATA_FILES["mnist"] == "mnist.npz"
    assert DATA_FILES["olivetti"] == "olivetti_faces.npz"
    assert DATA_FILES["wifi"] == "wifi_localization.txt"
    assert "digits" not in DATA_FILES and "npz" not in DATA_FILES and "images" not in DATA_FILES
    assert FOLDER_DATASETS == ("images",)


FROM_DATA_DIR = {
    "train-olivetti": ("olivetti", "  - {name: j, kind: train, params: {model: face_ae, dataset: olivetti}}\n"),
    "encode-olivetti": ("olivetti", "  - {name: a, kind: train, params: {model: face_ae, dataset: olivetti}}\n"
                                    "  - {name: j, kind: encode, needs: a, params: {dataset: olivetti}}\n"),
    "cluster-olivetti": ("olivetti", "  - {name: j, kind: cluster, params: {dataset: olivetti}}\n"),
    "cluster-wifi": ("wifi", "  - {name: j, kind: cluster, params: {dataset: wifi}}\n"),
}


@pytest.mark.parametrize("case", sorted(FROM_DATA_DIR))
def test_data_file_looked_up_in_the_data_dir(tmp_path: Path, shared_data: Path, case: str) -> None:
    dataset, jobs = FROM_DATA_DIR[case]
    spec = load(tmp_path, "batch: b\njobs:\n" + jobs, shared_data)
    j = by_name(spec)["j"]
    expected = shared_data / DATA_FILES[dataset]
    assert j.params["data_path"] == str(expected.resolve())
    assert job_data_identity(j) == f"{dataset}:{sha256(expected)}"


@pytest.mark.parametrize("case", sorted(FROM_DATA_DIR))
def test_data_file_missing_from_the_data_dir(tmp_path: Path, case: str) -> None:
    dataset, jobs = FROM_DATA_DIR[case]
    jobs = jobs.replace("{name: a, kind: train, params: {model: face_ae, dataset: olivetti}}",
                        "{name: a, kind: train, params: {model: face_ae}}")  # only j's file is missing
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    e = spec_error(tmp_path, "batch: b\njobs:\n" + jobs, data_dir)
    check(e, "j", "params.dataset")
    assert e.message == f"{dataset} data file not found: {data_dir / DATA_FILES[dataset]}"


def test_olivetti_location_does_not_change_the_fingerprint(tmp_path: Path, shared_data: Path) -> None:
    olivetti = shared_data / "olivetti_faces.npz"
    from_dir = load(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: olivetti}}\n",
                    shared_data)
    explicit = load(tmp_path, f"batch: b\njobs:\n  - {{name: t, kind: train, params: {{dataset: olivetti, "
                              f"data_path: '{olivetti}'}}}}\n", shared_data)
    assert plan_batch(from_dir).jobs[0].fingerprint == plan_batch(explicit).jobs[0].fingerprint
    mnist = load(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: mnist}}\n", shared_data)
    assert plan_batch(mnist).jobs[0].fingerprint != plan_batch(from_dir).jobs[0].fingerprint


def test_npz_needs_a_data_path(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: npz}}\n")
    assert e.job == "t" and e.field is not None and e.field.endswith("data_path")
    assert e.message == "required for dataset 'npz'"


def test_npz_needs_a_data_path_names_the_jobs_params(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: npz}}\n")
    check(e, "t", "params.data_path", "required for dataset 'npz'")


def test_npz_with_a_data_path(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 any bytes: read by the worker, hashed here")
    spec = load(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: npz, data_path: x.npz}}\n")
    assert spec.jobs[0].params["data_path"] == str((tmp_path / "x.npz").resolve())
    assert job_data_identity(spec.jobs[0]) == f"npz:{sha256(tmp_path / 'x.npz')}"


# ----------------------------------------------------------------------------------------------------
# images: a folder of image files


def make_images(folder: Path) -> Path:
    (folder / "cats").mkdir(parents=True)
    (folder / "dogs").mkdir()
    for i, sub in enumerate(["cats/a.png", "cats/b.png", "dogs/c.png"]):
        (folder / sub).write_bytes(b"\x89PNG fake " + bytes([i]) * 10)
        os.utime(folder / sub, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i))
    return folder


IMAGES = "batch: b\njobs:\n  - {name: t, kind: train, params: {model: cnn, dataset: images, data_path: imgs}}\n"


def test_images_folder_accepted(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs")
    spec = load(tmp_path, IMAGES)
    job = spec.jobs[0]
    assert job.params["data_path"] == str((tmp_path / "imgs").resolve())  # relative to the spec's folder
    assert job_data_identity(job).startswith("images:folder:")


def test_images_folder_for_encode_and_cluster(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs")
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: a, kind: train, params: {dataset: images, data_path: imgs, color: rgb, image_size: 96}}
          - {name: e, kind: encode, needs: a, params: {dataset: images, data_path: imgs, color: rgb}}
          - {name: c, kind: cluster, params: {dataset: images, data_path: imgs}}
        """)
    folder = str((tmp_path / "imgs").resolve())
    assert [j.params["data_path"] for j in spec.jobs] == [folder] * 3
    assert len({job_data_identity(j) for j in spec.jobs}) == 1


def test_images_data_path_is_a_file(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs")
    e = spec_error(tmp_path, IMAGES.replace("data_path: imgs", "data_path: imgs/cats/a.png"))
    check(e, "t", "params.data_path", "images data_path must be a folder of images, not a file: ")
    expected = f"images data_path must be a folder of images, not a file: {tmp_path / 'imgs' / 'cats' / 'a.png'}"
    assert e.message == expected


def test_images_folder_missing(tmp_path: Path) -> None:
    e = spec_error(tmp_path, IMAGES)
    check(e, "t", "params.data_path")
    assert e.message == f"images folder not found: {tmp_path / 'imgs'}"


def test_images_without_data_path(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, params: {dataset: images}}\n")
    assert e.job == "t" and e.field is not None and e.field.endswith("data_path")
    assert e.message == "required for dataset 'images'"


def images_fp(tmp_path: Path) -> str:
    return plan_batch(load(tmp_path, IMAGES)).jobs[0].fingerprint


def test_changing_a_file_in_an_images_folder_changes_the_fingerprint(tmp_path: Path) -> None:
    folder = make_images(tmp_path / "imgs")
    before = images_fp(tmp_path)
    assert images_fp(tmp_path) == before  # nothing changed: the same job

    image = folder / "cats" / "b.png"
    image.write_bytes(b"\x89PNG another, longer image")
    os.utime(image, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    changed = images_fp(tmp_path)
    assert changed != before

    image.write_bytes(b"\x89PNG another, longer imagf")  # the same size, rewritten later: a new mtime
    os.utime(image, ns=(1_700_000_000_000_000_001, 1_700_000_000_000_000_001))
    assert images_fp(tmp_path) not in {before, changed}


@pytest.mark.parametrize("change", ["add", "remove", "rename"])
def test_adding_removing_or_renaming_a_file_changes_the_fingerprint(tmp_path: Path, change: str) -> None:
    folder = make_images(tmp_path / "imgs")
    before = images_fp(tmp_path)
    image = folder / "dogs" / "c.png"
    if change == "add":
        (folder / "dogs" / "d.png").write_bytes(b"\x89PNG new")
    elif change == "remove":
        image.unlink()
    else:
        image.rename(folder / "cats" / "c.png")
    assert images_fp(tmp_path) != before


def test_images_folder_location_does_not_change_the_fingerprint(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs")
    make_images(tmp_path / "other" / "imgs")  # the same names, sizes and times elsewhere
    here = images_fp(tmp_path)
    there = plan_batch(load(tmp_path, IMAGES.replace("data_path: imgs", "data_path: other/imgs"))).jobs[0]
    assert there.params["data_path"] != str((tmp_path / "imgs").resolve())
    assert there.fingerprint == here


# ----------------------------------------------------------------------------------------------------
# Behaviour that was reported as wrong and then fixed


def test_cluster_dataset_message_uses_an_before_encode(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: c, kind: cluster}\n")
    assert e.message == "required unless the job needs an encode job"


def test_encode_data_path_without_dataset_is_refused(tmp_path: Path) -> None:
    e = spec_error(tmp_path, """\
        batch: b
        jobs:
          - {name: a, kind: train}
          - {name: e, kind: encode, needs: a, params: {data_path: nowhere.npz}}
        """)
    assert (e.job, e.field) == ("e", "params.data_path")


def test_foreach_makes_one_chain_per_expansion_of_a_swept_job(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        batch: b
        jobs:
          - {name: train, kind: train, sweep: {z_dim: [8, 16]}}
          - {name: cnn, kind: train, params: {model: cnn}}
          - {name: encode, kind: encode, foreach: train}
          - {name: sample, kind: sample, foreach: encode, needs: [cnn], sweep: {sampler: [normal, fitted_normal]}}
          - {name: report, kind: noop, needs: sample}
        """)
    jobs = by_name(spec)
    assert jobs["encode[z_dim=8]"].needs == ("train[z_dim=8]",)
    assert jobs["encode[z_dim=16]"].needs == ("train[z_dim=16]",)
    assert jobs["sample[z_dim=8,sampler=fitted_normal]"].needs == ("encode[z_dim=8]", "cnn")
    assert jobs["sample[z_dim=16,sampler=normal]"].needs == ("encode[z_dim=16]", "cnn")
    assert "z_dim" not in jobs["encode[z_dim=8]"].params  # a label for naming and pairing, not a parameter
    assert len(jobs["report"].needs) == 4


def test_foreach_names_an_unknown_or_later_job(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: e, kind: encode, foreach: t}\n"
                             "  - {name: t, kind: train}\n")
    check(e, "e", "foreach", "must name a job defined above this one, got 't'")


def test_foreach_and_own_sweep_over_the_same_key(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train, sweep: {epochs: [1, 2]}}\n"
                             "  - {name: u, kind: train, foreach: t, sweep: {epochs: [3]}}\n")
    check(e, "u", "sweep.epochs", "also swept by its foreach job 't[epochs=1]'")


def test_cluster_with_both_a_dataset_and_an_encode_job_is_refused(tmp_path: Path) -> None:
    e = spec_error(tmp_path, "batch: b\njobs:\n  - {name: t, kind: train}\n  - {name: e, kind: encode, needs: t}\n"
                             "  - {name: c, kind: cluster, needs: e, params: {dataset: digits}}\n")
    check(e, "c", "params.dataset", "set (here or by defaults.params) while the job also needs an encode job")


# ----------------------------------------------------------------------------------------------------
# The control plane imports no TensorFlow


def test_validating_and_planning_import_no_tensorflow() -> None:
    code = ("import sys, scheduler.spec, scheduler.plan, core.kinds, core.params, core.data_files; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
