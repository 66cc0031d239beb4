"""Edit-fidelity benchmark: masked per-band L2, ghosting, shipped directions by name, the scripts end to end."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import load_script
from wagi.bundle import read_manifest, verify_bundle
from wagi.editing.benchmark import EditBenchmark, masked_band_l2, prepare_faces
from wagi.editing.shipped import ShippedDirection, load_shipped, resolve_shipped
from wagi.metrics import subband_l2
from wagi.models.judge import AttributeJudge, save_judge

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "pretrained" / "demo"


def _script(name):
    return load_script(name)


def test_masked_band_l2_matches_subband_l2_without_mask():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 3, 16, 16, generator=g), torch.randn(3, 3, 16, 16, generator=g)
    empty = torch.zeros(3, 16, 16, dtype=torch.bool)
    out = masked_band_l2(x, y, empty, inside=False)
    ref = subband_l2(x, y, levels=1)
    for band, key in (("LL", "LL"), ("LH", "LH1"), ("HL", "HL1"), ("HH", "HH1")):
        assert torch.allclose(out[band], torch.as_tensor(ref[key]).float(), rtol=1e-5)


def test_masked_band_l2_ignores_changes_inside_the_mask():
    x = torch.zeros(1, 3, 16, 16)
    y = x.clone()
    y[..., 4:7, 5:9] = 1.0  # a change confined to a box
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 4:7, 5:9] = True
    outside = masked_band_l2(x, y, mask, inside=False)
    inside = masked_band_l2(x, y, mask, inside=True)
    assert all(float(v) == 0.0 for v in outside.values())
    # a coefficient counts as masked when any of its 2x2 pixels is: rows 4..6 -> 2..3, cols 5..8 -> 2..4,
    # 2 x 3 coefficients x 3 colours; the box's energy is preserved by the orthonormal transform
    energy = float((y - x).pow(2).sum())
    total = sum(float(v) for v in inside.values()) * 2 * 3 * 3
    assert total == pytest.approx(energy, rel=1e-5)


def test_choose_strength_takes_the_smallest_that_meets_the_target():
    mod = _script("fit_directions")
    table = [{"strength": 1.0, "success_add": 0.5, "success_remove": 0.9, "leakage_max": 0.0},
             {"strength": 2.0, "success_add": 0.95, "success_remove": 0.92, "leakage_max": 0.05},
             {"strength": 4.0, "success_add": 1.0, "success_remove": 1.0, "leakage_max": 0.3}]
    assert mod.choose_strength(table, 0.9, 0.1) == (2.0, True)
    assert mod.choose_strength(table, 0.99, 0.1) == (2.0, False)  # best worst-case within the leakage bound
    assert mod.direction_name("has_glasses") == "glasses" and mod.direction_name("mouth_open") == "mouth_open"


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """A copy of the demo bundle with a random judge and two directions fitted by fit_directions.py."""
    out = tmp_path_factory.mktemp("bundle")
    for f in ("wagi.pt", "l2_restyle.pt", "swagan128.pt", "manifest.json"):
        shutil.copy(DEMO / f, out / f)
    m = read_manifest(out)
    m["models"] = {k: v for k, v in m["models"].items() if k in ("wagi", "l2_restyle", "swagan128")}
    (out / "manifest.json").write_text(json.dumps(m))
    torch.manual_seed(0)
    save_judge(AttributeJudge(channels=(8, 8, 16, 16, 32), convs=(1, 1, 1, 1, 1)), out / "judge.pt")
    rc = _script("fit_directions").main(["--bundle", str(out), "--n", "64", "--tune-n", "6", "--strengths", "1,3",
                                         "--attribute", "has_glasses", "--attribute", "has_text", "--device", "cpu",
                                         "--batch-size", "32"])
    assert rc == 0
    return out


@pytest.mark.slow
def test_fit_directions_ships_named_unit_directions(tiny_bundle):
    dirs = load_shipped(tiny_bundle)
    assert set(dirs) == {"glasses", "text"}
    for d in dirs.values():
        assert d.direction.shape == (1, 256)
        assert float(d.direction.norm()) == pytest.approx(1.0, abs=1e-5)
        assert d.strength in (1.0, 3.0)
        assert len(d.entry["tuning"]["table"]) == 2
    assert resolve_shipped("glasses", tiny_bundle) == tiny_bundle / "directions" / "glasses.npy"
    assert resolve_shipped("nope", tiny_bundle) is None
    problems, n = verify_bundle(tiny_bundle)
    assert problems == [] and n == 5


def test_eval_edits_writes_tables_and_figure(tiny_bundle, tmp_path):
    rc = _script("eval_edits").main(["--bundle", str(tiny_bundle), "--n", "4", "--device", "cpu", "--output",
                                     str(tmp_path), "--no-progress", "--model", "wagi"])
    assert rc == 0
    data = json.loads((tmp_path / "edits.json").read_text())
    rows = data["rows"]
    assert {(r["direction"], r["fusion"]) for r in rows} == {("glasses", False), ("glasses", True),
                                                             ("text", False), ("text", True)}
    for r in rows:
        assert r["n_add"] + r["n_remove"] == 4
        assert 0.0 <= r["leakage_max"] <= 1.0
        assert r["preserve_high"] is not None and r["preserve_high"] >= 0
    assert (tmp_path / "edits_figure.png").stat().st_size > 1000
    assert "| wagi | on |" in (tmp_path / "edits.md").read_text()
    # a second run refuses to overwrite without the flag
    assert _script("eval_edits").main(["--bundle", str(tiny_bundle), "--output", str(tmp_path), "--device", "cpu"]) == 2


def test_ghosting_is_zero_for_a_perfect_removal_and_one_for_none():
    faces = prepare_faces([1_003_000 + i for i in range(12)], ["has_text"])
    with_text = [f for f in faces if f.labels["has_text"]]
    assert with_text, "some of 12 faces carry text"
    judge = AttributeJudge(channels=(8, 8), convs=(1, 1))
    bench = EditBenchmark(judge.eval(), with_text, torch.device("cpu"))
    gt = torch.ones(len(with_text), dtype=torch.bool)
    x = bench.images
    clean = torch.stack([f.without["has_text"] for f in with_text])
    from wagi.editing.benchmark import EditSetting
    j = bench._judge_all(x)
    perfect = bench._score(EditSetting("m", "text", "has_text", 1.0, False), gt, clean, x, j)
    none = bench._score(EditSetting("m", "text", "has_text", 1.0, False), gt, x, x, j)
    assert perfect["ghost_high"] == pytest.approx(0.0, abs=1e-12)
    assert none["ghost_relative"] == pytest.approx(1.0, rel=1e-6)
    # removing exactly the text changes nothing outside its dilated mask
    assert perfect["preserve_high"] == pytest.approx(0.0, abs=1e-12) and perfect["preserve_LL"] < 1e-10


def test_edit_py_resolves_a_shipped_direction_by_name(tiny_bundle, monkeypatch):
    from wagi.editing import shipped
    from wagi.editing.specs import build_edit
    from wagi.models.wagi import WaGI
    monkeypatch.setattr(shipped, "DEMO_BUNDLE", tiny_bundle)
    model = WaGI.load(tiny_bundle / "wagi.pt")
    edit = build_edit(model, "boundary:glasses")
    ref = torch.from_numpy(np.load(tiny_bundle / "directions" / "glasses.npy"))
    assert torch.allclose(edit.direction.float().cpu(), ref.float())
    s = load_shipped(tiny_bundle)["glasses"].strength
    assert edit.default_strengths == (-s, 0.0, s)  # remove, unchanged, add at the documented strength
    with pytest.raises((ValueError, FileNotFoundError)):
        build_edit(model, "boundary:no_such_direction")
    assert isinstance(load_shipped(tiny_bundle)["glasses"], ShippedDirection)


def test_fd_judge_script_compares_generators(tmp_path):
    torch.manual_seed(0)
    save_judge(AttributeJudge(channels=(8, 16), convs=(1, 1)), tmp_path / "j.pt")
    mod = _script("fd_judge")
    out = tmp_path / "fd.json"
    assert mod.main(["--judge", str(tmp_path / "j.pt"), "--n", "16", "--batch-size", "8", "--device", "cpu",
                     "--generator", f"g={DEMO / 'swagan128.pt'}", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["fd_judge"]["g"] > 0 and res["n"] == 16
    # pixel statistics: real demo faces never leave [-1, 1]; the generator's values are counted before the clamp
    assert res["pixels"]["real"]["out_of_range"] == 0.0 and all(0.2 < s < 0.8 for s in res["pixels"]["real"]["std"])
    assert 0.0 <= res["pixels"]["g"]["out_of_range"] < 1.0 and len(res["pixels"]["g"]["std"]) == 3
    # decision rates: every attribute of the judge, binary rates in [0, 1], class frequencies summing to 1
    judge = AttributeJudge(channels=(8, 16), convs=(1, 1))
    assert set(res["decisions"]["real"]) == set(judge.names) == set(res["decision_gaps"]["g"])
    for k, v in res["decisions"]["g"].items():
        assert (len(v) == 1 and 0 <= v[0] <= 1) if k in judge.binary else sum(v) == pytest.approx(1, abs=1e-4)
    rates = mod.DecisionRates(judge)
    rates.add({"has_glasses": torch.tensor([1.0, -2.0, 0.5, -0.1]), "eye_colour": torch.eye(3)[[0, 2, 2, 2]]})
    rates.add({"has_glasses": torch.tensor([-1.0, -1.0, -1.0, -1.0]), "eye_colour": torch.eye(3)[[1, 1, 1, 1]]})
    summary = rates.summary()
    assert summary == {"has_glasses": [0.25], "eye_colour": [0.125, 0.5, 0.375]}
    gaps = mod.decision_gaps(summary, {"has_glasses": [0.75], "eye_colour": [0.125, 0.375, 0.5]})
    assert gaps == {"has_glasses": 0.5, "eye_colour": 0.125} and list(gaps) == ["has_glasses", "eye_colour"]
    stats = mod.PixelStats()
    stats.add(torch.tensor([[[[0.5, -1.5]], [[0.0, 0.0]], [[1.0, 3.0]]]]))  # (1, 3, 1, 2)
    summary = stats.summary()
    assert summary["mean"] == [-0.5, 0.0, 2.0] and summary["std"] == [1.0, 0.0, 1.0]
    assert summary["out_of_range"] == pytest.approx(2 / 6, abs=1e-5)
    # the same features on both sides give a distance of (numerically) zero
    real = mod.real_features(AttributeJudge(channels=(8, 16), convs=(1, 1)).eval(), 12, 6, torch.device("cpu"),
                             progress=False)
    from wagi.metrics import feature_statistics, frechet_distance
    mu, sig = feature_statistics(real)
    assert frechet_distance(mu, sig, mu, sig) == pytest.approx(0.0, abs=1e-6)
    assert mod.main(["--judge", str(tmp_path / "missing.pt"), "--n", "4"]) == 2
