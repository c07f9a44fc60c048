"""Datasets registered in the farm, through the CLI on the embedded default: ``data add`` and ``data list``, their
one-line errors that write nothing, and batches that read registered datasets with no local copy anywhere."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA
from tests.e2e.cli import clean_env, latentfarm_bin, run, run_json

pytestmark = pytest.mark.timeout(300)

MNIST_SHA = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"  # ../shared/data/SOURCES.md


def _farm(tmp_path: Path, data: Path) -> dict[str, str]:
    """One farm's settings (a database, an artifact store, a host's cache), usable from any directory."""
    return clean_env(LATENTFARM_DATABASE_URL=f"sqlite:///{tmp_path / 'farm.db'}",
                     LATENTFARM_ARTIFACTS=str(tmp_path / "artifacts"), LATENTFARM_DATA_DIR=str(data),
                     LATENTFARM_CACHE_DIR=str(tmp_path / "host" / "blobs"))


def _pets(folder: Path) -> Path:
    for i, name in enumerate(["cat/1.png", "cat/2.png", "cat/3.png", "dog/4.png", "dog/5.png", "dog/6.png"]):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 20, 3), i * 30, np.uint8)).save(folder / name)
    return folder


def _blobs(tmp_path: Path) -> list[str]:
    root = tmp_path / "artifacts"
    return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_data_add_and_list_and_every_bad_input(tmp_path: Path) -> None:
    data, work = tmp_path / "data", tmp_path / "work"
    data.mkdir()
    work.mkdir()
    for name in ("mnist.npz", "wifi_localization.txt", "olivetti_faces.npz"):
        (data / name).symlink_to(SHARED_DATA / name)
    _pets(work / "pets")
    env = _farm(tmp_path, data)

    added = run(["data", "add", "mnist", "../data/mnist.npz"], work, env).stdout
    assert added.startswith("added dataset 'mnist': file mnist.npz, 11.0 MiB, x_train 60000x28x28, x_test "
                            "10000x28x28, sha256 06af5dfe73b7"), added
    folder = run_json(["data", "add", "pets", "pets"], work, env)  # relative to the current directory
    assert folder["outcome"] == "added" and folder["dataset"]["kind"] == "folder"
    assert folder["dataset"]["meta"] == {"format": "images", "images": 6, "classes": 2}
    listed = run(["data", "list"], work, env).stdout.splitlines()
    assert listed[0].split() == ["NAME", "KIND", "SIZE", "SHA256", "CONTENT", "ADDED"]
    assert listed[1].split()[:5] == ["mnist", "file", "11.0", "MiB", "06af5dfe73b7"]
    assert listed[2].split()[:2] == ["pets", "folder"] and "6 images in 2 classes" in listed[2]
    assert [d["name"] for d in run_json(["data", "list"], work, env)] == ["mnist", "pets"]

    again = run(["data", "add", "mnist", str(data / "mnist.npz")], work, env).stdout
    assert again.strip() == "dataset 'mnist' is registered with this content already (sha256 06af5dfe73b7): " \
                            "nothing to do"
    before, blobs = run_json(["data", "list"], work, env), _blobs(tmp_path)
    bad = {
        ("mnist", "../data/olivetti_faces.npz"): "error: dataset 'mnist' is already registered with other content "
                                                 "(sha256 06af5dfe73b7, this is cc3cecd90c64): add it under another "
                                                 "name, or pass --replace",
        ("no/slash", "pets"): "error: bad dataset name 'no/slash': letters, digits, '_', '.', '-' (starting with a "
                              "letter or digit), at most 100 characters",
        ("x", "missing.npz"): "error: missing.npz: no such file or folder",
        ("x", str(SHARED_DATA / "mnist.npz")): f"error: {SHARED_DATA / 'mnist.npz'}: outside the data roots "
                                               "(LATENTFARM_DATA_DIR and the current directory): files elsewhere "
                                               "cannot be added",
        ("x", "pets/cat/../../notes.txt"): f"error: {work / 'notes.txt'}: not a dataset: expected an .npz of image "
                                           "arrays, a jpg or png image, the WiFi table or a folder of images",
    }
    (work / "notes.txt").write_text("a file that is no dataset\n")
    for (name, given), message in bad.items():
        proc = run(["data", "add", name, given], work, env, check=False)
        assert (proc.returncode, proc.stderr.strip().splitlines(), proc.stdout) == (2, [message], ""), (name, given)
    assert run_json(["data", "list"], work, env) == before and _blobs(tmp_path) == blobs  # nothing written

    replaced = run(["data", "add", "mnist", "../data/olivetti_faces.npz", "--replace"], work, env).stdout
    assert replaced.startswith("replaced dataset 'mnist' (06af5dfe73b7 -> cc3cecd90c64): file olivetti_faces.npz")
    after = {d["name"]: d for d in run_json(["data", "list"], work, env)}
    assert after["mnist"]["id"] == before[0]["id"] and after["mnist"]["meta"]["layout"] == "images"


BATCH = """\
batch: registered
jobs:
  - {name: cnn, kind: train, params: {model: cnn, dataset: mnist, limit: 200, epochs: 1, batch_size: 50}}
  - {name: pets, kind: cluster, params: {dataset: images, data_path: pets, image_size: 16, k: 2, silhouette_sample: 10,
     plot: none}}
  - name: dream
    kind: dream
    needs: cnn
    params: {image: photo, levels: 0, iterations: 1, size: 56, maps: 3, epochs: 2}
