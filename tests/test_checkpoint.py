"""Checkpoint I/O: atomic saves, weights_only loads, rosinality / WaGI generator files, clear errors."""
import argparse
import os
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from wagi import checkpoint as ck
from wagi.checkpoint import CheckpointError, load_checkpoint, load_generator, save_checkpoint, save_generator
from wagi.models.swagan import Generator

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "generate.py"
CHANNELS = {4: 16, 8: 16, 16: 8}
STYLE_DIM = 32


class NotPlainData:
    """A class that a weights_only load refuses."""

    def __init__(self):
        self.value = 3


def small_generator(seed=0):
    torch.manual_seed(seed)
    g = Generator(32, style_dim=STYLE_DIM, n_mlp=2, channels=CHANNELS)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)
    return g


def rosinality_args(**kw):
    base = dict(path="lmdb", arch="swagan", iter=800000, batch=16, n_sample=64, size=32, r1=10.0,
                path_regularize=2.0, mixing=0.9, ckpt=None, lr=0.002, channel_multiplier=2, wandb=False,
                local_rank=0, augment=False, augment_p=0.0, latent=STYLE_DIM, n_mlp=2, start_iter=0,
                distributed=False)
    base.update(kw)
    return argparse.Namespace(**base)


def images(g, seed=1):
    w = torch.randn(2, g.n_latent, g.style_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return g([w], input_is_latent=True, randomize_noise=False)[0]


# ------------------------------------------------------------------ save / load
def test_save_checkpoint_is_atomic_and_replaces(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "ck.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["ck.pt"]

    def crash(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 3}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 2  # the old file is intact
    assert [p.name for p in path.parent.iterdir()] == ["ck.pt"]  # and no temp file is left


def test_save_checkpoint_refuses_non_plain_data(tmp_path):
    path = tmp_path / "ck.pt"
    with pytest.raises(TypeError, match=r"checkpoint\['opts'\]\['x'\].*NotPlainData"):
        save_checkpoint({"opts": {"x": NotPlainData()}}, path)
    assert not path.exists()
    ok = {"a": [1, 2.5, "s", None, True], "b": (torch.float16, torch.device("cpu")), "c": {1: torch.zeros(1)}}
    save_checkpoint(ok, path)
    out = torch.load(path, weights_only=True)
    assert out["b"] == (torch.float16, torch.device("cpu")) and out["a"] == ok["a"]
    # subclasses of plain scalars do not survive weights_only loading: refused when saving
    with pytest.raises(TypeError, match=r"checkpoint\['torch'\].*TorchVersion"):
        save_checkpoint({"torch": torch.__version__}, tmp_path / "v.pt")
    with pytest.raises(TypeError, match="float64"):
        save_checkpoint({"x": np.float64(1.5)}, tmp_path / "f.pt")


def test_rosinality_namespace_loads_without_trust(tmp_path):
    path = tmp_path / "000100.pt"
    torch.save({"g_ema": {"x": torch.ones(2)}, "args": rosinality_args(), "ada_aug_p": 0.0}, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)  # why the allow-list is needed
    out = load_checkpoint(path)
    assert type(out["args"]) is dict and out["args"]["arch"] == "swagan" and out["args"]["size"] == 32
    assert torch.equal(out["g_ema"]["x"], torch.ones(2))


def test_untrusted_classes_need_trust(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"opts": NotPlainData(), "w": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match=r"NotPlainData.*pass --trust-checkpoint \(config: "
                                              r"generator\.trust_checkpoint: true\)"):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="full unpickling"):
        out = load_checkpoint(path, trust=True)
    assert out["opts"].value == 3


_PICKLED_GENERATOR = """
import sys, torch
from wagi.checkpoint import save_generator
from wagi.models.swagan import Generator

class Opts:  # a class: the file is no longer plain data
    pass

torch.manual_seed(0)
g = Generator(16, style_dim=8, n_mlp=1, channel_multiplier=1, channel_max=8)
save_generator(sys.argv[1], g, None)
ck = torch.load(sys.argv[1], weights_only=True)
ck.pop("integrity")
ck["opts"] = Opts()
torch.save(ck, sys.argv[1])
"""


@pytest.mark.slow
def test_one_trust_opt_in_with_an_unmissable_notice(tmp_path):
    import subprocess
    import sys

    from tests.helpers import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    ckpt = tmp_path / "pickled.pt"
    subprocess.run([sys.executable, "-c", _PICKLED_GENERATOR, str(ckpt)], check=True, env=env, cwd=tmp_path)
    cmd = [sys.executable, str(ROOT / "scripts" / "generate.py"), "--ckpt", str(ckpt), "--n", "1", "--device", "cpu",
           "--output", str(tmp_path / "s.png")]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "__main__.Opts" in refused.stderr and "pass --trust-checkpoint (config: generator.trust_checkpoint: true)" \
        in refused.stderr
    trusted = subprocess.run(cmd + ["--trust-checkpoint"], capture_output=True, text=True, env=env, timeout=120,
                             cwd=tmp_path)
    # the class is gone in this process, so unpickling fails; the notice came first and is not a Python warning
    assert f"WARNING: {ckpt}: full unpickling (--trust-checkpoint): this can run code stored in the file" \
        in trusted.stderr.splitlines()[0]


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint" * 10, "truncated"])
def test_unreadable_files(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        torch.save({"w": torch.randn(100)}, path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


# ------------------------------------------------------------------ generator loading
def test_infer_generator_kwargs_from_shapes():
    for size, cm in ((256, 1), (1024, 2), (128, 4)):
        with torch.device("meta"):
            sd = Generator(size, channel_multiplier=cm).state_dict()
        kw = ck.infer_generator_kwargs(sd)
        assert kw == {"size": size, "style_dim": 512, "n_mlp": 8, "channel_multiplier": cm}
    with torch.device("meta"):
        sd = Generator(64, style_dim=STYLE_DIM, n_mlp=3, channels={4: 16, 8: 16, 16: 8, 32: 8}).state_dict()
    assert ck.infer_generator_kwargs(sd) == {"size": 64, "style_dim": STYLE_DIM, "n_mlp": 3,
                                             "channels": {4: 16, 8: 16, 16: 8, 32: 8}}
    with pytest.raises(CheckpointError, match="size 128 was asked for"):
        ck.infer_generator_kwargs(sd, size=128)
    with torch.device("meta"):
        sd = Generator(256, channel_multiplier=1).state_dict()
    with pytest.raises(CheckpointError, match="channel_multiplier 2 was asked for"):
        ck.infer_generator_kwargs(sd, channel_multiplier=2)
    kw = ck.infer_generator_kwargs(sd)
    assert ck.apply_multiplier_hint(kw, 2) == kw  # shapes win over rosinality's args
    with torch.device("meta"):
        sd = Generator(64, channel_multiplier=1).state_dict()  # features <= 32: every multiplier fits
    kw = ck.infer_generator_kwargs(sd)
    assert kw["channel_multiplier"] == 2 and ck.apply_multiplier_hint(kw, 1)["channel_multiplier"] == 1


def test_load_rosinality_checkpoint(tmp_path):
    g = small_generator()
    path = tmp_path / "010000.pt"
    torch.save({"g": g.state_dict(), "d": {}, "g_ema": g.state_dict(), "g_optim": {}, "d_optim": {},
                "args": rosinality_args(), "ada_aug_p": 0.0}, path)
    loaded, latent_avg, info = load_generator(path)
    assert latent_avg is None and info["format"] == "rosinality" and info["latent_avg_source"] is None
    assert info["args"]["latent"] == STYLE_DIM and not loaded.training
    assert info["generator_kwargs"]["channels"] == CHANNELS
    assert torch.equal(images(loaded), images(g))

    _, avg, info = load_generator(path, compute_latent_avg=True)
    assert avg.shape == (1, STYLE_DIM) and info["latent_avg_source"] == "computed"
    expected = g.mean_latent(ck.LATENT_AVG_SAMPLES, generator=torch.Generator().manual_seed(ck.LATENT_AVG_SEED))
    torch.testing.assert_close(avg, expected)

    with pytest.raises(CheckpointError, match="size 64 was asked for"):
        load_generator(path, size=64)


def test_load_converted_checkpoint_with_latent_avg_and_bare_state_dict(tmp_path):
    g = small_generator()
    avg = torch.randn(STYLE_DIM)
    path = tmp_path / "converted.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": avg}, path)
    _, latent_avg, info = load_generator(path)
    assert info["latent_avg_source"] == "checkpoint" and torch.equal(latent_avg, avg.view(1, -1))
    torch.save(g.state_dict(), path)
    loaded, _, info = load_generator(path)
    assert info["format"] == "state_dict" and torch.equal(images(loaded), images(g))


def test_project_format_round_trip(tmp_path):
    g = small_generator(seed=3)
    avg = g.mean_latent(16)
    config = {"run": {"name": "demo", "lr": 1e-3}, "generator": {"size": 32}}
    path = save_generator(tmp_path / "g.pt", g, avg, config, step=1234, metrics={"fid": 12.5})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "wagi" and raw["version"] == 1 and raw["step"] == 1234
    assert raw["generator"]["channels"] == CHANNELS and raw["config"] == config
    loaded, latent_avg, info = load_generator(path)
    assert info["format"] == "wagi" and info["config"] == config and info["latent_avg_source"] == "checkpoint"
    assert torch.equal(latent_avg, avg)
    assert torch.equal(images(loaded), images(g))
    assert loaded.config == g.config
    model_file = tmp_path / "model.pt"  # a full WaGI model checkpoint: encoder + generator
    torch.save({"format": "wagi", "version": 1, "kind": "wagi_model", "config": config, "latent_avg": avg[0],
                "state_dict": {"encoder.w": torch.zeros(2),
                               **{f"generator.{k}": v for k, v in g.state_dict().items()}}}, model_file)
    from_model, model_avg, info = load_generator(model_file)
    assert info["format"] == "wagi_model" and torch.equal(model_avg, avg)
    assert torch.equal(images(from_model), images(g))
    del raw["generator"]  # without the kwargs the shapes still rebuild the generator
    torch.save(raw, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="integrity check failed"):  # an edited file no longer fits its hash
        load_generator(tmp_path / "edited.pt")
    del raw["integrity"]  # ... and loads as an older file does once the hash is gone
    torch.save(raw, tmp_path / "no_kwargs.pt")
    assert torch.equal(images(load_generator(tmp_path / "no_kwargs.pt")[0]), images(g))
    with pytest.raises(ValueError, match="clash"):
        save_generator(tmp_path / "h.pt", g, avg, config, format="other")
    with pytest.raises(TypeError, match="not plain data"):
        save_generator(tmp_path / "h.pt", g, avg, {"opts": argparse.Namespace(a=1)})


def test_mismatched_state_dict_lists_keys(tmp_path):
    g = small_generator()
    sd = g.state_dict()
    sd.pop("convs.1.noise.weight")
    sd["extra.weight"] = torch.zeros(1)
    sd["to_rgbs.0.bias"] = torch.zeros(1, 12, 2, 2)
    path = tmp_path / "bad.pt"
    torch.save({"format": "wagi", "version": 1, "generator": g.config, "config": {}, "g_ema": sd,
                "latent_avg": None}, path)
    with pytest.raises(CheckpointError) as err:
        load_generator(path)
    msg = str(err.value)
    assert "1 missing: convs.1.noise.weight" in msg and "1 unexpected: extra.weight" in msg
    assert "to_rgbs.0.bias (1, 12, 2, 2) vs (1, 12, 1, 1)" in msg


def test_foreign_checkpoints_give_clear_errors(tmp_path):
    psp = tmp_path / "psp.pt"
    torch.save({"state_dict": {"encoder.input_layer.0.weight": torch.zeros(1),
                               "decoder.style.1.weight": torch.zeros(1)},
                "opts": {"output_size": 1024}, "latent_avg": torch.zeros(18, 512)}, psp)
    with pytest.raises(CheckpointError, match="pSp-family encoder checkpoint"):
        load_generator(psp)

    sg2 = tmp_path / "stylegan2.pt"
    sd = {"style.1.weight": torch.zeros(8, 8), "input.input": torch.zeros(1, 8, 4, 4),
          "to_rgb1.conv.weight": torch.zeros(1, 3, 8, 1, 1), "to_rgb1.bias": torch.zeros(1, 3, 1, 1)}
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(8)}, sg2)
    with pytest.raises(CheckpointError, match="StyleGAN2 \\(non-SWAGAN\\)"):
        load_generator(sg2)

    arch = tmp_path / "arch.pt"
    torch.save({"g_ema": small_generator().state_dict(), "args": rosinality_args(arch="stylegan2")}, arch)
    with pytest.raises(CheckpointError, match="--arch 'stylegan2'"):
        load_generator(arch)

    other = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="no 'g_ema'.*model"):
        load_generator(other)
    torch.save(torch.zeros(3), other)
    with pytest.raises(CheckpointError, match="holds a Tensor"):
        load_generator(other)
    encoder_only = tmp_path / "encoder_only.pt"
    torch.save({"format": "wagi", "version": 1, "config": {}, "encoder": {"w": torch.zeros(1)}}, encoder_only)
    with pytest.raises(CheckpointError, match="WaGI checkpoint without a 'g_ema'"):
        load_generator(encoder_only)
    newer = tmp_path / "newer.pt"
    torch.save({"format": "wagi", "version": 2}, newer)
    with pytest.raises(CheckpointError, match="version 2"):
        load_generator(newer)


