import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import load_script
from wagi.checkpoint import export_generator, load_generator
from wagi.config import ConfigError
from wagi.models.swagan import Discriminator, Generator
from wagi.training import gan as gan_module
from wagi.training.gan import (
    GANTrainer,
    TrainingStopped,
    d_logistic_loss,
    ema_beta,
    g_nonsaturating_loss,
    mix_latents,
    path_lengths,
    r1_penalty,
)
from wagi.training.gan_config import all_gan_keys, gan_from_dict, load_gan_config

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "swagan_tiny_test.yaml")
LOSS_KEYS = ("d_loss", "g_loss", "r1", "path_loss", "path_length", "real_score", "fake_score")
FP16_EPS = 2 ** -10  # fp16 unit round-off (relative)


def _cfg(tmp_path, *overrides):
    return load_gan_config(TINY, [f"experiment.out_dir={tmp_path}", *overrides])


def _records(run_dir):
    return [json.loads(ln) for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _states(t):
    return {"g": t.G.state_dict(), "d": t.D.state_dict(), "g_ema": t.g_ema.state_dict()}


# ------------------------------------------------------------------------------------------- formulas


def test_losses_equal_softplus_formulas_by_hand():
    real = torch.tensor([[2.0], [-1.0], [0.25]], dtype=torch.float64)
    fake = torch.tensor([[0.5], [-3.0], [1.5]], dtype=torch.float64)
    d_hand = (sum(math.log1p(math.exp(f)) for f in (0.5, -3.0, 1.5)) / 3
              + sum(math.log1p(math.exp(-r)) for r in (2.0, -1.0, 0.25)) / 3)
    g_hand = sum(-math.log(1 / (1 + math.exp(-f))) for f in (0.5, -3.0, 1.5)) / 3
    assert d_logistic_loss(real, fake).item() == pytest.approx(d_hand, rel=1e-14)
    assert g_nonsaturating_loss(fake).item() == pytest.approx(g_hand, rel=1e-14)


def test_r1_penalty_is_the_squared_input_gradient_norm():
    torch.manual_seed(0)
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 4, dtype=torch.float64)
    linear = (x * w).flatten(1).sum(1, keepdim=True) + 0.7  # D(x) = <w, x> + b: gradient w for every sample
    assert r1_penalty(linear, x).item() == pytest.approx(w.pow(2).sum().item(), rel=1e-12)
    quad = 0.5 * x.pow(2).flatten(1).sum(1, keepdim=True)  # gradient x_i
    expected = x.detach().pow(2).flatten(1).sum(1).mean().item()
    assert r1_penalty(quad, x).item() == pytest.approx(expected, rel=1e-12)
    # differentiable: d/dw of ||w||^2 through the R1 graph is 2w
    wp = w.clone().requires_grad_(True)
    r1_penalty((x * wp).flatten(1).sum(1, keepdim=True), x).backward()
    torch.testing.assert_close(wp.grad, 2 * w)


def test_path_lengths_of_a_linear_generator():
    torch.manual_seed(1)
    n, layers, dim, h = 3, 4, 5, 2
    a = torch.randn(layers, dim, h * h, dtype=torch.float64)
    lat = torch.randn(n, layers, dim, dtype=torch.float64, requires_grad=True)
    img = torch.einsum("nld,ldp->np", lat, a).view(n, 1, h, h)
    y = torch.randn(n, 1, h, h, dtype=torch.float64)
    got = path_lengths(img, lat, y)
    jt_y = torch.einsum("ldp,np->nld", a, y.view(n, -1))  # J^T y per layer
    expected = jt_y.pow(2).sum(2).mean(1).sqrt()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_ema_beta_and_style_mixing():
    assert ema_beta(0, 32, 10.0) == 0.5 ** (32 / (10 * 1000))  # rosinality's accum at batch 32
    assert ema_beta(9, 16, 10.0, rampup=0.05) == 0.5 ** (16 / (10 * 16 * 0.05))  # ramp-up: 8 images' half-life
    assert ema_beta(10 ** 6, 16, 10.0, rampup=0.05) == 0.5 ** (16 / 10000)
    g = Generator(16, 8, 1, channel_max=8)
    w1, w2 = torch.randn(2, 8), torch.randn(2, 8)
    for k in range(1, g.n_latent):
        ref = g.styles_to_latent([w1, w2], inject_index=k, input_is_latent=True)
        assert torch.equal(mix_latents(w1, w2, torch.tensor(k), g.n_latent), ref)
    assert torch.equal(mix_latents(w1, w2, g.n_latent, g.n_latent), w1.unsqueeze(1).expand(-1, g.n_latent, -1))


