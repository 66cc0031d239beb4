import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.badfiles import make_corpus
from tests.helpers import ROOT, load_script
from wagi.evaluation import index_by_key
from wagi.imageio import find_images, load_image
from wagi.models.wagi import WaGI
from wagi.wavelets import dwt, idwt, merge_bands, split_bands

torch.set_num_threads(1)

SIZE = 32
HH_STEP = 8  # 8-bit levels: each pixel of a 2x2 block moves by +-HH_STEP, its HH coefficient by 2*HH_STEP
OFFSET = 6  # 8-bit levels added to every pixel
UNIT = 2.0 / 255.0  # one 8-bit level in [-1, 1] units
NAMES = ["a0", "a1", "sub/a2", "sub/a3", "sub/deep/a4"]

ev = load_script("eval_subbands")


def _save(arr, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _gt(i, h=SIZE, w=SIZE):
    # Values kept away from 0 and 255 so the modified copies need no clipping.
    return np.random.default_rng(i).integers(64, 192, (h, w, 3), dtype=np.uint8)


def _hh_only(arr, seed):
    """``arr`` with every level-1 HH coefficient moved by +-2*HH_STEP levels (random signs), via the inverse
    transform of the modified bands; the other bands are untouched and the pixels stay integers."""
    x = torch.from_numpy(arr.astype(np.float64)).permute(2, 0, 1).unsqueeze(0)
    bands = split_bands(dwt(x))
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, bands["HH"].shape, generator=g).double() * 2 - 1
    y = idwt(merge_bands({**bands, "HH": bands["HH"] + 2 * HH_STEP * signs}))[0].permute(1, 2, 0).numpy()
    assert np.abs(y - np.round(y)).max() < 1e-9 and y.min() >= 0 and y.max() <= 255
    return np.round(y).astype(np.uint8)


def _dataset(root):
    """GT as .png; methods 'hh' (.bmp, differs in HH only), 'const' (+OFFSET everywhere), 'same' (copy)."""
    for i, name in enumerate(NAMES):
        arr = _gt(i)
        _save(arr, root / "gt" / f"{name}.png")
        _save(_hh_only(arr, i), root / "hh" / f"{name}.bmp")  # another extension: matched without it
        _save(arr + OFFSET, root / "const" / f"{name}.png")
        _save(arr, root / "same" / f"{name}.png")


def _run(root, *extra):
    return ev.main(["--gt", str(root / "gt"), "--size", str(SIZE), "--batch-size", "2", "--device", "cpu",
                    "--no-progress", *extra])