# ------------------------------------------------------------------ scripts/generate.py
def test_generate_script(tmp_path, capsys):
    main = runpy.run_path(str(SCRIPT), run_name="generate")["main"]
    g = small_generator()
    ckpt = save_generator(tmp_path / "g.pt", g, None, {})
    out = tmp_path / "grid.png"
    assert main(["--ckpt", str(ckpt), "--n", "4", "--output", str(out), "--device", "cpu"]) == 0
    from PIL import Image
    assert Image.open(out).size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)  # 2x2 grid, padding 2
    assert main(["--ckpt", str(ckpt), "--n", "4", "--output", str(out)]) == 2  # no silent overwrite: a usage error
    assert "exists" in capsys.readouterr().err
    assert main(["--ckpt", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "x.png")]) == 2
    assert main(["--random", "--n", "2", "--size", "16", "--output", str(tmp_path / "random.png")]) == 0
    assert "randomly initialised" in capsys.readouterr().out
    (tmp_path / "a_file").write_text("x")
    assert main(["--random", "--n", "2", "--size", "16", "--output", str(tmp_path / "a_file" / "g.png")]) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot write {tmp_path / 'a_file' / 'g.png'}: a part of the path is a file, not a folder\n"
    with pytest.raises(SystemExit):  # argparse: one usage line, exit 2
        main(["--n", "100000000", "--output", str(tmp_path / "huge.png")])
    assert "must be <= 4096" in capsys.readouterr().err


