import pytest
import torch
import torch.nn.functional as F

from wagi import wavelets as wv
from wagi.models.fusion import FeatureFusion, ResidualAligner, WaveletFusion, haar_pyramid, random_perspective
from wagi.models.swagan import Generator
from wagi.tensors import resize

SIZE = 32


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    return Generator(SIZE, style_dim=32, n_mlp=2, channel_max=16).eval()


def _latent(g, n=2, seed=1):
    torch.manual_seed(seed)
    return torch.randn(n, g.n_latent, g.style_dim)


def test_haar_pyramid_shapes_and_content():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    p = haar_pyramid(x, 2)
    assert p.shape == (2, 3 + 18, 8, 8)
    torch.testing.assert_close(p[:, :9], wv.high_bands(wv.dwt(x)))


def test_fusion_at_init_leaves_output_unchanged_and_gets_gradients(gen):
    w = _latent(gen)
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    fusion = WaveletFusion(SIZE, [8, 16], width=8, levels=2, aligner=ResidualAligner(8))
    branches = gen.synthesize(w, randomize_noise=False)
    base = gen.compose(branches)
    corr = fusion(x, base)
    assert set(corr) == {8, 16} and corr[16].shape == (2, 9, 16, 16)
    fused = gen.compose(branches, corr)
    assert torch.equal(fused, base)
    (fused - x).pow(2).mean().backward()
    for r in ("8", "16"):
        assert fusion.gates[r].grad is not None and fusion.gates[r].grad.abs().sum() > 0


