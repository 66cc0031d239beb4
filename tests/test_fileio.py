"""Tests of wagi.fileio: atomic writes, and refused writes (full disk, read-only, permission, a file in the
way) as one ``WriteError`` line naming the path, with the old file kept and no temporary file left."""
import errno
import os
import pickle

import numpy as np
import pytest
import torch

from wagi import fileio
from wagi.checkpoint import save_checkpoint
from wagi.fileio import WriteError, atomic_write
from wagi.imageio import save_image
from wagi.inference import save_latent_bundle

HAS_DEV_FULL = os.path.exists("/dev/full")


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write lands on /dev/full, whose writes fail with ENOSPC like a full disk."""
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        os.close(fd)
        return real_fdopen(os.open("/dev/full", os.O_WRONLY), mode, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "fdopen", fdopen)


WRITERS = {
    "bytes": lambda p: atomic_write(p, b"x" * 100_000),
    "text": lambda p: atomic_write(p, "report\n" * 10_000),
    "checkpoint": lambda p: save_checkpoint({"w": torch.zeros(100_000)}, p),
    "image": lambda p: save_image(torch.zeros(3, 256, 256).uniform_(-1, 1), p, overwrite=True),
    "latents_bundle_pt": lambda p: save_latent_bundle(["a", "b"], torch.zeros(2, 8, 512), p, overwrite=True),
    "latents_bundle_npz": lambda p: save_latent_bundle(["a", "b"], torch.zeros(2, 8, 512), p.with_suffix(".npz"),
                                                        overwrite=True),
    "npy": lambda p: atomic_write(p, lambda f: np.save(f, np.zeros(100_000), allow_pickle=False)),
}


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, full_disk, writer):
    name = {"image": "out.png", "latents_bundle_npz": "out.npz"}.get(writer, "out.pt")
    path = tmp_path / name
    path.write_bytes(b"old contents")
    with pytest.raises(WriteError) as info:
        WRITERS[writer](tmp_path / "out.pt" if writer != "image" else path)
    assert str(info.value) == f"cannot write {path}: no space left on device"
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert path.read_bytes() == b"old contents" and sorted(os.listdir(tmp_path)) == [name]


def test_refused_folders_are_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(WriteError) as info:
        atomic_write(blocker / "sub" / "x.txt", "x")
    assert str(info.value) == f"cannot write {blocker / 'sub' / 'x.txt'}: a part of the path is a file, not a folder"
    with pytest.raises(WriteError, match="is a folder$"):
        atomic_write(tmp_path, "x")
    for code, reason in ((errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")):
        def refuse(*args, _code=code, **kwargs):
            raise OSError(_code, os.strerror(_code))

        monkeypatch.setattr(fileio.os, "open", refuse)
        with pytest.raises(WriteError) as info:
            save_checkpoint({"w": torch.zeros(3)}, tmp_path / "ckpt.pt")
        assert str(info.value) == f"cannot write {tmp_path / 'ckpt.pt'}: {reason}"
        monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["blocker"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_real_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(WriteError, match="permission denied"):
            atomic_write(folder / "x.txt", "x")
    finally:
        folder.chmod(0o755)


def test_write_error_pickles_and_other_errors_pass_through(tmp_path):
    err = WriteError("/x/y.pt", OSError(errno.ENOSPC, "No space left on device"))
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == "cannot write /x/y.pt: no space left on device" and back.errno == errno.ENOSPC

    def bug(f):
        raise ValueError("a bug in the writer, not a disk problem")

    with pytest.raises(ValueError, match="a bug in the writer"):
        atomic_write(tmp_path / "x.bin", bug)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------
# Temporary files of killed writers, and the run-folder lock
# ------------------------------------------------------------------------------------------
def test_remove_stale_temps_touches_only_our_pattern(tmp_path):
    import time

    from wagi.fileio import remove_stale_temps, temp_path

    (tmp_path / "sub").mkdir()
    ours = [temp_path(tmp_path / "latest.pt"), temp_path(tmp_path / "sub" / "a.png")]
    others = [tmp_path / ".keep", tmp_path / ".x.tmp", tmp_path / "a.tmp", tmp_path / ".a.png.123.tmp",
              tmp_path / ".a.png.ABCDEF123456.tmp", tmp_path / "sub" / "b.png"]
    for p in ours + others:
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == []  # fresh: a writer may still be at work
    old = time.time() - 3600
    for p in ours + others:
        os.utime(p, (old, old))
    assert remove_stale_temps(tmp_path) == [ours[0]]  # not recursive by default
    assert sorted(remove_stale_temps(tmp_path, min_age_s=0, recursive=True)) == [ours[1]]
    assert all(p.exists() for p in others) and not any(p.exists() for p in ours)
    assert remove_stale_temps(tmp_path / "missing") == []


_HOLD_LOCK = """
import sys, time
from wagi.fileio import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_run_lock_excludes_a_second_holder_until_the_first_is_gone(tmp_path):
    import signal
    import subprocess
    import sys

    from tests.helpers import ROOT
    from wagi.fileio import RunFolderInUse, RunLock

    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderInUse) as info:
            RunLock(tmp_path).acquire()
        msg = str(info.value)
        assert f"pid {proc.pid} on " in msg and "\n" not in msg and str(tmp_path / ".lock") in msg
    finally:
        proc.send_signal(signal.SIGKILL)  # like kill -9: no chance to clean up
        proc.wait()
    with RunLock(tmp_path) as lock:  # the system released the dead holder's lock
        assert f"pid {os.getpid()}" in lock.path.read_text()
        with pytest.raises(RunFolderInUse):
            RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire().release()  # released on exit from the block
