"""Image input and output for every WaGI script: discovery, loading, saving, batching, datasets.

One module owns how files on disk become tensors and back, so that ``invert.py``, ``edit.py``,
``eval_subbands.py`` and the training datasets agree on colour handling, resizing and errors.

Entry points: :func:`find_images` (files, folders, globs -> :class:`ImageItem` list),
:func:`load_image`, :func:`iter_batches` with a :class:`LoadReport` (scripts),
:class:`ImageFolderDataset` (training), :func:`save_image`, :func:`save_strip` and
:func:`check_output_not_input` / :class:`ProtectedPaths` (outputs).

Tensors
    Every loaded image is a ``float32`` tensor of shape ``(3, size, size)`` with values in ``[-1, 1]``
    (``-1`` black, ``+1`` white); batches are ``(B, 3, size, size)``. :func:`save_image` takes the same
    range back.

Errors
    A file that cannot become such a tensor raises :class:`ImageLoadError`, whose message is one line
    ``"<path>: cannot read image: <reason>"`` (reasons: file not found, is a directory, permission denied,
    empty file, not a supported image, truncated file, corrupt image data, image too small, image too
    large, unsupported colour mode, non-finite pixel values). Scripts print that line, go on with the
    other files (:func:`iter_batches` does it for them) and exit non-zero when anything failed.
    Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left at its default ``False``: a truncated file is
    an error, never a half-grey image.

Colour modes (all converted to RGB)
    ========================  =====================================================================
    1, L, P, RGB, CMYK,       Pillow's conversion to RGB (CMYK: the naive formula, ignoring any ICC
    YCbCr, LAB, HSV           profile; LAB: CIELab to sRGB).
    RGBA, LA, PA, RGBa,       composited over ``background`` (default white, ``WHITE``); a palette or
    P/L/RGB + transparency    grey/RGB image with a transparency key counts as having alpha.
    I;16, I;16B, I;16L        16-bit grey: ``value / 65535`` (never clipped to 8 bit).
    I (32-bit int)            ``value / 65535`` when every value lies in [0, 65535] (how Pillow opens
                              16-bit grey PNG/TIFF in several versions); otherwise min-max rescaled.
    F (32-bit float)          used as is when every value lies in [0, 1]; otherwise min-max rescaled.
    ========================  =====================================================================

    A transparency key on a 16-bit/32-bit grey image is ignored. EXIF orientation is applied
    (``ImageOps.exif_transpose``) before anything else, so a portrait phone photo stays portrait.
    Animated GIF/WebP/PNG and multi-page TIFF files contribute their first frame only.

Size
    Images with a side under ``MIN_SIDE`` px are rejected; larger ones are resized up or down.
    Two limits are checked from the header, before any pixel is decoded: more than ``MAX_PIXELS``
    pixels (decompression-bomb guard) or a long side more than ``MAX_ASPECT`` times the short side
    ("image too elongated"). The environment variables ``WAGI_MAX_IMAGE_PIXELS`` and
    ``WAGI_MAX_IMAGE_ASPECT`` (positive integers) change them for every script and dataset; the
    ``max_pixels`` / ``max_aspect`` arguments for one call. Pillow's own guard still rejects anything
    above ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (about 179 million pixels) whatever the setting.
    Resize policies (all bicubic with antialiasing, on float values, clamped to the input range):

    - ``'center_crop'`` (default): scale so the *short* side equals ``size``, then crop the centre
      ``size x size``. Keeps the aspect ratio, loses the borders of the long side.
    - ``'resize'``: scale to ``size x size`` directly. Keeps everything, distorts a non-square image.
    - ``'pad'``: scale so the *long* side equals ``size``, then pad the short side symmetrically with
      ``background``. Keeps everything and the aspect ratio.

    An image that already has the target size is not resampled (values stay exact). An image much
    larger than needed is first shrunk by an integer factor to no less than ``REDUCING_GAP`` times
    the final size (JPEG: decoded at 1/2, 1/4 or 1/8 scale by libjpeg; every other mode: a box filter
    in Pillow, premultiplied by alpha where there is alpha), which makes big photos several times faster
    to load and keeps the float work per image a few times the output size. With both limits at their
    defaults, loading any single file at ``size`` 128 adds at most about 0.9 GiB to a process (an
    8192 x 8192 WebP, whose decoder holds three full-size copies; README.md lists measured figures).

Saving
    :func:`save_image` writes atomically (:func:`wagi.fileio.atomic_write`),
    creates parent folders, refuses to replace an existing file unless ``overwrite=True`` (the
    ``--overwrite`` flag of the scripts), and refuses to write onto any input image.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.utils import make_grid

from wagi.fileio import PathLike, atomic_write

logger = logging.getLogger(__name__)


IMAGE_EXTENSIONS: Tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
# Pillow plugins allowed to decode: the formats above (the JPEG plugin also opens MPO phone photos).
# Restricting them keeps exotic decoders (EPS runs Ghostscript) away from untrusted files.
PILLOW_FORMATS: Tuple[str, ...] = ("PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF")

POLICIES: Tuple[str, ...] = ("center_crop", "resize", "pad")
MIN_SIDE = 8  # below this an image is an icon or a broken thumbnail: upscaling would invent all detail
# Decoded pixels allowed per image: 8192 x 8192. Decoding holds several full-size copies (WebP: libwebp's
# RGBA frame, Pillow's copy of it and the image, ~11 bytes per pixel), which at this size keeps invert.py
# with the 128 px models under 2 GB for any single input; Pillow's own threshold (89 M pixels) did not.
MAX_PIXELS = 8192 * 8192
# A side more than this many times the other is a banner or a forged header, never a face photo; it also
# bounds the float intermediate of the resize (a 'center_crop' scales the short side to S, so the long
# side becomes S * aspect): at S = 128 that is 128 x 4096 px, 6 MiB.
MAX_ASPECT = 32
# The documented environment variables that change the two limits for every script and dataset.
MAX_PIXELS_ENV = "WAGI_MAX_IMAGE_PIXELS"
MAX_ASPECT_ENV = "WAGI_MAX_IMAGE_ASPECT"
WHITE: Tuple[int, int, int] = (255, 255, 255)
RESIZE_INTERPOLATION = InterpolationMode.BICUBIC
UINT16_MAX = 65535
JPEG_QUALITY = 95  # visually lossless for the comparison images the scripts write
# Large images are first shrunk by an integer factor (libjpeg DCT scaling for JPEG, a box filter
# otherwise) to no less than this many times the final size, then resampled bicubically: the same
# two-stage scheme as Pillow's thumbnail(), visually identical and several times faster on photos.
REDUCING_GAP = 2.0

_HIGH_BIT_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# Modes that Pillow's reduce() averages correctly (it premultiplies RGBA/LA by alpha itself); any
# other mode is converted to RGB(A) or 32-bit grey first, so no image is ever resampled at full size in float.
_REDUCIBLE_MODES = ("L", "RGB", "CMYK", "YCbCr", "RGBA", "LA", "I", "F")


class _FromEnvironment:
    """Default of a size limit: the environment variable if set, else the module constant."""

    def __repr__(self) -> str:
        return "<from environment>"


FROM_ENV = _FromEnvironment()


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
class ImageIOError(Exception):
    """Base class of the errors of this module; each message is one line naming the problem."""


class ImageLoadError(ImageIOError):
    """A file that cannot be loaded as an image. ``str(err) == f"{path}: cannot read image: {reason}"``."""

    def __init__(self, path: PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the decoder said
        super().__init__(f"{self.path}: cannot read image: {self.reason}")

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))


class InputNotFoundError(ImageIOError):
    """An input path, folder or glob that yields no image."""


class OutputExistsError(ImageIOError):
    """The output file exists and replacing it was not asked for."""


class OutputIsInputError(ImageIOError):
    """The output path is one of the input images."""


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageItem:
    """One input image: ``path`` is absolute; ``rel`` (``/``-separated) is its path relative to the
    folder it was found under, or its file name when given directly. Outputs reuse ``rel``."""

    path: str
    rel: str

    def output_path(self, out_dir: PathLike, ext: Optional[str] = ".png", suffix: str = "") -> str:
        """``out_dir/<rel without extension><suffix><ext>`` (``ext=None`` keeps the input's extension)."""
        stem, in_ext = os.path.splitext(self.rel)
        return os.path.join(os.fspath(out_dir), *(stem + suffix + (in_ext if ext is None else ext)).split("/"))


def is_image_file(name: PathLike) -> bool:
    """True when the file name ends with one of ``IMAGE_EXTENSIONS`` (any case)."""
    return os.fspath(name).lower().endswith(IMAGE_EXTENSIONS)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")  # also skips macOS "._x.jpg" resource forks and our own temp files


OUTPUT_MARKER = ".wagi-outputs"  # in every folder a script writes images to: never rescanned as input


def mark_output_folder(folder: PathLike) -> None:
    """Create ``folder`` with an ``OUTPUT_MARKER`` file, so that a later scan of a parent folder leaves these
    outputs out of its inputs (they are not photos to invert or edit again). Naming the folder itself as an
    input still reads it."""
    marker = os.path.join(os.fspath(folder), OUTPUT_MARKER)
    if not os.path.lexists(marker):
        atomic_write(marker, "images written by WaGI; folder scans of a parent folder skip this folder\n",
                     durable=False)


def _is_output_folder(path: str) -> bool:
    return os.path.lexists(os.path.join(path, OUTPUT_MARKER))


def _under_output_folder(path: str, base: str, excluded: Sequence[str]) -> bool:
    """Whether ``path`` (a glob match) is, or lies below, an output folder that is not ``base`` or above it."""
    stop = os.path.realpath(base)
    here = os.path.realpath(path if os.path.isdir(path) else os.path.dirname(path) or ".")
    while here != stop and here.startswith(stop.rstrip(os.sep) + os.sep):
        if here in excluded or _is_output_folder(here):
            return True
        here = os.path.dirname(here)
    return False


def _scan_folder(root: str, recursive: bool, excluded: Sequence[str] = ()) -> List[Tuple[str, str]]:
    """(absolute path, rel) of image files under ``root``; hidden files and folders, sub-folders holding an
    ``OUTPUT_MARKER`` and folders whose real path is in ``excluded`` are skipped (``root`` itself never)."""
    found = []
    seen_dirs: Set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop or a folder linked twice
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(
            d for d in dirnames if not _is_hidden(d) and not _is_output_folder(os.path.join(dirpath, d))
            and os.path.realpath(os.path.join(dirpath, d)) not in excluded) if recursive else []
        for name in filenames:
            if _is_hidden(name) or not is_image_file(name):
                continue
            full = os.path.join(dirpath, name)
            if os.path.isdir(full):
                continue
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            found.append((os.path.abspath(full), rel))
    return sorted(found, key=lambda pr: pr[1])


def _has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard: matches are made relative to it."""
    parts = pattern.replace(os.sep, "/").split("/")
    fixed = []
    for part in parts[:-1]:
        if _has_magic(part):
            break
        fixed.append(part)
    if not fixed:
        return "."
    base = "/".join(fixed)
    return base if base else "/"


def _unique_rel(rel: str, taken: Set[str]) -> str:
    if rel not in taken:
        return rel
    stem, ext = os.path.splitext(rel)
    k = 2
    while f"{stem}__{k}{ext}" in taken:
        k += 1
    return f"{stem}__{k}{ext}"


def find_images(
    inputs: Union[PathLike, Sequence[PathLike]],
    recursive: bool = True,
    *,
    missing: str = "error",
    log: Callable[[str], None] = logger.warning,
    exclude: Sequence[PathLike] = (),
) -> List[ImageItem]:
    """Expand files, folders and glob patterns into a list of :class:`ImageItem`.

    - A folder contributes its image files (by extension, ``IMAGE_EXTENSIONS``; recursively unless
      ``recursive=False``; hidden names skipped), ``rel`` relative to the folder.
    - A file given by name is always included, whatever its extension (loading fails clearly if it is
      not an image); ``rel`` is its file name.
    - A glob (``*``, ``?``, ``[``; ``**`` spans folders) contributes matching image files, and the
      images of matching folders, ``rel`` relative to the glob's folder part before the first wildcard.

    Order: inputs in the given order, each input's images sorted by ``rel``. The same file reached
    twice (also via a symlink) is kept once, at its first occurrence. Two different files with the same
    ``rel`` would write the same output, so later ones get ``__2``, ``__3``... before the extension.

    Outputs are not inputs: while scanning a folder, sub-folders that hold an ``OUTPUT_MARKER`` (written by
    :func:`mark_output_folder` into every output folder of the scripts) and the folders in ``exclude`` (the
    output folder of the current run) are skipped; a folder named as an input itself is always read.

    A path that does not exist, a glob without a match and a folder without images are problems:
    ``missing='error'`` raises :class:`InputNotFoundError` naming all of them on one line;
    ``missing='warn'`` logs one line each and goes on. Finding no image at all always raises.
    """
    if missing not in ("error", "warn"):
        raise ValueError(f"missing must be 'error' or 'warn', got {missing!r}")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [os.fspath(p) for p in inputs]
    if not inputs:
        raise InputNotFoundError("no input given: pass image files, folders or glob patterns")

    problems: List[str] = []
    candidates: List[Tuple[str, str]] = []
    excluded = [os.path.realpath(os.fspath(e)) for e in exclude]
    for raw in inputs:
        if os.path.isdir(raw):
            hits = _scan_folder(raw, recursive, excluded)
            if not hits:
                problems.append(f"{raw}: folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        elif os.path.lexists(raw):
            hits = [(os.path.abspath(raw), os.path.basename(raw))]
        elif _has_magic(raw):
            base = _glob_base(raw)
            hits = []
            for match in sorted(glob.glob(raw, recursive=True)):
                if _under_output_folder(match, base, excluded):
                    continue  # a wildcard is a scan: outputs stay out, as in a folder scan
                if os.path.isdir(match):
                    sub = os.path.relpath(match, base).replace(os.sep, "/")
                    hits += [(p, f"{sub}/{r}" if sub != "." else r)
                             for p, r in _scan_folder(match, recursive, excluded)]
                elif is_image_file(match):
                    hits.append((os.path.abspath(match), os.path.relpath(match, base).replace(os.sep, "/")))
            hits.sort(key=lambda pr: pr[1])
            if not hits:
                problems.append(f"{raw}: no image file matches this pattern")
        else:
            hits = []
            problems.append(f"{raw}: no such file or folder")
        candidates += hits

    if problems:
        if missing == "error":
            raise InputNotFoundError("; ".join(problems))
        for problem in problems:
            log(problem)

    items: List[ImageItem] = []
    seen_files: Set[str] = set()
    taken_rels: Set[str] = set()
    for path, rel in candidates:
        key = os.path.realpath(path)
        if key in seen_files:
            continue
        seen_files.add(key)
        rel = _unique_rel(rel, taken_rels)
        taken_rels.add(rel)
        items.append(ImageItem(path, rel))
    if not items:
        raise InputNotFoundError(f"no images found in: {', '.join(inputs)}")
    return items


def as_item(x: Union[ImageItem, PathLike]) -> ImageItem:
    """An :class:`ImageItem` as is, or a path wrapped as one (``rel`` = its file name)."""
    if isinstance(x, ImageItem):
        return x
    path = os.fspath(x)
    return ImageItem(os.path.abspath(path), os.path.basename(path))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _decode_reason(err: BaseException) -> str:
    msg = str(err) or type(err).__name__
    if isinstance(err, MemoryError):
        return "out of memory while decoding (lower max_pixels or free memory)"
    if isinstance(err, EOFError) or "truncated" in msg.lower():
        return "truncated file"
    return f"corrupt image data ({type(err).__name__}: {msg})"


def _limit_from_env(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ValueError(f"{name}={shown!r} is not a positive integer")
    return value


def image_limits(max_pixels: Union[int, None, _FromEnvironment] = FROM_ENV,
                 max_aspect: Union[int, float, None, _FromEnvironment] = FROM_ENV,
                 ) -> Tuple[Optional[int], Optional[float]]:
    """The decoded-size limits in force: explicit values as given (``None``: no limit), ``FROM_ENV``
    from ``WAGI_MAX_IMAGE_PIXELS`` / ``WAGI_MAX_IMAGE_ASPECT`` when set, else ``MAX_PIXELS`` /
    ``MAX_ASPECT``. Raises ``ValueError`` (one line) for an environment value that is not a positive integer."""
    if max_pixels is FROM_ENV:
        max_pixels = _limit_from_env(MAX_PIXELS_ENV, MAX_PIXELS)
    if max_aspect is FROM_ENV:
        max_aspect = _limit_from_env(MAX_ASPECT_ENV, MAX_ASPECT)
    return max_pixels, max_aspect  # type: ignore[return-value]


def _check_size(path: str, width: int, height: int, min_side: int, max_pixels: Optional[int],
                max_aspect: Optional[float] = None) -> None:
    """Refuse from the header alone, before any pixel is decoded."""
    if min(width, height) < min_side:
        raise ImageLoadError(path, f"image too small: {width}x{height} px (minimum side is {min_side} px)")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(
            path, f"image too large: {width}x{height} px = {width * height} pixels (maximum is {max_pixels}; "
                  f"set {MAX_PIXELS_ENV} to change it)"
        )
    if max_aspect is not None and max(width, height) > max_aspect * min(width, height):
        raise ImageLoadError(
            path, f"image too elongated: {width}x{height} px, aspect ratio "
                  f"{max(width, height) / min(width, height):.4g}:1 (maximum is {max_aspect:g}:1; "
                  f"set {MAX_ASPECT_ENV} to change it)"
        )


_SIGNATURES: Tuple[Tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _format_from_signature(path: str) -> Optional[str]:
    """The format whose magic bytes start the file, if any (WebP: ``RIFF....WEBP``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for sig, fmt in _SIGNATURES if head.startswith(sig)), None)


def _open_checked(path: str, min_side: int, max_pixels: Union[int, None, _FromEnvironment],
                  max_aspect: Union[float, None, _FromEnvironment] = FROM_ENV) -> Image.Image:
    """Open ``path`` with Pillow (header only) after the file-system checks and size checks."""
    try:
        max_pixels, max_aspect = image_limits(max_pixels, max_aspect)
    except ValueError as err:
        raise ImageLoadError(path, str(err)) from None
    if not os.path.lexists(path):
        raise ImageLoadError(path, "file not found")
    if os.path.isdir(path):
        raise ImageLoadError(path, "is a directory")
    try:
        if os.path.getsize(path) == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            # Our own MAX_PIXELS check below reports the size; Pillow's warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path, formats=PILLOW_FORMATS)
    except ImageLoadError:
        raise
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found (broken link?)") from None
    except UnidentifiedImageError:
        known = _format_from_signature(path)
        if known is not None:  # Pillow hides why its parser gave up, but the magic bytes say what it was meant to be
            raise ImageLoadError(path, f"truncated or corrupt {known} file (unreadable header)") from None
        raise ImageLoadError(
            path, f"not a supported image (unknown format; supported: {', '.join(PILLOW_FORMATS)})"
        ) from None
    except Image.DecompressionBombError as err:
        raise ImageLoadError(path, f"image too large: {err}") from None
    except Exception as err:  # any other failure of a header parser means a broken file
        raise ImageLoadError(path, _decode_reason(err)) from None
    try:
        _check_size(path, img.width, img.height, min_side, max_pixels, max_aspect)
    except ImageLoadError:
        img.close()
        raise
    return img


def _prereduce_size(width: int, height: int, size: int, policy: str) -> Tuple[int, int]:
    """Smallest size a cheap integer-factor reduction may go down to before the final bicubic resample:
    ``REDUCING_GAP`` times what the policy needs (``size`` on the short side, long side, or both)."""
    if policy == "resize":
        w_req, h_req = size, size
    else:
        side = min(width, height) if policy == "center_crop" else max(width, height)
        w_req, h_req = -(-width * size // side), -(-height * size // side)
    return math.ceil(w_req * REDUCING_GAP), math.ceil(h_req * REDUCING_GAP)


def _prereduce(img: Image.Image, size: int, policy: str) -> Image.Image:
    """Shrink a large image by an integer factor in Pillow (8-bit or 32-bit, box filter) before the float resize.

    Every mode is reduced, so the float work of a load never exceeds a few times the final size: RGBA and
    LA are averaged premultiplied by Pillow (no colour bleeds from transparent pixels); palette, bilevel,
    colour-keyed and other modes go to RGB(A) first, 16-bit grey to 32-bit grey (same values)."""
    w_min, h_min = _prereduce_size(img.width, img.height, size, policy)
    factor = min(img.width // w_min, img.height // h_min)
    if factor < 2:
        return img
    mode = img.mode
    try:
        if mode in _HIGH_BIT_GREY_MODES:
            img = img.convert("I") if mode.startswith("I;16") else img
        elif mode not in _ALPHA_MODES and img.info.get("transparency") is not None:
            img = img.convert("RGBA")  # the colour key becomes alpha before pixels are averaged
        elif mode not in _REDUCIBLE_MODES:
            img = img.convert("RGBA" if mode in _ALPHA_MODES else "RGB")
    except (ValueError, OSError):
        return img  # an unconvertible mode: pil_to_tensor reports it
    return img.reduce(factor)


def _grey_to_unit(arr: np.ndarray, mode: str) -> np.ndarray:
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("non-finite pixel values")
    lo, hi = (arr.min(), arr.max()) if arr.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        return arr / UINT16_MAX
    if mode == "I" and lo >= 0 and hi <= UINT16_MAX:
        return arr / UINT16_MAX
    if mode == "F" and lo >= 0 and hi <= 1:
        return arr
    return (arr - lo) / (hi - lo) if hi > lo else np.full_like(arr, 0.5)


def pil_to_tensor(img: Image.Image, background: Tuple[int, int, int] = WHITE) -> torch.Tensor:
    """Convert a Pillow image of any supported mode to ``(3, H, W)`` float32 in ``[0, 1]``.

    See the module docstring for the per-mode rules. Raises ``ValueError`` for an unsupported mode or
    non-finite values (:func:`load_image` turns both into :class:`ImageLoadError`).
    """
    mode = img.mode
    if mode in _HIGH_BIT_GREY_MODES:
        grey = torch.from_numpy(_grey_to_unit(np.asarray(img), mode).astype(np.float32))
        return grey.unsqueeze(0).expand(3, -1, -1).contiguous()
    has_alpha = mode in _ALPHA_MODES or img.info.get("transparency") is not None
    try:
        converted = img.convert("RGBA" if has_alpha else "RGB")
    except (ValueError, OSError) as err:
        raise ValueError(f"unsupported colour mode {mode!r} ({err})") from None
    x = torch.from_numpy(np.array(converted, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
    if not has_alpha:
        return x.contiguous()
    rgb, alpha = x[:3], x[3:]
    bg = torch.tensor(background, dtype=torch.float32).div_(255.0).view(3, 1, 1)
    return (rgb * alpha + bg * (1.0 - alpha)).contiguous()


def resize_to_square(
    x: torch.Tensor, size: int, policy: str = "center_crop", background: Tuple[int, int, int] = WHITE
) -> torch.Tensor:
    """Bring ``(C, H, W)`` values in ``[0, 1]`` to ``(C, size, size)`` with one of ``POLICIES``."""
    if policy not in POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; choose one of {', '.join(POLICIES)}")
    h, w = x.shape[-2:]

    def scaled(new_h: int, new_w: int) -> torch.Tensor:
        if (new_h, new_w) == (h, w):
            return x
        y = TF.resize(x, [new_h, new_w], interpolation=RESIZE_INTERPOLATION, antialias=True)
        return y.clamp_(0.0, 1.0)  # bicubic overshoots at edges

    if policy == "resize":
        return scaled(size, size)
    if policy == "center_crop":
        short = min(h, w)
        y = scaled(max(size, round(h * size / short)), max(size, round(w * size / short)))
        return TF.center_crop(y, [size, size])
    long = max(h, w)
    new_h, new_w = max(1, round(h * size / long)), max(1, round(w * size / long))
    y = scaled(new_h, new_w)
    canvas = torch.tensor(background, dtype=x.dtype).div(255.0).view(-1, 1, 1).expand(x.shape[0], size, size)
    canvas = canvas.clone()
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[:, top : top + new_h, left : left + new_w] = y
    return canvas


def load_image(
    path: PathLike,
    size: Optional[int],
    policy: str = "center_crop",
    *,
    background: Tuple[int, int, int] = WHITE,
    min_side: int = MIN_SIDE,
    max_pixels: Union[int, None, _FromEnvironment] = FROM_ENV,
    max_aspect: Union[float, None, _FromEnvironment] = FROM_ENV,
) -> torch.Tensor:
    """Load one image file as a ``(3, size, size)`` float32 tensor in ``[-1, 1]``.

    Args:
        path: the image file.
        size: output side; ``None`` keeps the native size, giving ``(3, H, W)`` (EXIF-oriented).
        policy: ``'center_crop'`` (default: bicubic antialiased resize of the short side to ``size``,
            then the centre square), ``'resize'`` (to ``size x size``, aspect not kept) or ``'pad'``
            (long side to ``size``, short side padded with ``background``).
        background: RGB 0-255 under transparent pixels and in the padding (default white).
        min_side: images with a smaller side are rejected (default ``MIN_SIDE``).
        max_pixels: images with more pixels are rejected before decoding (``None``: Pillow's guard only;
            default ``WAGI_MAX_IMAGE_PIXELS`` if set, else ``MAX_PIXELS``).
        max_aspect: images whose long side exceeds ``max_aspect`` times the short side are rejected before
            decoding (``None``: no limit; default ``WAGI_MAX_IMAGE_ASPECT`` if set, else ``MAX_ASPECT``).
    Raises:
        ImageLoadError: one-line reason; see the module docstring for the list.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    if len(background) != 3 or not all(0 <= int(c) <= 255 for c in background):
        raise ValueError(f"background must be three ints in 0..255, got {background!r}")
    path = os.fspath(path)
    img = _open_checked(path, min_side, max_pixels, max_aspect)
    try:
        with img:
            if size is not None and img.format in ("JPEG", "MPO"):
                img.draft(None, _prereduce_size(img.width, img.height, size, policy))
            img.load()  # decoding happens here: truncated and corrupt data surface now
            try:
                ImageOps.exif_transpose(img, in_place=True)  # in place: no full-size copy of an upright image
            except Exception:  # a damaged EXIF block must not cost a readable image: keep it as stored
                pass
            oriented = img
            if size is not None:
                oriented = _prereduce(oriented, size, policy)
            x = pil_to_tensor(oriented, background)
    except ImageLoadError:
        raise
    except ValueError as err:
        msg = str(err)
        if msg.startswith(("unsupported colour mode", "non-finite")):
            raise ImageLoadError(path, msg) from None
        raise ImageLoadError(path, _decode_reason(err)) from None
    except Exception as err:  # a decoder failure on bad data, whatever its type, is this file's problem
        raise ImageLoadError(path, _decode_reason(err)) from None
    if size is not None:
        x = resize_to_square(x, size, policy, background)
    return x.mul_(2.0).sub_(1.0).clamp_(-1.0, 1.0)


def check_image(path: PathLike, *, min_side: int = MIN_SIDE,
                max_pixels: Union[int, None, _FromEnvironment] = FROM_ENV,
                max_aspect: Union[float, None, _FromEnvironment] = FROM_ENV) -> None:
    """Fast validity check without decoding the pixels: file-system, header and size checks plus
    ``PIL.Image.verify`` (checks PNG chunk CRCs; a truncated JPEG passes and fails later at load).
    Raises :class:`ImageLoadError` like :func:`load_image`."""
    path = os.fspath(path)
    img = _open_checked(path, min_side, max_pixels, max_aspect)
    try:
        with img:
            img.verify()
    except Exception as err:
        raise ImageLoadError(path, _decode_reason(err)) from None


# --------------------------------------------------------------------------------------------
# Batches for scripts
# --------------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """Collects load failures: each file is reported once, as one line through ``log``.

    ``failures`` holds ``(item, reason)``; ``ok`` is False when anything failed (scripts return a
    non-zero exit status then).
    """

    log: Callable[[str], None] = logger.warning
    failures: List[Tuple[ImageItem, str]] = field(default_factory=list)
    n_loaded: int = 0
    _reported: Set[str] = field(default_factory=set, init=False, repr=False)

    @property
    def ok(self) -> bool:
        return not self.failures

    def add_failure(self, item: ImageItem, error: Union[ImageLoadError, str]) -> None:
        if item.path in self._reported:
            return
        self._reported.add(item.path)
        reason = error.reason if isinstance(error, ImageLoadError) else str(error)
        self.failures.append((item, reason))
        self.log(str(error) if isinstance(error, ImageLoadError) else f"{item.path}: {reason}")

    def summary(self) -> str:
        return f"{self.n_loaded} image(s) loaded, {len(self.failures)} failed"


def iter_batches(
    items: Iterable[Union[ImageItem, PathLike]],
    size: int,
    batch_size: int,
    policy: str = "center_crop",
    *,
    report: Optional[LoadReport] = None,
    background: Tuple[int, int, int] = WHITE,
) -> Iterator[Tuple[torch.Tensor, List[ImageItem]]]:
    """Yield ``(batch (B, 3, size, size) in [-1, 1], items of the batch)``, skipping unreadable files.

    Each failure is logged once and recorded in ``report`` (pass your own :class:`LoadReport` to read
    the failures afterwards); loading goes on with the next file. Every batch has ``batch_size``
    images except the last, which is yielded however small (never dropped).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if policy not in POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; choose one of {', '.join(POLICIES)}")
    report = report if report is not None else LoadReport()
    tensors: List[torch.Tensor] = []
    batch_items: List[ImageItem] = []
    for raw in items:
        item = as_item(raw)
        try:
            x = load_image(item.path, size, policy, background=background)
        except ImageLoadError as err:
            report.add_failure(item, err)
            continue
        report.n_loaded += 1
        tensors.append(x)
        batch_items.append(item)
        if len(tensors) == batch_size:
            yield torch.stack(tensors), batch_items
            tensors, batch_items = [], []
    if tensors:
        yield torch.stack(tensors), batch_items


# --------------------------------------------------------------------------------------------
# Dataset for training
# --------------------------------------------------------------------------------------------
class ImageFolderDataset(Dataset):
    """Training images as ``(3, size, size)`` float32 tensors in ``[-1, 1]`` (the trainers flip whole batches
    themselves, ``data.hflip``, from seeds that resume exactly).

    Args:
        source: a folder, file or glob, or a list of them (see :func:`find_images`), or ImageItems.
        size, policy, background: as in :func:`load_image`.
        check: scan done once at construction: ``'verify'`` (default; header, size and
            :func:`check_image`), ``'load'`` (full decode of every file: slow, catches everything) or
            ``'none'``. Files that fail are left out with one warning listing them (``self.skipped``).

    A file that still fails when read (for example a truncated JPEG that passes ``'verify'``) is
    warned about once and replaced by the next readable index, so one bad file never stops training.
    """

    def __init__(
        self,
        source: Union[PathLike, Sequence[Union[PathLike, ImageItem]]],
        size: int,
        policy: str = "center_crop",
        *,
        check: str = "verify",
        background: Tuple[int, int, int] = WHITE,
        recursive: bool = True,
    ):
        if check not in ("verify", "load", "none"):
            raise ValueError(f"check must be 'verify', 'load' or 'none', got {check!r}")
        if policy not in POLICIES:
            raise ValueError(f"unknown resize policy {policy!r}; choose one of {', '.join(POLICIES)}")
        if isinstance(source, (str, os.PathLike)):
            source = [source]
        if all(isinstance(s, ImageItem) for s in source):
            items = list(source)
        else:
            paths = [s.path if isinstance(s, ImageItem) else os.fspath(s) for s in source]
            items = find_images(paths, recursive=recursive)
        self.size, self.policy, self.background = size, policy, background
        self.skipped: List[Tuple[ImageItem, str]] = []
        self.items: List[ImageItem] = []
        for item in items:
            try:
                if check == "verify":
                    check_image(item.path)
                elif check == "load":
                    load_image(item.path, size, policy, background=background)
            except ImageLoadError as err:
                self.skipped.append((item, err.reason))
                continue
            self.items.append(item)
        if self.skipped:
            listing = "; ".join(f"{it.path} ({reason})" for it, reason in self.skipped)
            warnings.warn(f"ImageFolderDataset: skipped {len(self.skipped)} unreadable file(s): {listing}",
                          stacklevel=2)
        if not self.items:
            raise InputNotFoundError(f"ImageFolderDataset: no readable image among {len(items)} file(s)")
        self._warned: Set[str] = set()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        n = len(self.items)
        for offset in range(n):
            item = self.items[(index + offset) % n]
            try:
                x = load_image(item.path, self.size, self.policy, background=self.background)
            except ImageLoadError as err:
                if item.path not in self._warned:
                    self._warned.add(item.path)
                    warnings.warn(f"{err}; using the next image instead", stacklevel=2)
                continue
            return x
        raise ImageLoadError(self.items[index % n].path, "no image of the dataset can be read any more")


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------
class ProtectedPaths:
    """A set of input files that outputs must never replace (by real path and by inode, so symlinks
    and hard links are caught too). Build once for many outputs; :func:`check_output_not_input`
    also accepts a plain list of paths or items."""

    def __init__(self, paths: Iterable[Union[ImageItem, PathLike]] = ()):
        self._real: Dict[str, str] = {}
        self._inodes: Dict[Tuple[int, int], str] = {}
        for p in paths:
            path = p.path if isinstance(p, ImageItem) else os.fspath(p)
            self._real[os.path.realpath(path)] = path
            try:
                st = os.stat(path)
            except OSError:
                continue
            self._inodes[(st.st_dev, st.st_ino)] = path

    def match(self, out_path: PathLike) -> Optional[str]:
        """The input that ``out_path`` would replace, or None."""
        out_path = os.fspath(out_path)
        hit = self._real.get(os.path.realpath(out_path))
        if hit is not None:
            return hit
        try:
            st = os.stat(out_path)
        except OSError:
            return None
        return self._inodes.get((st.st_dev, st.st_ino))


def check_output_not_input(
    out_path: PathLike, input_paths: Union[ProtectedPaths, Iterable[Union[ImageItem, PathLike]]]
) -> None:
    """Raise :class:`OutputIsInputError` if ``out_path`` is (or links to) one of ``input_paths``."""
    guard = input_paths if isinstance(input_paths, ProtectedPaths) else ProtectedPaths(input_paths)
    hit = guard.match(out_path)
    if hit is not None:
        raise OutputIsInputError(f"{os.fspath(out_path)}: refusing to write onto the input image {hit}")


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """``(3, H, W)`` or ``(1, H, W)`` in ``[-1, 1]`` (clamped) to an 8-bit RGB or L Pillow image."""
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected an image tensor (3, H, W) or (1, H, W) in [-1, 1], got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("image tensor holds NaN or infinite values")
    arr = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr, mode="L" if arr.shape[-1] == 1 else "RGB")


def _output_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"{path}: unsupported output extension {ext!r}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    return Image.registered_extensions()[ext]


def save_image(
    x: torch.Tensor,
    path: PathLike,
    overwrite: bool = False,
    *,
    inputs: Union[ProtectedPaths, Iterable[Union[ImageItem, PathLike]]] = (),
) -> str:
    """Write ``(3, H, W)`` in ``[-1, 1]`` to ``path`` (format from the extension), atomically.

    Creates missing parent folders. Raises :class:`OutputExistsError` if ``path`` exists and not
    ``overwrite``; :class:`OutputIsInputError` if ``path`` is one of ``inputs`` (even with
    ``overwrite``). The image goes to a hidden temporary file beside ``path`` that replaces it in one
    ``os.replace``, so a killed process leaves the old file or the new one, never half of one.
    Returns the path written.
    """
    path = os.fspath(path)
    fmt = _output_format(path)
    check_output_not_input(path, inputs)
    if os.path.isdir(path):
        raise OutputExistsError(f"{path}: output path is a folder")
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(f"{path}: output file exists; pass --overwrite to replace it")
    img = tensor_to_pil(x)
    options = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    atomic_write(path, lambda f: img.save(f, format=fmt, **options))
    return path


def save_strip(
    images: Sequence[torch.Tensor],
    path: PathLike,
    overwrite: bool = False,
    *,
    inputs: Union[ProtectedPaths, Iterable[Union[ImageItem, PathLike]]] = (),
    padding: int = 2,
    pad_value: float = 1.0,
    labels: Optional[Sequence[str]] = None,
) -> str:
    """Save images side by side (left to right) as one file, through :func:`save_image`.

    ``images`` are ``(3, H, W)`` tensors in ``[-1, 1]``; any of another size is resized (bicubic,
    antialiased) to the size of the tallest, so a 256² input can sit beside its 1024² inversion.
    ``padding`` pixels of ``pad_value`` (in ``[-1, 1]``; default white) separate and frame them.
    ``labels`` (one per image) are written in black, centred, in a caption band of
    :func:`caption_height` pixels added below the tiles (the tiles keep their place).
    """
    if len(images) == 0:
        raise ValueError("save_strip needs at least one image")
    for i, x in enumerate(images):
        if x.dim() != 3 or x.shape[0] != 3:
            raise ValueError(f"save_strip: image {i} must have shape (3, H, W), got {tuple(x.shape)}")
    target = max(images, key=lambda t: t.shape[-2]).shape[-2:]
    tiles = []
    for x in images:
        x = x.detach().to("cpu", torch.float32).clamp(-1.0, 1.0).add(1.0).div(2.0)
        if x.shape[-2:] != target:
            x = TF.resize(x, list(target), interpolation=RESIZE_INTERPOLATION, antialias=True).clamp_(0.0, 1.0)
        tiles.append(x)
    grid = make_grid(torch.stack(tiles), nrow=len(tiles), padding=padding, pad_value=(pad_value + 1.0) / 2.0)
    if labels is not None:
        if len(labels) != len(images):
            raise ValueError(f"save_strip: {len(labels)} labels for {len(images)} images")
        grid = _add_captions(grid, labels, int(target[0]), int(target[1]), padding, (pad_value + 1.0) / 2.0)
    return save_image(grid.mul(2.0).sub(1.0), path, overwrite, inputs=inputs)


def caption_height(tile_height: int) -> int:
    """Height in pixels of the caption band :func:`save_strip` adds under tiles ``tile_height`` high."""
    return _caption_font_size(tile_height) + 6


def _caption_font_size(tile_height: int) -> int:
    return max(10, min(32, tile_height // 10))


def _add_captions(grid: torch.Tensor, labels: Sequence[str], tile_h: int, tile_w: int, padding: int,
                  background: float) -> torch.Tensor:
    """``grid`` ``(3, H, W)`` in ``[0, 1]`` with a caption band below it, one centred label per tile."""
    from PIL import ImageDraw, ImageFont

    band_h = caption_height(tile_h)
    band = Image.new("RGB", (grid.shape[-1], band_h), tuple([round(background * 255)] * 3))
    draw = ImageDraw.Draw(band)
    try:
        font = ImageFont.load_default(size=_caption_font_size(tile_h))
    except TypeError:  # a Pillow without FreeType: the fixed-size bitmap font
        font = ImageFont.load_default()
    for i, text in enumerate(labels):
        cx = padding + i * (tile_w + padding) + tile_w / 2
        left, top, right, bottom = draw.textbbox((0, 0), str(text), font=font)
        draw.text((cx - (right - left) / 2 - left, (band_h - (bottom - top)) / 2 - top), str(text), fill=(0, 0, 0),
                  font=font)
    band_t = torch.from_numpy(np.asarray(band, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return torch.cat([grid, band_t], dim=1)