def test_identity_transfer_restores_the_finest_details(gen):
    """With gate 1 and a zero CNN, the correction at the finest level is exactly HF(DWT(x - x̂0)), so the
    fused image has the input's finest Haar details and the base image's LL."""
    w = _latent(gen)
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    fusion = WaveletFusion(SIZE, [SIZE // 2], width=4, gate_init=1.0)
    for p in fusion.nets.parameters():
        torch.nn.init.zeros_(p)
    branches = gen.synthesize(w, randomize_noise=False)
    base = gen.compose(branches)
    fused = gen.compose(branches, fusion(x, base))
    yb, yf, yx = wv.split_bands(wv.dwt(base)), wv.split_bands(wv.dwt(fused)), wv.split_bands(wv.dwt(x))
    torch.testing.assert_close(yf["LL"], yb["LL"], atol=1e-5, rtol=0)
    for b in ("LH", "HL", "HH"):
        torch.testing.assert_close(yf[b], yx[b], atol=1e-5, rtol=0)
    err = wv.subband_mse(fused, x)
    assert err["LH1"] < 1e-9 and err["HH1"] < 1e-9 and err["LL"] > 1e-3


def test_aligner_is_identity_at_init_and_trainable():
    al = ResidualAligner(4, work_size=16)
    d, t = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(al(d, t), d, atol=1e-5, rtol=0)
    loss = (al(d, t) - d.roll(1, dims=-1)).abs().mean()
    loss.backward()
    assert al.flow.weight.grad.abs().sum() > 0


def test_aligner_warps_by_its_displacement_field():
    """A constant displacement of one pixel (2/W in normalised units) shifts Δ by one pixel."""
    al = ResidualAligner(4, work_size=16)
    with torch.no_grad():
        al.flow.bias.copy_(torch.tensor([2.0 / 32, 0.0]))
    d = torch.randn(1, 3, 32, 32)
    out = al(d, torch.zeros_like(d))
    torch.testing.assert_close(out[..., :-1], d[..., 1:], atol=1e-5, rtol=0)
    assert out[..., -1].abs().max() < 1e-6  # zeros flow in from outside


def test_aligner_learns_to_undo_a_shift():
    torch.manual_seed(0)
    al = ResidualAligner(8, work_size=16)
    opt = torch.optim.Adam(al.parameters(), lr=3e-3)
    d = torch.nn.functional.avg_pool2d(torch.randn(4, 3, 34, 34), 3, 1)  # smooth maps, 32x32
    shifted = torch.roll(d, 1, dims=-1)
    first = None
    for _ in range(60):
        loss = (al(shifted, d) - d)[..., 2:-2].abs().mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_level_width_halves_above_128():
    from wagi.models.fusion import level_width

    assert [level_width(64, r) for r in (32, 128, 256, 512)] == [64, 64, 32, 16]


def test_random_perspective_is_seeded():
    x = torch.randn(1, 3, 16, 16)
    a = random_perspective(x, 0.3, 1.0, generator=torch.Generator().manual_seed(3))
    b = random_perspective(x, 0.3, 1.0, generator=torch.Generator().manual_seed(3))
    c = random_perspective(x, 0.3, 0.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x) and torch.equal(c, x)


def test_feature_fusion_starts_at_identity(gen):
    w = _latent(gen)
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    ff = FeatureFusion(SIZE, 8, gen.channels[8], width=8)
    base = gen.compose(gen.synthesize(w, randomize_noise=False))
    cond = ff(x, base)
    assert cond[8][0].shape == (2, gen.channels[8], 8, 8)
    out = gen.compose(gen.synthesize(w, randomize_noise=False, feature_conditions=cond))
    torch.testing.assert_close(out, base, atol=1e-6, rtol=0)
    out.pow(2).mean().backward()
    assert ff.scale.weight.grad.abs().sum() > 0


def test_bad_resolutions_are_rejected():
    with pytest.raises(ValueError, match="not a feature resolution"):
        WaveletFusion(SIZE, [SIZE])
    with pytest.raises(ValueError, match="not a feature resolution"):
        WaveletFusion(SIZE, [12])


def test_one_resize_for_model_losses_and_editing():
    """wagi.tensors.resize: a 2x shrink is the exact 2x2 block mean, growing is bilinear, equal size and None
    return the input itself (the model, fusion, losses, trainer and editing all use this one function)."""
    from wagi.tensors import resize

    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    blocks = x.reshape(2, 3, 4, 2, 4, 2).mean(dim=(3, 5))
    assert torch.allclose(resize(x, 4), blocks, atol=1e-15, rtol=0)
    assert torch.equal(resize(x, 16), F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False))
    assert resize(x, 8) is x and resize(x, None) is x
    wide = torch.randn(1, 3, 6, 10)  # not square: pooled only when both sides shrink
    assert torch.equal(resize(wide, 4), F.adaptive_avg_pool2d(wide, (4, 4)))
    assert torch.equal(resize(wide, 8), F.interpolate(wide, size=(8, 8), mode="bilinear", align_corners=False))


@pytest.mark.parametrize("kind", ["wavelet", "feature"])
def test_aligner_parameters_come_last(kind):
    """Optimiser states follow the parameter order: the aligner stays after the variant's own modules, as in the
    training states written before the Fusion base class (so those runs still resume)."""
    from tests.helpers import tiny_wagi

    names = [n for n, _ in tiny_wagi(f"fusion.kind={kind}", "fusion.aligner.enabled=true").fusion.named_parameters()]
    first = next(i for i, n in enumerate(names) if n.startswith("aligner."))
    assert first > 0 and all(n.startswith("aligner.") for n in names[first:])


# ------------------------------------------------------------------------------------------------ cascade


def test_correction_image_is_the_change_compose_makes(gen):
    branches = gen.synthesize(_latent(gen), randomize_noise=False)
    g = torch.Generator().manual_seed(3)
    corr = {8: torch.randn(2, 9, 8, 8, generator=g), 16: torch.randn(1, 9, 16, 16, generator=g)}  # 16: broadcast
    change = gen.correction_image(corr)
    assert change.shape == (2, 3, SIZE, SIZE)
    torch.testing.assert_close(change, gen.compose(branches, corr) - gen.compose(branches), atol=2e-5, rtol=0)
    # the LL of the finest corrected level is untouched: its change has no low band at that level
    only_finest = gen.correction_image({16: corr[16]})
    assert float(wv.dwt(only_finest)[:, :3].abs().max()) < 1e-6
    with pytest.raises(ValueError, match="at least one"):
        gen.correction_image({})


def _tiny_fused(*overrides):
    from tests.helpers import tiny_wagi

    m = tiny_wagi("fusion.kind=wavelet", *overrides)
    with torch.no_grad():
        for i, gate in enumerate(m.fusion.gates.values()):
            gate.fill_(0.6 + 0.2 * i)  # an active fusion: the levels interact through the skip chain
    return m


def test_cascade_equals_the_levels_applied_one_after_another():
    m = _tiny_fused("fusion.aligner.enabled=false", "fusion.cascade=true")
    assert m.fusion.cascade and m.fusion.resolutions == [8, 16]
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        fused, w, ex = m.invert(x)
        # by hand, as scripts/eval_fusion.py did at evaluation time: each level from the image fused so far
        branches = m.synthesize(w)
        base = m.compose(branches)
        m.fusion.cascade = False
        corr = {}
        for r in m.fusion.resolutions:
            cur = m.compose(branches, corr) if corr else base
            corr[r] = m.fusion(x, cur, source_map=x - cur)[r]
        hand = m.compose(branches, corr)
        independent, _, ex_ind = m.invert(x)
    for r in corr:
        torch.testing.assert_close(ex["wavelet_corrections"][r], corr[r], atol=1e-5, rtol=0)
    torch.testing.assert_close(fused, hand, atol=1e-5, rtol=0)
    torch.testing.assert_close(ex_ind["wavelet_corrections"][8], corr[8], atol=0, rtol=0)  # the first level agrees
    assert float((fused - independent).abs().max()) > 1e-2  # the finer level sees another residual


def test_cascade_gets_gradients_at_every_level_and_needs_the_residual():
    m = _tiny_fused("fusion.cascade=true", "fusion.aligner.enabled=false")
    m.train()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    fused, _, _ = m.invert(x)
    (fused - x).pow(2).mean().backward()
    for r in ("8", "16"):
        grads = [p.grad for p in m.fusion.nets[r].parameters()] + [m.fusion.gates[r].grad]
        assert all(g is not None and float(g.abs().sum()) > 0 for g in grads), r
    # the coarse level is trained through its own output and through the finer level's input
    m.zero_grad()
    corr = m.fusion(x, m.invert(x, fuse=False)[0], correction_image=m.generator.correction_image)
    corr[16].pow(2).sum().backward()
    assert float(m.fusion.gates["8"].grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="correction_image"):
        m.fusion(x, x)
    with pytest.raises(ValueError, match="residual"):
        WaveletFusion(SIZE, [8, 16], width=8, source="input", cascade=True)


def test_independent_levels_are_unchanged():
    """``fusion.cascade: false`` computes what the fusion always did: every level from the one aligned Δ."""
    m = _tiny_fused()
    f = m.fusion
    assert not f.cascade and f.has_aligner
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6)) * 2 - 1
    with torch.no_grad():
        base = m.invert(x, fuse=False)[0]
        src = f.aligner(x - base, base)
        expected = {}
        for r in f.resolutions:
            src_r, tgt_r = resize(src, 2 * r), resize(base, 2 * r)
            feats = torch.cat([haar_pyramid(src_r, f.levels), haar_pyramid(tgt_r, f.levels)], dim=1)
            expected[r] = f.gates[str(r)] * (wv.high_bands(wv.dwt(src_r)) + f.nets[str(r)](feats))
        got = m.fusion_outputs(x, base)["wavelet_corrections"]
    assert set(got) == set(expected)
    for r in expected:
        assert torch.equal(got[r], expected[r]), r
