"""Fusion for edits: the change-kept and lattice measurements, the edit gate and fusion.edit_mode."""
import pytest
import torch

from wagi import wavelets as wv
from wagi.config import ConfigError, load_config
from wagi.editing.fidelity import change_kept, fold, lattice_amplitude, region_colour_error
from wagi.models.fusion import edit_change_gate
from wagi.models.wagi import WaGI

from .helpers import ROOT

TINY = str(ROOT / "configs" / "tiny_test.yaml")


def _imgs(seed, n=2, s=16):
    return torch.rand(n, 3, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_change_kept_is_the_projection_on_the_unfused_change():
    b0, e0 = _imgs(0), _imgs(1)
    a = e0 - b0
    f0 = _imgs(2)
    same = change_kept(b0, e0, f0, f0 + a)
    assert torch.allclose(same["pixel"], torch.ones(2)) and torch.allclose(same["high"], torch.ones(2))
    none = change_kept(b0, e0, f0, f0)
    assert torch.equal(none["pixel"], torch.zeros(2)) and torch.equal(none["high"], torch.zeros(2))
    half = change_kept(b0, e0, f0, f0 + 0.5 * a)
    assert torch.allclose(half["pixel"], torch.full((2,), 0.5))
    # cancelling only the high bands of the change keeps the pixels' low part and none of the high part
    y = wv.dwt(a)
    low_only = wv.idwt(torch.cat([y[:, :3], torch.zeros_like(y[:, 3:])], 1))
    k = change_kept(b0, e0, f0, f0 + low_only)
    assert torch.allclose(k["high"], torch.zeros(2), atol=1e-6) and bool((k["pixel"] < 0.9).all())
    assert torch.isnan(change_kept(b0, b0, f0, f0)["pixel"]).all()  # no change to keep
    with pytest.raises(ValueError, match="one shape"):
        change_kept(b0, e0, f0, _imgs(3, s=8))


def test_region_colour_error_is_the_local_mean_colour_difference():
    x = torch.zeros(2, 3, 8, 8)
    out = x.clone()
    out[0, 2, :4, :4] = 0.3  # a blue cast on a 4x4 badge of image 0...
    out[0, 0, 4:, 4:] = -0.3  # ...and an opposite red one elsewhere: the global mean offset is diluted
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True
    masks[0, :2, :2] = True
    err = region_colour_error(out, x, masks)
    assert err[0].item() == pytest.approx(0.3) and torch.isnan(err[1])  # image 1: no region
    masks[0, :4, :8] = True  # half the region without the cast
    assert region_colour_error(out, x, masks)[0].item() == pytest.approx(0.15)


def test_lattice_amplitude_finds_block_patterns_at_their_period():
    noise = torch.randn(4, 3, 128, 128, generator=torch.Generator().manual_seed(0)).abs() + 1
    flat = lattice_amplitude(noise)
    assert all(float(v.max()) < 0.25 for v in flat.values()), flat
    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    blocks = ((yy // 4 + xx // 4) % 2).float().expand(4, 3, 128, 128)  # a checker of 4-px blocks: period 8
    amp = lattice_amplitude(blocks + 1)
    assert float(amp[8].min()) > 0.6 and float(amp[16].min()) > 0.6
    assert float(amp[4].max()) < 1e-6  # modulo 4 both halves of the period fold together: flat
    assert fold(blocks, 8).shape == (4, 8, 8)
    with pytest.raises(ValueError, match="smaller than the period"):
        fold(torch.zeros(1, 1, 4, 4), 8)


def test_edit_change_gate_closes_only_around_new_edges():
    base = torch.zeros(1, 3, 32, 32)
    assert all(torch.equal(g, torch.ones_like(g)) for g in edit_change_gate(base, base, [8, 16], 0.1, 0.3).values())
    smooth = base + torch.linspace(0, 0.5, 32).view(1, 1, 1, 32)  # a colour ramp: no high-band change to speak of
    assert all(float(g.min()) > 0.9 for g in edit_change_gate(base, smooth, [8, 16], 0.1, 0.3).values())
    repaint = edit_change_gate(base, smooth, [16], 0.1, 0.3, dilate=0, signal="pixel")[16]  # measured on pixels
    assert float(repaint[0, 0, 0, 0]) == 1.0 and float(repaint[0, 0, 0, 15]) == 0.0
    with pytest.raises(ValueError, match="signal"):
        edit_change_gate(base, smooth, [16], 0.1, 0.3, signal="colour")
    edged = base.clone()
    edged[..., 11, 4:28] = 1.0  # a drawn 1-px line: strong high-band change in coefficient row 5 only
    g = edit_change_gate(base, edged, [16], 0.1, 0.3, dilate=0)[16]
    assert float(g[0, 0, 5, 8]) == 0.0 and float(g[0, 0, 4, 8]) == 1.0 and float(g[0, 0, 6, 8]) == 1.0
    wide = edit_change_gate(base, edged, [16], 0.1, 0.3, dilate=1)[16]
    assert float(wide[0, 0, 4, 8]) == 0.0 and float(wide[0, 0, 6, 8]) == 0.0 and float(wide[0, 0, 8, 8]) == 1.0
    with pytest.raises(ValueError, match="lo < hi"):
        edit_change_gate(base, base, [8], 0.3, 0.1)


@pytest.fixture(scope="module")
def models():
    out = {}
    for mode, gate in (("reuse", "null"), ("reuse", "[0.1,0.3,0]"), ("recompute", "null")):
        torch.manual_seed(0)
        m = WaGI.from_config(load_config(TINY, ["fusion.kind=wavelet", f"fusion.edit_mode={mode}",
                                                f"fusion.edit_gate={gate}"])).eval()
        with torch.no_grad():
            for g in m.fusion.gates.values():
                g.fill_(0.7)  # an active fusion
        out[(mode, gate)] = m
    return out


def test_reused_corrections_keep_all_of_an_edits_change_and_strength_zero_is_the_reconstruction(models):
    x = _imgs(5, s=32)
    d = torch.randn(1, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        kept = {}
        for key, m in models.items():
            fused, w, ex = m.invert(x)
            torch.testing.assert_close(m.render_edit(w, d, 0.0, x, ex["base"]), fused, atol=0, rtol=0)
            fe = m.render_edit(w, d, 3.0, x, ex["base"])
            ue = m.render_edit(w, d, 3.0, fuse=False)
            kept[key] = change_kept(ex["base"], ue, fused, fe)
    full = kept[("reuse", "null")]  # the corrections cancel in fused(w + sd) - fused(w)
    assert float(full["pixel"].min()) > 0.999 and float(full["high"].min()) > 0.999
    gated = kept[("reuse", "[0.1,0.3,0]")]  # the gate removes old details only where the edit changed them
    assert bool((gated["high"] > 0.5).all())
    assert not torch.allclose(kept[("recompute", "null")]["high"], full["high"], atol=1e-4)


def test_edit_gate_config_is_checked():
    with pytest.raises(ConfigError, match="fusion.edit_gate"):
        load_config(TINY, ["fusion.edit_gate=[0.3,0.1,0]"])
    with pytest.raises(ConfigError, match="fusion.edit_gate"):
        load_config(TINY, ["fusion.edit_gate=[0.1,0.3]"])
    with pytest.raises(ConfigError, match="fusion.edit_mode"):
        load_config(TINY, ["fusion.edit_mode=paste"])


@pytest.mark.slow
def test_eval_fusion_script_reports_kept_change_lattice_and_colour(tmp_path, models):
    import json
    import subprocess
    import sys

    path = tmp_path / "m.pt"
    models[("reuse", "null")].save(path)
    out = tmp_path / "ev"
    cmd = [sys.executable, str(ROOT / "scripts" / "eval_fusion.py"), "--model", f"tiny={path}", "--n", "3",
           "--output", str(out), "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "fusion.json").read_text())["results"]["tiny"]
    assert res["edit_mode"] == "reuse" and res["edit_gate"] is None
    assert set(res["kept"]) == {"sefa0+", "sefa0-", "sefa1+", "sefa1-", "sefa2+", "sefa2-"}  # no shipped one fits
    assert all(k["pixel"] > 0.999 and k["high"] > 0.999 for k in res["kept"].values())
    assert set(res["lattice"]) == {"faces", "photos"} and set(res["lattice"]["photos"]["fused"]) == {"4", "8", "16"}
    c = res["colour"]["photos"]
    assert c["LL_fused"] > 0 and c["LL_unfused"] > 0 and c["mean_colour_offset"] >= 0
    from wagi.data.demo_faces import BINARY_ATTRIBUTES, sample_attributes

    present = {a for s in range(1_003_000, 1_003_003) for a in BINARY_ATTRIBUTES if sample_attributes(s)[a]}
    assert present and set(res["regions"]) == present  # one row per attribute some face draws
    assert all(r["faces"] >= 1 and r["fused"] >= 0 and r["unfused"] > 0 for r in res["regions"].values())
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    # ablations: one level left out, or each level from the residual the coarser ones left
    levels = models[("reuse", "null")].fusion.resolutions
    abl = subprocess.run(cmd + ["--overwrite", "--no-photos", "--drop-level", str(levels[0]), "--cascade"],
                         capture_output=True, text=True, timeout=300)
    assert abl.returncode == 0, abl.stderr
    res = json.loads((out / "fusion.json").read_text())["results"]["tiny"]
    assert res["fused_resolutions"] == levels[1:] and res["cascade"]
    # the cascade is the model's own path now (fusion.cascade), so edits run through it too: reused, they keep
    # all of the edit's change
    assert set(res["kept"]) == {"sefa0+", "sefa0-", "sefa1+", "sefa1-", "sefa2+", "sefa2-"}
    assert all(k["pixel"] > 0.999 and k["high"] > 0.999 for k in res["kept"].values())
    assert set(res["lattice"]) == {"faces"}
    bad = subprocess.run(cmd + ["--overwrite", "--drop-level", "3"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--drop-level 3" in bad.stderr