# -------------------------------------------------------------------------------------------- config


def test_config_errors_name_the_key(tmp_path):
    demo = {"discriminator": {}, "data": {"demo": True}}
    with pytest.raises(ConfigError, match=r"'train\.lrr'.*unknown key"):
        gan_from_dict({**demo, "train": {"lrr": 1}})
    with pytest.raises(ConfigError, match=r"'train\.batch_size'.*integer"):
        gan_from_dict({**demo, "train": {"batch_size": "32"}})
    with pytest.raises(ConfigError, match=r"'train\.amp'.*one of"):
        gan_from_dict({**demo, "train": {"amp": "fp16"}})
    with pytest.raises(ConfigError, match=r"'data\.train_dir'.*not found"):
        gan_from_dict({"discriminator": {}, "data": {"train_dir": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match=r"'data\.train_dir'"):
        gan_from_dict({})
    with pytest.raises(ConfigError, match=r"'train\.kimg'.*exactly one"):
        gan_from_dict({**demo, "train": {"kimg": 100}})
    with pytest.raises(ConfigError, match=r"'train\.batch_size'.*multiple of 4"):
        gan_from_dict({**demo, "train": {"batch_size": 6}})
    with pytest.raises(ConfigError, match=r"'data\.image_size'"):
        gan_from_dict({"discriminator": {}, "data": {"demo": True, "image_size": 64}})
    with pytest.raises(ConfigError, match=r"'generator\.size'"):
        gan_from_dict({**demo, "generator": {"size": 96}})
    with pytest.raises(ConfigError, match=r"'train\.lr'.*> 0"):
        gan_from_dict({**demo, "train": {"lr": 0}})
    with pytest.raises(ConfigError, match=r"'train\.mixing'"):
        gan_from_dict({**demo, "train": {"mixing": 1.5}})
    cfg = gan_from_dict({**demo, "train": {"kimg": 1, "max_steps": None, "batch_size": 8}})
    assert gan_module.total_steps(cfg, world_size=2) == 63  # ceil(1000 / 16)


def test_every_key_is_documented():
    doc = (ROOT / "docs" / "train_generator.md").read_text().split("## Configuration keys", 1)[1]
    documented = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", doc, flags=re.M))
    assert set(all_gan_keys()) == documented


def test_shipped_gan_configs_validate_and_demo_export_fits():
    demo = load_gan_config(ROOT / "configs" / "demo_swagan.yaml", check_paths=False)
    v2 = load_gan_config(ROOT / "configs" / "demo_swagan_v2.yaml")  # its warm-start file is in the bundle
    assert v2.generator.init and v2.generator.channel_max == demo.generator.channel_max
    g = demo.generator
    with torch.device("meta"):
        gen = Generator(g.size, g.style_dim, g.n_mlp, g.channel_multiplier, channel_max=g.channel_max)
        Discriminator(g.size, demo.discriminator.channel_multiplier, channel_max=demo.discriminator.channel_max)
    demo_widths = {r: gen.channels[r] for r in gen.feature_resolutions}
    for later in sorted((ROOT / "configs").glob("demo_swagan_v[3-9].yaml")):  # the editing-generator attempts
        cfg = load_gan_config(later)  # their warm-start files are in the repository
        lg = cfg.generator
        with torch.device("meta"):
            wide = Generator(lg.size, lg.style_dim, lg.n_mlp, lg.channel_multiplier, channels=lg.channels,
                             channel_max=lg.channel_max)
        widths = {r: wide.channels[r] for r in wide.feature_resolutions}
        # the demo width, or (generator.channels) wider where the warm start widens the init file
        assert lg.init and (widths == demo_widths if lg.channels is None else
                            all(widths[r] >= demo_widths[r] for r in widths)), later.name
    v5 = load_gan_config(ROOT / "configs" / "demo_swagan_v5.yaml")
    assert v5.train.g_lr == v5.train.d_lr / 4 and v5.discriminator.channel_max == 192
    v7 = load_gan_config(ROOT / "configs" / "demo_swagan_v7.yaml")
    assert v7.generator.channels == {4: 160, 8: 160, 16: 160, 32: 96, 64: 96}  # measured on the CPU (v7 in the docs)
    assert (v7.experiment.seed, v7.train.lr, v7.train.g_lr, v7.train.d_lr) == (7, 0.002, None, None)
    assert (v7.train.d_warmup, v7.train.batch_size, v7.train.ema_half_life_kimg) == (400, 128, 40.0)
    for name in ("v6", "v7", "v8"):  # NVlabs' EMA half-life rule, 10 x batch / 32 kimg, in the later attempts
        t = load_gan_config(ROOT / "configs" / f"demo_swagan_{name}.yaml").train
        assert t.ema_half_life_kimg == pytest.approx(10 * t.batch_size / 32), name
    load_gan_config(TINY)
    fp16_bytes = 2 * sum(v.numel() for v in gen.state_dict().values())
    assert fp16_bytes < 15 * 2 ** 20  # the shipped fp16 file (plus pickle overhead) stays under 16 MiB
    assert max(gen.channels[r] for r in gen.feature_resolutions) <= 256


# ---------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gan_run")
    t = GANTrainer(_cfg(out), progress=False)
    t.train()
    return t


def test_training_writes_finite_metrics_samples_and_checkpoints(run):
    recs = _records(run.run_dir)
    assert [r["step"] for r in recs] == [2, 4, 6, 8]
    for r in recs:
        for k in ("d_loss", "g_loss", "path_loss", "real_score", "fake_score", "steps_per_s"):
            assert math.isfinite(r[k]), (k, r)
    assert any("r1" in r for r in recs) and all(r["r1"] >= 0 for r in recs if "r1" in r)
    grid = Image.open(run.run_dir / "samples" / "step_0000008.png")
    assert grid.size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)  # 4 samples: 2 x 2 grid, 2 px padding
    assert sorted(p.name for p in run.ckpt_dir.iterdir()) == ["latest.pt", "step_0000004.pt", "step_0000008.pt"]
    assert (run.run_dir / "config.yaml").is_file()


def test_checkpoint_loads_with_weights_only_and_load_generator(run):
    path = run.ckpt_dir / "latest.pt"
    ck = torch.load(path, weights_only=True)
    assert ck["kind"] == "swagan_training" and ck["training"]["step"] == 8
    assert ck["config"]["train"]["max_steps"] == 8 and ck["config"]["generator"]["size"] == 32
    assert {"g", "d", "g_ema", "g_optim", "d_optim", "latent_avg"} <= set(ck)
    for name, module in (("g", run.G), ("d", run.D), ("g_ema", run.g_ema)):
        for k, v in module.state_dict().items():
            assert torch.equal(ck[name][k], v), (name, k)
    assert torch.equal(ck["training"]["path_length_mean"], run.path_length_mean) and run.path_length_mean > 0
    g, latent_avg, info = load_generator(path)
    assert info["format"] == "wagi" and info["config"]["train"]["batch_size"] == 4
    for k, v in run.g_ema.state_dict().items():
        assert torch.equal(g.state_dict()[k], v), k
    expected_avg = run.g_ema.mean_latent(4096, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(latent_avg, expected_avg, rtol=0, atol=0)
    z = torch.randn(2, 32)
    g.set_fused_modconv(run.cfg.train.fused_modconv)  # an evaluation switch, not stored in the file
    torch.testing.assert_close(g([z], randomize_noise=False)[0], run.g_ema([z], randomize_noise=False)[0],
                               rtol=0, atol=0)


def test_warm_start_takes_g_and_g_ema_from_a_generator_file(run, tmp_path):
    """generator.init: G and g_ema start from the (fp16) export, D and the optimisers start fresh."""
    src = export_generator(run.ckpt_dir / "latest.pt", tmp_path / "g16.pt")
    t = GANTrainer(_cfg(tmp_path / "warm", f"generator.init={src}"), progress=False)
    g16, _, _ = load_generator(src)
    for k, v in g16.state_dict().items():
        assert torch.equal(t.G.state_dict()[k], v) and torch.equal(t.g_ema.state_dict()[k], v), k
    fresh = GANTrainer(_cfg(tmp_path / "fresh"), progress=False)
    for k, v in fresh.D.state_dict().items():  # D is the fresh one of the same seed, not the trained one
        assert torch.equal(t.D.state_dict()[k], v), k
    assert t.step == 0 and not t.g_optim.state
    # a generator of another architecture is refused with the key that differs
    with pytest.raises(ValueError, match="generator.init.*does not match"):
        GANTrainer(_cfg(tmp_path / "bad", f"generator.init={src}", "generator.style_dim=16"), progress=False)


def test_d_warmup_updates_only_the_discriminator_first(run, tmp_path):
    """train.d_warmup: the first steps move D alone; G, g_ema and the path-length target wait."""
    src = export_generator(run.ckpt_dir / "latest.pt", tmp_path / "g16.pt")
    t = GANTrainer(_cfg(tmp_path / "w", f"generator.init={src}", "train.d_warmup=2", "train.log_every=1",
                        "train.max_steps=2", "train.sample_every=100", "train.save_every=100"), progress=False)
    g0, d0, e0 = ({k: v.clone() for k, v in m.state_dict().items()} for m in (t.G, t.D, t.g_ema))
    t.train()
    assert t.step == 2 and not t.g_optim.state and float(t.path_length_mean) == 0.0
    for k, v in g0.items():
        assert torch.equal(t.G.state_dict()[k], v) and torch.equal(t.g_ema.state_dict()[k], e0[k]), k
    assert any(not torch.equal(t.D.state_dict()[k], v) for k, v in d0.items())
    recs = _records(tmp_path / "w" / t.cfg.experiment.name)
    assert [("d_loss" in r, "g_loss" in r) for r in recs if r.get("kind") == "train"] == [(True, False)] * 2
    t3 = GANTrainer(_cfg(tmp_path / "w", f"generator.init={src}", "train.d_warmup=2", "train.log_every=1",
                         "train.max_steps=3", "train.sample_every=100", "train.save_every=100"),
                    resume="auto", progress=False)
    assert t3.step == 2
    t3.train()  # the step after the warm-up updates G again
    assert t3.g_optim.state and any(not torch.equal(t3.G.state_dict()[k], v) for k, v in g0.items())
    assert "g_loss" in _records(tmp_path / "w" / t.cfg.experiment.name)[-1]
    with pytest.raises(ConfigError, match="train.d_warmup"):
        _cfg(tmp_path, "train.d_warmup=-1")


def test_to_rgb_kernel_3_trains_and_warm_starts_from_its_own_export(tmp_path):
    """generator.to_rgb_kernel: 3 (a converted official SWAGAN) builds 3x3 ToRGB convs, trains, exports and
    warm-starts; a 1x1 config is refused with the key to set."""
    t = GANTrainer(_cfg(tmp_path / "k3", "generator.to_rgb_kernel=3", "train.max_steps=1", "train.sample_every=100",
                        "train.save_every=100"), progress=False)
    assert t.G.to_rgb1.conv.weight.shape[-2:] == (3, 3)
    t.train()
    src = export_generator(t.ckpt_dir / "latest.pt", tmp_path / "g3.pt")
    warm = GANTrainer(_cfg(tmp_path / "w3", "generator.to_rgb_kernel=3", f"generator.init={src}"), progress=False)
    for k, v in t.g_ema.state_dict().items():
        torch.testing.assert_close(warm.G.state_dict()[k], v, rtol=FP16_EPS, atol=1e-7, msg=k)
    with pytest.raises(ValueError, match="set generator.to_rgb_kernel: 3"):
        GANTrainer(_cfg(tmp_path / "w1", f"generator.init={src}"), progress=False)
    with pytest.raises(ConfigError, match="generator.to_rgb_kernel"):
        _cfg(tmp_path, "generator.to_rgb_kernel=2")


def test_warm_start_widens_a_narrower_generator_file(run, tmp_path, capsys):
    """generator.init narrower than generator.channels: widened (same images at step 0), then it trains and
    resumes; a file wider somewhere is still refused."""
    src = export_generator(run.ckpt_dir / "latest.pt", tmp_path / "g16.pt")  # 32 channels at 4, 8 and 16 px
    wide = ["generator.channel_max=null", "generator.channels={4: 48, 8: 40, 16: 32}", f"generator.init={src}",
            "experiment.name=wide", "train.max_steps=1", "train.save_every=1", "train.sample_every=100"]
    capsys.readouterr()
    t = GANTrainer(_cfg(tmp_path, *wide), progress=False)
    assert "warm start: widened" in capsys.readouterr().err
    assert {r: t.G.channels[r] for r in t.G.feature_resolutions} == {4: 48, 8: 40, 16: 32}
    narrow, _, _ = load_generator(src)
    narrow.set_fused_modconv(t.cfg.train.fused_modconv)
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = narrow([z], randomize_noise=False)[0]
        assert before.abs().max() > 0.1
        torch.testing.assert_close(t.g_ema([z], randomize_noise=False)[0], before, rtol=0, atol=1e-5)
        torch.testing.assert_close(t.G([z], randomize_noise=False)[0], before, rtol=0, atol=1e-5)
    new_columns = t.G.conv1.conv.weight[:, :32, 32:]  # the old rows' inputs from the 16 new 4 px channels
    assert torch.equal(new_columns, torch.zeros_like(new_columns))
    t.train()  # one step: D and G (path length included) update
    assert t.step == 1 and bool((t.G.conv1.conv.weight[:, :32, 32:] != 0).all())
    assert all(math.isfinite(r[k]) for r in _records(t.run_dir) for k in ("d_loss", "g_loss") if k in r)
    resumed = GANTrainer(_cfg(tmp_path, *wide[:-2], "train.max_steps=2"), resume="auto", progress=False)
    assert resumed.step == 1 and torch.equal(resumed.G.conv1.conv.weight, t.G.conv1.conv.weight)
    with pytest.raises(ValueError, match="generator.init.*does not match"):  # 8 px narrower than the file
        GANTrainer(_cfg(tmp_path / "bad", "generator.channel_max=null", "generator.channels={4: 48, 8: 16, 16: 32}",
                        f"generator.init={src}"), progress=False)


def test_fp16_export_loads_and_matches(run, tmp_path):
    src = run.ckpt_dir / "latest.pt"
    out = export_generator(src, tmp_path / "g16.pt")
    assert out.stat().st_size < src.stat().st_size / 5
    raw = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw["g_ema"].values() if v.is_floating_point())
    assert raw["step"] == 8 and raw["latent_avg"].dtype == torch.float32
    assert raw["cards"] == ["cpu x1"] and raw["wall_time_s"] > 0  # what the model manifest records
    g, latent_avg, _ = load_generator(out)
    g.set_fused_modconv(run.cfg.train.fused_modconv)
    assert all(p.dtype == torch.float32 for p in g.parameters())
    for k, v in run.g_ema.state_dict().items():
        torch.testing.assert_close(g.state_dict()[k], v, rtol=FP16_EPS, atol=1e-7, msg=k)
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(3))
    ref = run.g_ema([z], randomize_noise=False)[0]
    got = g([z], randomize_noise=False)[0]
    assert (got - ref).abs().max() < 0.02 * ref.abs().max()
    raw_g = export_generator(src, tmp_path / "g_raw.pt", network="g")  # the raw generator, for diagnostics
    assert torch.load(raw_g, weights_only=True)["network"] == "g"
    g_raw, _, _ = load_generator(raw_g)
    for k, v in run.G.state_dict().items():
        torch.testing.assert_close(g_raw.state_dict()[k], v, rtol=FP16_EPS, atol=1e-7, msg=k)
    assert any(not torch.equal(run.G.state_dict()[k], run.g_ema.state_dict()[k]) for k in run.G.state_dict())
    with pytest.raises(ValueError, match="network must be 'g_ema' or 'g'"):
        export_generator(src, tmp_path / "x.pt", network="d")


