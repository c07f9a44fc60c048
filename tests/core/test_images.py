"""core.images: the comparison grid decodes, has the documented size and puts each image where expected."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.images import GAP, GAP_VALUE, comparison_grid_png, grey_row_png


def _decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    image.load()
    return image


def test_grey_grid_size_and_content() -> None:
    rng = np.random.default_rng(0)
    originals = rng.random((4, 28, 28, 1)).astype(np.float32)
    reconstructions = np.zeros_like(originals)
    reconstructions[2] = 1.0
    image = _decode(comparison_grid_png(originals, reconstructions, scale=3))
    assert image.mode == "L"
    assert image.size == (4 * 28 * 3 + 3 * GAP, 2 * 28 * 3 + GAP)  # (width, height)
    pixels = np.asarray(image)
    # Top-left cell is the first original, upscaled by repeating each pixel 3x3.
    expected = np.rint(originals[0, :, :, 0] * 255).astype(np.uint8).repeat(3, 0).repeat(3, 1)
    np.testing.assert_array_equal(pixels[:84, :84], expected)
    # Bottom row: the third reconstruction is white, the first black; the gaps are GAP_VALUE.
    left = 2 * (84 + GAP)
    assert (pixels[84 + GAP:, left:left + 84] == 255).all()
    assert (pixels[84 + GAP:, :84] == 0).all()
    assert (pixels[84:84 + GAP, :] == GAP_VALUE).all()
    assert (pixels[:, 84:84 + GAP] == GAP_VALUE).all()


def test_rgb_grid_and_clipping() -> None:
    originals = np.full((2, 5, 6, 3), 2.0)  # out of range: clipped to white
    reconstructions = np.full((2, 5, 6, 3), -1.0)  # clipped to black
    image = _decode(comparison_grid_png(originals, reconstructions, scale=1))
    assert image.mode == "RGB"
    assert image.size == (2 * 6 + GAP, 2 * 5 + GAP)
    pixels = np.asarray(image)
    assert (pixels[:5, :6] == 255).all() and (pixels[5 + GAP:, :6] == 0).all()


def test_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        comparison_grid_png(np.zeros((10, 28, 28, 1)), np.zeros((9, 28, 28, 1)))


@pytest.mark.parametrize("shape", [(10, 28, 28), (10, 28, 28, 2), (0, 28, 28, 1)])
def test_bad_layouts(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected"):
        comparison_grid_png(np.zeros(shape), np.zeros(shape))


def test_bad_scale() -> None:
    with pytest.raises(ValueError, match="scale"):
        comparison_grid_png(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4, 1)), scale=0)


def test_grey_row_png_puts_images_side_by_side_with_white_gaps() -> None:
    a, b = np.zeros((5, 3), np.uint8), np.full((5, 3), 100, np.uint8)
    with Image.open(io.BytesIO(grey_row_png([a, b], gap=2))) as im:
        pixels = np.asarray(im)
    assert pixels.shape == (5, 8)
    assert (pixels[:, :3] == 0).all() and (pixels[:, 3:5] == 255).all() and (pixels[:, 5:] == 100).all()
    with pytest.raises(ValueError, match="of one shape"):
        grey_row_png([a, np.zeros((4, 3), np.uint8)])
