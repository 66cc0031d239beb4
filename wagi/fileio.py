"""Atomic file writes: a file is replaced whole or not at all.

:func:`atomic_write` writes to a hidden temporary file beside the target (``.<name>.<random>.tmp``),
flushes it to disk and renames it over the target with one ``os.replace``, so a reader, or a process
killed mid-write, sees the old file or the complete new one, never half of one; the temporary file is
removed on any error. :func:`atomic_link` gives an existing file a second name the same way.

Every writer of the project goes through here: checkpoints (:func:`wagi.checkpoint.save_checkpoint`),
images (:func:`wagi.imageio.save_image`), latents and reports, boundaries, demo datasets.

A write that the operating system refuses (disk full, read-only file system, permission denied, a file
where a folder should be) raises :class:`WriteError`: an ``OSError`` whose message is one line,
``cannot write <path>: <reason>``; the old file, if any, is left as it was and no temporary file stays.

A process killed mid-write (``kill -9``, power cut) leaves its temporary file behind:
:func:`remove_stale_temps` deletes exactly those names, and the scripts call it on the folders they
write when they start. :class:`RunLock` keeps two training processes out of one run folder.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, List, Optional, Union

PathLike = Union[str, os.PathLike]
Content = Union[bytes, str, Callable[[BinaryIO], object]]

TEMP_TOKEN_BYTES = 6  # random part of a temporary name: concurrent writers of one file never collide
NEW_FILE_MODE = 0o666  # with the umask applied, as for any new file (mkstemp would give 0o600)


_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder",
    errno.ENAMETOOLONG: "file name too long",
}


class WriteError(OSError):
    """A refused write: ``str(err) == f"cannot write {path}: {reason}"``, one line (``errno`` kept)."""

    def __init__(self, path: PathLike, cause: OSError):
        reason = _REASONS.get(cause.errno) or " ".join(str(cause.strerror or cause).split()) or type(cause).__name__
        super().__init__(cause.errno, reason, os.fspath(path))
        self.message = f"cannot write {os.fspath(path)}: {reason}"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (_rebuild_write_error, (self.filename, self.errno, self.strerror))


def _rebuild_write_error(path: str, code: Optional[int], reason: str) -> WriteError:
    return WriteError(path, OSError(code, reason))


class _RecordingFile:
    """Passes writes through and keeps the first ``OSError``: ``torch.save`` reports a failed write as a
    RuntimeError about zip positions, which would hide a full disk."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.error: Optional[OSError] = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def encode_text(text: str) -> bytes:
    """UTF-8 bytes of ``text``. A file name that is not valid UTF-8 reaches Python as surrogate escapes
    (``\\udcff``); those are written as that escape text instead of failing the whole write."""
    return text.encode("utf-8", "backslashreplace")


def printable(text: str) -> str:
    """``text`` with any undecodable file-name bytes shown as ``\\udcxx`` escapes: safe to print."""
    return encode_text(text).decode("utf-8")


def temp_path(path: PathLike) -> Path:
    """A fresh hidden name beside ``path``: ``.<name>.<random hex>.tmp``."""
    path = Path(path)
    return path.parent / f".{path.name}.{secrets.token_hex(TEMP_TOKEN_BYTES)}.tmp"


TEMP_NAME = re.compile(rf"^\..+\.[0-9a-f]{{{2 * TEMP_TOKEN_BYTES}}}\.tmp$")  # exactly what temp_path makes
STALE_TEMP_AGE_S = 15 * 60  # unchanged this long, a temporary file's writer is gone (a write streams without pause)


def remove_stale_temps(folder: PathLike, min_age_s: float = STALE_TEMP_AGE_S, recursive: bool = False) -> List[Path]:
    """Delete the temporary files that :func:`temp_path` names (and only those) in ``folder``, left by a
    process killed mid-write, when unmodified for ``min_age_s`` seconds (0: all, for a folder this process
    holds the :class:`RunLock` of). Returns the removed paths; a folder that does not exist has none."""
    removed: List[Path] = []
    if not os.path.isdir(folder):
        return removed
    now = time.time()
    walk = os.walk(folder) if recursive else [(os.fspath(folder), [], os.listdir(folder))]
    for dirpath, _, names in walk:
        for name in names:
            if not TEMP_NAME.match(name):
                continue
            path = Path(dirpath) / name
            try:
                st = os.lstat(path)
                if not os.path.isdir(path) and now - st.st_mtime >= min_age_s:
                    os.unlink(path)
                    removed.append(path)
            except OSError:
                continue  # gone meanwhile, or not ours to delete: leave it
    return removed


LOCK_NAME = ".lock"


class RunFolderInUse(RuntimeError):
    """Another process holds the lock of a run folder (one line naming it and how to get past a stale lock)."""


class RunLock:
    """An exclusive lock on a run folder: ``<folder>/.lock``, held with ``flock`` while this object is open.

    The operating system releases ``flock`` when the process ends, however it ends (also ``kill -9``), so a
    lock left by a dead process on a local disk never blocks a new run. The file records the holder's host
    and pid for the message a second process gets. On a network file system without ``flock`` support the
    lock degrades to the file alone: if its holder is gone, delete ``<folder>/.lock`` to get past it.
    """

    def __init__(self, folder: PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: the file alone marks the folder
            fcntl = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, NEW_FILE_MODE)
        except OSError as err:
            raise WriteError(self.path, err) from None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunFolderInUse(
                f"run folder {self.folder} is in use by {holder}; wait for it to finish or stop it (a lock of a "
                f"process that has ended is released by the system; on a network file system delete "
                f"{self.path} once you are sure no run uses the folder)") from None
        except OSError:
            pass  # no flock on this file system: the file alone marks the folder
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                 .encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (deleting it would race a new holder)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


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
    try:
        if os.path.lexists(path):
            os.unlink(path)
    except OSError:
        pass  # the original error is the one to report


def atomic_write(path: PathLike, content: Content, overwrite: bool = True, durable: bool = True) -> Path:
    """Write ``content`` to ``path`` atomically (see the module docstring); creates missing parent folders.

    Args:
        content: ``bytes``, ``str`` (written as UTF-8, :func:`encode_text`), or a function that writes into the
            binary file object it is given (``lambda f: torch.save(obj, f)``).
        overwrite: replace an existing ``path``; ``False`` raises ``FileExistsError`` (one line) instead.
        durable: ``fsync`` the file and its folder, so the new file survives a power cut; ``False`` for
            bulk data that is cheap to regenerate.
    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path}: output file exists; pass --overwrite to replace it")
    if os.path.isdir(path):
        raise WriteError(path, OSError(errno.EISDIR, "is a folder"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
    except FileExistsError as err:  # mkdir: a file stands where a parent folder should be
        raise WriteError(path, OSError(errno.ENOTDIR, str(err))) from None
    except OSError as err:
        raise WriteError(path, err) from None
    recorder: Optional[_RecordingFile] = None
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                recorder = _RecordingFile(f)
                content(recorder)  # type: ignore[arg-type]
            else:
                f.write(encode_text(content) if isinstance(content, str) else content)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        _remove(tmp)
        cause = recorder.error if recorder is not None and recorder.error is not None else err
        if isinstance(cause, OSError) and not isinstance(cause, WriteError) and isinstance(err, Exception):
            raise WriteError(path, cause) from None
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
    except OSError as err:
        raise WriteError(dst, err) from None
    finally:
        _remove(tmp)
    return dst


__all__ = ["atomic_write", "atomic_link", "temp_path", "WriteError", "encode_text", "printable", "remove_stale_temps",
           "RunLock", "RunFolderInUse", "STALE_TEMP_AGE_S"]
