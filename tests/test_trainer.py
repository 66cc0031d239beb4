import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wagi.config import load_config
from wagi.training import Trainer, TrainingStopped

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny_test.yaml")


def _cfg(tmp_path, *overrides):
    return load_config(TINY, [f"experiment.out_dir={tmp_path}", *overrides])


def _state(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _train_logs(run_dir):
    lines = [json.loads(ln) for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["total"] for r in lines if r["kind"] == "train"}


def test_steps_lower_the_loss_on_a_fixed_batch(tmp_path):
    t = Trainer(_cfg(tmp_path, "data.hflip=false"), progress=False)
    x = torch.stack([t.test_set[i] for i in range(4)])
    first = t.train_step(x)["total"]
    for _ in range(25):
        last = t.train_step(x)["total"]
    assert last < 0.6 * first, (first, last)


def test_validation_lines_without_a_bar_and_no_bar_frames_in_a_redirected_log(tmp_path, capsys):
    common = ["train.max_steps=2", "train.val_every=2", "train.save_every=2", "train.image_every=100"]
    Trainer(_cfg(tmp_path, "experiment.name=quiet", *common), progress=False).train()
    out = capsys.readouterr().out
    assert sum(line.startswith("step 2: val mse ") for line in out.splitlines()) == 1  # --no-progress keeps results
    Trainer(_cfg(tmp_path, "experiment.name=bar", *common), progress=True).train()
    captured = capsys.readouterr()  # pytest's capture is not a terminal, like a redirected log
    assert "\r" not in captured.err and "it/s" not in captured.err
    assert sum(line.startswith("step 2: val mse ") for line in captured.out.splitlines()) == 1


def test_resume_is_exact(tmp_path, capsys):
    common = ["train.log_every=1", "train.val_every=100", "train.image_every=100", "train.optimizer=ranger"]
    straight = Trainer(_cfg(tmp_path, "experiment.name=a", "train.max_steps=8", "train.save_every=4", *common),
                       progress=False)
    straight.train()
    # Same run in two processes' worth: stop at 4, then resume from the checkpoint to 8.
    half = Trainer(_cfg(tmp_path, "experiment.name=b", "train.max_steps=4", "train.save_every=4", *common),
                   progress=False)
    half.train()
    del half
    capsys.readouterr()
    resumed = Trainer(_cfg(tmp_path, "experiment.name=b", "train.max_steps=8", "train.save_every=4", *common),
                      resume="auto", progress=False)
    assert resumed.step == 4
    out = capsys.readouterr()  # a diagnostic: on stderr, like the GAN trainer's
    assert f"resumed from {resumed.ckpt_dir / 'latest.pt'} at step 4" in out.err and "resumed" not in out.out
    resumed.train()
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la, lb = _train_logs(tmp_path / "a"), _train_logs(tmp_path / "b")
    assert la == lb and sorted(la) == list(range(1, 9))


def test_checkpoint_is_weights_only_and_holds_config(tmp_path):
    t = Trainer(_cfg(tmp_path, "train.max_steps=2", "train.save_every=2", "train.val_every=2",
                     "fusion.kind=wavelet"), progress=False)
    t.train()
    from wagi.models.wagi import WaGI

    loaded = WaGI.load(tmp_path / "tiny_test" / "checkpoints" / "latest.pt")  # what invert.py / edit.py do
    assert loaded.fusion is None
    for k, v in t.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    ck = torch.load(tmp_path / "tiny_test" / "checkpoints" / "latest.pt", weights_only=True)
    assert ck["training"]["step"] == 2 and ck["config"]["train"]["max_steps"] == 2
    assert ck["training"]["cards"] == ["cpu x1"] and ck["training"]["wall_time_s"] > 0  # for the model manifest
    assert ck["config"]["encoder"]["head_channels"] is None and ck["config"]["data"]["preload"] is False
    assert (tmp_path / "tiny_test" / "config.yaml").exists()
    val = [json.loads(ln) for ln in (tmp_path / "tiny_test" / "metrics.jsonl").read_text().splitlines()
           if '"val"' in ln]
    assert val and {"LL", "LH1", "HL1", "HH1", "mse"} <= set(val[-1])
    # the four band MSEs of the validation set add up to 4x its pixel MSE (orthonormal Haar)
    v = val[-1]
    assert abs(v["LL"] + v["LH1"] + v["HL1"] + v["HH1"] - 4 * v["mse"]) < 1e-5 * max(1.0, v["mse"])
    # no leftover temp files from the atomic writes
    assert not [p for p in (tmp_path / "tiny_test" / "checkpoints").iterdir() if not p.name.endswith(".pt")]


def _val_mses(run_dir):
    lines = [json.loads(ln) for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["mse"] for r in lines if r["kind"] == "val"}


def test_best_checkpoint_holds_the_lowest_validation(tmp_path):
    # a large learning rate makes the validation MSE go up and down; one periodic checkpoint is kept
    t = Trainer(_cfg(tmp_path, "train.max_steps=10", "train.val_every=2", "train.save_every=2",
                     "train.keep_checkpoints=1", "train.lr=0.02"), progress=False)
    t.train()
    ckpt_dir = tmp_path / "tiny_test" / "checkpoints"
    vals = _val_mses(tmp_path / "tiny_test")
    assert sorted(vals) == [2, 4, 6, 8, 10]
    best_step = min(vals, key=vals.get)
    best = torch.load(ckpt_dir / "best.pt", weights_only=True)
    tr = best["training"]
    assert tr["step"] == best_step == tr["best_step"] == t.best_step
    assert tr["best_val"] == t.best_val == pytest.approx(vals[best_step], rel=1e-6)
    latest = torch.load(ckpt_dir / "latest.pt", weights_only=True)
    assert latest["training"]["step"] == 10 and latest["training"]["best_step"] == best_step
    assert latest["training"]["best_val"] == tr["best_val"]
    assert set(best) == set(latest) and set(tr) == set(latest["training"])  # same content as a periodic one
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["best.pt", "latest.pt", "step_0000010.pt"]
    # the weights in best.pt are the ones that gave the best validation
    t.model.load_state_dict(best["state_dict"], strict=True)
    assert t.validate()["mse"] == pytest.approx(vals[best_step], rel=1e-6)


def test_resume_takes_the_learning_rate_from_the_config(tmp_path, capsys):
    common = ["train.val_every=100", "train.image_every=100", "train.scheduler=cosine"]
    Trainer(_cfg(tmp_path, "train.max_steps=2", "train.save_every=2", "train.lr=0.001", *common),
            progress=False).train()
    capsys.readouterr()
    resumed = Trainer(_cfg(tmp_path, "train.max_steps=4", "train.lr=0.0004", *common), resume="auto", progress=False)
    group = resumed.optimizer.param_groups[0]
    cosine = 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 2 / 4))).item()  # step 2 of 4
    assert resumed.scheduler.base_lrs == [0.0004] and group["lr"] == pytest.approx(0.0004 * cosine)
    assert "optimiser: lr 0.001 -> 0.0004 (from this config)" in capsys.readouterr().err
    # The saved state holds lr 0 (the end of its 2-step cosine); the longer schedule's lr at step 2 replaces it.
    longer = Trainer(_cfg(tmp_path, "train.max_steps=4", "train.lr=0.001", *common), resume="auto", progress=False)
    assert longer.optimizer.param_groups[0]["lr"] == pytest.approx(0.001 * cosine)
    assert "optimiser: lr at step 2 0 -> 0.0005 (schedule)" in capsys.readouterr().err
    same = Trainer(_cfg(tmp_path, "train.max_steps=2", "train.lr=0.001", *common), resume="auto", progress=False)
    assert same.optimizer.param_groups[0]["lr"] == 0.0
    assert "optimiser:" not in capsys.readouterr().err  # the saved run's own config changes nothing


def test_best_validation_survives_resume(tmp_path):
    def scripted(trainer, mses):
        real = trainer.validate
        trainer.validate = lambda: {**real(), "mse": mses.pop(0)}

    common = ["train.val_every=2", "train.save_every=2", "train.log_every=100", "train.image_every=100"]
    t = Trainer(_cfg(tmp_path, "train.max_steps=6", *common), progress=False)
    scripted(t, [0.5, 0.2, 0.4])
    t.train()
    best_path = tmp_path / "tiny_test" / "checkpoints" / "best.pt"
    assert (t.best_val, t.best_step) == (0.2, 4)
    assert torch.load(best_path, weights_only=True)["training"]["step"] == 4
    before = best_path.read_bytes()
    r = Trainer(_cfg(tmp_path, "train.max_steps=10", *common), resume="auto", progress=False)
    assert (r.step, r.best_val, r.best_step) == (6, 0.2, 4)
    scripted(r, [0.3, 0.25])  # worse than the best before the resume: best.pt stays
    r.train()
    assert (r.best_val, r.best_step) == (0.2, 4) and best_path.read_bytes() == before
    r = Trainer(_cfg(tmp_path, "train.max_steps=12", *common), resume="auto", progress=False)
    scripted(r, [0.1])
    r.train()
    best = torch.load(best_path, weights_only=True)["training"]
    assert (best["step"], best["best_step"], best["best_val"]) == (12, 12, 0.1)


def test_non_finite_loss_stops_naming_term_and_step_and_keeps_checkpoint(tmp_path):
    t = Trainer(_cfg(tmp_path, "train.max_steps=2", "train.save_every=1", "train.val_every=100"), progress=False)
    t.train()
    latest = tmp_path / "tiny_test" / "checkpoints" / "latest.pt"
    before = latest.read_bytes()
    x = torch.full((4, 3, 32, 32), float("nan"))
    with pytest.raises(TrainingStopped, match=r"'l2'.*step 2"):
        t.train_step(x)
    assert latest.read_bytes() == before


