"""The encoder trainer in time slices: time limit, stop signals, exact resume, wall time and cards,
preloaded demo data and its cache, map2style width, and the generator-checkpoint config check.

All on the CPU with ``configs/tiny_test.yaml`` (32 px demo faces, small backbone, ReStyle x2).
"""
import json
import os
import signal
from pathlib import Path

import pytest
import torch

import wagi.config
import wagi.data.demo_faces
import wagi.datasets
import wagi.training.gan_config
from tests.helpers import load_script
from wagi.checkpoint import save_generator
from wagi.config import load_config
from wagi.data.demo_faces import DemoFaceDataset
from wagi.demo_seeds import TEST_SEED_OFFSET, TRAIN_SEED_END
from wagi.models.swagan import Generator
from wagi.models.wagi import WaGI
from wagi.training import Trainer
from wagi.training import common as common_module
from wagi.training import data as data_module
from wagi.training.gan import build_gan_dataset
from wagi.training.gan_config import gan_to_dict, load_gan_config

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny_test.yaml")
GAN_TINY = str(ROOT / "configs" / "swagan_tiny_test.yaml")
NO_EXTRAS = ["train.val_every=1000", "train.image_every=1000"]  # keep the slices about training only
DEMO_N = 16  # demo training faces of the preload tests (4 batches of 4)


def _cfg(tmp_path, *overrides):
    return load_config(TINY, [f"experiment.out_dir={tmp_path}", *NO_EXTRAS, *overrides])


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _train_losses(run_dir):
    records = [json.loads(ln) for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: r[k] for k in ("total", "l2", "wavelet")} for r in records if r["kind"] == "train"}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _latest(run_dir):
    return torch.load(Path(run_dir) / "checkpoints" / "latest.pt", weights_only=True)


# ------------------------------------------------------------------------------------- time slices


def test_one_step_slices_with_preload_equal_one_uninterrupted_loader_run(tmp_path):
    n_steps = 5
    common = [f"train.max_steps={n_steps}", "train.log_every=1", "train.save_every=1000", "train.optimizer=ranger",
              f"data.demo_images={DEMO_N}"]
    straight = Trainer(_cfg(tmp_path, "experiment.name=straight", *common), progress=False)
    straight.train()
    sliced = ["experiment.name=sliced", "data.preload=true", f"data.cache_file={tmp_path / 'faces.pt'}", *common]
    walls = []
    for slice_index in range(n_steps):
        t = Trainer(_cfg(tmp_path, *sliced), resume="auto", progress=False)
        assert t.step == slice_index
        assert t.wall_time_s == (walls[-1] if walls else 0.0)  # restored, and added to by this slice
        t.train(time_limit_s=0.0)  # a limit that has passed after the first step
        assert t.step == slice_index + 1
        assert t.stop_reason == ("time limit" if t.step < n_steps else None)
        ck = _latest(t.run_dir)
        assert ck["training"]["step"] == t.step
        walls.append(ck["training"]["wall_time_s"])
        assert ck["training"]["cards"] == ["cpu x1"]
    _assert_same_weights(_weights(straight), _weights(t))
    la, lb = _train_losses(straight.run_dir), _train_losses(t.run_dir)
    assert sorted(la) == list(range(1, n_steps + 1)) and la == lb
    # wall time is summed over the slices: it grows with each one
    assert all(b > a > 0 for a, b in zip(walls, walls[1:]))
    assert _latest(straight.run_dir)["training"]["wall_time_s"] > 0


