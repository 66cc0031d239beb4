import hashlib
import json
from pathlib import Path

import pytest
import torch

import wagi.bundle as B
from tests.helpers import TINY_CONFIG, load_script, tiny_wagi
from wagi.bundle import BundleError, BundleItem, bundle, last_val_record, read_manifest, verify_bundle
from wagi.checkpoint import export_generator, load_generator, save_generator
from wagi.models.swagan import Generator
from wagi.models.wagi import WaGI

torch.set_num_threads(1)

# fp16 keeps 11 significant bits: each weight moves by up to 2^-12 relative; through the tiny ReStyle x2
# encoder and SWAGAN that gives reconstructions within about 1.2e-3 of the fp32 model (outputs up to ~3.7).
RECON_TOL = 4e-3
TRAINING = {"step": 7, "wall_time_s": 12.5, "cards": ["cpu x1"],
            "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}},
            "rng": {"torch": torch.zeros(4, dtype=torch.uint8)}}


def _cli(*argv):
    return load_script("bundle_models").main([str(a) for a in argv])


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model():
    return tiny_wagi()


@pytest.fixture
def run_ckpt(tmp_path, model):
    """A WaGI model saved like an encoder-trainer checkpoint, in <run>/checkpoints/, with a metrics.jsonl."""
    run = tmp_path / "run_wagi"
    path = run / "checkpoints" / "latest.pt"
    path.parent.mkdir(parents=True)
    model.save(path, training=TRAINING)
    recs = [{"kind": "train", "step": 5, "time": 1.0, "total": 0.5},
            {"kind": "val", "step": 5, "time": 2.0, "LL": 0.4, "LH1": 0.1, "HL1": 0.2, "HH1": 0.3, "mse": 0.25},
            {"kind": "val", "step": 10, "time": 3.0, "LL": 9.0, "LH1": 9.0, "HL1": 9.0, "HH1": 9.0, "mse": 9.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"kind": "va')
    return path


def _gan_ckpt(path, seed=0):
    """A SWAGAN training checkpoint of the GANTrainer's layout (kind, g, d, optimisers, training state)."""
    torch.manual_seed(seed)
    g = Generator(32, 32, 2, channel_multiplier=1, channel_max=32).eval()
    latent_avg = g.mean_latent(64)
    save_generator(path, g, latent_avg, config={"generator": dict(g.config), "train": {"max_steps": 3}},
                   kind="swagan_training", g=g.state_dict(), d={"w": torch.ones(2)}, g_optim={}, d_optim={},
                   training={"step": 3, "wall_time_s": 4.5, "cards": ["NVIDIA H100 x1"], "kimg": 0.012})
    return g, latent_avg


# ------------------------------------------------------------------------------------------ wagi models


def test_wagi_round_trip_is_fp16_on_disk_and_fp32_when_loaded(tmp_path, model, run_ckpt):
    out = tmp_path / "demo"
    [entry] = bundle(out, [BundleItem("wagi", "wagi", run_ckpt)])
    path = out / "wagi.pt"
    raw = torch.load(path, weights_only=True)
    sd = model.state_dict()
    assert raw["kind"] == "wagi_model" and raw["dtype"] == "float16" and "training" not in raw
    assert raw["step"] == 7 and raw["wall_time_s"] == 12.5 and raw["cards"] == ["cpu x1"]
    assert list(raw["state_dict"]) == list(sd)
    n_int = 0
    for k, v in raw["state_dict"].items():
        if k == "latent_avg":
            assert v.dtype == torch.float32 and torch.equal(v, sd[k])
        elif sd[k].is_floating_point():
            assert v.dtype == torch.float16, k
            assert torch.equal(v, sd[k].half()), k
        else:  # BatchNorm num_batches_tracked
            n_int += 1
            assert v.dtype == sd[k].dtype and torch.equal(v, sd[k]), k
    assert n_int > 0 and raw["latent_avg"].dtype == torch.float32
    assert entry["bytes"] < 0.6 * run_ckpt.stat().st_size

    back = WaGI.load(path).eval()
    for k, v in back.state_dict().items():
        assert v.dtype == sd[k].dtype, k
        expected = sd[k].half().float() if sd[k].is_floating_point() and k != "latent_avg" else sd[k]
        assert torch.equal(v, expected), k
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ref, w_ref, _ = model.invert(x)
        rec, w, _ = back.invert(x)
    diff = (rec - ref).abs().max().item()
    assert 0 < diff < RECON_TOL, diff
    assert (w - w_ref).abs().max().item() < RECON_TOL / 10


def test_manifest_records_hash_config_run_facts_and_last_val_metrics(tmp_path, model, run_ckpt):
    out = tmp_path / "demo"
    assert _cli("--output", out, "--model", f"wagi={run_ckpt}", "--note", "tiny test") == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "wagi-pretrained" and m["version"] == 1
    e = m["models"]["wagi"]
    path = out / "wagi.pt"
    assert e["file"] == "wagi.pt" and e["sha256"] == _sha(path) and e["bytes"] == path.stat().st_size
    assert e["kind"] == "wagi" and e["dtype"] == "float16" and e["loader"] == "wagi.models.wagi.WaGI.load"
    assert e["config"] == json.loads(json.dumps(model.config))
    assert (e["steps"], e["wall_time_s"], e["cards"]) == (7, 12.5, ["cpu x1"])
    assert e["source"] == str(run_ckpt) and e["torch"] == torch.__version__ and e["note"] == "tiny test"
    # the last val record at or before the checkpoint's step 7 (the one at step 10 is a later one)
    assert e["metrics"] == {"step": 5, "values": {"LL": 0.4, "LH1": 0.1, "HL1": 0.2, "HH1": 0.3, "mse": 0.25},
                            "file": str(run_ckpt.parent.parent / "metrics.jsonl")}


def test_metrics_option_and_last_val_record(tmp_path, run_ckpt):
    jl = tmp_path / "other.jsonl"
    jl.write_text(json.dumps({"kind": "val", "step": 2, "time": 0, "mse": 0.5, "LL": 1.0}) + "\n"
                  + json.dumps({"kind": "val", "step": 6, "time": 0, "mse": 0.125, "LL": 0.25}) + "\n")
    assert last_val_record(jl)["values"] == {"mse": 0.125, "LL": 0.25}
    assert last_val_record(jl, max_step=5)["step"] == 2
    assert last_val_record(jl, max_step=1) is None
    out = tmp_path / "demo"
    assert _cli("--output", out, "--model", f"a={run_ckpt}", "--metrics", f"a={jl}") == 0
    assert read_manifest(out)["models"]["a"]["metrics"]["values"] == {"mse": 0.125, "LL": 0.25}
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"kind": "train", "step": 1}) + "\n")
    with pytest.raises(BundleError, match="has no 'val' record at or before step 7"):
        bundle(tmp_path / "demo2", [BundleItem("a", "wagi", run_ckpt, metrics=empty)])


