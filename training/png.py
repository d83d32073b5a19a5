"""Write RGB images and grids as PNG with the standard library only (zlib), atomically."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np


def encode_png(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] → PNG bytes."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
    height, width, _ = image.shape
    rows = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


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
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_bytes(encode_png(image))
    os.replace(temporary, target)
