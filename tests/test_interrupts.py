"""Ctrl-C anywhere in a script: one line on stderr and exit status 130, never a traceback."""
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT
from wagi.cli import EXIT_INTERRUPTED, run_main

SCRIPTS = ["invert", "edit", "eval_subbands", "train", "train_generator", "generate", "train_boundary", "fd_judge",
           "convert_weights", "make_demo_dataset", "qualitative_grid", "eval_edits"]
SIGNAL_AFTER_S = 0.8  # Python itself is up by then; PyTorch is still importing


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_during_start_up_is_one_line_and_130():
    interrupted = []
    for name in SCRIPTS:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / f"{name}.py"), "--help"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        time.sleep(SIGNAL_AFTER_S)
        if proc.poll() is not None:  # done before the signal: nothing to check on this machine
            proc.communicate()
            continue
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, err) == (EXIT_INTERRUPTED, "interrupted\n"), (name, proc.returncode, err[-500:])
        interrupted.append(name)
    assert len(interrupted) >= len(SCRIPTS) // 2, interrupted  # most scripts still import PyTorch at 0.8 s


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