def test_real_encoder_trainer_checkpoint(tmp_path):
    from wagi.config import load_config
    from wagi.training import Trainer

    cfg = load_config(str(TINY_CONFIG),
                      [f"experiment.out_dir={tmp_path}", "train.max_steps=2", "train.save_every=2",
                       "train.val_every=2", "train.log_every=1"])
    Trainer(cfg, progress=False).train()
    run = tmp_path / "tiny_test"
    ckpt_path = run / "checkpoints" / "latest.pt"
    [e] = bundle(tmp_path / "demo", [BundleItem("wagi", "wagi", ckpt_path)])
    ck = torch.load(ckpt_path, weights_only=True)
    val = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if '"val"' in ln][-1]
    assert e["steps"] == 2 and e["config"] == json.loads(json.dumps(ck["config"]))
    assert e["wall_time_s"] == ck["training"].get("wall_time_s") and e["cards"] == ck["training"].get("cards")
    assert e["metrics"]["step"] == 2
    assert e["metrics"]["values"] == {k: val[k] for k in ("LL", "LH1", "HL1", "HH1", "mse")}
    back = WaGI.load(tmp_path / "demo" / "wagi.pt")
    for k, v in ck["state_dict"].items():
        assert torch.equal(back.state_dict()[k], v.half().float() if v.is_floating_point() and k != "latent_avg"
                           else v), k


