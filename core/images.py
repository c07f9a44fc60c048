"""Render originals above their reconstructions as one PNG, for a job's artifacts. Pillow only, no Keras."""

from __future__ import annotations

import io

import numpy as np

GAP = 2  # pixels between images and between the two rows
GAP_VALUE = 255  # white gaps, so dark-background digits stay visibly separate


def comparison_grid_png(originals: np.ndarray, reconstructions: np.ndarray, scale: int = 3) -> bytes:
    """PNG bytes: ``originals`` in the top row, ``reconstructions`` below, each upscaled ``scale`` times.

    Both arrays are (n, h, w, 1) for greyscale or (n, h, w, 3) for RGB, floats in [0, 1] (clipped; NaN
    shows as black). The PNG is ``n * w * scale + (n - 1) * GAP`` wide and ``2 * h * scale + GAP`` high.
    Raises ValueError if the shapes differ or are not of that form, or if ``scale`` < 1.
    """
    from PIL import Image

    originals = np.asarray(originals)
    reconstructions = np.asarray(reconstructions)
    if originals.shape != reconstructions.shape:
        raise ValueError(f"originals and reconstructions differ in shape: {originals.shape} vs "
                         f"{reconstructions.shape}")
    if originals.ndim != 4 or originals.shape[-1] not in (1, 3) or 0 in originals.shape:
        raise ValueError(f"expected (n, h, w, 1|3) images with n, h, w > 0, got shape {originals.shape}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")

    n, h, w, channels = originals.shape
    cell_h, cell_w = h * scale, w * scale
    canvas = np.full((2 * cell_h + GAP, n * cell_w + (n - 1) * GAP, channels), GAP_VALUE, dtype=np.uint8)
    for row, images in enumerate((originals, reconstructions)):
        pixels = np.rint(np.clip(np.nan_to_num(images.astype(np.float64)), 0.0, 1.0) * 255).astype(np.uint8)
        # Nearest-neighbour upscaling by repetition keeps every pixel a crisp square.
        pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
        top = row * (cell_h + GAP)
        for i in range(n):
            left = i * (cell_w + GAP)
            canvas[top:top + cell_h, left:left + cell_w] = pixels[i]

    # Pillow infers the mode from the array: uint8 (h, w) is "L" (grey), (h, w, 3) is "RGB".
    image = Image.fromarray(canvas[..., 0] if channels == 1 else canvas)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def image_grid_png(images: np.ndarray, cols: int | None = None, scale: int = 2) -> bytes:
    """PNG bytes: ``images`` in a grid of ``cols`` columns (default ceil(sqrt(n))), row by row, 1px gaps.

    ``images`` is (n, h, w, 1) for greyscale or (n, h, w, 3) for RGB, floats in [0, 1] (clipped; NaN shows
    as black); each is upscaled ``scale`` times. With ``cols`` clipped to n and ``rows = ceil(n / cols)``, the
    PNG is ``cols * w * scale + cols - 1`` wide and ``rows * h * scale + rows - 1`` high; the gaps and the
    unused cells of the last row are GAP_VALUE. Raises ValueError for another layout, ``cols`` < 1 or
    ``scale`` < 1.
    """
    from PIL import Image

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or 0 in images.shape:
        raise ValueError(f"expected (n, h, w, 1|3) images with n, h, w > 0, got shape {images.shape}")
    if cols is not None and cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")

    gap = 1  # a grid of many small images needs thinner separators than the two-row comparison
    n, h, w, channels = images.shape
    cols = min(cols if cols is not None else int(np.ceil(np.sqrt(n))), n)
    rows = -(-n // cols)  # ceil(n / cols)
    cell_h, cell_w = h * scale, w * scale
    canvas = np.full((rows * cell_h + (rows - 1) * gap, cols * cell_w + (cols - 1) * gap, channels), GAP_VALUE,
                     dtype=np.uint8)
    pixels = np.rint(np.clip(np.nan_to_num(images.astype(np.float64)), 0.0, 1.0) * 255).astype(np.uint8)
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest-neighbour: crisp square pixels
    for i in range(n):
        top, left = (i // cols) * (cell_h + gap), (i % cols) * (cell_w + gap)
        canvas[top:top + cell_h, left:left + cell_w] = pixels[i]

    image = Image.fromarray(canvas[..., 0] if channels == 1 else canvas)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def grey_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 array (e.g. from ``core.dream.to_png_array``), as it is: one grey pixel each."""
    from PIL import Image

    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint8 or 0 in pixels.shape:
        raise ValueError(f"expected a non-empty 2-D uint8 array, got {pixels.dtype} of shape {pixels.shape}")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)  # fast: a dream writes one per iteration
    return buf.getvalue()


def grey_row_png(images: list[np.ndarray], gap: int = 4) -> bytes:
    """PNG bytes of equally sized 2-D uint8 images in one row, ``gap`` white pixels apart (a dream's iterations)."""
    if not images or any(np.shape(x) != np.shape(images[0]) for x in images):
        raise ValueError(f"expected one or more images of one shape, got shapes {[np.shape(x) for x in images]}")
    white = np.full((np.shape(images[0])[0], gap), GAP_VALUE, np.uint8)
    row = [np.asarray(images[0])]
    for x in images[1:]:
        row += [white, np.asarray(x)]
    return grey_png(np.concatenate(row, axis=1))
