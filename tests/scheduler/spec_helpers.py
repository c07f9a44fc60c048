"""Helpers shared by the spec tests: write a spec, load it, and check the one-line SpecError it raises."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from scheduler.errors import SpecError
from scheduler.spec import BatchSpec, JobSpec, load_spec


def write(tmp_path: Path, text: str, name: str = "batch.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, data_dir: Path | None = None, name: str = "batch.yaml") -> BatchSpec:
    return load_spec(write(tmp_path, text, name), data_dir or tmp_path / "no-data")


def spec_error(tmp_path: Path, text: str, data_dir: Path | None = None) -> SpecError:
    """Load a spec that must be refused; checks the error is one line naming the file, job and field."""
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path, data_dir or tmp_path / "no-data")
    e = info.value
    assert e.path == str(path)
    assert_one_line(e)
    return e


def assert_one_line(e: SpecError) -> None:
    text = str(e)
    assert "\n" not in text and "\r" not in text, text
    where = [e.path]
    if e.job is not None:
        where.append(f"job {e.job!r}")
    if e.field is not None:
        where.append(f"field {e.field!r}")
    assert text == ": ".join(where) + ": " + e.message


def check(e: SpecError, job: str | None, field: str | None, *fragments: str) -> None:
    assert (e.job, e.field) == (job, field), str(e)
    for fragment in fragments:
        assert fragment in e.message, str(e)


def names(spec: BatchSpec) -> list[str]:
    return [j.name for j in spec.jobs]


def by_name(spec: BatchSpec) -> dict[str, JobSpec]:
    return {j.name: j for j in spec.jobs}