# ------------------------------------------------------------------------------------------- generators


def test_generator_from_training_checkpoint_and_exported_file(tmp_path):
    src = tmp_path / "run_gan" / "checkpoints" / "latest.pt"
    src.parent.mkdir(parents=True)
    g, latent_avg = _gan_ckpt(src)
    (src.parent.parent / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 3, "g_loss": 1.0}) + "\n")
    out = tmp_path / "demo"
    [e] = bundle(out, [BundleItem("swagan32", "generator", src)])
    path = out / "swagan32.pt"
    raw = torch.load(path, weights_only=True)
    assert not {"g", "d", "g_optim", "d_optim", "training"} & set(raw)
    assert all(v.dtype == torch.float16 for v in raw["g_ema"].values() if v.is_floating_point())
    g2, avg2, info = load_generator(path)
    for k, v in g.state_dict().items():
        assert torch.equal(g2.state_dict()[k], v.half().float()), k
    assert avg2.dtype == torch.float32 and torch.equal(avg2, latent_avg)
    assert e["sha256"] == _sha(path) and e["kind"] == "generator" and e["loader"] == "wagi.checkpoint.load_generator"
    assert (e["steps"], e["wall_time_s"], e["cards"]) == (3, 4.5, ["NVIDIA H100 x1"])
    assert e["architecture"] == json.loads(json.dumps(dict(g.config)))
    assert e["config"]["train"] == {"max_steps": 3} and e["metrics"] is None  # a GAN run logs no val records

    exported = export_generator(src, tmp_path / "g16.pt")
    [e2] = bundle(out, [BundleItem("again", "generator", exported)])
    assert (out / "again.pt").read_bytes() == exported.read_bytes()  # an exported file is kept byte for byte
    assert (e2["steps"], e2["wall_time_s"], e2["cards"]) == (3, 4.5, ["NVIDIA H100 x1"])


# --------------------------------------------------------------------------------------- verify, merge


def test_verify_detects_a_corrupted_byte_and_a_missing_file(tmp_path, run_ckpt, capsys):
    out = tmp_path / "demo"
    gan = tmp_path / "gan.pt"
    _gan_ckpt(gan)
    assert _cli("--output", out, "--model", f"wagi={run_ckpt}", "--generator", f"g={gan}") == 0
    assert _cli("--verify", out) == 0
    assert verify_bundle(out) == ([], 2)
    data = bytearray((out / "wagi.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / "wagi.pt").write_bytes(bytes(data))
    capsys.readouterr()
    assert _cli("--verify", out) == 1
    lines = capsys.readouterr().out.splitlines()
    recorded = read_manifest(out)["models"]["wagi"]["sha256"]
    assert lines == [f"sha256 wagi.pt: {_sha(out / 'wagi.pt')}, manifest says {recorded}"]
    (out / "g.pt").unlink()
    problems, n = verify_bundle(out)
    assert n == 2 and problems[0] == "missing g.pt" and problems[1].startswith("sha256 wagi.pt")  # manifest order
    assert _cli("--verify", tmp_path / "nowhere") == 2


def test_manifest_merges_and_overwrite_is_needed_to_replace(tmp_path, run_ckpt):
    out = tmp_path / "demo"
    gan = tmp_path / "gan.pt"
    _gan_ckpt(gan)
    bundle(out, [BundleItem("wagi", "wagi", run_ckpt)])
    first = read_manifest(out)["models"]["wagi"]
    bundle(out, [BundleItem("g", "generator", gan)])
    m = read_manifest(out)
    assert sorted(m["models"]) == ["g", "wagi"] and m["models"]["wagi"] == first

    other = tmp_path / "other.pt"
    tiny_wagi("encoder.n_iters=1").save(other)
    with pytest.raises(BundleError, match=r"already has 'wagi' \(wagi from .*\); pass --overwrite"):
        bundle(out, [BundleItem("wagi", "wagi", other)])
    assert _sha(out / "wagi.pt") == first["sha256"]
    bundle(out, [BundleItem("wagi", "wagi", other)], overwrite=True)
    m2 = read_manifest(out)
    assert m2["models"]["g"] == m["models"]["g"]
    assert m2["models"]["wagi"]["sha256"] == _sha(out / "wagi.pt") != first["sha256"]
    assert m2["models"]["wagi"]["source"] == str(other) and m2["models"]["wagi"]["steps"] is None
    assert WaGI.load(out / "wagi.pt").n_iters == 1
    assert verify_bundle(out) == ([], 2)


# -------------------------------------------------------------------------------------------- errors


def test_size_limit_refuses_and_writes_nothing(tmp_path, run_ckpt, monkeypatch, capsys):
    out = tmp_path / "demo"
    with pytest.raises(BundleError, match=r"--model wagi: the fp16 file is 0\.\d\d MiB, over the 0\.5 MiB limit"):
        bundle(out, [BundleItem("wagi", "wagi", run_ckpt)], max_bytes=2 ** 19)
    assert not out.exists()
    monkeypatch.setattr(B, "MAX_FILE_BYTES", 2 ** 19)
    assert _cli("--output", out, "--model", f"wagi={run_ckpt}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MiB limit" in err and not out.exists()


def test_clear_one_line_errors(tmp_path, model, run_ckpt, capsys):
    out = tmp_path / "demo"
    gan = tmp_path / "gan.pt"
    _gan_ckpt(gan)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    cases = [
        (["--model", f"w={tmp_path / 'missing.pt'}"], "--model w: checkpoint not found"),
        (["--model", f"w={gan}"], "is not a WaGI model checkpoint (found kind 'swagan_training')"),
        (["--generator", f"g={run_ckpt}"], "is a WaGI model checkpoint (encoder + generator), not a generator"),
        (["--generator", f"g={junk}"], "is not a readable PyTorch checkpoint"),
        (["--model", f"x={run_ckpt}", "--generator", f"x={gan}"],
         "name 'x' is given twice (--generator x and --model x)"),
        (["--model", f"a/b={run_ckpt}"], "'a/b' is not a valid model name"),
        (["--model", str(run_ckpt)], "--model expects NAME=PATH"),
        (["--model", f"w={run_ckpt}", "--metrics", f"v={junk}"], "--metrics v: no --model or --generator named 'v'"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert _cli("--output", out, *argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert not out.exists()
    out.mkdir()
    (out / "w.pt").write_bytes(b"someone else's file")
    with pytest.raises(BundleError, match=r"w\.pt exists but is not in the manifest; pass --overwrite"):
        bundle(out, [BundleItem("w", "wagi", run_ckpt)])
    bundle(out, [BundleItem("w", "wagi", run_ckpt)], overwrite=True)
    assert verify_bundle(out) == ([], 1)


def test_half_state_dict_keeps_integers_and_latent_avg_and_refuses_fp16_overflow():
    sd = {"w": torch.tensor([1.0, 1 / 3, -2.5e-3]), "latent_avg": torch.tensor([1 / 3]),
          "n": torch.tensor(5), "d": torch.tensor([0.1], dtype=torch.float64)}
    h = B.half_state_dict(sd, "sd")
    assert h["w"].dtype == torch.float16 and h["w"].tolist() == [1.0, 0.333251953125, -0.0025005340576171875]
    assert h["latent_avg"].dtype == torch.float32 and torch.equal(h["latent_avg"], sd["latent_avg"])
    assert h["n"].dtype == torch.int64 and h["n"].item() == 5 and h["d"].dtype == torch.float16
    with pytest.raises(BundleError, match=r"sd: 'big' has values beyond the fp16 range \(max \|x\| = 7e\+04 > 65504\)"):
        B.half_state_dict({"big": torch.tensor([7e4])}, "sd")
