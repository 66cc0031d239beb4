import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from wagi.evaluation import index_by_key, match_items
from wagi.imageio import ImageItem
from wagi.losses import IDLoss
from wagi.metrics import (
    METRICS,
    PerceptualMetrics,
    band_keys,
    band_shares,
    compute_metrics,
    gaussian_window,
    mse,
    psnr,
    register_metric,
    ssim,
    subband_l2,
)
from wagi.reports import fmt
from wagi.wavelets import dwt, idwt, merge_bands, split_bands

torch.set_num_threads(1)


def _images(n=2, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g, dtype=torch.float64) * 2 - 1


def _ssim_numpy(a, b):
    """Direct SSIM: every 11x11 window of every channel, weighted statistics by explicit sums."""
    a = (a + 1) / 2
    b = (b + 1) / 2
    k = np.arange(11) - 5.0
    g1 = np.exp(-k ** 2 / (2 * 1.5 ** 2))
    g = np.outer(g1, g1) / np.outer(g1, g1).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for ch in range(a.shape[0]):
        for i in range(a.shape[1] - 10):
            for j in range(a.shape[2] - 10):
                pa, pb = a[ch, i:i + 11, j:j + 11], b[ch, i:i + 11, j:j + 11]
                ma, mb = (g * pa).sum(), (g * pb).sum()
                va, vb = (g * (pa - ma) ** 2).sum(), (g * (pb - mb) ** 2).sum()
                cov = (g * (pa - ma) * (pb - mb)).sum()
                vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_direct_window_computation():
    x, y = _images(2, 2, 14, 13, seed=1), _images(2, 2, 14, 13, seed=2)
    y = 0.6 * x + 0.4 * y  # correlated, so every SSIM term matters
    got = ssim(x, y)
    assert got.shape == (2,)
    for i in range(2):
        assert got[i].item() == pytest.approx(_ssim_numpy(x[i].numpy(), y[i].numpy()), abs=1e-12)


def test_ssim_identity_symmetry_and_noise_order():
    x = _images(1, 3, 32, 32) * 0.5  # room for noise without clipping effects
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
    y = x + 0.1 * noise
    assert ssim(x, y).item() == pytest.approx(ssim(y, x).item(), abs=1e-12)
    values = [ssim(x, x + s * noise).item() for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[0] < 1.0 and values[-1] > -1.0


def test_ssim_window_sums_to_one_and_rejects_small_images():
    w = gaussian_window()
    assert w.shape == (11, 11) and w.sum().item() == pytest.approx(1.0, abs=1e-15)
    assert torch.equal(w, w.T) and w[5, 5] == w.max()
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 10, 32), torch.zeros(1, 3, 10, 32))
    with pytest.raises(ValueError, match="equal shape"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 18))


def test_mse_and_psnr_known_values():
    x = _images(3, 3, 16, 16) * 0.5
    offsets = torch.tensor([0.1, 0.2, 0.0], dtype=torch.float64).view(3, 1, 1, 1)
    y = x + offsets
    got = mse(x, y)
    torch.testing.assert_close(got, torch.tensor([0.01, 0.04, 0.0], dtype=torch.float64), rtol=1e-12, atol=1e-15)
    p = psnr(x, y)
    assert p[0].item() == pytest.approx(10 * math.log10(4 / 0.01), abs=1e-9)  # 26.0206 dB: peak-to-peak 2
    assert p[1].item() == pytest.approx(10 * math.log10(4 / 0.04), abs=1e-9)
    assert math.isinf(p[2].item()) and p[2].item() > 0
    # The same numbers as PSNR on [0, 1] images with peak 1.
    assert p[0].item() == pytest.approx(10 * math.log10(1 / ((0.1 / 2) ** 2)), abs=1e-9)


def test_subband_l2_hh_only_and_constant_only():
    x = _images(2, 3, 16, 16) * 0.5
    bands = split_bands(dwt(x))
    h = 0.05
    hh_only = idwt(merge_bands({**bands, "HH": bands["HH"] + h}))
    r = subband_l2(hh_only, x, levels=1)
    assert r["HH1"].tolist() == pytest.approx([h ** 2, h ** 2], rel=1e-10)
    for k in ("LL", "LH1", "HL1"):
        assert r[k].abs().max().item() < 1e-28
    assert r["share_HH1"].tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    c = 0.1
    r = subband_l2(x + c, x, levels=2)
    assert r["LL"].tolist() == pytest.approx([16 * c ** 2] * 2, rel=1e-10)  # level-2 LL = 4 x block mean
    assert all(r[k].abs().max().item() < 1e-28 for k in band_keys(2) if k != "LL")
    assert r["share_LL"].tolist() == pytest.approx([1.0, 1.0], abs=1e-12)


