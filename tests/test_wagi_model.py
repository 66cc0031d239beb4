import pytest
import torch
import torch.nn.functional as F

from tests.helpers import tiny_wagi
from wagi.models.wagi import WaGI


@pytest.mark.parametrize("kind,iters", [("restyle", 2), ("psp", 1), ("e4e", 1)])
def test_invert_shapes_and_latent_count(kind, iters):
    m = tiny_wagi(f"encoder.kind={kind}", f"encoder.n_iters={iters}")
    x = torch.rand(3, 3, 48, 48) * 2 - 1  # any size: resized to the generator's
    with torch.no_grad():
        recon, w, extras = m.invert(x)
    assert recon.shape == (3, 3, 32, 32) and w.shape == (3, m.generator.n_latent, 32)
    assert m.generator.n_latent == 6  # SWAGAN-32: 2*log2(32) - 4
    torch.testing.assert_close(recon, extras["base"])  # no fusion in this config


def test_restyle_steps_accumulate_from_latent_avg():
    m = tiny_wagi()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        steps = m.encode(x, return_steps=True)
        assert len(steps) == 2
        d0 = m.encoder(m.encoder_input(x))
        w0 = m.latent_avg + d0
        torch.testing.assert_close(steps[0][0], w0)
        w1 = w0 + m.encoder(m.encoder_input(x, m.decode(w0)))
        torch.testing.assert_close(steps[1][0], w1)
        torch.testing.assert_close(m.encode(x), w1)


def test_restyle_steps_pool_generator_images_to_the_encoder_size():
    # 64 px generator, 32 px encoder: x, G(latent_avg) and every step's image are 2x2-block averaged.
    m = tiny_wagi("generator.size=64", "encoder.n_iters=3")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    xe = F.avg_pool2d(x, 2)
    with torch.no_grad():
        steps = m.encode(x, return_steps=True)
        assert len(steps) == 3
        avg_image = F.avg_pool2d(m.decode(m.latent_avg[None]), 2).expand(2, -1, -1, -1)
        assert torch.equal(steps[0][0], m.latent_avg + m.encoder(torch.cat([xe, avg_image], dim=1)))
        for t in range(1, 3):
            delta = m.encoder(torch.cat([xe, F.avg_pool2d(steps[t - 1][1], 2)], dim=1))
            assert torch.equal(steps[t][0], steps[t - 1][0] + delta)
            assert delta.abs().amin() > 0  # each step really moves the latent
        for w, img in steps:
            assert img.shape == (2, 3, 64, 64) and torch.equal(img, m.decode(w))
    steps = m.encode(x, return_steps=True)
    (g,) = torch.autograd.grad(steps[1][0].sum(), steps[0][0])
    assert g.abs().sum() > 0  # step 2 depends on step 1 through both the latent and the image


def test_fused_invert_equals_plain_at_init_and_save_load_roundtrip(tmp_path):
    m = tiny_wagi("fusion.kind=wavelet")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        recon, w, extras = m.invert(x)
        assert set(extras["wavelet_corrections"]) == {8, 16}
        assert torch.equal(recon, extras["base"])  # gates start at 0
        for g in m.fusion.gates.values():
            g.fill_(0.7)
        recon2, _, extras2 = m.invert(x)
    assert (recon2 - extras2["base"]).abs().max() > 1e-4
    m.save(tmp_path / "m.pt")
    loaded = WaGI.load(tmp_path / "m.pt").eval()
    with torch.no_grad():
        again, w2, _ = loaded.invert(x)
    torch.testing.assert_close(again, recon2, atol=0, rtol=0)
    torch.testing.assert_close(w2, w, atol=0, rtol=0)
    raw = torch.load(tmp_path / "m.pt", weights_only=True)  # tensors and plain containers only
    assert raw["format"] == "wagi" and raw["config"]["generator"]["size"] == 32


def test_edit_direction_and_strengths():
    m = tiny_wagi("fusion.kind=wavelet")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d = torch.randn(32)
    with torch.no_grad():
        zero = m.edit(x, d, 0.0)
        recon, w, _ = m.invert(x)
        torch.testing.assert_close(zero, recon)
        many = m.edit(x, d, [0.0, 2.0])
        assert many.shape == (2, 2, 3, 32, 32)
        from_latent = m.edit(w, d, 2.0)
        torch.testing.assert_close(from_latent, m.decode(w + 2.0 * d))
    with pytest.raises(ValueError, match="direction must have shape"):
        m.edit(w, torch.randn(5, 32), 1.0)