def test_resume_is_exact(tmp_path, capsys):
    common = ["train.log_every=1", "train.sample_every=100"]
    straight = GANTrainer(_cfg(tmp_path, "experiment.name=a", "train.max_steps=6", "train.save_every=100", *common),
                          progress=False)
    straight.train()
    half = GANTrainer(_cfg(tmp_path, "experiment.name=b", "train.max_steps=3", "train.save_every=3", *common),
                      progress=False)
    half.train()
    del half
    capsys.readouterr()
    resumed = GANTrainer(_cfg(tmp_path, "experiment.name=b", "train.max_steps=6", "train.save_every=100", *common),
                         resume="auto", progress=False)
    assert resumed.step == 3
    out = capsys.readouterr()
    assert "resumed from" in out.err and "at step 3" in out.err and "resumed" not in out.out
    resumed.train()
    a, b = _states(straight), _states(resumed)
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    assert torch.equal(straight.path_length_mean, resumed.path_length_mean)
    la = {r["step"]: {k: r[k] for k in LOSS_KEYS if k in r} for r in _records(tmp_path / "a")}
    lb = {r["step"]: {k: r[k] for k in LOSS_KEYS if k in r} for r in _records(tmp_path / "b")}
    assert sorted(la) == list(range(1, 7)) and la == lb
    assert "r1" in la[5] and "path_loss" in la[5]  # both lazy regularisers ran after the resume (step 4)