def test_hand_computed_subbands_and_all_outputs(tmp_path, capsys):
    _dataset(tmp_path)
    out = tmp_path / "eval"
    rc = _run(tmp_path, "--method", f"hh={tmp_path / 'hh'}", "--method", f"const={tmp_path / 'const'}",
              "--method", f"same={tmp_path / 'same'}", "--output", str(out))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "LPIPS skipped" in captured.err and "ID skipped" in captured.err
    res = json.loads((out / "results.json").read_text())
    hh, const, same = (res["methods"][k] for k in ("hh", "const", "same"))
    assert hh["count"] == const["count"] == same["count"] == len(NAMES)  # 5 images, batches of 2: none dropped
    assert res["skipped_metrics"].keys() == {"LPIPS", "ID"} and res["settings"]["size"] == SIZE

    # HH-only change of 2*HH_STEP levels per coefficient: MSE_HH = (2*HH_STEP*UNIT)^2, nothing elsewhere.
    assert hh["mean"]["HH1"] == pytest.approx((2 * HH_STEP * UNIT) ** 2, rel=1e-5)
    assert all(hh["mean"][b] < 1e-12 for b in ("LL", "LH1", "HL1"))
    assert hh["share_of_total_error"]["HH1"] == pytest.approx(1.0, abs=1e-9)
    assert hh["mean"]["MSE"] == pytest.approx((HH_STEP * UNIT) ** 2, rel=1e-5)
    # Constant offset: only LL (= 2x the block mean) changes, by 2*OFFSET levels.
    assert const["mean"]["LL"] == pytest.approx((2 * OFFSET * UNIT) ** 2, rel=1e-5)
    assert all(const["mean"][b] < 1e-12 for b in ("LH1", "HL1", "HH1"))
    assert const["share_of_total_error"]["LL"] == pytest.approx(1.0, abs=1e-9)
    assert const["mean"]["PSNR"] == pytest.approx(10 * math.log10(4 / (OFFSET * UNIT) ** 2), abs=1e-4)
    assert same["mean"]["MSE"] == 0 and same["mean"]["PSNR"] is None and same["mean"]["SSIM"] == pytest.approx(1.0)
    assert same["share_of_total_error"]["LL"] is None  # zero error: no share, not a fake 0

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 3 * len(NAMES)
    assert sorted(r["name"] for r in rows if r["method"] == "hh") == sorted(NAMES)
    for r in rows:
        bands = sum(float(r[b]) for b in ("LL", "LH1", "HL1", "HH1"))
        assert bands == pytest.approx(4 * float(r["MSE"]), rel=1e-9, abs=1e-18)  # Parseval, level 1
        if r["method"] == "hh":
            assert r["method_path"].endswith(".bmp") and r["gt_path"].endswith(".png")

    md = (out / "results.md").read_text()
    assert f"| hh | {len(NAMES)} | " in md
    assert f"{hh['mean']['HH1']:.5g}" in md  # 5 significant digits, e.g. 0.015748 (2 decimals would say 0.02)
    assert "LPIPS skipped" in md and "None: every ground-truth image was compared." in md
    for name in ("subbands_bar.png", "subbands_example.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and min(im.size) > 100


def test_two_levels_constant_offset(tmp_path):
    _dataset(tmp_path)
    out = tmp_path / "eval"
    assert _run(tmp_path, "--method", f"const={tmp_path / 'const'}", "--levels", "2", "--output", str(out)) == 0
    mean = json.loads((out / "results.json").read_text())["methods"]["const"]["mean"]
    assert mean["LL"] == pytest.approx((4 * OFFSET * UNIT) ** 2, rel=1e-5)  # level-2 LL = 4x the 4x4 block mean
    assert all(mean[b] < 1e-12 for b in ("LH1", "HL1", "HH1", "LH2", "HL2", "HH2"))


def test_mismatches_reported_never_dropped(tmp_path, capsys):
    _dataset(tmp_path)
    m = tmp_path / "same"
    (m / "a0.png").unlink()  # missing in method
    _save(_gt(9), m / "extra_one.png")  # no ground truth
    _save(_gt(1), m / "a1.bmp")  # a1.png and a1.bmp: ambiguous
    out = tmp_path / "eval"
    rc = _run(tmp_path, "--method", f"same={m}", "--output", str(out))
    err = capsys.readouterr().err
    assert rc == 1
    res = json.loads((out / "results.json").read_text())["methods"]["same"]
    assert res["missing_in_method"] == ["a0.png"]
    assert res["extra_in_method"] == ["extra_one.png"]
    assert res["ambiguous_in_method"] == ["a1.bmp", "a1.png"]
    assert res["count"] == len(NAMES) - 2
    assert "missing in method): a0.png" in err and "extra in method): extra_one.png" in err
    assert "a1.bmp, a1.png" in err
    md = (out / "results.md").read_text()
    assert "1 missing in method: a0.png" in md and "1 extra in method: extra_one.png" in md


def test_bad_corpus_each_bad_file_named(tmp_path, capsys):
    good, bad = make_corpus(str(tmp_path / "gt"))
    make_corpus(str(tmp_path / "m"))  # the same bytes: every readable pair is identical
    out = tmp_path / "eval"
    rc = _run(tmp_path, "--method", f"m={tmp_path / 'm'}", "--output", str(out))
    err = capsys.readouterr().err
    assert rc == 1
    res = json.loads((out / "results.json").read_text())
    gt_items = find_images(str(tmp_path / "gt"))
    index, ambiguous = index_by_key(gt_items)
    unreadable = {p for p in bad if not os.path.isdir(p) and os.path.relpath(p, tmp_path / "gt") not in ambiguous}
    assert {f["path"] for f in res["failures"]} == unreadable
    for path in unreadable:  # one line each, with the reason
        lines = [ln for ln in err.splitlines() if ln.startswith(path + ":")]
        assert len(lines) == 1 and bad[path] in lines[0], (path, lines)
    for path in set(bad) - unreadable - {p for p in bad if os.path.isdir(p)}:
        assert os.path.relpath(path, tmp_path / "gt") in res["gt_ambiguous"]  # named as ambiguous instead
    n_good_unique = len({os.path.relpath(p, tmp_path / "gt") for p in good} - set(ambiguous))
    assert res["methods"]["m"]["count"] == n_good_unique
    assert res["methods"]["m"]["mean"]["MSE"] == 0.0


def test_ckpt_inverts_then_evaluates(tmp_path, tiny_ckpt, capsys):
    gt = tmp_path / "gt"
    for i, name in enumerate(["p", "q", "sub/r"]):
        _save(_gt(i, 40, 48), gt / f"{name}.png")  # non-square: center-cropped for both steps
    out = tmp_path / "eval"
    args = ["--gt", str(gt), "--model", f"tiny={tiny_ckpt}", "--size", str(SIZE), "--output", str(out), "--no-progress",
            "--device", "cpu", "--batch-size", "2"]
    assert ev.main(args) == 0
    recon_dir = out / "recon" / "tiny"
    model = WaGI.load(tiny_ckpt).eval()
    x = torch.stack([load_image(gt / n, SIZE) for n in ("p.png", "q.png", "sub/r.png")])
    with torch.inference_mode():
        recon, _, _ = model.invert(x)
    rows = {r["name"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"p", "q", "sub/r"}
    for i, name in enumerate(["p", "q", "sub/r"]):
        saved = load_image(recon_dir / f"{name}.png", SIZE)
        assert (saved - recon[i].clamp(-1, 1)).abs().max() <= UNIT / 2 + 1e-6  # the model's output, 8-bit
        direct = (saved.double() - x[i].double()).pow(2).mean().item()
        assert float(rows[name]["MSE"]) == pytest.approx(direct, rel=1e-12)
    state = {p: p.read_bytes() for p in out.glob("results.*")}
    capsys.readouterr()
    assert ev.main(args) == 2  # report files exist
    assert "pass --overwrite" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.glob("results.*")} == state
    assert ev.main(args + ["--overwrite"]) == 0


def test_precision_of_the_model_inversions(tmp_path, tiny_ckpt):
    """--precision bf16 inverts under autocast into its own folder (never reusing fp32 reconstructions), records
    the precision, and stays close to fp32 on a tiny model."""
    gt = tmp_path / "gt"
    for i in range(2):
        _save(_gt(i, SIZE, SIZE), gt / f"g{i}.png")
    out = tmp_path / "eval"
    base = ["--gt", str(gt), "--model", f"tiny={tiny_ckpt}", "--output", str(out), "--no-progress", "--device", "cpu",
            "--batch-size", "2"]
    assert ev.main(base) == 0
    fp32 = json.loads((out / "results.json").read_text())
    assert fp32["settings"]["precision"] == "fp32" and (out / "recon" / "tiny" / "g0.png").is_file()
    assert ev.main(base + ["--precision", "bf16", "--overwrite"]) == 0
    bf16 = json.loads((out / "results.json").read_text())
    assert bf16["settings"]["precision"] == "bf16" and (out / "recon" / "tiny-bf16" / "g0.png").is_file()
    assert bf16["settings"]["methods"]["tiny"].endswith("tiny-bf16")
    a, b = fp32["methods"]["tiny"]["mean"]["MSE"], bf16["methods"]["tiny"]["mean"]["MSE"]
    assert a != b and b == pytest.approx(a, rel=0.01)  # autocast ran (another result), and only rounds


def test_default_size_follows_the_model_then_the_ground_truth(tmp_path, tiny_ckpt, capsys):
    gt = tmp_path / "gt"
    for i in range(2):
        _save(_gt(i, 2 * SIZE, 2 * SIZE), gt / f"{i}.png")
    base = ["--gt", str(gt), "--no-progress", "--device", "cpu", "--batch-size", "2"]
    model_size = WaGI.load(tiny_ckpt).image_size
    assert ev.main(base + ["--model", f"tiny={tiny_ckpt}", "--output", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "results.json").read_text())["settings"]["size"] == model_size
    assert f"evaluating at {model_size}x{model_size} (the --model checkpoints' image size)" in capsys.readouterr().err
    assert ev.main(base + ["--method", f"same={gt}", "--output", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "results.json").read_text())["settings"]["size"] == 2 * SIZE
    _save(_gt(2, SIZE, SIZE), gt / "small.png")  # two sizes in the ground truth: the protocol's 256
    assert ev.main(base + ["--method", f"same={gt}", "--output", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "results.json").read_text())["settings"]["size"] == 256
    assert "no single square size" in capsys.readouterr().err


def test_usage_errors(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    with pytest.raises(SystemExit) as e:
        ev.main(["--gt", str(tmp_path / "gt")])
    assert e.value.code == 2
    assert ev.main(["--gt", str(tmp_path / "nope"), "--method", f"m={tmp_path}"]) == 2
    assert ev.main(["--gt", str(tmp_path / "gt"), "--model", f"w={tmp_path / 'no.pt'}"]) == 2
    err = capsys.readouterr().err
    assert "folder not found" in err and "checkpoint not found" in err
    with pytest.raises(SystemExit):
        ev.main(["--gt", str(tmp_path / "gt"), "--method", "m", "--size", "30"])


@pytest.mark.slow
def test_cli_exit_status(tmp_path):
    _dataset(tmp_path)
    (tmp_path / "same" / "a0.png").unlink()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "eval_subbands.py"), "--gt", str(tmp_path / "gt"),
                           "--method", f"same={tmp_path / 'same'}", "--size", str(SIZE), "--output",
                           str(tmp_path / "eval"), "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "missing in method): a0.png" in proc.stderr
    assert (tmp_path / "eval" / "results.json").is_file()