def test_load_rejects_foreign_files(tmp_path):
    torch.save({"state_dict": {"encoder.x": torch.zeros(1)}, "opts": {}}, tmp_path / "psp.pt")
    with pytest.raises(ValueError, match="not a WaGI model checkpoint"):
        WaGI.load(tmp_path / "psp.pt")


def test_computed_latent_avg_is_seeded_locally_and_leaves_the_global_rng_alone():
    from tests.helpers import TINY_CONFIG
    from wagi.checkpoint import LATENT_AVG_SAMPLES
    from wagi.config import load_config

    cfg = load_config(TINY_CONFIG, ["experiment.seed=7"])
    torch.manual_seed(0)
    g = WaGI.from_config(cfg).generator
    with torch.no_grad():
        expected = g.mean_latent(LATENT_AVG_SAMPLES, generator=torch.Generator().manual_seed(7))[0]
    # with the same generator, the global RNG (used for the encoder's init) ends in the same state whether
    # latent_avg is given or computed: computing it draws nothing from the global RNG
    torch.manual_seed(1)
    a = WaGI.from_config(cfg, generator=g)
    after_computed = torch.get_rng_state()
    torch.manual_seed(1)
    WaGI.from_config(cfg, generator=g, latent_avg=torch.zeros(32))
    assert torch.equal(after_computed, torch.get_rng_state())
    torch.manual_seed(2)  # another global state: the same latent_avg
    b = WaGI.from_config(cfg, generator=g)
    assert torch.equal(a.latent_avg, b.latent_avg)
    assert torch.equal(a.latent_avg, expected.expand(g.n_latent, -1))
    other = WaGI.from_config(load_config(TINY_CONFIG, ["experiment.seed=8"]), generator=g)
    assert not torch.allclose(other.latent_avg, a.latent_avg)


def _with_noise_strength(m, strength=0.5):
    """Noise injection weights start at 0 (noise has no effect); give them a strength so it shows."""
    from wagi.models.layers import NoiseInjection

    n = 0
    for mod in m.generator.modules():
        if isinstance(mod, NoiseInjection):
            mod.weight.data.fill_(strength)
            n += 1
    assert n > 0
    return m


def test_randomize_noise_key():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    fixed = _with_noise_strength(tiny_wagi())
    assert fixed.randomize_noise is False
    w = fixed.latent_avg.unsqueeze(0).expand(2, -1, -1)
    with torch.no_grad():
        img = fixed.decode(w)
        assert torch.equal(img, fixed.decode(w))  # stored noise buffers: deterministic
        stored, _ = fixed.generator([w], input_is_latent=True, randomize_noise=False)
        assert torch.equal(img, stored)
        assert torch.equal(fixed.invert(x)[0], fixed.invert(x)[0])
    noisy = _with_noise_strength(tiny_wagi("generator.randomize_noise=true"))
    assert noisy.randomize_noise is True
    with torch.no_grad():
        torch.manual_seed(3)
        first = noisy.decode(w)
        second = noisy.decode(w)
        assert (first - second).abs().max() > 1e-4  # fresh noise on every synthesis
        torch.manual_seed(3)
        assert torch.equal(noisy.decode(w), first)  # drawn from the global RNG
        torch.manual_seed(3)
        expected, _ = noisy.generator([w], input_is_latent=True, randomize_noise=True)
        assert torch.equal(first, expected)


def test_randomize_noise_survives_save_and_load(tmp_path):
    m = tiny_wagi("generator.randomize_noise=true")
    m.save(tmp_path / "m.pt")
    assert WaGI.load(tmp_path / "m.pt").randomize_noise is True
    tiny_wagi().save(tmp_path / "f.pt")
    assert WaGI.load(tmp_path / "f.pt").randomize_noise is False


def test_generator_ckpt_with_3x3_to_rgb_needs_the_config_key_and_reloads(tmp_path):
    from wagi.checkpoint import save_generator
    from wagi.models.swagan import Generator

    torch.manual_seed(1)
    g = Generator(32, style_dim=32, n_mlp=2, channel_max=32, to_rgb_kernel=3)
    ckpt = save_generator(tmp_path / "g3.pt", g, g.mean_latent(8))
    with pytest.raises(ValueError, match="set generator.to_rgb_kernel: 3"):
        tiny_wagi(f"generator.ckpt={ckpt}")
    m = tiny_wagi(f"generator.ckpt={ckpt}", "generator.to_rgb_kernel=3")
    assert m.generator.to_rgbs[0].conv.weight.shape[-2:] == (3, 3)
    m.save(tmp_path / "model.pt")  # rebuilt from its config alone: the key makes it the same generator
    again = WaGI.load(tmp_path / "model.pt").eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(again.invert(x)[0], m.invert(x)[0])
