"""Datasets registered in the farm: ``latentfarm data add`` puts a dataset's file, or its folder as one archive, into
the artifact store and records it in the ``datasets`` table, so that neither the workers nor the machines that
submit need a copy of it (``storage.datasets``; ``workers.datasets`` reads one back).

``add_dataset(NAME, PATH)``:

1. NAME is a short identifier; PATH lies in the data roots (``LATENTFARM_DATA_DIR`` and the current directory), as
   a spec's files must, and is a dataset: an .npz of image arrays (Keras' x_train, y_train, x_test, y_test, or
   images and target), a jpg or png image (a dream's input), the WiFi table, or a folder of images. Anything else
   is a one-line UserError and nothing is written.
2. What validation needs is read now and kept in ``meta``: the .npz's array shapes, the image's size, the table's
   rows, the folder's image count (``core.memory.data_facts``), and the format (``npz``, ``image``, ``table`` or
   ``images``), which a spec's ``dataset`` must fit.
3. A folder becomes one archive (``write_archive``): the same folder always gives the same bytes, hence sha256.
4. The content is hashed and compared with what NAME holds: the same sha256 is a no-op that says so; other content
   a Conflict unless ``replace`` (the old version is kept for the jobs submitted with it: ``storage.datasets``).
5. The blob is stored, then the row written in one short transaction. A crash in between leaves a blob without a
   row, which ``latentfarm gc`` reclaims; never a row without its blob.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from core.data_files import FOLDER_DATASETS, check_image_file, file_sha256, table_shape, within_roots
from core.errors import DataError
from core.memory import IMAGE_SUFFIXES, data_facts
from scheduler.errors import Conflict, UserError
from storage import datasets as registry
from storage.records import RegisteredDataset
from storage.store import Store

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # used with fullmatch
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_KERAS = ("x_train", "y_train", "x_test", "y_test")
MAX_TABLE_BYTES = 64 << 20  # a text table read whole to be checked (the WiFi file is 60 kB)
WIFI_COLUMNS = 8  # the WiFi table's: 7 signal strengths, then the room
# What each dataset of a spec reads, as the format a registered dataset's meta records; None: any of them.
FORMATS = {"mnist": "npz", "olivetti": "npz", "npz": "npz", "wifi": "table", "images": "images"}
LAYOUTS = {"mnist": "keras", "olivetti": "images"}  # the .npz layout a dataset's loader needs
DESCRIBED = {"npz": "an .npz of image arrays", "image": "an image", "table": "a table", "images": "a folder of images"}


@dataclass(frozen=True)
class Added:
    """What ``add_dataset`` did: ``added``, ``unchanged`` (the same content was registered already) or
    ``replaced`` (``previous`` is the sha256 it held before)."""

    outcome: str
    dataset: RegisteredDataset
    previous: str | None = None


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise UserError(f"bad dataset name {name!r}: letters, digits, '_', '.', '-' (starting with a letter or "
                        "digit), at most 100 characters")


def add_dataset(store: Store, name: str, given: str, data_dir: Path, cwd: Path | None = None,
                replace: bool = False) -> Added:
    """Register the file or folder ``given`` (relative: to ``cwd``) as dataset ``name`` (see the module)."""
    check_name(name)
    cwd = cwd or Path.cwd()
    try:
        path = within_roots(given, cwd, (data_dir, cwd))
    except DataError as e:
        raise UserError(f"{given}: outside the data roots (LATENTFARM_DATA_DIR and the current directory): files "
                        "elsewhere cannot be added") from e
    try:
        if not path.exists():
            raise DataError(f"{given}: no such file or folder")
        if not (path.is_dir() or path.is_file()):  # reading a pipe would wait forever
            raise DataError(f"{given}: not a regular file or folder (a pipe, socket or device)")
        is_folder = path.is_dir()
        meta = inspect_folder(path) if is_folder else inspect_file(path)
    except DataError as e:
        raise UserError(str(e)) from e
    with tempfile.TemporaryDirectory(prefix="latentfarm-dataset-") as tmp:
        if is_folder:
            content = Path(tmp) / "archive.tar"
            with open(content, "wb") as out:
                sha = write_archive(path, out)
        else:
            content, sha = path, _sha256(path)
        with store.session() as s:
            current = registry.get_dataset(s, name)
        if current is not None and current.sha256 == sha:
            return Added("unchanged", current)
        if current is not None and not replace:
            raise _taken(current, sha)
        blob = store.artifacts.put_file(content)
    if blob.sha256 != sha:
        raise UserError(f"{given}: changed while it was being added: try again")
    filename, stored_as = path.name, "folder" if is_folder else "file"
    with store.session() as s:
        current = registry.get_dataset(s, name)
        if current is None and registry.add_dataset(s, name, stored_as, filename, blob.uri, sha, blob.bytes, meta):
            outcome, previous = "added", None
        else:  # the name is taken: replaced on purpose, or added meanwhile by another process
            current = current or registry.get_dataset(s, name)
            assert current is not None
            if current.sha256 == sha:
                return Added("unchanged", current)
            if not replace:
                raise _taken(current, sha)
            registry.replace_dataset(s, current, stored_as, filename, blob.uri, sha, blob.bytes, meta)
            outcome, previous = "replaced", current.sha256
        registry.prune_replaced(s)
        added = registry.get_dataset(s, name)
    assert added is not None
    return Added(outcome, added, previous)


def _taken(current: RegisteredDataset, sha: str) -> Conflict:
    return Conflict(f"dataset {current.name!r} is already registered with other content (sha256 "
                    f"{current.sha256[:12]}, this is {sha[:12]}): add it under another name, or pass --replace")


def _sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as e:
        raise UserError(f"{path}: cannot read it: {e.strerror or type(e).__name__}") from e


def registered(store: Store) -> dict[str, RegisteredDataset]:
    """The registered datasets by name, as a spec resolves them (the replaced versions kept aside are not)."""
    with store.session() as s:
        return {d.name: d for d in registry.list_datasets(s)}


# -- what a dataset is --

def inspect_file(path: Path) -> dict[str, Any]:
    """The meta of a dataset file: its format and what validation reads of it; DataError for a file that is none
    of an .npz of image arrays, an image, or the WiFi table."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise DataError(f"{path}: cannot read it: {e.strerror or type(e).__name__}") from e
    if head.startswith(_ZIP_MAGIC):
        return _inspect_npz(path)
    if _looks_like_table(head):
        return _inspect_table(path)
    try:
        width, height = check_image_file(path)
    except DataError as e:
        raise DataError(f"{path}: not a dataset: expected an .npz of image arrays, a jpg or png image, the WiFi "
                        "table or a folder of images") from e
    return {"format": "image", "width": width, "height": height}


