"""Registering datasets (``scheduler.datasets``) and specs that name them: the folder archive is deterministic, bad
input writes nothing, and a spec resolves a registered name to a reference checked from the recorded meta alone,
fingerprinted by the registered sha256."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scheduler.datasets import add_dataset, registered, write_archive
from scheduler.errors import Conflict, SpecError, UserError
from scheduler.plan import plan_batch
from scheduler.spec import load_spec
from storage import datasets as registry
from storage.store import Store
from tests.conftest import SHARED_DATA
from tests.scheduler.spec_helpers import write

MNIST_SHA = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"  # ../shared/data/SOURCES.md


def _images(folder: Path, names: list[str]) -> Path:
    """A small folder of PNGs, in class subfolders when a name has one."""
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((12, 10), i * 20, np.uint8)).save(path)
    return folder


def _sha(folder: Path) -> str:
    buf = io.BytesIO()
    return write_archive(folder, buf)


def _blobs(store: Store) -> list[Path]:
    root = Path(store.artifacts.location("x")).parent
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory with the shared files linked in (never copied)."""
    d = tmp_path / "data"
    d.mkdir()
    for name in ("mnist.npz", "olivetti_faces.npz", "wifi_localization.txt", "dream_input.jpg"):
        (d / name).symlink_to(SHARED_DATA / name)
    return d


# -- the archive --

def test_a_folder_archive_depends_on_names_and_bytes_only(tmp_path: Path) -> None:
    names = ["a/1.png", "a/2.png", "b/3.png", "b/deep/4.png", "notes.txt"]
    first = _images(tmp_path / "first", names[:-1])
    (first / "notes.txt").write_text("kept: any regular file goes in")
    second = tmp_path / "second"  # the same files, written in another order, with other times and modes
    for name in reversed(names):
        (second / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first / name, second / name)
        os.utime(second / name, (1, 1))
        os.chmod(second / name, 0o600)
    (second / ".DS_Store").write_text("hidden: left out")
    (second / ".cache").mkdir()
    (second / ".cache" / "x.png").write_bytes((first / "a/1.png").read_bytes())
    assert _sha(first) == _sha(first) == _sha(second)
    with tarfile.open(fileobj=io.BytesIO(_archive_bytes(first))) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(names)
    assert {(m.mtime, m.uid, m.gid, m.mode, m.type) for m in members} == {(0, 0, 0, 0o644, tarfile.REGTYPE)}
    (second / "b/3.png").write_bytes(b"other bytes")
    assert _sha(second) != _sha(first)


def _archive_bytes(folder: Path) -> bytes:
    buf = io.BytesIO()
    sha = write_archive(folder, buf)
    assert hashlib.sha256(buf.getvalue()).hexdigest() == sha
    return buf.getvalue()


def test_an_archive_refuses_links_out_of_the_folder_and_takes_links_within_as_files(tmp_path: Path) -> None:
    folder = _images(tmp_path / "f", ["a/1.png"])
    (folder / "a" / "again.png").symlink_to(folder / "a" / "1.png")
    size = (folder / "a/1.png").stat().st_size
    with tarfile.open(fileobj=io.BytesIO(_archive_bytes(folder))) as tar:
        assert [(m.name, m.type, m.size) for m in tar.getmembers()] == [("a/1.png", tarfile.REGTYPE, size),
                                                                        ("a/again.png", tarfile.REGTYPE, size)]
    (folder / "out.png").symlink_to(SHARED_DATA / "dream_input.jpg")
    with pytest.raises(Exception, match="a link leading out of the folder"):
        _sha(folder)
    (folder / "out.png").unlink()
    (folder / "loop").symlink_to(folder)
    with pytest.raises(Exception, match="a link to a folder"):
        _sha(folder)


# -- data add --