def test_non_utf8_file_names_keep_the_report(tmp_path, capsys):
    _dataset(tmp_path)
    odd = os.fsdecode(b"caf\xe9")  # a Latin-1 name: not UTF-8, held by Python as a surrogate escape
    for folder in ("gt", "same"):
        os.rename(tmp_path / folder / "a0.png", os.path.join(tmp_path, folder, odd + ".png"))
    out = tmp_path / "eval"
    assert _run(tmp_path, "--method", f"same={tmp_path / 'same'}", "--output", str(out)) == 0
    assert "| same |" in capsys.readouterr().out
    csv_text = (out / "results.csv").read_bytes().decode("utf-8")  # valid UTF-8, the odd name escaped
    names = [row["name"] for row in csv.DictReader(csv_text.splitlines())]
    assert sorted(names) == sorted(["caf\\udce9"] + NAMES[1:])  # every pair compared, none dropped
    assert "same" in json.loads((out / "results.json").read_text())["methods"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_prints_the_report_and_one_line(tmp_path, capsys, monkeypatch):
    from wagi import fileio

    _dataset(tmp_path)
    real_fdopen = os.fdopen

    def full(fd, *args, **kwargs):
        os.close(fd)
        return real_fdopen(os.open("/dev/full", os.O_WRONLY), *args, **kwargs)

    monkeypatch.setattr(fileio.os, "fdopen", full)
    out = tmp_path / "eval"
    assert _run(tmp_path, "--method", f"same={tmp_path / 'same'}", "--output", str(out)) == 1
    captured = capsys.readouterr()
    assert "| same |" in captured.out  # the numbers reached the screen
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("error:")]
    assert lines == [f"error: cannot write {out / 'results.md'}: no space left on device; the report above was not "
                     "saved completely"]
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")] if out.exists() else True
