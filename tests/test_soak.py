"""The kill -9 soak test (scripts/soak.py), a short version: minutes, run with ``pytest --run-soak``."""
import pytest

from tests.helpers import ROOT
from wagi.training.soak import soak


@pytest.mark.soak
@pytest.mark.slow
def test_soak_kills_leave_no_corrupt_checkpoint_and_resume_exactly(tmp_path):
    report = soak(str(ROOT / "configs" / "tiny_test.yaml"), tmp_path, kills=4, seed=1, max_delay_s=5.0,
                  overrides=["train.max_steps=60"], log=lambda line: None)
    assert report.kills == 4, report.lines()
    assert report.corrupt_checkpoints == 0 and report.stale_temps_after_restart == 0 and report.tracebacks == 0
    assert report.final_step == 60 and report.final_matches_reference is True, report.lines()
    assert report.ok
