"""widen_generator: a wider SWAGAN that draws the same images, with zero (but trainable) new input columns."""
import json
import math
from pathlib import Path

import pytest
import torch

from tests.helpers import load_script, tiny_wagi
from wagi.bundle import wagi_fp16_checkpoint
from wagi.checkpoint import load_generator, save_generator
from wagi.config import ConfigError, from_dict
from wagi.models.swagan import Generator
from wagi.models.wagi import WaGI
from wagi.models.widen import channel_table, widen_generator
from wagi.training.gan_config import gan_from_dict, load_gan_config

NARROW = {4: 8, 8: 8, 16: 8}
WIDE = {4: 16, 8: 12, 16: 8}  # 4 px doubles, 8 px grows by half, 16 px stays: every case of in/out growth
STYLE_DIM = 16
ATOL = 1e-5


def narrow_generator(seed=0, **kw):
    torch.manual_seed(seed)
    g = Generator(32, style_dim=STYLE_DIM, n_mlp=2, channels=NARROW, **kw).eval()
    with torch.no_grad():  # trained-looking weights: non-zero biases and noise strengths, styles off 1
        for p in g.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return g


def images(g, z, fused):
    g.set_fused_modconv(fused)
    return g([z], randomize_noise=False)[0]


@pytest.mark.parametrize("to_rgb_kernel", [1, 3])
@pytest.mark.parametrize("fused", [True, False])
def test_widened_generator_draws_the_same_images(fused, to_rgb_kernel):
    g = narrow_generator(to_rgb_kernel=to_rgb_kernel)
    wide = widen_generator(g, WIDE, seed=1)
    assert channel_table(wide) == WIDE and wide.config["channels"] == WIDE
    assert wide.config["to_rgb_kernel"] == to_rgb_kernel
    z = torch.randn(3, STYLE_DIM, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before, after = images(g, z, fused), images(wide, z, fused)
        assert before.abs().max() > 0.5  # a real image, not a vanishing one
        torch.testing.assert_close(after, before, rtol=0, atol=ATOL)
        w_plus = torch.randn(2, g.n_latent, STYLE_DIM, generator=torch.Generator().manual_seed(6))
        torch.testing.assert_close(wide([w_plus], input_is_latent=True, randomize_noise=False)[0],
                                   g([w_plus], input_is_latent=True, randomize_noise=False)[0], rtol=0, atol=ATOL)
    # the new channels compute something: the widened network is not the narrow one padded with zeros
    feats = wide.conv1(wide.input(z), wide.style(z))
    assert feats[:, NARROW[4]:].abs().mean() > 0.1


def test_old_weights_sit_in_the_leading_block_and_the_new_input_columns_are_zero():
    g = narrow_generator()
    wide = widen_generator(g, WIDE, seed=1)
    old, new = g.state_dict(), wide.state_dict()
    grown = {k for k in new if new[k].shape != old[k].shape}
    assert {"input.input", "conv1.conv.weight", "to_rgb1.conv.weight", "convs.0.conv.weight",
            "convs.2.conv.weight", "to_rgbs.0.conv.weight", "convs.0.activate.bias"} <= grown
    assert "convs.3.conv.weight" not in grown and "to_rgbs.1.conv.weight" not in grown  # 16 px kept its 8
    for k, v in new.items():
        block = v[tuple(slice(0, n) for n in old[k].shape)]
        if k.endswith("conv.weight"):
            in_old, in_new = old[k].shape[2], v.shape[2]
            assert torch.equal(v[:, :, in_old:], torch.zeros_like(v[:, :, in_old:])), k
            torch.testing.assert_close(block, old[k] * math.sqrt(in_new / in_old), rtol=1e-6, atol=0, msg=k)
        else:
            assert torch.equal(block, old[k]), k
    # the ToRGB convs are not demodulated: the copy carries the equalised-lr scale of the old fan-in
    for name in ("to_rgb1", "to_rgbs.0"):
        a, b = g.get_submodule(name).conv, wide.get_submodule(name).conv
        torch.testing.assert_close(b.weight[:, :, :a.in_channel] * b.scale, a.weight * a.scale, rtol=1e-6, atol=0)
    assert wide.get_submodule("to_rgb1").conv.scale == pytest.approx(1 / 4)  # 1/sqrt(16 in x 1x1)
    # new entries come from the new module's seeded initialisation: new style rows start at bias 1
    assert torch.equal(new["conv1.conv.modulation.bias"][NARROW[4]:], torch.ones(WIDE[4] - NARROW[4]))
    assert torch.equal(new["conv1.activate.bias"][NARROW[4]:], torch.zeros(WIDE[4] - NARROW[4]))
    again, other = widen_generator(g, WIDE, seed=1).state_dict(), widen_generator(g, WIDE, seed=2).state_dict()
    assert all(torch.equal(again[k], v) for k, v in new.items())
    assert not torch.equal(other["input.input"], new["input.input"])


def test_gradients_reach_the_zero_columns():
    g = narrow_generator()
    wide = widen_generator(g, WIDE, seed=1).train()
    z = torch.randn(4, STYLE_DIM, generator=torch.Generator().manual_seed(7))
    img, _ = wide([z], randomize_noise=False)
    (img ** 2).mean().backward()
    for name in ("conv1", "to_rgb1", "convs.0", "convs.1", "to_rgbs.0", "convs.2"):
        conv, narrow = wide.get_submodule(name).conv, g.get_submodule(name).conv
        assert conv.in_channel > narrow.in_channel, name
        # the old output rows: the new rows feed only zero columns downstream, so they wait one step
        grad = conv.weight.grad[:, :narrow.out_channel, narrow.in_channel:]
        assert grad.abs().max() > 1e-6 and bool((grad != 0).all()), name
        waiting = conv.weight.grad[:, narrow.out_channel:]
        assert torch.equal(waiting, torch.zeros_like(waiting)), name


def test_follows_device_dtype_mode_and_flags_and_leaves_the_global_rng():
    g = narrow_generator().double()
    g.set_fused_modconv(False)
    for p in g.parameters():
        p.requires_grad_(False)
    state = torch.random.get_rng_state()
    wide = widen_generator(g, {str(r): c for r, c in WIDE.items()})  # JSON-style keys
    assert torch.equal(torch.random.get_rng_state(), state)
    assert wide.input.input.dtype == torch.float64 and not wide.training
    assert not any(p.requires_grad for p in wide.parameters())
    assert not wide.conv1.conv.fused and not wide.to_rgbs[0].conv.fused
    z = torch.randn(2, STYLE_DIM, dtype=torch.float64)
    torch.testing.assert_close(wide([z], randomize_noise=False)[0], g([z], randomize_noise=False)[0],
                               rtol=0, atol=1e-12)


def test_narrowing_a_missing_or_unknown_resolution_is_refused():
    g = narrow_generator()
    with pytest.raises(ValueError, match="resolution 8 has 8 channels and cannot narrow to 4"):
        widen_generator(g, {4: 16, 8: 4, 16: 8})
    with pytest.raises(ValueError, match="resolution 16 is missing"):
        widen_generator(g, {4: 16, 8: 8})
    with pytest.raises(ValueError, match="resolution 32 is not a feature resolution"):
        widen_generator(g, {**WIDE, 32: 8})
    same = widen_generator(g, NARROW)  # widening by nothing is a copy
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in same.state_dict().items())