def test_add_a_file_and_a_folder_then_again_then_other_content(sqlite_store: Store, data: Path,
                                                                tmp_path: Path) -> None:
    store = sqlite_store
    added = add_dataset(store, "mnist", str(data / "mnist.npz"), data, cwd=tmp_path)
    assert added.outcome == "added" and added.dataset.sha256 == MNIST_SHA
    assert added.dataset.meta == {"format": "npz", "layout": "keras", "arrays": {
        "x_train": [60000, 28, 28], "y_train": [60000], "x_test": [10000, 28, 28], "y_test": [10000]}}
    assert store.artifacts.get_bytes(added.dataset.uri, MNIST_SHA)  # the blob is there, and matches
    folder = _images(tmp_path / "pets", ["cat/1.png", "cat/2.png", "dog/3.png"])
    pets = add_dataset(store, "pets", "pets", data, cwd=tmp_path)  # relative to the current directory
    assert (pets.outcome, pets.dataset.kind, pets.dataset.filename) == ("added", "folder", "pets")
    assert pets.dataset.meta == {"format": "images", "images": 3, "classes": 2}
    assert pets.dataset.sha256 == _sha(folder)
    wifi = add_dataset(store, "wifi", str(data / "wifi_localization.txt"), data, cwd=tmp_path)
    assert wifi.dataset.meta == {"format": "table", "rows": 2000, "columns": 8}
    photo = add_dataset(store, "photo", str(data / "dream_input.jpg"), data, cwd=tmp_path)
    assert photo.dataset.meta == {"format": "image", "width": 512, "height": 512}

    blobs = sorted(_blobs(store))
    again = add_dataset(store, "mnist", str(data / "mnist.npz"), data, cwd=tmp_path)
    assert again.outcome == "unchanged" and again.dataset == added.dataset
    with pytest.raises(Conflict, match="already registered with other content .* pass --replace"):
        add_dataset(store, "mnist", str(data / "olivetti_faces.npz"), data, cwd=tmp_path)
    assert sorted(_blobs(store)) == blobs  # hashed, compared, refused: nothing stored
    replaced = add_dataset(store, "mnist", str(data / "olivetti_faces.npz"), data, cwd=tmp_path, replace=True)
    assert (replaced.outcome, replaced.previous, replaced.dataset.id) == ("replaced", MNIST_SHA, added.dataset.id)
    assert replaced.dataset.meta["layout"] == "images"
    with store.session() as s:  # no unfinished job read the old version: it is not kept
        assert [d.name for d in registry.list_datasets(s, kept=True)] == ["mnist", "pets", "photo", "wifi"]


@pytest.mark.parametrize("name,given,message", [
    ("bad name", "mnist.npz", "bad dataset name 'bad name'"),
    ("../up", "mnist.npz", "bad dataset name"),
    ("x" * 101, "mnist.npz", "at most 100 characters"),
    ("x", "nope.npz", "nope.npz: no such file or folder"),
    ("x", "/etc/hostname", "outside the data roots"),
    ("x", "../../outside", "outside the data roots"),
    ("x", "notes.txt", "not a dataset: expected an .npz of image arrays, a jpg or png image, the WiFi table"),
    ("x", "table.txt", "line 2: expected 3 integers"),
    ("x", "plain.npz", "an .npz without the arrays x_train, y_train, x_test, y_test (or images, target); it has a"),
    ("x", "truncated.png", "not a dataset"),
    ("x", "empty", "no .jpg, .jpeg, .png images in the folder"),
    ("x", "unreadable.npz", "cannot read it"),
    ("x", "pipe", "not a regular file or folder"),
])
def test_bad_input_is_one_line_and_writes_nothing(sqlite_store: Store, data: Path, name: str, given: str,
                                                   message: str) -> None:
    (data / "notes.txt").write_text("just some words\n")
    (data / "table.txt").write_text("1 2 3\n4 5\n")
    np.savez(data / "plain.npz", a=np.zeros(3))
    (data / "truncated.png").write_bytes((SHARED_DATA / "dream_input.jpg").read_bytes()[:500])
    (data / "empty").mkdir()
    (data / "empty" / "readme.txt").write_text("no images")
    (data / "unreadable.npz").symlink_to("/proc/self/mem")  # in a root, so trusted; unreadable even by root
    os.mkfifo(data / "pipe")  # opening it to read would wait for a writer forever
    with pytest.raises(UserError) as info:
        add_dataset(sqlite_store, name, given, data, cwd=data)
    assert message in str(info.value) and "\n" not in str(info.value)
    with sqlite_store.session() as s:
        assert registry.list_datasets(s, kept=True) == []
    assert _blobs(sqlite_store) == []


# -- specs naming registered datasets --

def _registry(store: Store, data: Path, tmp_path: Path) -> None:
    add_dataset(store, "mnist", str(data / "mnist.npz"), data, cwd=tmp_path)
    add_dataset(store, "faces", str(data / "olivetti_faces.npz"), data, cwd=tmp_path)
    add_dataset(store, "photo", str(data / "dream_input.jpg"), data, cwd=tmp_path)
    add_dataset(store, "wifi", str(data / "wifi_localization.txt"), data, cwd=tmp_path)
    _images(tmp_path / "pets", ["cat/1.png", "dog/2.png"])
    add_dataset(store, "pets", "pets", data, cwd=tmp_path)


SPEC = """\
batch: b
jobs:
  - {name: digits, kind: train, params: {model: cnn, epochs: 1}}
  - {name: m, kind: train, params: {dataset: mnist, limit: 100}}
  - {name: f, kind: train, params: {dataset: npz, data_path: faces, model: face_ae}}
  - {name: p, kind: train, params: {dataset: images, data_path: pets, image_size: 32}}
  - {name: w, kind: cluster, params: {dataset: wifi}}
  - {name: d, kind: dream, needs: digits, params: {image: photo, levels: 0, iterations: 1}}
"""


