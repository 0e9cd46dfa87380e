"""Write the app's home-screen icons (webmap/static/icons/icon-192.png, icon-512.png): a dark
blue square with a white 2 × 2 grid, as the favicon draws it, made with numpy and zlib (no
imaging library needed). Run again only to change them."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "webmap" / "static" / "icons"


def png(pixels: np.ndarray) -> bytes:
    """An RGB PNG of ``pixels`` (rows, columns, 3; uint8)."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def icon(size: int) -> np.ndarray:
    """The grid mark on blue, with the margin a maskable icon needs (the inner 80 % is safe)."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = (0x1F, 0x3A, 0x5F)
    lo, hi, line = int(size * 0.28), int(size * 0.72), max(2, size // 40)
    mid = size // 2
    for at in (lo, mid, hi):
        image[lo:hi + line, at - line // 2:at + line - line // 2] = 255
        image[at - line // 2:at + line - line // 2, lo:hi + line] = 255
    return image


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for size in (192, 512):
        (OUT / f"icon-{size}.png").write_bytes(png(icon(size)))