def test_subband_l2_sums_to_pixel_mse_and_shares_sum_to_one():
    x, y = _images(3, 3, 32, 32, seed=4), _images(3, 3, 32, 32, seed=5)
    r1 = subband_l2(x, y, levels=1)
    total = r1["LL"] + r1["LH1"] + r1["HL1"] + r1["HH1"]
    torch.testing.assert_close(total, 4 * mse(x, y), rtol=1e-12, atol=0)
    r3 = subband_l2(x, y, levels=3)
    pixel = sum(r3[k] * 4.0 ** -(3 if k == "LL" else int(k[2:])) for k in band_keys(3))
    torch.testing.assert_close(pixel, mse(x, y), rtol=1e-12, atol=0)
    torch.testing.assert_close(sum(r3["share_" + k] for k in band_keys(3)), torch.ones(3, dtype=torch.float64))
    assert math.isnan(band_shares({k: 0.0 for k in band_keys(1)}, 1)["LL"])  # zero error: undefined share


def test_registry_and_compute_metrics():
    assert {"subbands", "mse", "psnr", "ssim"} <= set(METRICS)
    x, y = _images(2, 3, 16, 16, seed=6), _images(2, 3, 16, 16, seed=7)
    out = compute_metrics(x, y, levels=2)
    assert set(out) == set(band_keys(2)) | {"share_" + k for k in band_keys(2)} | {"MSE", "PSNR", "SSIM"}
    assert all(v.shape == (2,) for v in out.values())
    torch.testing.assert_close(out["SSIM"], ssim(x, y))
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(x, y, names=["nope"])
    with pytest.raises(ValueError, match="already registered"):
        register_metric("mse")(lambda x, y, levels=1: {})


class _MeanAbs(nn.Module):
    """Stand-in for LPIPSLoss: a batch-mean distance, like the real one."""

    def forward(self, a, b):
        return (a - b).abs().mean()


class _TinyFace(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 8))

    def forward(self, x):
        return self.net(x)


def test_perceptual_metrics_per_image_wiring():
    x, y = _images(3, 3, 32, 32, seed=8).float(), _images(3, 3, 32, 32, seed=9).float()
    pm = PerceptualMetrics(_MeanAbs(), IDLoss(backbone=_TinyFace()))
    assert pm.columns == ["LPIPS", "ID"]
    out = pm(x, y)
    expected = (x - y).abs().mean(dim=(1, 2, 3)).double()
    torch.testing.assert_close(out["LPIPS"], expected)  # per image, not the batch mean
    same = pm(x, x)["ID"]
    torch.testing.assert_close(same, torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert (out["ID"] < 1 - 1e-4).all()


def test_perceptual_metrics_skip_without_weights_and_fail_for_given_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty hub cache
    pm = PerceptualMetrics.from_weights(default_id_weights=tmp_path / "absent.pth")
    assert pm.columns == [] and set(pm.skipped) == {"LPIPS", "ID"}
    assert "alexnet" in pm.skipped["LPIPS"] and "model_ir_se50.pth" in pm.skipped["ID"]
    assert str(tmp_path / "torch_home") in pm.skipped["LPIPS"] and str(tmp_path / "absent.pth") in pm.skipped["ID"]
    assert not any("lambda" in reason or "set " in reason for reason in pm.skipped.values())  # no training advice
    with pytest.raises(FileNotFoundError):
        PerceptualMetrics.from_weights(lpips_weights=tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError):
        PerceptualMetrics.from_weights(id_weights=tmp_path / "nope.pth")


def test_match_items_by_path_without_extension():
    gt = [ImageItem(f"/g/{r}", r) for r in ("a/b.jpg", "c.png", "d.png", "e.png", "e.jpg")]
    method = [ImageItem(f"/m/{r}", r) for r in ("a/b.png", "c.webp", "x.png", "d.png", "d.jpg")]
    index, gt_amb = index_by_key(gt)
    assert gt_amb == ["e.jpg", "e.png"] and set(index) == {"a/b", "c", "d"}
    m = match_items(index, method)
    assert [(k, g.rel, t.rel) for k, g, t in m.pairs] == [("a/b", "a/b.jpg", "a/b.png"), ("c", "c.png", "c.webp")]
    assert m.missing == [] and m.extra == ["x.png"] and m.ambiguous == ["d.jpg", "d.png"]
    m2 = match_items(index, method[:1])
    assert m2.missing == ["c.png", "d.png"]


def test_fmt_keeps_significant_digits():
    assert fmt(0.000123456789) == "0.00012346"
    assert fmt(12345.678) == "12346"
    assert fmt(float("nan")) == "n/a" and fmt(None) == "n/a" and fmt(float("inf")) == "inf"
