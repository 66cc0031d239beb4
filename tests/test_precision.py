"""The --precision switch (wagi.precision): fp32 adds no autocast at all; bf16 runs a whole inversion under
autocast on this CPU with outputs close to fp32's; invert.py and edit.py take it and refuse other values."""
import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import load_script, tiny_wagi
from wagi.inference import invert_folder
from wagi.precision import PRECISIONS, precision_context

torch.set_num_threads(1)


def test_contexts():
    with precision_context("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with precision_context(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
        assert y.dtype == torch.bfloat16  # the matmul ran in bf16
    with pytest.raises(ValueError, match="precision must be one of"):
        precision_context("cpu", "fp64")
    assert PRECISIONS == ("fp32", "bf16", "fp16")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("prec")
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"im{i}.png")
    return root


def _read(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def test_bf16_inversion_is_close_to_fp32_and_fp32_is_unchanged(images, tmp_path):
    model = tiny_wagi("fusion.kind=wavelet")
    files = sorted(images.glob("*.png"))
    with torch.no_grad():
        x = torch.stack([torch.from_numpy(_read(f)).permute(2, 0, 1).float() / 127.5 - 1 for f in files])
        plain, _, _ = model.invert(x)
    s32 = invert_folder(model, files, tmp_path / "fp32", progress=False)
    s16 = invert_folder(model, files, tmp_path / "bf16", progress=False, precision="bf16")
    assert len(s32.done) == len(s16.done) == 2
    for f in files:
        a, b = _read(tmp_path / "fp32" / f.name), _read(tmp_path / "bf16" / f.name)
        ref = ((plain[files.index(f)].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
        assert np.abs(a - ref).max() <= 1  # fp32: the model's own output, no autocast in between
        diff = np.abs(a - b)
        assert 0 < diff.max() and diff.mean() < 4.0, (diff.max(), diff.mean())  # bf16 ran, and is close
    with pytest.raises(ValueError, match="precision"):
        invert_folder(model, files, tmp_path / "bad", progress=False, precision="fp64")


def test_scripts_take_the_flag(images, tmp_path, capsys):
    model = tiny_wagi("fusion.kind=wavelet")
    model.save(tmp_path / "m.pt")
    invert, edit = load_script("invert"), load_script("edit")
    assert invert.main(["--ckpt", str(tmp_path / "m.pt"), "--input", str(images), "--output", str(tmp_path / "o"),
                        "--device", "cpu", "--precision", "bf16"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").glob("*.png")) == ["im0.png", "im1.png"]
    assert edit.main(["--ckpt", str(tmp_path / "m.pt"), "--input", str(images / "im0.png"), "--direction", "sefa:0",
                      "--strengths", "-2,2", "--output", str(tmp_path / "e"), "--device", "cpu",
                      "--precision", "bf16"]) == 0
    assert (tmp_path / "e" / "im0.png").is_file()
    for script in (invert, edit):
        with pytest.raises(SystemExit) as exc:
            script.main(["--precision", "fp64", "--device", "cpu"])
        assert exc.value.code == 2


def test_autocast_keeps_feature_maps_in_reduced_precision():
    """No silent fp32 round trip per layer: under bf16 autocast every styled conv (conv, noise, bias + leaky
    ReLU) hands bf16 to the next; only the 12-channel wavelet skip accumulates in fp32."""
    from wagi.models.swagan import Generator

    torch.manual_seed(0)
    g = Generator(32, 32, 2, channels={4: 16, 8: 16, 16: 16}).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)  # a trained generator's noise strengths are not 0
    dtypes = {}
    for name, mod in g.named_modules():
        if type(mod).__name__ in ("StyledConv", "NoiseInjection"):
            mod.register_forward_hook(lambda m, i, o, name=name: dtypes.__setitem__(name, o.dtype))
    z = torch.randn(2, 32)
    with torch.no_grad():
        ref = g([z], randomize_noise=False)[0]
        with precision_context("cpu", "bf16"):
            low = g([z], randomize_noise=False)[0]
    assert len(dtypes) == 10 and set(dtypes.values()) == {torch.bfloat16}, dtypes  # 5 convs, 5 noise maps
    rel = ((low.float() - ref).norm() / ref.norm()).item()
    assert low.dtype == torch.float32 and 0 < rel < 5e-2, rel


def test_training_scripts_take_precision_as_train_amp(tmp_path):
    import argparse
    from pathlib import Path

    from wagi.cli import add_training_flags, training_overrides
    from wagi.config import load_config
    from wagi.training.gan_config import load_gan_config

    p = argparse.ArgumentParser()
    add_training_flags(p, "train.lr=1")
    root = Path(__file__).resolve().parents[1] / "configs"
    for flag, amp in (("bf16", "bf16"), ("fp32", "none")):
        args = p.parse_args(["--set", "train.amp=bf16", "--precision", flag])  # the flag wins over --set
        assert training_overrides(args)[-1] == f"train.amp={amp}"
        assert load_config(root / "tiny_test.yaml", training_overrides(args)).train.amp == amp
        assert load_gan_config(root / "swagan_tiny_test.yaml", training_overrides(args)).train.amp == amp
    assert training_overrides(p.parse_args(["--set", "train.lr=1"])) == ["train.lr=1"]  # no flag: the config's
    for script in ("train", "train_generator"):
        with pytest.raises(SystemExit) as exc:
            load_script(script).main(["--config", str(root / "tiny_test.yaml"), "--precision", "fp16"])
        assert exc.value.code == 2
    bench = load_script("benchmark")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--quick", "--only", "ops", "--device", "cpu", "--precision", "fp32"])  # fp32 is always timed
    assert exc.value.code == 2
    assert bench.main(["--quick", "--only", "ops", "--device", "cpu", "--precision", "fp16"]) == 0
