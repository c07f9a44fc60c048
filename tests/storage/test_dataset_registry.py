"""The datasets registry's SQL on SQLite and PostgreSQL: one row per name, a replaced version kept (as
``<name>@<sha256>``) while unfinished jobs name it, and dropped once none does."""

from __future__ import annotations

from sqlalchemy import update

from storage import batches
from storage import datasets as registry
from storage.models import JobRow
from storage.records import NewJob
from storage.status import JobStatus
from storage.store import Store

A, B = "a" * 64, "b" * 64


def _add(store: Store, name: str, sha: str, kind: str = "file") -> bool:
    with store.session() as s:
        return registry.add_dataset(s, name, kind, f"{name}.npz", f"sha256/{sha[:2]}/{sha}", sha, 100,
                                    {"format": "npz", "arrays": {"images": [10, 8, 8]}})


def _replace(store: Store, name: str, sha: str) -> list[str]:
    with store.session() as s:
        current = registry.get_dataset(s, name)
        assert current is not None
        registry.replace_dataset(s, current, "file", "new.npz", f"sha256/{sha[:2]}/{sha}", sha, 200, {"format": "npz"})
        return registry.prune_replaced(s)


def _job_naming(store: Store, ref: str) -> int:
    with store.session() as s:
        _, ids = batches.create_batch(s, "b", {}, [NewJob("t", "train", {"dataset": "npz", "data_path": ref},
                                                          "fp", "gpu")], [])
    return ids["t"]


def test_a_name_is_registered_once_with_its_meta(store: Store) -> None:
    assert _add(store, "faces", A)
    assert not _add(store, "faces", B)  # taken: the first stays, whatever the second holds
    with store.session() as s:
        found = registry.get_dataset(s, "faces")
        assert registry.get_dataset(s, "nope") is None
        assert [d.name for d in registry.list_datasets(s)] == ["faces"]
    assert found is not None
    assert (found.kind, found.sha256, found.bytes, found.filename) == ("file", A, 100, "faces.npz")
    assert found.meta == {"format": "npz", "arrays": {"images": [10, 8, 8]}}


def test_replacing_keeps_the_old_version_while_an_unfinished_job_names_it(store: Store) -> None:
    _add(store, "faces", A)
    job = _job_naming(store, f"dataset:faces@{A}")  # submitted before the replacement: it reads version A
    assert _replace(store, "faces", B) == []  # nothing dropped: the pending job needs A
    with store.session() as s:
        current = registry.get_dataset(s, "faces")
        assert current is not None and (current.sha256, current.bytes, current.filename) == (B, 200, "new.npz")
        assert [d.name for d in registry.list_datasets(s)] == ["faces"]  # the kept version is not listed...
        assert [d.name for d in registry.list_datasets(s, kept=True)] == ["faces", f"faces@{A}"]  # ...unless asked
        old = registry.find_version(s, "faces", A)
        assert old is not None and (old.sha256, old.uri, old.bytes) == (A, f"sha256/aa/{A}", 100)
        assert registry.find_version(s, "faces", B) == current
        assert registry.find_version(s, "faces", "c" * 64) is None
        assert registry.find_version(s, "other", A) is None
    with store.session() as s:  # the job ends: nothing unfinished names version A any more
        s.execute(update(JobRow).where(JobRow.id == job).values(status=JobStatus.SUCCEEDED.value))
        assert registry.prune_replaced(s) == [f"faces@{A}"]
        assert registry.find_version(s, "faces", A) is None
        assert registry.find_version(s, "faces", B) is not None


def test_a_replaced_version_no_job_names_is_dropped_at_once_and_replacing_back_keeps_one_row(store: Store) -> None:
    _add(store, "faces", A)
    _job_naming(store, "dataset:faces_x@" + A)  # another dataset's name ('_' is no wildcard here)
    assert _replace(store, "faces", B) == [f"faces@{A}"]
    _job_naming(store, f"dataset:faces@{B}")
    assert _replace(store, "faces", A) == []  # B is kept for its job
    with store.session() as s:
        assert [(d.name, d.sha256) for d in registry.list_datasets(s, kept=True)] == [("faces", A),
                                                                                      (f"faces@{B}", B)]
    assert _replace(store, "faces", B) == [f"faces@{A}"]  # back to B: the registered row holds it, no kept twin
    with store.session() as s:
        assert [(d.name, d.sha256) for d in registry.list_datasets(s, kept=True)] == [("faces", B)]