# ------------------------------------------------------------------------------- configs and saved models

TINY_WIDE = {4: 48, 8: 40, 16: 32}  # the tiny config's generator has 32 channels at every level


def test_channel_table_in_both_configs_accepts_int_and_str_keys_and_names_the_key():
    base = {"generator": {"size": 32, "channel_max": None}}
    gan = {"discriminator": {}, "data": {"demo": True}}
    wagi = {"fusion": {"kind": "none"}, "data": {"demo": True}}
    for build, extra in ((lambda d: from_dict(d, check_paths=False), wagi), (gan_from_dict, gan)):
        for table in (TINY_WIDE, {str(r): c for r, c in TINY_WIDE.items()}):  # YAML / JSON round trip
            cfg = build({**extra, "generator": {**base["generator"], "channels": table}})
            assert cfg.generator.channels == TINY_WIDE
        bad = [({4: 48, 8: 40}, r"'generator\.channels'.*resolution 16 is missing"),
               ({**TINY_WIDE, 32: 8}, r"'generator\.channels'.*resolution 32 is not a feature resolution"),
               ({**TINY_WIDE, 8: 0}, r"'generator\.channels\.8'.*>= 1"),
               ({**TINY_WIDE, 8: 5000}, r"'generator\.channels\.8'.*<= 4096"),
               ({"x": 3}, r"'generator\.channels'.*keys must be integers")]
        for table, match in bad:
            with pytest.raises(ConfigError, match=match):
                build({**extra, "generator": {**base["generator"], "channels": table}})
        with pytest.raises(ConfigError, match=r"'generator\.channel_max'.*below the 48 channels"):
            build({**extra, "generator": {"size": 32, "channel_max": 32, "channels": TINY_WIDE}})
        build({**extra, "generator": {"size": 32, "channel_max": 48, "channels": TINY_WIDE}})  # a cap that cuts nothing