def _inspect_npz(path: Path) -> dict[str, Any]:
    facts = data_facts(path)
    arrays = facts.get("arrays") or {}
    if all(k in arrays for k in _KERAS):
        layout = "keras"
    elif "images" in arrays and "target" in arrays:
        layout = "images"
    else:
        raise DataError(f"{path}: not a dataset: an .npz without the arrays x_train, y_train, x_test, y_test (or "
                        f"images, target); it has {', '.join(sorted(arrays)) or 'none readable'}")
    return {"format": "npz", "layout": layout, **facts}


def _looks_like_table(head: bytes) -> bool:
    """Whether a file's first line is a row of whitespace-separated integers (the WiFi table's)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    first = next((line for line in text.splitlines() if line.strip()), "")
    fields = first.split()
    return len(fields) >= 2 and all(f.lstrip("+-").isdigit() for f in fields)


def _inspect_table(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise DataError(f"{path}: not a dataset: a table over {MAX_TABLE_BYTES >> 20} MiB is not the WiFi table")
    rows, columns = table_shape(path)  # every row checked; DataError names the first bad line
    if columns != WIFI_COLUMNS:
        raise DataError(f"{path}: not a dataset: a table of {columns} columns; the WiFi table has {WIFI_COLUMNS} "
                        "(7 signal strengths and the room)")
    return {"format": "table", "rows": rows, "columns": columns}


def inspect_folder(path: Path) -> dict[str, Any]:
    """The meta of a folder of images: how many images (as the loader counts them) and class subfolders."""
    images = [p.relative_to(path) for p in _archived(path) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise DataError(f"{path}: not a dataset: no {', '.join(IMAGE_SUFFIXES)} images in the folder")
    classes = {p.parts[0] for p in images if len(p.parts) > 1}
    return {"format": "images", "images": len(images), "classes": len(classes)}


def fits(dataset: RegisteredDataset, wanted: str | None) -> str | None:
    """Why the registered ``dataset`` cannot be read as the spec's dataset ``wanted`` (None: as a dream's input
    image), or None when it can."""
    have = dataset.meta.get("format")
    need = "image" if wanted is None else FORMATS.get(wanted)
    what = "a dream's image" if wanted is None else wanted
    if need is None or (wanted in FOLDER_DATASETS) != dataset.is_folder or have != need:
        return f"the registered dataset {dataset.name!r} is {DESCRIBED.get(str(have), 'of another kind')}: " \
               f"{what} needs {DESCRIBED[need] if need else 'no file'}"
    layout = LAYOUTS.get(str(wanted))
    if layout is not None and dataset.meta.get("layout") != layout:
        arrays = ", ".join(_KERAS) if layout == "keras" else "images, target"
        return f"the registered dataset {dataset.name!r} is an .npz without the arrays {wanted} reads ({arrays})"
    return None


# -- a folder as one archive --

class _Hashing:
    """A write-only file that hashes what goes through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.written += len(data)
        return self.out.write(data)

    def tell(self) -> int:  # tarfile asks where it starts
        return self.written