"""


def test_batches_read_registered_datasets_with_no_local_copy_and_hit_the_cache_from_anywhere(tmp_path: Path) -> None:
    data, work = tmp_path / "data", tmp_path / "work"
    data.mkdir()
    work.mkdir()
    (data / "mnist.npz").symlink_to(SHARED_DATA / "mnist.npz")
    (data / "photo.jpg").symlink_to(SHARED_DATA / "dream_input.jpg")
    _pets(work / "pets")
    env = _farm(tmp_path, data)
    for name, given in (("mnist", "../data/mnist.npz"), ("photo", "../data/photo.jpg"), ("pets", "pets")):
        run(["data", "add", name, given], work, env)
    # The originals go: out of the data roots, and the data directory is empty from now on.
    shutil.rmtree(work / "pets")
    for f in data.iterdir():
        f.unlink()
    (work / "batch.yaml").write_text(BATCH)

    out = run_json(["submit", "batch.yaml"], work, env)
    assert out["status"] == "succeeded" and out["counts"] == {"succeeded": 4}, out
    cnn = run_json(["show", str(out["jobs"]["cnn"])], work, env)
    assert cnn["job"]["params"]["data_path"] == f"dataset:mnist@{MNIST_SHA}"  # readable: the name and the version
    assert any(f"dataset mnist:{MNIST_SHA}" in (e["message"] or "") for e in cnn["events"])
    tile = run_json(["show", str(out["jobs"]["dream/i0/L0/t0"])], work, env)
    assert tile["job"]["params"]["image"].startswith("dataset:photo@f5724aea6d92")
    extracted = list((tmp_path / "host" / "datasets").iterdir())  # the folder, extracted once beside the cache
    assert len(extracted) == 1 and len(list(extracted[0].rglob("*.png"))) == 6
    assert list(data.iterdir()) == []

    elsewhere = tmp_path / "another" / "machine"  # another working directory: the same jobs, from the cache
    elsewhere.mkdir(parents=True)
    (elsewhere / "batch.yaml").write_text(BATCH)
    cached = run_json(["submit", "batch.yaml"], elsewhere, {**env, "LATENTFARM_DATA_DIR": str(tmp_path / "none")})
    assert cached["status"] == "succeeded" and sorted(cached["cached"]) == sorted(cached["jobs"].values())
    assert cached["queued"] == []
    first = {j["name"]: j["fingerprint"] for j in run_json(["status", str(out["batch_id"])], work, env)["jobs"]}
    second = {j["name"]: j["fingerprint"] for j in run_json(["status", str(cached["batch_id"])], work, env)["jobs"]}
    assert first == second


WAITING = """\
batch: waiting
jobs:
  - {name: wait, kind: sleep, params: {seconds: 2}}
  - {name: replaced, kind: cluster, needs: wait, params: {dataset: wifi, data_path: rooms, k: 2, n_init: 1, plot: none}}
  - {name: deleted, kind: cluster, needs: wait, params: {dataset: wifi, data_path: gone, k: 2, n_init: 1, plot: none}}
"""


def _sleeping(db: Path) -> bool:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT 1 FROM jobs WHERE name = 'wait' AND status = 'running'").fetchone() is not None


def test_a_dataset_replaced_after_submit_is_read_as_submitted_and_one_deleted_fails_the_job(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "wifi.txt").symlink_to(SHARED_DATA / "wifi_localization.txt")
    (data / "fewer.txt").write_text("".join((SHARED_DATA / "wifi_localization.txt").read_text().splitlines(True)[::4]))
    env = _farm(tmp_path, data)
    first = run_json(["data", "add", "rooms", str(data / "wifi.txt")], tmp_path, env)["dataset"]["sha256"]
    run(["data", "add", "gone", str(data / "fewer.txt")], tmp_path, env)
    (tmp_path / "waiting.yaml").write_text(WAITING)
    proc = subprocess.Popen([latentfarm_bin(), "submit", "waiting.yaml", "--json"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "farm.db").exists() or not _sleeping(tmp_path / "farm.db"):  # submitted: now change them
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    run(["data", "add", "rooms", str(data / "fewer.txt"), "--replace"], tmp_path, env)
    with sqlite3.connect(tmp_path / "farm.db") as db:  # by hand: latentfarm has no command that deletes one
        db.execute("DELETE FROM datasets WHERE name = 'gone'")
    kept = [d["name"] for d in run_json(["data", "list", "--all"], tmp_path, env)]
    assert kept == ["rooms", f"rooms@{first}"]  # the replaced version is kept for the job submitted with it
    out, err = proc.communicate(timeout=120)
    batch = json.loads(out)
    assert batch["counts"] == {"succeeded": 2, "failed": 1}, err

    replaced = run_json(["show", str(batch["jobs"]["replaced"])], tmp_path, env)
    assert replaced["job"]["status"] == "succeeded"
    assert any(f"dataset wifi:{first}" in (e["message"] or "") for e in replaced["events"])  # the version submitted
    labels = next(a for a in replaced["artifacts"] if a["name"] == "clusters_train.npy")
    assert labels["meta"]["shape"] == [1600]  # read from its 2000 rows (80% to train), not the 500 that replaced them
    deleted = run_json(["show", str(batch["jobs"]["deleted"])], tmp_path, env)["job"]
    assert deleted["status"] == "failed" and deleted["attempts"] == 1  # not retried: retrying cannot bring it back
    assert deleted["error"].startswith("NotFound: dataset 'gone' (sha256 ") and "is no longer registered: it was " \
        "deleted, or replaced and this version is no longer kept" in deleted["error"]