def test_fusion_stage_trains_fusion_only(tmp_path):
    enc = Trainer(_cfg(tmp_path, "experiment.name=enc", "train.max_steps=2", "train.save_every=2",
                       "train.val_every=100"), progress=False)
    enc.train()
    ckpt = tmp_path / "enc" / "checkpoints" / "latest.pt"
    t = Trainer(_cfg(tmp_path, "experiment.name=fus", "train.stage=fusion", "fusion.kind=wavelet",
                     f"train.encoder_ckpt={ckpt}", "data.hflip=false"), progress=False)
    torch.testing.assert_close(t.model.encoder.state_dict(), enc.model.encoder.state_dict())
    enc_before = {k: v.clone() for k, v in t.model.encoder.state_dict().items()}
    x = torch.stack([t.test_set[i] for i in range(4)])
    first = t.train_step(x)
    assert "aligner" in first
    for _ in range(15):
        last = t.train_step(x)
    assert last["l2"] < first["l2"]
    for k, v in t.model.encoder.state_dict().items():
        assert torch.equal(v, enc_before[k]), k


def test_cli_reports_config_errors_by_key(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--config", TINY, "--set",
                        "train.lrr=1"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "train.lrr" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--config", TINY, "--set",
                        f"generator.ckpt={tmp_path}/missing.pt"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2 and "generator.ckpt" in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--config", TINY, "--set",
                        "data.preload=true"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "data.demo_images" in r.stderr and "Traceback" not in r.stderr


def test_missing_lpips_weights_fail_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    with pytest.raises(FileNotFoundError, match=r"alexnet-owt-7be5be79\.pth"):
        Trainer(_cfg(tmp_path, "loss.lpips=0.8"), progress=False)
    assert not (tmp_path / "tiny_test").exists()  # nothing was written


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg_args, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    t = Trainer(load_config(TINY, cfg_args), progress=False)
    t.train()
    if rank == 0:
        torch.save({k: v.clone() for k, v in t.model.state_dict().items()}, out)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process_with_double_batch(tmp_path):
    """Fusion stage (no BatchNorm in the trained modules): 2 gloo processes x batch 2 == 1 process x batch 4."""
    enc = Trainer(_cfg(tmp_path, "experiment.name=enc", "train.max_steps=1", "train.save_every=1",
                       "train.val_every=100"), progress=False)
    enc.train()
    ckpt = tmp_path / "enc" / "checkpoints" / "latest.pt"
    base = [f"experiment.out_dir={tmp_path}", "train.stage=fusion", "fusion.kind=wavelet",
            f"train.encoder_ckpt={ckpt}", "train.max_steps=3", "train.val_every=100", "train.save_every=100",
            "train.log_every=1"]
    single = Trainer(load_config(TINY, base + ["experiment.name=single", "train.batch_size=4"]), progress=False)
    before = {k: v.clone() for k, v in single.model.state_dict().items()}
    single.train()
    out = tmp_path / "ddp_state.pt"
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), base + ["experiment.name=ddp",
                                                                            "train.batch_size=2"], str(out)),
                                nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    ref = single.model.state_dict()
    moved = 0
    for k, v in ref.items():
        torch.testing.assert_close(ddp[k], v, atol=2e-6, rtol=1e-5, msg=k)
        moved += int(k.startswith("fusion.") and not torch.equal(v, before[k]))
    assert moved > 0


@pytest.mark.slow
def test_ddp_trains_e4e_through_its_progressive_stages(tmp_path):
    """Until their stage, the heads of inactive deltas get no gradient: DDP must accept that (it stopped at
    step 2 with 'Expected to have finished reduction' before). Two gloo processes, stages change at step 2."""
    args = [f"experiment.out_dir={tmp_path}", "experiment.name=e4e_ddp", "encoder.kind=e4e", "encoder.n_iters=1",
            "encoder.progressive_every=2", "train.max_steps=4", "train.batch_size=2", "train.val_every=100",
            "train.save_every=100", "train.log_every=1"]
    out = tmp_path / "state.pt"
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), args, str(out)), nprocs=2, join=True)
    state = torch.load(out, weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    logs = _train_logs(tmp_path / "e4e_ddp")
    assert sorted(logs) == [1, 2, 3, 4]


def test_resume_refuses_an_optimiser_state_of_other_shapes_in_one_line(tmp_path):
    """Optimiser states are matched to parameters by position: a state written for another parameter order
    is refused before the first step (it used to fail inside Adam's update)."""
    from wagi.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    common = ["train.max_steps=1", "train.save_every=1", "train.val_every=100", "train.optimizer=adam"]
    Trainer(_cfg(tmp_path, *common), progress=False).train()
    path = tmp_path / "tiny_test" / "checkpoints" / "latest.pt"
    ckpt = load_checkpoint(path)
    state = ckpt["training"]["optimizer"]["state"]
    keys = sorted(state)
    shapes = {k: state[k]["exp_avg"].shape for k in keys}
    a = keys[0]
    b = next(k for k in keys if shapes[k] != shapes[a])
    state[a], state[b] = state[b], state[a]  # as if the parameters had been registered in another order
    path.unlink()  # latest.pt is a hard link to the step file: write a new file, not through the link
    save_checkpoint(ckpt, path)
    with pytest.raises((ValueError, CheckpointError), match="optimiser state 'exp_avg' of parameter .* has shape"):
        Trainer(_cfg(tmp_path, "train.max_steps=2", "train.val_every=100", "train.optimizer=adam"), resume="auto",
                progress=False)
