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
