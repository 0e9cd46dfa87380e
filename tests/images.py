"""Real images for the photo tests, made here (GDAL encodes them; nothing is downloaded): a
JPEG and a PNG, EXIF with a GPS position, and PNGs whose header claims more pixels than
gridplan takes."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np


def encode(pixels: np.ndarray, driver: str = "JPEG") -> bytes:
    """``pixels`` (bands, rows, columns; uint8) as a JPEG, PNG or WebP file."""
    from rasterio.io import MemoryFile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not georeferenced"
        with MemoryFile() as out:
            with out.open(driver=driver, width=pixels.shape[2], height=pixels.shape[1],
                          count=pixels.shape[0], dtype="uint8") as dst:
                dst.write(pixels)
            return out.read()


def decode(data: bytes) -> tuple[np.ndarray, dict]:
    """The pixels and the metadata (EXIF tags among them) GDAL reads from an image file."""
    from rasterio.io import MemoryFile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with MemoryFile(data) as memory, memory.open() as src:
            return src.read(), src.tags()


def picture(width: int, height: int) -> np.ndarray:
    """A test card: a red band along the top, a gradient below (so resizing has something to
    average)."""
    pixels = np.zeros((3, height, width), dtype=np.uint8)
    pixels[1] = (np.arange(width) * 255 // max(width - 1, 1)).astype(np.uint8)[None, :]
    pixels[:, : max(height // 20, 1), :] = np.array([255, 0, 0], dtype=np.uint8)[:, None, None]
    return pixels


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` × ``height`` (1-bit grey), with a few rows of data:
    a few hundred bytes that a decoder trusting the header would allocate gigabytes for."""
    rows = zlib.compress((b"\0" + b"\0" * ((width + 7) // 8)) * 4)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b""))


def blank_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit grey PNG of ``width`` × ``height``, all black (it compresses to
    about a thousandth of its pixels)."""
    row = b"\0" + b"\0" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b""))


#: where the test photos say they were taken: 30°35′N 114°17′E (Wuhan)
LATITUDE, LONGITUDE = (30, 35, 0), (114, 17, 0)


def _exif(orientation: int = 1) -> bytes:
    """An APP1 EXIF segment: IFD0 with the orientation and a GPS IFD with a position."""

    def entry(tag: int, kind: int, count: int, value: bytes) -> bytes:
        return struct.pack("<HHI", tag, kind, count) + value

    gps_at = 8 + 2 + 2 * 12 + 4
    numbers_at = gps_at + 2 + 4 * 12 + 4
    ifd0 = struct.pack("<H", 2) + entry(0x0112, 3, 1, struct.pack("<HH", orientation, 0)) \
        + entry(0x8825, 4, 1, struct.pack("<I", gps_at)) + struct.pack("<I", 0)
    gps = struct.pack("<H", 4) + entry(0x0001, 2, 2, b"N\0\0\0") \
        + entry(0x0002, 5, 3, struct.pack("<I", numbers_at)) + entry(0x0003, 2, 2, b"E\0\0\0") \
        + entry(0x0004, 5, 3, struct.pack("<I", numbers_at + 24)) + struct.pack("<I", 0)
    rationals = b"".join(struct.pack("<II", v, 1) for v in (*LATITUDE, *LONGITUDE))
    body = b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd0 + gps + rationals
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def with_gps(jpeg: bytes, orientation: int = 1) -> bytes:
    """``jpeg`` with an EXIF segment holding a GPS position (and ``orientation``), as a phone
    camera writes one."""
    return jpeg[:2] + _exif(orientation) + jpeg[2:]


JPEG = encode(picture(64, 48))
PNG = encode(picture(40, 30), "PNG")
