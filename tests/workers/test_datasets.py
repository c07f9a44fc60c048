"""A registered dataset on a worker (``workers.datasets``): a file read from the store where it is, a folder extracted
once per host, atomically and safely, and a version that is gone failing the job with a clear permanent error."""

from __future__ import annotations

import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scheduler.datasets import add_dataset
from scheduler.errors import ArtifactCorrupt, NotFound, is_transient
from storage import datasets as registry
from storage.store import Store
from tests.conftest import SHARED_DATA
from workers.datasets import extract_archive, extracted, local_copy


def _folder(root: Path) -> Path:
    for i, name in enumerate(["cat/1.png", "cat/2.png", "dog/3.png"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 6), i * 40, np.uint8)).save(root / name)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _crafted(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    path = tmp_path / "crafted.tar"
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("fine.png")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"png"))
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_a_registered_folder_is_extracted_once_and_a_file_read_where_it_is(sqlite_store: Store,
                                                                         tmp_path: Path) -> None:
    _folder(tmp_path / "pets")
    pets = add_dataset(sqlite_store, "pets", "pets", tmp_path / "data", cwd=tmp_path).dataset
    cache = tmp_path / "host" / "datasets"
    ref = f"dataset:pets@{pets.sha256}"
    local = Path(local_copy(sqlite_store, cache, ref))
    assert local == cache / pets.sha256 and _files(local) == _files(tmp_path / "pets")
    inode = local.stat().st_ino
    assert Path(local_copy(sqlite_store, cache, ref)).stat().st_ino == inode  # found there, not extracted again
    assert [p.name for p in cache.iterdir()] == [pets.sha256]  # no temporary directory left

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "photo.jpg").symlink_to(SHARED_DATA / "dream_input.jpg")
    photo = add_dataset(sqlite_store, "photo", "photo.jpg", tmp_path / "data", cwd=tmp_path / "data").dataset
    path = Path(local_copy(sqlite_store, cache, f"dataset:photo@{photo.sha256}"))
    assert path.read_bytes() == (SHARED_DATA / "dream_input.jpg").read_bytes()
    assert path == Path(sqlite_store.artifacts.location(photo.uri))  # the blob itself: not copied
    assert local_copy(sqlite_store, cache, "/some/plain/path.npz") == "/some/plain/path.npz"


def test_two_processes_extracting_at_once_end_with_one_folder(sqlite_store: Store, tmp_path: Path) -> None:
    _folder(tmp_path / "pets")
    pets = add_dataset(sqlite_store, "pets", "pets", tmp_path, cwd=tmp_path).dataset
    archive = sqlite_store.artifacts.verified_path(pets.uri, pets.sha256, "pets")
    cache, start = tmp_path / "cache", threading.Barrier(4)
    got: list[Path] = []

    def extract() -> None:
        start.wait()
        got.append(extracted(archive, pets, cache, "pets"))

    threads = [threading.Thread(target=extract) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [cache / pets.sha256] * 4
    assert [p.name for p in cache.iterdir()] == [pets.sha256] and _files(got[0]) == _files(tmp_path / "pets")


@pytest.mark.parametrize("member,why", [
    (_member("../escape.png"), "would be written outside its folder"),
    (_member("a/../../escape.png"), "would be written outside its folder"),
    (_member("/etc/escape.png"), "would be written outside its folder"),
    (_member("link.png", tarfile.SYMTYPE, "/etc/passwd"), "holds a link ('link.png')"),
    (_member("hard.png", tarfile.LNKTYPE, "fine.png"), "holds a link ('hard.png')"),
    (_member("dev", tarfile.CHRTYPE), "holds a device or pipe"),
    (_member("fifo", tarfile.FIFOTYPE), "holds a device or pipe"),
    (_member("fine.png"), "holds 'fine.png' twice"),
])
def test_a_crafted_archive_is_refused_whole(tmp_path: Path, member: tarfile.TarInfo, why: str) -> None:
    archive = _crafted(tmp_path, member, b"x")
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(ArtifactCorrupt, match="dataset 'x'.*" + why.replace("(", r"\(").replace(")", r"\)")) as info:
        extract_archive(archive, into, "dataset 'x'")
    assert not is_transient(info.value)
    assert not (tmp_path / "escape.png").exists() and not Path("/etc/escape.png").exists()
    assert not (into / "link.png").is_symlink()


def test_extraction_of_a_crafted_archive_leaves_nothing_in_the_cache(sqlite_store: Store, tmp_path: Path) -> None:
    archive = _crafted(tmp_path, _member("../escape.png"), b"x")
    blob = sqlite_store.artifacts.put_file(archive)
    with sqlite_store.session() as s:  # written by hand: `data add` never makes such an archive
        registry.add_dataset(s, "evil", "folder", "evil", blob.uri, blob.sha256, blob.bytes, {"format": "images"})
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactCorrupt, match="refused"):
        local_copy(sqlite_store, cache, f"dataset:evil@{blob.sha256}")
    assert list(cache.iterdir()) == [] and not (cache.parent / "escape.png").exists()


def test_a_version_no_longer_registered_fails_the_job_saying_so(sqlite_store: Store, tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", images=np.zeros((4, 8, 8), np.uint8), target=np.arange(4))
    np.savez(tmp_path / "b.npz", images=np.ones((4, 8, 8), np.uint8), target=np.arange(4))
    first = add_dataset(sqlite_store, "faces", "a.npz", tmp_path, cwd=tmp_path).dataset
    add_dataset(sqlite_store, "faces", "b.npz", tmp_path, cwd=tmp_path, replace=True)  # no job kept version a
    with pytest.raises(NotFound, match=r"dataset 'faces' \(sha256 [0-9a-f]{12}\) is no longer registered: it was "
                                       "deleted, or replaced and this version is no longer kept") as info:
        local_copy(sqlite_store, tmp_path / "cache", f"dataset:faces@{first.sha256}")
    assert not is_transient(info.value)