def test_slices_cut_by_a_clock_resume_exactly(tmp_path, monkeypatch):
    """A clock that reads the step count stops each slice after exactly 3 steps, off the log and save grid."""
    n_steps = 7
    common = [f"train.max_steps={n_steps}", "train.log_every=2", "train.save_every=2", "train.keep_checkpoints=1"]
    straight = Trainer(_cfg(tmp_path, "experiment.name=straight", *common), progress=False)
    straight.train()
    stops = []
    trainer = None
    monkeypatch.setattr(common_module.time, "monotonic", lambda: float(trainer.step if trainer else 0))
    for limit in (3.0, 3.0, None):
        trainer = Trainer(_cfg(tmp_path, "experiment.name=sliced", *common), resume="auto", progress=False)
        trainer.train(time_limit_s=limit)
        stops.append((trainer.step, trainer.stop_reason, _latest(trainer.run_dir)["training"]["step"]))
    monkeypatch.undo()
    assert stops == [(3, "time limit", 3), (6, "time limit", 6), (7, None, 7)]
    _assert_same_weights(_weights(straight), _weights(trainer))
    la, lb = _train_losses(straight.run_dir), _train_losses(trainer.run_dir)
    assert sorted(la) == [2, 4, 6, 7] and la == lb
    # optimizer state too (Adam moments and step counts)
    oa, ob = straight.optimizer.state_dict()["state"], trainer.optimizer.state_dict()["state"]
    assert oa.keys() == ob.keys()
    for i in oa:
        for k in oa[i]:
            assert torch.equal(torch.as_tensor(oa[i][k]), torch.as_tensor(ob[i][k])), (i, k)