def test_a_wagi_model_with_a_widened_generator_builds_saves_and_reloads(tmp_path):
    narrow = tiny_wagi("fusion.kind=wavelet")
    assert channel_table(narrow.generator) == {4: 32, 8: 32, 16: 32}
    wide = widen_generator(narrow.generator, TINY_WIDE, seed=3)
    path = save_generator(tmp_path / "wide.pt", wide, narrow.latent_avg[:1],
                          config={"generator": {"size": 32, "channels": {str(r): c for r, c in TINY_WIDE.items()}}})
    with pytest.raises(ValueError, match=r"set generator.channels: \{4: 48, 8: 40, 16: 32\}"):
        tiny_wagi("fusion.kind=wavelet", f"generator.ckpt={path}")  # the config must describe the file
    with pytest.raises(ValueError, match=r"generator.channels is \{4: 48, 8: 40, 16: 8\} in this config but"):
        tiny_wagi("fusion.kind=wavelet", f"generator.ckpt={path}", "generator.channel_max=null",
                  "generator.channels={4: 48, 8: 40, 16: 8}")
    model = tiny_wagi("fusion.kind=wavelet", f"generator.ckpt={path}", "generator.channel_max=null",
                      "generator.channels={4: 48, 8: 40, 16: 32}")
    assert channel_table(model.generator) == TINY_WIDE
    w = torch.randn(2, narrow.n_latent, 32, generator=torch.Generator().manual_seed(4))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.decode(w), narrow.decode(w), rtol=0, atol=ATOL)
        out = model.invert(x)[0]
    model.save(tmp_path / "model.pt")
    back = WaGI.load(tmp_path / "model.pt").eval()  # rebuilt from the stored config, then loaded strictly
    assert back.config["generator"]["channels"] == TINY_WIDE and channel_table(back.generator) == TINY_WIDE
    torch.save(wagi_fp16_checkpoint(model), tmp_path / "model16.pt")  # what scripts/bundle_models.py writes
    with torch.no_grad():
        torch.testing.assert_close(back.invert(x)[0], out, rtol=0, atol=0)
        half = WaGI.load(tmp_path / "model16.pt").eval()
        assert channel_table(half.generator) == TINY_WIDE
        assert (half.invert(x)[0] - out).abs().max() < 0.01  # fp16 weights: 0.002 of an image range of ~7


def test_v7_config_widens_v4s_generator_without_changing_its_images():
    root = Path(__file__).resolve().parents[1]
    cfg = load_gan_config(root / "configs" / "demo_swagan_v7.yaml")
    g, _, _ = load_generator(root / cfg.generator.init)
    assert channel_table(g) == {4: 96, 8: 96, 16: 96, 32: 96, 64: 96}
    wide = widen_generator(g, cfg.generator.channels, seed=cfg.experiment.seed)
    assert channel_table(wide) == cfg.generator.channels
    z = torch.randn(2, g.style_dim, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        for fused in (True, False):
            before = images(g, z, fused)
            assert before.std() > 0.3
            torch.testing.assert_close(images(wide, z, fused), before, rtol=0, atol=ATOL)


def test_widen_speed_script_times_the_widened_copies_beside_the_original(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "rows.json"
    script = load_script("dev/widen_speed")
    assert script.main(["--model", str(tiny_ckpt), "--table", "4:48,8:40", "--table", "4:40", "--batch", "2",
                        "--runs", "2", "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["generator"] for r in rows] == ["original 4:32 8:32 16:32", "4:48 8:40 16:32", "4:40 8:32 16:32"]
    assert rows[0]["max_abs_diff_vs_original"] == 0 and all(r["max_abs_diff_vs_original"] < 1e-5 for r in rows)
    assert all(r["runs"] == 2 and r["ms_per_img"] > 0 for r in rows)
    assert rows[1]["images_per_s"] == pytest.approx(1000 / rows[1]["ms_per_img"])
    assert "4:48 8:40 16:32" in capsys.readouterr().out


def test_model_speed_script_times_models_in_turn(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "speed.json"
    script = load_script("dev/model_speed")
    assert script.main(["--model", f"a={tiny_ckpt}", "--model", f"b={tiny_ckpt}", "--batch", "2", "--rounds", "3",
                        "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert list(res["models"]) == ["a", "b"] and res["batch"] == 2
    for row in res["models"].values():
        assert len(row["round_s"]) == 3 and all(t > 0 for t in row["round_s"])
        assert row["images_per_s"] == pytest.approx(2 / sorted(row["round_s"])[1])  # the median round
        assert row["ms_per_img"] == pytest.approx(1000 / row["images_per_s"])
    assert "a: " in capsys.readouterr().out
