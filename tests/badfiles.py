"""A corpus of good, odd and broken image files for testing every script that reads images.

``make_corpus(dir)`` writes the files and returns ``(good, bad)``: ``good`` lists files that
``wagi.imageio.load_image`` must load (odd colour modes, EXIF rotation, animation, a JPEG named
``.png``...), ``bad`` maps each file that must fail to a substring of the expected one-line reason.

The unreadable-permission file is written always but listed as bad only when the tests do not run as
root: root reads a ``chmod 000`` file anyway, so there it is listed as good.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

SIDE_W, SIDE_H = 48, 40  # small, non-square, above wagi.imageio.MIN_SIDE
EXIF_ORIENTATION_TAG = 0x0112
ROTATE_90_CW = 6  # EXIF orientation value: display after rotating 90 degrees clockwise
BOMB_SIDE = 100_000  # 1e10 pixels: over twice Pillow's limit, so Pillow refuses at open
LARGE_SIDE = 10_000  # 1e8 pixels: over MAX_PIXELS, under Pillow's hard limit (only our check stops it)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG file from raw parts: IHDR with the given header, one IDAT with ``idat``, IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def rgb16_png_bytes(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one) from a ``(H, W, 3)`` uint16 array."""
    h, w, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    return png_bytes(w, h, 16, 2, zlib.compress(rows))


def noise_rgb(w: int = SIDE_W, h: int = SIDE_H, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def make_corpus(root: str) -> Tuple[List[str], Dict[str, str]]:
    """Write the corpus into folder ``root`` (created) and return ``(good paths, {bad path: reason})``."""
    os.makedirs(root, exist_ok=True)
    p = lambda name: os.path.join(root, name)  # noqa: E731
    good: List[str] = []
    bad: Dict[str, str] = {}
    w, h = SIDE_W, SIDE_H
    rgb = noise_rgb()
    grey = np.tile(np.linspace(0, 1, w), (h, 1))

    # Plain formats.
    for fmt, name in [("PNG", "plain.png"), ("JPEG", "plain.jpg"), ("BMP", "plain.bmp"), ("WEBP", "plain.webp"),
                      ("TIFF", "plain.tiff"), ("PNG", "UPPER_CASE.PNG")]:
        good.append(_write(p(name), encoded(rgb, fmt)))
    good.append(_write(p("jpeg_inside.png"), encoded(rgb, "JPEG")))  # wrong extension, valid content
    good.append(_write(p("small_12px.png"), encoded(noise_rgb(12, 12), "PNG")))  # upscaled, not rejected

    # Odd colour modes that must convert.
    modes = {
        "mode_1.png": Image.fromarray(grey > 0.5),
        "mode_L.png": Image.fromarray((grey * 255).astype(np.uint8)),
        "mode_LA.png": Image.fromarray((grey * 255).astype(np.uint8)).convert("LA"),
        "mode_P.png": rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
        "mode_RGBA.png": rgb.convert("RGBA"),
        "mode_I16.png": Image.fromarray((grey * 65535).astype(np.uint16)),
        # Built from bytes: Pillow's convert("I;16B") clips to 255.
        "mode_I16B.tif": Image.frombytes("I;16B", (w, h), (grey * 65535).astype(">u2").tobytes()),
        "mode_I.tif": Image.fromarray((grey * 65535).astype(np.int32)),
        "mode_I_wide.tif": Image.fromarray((grey * 1e6 - 5e5).astype(np.int32)),
        "mode_F.tif": Image.fromarray(grey.astype(np.float32)),
        "mode_F_wide.tif": Image.fromarray((grey * 300 - 20).astype(np.float32)),
        "mode_PA.tif": rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).convert("PA"),
        "mode_CMYK.jpg": rgb.convert("CMYK"),
        "mode_CMYK.tif": rgb.convert("CMYK"),
    }
    for name, img in modes.items():
        fmt = {"png": "PNG", "tif": "TIFF", "jpg": "JPEG"}[name.rsplit(".", 1)[1]]
        good.append(_write(p(name), encoded(img, fmt)))
    p_trans = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    good.append(_write(p("mode_P_transparency.png"), encoded(p_trans, "PNG", transparency=0)))
    good.append(_write(p("rgb16.png"), rgb16_png_bytes(np.asarray(rgb).astype(np.uint16) * 257)))

    # EXIF orientation 6 on a landscape JPEG: loads as portrait.
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = ROTATE_90_CW
    good.append(_write(p("exif_rotated.jpg"), encoded(rgb, "JPEG", exif=exif.tobytes())))

    # Several frames: the first one is used.
    frames = [Image.new("RGB", (w, h), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    good.append(_write(p("animated.gif"), encoded(frames[0], "GIF", save_all=True, append_images=frames[1:],
                                                    duration=100, loop=0)))
    good.append(_write(p("multipage.tif"), encoded(frames[0], "TIFF", save_all=True, append_images=frames[1:])))

    # Permissions: chmod 000 blocks reads for normal users only.
    unreadable = _write(p("unreadable.png"), encoded(rgb, "PNG"))
    os.chmod(unreadable, 0)
    if IS_ROOT:
        good.append(unreadable)
    else:
        bad[unreadable] = "permission denied"

    # Broken files.
    png_data, jpg_data = encoded(rgb, "PNG"), encoded(rgb, "JPEG")
    bad[_write(p("empty.png"), b"")] = "empty file"
    bad[_write(p("truncated.png"), png_data[: len(png_data) * 6 // 10])] = "truncated"
    bad[_write(p("truncated.jpg"), jpg_data[: len(jpg_data) // 2])] = "truncated"
    bad[_write(p("header_only.png"), png_data[:33])] = "truncated"  # signature + IHDR, no pixel data
    bad[_write(p("random_bytes.jpg"), np.random.default_rng(1).bytes(2000))] = "not a supported image"
    bad[_write(p("text.png"), b"this is a text file, not an image\n" * 20)] = "not a supported image"
    bad[_write(p("page.jpg"), b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n")] = "not a supported image"
    bad[_write(p("postscript.png"), b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 48 40\nshowpage\n")] = (
        "not a supported image"
    )
    garbage_idat = np.random.default_rng(2).bytes(300)
    bad[_write(p("corrupt_data.png"), png_bytes(w, h, 8, 2, garbage_idat))] = "corrupt image data"
    os.makedirs(p("folder.png"), exist_ok=True)
    bad[p("folder.png")] = "is a directory"
    bad[_write(p("tiny_1x1.png"), encoded(Image.new("RGB", (1, 1)), "PNG"))] = "too small"
    bad[_write(p("tiny_4x4.jpg"), encoded(Image.new("RGB", (4, 4)), "JPEG"))] = "too small"
    tiny_data = zlib.compress(b"\x00" * 16)
    bad[_write(p("bomb.png"), png_bytes(BOMB_SIDE, BOMB_SIDE, 8, 2, tiny_data))] = "too large"
    bad[_write(p("large_header.png"), png_bytes(LARGE_SIDE, LARGE_SIDE, 8, 2, tiny_data))] = "too large"
    nan_img = Image.fromarray(np.full((h, w), np.nan, dtype=np.float32))
    bad[_write(p("nan_values.tif"), encoded(nan_img, "TIFF"))] = "non-finite"

    # Not images by extension: skipped by folder scans, never listed.
    _write(p("notes.txt"), b"not an image\n")
    _write(p(".hidden.png"), png_data)
    return sorted(good), dict(sorted(bad.items()))
