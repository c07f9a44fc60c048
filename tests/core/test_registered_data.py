"""What core knows of a registered dataset: its reference in a job's params, its identity (that of a local copy of
the same file), and its recorded facts standing in for the file in memory estimates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.data_files import dataset_identity, input_sha256, parse_registered, registered_ref, table_shape
from core.errors import DataError
from core.memory import FACTS_KEY, DataShape, data_facts, data_shape
from tests.conftest import SHARED_DATA

SHA = "ab" * 32


def test_a_reference_names_a_dataset_and_its_version_and_nothing_else_parses_as_one() -> None:
    assert registered_ref("mnist", SHA) == f"dataset:mnist@{SHA}"
    assert parse_registered(f"dataset:mnist@{SHA}") == ("mnist", SHA)
    assert parse_registered("dataset:my_set.v2-1@" + SHA) == ("my_set.v2-1", SHA)
    for other in ["/data/mnist.npz", "mnist", f"dataset:mnist@{SHA[:-1]}", f"dataset:../x@{SHA}",
                  f"dataset:mnist@{SHA.upper()}", f"dataset:@{SHA}", f"dataset:mnist@{SHA}\n", None, 3]:
        assert parse_registered(other) is None, other


def test_a_registered_file_is_identified_as_a_local_copy_of_it(tmp_path: Path) -> None:
    local = SHARED_DATA / "wifi_localization.txt"
    sha = "76121abf412b961f474e72baa8a802241f3032e85590c6680dd5280b1af8e0ab"  # SOURCES.md
    assert dataset_identity("wifi", Path(registered_ref("rooms", sha))) == dataset_identity("wifi", local)
    assert input_sha256(registered_ref("photo", SHA)) == SHA  # nothing read
    assert input_sha256(str(local)) == sha
    assert dataset_identity("images", Path(registered_ref("pets", SHA))) == f"images:archive:{SHA}"


def test_recorded_facts_give_the_shape_the_file_would(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x_train=np.zeros((30, 20, 24, 3), np.uint8), y_train=np.zeros(30, np.int64),
             x_test=np.zeros((5, 20, 24, 3), np.uint8), y_test=np.zeros(5, np.int64))
    facts = data_facts(tmp_path / "x.npz")
    assert facts == {"arrays": {"x_train": [30, 20, 24, 3], "y_train": [30], "x_test": [5, 20, 24, 3],
                                "y_test": [5]}}
    by_file = data_shape({"dataset": "npz", "data_path": str(tmp_path / "x.npz")})
    ref = registered_ref("x", SHA)  # no such file here: the facts stand in for it
    recorded = data_shape({"dataset": "npz", "data_path": ref, FACTS_KEY: facts})
    assert recorded == by_file == DataShape(30, 5, (20, 24, 3))
    assert data_shape({"dataset": "npz", "data_path": ref}) is None  # without facts, nothing to tell
    faces = data_facts(SHARED_DATA / "olivetti_faces.npz")
    assert data_shape({"dataset": "npz", "data_path": ref, FACTS_KEY: faces, "test_size": 0.25}) == \
        DataShape(300, 100, (64, 64, 1))
    assert data_shape({"dataset": "images", "data_path": ref, FACTS_KEY: {"images": 50}, "image_size": 32}) == \
        DataShape(40, 10, (32, 32, 1))
    assert data_shape({"dataset": "wifi", "data_path": ref, FACTS_KEY: {"rows": 500}}) == DataShape(400, 100, (7,))
    assert data_facts(SHARED_DATA / "wifi_localization.txt") == {}


def test_a_table_is_every_row_checked(tmp_path: Path) -> None:
    assert table_shape(SHARED_DATA / "wifi_localization.txt") == (2000, 8)
    (tmp_path / "ragged.txt").write_text("1 2 3\n\n4 5 6\n7 8\n")
    with pytest.raises(DataError, match="ragged.txt: line 4: expected 3 integers"):
        table_shape(tmp_path / "ragged.txt")
    (tmp_path / "words.txt").write_text("1 2\nsecret words here\n")
    with pytest.raises(DataError, match="line 2") as info:
        table_shape(tmp_path / "words.txt")
    assert "secret" not in str(info.value)  # a file's contents are never quoted
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no rows"):
        table_shape(tmp_path / "empty.txt")
    (tmp_path / "binary.txt").write_bytes(b"1 2\n\xff\xfe\n")
    with pytest.raises(DataError, match="not a text file"):
        table_shape(tmp_path / "binary.txt")