def test_a_spec_names_registered_datasets_and_needs_no_copy(sqlite_store: Store, data: Path, tmp_path: Path) -> None:
    _registry(sqlite_store, data, tmp_path)
    known = registered(sqlite_store)
    refs = {name: f"dataset:{name}@{d.sha256}" for name, d in known.items()}
    empty = tmp_path / "empty-data"  # the submitting machine has none of the files
    spec = load_spec(write(tmp_path / "a", SPEC), empty, datasets=known)
    params = {j.name: j.params for j in spec.jobs}
    assert params["digits"]["data_path"] is None  # digits ship with scikit-learn: never looked up
    assert params["m"]["data_path"] == refs["mnist"]
    assert params["f"]["data_path"] == refs["faces"]
    assert params["p"]["data_path"] == refs["pets"]
    assert params["w"]["data_path"] == refs["wifi"]
    assert params["d/i0/L0/t0"]["image"] == refs["photo"]
    # the same spec from another folder, on another machine's data directory: the same fingerprints (a cache hit)
    again = load_spec(write(tmp_path / "b" / "elsewhere", SPEC), tmp_path / "other-data", datasets=known)
    assert {j.name: j.fingerprint for j in plan_batch(spec).jobs} == \
        {j.name: j.fingerprint for j in plan_batch(again).jobs}
    # a local copy of the same file fingerprints as the registered one
    local = load_spec(write(tmp_path / "c", SPEC.replace("data_path: faces", "data_path: olivetti_faces.npz")),
                      data, datasets=known)
    assert plan_batch(local).jobs[2].fingerprint == plan_batch(spec).jobs[2].fingerprint
    assert local.jobs[2].params["data_path"].endswith("olivetti_faces.npz")


def test_a_registered_name_yields_to_a_file_of_that_name_but_dataset_prefers_the_registry(
        sqlite_store: Store, data: Path, tmp_path: Path) -> None:
    _registry(sqlite_store, data, tmp_path)
    known = registered(sqlite_store)
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "faces").symlink_to(SHARED_DATA / "olivetti_faces.npz")  # a file named like the dataset
    text = ("batch: b\njobs:\n  - {name: f, kind: train, params: {dataset: npz, data_path: faces, model: face_ae}}\n"
            "  - {name: m, kind: train, params: {dataset: mnist}}\n")
    spec = load_spec(write(spec_dir, text), data, datasets=known)  # data holds mnist.npz too
    local_faces = str((spec_dir / "faces").resolve())
    assert spec.jobs[0].params["data_path"] == local_faces  # the path, as before datasets could be registered
    assert spec.jobs[1].params["data_path"] == f"dataset:mnist@{MNIST_SHA}"  # the farm's mnist
    unregistered = load_spec(write(spec_dir, text), data, datasets={})  # without a registry: as before
    assert [j.params["data_path"] for j in unregistered.jobs] == [local_faces, str((data / "mnist.npz").resolve())]


@pytest.mark.parametrize("params,field,message", [
    ("{dataset: images, data_path: faces}", "params.data_path",
     "the registered dataset 'faces' is an .npz of image arrays: images needs a folder of images"),
    ("{dataset: npz, data_path: pets}", "params.data_path",
     "the registered dataset 'pets' is a folder of images: npz needs an .npz of image arrays"),
    ("{dataset: npz, data_path: photo}", "params.data_path", "'photo' is an image: npz needs an .npz"),
    ("{dataset: olivetti, data_path: mnist}", "params.data_path",
     "'mnist' is an .npz without the arrays olivetti reads (images, target)"),
    ("{dataset: npz, data_path: faces, image_size: 1024, model: face_ae}", "params",
     "needs about"),  # the memory estimate, from the recorded array shapes: no file to read here
    ("{dataset: npz, data_path: unknown}", "params.data_path", "npz data file not found"),
])
def test_a_registered_dataset_that_does_not_fit_is_a_spec_error(sqlite_store: Store, data: Path, tmp_path: Path,
                                                                params: str, field: str, message: str) -> None:
    _registry(sqlite_store, data, tmp_path)
    text = f"batch: b\njobs:\n  - {{name: t, kind: train, params: {params}}}\n"
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path / "s", text), tmp_path / "empty", memory_budget=8 << 30,
                  datasets=registered(sqlite_store))
    assert (info.value.job, info.value.field) == ("t", field) and message in info.value.message, str(info.value)


def test_a_dream_image_must_be_a_registered_image(sqlite_store: Store, data: Path, tmp_path: Path) -> None:
    _registry(sqlite_store, data, tmp_path)
    text = ("batch: b\njobs:\n  - {name: c, kind: train, params: {model: cnn}}\n"
            "  - {name: d, kind: dream, needs: c, params: {image: wifi}}\n")
    with pytest.raises(SpecError, match="field 'params.image': the registered dataset 'wifi' is a table: a "
                                        "dream's image needs an image"):
        load_spec(write(tmp_path / "s", text), tmp_path / "empty", datasets=registered(sqlite_store))
