"""Tests of wagi.losses: hand-computed values, identities, gradients, weight loading and errors."""
import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from wagi.losses import (
    ID_CROP,
    ID_INPUT_SIZE,
    DeltaRegularizer,
    IDLoss,
    InversionCriterion,
    L2Loss,
    LatticeLoss,
    LPIPSLoss,
    NonFiniteLossError,
    WaveletLoss,
    WNormLoss,
)

ALEX_FILE = "alexnet-owt-7be5be79.pth"


# ------------------------------------------------------------------------------------------------
# naive Haar on 2x2 blocks, written independently of wagi.wavelets


def naive_haar(x):
    """(N, C, H, W) -> dict of LL, LH, HL, HH, each (N, C, H/2, W/2), by explicit per-block arithmetic."""
    n, c, h, w = x.shape
    out = {k: torch.zeros(n, c, h // 2, w // 2, dtype=x.dtype) for k in ("LL", "LH", "HL", "HH")}
    for i in range(h // 2):
        for j in range(w // 2):
            a = x[:, :, 2 * i, 2 * j]
            b = x[:, :, 2 * i, 2 * j + 1]
            cc = x[:, :, 2 * i + 1, 2 * j]
            d = x[:, :, 2 * i + 1, 2 * j + 1]
            out["LL"][:, :, i, j] = (a + b + cc + d) / 2
            out["LH"][:, :, i, j] = (a + b - cc - d) / 2
            out["HL"][:, :, i, j] = (a - b + cc - d) / 2
            out["HH"][:, :, i, j] = (a - b - cc + d) / 2
    return out


def mse(a, b):
    return ((a - b) ** 2).mean()


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    x_hat = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    return x_hat, x


# ------------------------------------------------------------------------------------------------
# WaveletLoss


def test_wavelet_one_level_matches_hand_computation(pair):
    x_hat, x = pair
    bw = {"LH": 0.5, "HL": 2.0, "HH": 1.5}
    a, b = naive_haar(x_hat), naive_haar(x)
    expected = sum(w * mse(a[k], b[k]) for k, w in bw.items())
    got = WaveletLoss(levels=1, band_weights=bw)(x_hat, x)
    assert got.shape == ()
    assert torch.allclose(got, expected, rtol=1e-12, atol=0)

    expected_sum = sum(w * ((a[k] - b[k]) ** 2).sum() for k, w in bw.items())
    got_sum = WaveletLoss(band_weights=bw, reduction="sum")(x_hat, x)
    assert torch.allclose(got_sum, expected_sum, rtol=1e-12, atol=0)


def test_wavelet_two_levels_matches_hand_computation(pair):
    x_hat, x = pair
    bw = {"LH": 1.0, "HL": 0.25, "HH": 2.0, "LL": 3.0}
    lw = [1.0, 0.5]
    a1, b1 = naive_haar(x_hat), naive_haar(x)
    a2, b2 = naive_haar(a1["LL"]), naive_haar(b1["LL"])
    expected = sum(lw[0] * bw[k] * mse(a1[k], b1[k]) for k in ("LH", "HL", "HH"))
    expected = expected + sum(lw[1] * bw[k] * mse(a2[k], b2[k]) for k in ("LH", "HL", "HH"))
    expected = expected + lw[1] * bw["LL"] * mse(a2["LL"], b2["LL"])
    got = WaveletLoss(levels=2, band_weights=bw, level_weights=lw, include_ll=True)(x_hat, x)
    assert torch.allclose(got, expected, rtol=1e-12, atol=0)

    # default: HF bands of both levels, unit weights, no LL
    expected_default = sum(mse(a1[k], b1[k]) + mse(a2[k], b2[k]) for k in ("LH", "HL", "HH"))
    assert torch.allclose(WaveletLoss(levels=2)(x_hat, x), expected_default, rtol=1e-12, atol=0)


def test_wavelet_zero_for_identical(pair):
    _, x = pair
    assert WaveletLoss(levels=3, include_ll=True)(x.clone(), x).item() == 0.0


def test_wavelet_blind_to_low_frequency_error_unlike_l2():
    g = torch.Generator().manual_seed(1)
    # block-constant image plus a block-constant error: every 2x2 block of the error is constant
    x = torch.rand(1, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    x = x.repeat_interleave(2, 2).repeat_interleave(2, 3)
    offset = torch.rand(1, 3, 4, 4, generator=g, dtype=torch.float64).repeat_interleave(2, 2).repeat_interleave(2, 3)
    x_hat = x + 0.3 + offset
    assert WaveletLoss()(x_hat, x).item() == 0.0
    assert L2Loss()(x_hat, x).item() > 0.09


def test_wavelet_sees_row_alternating_error_in_lh_only():
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    rows = torch.tensor([1.0, -1.0] * 4, dtype=torch.float64).view(1, 1, 8, 1)
    x_hat = x + 0.2 * rows.expand(1, 1, 8, 8)
    bands = WaveletLoss().per_band(x_hat, x)
    assert bands["LL"].item() == 0.0 and bands["HL1"].item() == 0.0 and bands["HH1"].item() == 0.0
    assert math.isclose(bands["LH1"].item(), 0.4 ** 2, rel_tol=1e-12)  # (a+b-c-d)/2 = (0.2+0.2+0.2+0.2)/2
    # all the error is high-frequency: MSE_pixel = LH/4, so L_wav == 4 * L2
    assert math.isclose(WaveletLoss()(x_hat, x).item(), 4 * L2Loss()(x_hat, x).item(), rel_tol=1e-12)


def test_band_mses_sum_to_four_times_pixel_mse(pair):
    x_hat, x = pair
    b1 = WaveletLoss(levels=1).per_band(x_hat, x)
    assert set(b1) == {"LH1", "HL1", "HH1", "LL"}
    assert torch.allclose(sum(b1.values()), 4 * mse(x_hat, x), rtol=1e-12, atol=0)
    b2 = WaveletLoss(levels=2).per_band(x_hat, x)
    two = (b2["LH1"] + b2["HL1"] + b2["HH1"]) / 4 + (b2["LH2"] + b2["HL2"] + b2["HH2"] + b2["LL"]) / 16
    assert torch.allclose(two, mse(x_hat, x), rtol=1e-12, atol=0)
    # the loss with LL included and mean reduction is exactly 4 x pixel MSE
    full = WaveletLoss(include_ll=True)(x_hat, x)
    assert torch.allclose(full, 4 * mse(x_hat, x), rtol=1e-12, atol=0)


def test_wavelet_gradient(pair):
    x_hat, x = pair
    x_hat = x_hat.clone().requires_grad_(True)
    WaveletLoss(include_ll=True)(x_hat, x).backward()
    # 4 * mean(e^2) has gradient 8 e / numel
    assert torch.allclose(x_hat.grad, 8 * (x_hat - x).detach() / x.numel(), rtol=1e-12, atol=1e-15)
    small = x_hat.detach()[:1, :1].clone().requires_grad_(True)
    target = x[:1, :1]
    loss = WaveletLoss(levels=2, band_weights={"HL": 1.0, "HH": 0.5})
    assert torch.autograd.gradcheck(lambda t: loss(t, target), (small,))


def test_wavelet_resize_to_pools_first(pair):
    x_hat, x = pair
    got = WaveletLoss(resize_to=4)(x_hat, x)
    want = WaveletLoss()(F.avg_pool2d(x_hat, 2), F.avg_pool2d(x, 2))
    assert torch.allclose(got, want, rtol=1e-12, atol=0)


def test_wavelet_validation(pair):
    x_hat, x = pair
    with pytest.raises(ValueError, match="unknown bands"):
        WaveletLoss(band_weights={"XY": 1.0})
    with pytest.raises(ValueError, match="include_ll"):
        WaveletLoss(band_weights={"LL": 1.0, "LH": 1.0})
    with pytest.raises(ValueError, match="levels"):
        WaveletLoss(levels=0)
    with pytest.raises(ValueError, match="level_weights"):
        WaveletLoss(levels=2, level_weights=[1.0])
    with pytest.raises(ValueError, match="reduction"):
        WaveletLoss(reduction="max")
    with pytest.raises(ValueError, match="positive weight"):
        WaveletLoss(band_weights={"LH": 0.0})
    with pytest.raises(ValueError, match=r"levels=4\) needs H and W divisible by 16, got 8x8"):
        WaveletLoss(levels=4)(x_hat, x)
    with pytest.raises(ValueError, match="equal shape"):
        WaveletLoss()(x_hat, x[:, :, :4])


# ------------------------------------------------------------------------------------------------
# L2, WNorm, Delta


def test_l2_is_mse(pair):
    x_hat, x = pair
    assert torch.allclose(L2Loss()(x_hat, x), mse(x_hat, x), rtol=1e-12, atol=0)


def test_w_norm_and_delta_hand_computation():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    avg = torch.randn(5, generator=g, dtype=torch.float64)
    want = sum(math.sqrt(sum((w[n, i, d].item() - avg[d].item()) ** 2 for i in range(4) for d in range(5)))
               for n in range(3)) / 3
    assert math.isclose(WNormLoss()(w, avg).item(), want, rel_tol=1e-12)
    want_raw = sum(w[n].pow(2).sum().sqrt().item() for n in range(3)) / 3
    assert math.isclose(WNormLoss(start_from_latent_avg=False)(w).item(), want_raw, rel_tol=1e-12)
    with pytest.raises(ValueError, match="latent_avg"):
        WNormLoss()(w)

    def delta(k):
        return sum(sum(math.sqrt(sum((w[n, i, d].item() - w[n, 0, d].item()) ** 2 for d in range(5)))
                       for n in range(3)) / 3 for i in range(1, k + 1))

    assert math.isclose(DeltaRegularizer()(w).item(), delta(3), rel_tol=1e-12)
    assert math.isclose(DeltaRegularizer()(w, n_active=2).item(), delta(2), rel_tol=1e-12)
    # all latents equal: zero, with a finite (zero) gradient at the kink
    same = w[:, :1].expand(3, 4, 5).clone().requires_grad_(True)
    DeltaRegularizer()(same).backward()
    assert torch.equal(same.grad, torch.zeros_like(same))


# ------------------------------------------------------------------------------------------------
# LPIPS


@pytest.fixture(scope="module")
def alex_state(tmp_path_factory):
    """A randomly initialised torchvision AlexNet trunk saved like the hub file (plus one classifier key)."""
    torch.manual_seed(3)
    from torchvision.models import alexnet

    full = alexnet(weights=None).state_dict()
    state = {k: v for k, v in full.items() if k.startswith("features.")}
    state["classifier.6.bias"] = full["classifier.6.bias"]  # the real file has the classifier: it must be ignored
    path = tmp_path_factory.mktemp("alex") / "random_alexnet.pth"
    torch.save(state, path)
    return path, state


def _trunk_equals_file(loss, state):
    trunk = loss.model.net.state_dict()
    assert len(trunk) == 10  # 5 convolutions x (weight, bias)
    for key, value in trunk.items():
        assert torch.equal(value, state["features." + key.split(".", 1)[1]]), key


def test_lpips_loads_trunk_from_weights_path(alex_state):
    path, state = alex_state
    loss = LPIPSLoss(net="alex", weights_path=path, resize_to=None)
    _trunk_equals_file(loss, state)
    # independent of the key mapping: the lpips taps equal torchvision's AlexNet features with the file's weights
    from torchvision.models import alexnet

    ref = alexnet(weights=None)
    ref.load_state_dict({**ref.state_dict(), **state}, strict=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        taps = loss.model.net(x)
        assert torch.equal(taps.relu1, ref.features[:2](x))
        assert torch.equal(taps.relu5, ref.features[:12](x))
    import lpips

    package = torch.load(os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "alex.pth"),
                         map_location="cpu", weights_only=True)
    assert torch.equal(loss.model.lin0.model[1].weight, package["lin0.model.1.weight"])
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.model.training


def test_lpips_loads_trunk_from_torch_hub_cache(alex_state, tmp_path, monkeypatch):
    path, state = alex_state
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    os.symlink(path, cache / ALEX_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    loss = LPIPSLoss(net="alex", resize_to=None)
    assert loss.weights_path == str(cache / ALEX_FILE)
    _trunk_equals_file(loss, state)


def test_lpips_values(alex_state):
    path, _ = alex_state
    loss = LPIPSLoss(weights_path=path, resize_to=None)
    g = torch.Generator().manual_seed(4)
    a = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    b = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    assert loss(a, a.clone()).item() == 0.0
    ab, ba = loss(a, b), loss(b, a)
    assert ab.shape == () and ab.item() > 0
    assert torch.allclose(ab, ba, rtol=1e-6, atol=0)
    # batch mean of the per-image distances
    singles = torch.stack([loss(a[i:i + 1], b[i:i + 1]) for i in range(2)])
    assert torch.allclose(ab, singles.mean(), rtol=1e-5, atol=0)
    # resize_to pools both images before the network
    pooled = LPIPSLoss(weights_path=path, resize_to=32)
    assert torch.allclose(pooled(a, b), loss(F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)), rtol=1e-5, atol=0)
    # follows the input dtype; gradient reaches x_hat only
    a64 = a.double().requires_grad_(True)
    out = loss(a64, b.double())
    assert out.dtype == torch.float64
    out.backward()
    assert a64.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())


def test_lpips_missing_weights_fails_before_building(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    import lpips

    def _must_not_build(*args, **kwargs):
        raise AssertionError("lpips.LPIPS was built before the weights check")

    monkeypatch.setattr(lpips, "LPIPS", _must_not_build)
    with pytest.raises(FileNotFoundError) as err:
        LPIPSLoss(net="alex")
    msg = str(err.value)
    assert ALEX_FILE in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg
    assert "loss.lpips_weights" in msg
    assert "\n" not in msg
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        LPIPSLoss(net="vgg")
    with pytest.raises(FileNotFoundError, match=r"loss\.lpips_weights='.*nowhere\.pth'"):
        LPIPSLoss(weights_path=tmp_path / "nowhere.pth")
    with pytest.raises(ValueError, match="net must be one of"):
        LPIPSLoss(net="resnet")


def test_lpips_rejects_wrong_architecture(alex_state, tmp_path):
    _, state = alex_state
    wrong = dict(state)
    wrong["features.13.weight"] = torch.zeros(1)
    p = tmp_path / "wrong.pth"
    torch.save(wrong, p)
    with pytest.raises(ValueError, match=r"unexpected \['features.13.weight'\]"):
        LPIPSLoss(weights_path=p)


# ------------------------------------------------------------------------------------------------
# ID loss with a tiny stand-in backbone


class TinyFace(nn.Module):
    """(N, 3, 112, 112) -> (N, 16); records its last input."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(3, 4, kernel_size=8, stride=8)
        self.fc = nn.Linear(4 * 14 * 14, 16)
        self.last_input = None

    def forward(self, x):
        self.last_input = x
        return self.fc(self.conv(x).flatten(1))


def test_id_loss_hand_computation_and_crop():
    net = TinyFace().double()
    loss = IDLoss(backbone=net)
    g = torch.Generator().manual_seed(6)
    x = torch.rand(2, 3, 256, 256, generator=g, dtype=torch.float64) * 2 - 1
    x_hat = torch.rand(2, 3, 256, 256, generator=g, dtype=torch.float64) * 2 - 1

    value, sim = loss(x_hat, x, return_similarity=True)
    top, bottom, left, right = ID_CROP
    assert (top, bottom, left, right) == (35, 223, 32, 220) and ID_INPUT_SIZE == 112
    crop = F.adaptive_avg_pool2d(x_hat[:, :, top:bottom, left:right], ID_INPUT_SIZE)
    assert torch.equal(net.last_input, crop)
    with torch.no_grad():
        fa, fb = net(crop), net(F.adaptive_avg_pool2d(x[:, :, top:bottom, left:right], ID_INPUT_SIZE))
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1))
    assert torch.allclose(sim, cos, rtol=1e-12, atol=0)
    assert torch.allclose(value, (1 - cos).mean(), rtol=1e-12, atol=0)

    assert abs(loss(x.clone(), x).item()) < 1e-12

    # pixels outside the crop do not matter; pixels inside do
    outside = x_hat.clone()
    outside[:, :, :top] = 5.0
    outside[:, :, bottom:] = -5.0
    outside[:, :, :, :left] = 3.0
    outside[:, :, :, right:] = -3.0
    assert loss(outside, x).item() == value.item()
    inside = x_hat.clone()
    inside[:, :, top:top + 8, left:left + 8] = 5.0
    assert loss(inside, x).item() != value.item()


def test_id_loss_pools_other_sizes_to_256_and_batch_one():
    loss = IDLoss(backbone=TinyFace().double())
    g = torch.Generator().manual_seed(7)
    x = torch.rand(1, 3, 512, 512, generator=g, dtype=torch.float64) * 2 - 1
    x_hat = torch.rand(1, 3, 512, 512, generator=g, dtype=torch.float64) * 2 - 1
    value, sim = loss(x_hat, x, return_similarity=True)
    assert value.shape == () and sim.shape == (1,)
    assert torch.allclose(value, loss(F.avg_pool2d(x_hat, 2), F.avg_pool2d(x, 2)), rtol=1e-12, atol=0)


def test_id_loss_gradient_and_frozen_backbone():
    loss = IDLoss(backbone=TinyFace())
    g = torch.Generator().manual_seed(8)
    x = torch.rand(1, 3, 256, 256, generator=g) * 2 - 1
    x_hat = (torch.rand(1, 3, 256, 256, generator=g) * 2 - 1).requires_grad_(True)
    loss(x_hat, x).backward()
    assert x_hat.grad[:, :, 40:200, 40:200].abs().sum() > 0
    assert x_hat.grad[:, :, :ID_CROP[0]].abs().sum() == 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.backbone.training


def test_id_loss_with_the_real_arcface_network(tmp_path):
    from wagi.models.backbones import IRSEBackboneArcFace

    torch.manual_seed(10)
    arc = IRSEBackboneArcFace()
    path = tmp_path / "model_ir_se50.pth"
    torch.save(arc.state_dict(), path)
    loss = IDLoss(weights_path=path)
    for key, value in arc.state_dict().items():
        assert torch.equal(loss.backbone.state_dict()[key], value), key
    # the crop is pooled to the size the network's embedding head is built for (its forward checks it)
    assert loss.backbone.input_size == ID_INPUT_SIZE
    assert not loss.backbone.training and not any(p.requires_grad for p in loss.parameters())


def test_id_loss_missing_weights(tmp_path):
    for path in (None, tmp_path / "missing.pth"):
        with pytest.raises(FileNotFoundError) as err:
            IDLoss(weights_path=path)
        msg = str(err.value)
        assert "model_ir_se50.pth" in msg and "loss.id_weights" in msg and "pretrained/" in msg
    assert "missing.pth" in msg


# ------------------------------------------------------------------------------------------------
# InversionCriterion


def _criterion_inputs(seed=9):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    x_hat = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    w = torch.randn(2, 6, 8, generator=g)
    avg = torch.randn(8, generator=g)
    return x_hat, x, w, avg


def test_criterion_total_is_weighted_sum(alex_state):
    path, _ = alex_state
    lambdas = {"l2": 1.0, "wavelet": 0.7, "lpips": 0.8, "id": 0.1, "w_norm": 0.005, "delta": 2e-4}
    crit = InversionCriterion.from_config({
        "lambdas": lambdas,
        "wavelet": {"levels": 2, "band_weights": {"LH": 1.0, "HL": 1.0, "HH": 0.5}},
        "lpips": {"weights_path": str(path), "resize_to": None},
        "id": {"backbone": TinyFace()},
        "log_subbands": True,
    })
    assert crit.active_terms == ("l2", "wavelet", "lpips", "id", "w_norm", "delta")
    x_hat, x, w, avg = _criterion_inputs()
    x_hat.requires_grad_(True)
    aligner = torch.tensor(0.37)
    total, logs = crit(x_hat, x, w_plus=w, latent_avg=avg, extra_terms={"aligner_l1": (0.1, aligner)})

    separate = {
        "l2": mse(x_hat, x),
        "wavelet": WaveletLoss(levels=2, band_weights={"LH": 1.0, "HL": 1.0, "HH": 0.5})(x_hat, x),
        "lpips": crit.terms["lpips"](x_hat, x),
        "id": crit.terms["id"](x_hat, x),
        "w_norm": WNormLoss()(w, avg),
        "delta": DeltaRegularizer()(w),
    }
    want = sum(lambdas[k] * v for k, v in separate.items()) + 0.1 * aligner
    assert torch.allclose(total, want, rtol=1e-6, atol=0)
    for k, v in separate.items():
        assert math.isclose(logs[k], v.item(), rel_tol=1e-6), k
        assert math.isclose(logs[f"{k}_weighted"], lambdas[k] * v.item(), rel_tol=1e-6), k
    assert math.isclose(logs["aligner_l1"], 0.37, rel_tol=1e-6)
    assert math.isclose(logs["aligner_l1_weighted"], 0.037, rel_tol=1e-6)
    assert math.isclose(logs["total"], want.item(), rel_tol=1e-6)
    assert math.isclose(logs["id_similarity"], 1 - logs["id"], rel_tol=1e-5)
    assert {"wavelet/LH1", "wavelet/HH2", "wavelet/LL"} <= set(logs)
    assert all(isinstance(v, float) for v in logs.values())
    total.backward()
    assert x_hat.grad.abs().sum() > 0


def test_criterion_skips_zero_lambda_terms(tmp_path, monkeypatch):
    # no LPIPS or ArcFace weights anywhere: a config with their lambdas at 0 still builds
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    crit = InversionCriterion({"l2": 1.0, "wavelet": 1.0, "lpips": 0.0, "id": 0.0},
                              lpips={"net": "alex"}, id={"weights_path": str(tmp_path / "model_ir_se50.pth")})
    assert crit.active_terms == ("l2", "wavelet")
    x_hat, x, _, _ = _criterion_inputs()
    total, logs = crit(x_hat, x)
    assert set(logs) == {"l2", "l2_weighted", "wavelet", "wavelet_weighted", "total"}
    # 1 level, HF bands only: L2 + L_wav = MSE_LL/4 + (1/4 + 1) * sum_HF MSE
    bands = WaveletLoss().per_band(x_hat, x)
    want = bands["LL"] / 4 + 1.25 * (bands["LH1"] + bands["HL1"] + bands["HH1"])
    assert torch.allclose(total, want, rtol=1e-5, atol=0)
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth"):
        InversionCriterion({"l2": 1.0, "lpips": 0.8})


def test_criterion_non_finite_names_the_term():
    crit = InversionCriterion({"l2": 1.0, "wavelet": 1.0, "w_norm": 0.01})
    x_hat, x, w, avg = _criterion_inputs()
    bad = x_hat.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError) as err:
        crit(bad, x, w_plus=w, latent_avg=avg)
    assert err.value.term == "l2" and math.isnan(err.value.value) and "'l2'" in str(err.value)
    bad_w = w.clone()
    bad_w[1, 2, 3] = float("inf")
    with pytest.raises(NonFiniteLossError) as err:
        crit(x_hat, x, w_plus=bad_w, latent_avg=avg)
    assert err.value.term == "w_norm" and err.value.value == float("inf")
    with pytest.raises(NonFiniteLossError, match="'aligner_l1'"):
        crit(x_hat, x, w_plus=w, latent_avg=avg, extra_terms={"aligner_l1": (0.1, torch.tensor(float("nan")))})
    assert "at step 12" in str(NonFiniteLossError("lpips", float("nan"), step=12))
    # checking can be turned off (e.g. to inspect the logs)
    quiet = InversionCriterion({"l2": 1.0}, check_finite=False)
    _, logs = quiet(bad, x)
    assert math.isnan(logs["l2"])


def test_criterion_config_errors():
    with pytest.raises(ValueError, match=r"unknown loss term\(s\) \['l1'\]"):
        InversionCriterion({"l1": 1.0})
    with pytest.raises(ValueError, match="no loss term has a positive weight"):
        InversionCriterion({"l2": 0.0})
    with pytest.raises(ValueError, match=r"\(loss\.l2\) must be"):
        InversionCriterion({"l2": -1.0})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['level'\] in the wavelet loss options"):
        InversionCriterion.from_config({"lambdas": {"l2": 1.0}, "wavelet": {"level": 2}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lambda'\] in loss config"):
        InversionCriterion.from_config({"lambda": {"l2": 1.0}})
    crit = InversionCriterion({"l2": 1.0, "delta": 1.0})
    x_hat, x, _, _ = _criterion_inputs()
    with pytest.raises(ValueError, match="'delta'.*w_plus"):
        crit(x_hat, x)
    with pytest.raises(ValueError, match="clashes"):
        crit(x_hat, x, w_plus=torch.zeros(2, 3, 4), extra_terms={"l2": (1.0, torch.tensor(0.0))})


# ------------------------------------------------------------------------------------------------
# lattice term


def _grid(s=64):
    return torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")


def test_lattice_loss_is_zero_without_period_structure_and_large_on_blocks():
    loss = LatticeLoss((4, 8, 16))
    x = torch.zeros(2, 3, 64, 64)
    yy, xx = _grid()
    # rows alternate in bands of 4 px (period 8): the fold at 8 and 16 is two-level (0.3 / 0.1), flat at 4
    blocks = (0.1 + 0.2 * (yy % 8 < 4).float()).expand(2, 3, 64, 64)
    terms = loss.per_period(blocks, x)
    assert float(terms[4]) == pytest.approx(0.0, abs=1e-10)
    assert float(terms[8]) == pytest.approx(0.25, rel=1e-5) and float(terms[16]) == pytest.approx(0.25, rel=1e-5)
    assert float(loss(blocks, x)) == pytest.approx(0.5 / 3, rel=1e-5)
    assert float(loss(3 * blocks, x)) == pytest.approx(0.5 / 3, rel=1e-5)  # scale-free, like lattice_amplitude
    from wagi.editing.fidelity import lattice_amplitude

    amp = lattice_amplitude(blocks, (8,))[8]  # a two-level pattern: a quarter of the squared amplitude
    assert float(terms[8]) == pytest.approx(float(amp[0]) ** 2 / 4, rel=1e-5)
    # a smooth error whose frequencies (1 and 3 cycles per image) are no multiple of 64/p: folds flat at every p
    smooth = (1 + 0.5 * torch.sin(2 * math.pi * xx / 64) * torch.sin(2 * math.pi * 3 * yy / 64)).expand(2, 3, 64, 64)
    assert float(loss(smooth, x)) < 1e-10
    noise = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # no structure, finite sample
    assert float(loss(noise, x)) < 0.02 < float(loss(blocks, x))


def test_lattice_loss_gradient_flattens_the_fold_without_raising_the_error():
    loss = LatticeLoss((8,))
    x = torch.zeros(1, 3, 32, 32)
    yy, xx = _grid(32)
    e = (0.1 + 0.2 * ((yy % 8 < 4) & (xx % 8 < 4)).float()).expand(1, 3, 32, 32).clone().requires_grad_(True)
    value = loss(e, x)
    value.backward()
    g = e.grad
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    # the normaliser carries no gradient: the step lowers the high pixels and raises the low ones by as much,
    # so the mean error stays and the fold flattens
    assert float(g.sum()) == pytest.approx(0.0, abs=1e-6)
    assert float(g[0, 0, 0, 0]) > 0 > float(g[0, 0, 0, 5])
    with torch.no_grad():
        stepped = e - 0.05 * g / g.abs().max()
    assert float(loss(stepped, x)) < value.item() and float(stepped.mean()) == pytest.approx(e.detach().mean().item())
    with pytest.raises(ValueError, match=">= 2"):
        LatticeLoss((1, 8))


def test_lattice_term_is_registered_with_its_config_keys():
    from wagi.builders import build_criterion
    from wagi.config import ConfigError, load_config
    from wagi.losses import LOSS_TERMS, lambda_key

    from .helpers import TINY_CONFIG

    assert "lattice" in LOSS_TERMS and lambda_key("lattice") == "loss.lattice"
    assert "lattice" not in build_criterion(load_config(TINY_CONFIG)).active_terms  # default: off
    crit = build_criterion(load_config(TINY_CONFIG, ["loss.lattice=0.5", "loss.lattice_periods=[8]"]))
    assert crit.terms["lattice"].periods == (8,)
    yy, _ = _grid(32)
    x = torch.zeros(2, 3, 32, 32)
    x_hat = (0.1 + 0.2 * (yy % 8 < 4).float()).expand(2, 3, 32, 32)
    total, logs = crit(x_hat, x, w_plus=torch.zeros(2, 4, 8))
    assert logs["lattice"] == pytest.approx(0.25, rel=1e-5) and logs["lattice/p8"] == pytest.approx(0.25, rel=1e-5)
    assert logs["lattice_weighted"] == pytest.approx(0.125, rel=1e-5)
    with pytest.raises(ConfigError, match=r"'loss\.lattice_periods\[0\]'.*>= 2"):
        load_config(TINY_CONFIG, ["loss.lattice_periods=[1]"])
    with pytest.raises(ConfigError, match=r"'loss\.lattice_periods\[0\]'.*does not fit"):
        load_config(TINY_CONFIG, ["loss.lattice=0.5", "loss.lattice_periods=[64]"])
