"""Ctrl-C anywhere in a script: one line on stderr and exit status 130, never a traceback."""
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT
from wagi.cli import EXIT_INTERRUPTED, run_main

SCRIPTS = ["invert", "edit", "eval_subbands", "train", "train_generator", "generate", "train_boundary", "fd_judge",
           "convert_weights", "make_demo_dataset", "qualitative_grid", "eval_edits", "eval_fusion"]
WAIT_FOR_TORCH_S = 60.0


def _importing_torch(pid: int) -> bool:
    """True once PyTorch's shared library is mapped: the script is inside its heavy imports."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "libtorch" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to time the signal")
def test_ctrl_c_during_start_up_is_one_line_and_130():
    interrupted = []
    for name in SCRIPTS:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / f"{name}.py"), "--help"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        deadline = time.monotonic() + WAIT_FOR_TORCH_S
        while proc.poll() is None and not _importing_torch(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is not None:  # done before PyTorch loaded: nothing to check for this script
            proc.communicate()
            continue
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, err) == (EXIT_INTERRUPTED, "interrupted\n"), (name, proc.returncode, err[-500:])
        interrupted.append(name)
    assert len(interrupted) >= len(SCRIPTS) - 2, interrupted  # all but scripts that load PyTorch only in main()


def test_run_main_turns_an_unhandled_ctrl_c_into_one_line(capsys):
    def main():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as info:
        run_main(main)
    assert info.value.code == EXIT_INTERRUPTED and capsys.readouterr().err == "interrupted\n"
    with pytest.raises(SystemExit) as info:
        run_main(lambda: 3)
    assert info.value.code == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
