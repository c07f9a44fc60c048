"""core.datasets beyond digits and mnist: wifi, olivetti, npz (both layouts), image folders, load_for, limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasets import Dataset, load_dataset, load_for
from core.errors import DataError
from core.kinds.data import DataParams
from core.kinds.train import TrainParams


def _check(data: Dataset, shape: tuple[int, ...], n_train: int, n_test: int) -> None:
    assert data.x_train.shape == (n_train, *shape) and data.x_test.shape == (n_test, *shape)
    assert data.x_train.dtype == np.float32 and data.x_test.dtype == np.float32
    assert data.y_train.shape == (n_train,) and data.y_test.shape == (n_test,)
    assert data.y_train.dtype == np.int64 and data.y_test.dtype == np.int64


# --- wifi ---

def test_wifi_is_tabular_and_split_stratified(shared_data: Path) -> None:
    data = load_dataset("wifi", shared_data / "wifi_localization.txt", test_size=0.25, seed=0)
    assert data.name == "wifi"
    _check(data, (7,), 1500, 500)
    raw = np.loadtxt(shared_data / "wifi_localization.txt", dtype=np.int64)
    # Raw signal strengths (not rescaled), rooms 1..4 become labels 0..3, 125 test rows per room.
    assert data.x_train.min() >= -98 and data.x_train.max() <= -10
    assert np.bincount(data.y_test).tolist() == [125] * 4
    assert sorted(map(tuple, np.vstack([data.x_train, data.x_test]).astype(np.int64))) == \
        sorted(map(tuple, raw[:, :7]))
    other = load_dataset("wifi", shared_data / "wifi_localization.txt", test_size=0.25, seed=1)
    assert not np.array_equal(other.x_test, data.x_test)  # the seed picks the split


@pytest.mark.parametrize(("line", "text"), [
    ("-64\t-56\t-61\t-66\t-71\t-82\t1", "expected 8 tab-separated integers ending with a room 1..4, got 7 "
                                        "fields"),  # a column short
    ("-64\t-56\t-61\tx\t-71\t-82\t-81\t1", "got field 4 not an integer"),  # where, never what: not quoted
    ("-64\t-56\t-61\t-66\t-71\t-82\t-81\t5", "got room 5"),  # no room 5
])
def test_wifi_bad_row_names_file_and_line(tmp_path: Path, line: str, text: str) -> None:
    path = tmp_path / "wifi.txt"
    good = "-63\t-60\t-60\t-67\t-76\t-85\t-84\t1\n"
    path.write_text(good * 3 + line + "\n" + good)
    with pytest.raises(DataError) as exc:
        load_dataset("wifi", path)
    message = str(exc.value)
    assert message.startswith(f"{path}: line 4: ") and text in message and "\n" not in message
    assert "-56" not in message  # the file's content is never quoted


def test_wifi_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "wifi.txt"
    path.write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        load_dataset("wifi", path)


# --- olivetti ---

def test_olivetti_scaled_like_sklearn_and_split_by_subject(shared_data: Path) -> None:
    data = load_dataset("olivetti", shared_data / "olivetti_faces.npz")
    _check(data, (64, 64, 1), 320, 80)
    assert np.bincount(data.y_test).tolist() == [2] * 40  # every subject: 8 train and 2 test faces
    both = np.concatenate([data.x_train, data.x_test])
    assert both.min() == 0.0 and both.max() == 1.0
    with np.load(shared_data / "olivetti_faces.npz") as raw:
        x = raw["images"].astype(np.float32)
    x -= x.min()
    x /= x.max()
    # Each loaded face is one of sklearn's float32 faces exactly (SOURCES.md: a first row of 0.3099, ...).
    index = {face.tobytes(): i for i, face in enumerate(x)}
    assert all(face[..., 0].tobytes() in index for face in data.x_train[:20])


def test_olivetti_resized(shared_data: Path) -> None:
    data = load_dataset("olivetti", shared_data / "olivetti_faces.npz", image_size=32, limit=5)
    _check(data, (32, 32, 1), 5, 5)
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0


def test_olivetti_wrong_file(shared_data: Path) -> None:
    with pytest.raises(DataError, match="not an olivetti_faces.npz file: missing key 'images'"):
        load_dataset("olivetti", shared_data / "mnist.npz")


# --- npz ---

def test_npz_keras_layout_keeps_its_split_and_channels(tmp_path: Path) -> None:
    path = tmp_path / "rgb.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (6, 16, 12, 3), dtype=np.uint8), y_train=np.arange(6),
             x_test=np.full((4, 16, 12, 3), 255, np.uint8), y_test=np.zeros(4, np.int32))
    data = load_dataset("npz", path)
    _check(data, (16, 12, 3), 6, 4)
    assert data.y_train.tolist() == list(range(6)) and (data.x_test == 1.0).all()
    with np.load(path) as raw:
        np.testing.assert_allclose(data.x_train, raw["x_train"] / 255.0, rtol=1e-6)
    small = load_dataset("npz", path, limit=2, image_size=8)
    _check(small, (8, 8, 3), 2, 2)


def test_npz_images_target_layout_is_split(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    images = np.linspace(0, 1, 40 * 8 * 8, dtype=np.float32).reshape(40, 8, 8)  # floats in [0, 1] are kept
    np.savez(path, images=images, target=np.repeat([0, 1], 20))
    data = load_dataset("npz", path, test_size=0.25)
    _check(data, (8, 8, 1), 30, 10)
    assert np.bincount(data.y_test).tolist() == [5, 5]
    assert np.isin(data.x_test[:, 0, 0, 0], images[:, 0, 0]).all()


@pytest.mark.parametrize(("arrays", "text"), [
    ({"x": np.zeros((2, 4, 4), np.uint8)}, "missing key 'x_train'; nor has it (images, target)"),
    ({"images": np.full((4, 4, 4), 2.0, np.float32), "target": np.zeros(4, np.int64)}, "outside [0, 1]"),
    ({"images": np.zeros((4, 4, 4, 2), np.uint8), "target": np.zeros(4, np.int64)}, "(n, h, w, 1|3)"),
    ({"images": np.zeros((4, 4, 4), np.uint8), "target": np.zeros(3, np.int64)}, "target has shape (3,)"),
    ({"images": np.zeros((4, 4, 4), np.uint8), "target": np.zeros(4, np.float32)}, "target has dtype float32"),
])
def test_npz_bad_layouts(tmp_path: Path, arrays: dict[str, np.ndarray], text: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as exc:
        load_dataset("npz", path)
    assert str(exc.value).startswith(f"{path}: not an image .npz file: ") and text in str(exc.value)


def test_npz_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    path.write_text("hello")
    with pytest.raises(DataError, match="not a zip archive"):
        load_dataset("npz", path)


# --- image folders ---

def _save(path: Path, size: tuple[int, int], value: int | tuple[int, int, int], mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_image_folder_labels_from_subfolders(tmp_path: Path) -> None:
    for i in range(4):
        _save(tmp_path / "cats" / f"c{i}.png", (30, 20), 255)
        _save(tmp_path / "dogs" / "deeper" / f"d{i}.JPG", (20, 30), 0)  # any depth, any case of suffix
    (tmp_path / "dogs" / "notes.txt").write_text("not an image, ignored")
    data = load_dataset("images", tmp_path, image_size=16, test_size=0.5)
    _check(data, (16, 16, 1), 4, 4)
    assert np.bincount(data.y_train).tolist() == [2, 2]  # cats -> 0, dogs -> 1 (sorted names)
    for x, y in zip(data.x_train, data.y_train, strict=True):
        assert np.allclose(x, 1.0 if y == 0 else 0.0, atol=0.02)


def test_image_folder_flat_rgb_centre_crop(tmp_path: Path) -> None:
    for i in range(3):
        img = Image.new("RGB", (60, 20), (0, 0, 255))  # blue sides ...
        img.paste((255, 0, 0), (20, 0, 40, 20))  # ... around a red centre square
        img.save(tmp_path / f"wide{i}.jpg", quality=95)
    data = load_dataset("images", tmp_path, color="rgb", image_size=10, test_size=0.3)
    _check(data, (10, 10, 3), 2, 1)
    assert (data.y_train == 0).all()  # no subfolders: one class
    centre = data.x_train[:, 2:8, 2:8]  # away from the crop's edges, where JPEG and Lanczos ring
    assert centre[..., 0].min() > 0.9 and centre[..., 2].max() < 0.1  # only the red centre is left
    grey = load_dataset("images", tmp_path, image_size=10, test_size=0.3)
    assert grey.x_train.shape == (2, 10, 10, 1)


def test_image_folder_default_size_and_limit(tmp_path: Path) -> None:
    for i in range(6):
        _save(tmp_path / f"{i}.png", (100, 120), 128)
    data = load_dataset("images", tmp_path, limit=2)
    _check(data, (96, 96, 1), 2, 2)


def test_image_folder_corrupt_file(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "good.png", (8, 8), 1)
    _save(tmp_path / "b" / "good.png", (8, 8), 1)
    bad = tmp_path / "a" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(DataError) as exc:
        load_dataset("images", tmp_path, test_size=0.5)
    assert str(exc.value).startswith(f"{bad}: not a readable image: ") and "\n" not in str(exc.value)


def test_image_folder_truncated_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "full.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:500])
    with pytest.raises(DataError, match="cut.png: not a readable image"):
        load_dataset("images", tmp_path)


def test_image_folder_empty_missing_or_mixed(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match="no .jpg, .jpeg, .png images"):
        load_dataset("images", tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        load_dataset("images", tmp_path / "nope")
    _save(tmp_path / "sub" / "a.png", (8, 8), 1)
    _save(tmp_path / "loose.png", (8, 8), 1)
    with pytest.raises(DataError, match="loose.png: an image directly in"):
        load_dataset("images", tmp_path)


# --- load_for and the common rules ---

def test_load_for_takes_the_params(shared_data: Path) -> None:
    params = DataParams(dataset="mnist", data_path=str(shared_data / "mnist.npz"), limit=20, image_size=32)
    data = load_for(params)
    _check(data, (32, 32, 1), 20, 20)
    # A TrainParams is DataParams too; its training seed does not move the data split, so an encode job
    # (which sees only the DataParams) gets the same split as the train job.
    a = load_for(TrainParams(dataset="digits", seed=0))
    b = load_for(TrainParams(dataset="digits", seed=5))
    np.testing.assert_array_equal(a.y_test, b.y_test)


def test_load_for_resolves_the_data_dir(shared_data: Path, tmp_path: Path) -> None:
    data = load_for(DataParams(dataset="wifi", limit=10), data_dir=shared_data)
    _check(data, (7,), 10, 10)
    with pytest.raises(DataError, match="olivetti data file not found"):
        load_for(DataParams(dataset="olivetti"), data_dir=tmp_path)
    with pytest.raises(DataError, match="olivetti: a path to its file is required"):
        load_for(DataParams(dataset="olivetti"))


def test_digits_size_and_split_options() -> None:
    data = load_dataset("digits", image_size=16, test_size=0.5, limit=30)
    _check(data, (16, 16, 1), 30, 30)
    assert len(load_dataset("digits", test_size=0.5).x_test) == 899


@pytest.mark.parametrize(("kwargs", "text"), [
    ({"color": "cmyk"}, "color must be"),
    ({"limit": 0}, "limit must be >= 1"),
])
def test_bad_options(kwargs: dict, text: str) -> None:
    with pytest.raises(DataError, match=text):
        load_dataset("digits", **kwargs)