def test_separate_learning_rates_and_the_config_wins_on_resume(tmp_path, capsys):
    def settings(t):
        return [(o.param_groups[0]["lr"], tuple(o.param_groups[0]["betas"])) for o in (t.g_optim, t.d_optim)]

    tc = _cfg(tmp_path).train
    cg, cd = tc.g_reg_every / (tc.g_reg_every + 1), tc.d_reg_every / (tc.d_reg_every + 1)
    t = GANTrainer(_cfg(tmp_path, "experiment.name=lr", "train.max_steps=2", "train.save_every=2",
                        "train.g_lr=0.001", "train.d_lr=0.004"), progress=False)
    (g_lr, g_betas), (d_lr, d_betas) = settings(t)
    assert g_lr == pytest.approx(0.001 * cg) and d_lr == pytest.approx(0.004 * cd)  # lazy-regularisation factor c
    assert g_betas == pytest.approx((tc.betas[0] ** cg, tc.betas[1] ** cg))
    t.train()
    del t
    capsys.readouterr()
    # A resumed Adam state carries the saved lr; the config's new values must replace it.
    resumed = GANTrainer(_cfg(tmp_path, "experiment.name=lr", "train.max_steps=4", "train.lr=0.0005"),
                         resume="auto", progress=False)
    (g_lr, _), (d_lr, _) = settings(resumed)
    assert g_lr == pytest.approx(0.0005 * cg) and d_lr == pytest.approx(0.0005 * cd)
    err = capsys.readouterr().err
    assert f"G optimiser: lr {0.001 * cg:.6g} -> {0.0005 * cg:.6g}" in err
    assert f"D optimiser: lr {0.004 * cd:.6g} -> {0.0005 * cd:.6g}" in err and "betas" not in err
    with pytest.raises(ConfigError, match="train.g_lr"):
        _cfg(tmp_path, "train.g_lr=0")


