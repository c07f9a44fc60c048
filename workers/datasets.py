"""Registered datasets on a worker: a job's params name one by reference, ``dataset:<name>@<sha256>`` (see
``core.data_files``); here it becomes a local file or folder for a loader, so no machine needs a copy of its own.

- **The version it was fingerprinted with.** The job reads that sha256, found in the ``datasets`` table as the
  registered version or as a replaced one kept for the jobs submitted with it (``storage.datasets``). Found
  neither way (deleted, or replaced and that version no longer kept): NotFound, which fails the job at once, saying
  so; retrying cannot bring it back.
- **A file** is the artifact store's verified local file (``verified_path``: the blob itself in a directory store,
  this host's cached copy of a bucket's), read where it is: every loader tells the format from the bytes, not from a
  suffix (``np.load``, Pillow, the WiFi table's text), so nothing is copied or linked.
- **A folder** is its archive, extracted once per host into ``datasets/<sha256>`` beside the blob cache
  (``LATENTFARM_CACHE_DIR``'s parent; ``~/.cache/latentfarm/datasets`` by default): into a temporary directory
  first, renamed into place whole, so that no reader sees half a folder; a process that finds it there uses it,
  and of two extracting at once, the first rename wins. Every member is checked before it is written: a file or a
  folder with a relative name, no '..'. An archive holding anything else (an absolute or '..' name, a link, a
  device, a name twice) is refused whole: ``latentfarm data add`` never writes one.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath

from core.data_files import parse_registered
from scheduler.errors import ArtifactCorrupt, NotFound
from storage import datasets as registry
from storage.records import RegisteredDataset
from storage.store import Store
from workers.context import JobContext

STALE = 3600.0  # seconds: a temporary directory this old was left by an extraction that died


def local_data(ctx: JobContext, value: str) -> str:
    """The local path to load for a job's data param ``value``: ``value`` itself for a path, the registered
    dataset's local file or folder for a reference."""
    if parse_registered(value) is None:
        return value
    return local_copy(ctx.store, dataset_cache(ctx.settings.cache_dir), value)


def local_copy(store: Store, cache: Path, value: str) -> str:
    """``local_data`` with the store and this host's dataset cache (``dataset_cache``) given."""
    ref = parse_registered(value)
    if ref is None:
        return value
    name, sha = ref
    with store.session() as s:
        found = registry.find_version(s, name, sha)
    if found is None:
        raise NotFound(f"dataset {name!r} (sha256 {sha[:12]}) is no longer registered: it was deleted, or replaced "
                       "and this version is no longer kept; submit the batch again to use what is registered now")
    if found.is_folder and (cache / found.sha256).is_dir():  # extracted on this host already
        return str(cache / found.sha256)
    what = f"dataset {name!r} (sha256 {sha[:12]})"
    blob = store.artifacts.verified_path(found.uri, found.sha256, what)
    if not found.is_folder:
        return str(blob)
    return str(extracted(blob, found, cache, what))


def dataset_cache(blob_cache: Path) -> Path:
    """Where this host keeps registered folders extracted: ``datasets`` beside the blob cache."""
    return Path(blob_cache).parent / "datasets"


def extracted(archive: Path, dataset: RegisteredDataset, root: Path, what: str) -> Path:
    """The folder of ``dataset``'s ``archive`` (its verified blob), extracted under ``root`` once (see the
    module)."""
    target = root / dataset.sha256
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    _drop_stale(root)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        extract_archive(archive, tmp, what)
        os.chmod(tmp, 0o755)  # as a folder made with the usual umask: the host's other users may read it
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not another process's extraction finished first: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def extract_archive(archive: Path, into: Path, what: str) -> None:
    """Write the files of a dataset folder's archive into the empty folder ``into``; ArtifactCorrupt, naming
    ``what``, for a member that is not a plain file or folder with a relative name inside it."""
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for member in tar:
                parts = _member_parts(member, what)
                dest = into.joinpath(*parts)
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file's
                with source, open(dest, "xb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
    except FileExistsError as e:
        raise ArtifactCorrupt(f"{what}: its archive holds {Path(e.filename or '').name!r} twice: refused") from e
    except tarfile.TarError as e:
        raise ArtifactCorrupt(f"{what}: not a readable archive: {e}") from e


def _member_parts(member: tarfile.TarInfo, what: str) -> tuple[str, ...]:
    name = member.name
    parts = PurePosixPath(name).parts
    if not (member.isreg() or member.isdir()):
        kind = "a link" if member.issym() or member.islnk() else "a device or pipe"
        raise ArtifactCorrupt(f"{what}: its archive holds {kind} ({name!r}), which data add never writes: refused")
    if not parts or name.startswith("/") or ".." in parts or "\\" in name:
        raise ArtifactCorrupt(f"{what}: its archive holds the member {name!r}, which would be written outside its "
                              "folder: refused")
    return parts


def _drop_stale(root: Path) -> None:
    """Remove the temporary directories of extractions that died (a process killed midway)."""
    for entry in root.glob(".tmp-*"):
        try:
            if time.time() - entry.stat().st_mtime > STALE:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass
