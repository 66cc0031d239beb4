"""Training start-up on bad data and bad resume files: one ``error:`` line and exit status 2, nothing
trained, from both training scripts."""
import pytest
import torch
from PIL import Image

from tests.helpers import ROOT, load_script
from wagi.checkpoint import load_checkpoint, save_checkpoint

torch.set_num_threads(1)

TINY = str(ROOT / "configs" / "tiny_test.yaml")
TINY_GAN = str(ROOT / "configs" / "swagan_tiny_test.yaml")


def _folders(root):
    """Training folders that cannot give one batch of 4: empty, only corrupt files, two images, one file."""
    (root / "empty").mkdir(parents=True)
    (root / "corrupt").mkdir()
    (root / "corrupt" / "a.png").write_bytes(b"not a png")
    (root / "corrupt" / "b.jpg").write_bytes(b"")
    (root / "two").mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (i * 80, 0, 0)).save(root / "two" / f"{i}.png")
    return {
        "empty": (root / "empty", "'data.train_dir'", "folder holds no image files"),
        "corrupt": (root / "corrupt", "'data.train_dir'", "no readable image among 2 file(s)"),
        "two": (root / "two", "'train.batch_size'", "has 2 readable image(s), fewer than one batch (4)"),
        "single_file": (root / "two" / "0.png", "'train.batch_size'", "has 1 readable image(s)"),
    }


@pytest.mark.parametrize("script,config", [("train", TINY), ("train_generator", TINY_GAN)])
def test_unusable_training_folders_are_one_line(tmp_path, capsys, script, config):
    main = load_script(script).main
    for name, (folder, key, phrase) in _folders(tmp_path / "data").items():
        rc = main(["--config", config, "--set", "data.demo=false", "--set", f"data.train_dir={folder}",
                   "--set", f"experiment.out_dir={tmp_path / 'runs'}", "--set", "train.batch_size=4",
                   "--set", "train.max_steps=1", "--no-progress"])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert rc == 2 and len(err) == 1 and key in err[0] and phrase in err[0], (name, err)
    assert not (tmp_path / "runs").exists()  # refused before the run folder was made


def test_huge_batch_is_a_config_error(tmp_path, capsys):
    rc = load_script("train").main(["--config", TINY, "--set", "train.batch_size=1000000000",
                                    "--set", f"experiment.out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "'train.batch_size': must be >= 1 and <= 4096" in err


@pytest.fixture(scope="module")
def training_ckpt(tmp_path_factory):
    from wagi.config import load_config
    from wagi.training import Trainer

    out = tmp_path_factory.mktemp("run")
    cfg = load_config(TINY, [f"experiment.out_dir={out}", "train.max_steps=1", "train.save_every=1",
                             "train.val_every=100", "train.image_every=100"])
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    return out, trainer.ckpt_dir / "latest.pt"


BAD_TRAINING_STATE = {
    "rng_is_a_string": lambda c: c["training"].update(rng="not a state"),
    "rng_torch_wrong_size": lambda c: c["training"]["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)),
    "no_optimizer": lambda c: c["training"].pop("optimizer"),
    "step_is_a_list": lambda c: c["training"].update(step=[1, 2]),
}


@pytest.mark.parametrize("name", sorted(BAD_TRAINING_STATE))
def test_resume_with_a_bad_training_state_is_one_line(tmp_path, capsys, training_ckpt, name):
    run_root, latest = training_ckpt
    ck = load_checkpoint(latest)
    BAD_TRAINING_STATE[name](ck)
    bad = tmp_path / "bad.pt"
    save_checkpoint(ck, bad)
    rc = load_script("train").main(["--config", TINY, "--set", f"experiment.out_dir={run_root}",
                                    "--set", "train.max_steps=2", "--resume", str(bad), "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and str(bad) in err[0], err


def test_resume_from_a_non_checkpoint_is_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    for script, config in (("train", TINY), ("train_generator", TINY_GAN)):
        rc = load_script(script).main(["--config", config, "--set", f"experiment.out_dir={tmp_path / script}",
                                       "--resume", str(junk), "--no-progress"])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert rc == 2 and len(err) == 1 and "not a readable PyTorch checkpoint" in err[0], (script, err)


def test_a_foreign_cache_file_is_refused_and_left_alone(tmp_path, capsys):
    cache = tmp_path / "cache.pt"
    cache.write_bytes(b"my thesis, not an image cache")
    rc = load_script("train").main(["--config", TINY, "--set", f"experiment.out_dir={tmp_path / 'runs'}",
                                    "--set", "data.preload=true", "--set", "data.demo_images=8",
                                    "--set", f"data.cache_file={cache}", "--set", "train.max_steps=1", "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 3 and len(err) == 1 and "'data.cache_file'" in err[0] and "left alone" in err[0], err
    assert cache.read_bytes() == b"my thesis, not an image cache"
    save_checkpoint({"images": [1, 2, 3], "source": {}}, cache)  # a checkpoint, but not an image cache
    rc = load_script("train").main(["--config", TINY, "--set", f"experiment.out_dir={tmp_path / 'runs'}",
                                    "--set", "data.preload=true", "--set", "data.demo_images=8",
                                    "--set", f"data.cache_file={cache}", "--set", "train.max_steps=1", "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 3 and "is not an image cache written by WaGI" in err[0], err


def test_a_second_run_on_one_folder_is_refused_and_temps_are_cleaned(tmp_path, capsys):
    from wagi.fileio import RunLock, temp_path

    run = tmp_path / "runs" / "wagi"
    stale = temp_path(run / "checkpoints" / "latest.pt")  # what a run killed while saving leaves
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    args = ["--config", TINY, "--set", f"experiment.out_dir={tmp_path / 'runs'}", "--set", "experiment.name=wagi",
            "--set", "train.max_steps=1", "--set", "train.val_every=100", "--set", "train.image_every=100",
            "--no-progress"]
    with RunLock(run):
        rc = load_script("train").main(args)
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert rc == 2 and len(err) == 1 and "is in use by pid" in err[0], err
        assert not (run / "metrics.jsonl").exists() or (run / "metrics.jsonl").read_text() == ""
        assert not (run / "config.yaml").exists()  # refused before it wrote the running run's config
    assert stale.exists()  # the refused run touched nothing
    assert load_script("train").main(args) == 0
    assert not stale.exists() and "removed 1 temporary file(s)" in capsys.readouterr().err
    assert (run / "checkpoints" / "latest.pt").is_file()


class _Payload:
    """Stands for code a hostile pickle would run: weights-only loading must refuse it."""


def test_hostile_weight_files_are_one_line(tmp_path, capsys):
    pickled = tmp_path / "alexnet.pth"
    torch.save({"features.0.weight": torch.zeros(1), "payload": _Payload()}, pickled)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x04 not a pickle at all" * 10)
    for weights in (pickled, garbage):
        rc = load_script("train").main(["--config", TINY, "--set", f"experiment.out_dir={tmp_path / 'runs'}",
                                        "--set", "loss.lpips=0.5", "--set", f"loss.lpips_weights={weights}",
                                        "--no-progress"])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert rc == 2 and len(err) == 1 and str(weights) in err[0] and "not a readable plain state_dict" in err[0], err


@pytest.mark.skipif(not __import__("os").path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_at_a_checkpoint_keeps_the_last_one(tmp_path, capsys, monkeypatch):
    import os

    from wagi import fileio

    real_fdopen = os.fdopen
    seen = []

    def fdopen(fd, *args, **kwargs):  # the second step checkpoint lands on a full disk
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".step_" in name:
            seen.append(name)
            if len(seen) == 2:
                os.close(fd)
                return real_fdopen(os.open("/dev/full", os.O_WRONLY), *args, **kwargs)
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "fdopen", fdopen)
    run = tmp_path / "runs" / "wagi"
    rc = load_script("train").main(["--config", TINY, "--set", f"experiment.out_dir={tmp_path / 'runs'}",
                                    "--set", "experiment.name=wagi", "--set", "train.max_steps=3",
                                    "--set", "train.save_every=1", "--set", "train.val_every=100",
                                    "--set", "train.image_every=100", "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 3 and len(err) == 1, err
    assert err[0] == (f"error: cannot write {run / 'checkpoints' / 'step_0000002.pt'}: no space left on device; "
                      f"the last complete checkpoint stays in {run / 'checkpoints'} (--resume auto)")
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["training"]["step"] == 1
    assert not [n for n in os.listdir(run / "checkpoints") if n.endswith(".tmp")]


def test_a_foreign_encoder_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "encoder.pt"
    save_checkpoint({"format": "wagi", "kind": "wagi_model", "config": {"encoder": "x" * 100_000},
                     "state_dict": {}}, bad)
    rc = load_script("train").main(["--config", TINY, "--set", f"experiment.out_dir={tmp_path / 'runs'}",
                                    "--set", "train.stage=fusion", "--set", "fusion.kind=wavelet",
                                    "--set", f"train.encoder_ckpt={bad}", "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and "train.encoder_ckpt" in err[0] and len(err[0]) < 700, err[0][:300]


def test_export_to_an_unwritable_path_is_one_line(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "g.pt"
    rc = load_script("train_generator").main(["--export", str(out), "--ckpt",
                                              str(ROOT / "pretrained" / "demo" / "swagan128.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"error: cannot write {out}: a part of the path is a file, not a folder\n"


def test_export_of_the_raw_generator_needs_a_training_checkpoint(tmp_path, capsys):
    """--network g reads a training checkpoint's raw generator; an exported file has only g_ema: one line."""
    rc = load_script("train_generator").main(["--export", str(tmp_path / "g.pt"), "--network", "g", "--ckpt",
                                              str(ROOT / "pretrained" / "demo" / "swagan128.pt")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and "without a 'g' generator state_dict" in err[0], err
    assert not (tmp_path / "g.pt").exists()