def test_discriminator_loss_falls_on_a_fixed_batch(tmp_path):
    t = GANTrainer(_cfg(tmp_path, "data.hflip=false"), progress=False, write=False)
    real = torch.stack([t.train_set[i] for i in range(4)])
    losses = []
    for _ in range(12):
        t.rand.reseed(0, 0, 0)  # the same fakes every time
        losses.append(float(t.d_step(real)))
    assert losses[0] == pytest.approx(2 * math.log(2), abs=0.2)  # logits near 0 at initialisation
    assert losses[-1] < 0.5 * losses[0], losses


def test_non_finite_loss_stops_naming_term_and_step(tmp_path):
    t = GANTrainer(_cfg(tmp_path, "train.max_steps=4"), progress=False)
    t.train()
    latest = t.ckpt_dir / "latest.pt"
    before = latest.read_bytes()
    t.max_steps = 8
    with torch.no_grad():
        t.D.final_linear[1].bias.fill_(float("nan"))
    with pytest.raises(TrainingStopped, match=r"'d_loss' at step 4"):
        t.train()
    assert t.step == 6  # noticed at the next log step (log_every 2) without a per-step host sync
    assert latest.read_bytes() == before


def test_time_limit_stops_and_saves(tmp_path):
    t = GANTrainer(_cfg(tmp_path), progress=False)
    t.train(time_limit_s=0.0)
    assert t.stop_reason == "time limit" and t.step == 1
    assert torch.load(t.ckpt_dir / "latest.pt", weights_only=True)["training"]["step"] == 1