def test_cli_time_limit_saves_prints_how_to_continue_and_resumes(tmp_path, capsys):
    train = load_script("train")
    args = ["--config", TINY, "--no-progress", "--set", f"experiment.out_dir={tmp_path}", "--set",
            "train.max_steps=3", "--set", "train.save_every=1000", "--set", "train.val_every=1000"]
    assert train.main(args + ["--resume", "auto", "--time-limit", "0"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    run = tmp_path / "tiny_test"
    assert out == [f"stopped (time limit) at step 1 of 3; checkpoint {run / 'checkpoints' / 'latest.pt'}; "
                   "continue with the same --config/--set options and --resume auto"]
    ck = _latest(run)
    assert ck["training"]["step"] == 1 and ck["training"]["cards"] == ["cpu x1"]
    first_wall = ck["training"]["wall_time_s"]
    assert first_wall > 0
    assert train.main(args + ["--resume", "auto", "--time-limit", "5"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"done: 3 steps, checkpoints in {run / 'checkpoints'}"
    ck = _latest(run)
    assert ck["training"]["step"] == 3 and ck["training"]["wall_time_s"] > first_wall
    assert ck["training"]["cards"] == ["cpu x1"]


def _signal_at_step(monkeypatch, step, times):
    """Make Trainer.train_step send SIGINT to this process ``times`` times right after step ``step``."""
    plain = Trainer.train_step

    def train_step(self, x):
        logs = plain(self, x)
        if self.step == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return logs

    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_first_signal_saves_and_exits_130_and_resume_is_exact(tmp_path, monkeypatch, capsys):
    train = load_script("train")
    common = ["--config", TINY, "--no-progress", "--set", f"experiment.out_dir={tmp_path}", "--set",
              "train.max_steps=4", "--set", "train.save_every=1000", "--set", "train.val_every=1000",
              "--set", "train.log_every=1"]
    assert train.main(common + ["--set", "experiment.name=straight"]) == 0
    before = signal.getsignal(signal.SIGINT)
    _signal_at_step(monkeypatch, 2, 1)
    assert train.main(common + ["--set", "experiment.name=cut", "--resume", "auto"]) == 130
    assert signal.getsignal(signal.SIGINT) is before  # the trainer's handlers are gone again
    assert "stopped (signal SIGINT) at step 2 of 4" in capsys.readouterr().out
    assert _latest(tmp_path / "cut")["training"]["step"] == 2
    monkeypatch.undo()
    assert train.main(common + ["--set", "experiment.name=cut", "--resume", "auto"]) == 0
    a, b = _latest(tmp_path / "straight"), _latest(tmp_path / "cut")
    _assert_same_weights(a["state_dict"], b["state_dict"])
    assert _train_losses(tmp_path / "straight") == _train_losses(tmp_path / "cut")


def test_second_signal_interrupts_at_once(tmp_path, monkeypatch, capsys):
    train = load_script("train")
    _signal_at_step(monkeypatch, 1, 2)
    rc = train.main(["--config", TINY, "--no-progress", "--set", f"experiment.out_dir={tmp_path}",
                     "--set", "train.max_steps=4", "--set", "train.save_every=1000"])
    assert rc == 130
    assert "interrupted at step 1; resume with --resume auto" in capsys.readouterr().err
    assert not (tmp_path / "tiny_test" / "checkpoints" / "latest.pt").exists()  # no stop checkpoint


# ------------------------------------------------------------------------------------ demo data, preload


def test_demo_images_are_the_first_seeds_the_demo_gan_trains_on(tmp_path):
    t = Trainer(_cfg(tmp_path, f"data.demo_images={DEMO_N}"), progress=False)
    gan_set = build_gan_dataset(load_gan_config(GAN_TINY, [f"data.demo_images={DEMO_N}"]))
    assert len(t.train_set) == len(gan_set) == DEMO_N
    for i in (0, 7, DEMO_N - 1):
        assert torch.equal(t.train_set[i], gan_set[i]), i
    assert len(Trainer(_cfg(tmp_path), progress=False).train_set) == TRAIN_SEED_END
    assert TEST_SEED_OFFSET == TRAIN_SEED_END  # validation faces start right after the training seeds
    for module in (wagi.datasets, wagi.config, wagi.data.demo_faces, wagi.training.gan_config):
        assert module.TRAIN_SEED_END is TRAIN_SEED_END  # defined once, in wagi.demo_seeds, and imported


def test_preloaded_training_equals_loader_training(tmp_path):
    common = [f"data.demo_images={DEMO_N}", "train.max_steps=6", "train.log_every=1", "data.hflip=true",
              "train.save_every=1000"]
    loader = Trainer(_cfg(tmp_path, "experiment.name=loader", *common), progress=False)
    pre = Trainer(_cfg(tmp_path, "experiment.name=pre", "data.preload=true", *common), progress=False)
    for step, (a, b) in enumerate(zip(loader.batches(), pre.batches())):
        assert torch.equal(a, b), step  # demo pixels are 8-bit: the uint8 copy is exact
        if step == 5:  # past an epoch (4 batches of 4)
            break
    assert pre._preloaded.images.dtype == torch.uint8
    assert tuple(pre._preloaded.images.shape) == (DEMO_N, 3, 32, 32)
    loader.train()
    pre.train()
    _assert_same_weights(_weights(loader), _weights(pre))
    la, lb = _train_losses(loader.run_dir), _train_losses(pre.run_dir)
    assert sorted(la) == list(range(1, 7)) and la == lb


def test_cache_file_is_reused_and_rebuilt_when_its_source_differs(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "faces.pt"
    common = ["data.preload=true", f"data.cache_file={cache}"]
    first = Trainer(_cfg(tmp_path, f"data.demo_images={DEMO_N}", *common), progress=False)
    first._preload()
    stored = torch.load(cache, weights_only=True)
    assert stored["source"]["kind"] == "demo" and stored["source"]["n"] == DEMO_N
    assert stored["source"]["size"] == 32
    expected = torch.stack([DemoFaceDataset(DEMO_N, 32)[i] for i in range(DEMO_N)])
    assert torch.equal(stored["images"].float() / 127.5 - 1, expected)

    def no_render(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data_module, "preload_images", no_render)
    again = Trainer(_cfg(tmp_path, f"data.demo_images={DEMO_N}", *common), progress=False)
    assert torch.equal(again._preload().images, first._preloaded.images)
    monkeypatch.undo()

    other = Trainer(_cfg(tmp_path, f"data.demo_images={DEMO_N + 4}", *common), progress=False)
    assert len(other._preload()) == DEMO_N + 4
    assert "was built from" in capsys.readouterr().err
    rebuilt = torch.load(cache, weights_only=True)
    assert rebuilt["source"]["n"] == DEMO_N + 4
    assert torch.equal(rebuilt["images"][:DEMO_N], stored["images"])  # seeds [0, n) do not depend on n


# ------------------------------------------------------------------------------------- head_channels


def test_head_channels_set_the_map2style_width_and_survive_the_checkpoint(tmp_path):
    t = Trainer(_cfg(tmp_path, "encoder.head_channels=8", "train.max_steps=1", "train.save_every=1"),
                progress=False)
    assert t.model.encoder.head_channels == 8
    assert tuple(t.model.encoder.styles[0].convs[0].weight.shape) == (8, 64, 3, 3)  # 8w = 64 channels in
    default = Trainer(_cfg(tmp_path, "experiment.name=default"), progress=False)
    assert tuple(default.model.encoder.styles[0].convs[0].weight.shape) == (64, 64, 3, 3)
    t.train()
    loaded = WaGI.load(t.ckpt_dir / "latest.pt")
    assert loaded.encoder.head_channels == 8
    _assert_same_weights(loaded.state_dict(), {k: v for k, v in t.model.state_dict().items()})


# ------------------------------------------------------------------------------- generator checkpoint


@pytest.fixture
def gan_ckpt(tmp_path):
    """A generator file as the GAN trainer's export writes it: g_ema, latent_avg and the GAN run's config."""
    gan_cfg = load_gan_config(GAN_TINY)
    torch.manual_seed(5)
    g = Generator(32, 32, 2, channel_multiplier=1, channel_max=32)
    path = tmp_path / "demo_g.pt"
    save_generator(path, g, g.mean_latent(64), config=gan_to_dict(gan_cfg))
    return path, g


def test_generator_config_mismatch_is_one_error_naming_key_and_values(tmp_path, gan_ckpt):
    path, _ = gan_ckpt
    # tiny_test.yaml leaves channel_multiplier at 2; the GAN was trained with 1
    with pytest.raises(ValueError, match=r"^generator\.channel_multiplier is 2 in this config but 1 in the "
                                         r"config stored in .*demo_g\.pt"):
        Trainer(_cfg(tmp_path, f"generator.ckpt={path}"), progress=False)
    with pytest.raises(ValueError, match=r"^generator\.n_mlp is 3 in this config but 2"):
        Trainer(_cfg(tmp_path, f"generator.ckpt={path}", "generator.channel_multiplier=1", "generator.n_mlp=3"),
                progress=False)
    assert not (tmp_path / "tiny_test").exists()  # nothing was written


def test_cli_reports_generator_config_mismatch(tmp_path, gan_ckpt, capsys):
    path, _ = gan_ckpt
    rc = load_script("train").main(["--config", TINY, "--no-progress", "--set", f"experiment.out_dir={tmp_path}",
                                    "--set", f"generator.ckpt={path}", "--set", "generator.channel_multiplier=1",
                                    "--set", "generator.channel_max=64"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "generator.channel_max is 64 in this config but 32" in err


def test_matching_generator_checkpoint_trains_and_reloads(tmp_path, gan_ckpt):
    path, g = gan_ckpt
    t = Trainer(_cfg(tmp_path, f"generator.ckpt={path}", "generator.channel_multiplier=1", "train.max_steps=1",
                     "train.save_every=1"), progress=False)
    for k, v in g.state_dict().items():
        assert torch.equal(t.model.generator.state_dict()[k], v), k
    t.train()
    loaded = WaGI.load(t.ckpt_dir / "latest.pt")  # rebuilt from the stored config alone
    for k, v in g.state_dict().items():
        assert torch.equal(loaded.generator.state_dict()[k], v), k
