"""Atomic file writes: a file is replaced whole or not at all.

:func:`atomic_write` writes to a hidden temporary file beside the target (``.<name>.<random>.tmp``),
flushes it to disk and renames it over the target with one ``os.replace``, so a reader, or a process
killed mid-write, sees the old file or the complete new one, never half of one; the temporary file is
removed on any error. :func:`atomic_link` gives an existing file a second name the same way.

Every writer of the project goes through here: checkpoints (:func:`wagi.checkpoint.save_checkpoint`),
images (:func:`wagi.imageio.save_image`), latents and reports, boundaries, demo datasets.
"""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO, Callable, Union

PathLike = Union[str, os.PathLike]
Content = Union[bytes, str, Callable[[BinaryIO], object]]

TEMP_TOKEN_BYTES = 6  # random part of a temporary name: concurrent writers of one file never collide
NEW_FILE_MODE = 0o666  # with the umask applied, as for any new file (mkstemp would give 0o600)


def temp_path(path: PathLike) -> Path:
    """A fresh hidden name beside ``path``: ``.<name>.<random hex>.tmp``."""
    path = Path(path)
    return path.parent / f".{path.name}.{secrets.token_hex(TEMP_TOKEN_BYTES)}.tmp"


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; not possible on every platform / file system."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if os.path.lexists(path):
        os.unlink(path)


def atomic_write(path: PathLike, content: Content, overwrite: bool = True, durable: bool = True) -> Path:
    """Write ``content`` to ``path`` atomically (see the module docstring); creates missing parent folders.

    Args:
        content: ``bytes``, ``str`` (written as UTF-8), or a function that writes into the binary file
            object it is given (``lambda f: torch.save(obj, f)``).
        overwrite: replace an existing ``path``; ``False`` raises ``FileExistsError`` (one line) instead.
        durable: ``fsync`` the file and its folder, so the new file survives a power cut; ``False`` for
            bulk data that is cheap to regenerate.
    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path}: output file exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    if durable:
        _fsync_folder(path.parent)
    return path


def atomic_link(src: PathLike, dst: PathLike) -> Path:
    """Make ``dst`` a hard link to ``src`` (a copy where links fail), replacing ``dst`` atomically."""
    dst = Path(dst)
    tmp = temp_path(dst)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        _remove(tmp)
    return dst


__all__ = ["atomic_write", "atomic_link", "temp_path"]