def test_preload_cache_gives_the_loader_batches(tmp_path, monkeypatch):
    cache = tmp_path / "cache.pt"
    pre = GANTrainer(_cfg(tmp_path, "data.preload=true", f"data.cache_file={cache}"), progress=False, write=False)
    plain = GANTrainer(_cfg(tmp_path), progress=False, write=False)
    for a, b, _ in zip(pre.batches(), plain.batches(), range(3)):
        assert torch.equal(a, b)  # demo pixels are 8-bit: the uint8 copy is exact
    assert cache.is_file()

    def no_render(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(gan_module, "preload_images", no_render)
    again = GANTrainer(_cfg(tmp_path, "data.preload=true", f"data.cache_file={cache}"), progress=False, write=False)
    assert torch.equal(next(again.batches()), next(plain.batches()))


def test_bf16_autocast_steps_are_finite(tmp_path):
    t = GANTrainer(_cfg(tmp_path, "train.amp=bf16", "train.max_steps=2", "train.log_every=1"), progress=False)
    t.train()
    recs = _records(t.run_dir)
    assert {"d_loss", "g_loss", "r1", "path_loss"} <= set(recs[0])  # step 0 runs both regularisers
    for r in recs:
        assert all(math.isfinite(r[k]) for k in LOSS_KEYS if k in r)


def test_cli_names_config_errors_and_benchmarks(tmp_path, capsys):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_generator.py"), "--config", TINY,
                        "--set", "train.r1=strong"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "train.r1" in r.stderr and "Traceback" not in r.stderr

    train_generator = load_script("train_generator")
    rc = train_generator.main(["--config", TINY, "--set", f"experiment.out_dir={tmp_path}", "--benchmark-steps", "2",
                               "--benchmark-warmup", "1"])
    assert rc == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("BENCHMARK_JSON ")][0]
    result = json.loads(line.split(" ", 1)[1])
    assert result["steps"] == 2 and result["steps_per_s"] > 0 and result["device"] == "cpu x1"
    assert list(tmp_path.iterdir()) == []  # a benchmark writes nothing


