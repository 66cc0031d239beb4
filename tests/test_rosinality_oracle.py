"""scripts/dev/rosinality_train_oracle.py: rosinality's own train() runs WaGI's SWAGAN on WaGI's data for a few
steps and leaves g_ema snapshots that wagi.checkpoint.load_generator reads.

Needs a checkout of rosinality/stylegan2-pytorch in $ROSINALITY_CHECKOUT (e.g. `git clone
https://github.com/rosinality/stylegan2-pytorch`); skipped without one (CI has none)."""
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, load_script
from wagi.checkpoint import load_generator

ORACLE = load_script("dev/rosinality_train_oracle")
# What the oracle imports from their checkout (the CUDA sources only matter where their ops build).
NEEDED = ("train.py", "swagan.py", "model.py", "dataset.py", "distributed.py", "non_leaking.py", "op")
TINY = ROOT / "configs" / "swagan_tiny_test.yaml"


@pytest.fixture(scope="module")
def checkout():
    env = os.environ.get("ROSINALITY_CHECKOUT")
    if not env:
        pytest.skip("no rosinality/stylegan2-pytorch checkout: set ROSINALITY_CHECKOUT to one")
    missing = [f for f in NEEDED if not (Path(env) / f).exists()]
    if missing:
        pytest.skip(f"ROSINALITY_CHECKOUT={env} is not a checkout of rosinality/stylegan2-pytorch (no {missing[0]})")
    return Path(env)


def test_their_loop_trains_our_nets_and_writes_loadable_snapshots(checkout, tmp_path, capsys):
    before, cwd = set(sys.modules), os.getcwd()
    out = tmp_path / "oracle"
    rc = ORACLE.main(["--rosinality", str(checkout), "--config", str(TINY), "--set", "data.demo_images=16",
                      "--cache", str(tmp_path / "faces.pt"), "--nets", "ours", "--steps", "2", "--snapshot-every", "2",
                      "--log-every", "1", "--out", str(out), "--device", "cpu", "--ops", "wagi", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert os.getcwd() == cwd  # their loop ran in out/rosinality_cwd
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in ORACLE.TRAIN_MODULES + ("op", "swagan")}

    snap = out / "snapshots" / "step_0000002.pt"
    assert f"last: {snap}" in captured.out and (tmp_path / "faces.pt").is_file()
    g, latent_avg, info = load_generator(snap)
    assert info["format"] == "wagi" and g.config["size"] == 32 and latent_avg.shape == (1, 32)
    with torch.no_grad():
        img, _ = g([torch.randn(2, g.style_dim)])
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()

    summary = json.loads((out / "oracle.json").read_text())
    assert summary["steps"] == 2 and summary["stopped"] == "--steps 2 done" and summary["nets"] == "ours"
    assert summary["args"]["batch"] == 4 and summary["args"]["augment"] is False
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(k in records[0] for k in ("d", "g", "r1", "path", "real_score", "fake_score"))
    assert (out / "rosinality_cwd" / "sample" / "000000.png").is_file()  # their step-0 sample grid


def test_snapshot_of_their_generator_draws_their_images(checkout, tmp_path):
    cfg = ORACLE.load_gan_config(TINY, ["generator.size=16"])
    with ORACLE.rosinality_train_module(checkout, build_ops=False) as (_, swagan, ops_used):
        assert "not built" in ops_used
        torch.manual_seed(0)
        g, _ = ORACLE.build_theirs(swagan, cfg)
        config = ORACLE.gan_to_dict(cfg)
        snaps = ORACLE.Snapshots(tmp_path, g.eval(), "theirs", config, {"nets": "theirs"})
        path = snaps.write(step=3, wall_s=1.0, batch=4)
        assert snaps.check_errors[0] <= ORACLE.CHECK_TOLERANCE
        mine, _, _ = load_generator(path)
        assert mine.config["channels"] == {4: 512, 8: 512}  # their table, not the config's channel_max
        z = torch.randn(2, cfg.generator.style_dim)
        with torch.no_grad():
            a, _ = g([z], randomize_noise=False)
            b, _ = mine([z], randomize_noise=False)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