def test_to_rgb_kernel_3_round_trips_and_is_inferred(tmp_path):
    torch.manual_seed(0)
    g = Generator(32, style_dim=STYLE_DIM, n_mlp=2, channels=CHANNELS, to_rgb_kernel=3)
    path = save_generator(tmp_path / "g3.pt", g, g.mean_latent(16))
    loaded, _, _ = load_generator(path)
    assert loaded.config == g.config and loaded.config["to_rgb_kernel"] == 3
    assert torch.equal(images(loaded), images(g))
    assert ck.infer_generator_kwargs(g.state_dict())["to_rgb_kernel"] == 3
    assert "to_rgb_kernel" not in ck.infer_generator_kwargs(small_generator().state_dict())
    torch.save({"g_ema": g.state_dict()}, tmp_path / "rosinality_layout.pt")  # no kwargs: read from the shapes
    assert torch.equal(images(load_generator(tmp_path / "rosinality_layout.pt")[0]), images(g))
    sd = g.state_dict()
    sd["to_rgb1.conv.weight"] = torch.zeros(1, 12, CHANNELS[4], 2, 2)
    torch.save({"g_ema": sd}, tmp_path / "even.pt")
    with pytest.raises(CheckpointError, match=r"to_rgb1.conv.weight.*k odd"):
        load_generator(tmp_path / "even.pt")


def test_every_wagi_file_writes_the_one_format_name_and_version(tmp_path):
    import wagi.models.wagi as wagi_module
    from tests.helpers import tiny_wagi
    from wagi.editing import LevelsMapper

    model = tiny_wagi()
    model.save(tmp_path / "model.pt")
    LevelsMapper(model.n_latent, model.generator.style_dim).save(tmp_path / "mapper.pt")
    save_generator(tmp_path / "g.pt", small_generator(), None, {})
    for name in ("model.pt", "mapper.pt", "g.pt"):
        raw = torch.load(tmp_path / name, map_location="cpu", weights_only=True)
        assert (raw["format"], raw["version"]) == (ck.FORMAT_NAME, ck.FORMAT_VERSION), name
    assert not hasattr(wagi_module, "FORMAT")  # defined once, in wagi.checkpoint
    assert wagi_module.FORMAT_VERSION is ck.FORMAT_VERSION