def write_archive(folder: Path, out: BinaryIO) -> str:
    """Write ``folder`` to ``out`` as an uncompressed tar; returns its sha256.

    Deterministic: the same files (names and bytes) always give the same archive, whatever their times, owners
    and permissions or the order the file system lists them in: entries sorted by name, every file 0644, owned by
    0:0, dated 0 (PAX, so long names need no tricks). Only regular files go in, by their path relative to the
    folder; hidden files and folders (a name starting with '.') are left out, as the loader skips them. A link to
    a file inside the folder goes in as that file's bytes; a link leading out of the folder, a link to a folder,
    or a special file (a pipe, a device) is a DataError naming it.
    """
    sink = _Hashing(out)
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path in _archived(folder):
            name = path.relative_to(folder).as_posix()
            try:
                name.encode("utf-8")
            except UnicodeEncodeError as e:
                raise DataError(f"{path}: a file name that is not UTF-8 cannot be archived") from e
            info = tarfile.TarInfo(name)
            with open(path, "rb") as f:
                info.size = os.fstat(f.fileno()).st_size
                info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, 0, "", ""
                tar.addfile(info, f)
    return sink.hash.hexdigest()


def _archived(folder: Path) -> list[Path]:
    """The files ``write_archive`` archives, sorted by their relative name (see there for what is refused)."""
    root = Path(os.path.realpath(folder))
    found: list[Path] = []
    for top, dirs, files in os.walk(folder):
        here = Path(top)
        for d in list(dirs):
            if d.startswith("."):
                dirs.remove(d)
            elif (here / d).is_symlink():
                raise DataError(f"{here / d}: a link to a folder: archive its target, or copy it in")
        for f in files:
            path = here / f
            if f.startswith("."):
                continue
            real = Path(os.path.realpath(path))
            if path.is_symlink() and not real.is_relative_to(root):
                raise DataError(f"{path}: a link leading out of the folder")
            try:
                mode = os.stat(path).st_mode
            except OSError as e:
                raise DataError(f"{path}: cannot read it: {e.strerror or type(e).__name__}") from e
            if not stat.S_ISREG(mode):
                raise DataError(f"{path}: not a regular file (a pipe, socket or device)")
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def describe(meta: Mapping[str, Any]) -> str:
    """A few words on a registered dataset's content, from its meta."""
    fmt = meta.get("format")
    if fmt == "npz":  # the images: their labels' shapes follow from them
        arrays = meta.get("arrays") or {}
        return ", ".join(f"{k} {'x'.join(map(str, arrays[k]))}" for k in ("x_train", "x_test", "images")
                         if k in arrays)
    if fmt == "image":
        return f"{meta.get('width')} x {meta.get('height')} image"
    if fmt == "table":
        return f"{meta.get('rows')} rows"
    if fmt == "images":
        return f"{meta.get('images')} images" + (f" in {meta['classes']} classes" if meta.get("classes") else "")
    return ""
