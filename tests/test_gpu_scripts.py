"""The shell scripts run on lent GPU machines: they parse, and the config overrides they pass are valid.

A typo in one of them is found here, not after the machine's start-up and the training set's rendering.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from wagi.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))


def test_there_are_gpu_scripts():
    assert len(SCRIPTS) >= 5 and ROOT / "scripts" / "gpu_fusion_ablation.sh" in SCRIPTS


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_script_parses(script):
    res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def _ablation_variants():
    text = (ROOT / "scripts" / "gpu_fusion_ablation.sh").read_text()
    defaults = dict(re.findall(r"(\w+)=\$\{\w+:?-([^}]+)\}", text))  # LAT=${LATTICE:-0.3} -> {"LAT": "0.3"}
    variants = {}
    for name, sets in re.findall(r"^\s*\[([A-Z])\]=\"([^\"]*)\"", text, flags=re.M):
        sets = re.sub(r"\$(\w+)", lambda m: defaults[m.group(1)], sets)
        variants[name] = re.findall(r"--set (\S+)", sets)
    return text, variants


def test_fusion_ablation_overrides_are_valid(monkeypatch):
    monkeypatch.chdir(ROOT)  # the script runs in the repository root: its paths are relative to it
    text, variants = _ablation_variants()
    assert sorted(variants) == ["A", "B", "C", "D", "E", "H"] and variants["A"] == []
    common = ["data.workers=2", "experiment.name=abl_A"]
    assert "--set data.workers=2" in text and '--set "train.encoder_ckpt=pretrained/demo/$enc.pt"' in text
    base = {v: (cfg, enc) for v, cfg, enc in re.findall(r"\[([A-Z])\]=\"(demo_\w+) (\w+)\"", text)}
    assert base == {"H": ("demo_hfgi", "l2_restyle")}  # variant -> its config and bundled encoder
    cfgs = {}
    for name, sets in variants.items():
        cfg, enc = base.get(name, ("demo_wagi", "wavelet_restyle"))
        assert (ROOT / "pretrained" / "demo" / f"{enc}.pt").is_file()
        cfgs[name] = load_config(ROOT / "configs" / f"{cfg}.yaml",
                                 overrides=common + [f"train.encoder_ckpt=pretrained/demo/{enc}.pt"] + sets)
    assert not cfgs["A"].fusion.cascade and cfgs["A"].loss.lattice == 0 and cfgs["A"].fusion.edit_aug.prob == 0
    assert cfgs["B"].fusion.cascade and cfgs["B"].loss.lattice == 0
    assert cfgs["C"].fusion.cascade and cfgs["C"].loss.lattice == pytest.approx(0.3)
    assert cfgs["D"].fusion.edit_aug.prob == pytest.approx(0.5) and cfgs["D"].fusion.edit_mode == "recompute"
    # the draws and mask of the measured ablation (docs/method.md), not today's defaults
    assert cfgs["D"].fusion.edit_aug.strength == [2.0, 6.0] and cfgs["D"].fusion.edit_aug.mask == [0.02, 0.06, 2]
    # E: today's defaults of the augmentation on the cascade; H: the same augmentation on the feature fusion
    for name in "EH":
        ea = cfgs[name].fusion.edit_aug
        assert ea.prob == pytest.approx(0.5) and ea.strength == [1.0, 3.0] and ea.mask == [0.06, 0.15, 2]
    assert cfgs["E"].fusion.cascade and cfgs["E"].loss.lattice == 0 and cfgs["E"].fusion.kind == "wavelet"
    assert cfgs["H"].fusion.kind == "feature" and not cfgs["H"].fusion.cascade
    with pytest.raises(ConfigError):  # the same path refuses a key that does not exist
        load_config(ROOT / "configs" / "demo_wagi.yaml", overrides=common + ["fusion.cascades=true"])


def test_gpu_scripts_share_one_environment(tmp_path):
    """Every scripts/gpu_*.sh sources scripts/gpu_common.sh (run from the repository root)."""
    gpu = [p for p in SCRIPTS if p.name.startswith("gpu_") and p.name not in ("gpu_common.sh", "gpu_session.sh")]
    assert len(gpu) >= 8
    for p in gpu:
        assert 'source "$(dirname "$0")/gpu_common.sh"' in p.read_text(), p.name
    if shutil.which("bash") is None:
        return
    probe = tmp_path / "scripts" / "probe.sh"
    probe.parent.mkdir()
    (tmp_path / "scripts" / "gpu_common.sh").write_text((ROOT / "scripts" / "gpu_common.sh").read_text())
    probe.write_text('source "$(dirname "$0")/gpu_common.sh"\necho "$OUT|$PYTHONPATH|$TORCH_EXTENSIONS_DIR|$LOGS"\n')
    (tmp_path / "wagi").mkdir()
    res = subprocess.run(["bash", "scripts/probe.sh"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "OUT": "back"})
    assert res.returncode == 0, res.stderr
    out, pythonpath, ext, logs = res.stdout.strip().split("|")
    assert out == "back" and (tmp_path / "back").is_dir() and Path(logs).is_dir()
    assert pythonpath == str(tmp_path) and ext == f"{tmp_path}/.ext_cache"
    assert (tmp_path / "wagi" / "ops").is_symlink()