# -------------------------------------------------------------------------------------------------- DDP


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg_args, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    t = GANTrainer(load_gan_config(TINY, cfg_args), progress=False)
    t.train()
    state = {f"{name}.{k}": v.clone() for name, sd in _states(t).items() for k, v in sd.items()}
    state["path_length_mean"] = t.path_length_mean.clone()
    torch.save(state, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes_keep_the_models_identical(tmp_path):
    args = [f"experiment.out_dir={tmp_path}", "experiment.name=ddp", "train.max_steps=3", "train.log_every=1",
            "train.save_every=3", "train.sample_every=100", "train.d_reg_every=2"]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), args, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    ck = torch.load(tmp_path / "ddp" / "checkpoints" / "latest.pt", weights_only=True)
    assert ck["training"]["world_size"] == 2 and ck["training"]["global_batch"] == 8
    torch.manual_seed(0)  # the trainer's initialisation (experiment.seed 0)
    init = Generator(32, 32, 2, 1, channel_max=32).state_dict()
    assert not torch.equal(r0["g.conv1.conv.weight"], init["conv1.conv.weight"])  # it trained
    recs = _records(tmp_path / "ddp")
    assert [r["step"] for r in recs] == [1, 2, 3] and all(math.isfinite(r["d_loss"]) for r in recs)


# ------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_channels_last_training_runs(tmp_path):
    t = GANTrainer(_cfg(tmp_path, "experiment.device=cuda", "train.amp=bf16", "train.channels_last=true",
                        "train.max_steps=4", "train.log_every=1", "data.preload=true"), progress=False)
    t.train()
    records = _records(t.run_dir)
    assert len(records) == 4 and sum("path_loss" in r for r in records) == 2  # path length every 2nd step here
    for r in records:
        assert all(math.isfinite(r[k]) for k in ("d_loss", "g_loss", "path_loss") if k in r)
    g, _, _ = load_generator(t.ckpt_dir / "latest.pt")
    for k, v in t.g_ema.state_dict().items():
        assert torch.equal(g.state_dict()[k], v.cpu()), k
