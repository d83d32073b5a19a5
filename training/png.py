"""Image grids, and PNG files written with Pillow, atomically."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .checkpoint import write_atomic


def grid(images: np.ndarray, columns: int, scale: int = 1, gap: int = 2) -> np.ndarray:
    """uint8 [N, H, W, 3] → one uint8 image, columns wide, each image enlarged scale times."""
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    count, height, width, _ = images.shape
    rows = -(-count // columns)
    out = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, np.uint8)
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        out[gap + r * (height + gap):gap + r * (height + gap) + height, gap + c * (width + gap):gap + c * (width + gap) + width] = image
    return out


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write image to path through a temporary file and a rename."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
    write_atomic(Path(path), lambda temporary: Image.fromarray(image).save(temporary, format="PNG"))
