"""The carving deep dream on an untrained CNN (no training needed: any map with a non-zero activation will do)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.dream import (
    BASE,
    DreamConfig,
    correction,
    dream_level,
    features_model,
    merge,
    oip,
    prepare_image,
    process_tile,
    resize,
    run_dream,
    standardize,
    tiles,
    to_png_array,
)

SIZE = 112  # BASE * 2**2: the smallest working size for 2 levels, to keep the tests quick
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model():
    import keras

    from core.models.cnn import build_cnn

    keras.utils.set_random_seed(0)
    return features_model(build_cnn(10))


@pytest.fixture
def image(shared_data: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(shared_data / "dream_input.jpg") as img:
        return prepare_image(np.asarray(img), SIZE)


def _active_map(model, image: np.ndarray) -> int:
    """The map most active on the downscaled image: an untrained net has dead maps with zero gradient."""
    acts = np.asarray(model(resize(image, BASE)[None, :, :, None], training=False))
    return int(acts.mean(axis=(0, 1, 2)).argmax())


def _config(map_index: int, **kw) -> DreamConfig:
    base = dict(levels=2, iterations=1, size=SIZE, maps=map_index, epochs={0: 4, 1: 2, 2: 1}, epsilon=0.05)
    return DreamConfig(**(base | kw))


def test_prepare_image_is_standardized_square(image: np.ndarray) -> None:
    assert image.shape == (SIZE, SIZE) and image.dtype == np.float32
    assert abs(float(image.mean())) < 1e-4 and abs(float(image.std()) - 1) < 1e-3


def test_oip_raises_the_mean_activation(model, image: np.ndarray) -> None:
    m = _active_map(model, image)
    x28 = resize(image, BASE)
    new, gain = oip(model, x28, m, epochs=5, epsilon=0.05, threshold=0.0)
    before = np.asarray(model(x28[None, :, :, None]))[..., m].mean()
    after = np.asarray(model(new[None, :, :, None]))[..., m].mean()
    assert gain > 0 and after > before
    assert after - before == pytest.approx(gain, rel=1e-3, abs=1e-5)


def test_run_dream_gains_and_standardized_output(model, image: np.ndarray) -> None:
    m = _active_map(model, image)
    result = run_dream(model, image, _config(m, iterations=2))
    assert len(result.iterations) == 2 and result.final is result.iterations[-1]
    assert [len(g["level_0"]) for g in result.gains] == [1, 1]
    assert [len(g["level_2"]) for g in result.gains] == [16, 16]
    assert result.gains[0]["level_0"][0] > 0
    final = result.final
    assert final.shape == (SIZE, SIZE) and final.dtype == np.float32
    assert abs(float(final.mean())) < 1e-4 and abs(float(final.std()) - 1) < 1e-3
    assert not np.allclose(final, image)
    png = to_png_array(final)
    assert png.dtype == np.uint8 and png.min() == 0 and png.max() == 255


def test_tiled_by_hand_equals_run_dream(model, image: np.ndarray) -> None:
    """What a farm does: one process_tile call per tile, one merge per level."""
    m = _active_map(model, image)
    config = _config({0: m, 1: [m, 0, m, 1], 2: m})
    expected = run_dream(model, image, config).final
    current = image
    for level in range(config.levels + 1):
        parts = []
        for index, (r, c, side) in enumerate(tiles(level, SIZE)):
            tile = current[r:r + side, c:c + side].copy()  # as a job would get it: a separate array
            new, _ = process_tile(model, tile, config.map_for(level, index), config.epochs_for(level),
                                  config.epsilon_for(level), config.threshold)
            parts.append((r, c, new))
        current = merge(current, parts)
    assert float(np.abs(current - expected).max()) < 1e-4


def test_bad_size_and_bad_map_raise(model, image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="112"):
        DreamConfig(levels=2, size=100).validate()
    with pytest.raises(ValueError, match="maps"):
        run_dream(model, image, _config(64))
    with pytest.raises(ValueError, match="64"):
        oip(model, resize(image, BASE), 64, 1, 0.05, 0.0)
    with pytest.raises(ValueError, match="level 2"):
        _config({0: 1, 1: 1}).validate()
    with pytest.raises(ValueError, match="working size"):
        run_dream(model, image[:56, :56], _config(0))
    assert DreamConfig(levels=2).size == 560


def test_config_per_level_values() -> None:
    config = DreamConfig(levels=1, size=56, maps={0: 3, 1: [5, 6]}, epochs={0: 7, 1: 2}, epsilon={0: 0.1, 1: 0.2})
    assert [config.map_for(1, i) for i in range(4)] == [5, 6, 5, 6]
    assert config.map_for(0, 0) == 3 and config.epochs_for(1) == 2 and config.epsilon_for(0) == 0.1


def test_correction_restores_the_original(image: np.ndarray) -> None:
    assert np.allclose(correction(image) + resize(resize(image, BASE), SIZE), image, atol=1e-5)


def test_tiles_cover_the_image_once() -> None:
    for level in range(3):
        cover = np.zeros((SIZE, SIZE), dtype=int)
        for r, c, side in tiles(level, SIZE):
            cover[r:r + side, c:c + side] += 1
        assert len(tiles(level, SIZE)) == 4 ** level and (cover == 1).all()


def test_merge_standardizes_and_keeps_input() -> None:
    img = np.arange(16, dtype=np.float32).reshape(4, 4)
    out = merge(img, [(0, 0, np.full((2, 2), 100, np.float32))])
    written = img.copy()
    written[:2, :2] = 100
    assert img[0, 0] == 0  # the input is not modified
    assert np.array_equal(out, standardize(written)) and out[0, 0] == out.max()


def test_importing_core_dream_leaves_keras_out() -> None:
    code = "import sys, core.dream; assert not {'keras', 'tensorflow'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_dream_level_zero_is_one_tile(model, image: np.ndarray) -> None:
    out, gains = dream_level(model, image, 0, _config(_active_map(model, image)))
    assert len(gains) == 1 and out.shape == image.shape
