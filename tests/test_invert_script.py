import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.badfiles import make_corpus
from tests.helpers import ROOT, load_script
from wagi.imageio import load_image
from wagi.models.wagi import WaGI

torch.set_num_threads(1)

SIZE = 32  # configs/tiny_test.yaml
N_LATENT, STYLE_DIM = 6, 32

invert = load_script("invert")


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return WaGI.load(tiny_ckpt).eval()


def _write_good(root):
    """Three readable images in nested folders: (rel, size)."""
    specs = [("a.png", (48, 40)), ("sub/b.jpg", (40, 40)), ("sub/deeper/c.bmp", (64, 64))]
    for i, (rel, (w, h)) in enumerate(specs):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return [rel for rel, _ in specs]


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _snapshot(root):
    return {p: (_digest(p), p.stat().st_mtime_ns) for p in sorted(Path(root).rglob("*")) if p.is_file()
            and os.access(p, os.R_OK)}


def test_invert_folder_with_bad_corpus(tmp_path, tiny_ckpt, capsys):
    inp = tmp_path / "in"
    good_rels = _write_good(inp)
    good, bad = make_corpus(str(inp / "corpus"))
    before = _snapshot(inp)
    out = tmp_path / "out"
    folder_bad = [p for p in bad if os.path.isdir(p)]  # folder scans skip folders: name it as an input
    rc = invert.main(["--input", str(inp), *folder_bad, "--output", str(out), "--ckpt", str(tiny_ckpt),
                      "--device", "cpu",
                      "--batch-size", "4", "--save-latents", "pt", "--side-by-side", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 1
    assert _snapshot(inp) == before  # inputs untouched

    # Good files keep their relative path and name, as S x S .png, with latents and strips.
    for rel in good_rels + ["corpus/" + os.path.basename(p) for p in good
                            if os.path.splitext(os.path.basename(p))[0] not in ("plain", "mode_CMYK")]:
        stem = os.path.splitext(rel)[0]
        with Image.open(out / f"{stem}.png") as im:
            assert im.size == (SIZE, SIZE) and im.mode == "RGB"
        w = torch.load(out / "latents" / f"{stem}.pt", weights_only=True)
        assert w.shape == (N_LATENT, STYLE_DIM) and w.dtype == torch.float32 and torch.isfinite(w).all()
        with Image.open(out / "side_by_side" / f"{stem}.png") as im:
            assert im.size == (2 * SIZE + 3 * 2, SIZE + 2 * 2)  # input | recon with 2-px padding
    # Five "plain.*" inputs and two "mode_CMYK.*" would share an output: later ones get __k.
    plain = sorted(p.name for p in (out / "corpus").glob("plain*.png"))
    assert plain == ["plain.png", "plain__2.png", "plain__3.png", "plain__4.png", "plain__5.png"]
    assert sorted(p.name for p in (out / "corpus").glob("mode_CMYK*.png")) == ["mode_CMYK.png", "mode_CMYK__2.png"]
    n_recons = len([p for p in out.rglob("*.png") if "side_by_side" not in p.parts])
    assert n_recons == len(good_rels) + len(good)

    # Every bad file: one line naming it, and no output.
    for path, reason in bad.items():
        lines = [ln for ln in captured.err.splitlines() if path + ":" in ln]
        assert len(lines) == 1, (path, lines)
        if not os.path.isdir(path):
            assert reason in lines[0]
    assert f"done {len(good_rels) + len(good)}, failed {len(bad) - len(folder_bad)}," in captured.out
    assert "device cpu" in captured.out and "ops implementation: ref" in captured.out


def test_existing_outputs_skipped_then_replaced_and_inputs_protected(tmp_path, tiny_ckpt, capsys):
    inp = tmp_path / "in"
    rels = _write_good(inp)
    out = tmp_path / "out"
    args = ["--input", str(inp), "--output", str(out), "--ckpt", str(tiny_ckpt), "--device", "cpu",
            "--save-latents", "npy", "--no-progress"]
    assert invert.main(args) == 0
    first = out / "a.png"
    first.write_bytes(b"stale")  # a damaged earlier output
    state = _snapshot(out)
    capsys.readouterr()

    assert invert.main(args) == 1  # nothing replaced without --overwrite
    captured = capsys.readouterr()
    assert _snapshot(out) == state
    assert captured.err.count("skipped, output exists") == len(rels)
    assert "done 0, failed 0, skipped (output exists) 3" in captured.out

    assert invert.main(args + ["--overwrite"]) == 0
    with Image.open(first) as im:
        assert im.size == (SIZE, SIZE)
    assert all(_digest(p) == state[p][0] for p in state if p != first)  # same model, same bytes

    # Writing into the input folder: a .png input would be its own output; refused even with --overwrite.
    before = _snapshot(inp)
    rc = invert.main(["--input", str(inp), "--output", str(inp), "--ckpt", str(tiny_ckpt), "--device", "cpu",
                      "--overwrite", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 1
    assert all(_digest(p) == before[p][0] and p.stat().st_mtime_ns == before[p][1] for p in before)
    assert (inp / "sub" / "b.png").is_file()  # the other inputs were inverted beside themselves
    assert captured.err.count("refusing to write an output onto the input image") == 1  # a.png only


def test_latent_bundle_matches_direct_inversion(tmp_path, tiny_ckpt, model, capsys):
    inp = tmp_path / "in"
    rels = _write_good(inp)
    out = tmp_path / "out"
    rc = invert.main(["--input", str(inp), "--output", str(out), "--ckpt", str(tiny_ckpt), "--device", "cpu",
                      "--save-latents", "npy",
                      "--latents-bundle", "--batch-size", "2", "--no-progress"])
    assert rc == 0
    with np.load(out / "latents.npz", allow_pickle=False) as bundle:
        names, w = [str(n) for n in bundle["names"]], torch.from_numpy(bundle["w_plus"])
    assert names == [os.path.splitext(r)[0] for r in rels] and w.shape == (3, N_LATENT, STYLE_DIM)
    assert not (out / "latents").exists()  # no per-image files with a bundle
    x = torch.stack([load_image(inp / r, SIZE) for r in rels])
    with torch.inference_mode():
        recon, w_ref, _ = model.invert(x)
    torch.testing.assert_close(w, w_ref, atol=1e-5, rtol=1e-5)
    saved = np.asarray(Image.open(out / "sub" / "deeper" / "c.png"), dtype=np.float64)
    expected = ((recon[2].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    assert np.abs(saved - expected).max() <= 0.5 + 1e-3  # the file is the reconstruction, rounded to 8 bit
    # An existing bundle stops a second run before any work, unless --overwrite.
    again = ["--input", str(inp), "--output", str(out), "--ckpt", str(tiny_ckpt), "--device", "cpu",
             "--save-latents", "npy",
             "--latents-bundle", "--no-progress"]
    bundle_bytes = (out / "latents.npz").read_bytes()
    assert invert.main(again) == 2
    assert "latents.npz: latent bundle exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "latents.npz").read_bytes() == bundle_bytes
    assert invert.main(again + ["--overwrite"]) == 0
    assert invert.main(["--input", str(inp), "--output", str(tmp_path / "o2"), "--ckpt", str(tiny_ckpt),
                        "--device", "cpu",
                        "--save-latents", "pt", "--latents-bundle", "--no-progress"]) == 0
    bundle_pt = torch.load(tmp_path / "o2" / "latents.pt", weights_only=True)
    names_pt, w_pt = bundle_pt["names"], bundle_pt["w_plus"]
    assert names_pt == names
    torch.testing.assert_close(w_pt, w, atol=1e-6, rtol=1e-6)  # other batch size: same up to float order


def test_usage_errors_exit_2(tmp_path, capsys, monkeypatch):
    inp = tmp_path / "in"
    _write_good(inp)
    missing = tmp_path / "missing.pt"
    assert invert.main(["--input", str(inp), "--output", str(tmp_path / "o"), "--ckpt", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint not found: {missing}" in err and len(err.strip().splitlines()) == 1

    monkeypatch.setattr(invert, "DEFAULT_CKPT", tmp_path / "pretrained" / "demo" / "wagi.pt")
    assert invert.main(["--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "demo model" in err and "is missing" in err and "--ckpt" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_no_images_exit_2(tmp_path, tiny_ckpt, capsys):
    (tmp_path / "empty").mkdir()
    assert invert.main(["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o"), "--ckpt", str(tiny_ckpt),
                        "--device", "cpu"]) == 2
    assert "holds no image files" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_exit_status(tmp_path, tiny_ckpt):
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(inp / "ok.png")
    (inp / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "invert.py"), "--input", str(inp),
                           "--output", str(tmp_path / "out"), "--ckpt", str(tiny_ckpt), "--device", "cpu",
                           "--threads", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "done 1, failed 1, skipped (output exists) 0" in proc.stdout
    assert proc.stderr.count(str(inp / "broken.jpg")) == 1
    assert (tmp_path / "out" / "ok.png").is_file()


def test_outputs_inside_the_input_folder_are_not_reread(tmp_path, tiny_ckpt, capsys):
    inp = tmp_path / "photos"
    rels = _write_good(inp)
    out = inp / "inverted"  # inside the input folder
    args = ["--input", str(inp), "--output", str(out), "--ckpt", str(tiny_ckpt), "--device", "cpu", "--no-progress",
            "--side-by-side"]
    assert invert.main(args) == 0
    first = capsys.readouterr().out
    assert f"{len(rels)} image(s) -> {out}" in first
    assert invert.main(args + ["--overwrite"]) == 0  # the same run again: still only the photos
    assert f"{len(rels)} image(s) -> {out}" in capsys.readouterr().out
    out2 = inp / "second"  # another output folder: the first one's outputs are still not inputs
    assert invert.main(args[:3] + [str(out2)] + args[4:]) == 0
    assert f"{len(rels)} image(s) -> {out2}" in capsys.readouterr().out


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_for_the_latents_bundle_is_one_line(tmp_path, tiny_ckpt, capsys, monkeypatch):
    from wagi import fileio

    inp = tmp_path / "in"
    _write_good(inp)
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        if ".latents.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            os.close(fd)
            return real_fdopen(os.open("/dev/full", os.O_WRONLY), *args, **kwargs)
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "fdopen", fdopen)
    out = tmp_path / "out"
    rc = invert.main(["--input", str(inp), "--output", str(out), "--ckpt", str(tiny_ckpt), "--device", "cpu",
                      "--no-progress", "--save-latents", "pt", "--latents-bundle"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 1 and err == [f"error: cannot write {out / 'latents.pt'}: no space left on device; the outputs "
                               "written before it are complete files"]
    assert len(list(out.rglob("*.png"))) == 3 and not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_non_utf8_paths_print_escaped(tmp_path, tiny_ckpt):
    import subprocess
    import sys

    inp = os.path.join(os.fsencode(tmp_path), b"caf\xe9")
    os.makedirs(inp)
    Image.new("RGB", (40, 40), (200, 10, 10)).save(os.fsdecode(os.path.join(inp, b"\xff.png")))
    out = os.path.join(os.fsencode(tmp_path), b"out\xe9")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "invert.py"), "--input", inp, "--output", out,
                           "--ckpt", str(tiny_ckpt), "--device", "cpu", "--no-progress"],
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    assert b"out\\udce9" in proc.stdout and b"Traceback" not in proc.stderr
    assert os.path.isfile(os.path.join(out, b"\xff.png"))


def test_stale_temporary_files_in_the_output_folder_are_removed(tmp_path, tiny_ckpt, capsys):
    import time

    from wagi.fileio import temp_path

    inp = tmp_path / "in"
    _write_good(inp)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    old, fresh, other = temp_path(out / "sub" / "b.png"), temp_path(out / "a.png"), out / ".notes.tmp"
    for p in (old, fresh, other):
        p.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    os.utime(other, (hour_ago, hour_ago))
    assert invert.main(["--input", str(inp), "--output", str(out), "--ckpt", str(tiny_ckpt), "--device", "cpu",
                        "--no-progress"]) == 0
    assert not old.exists() and fresh.exists() and other.exists()  # only ours, and only when left for long
    assert f"{old}: removed, a temporary file of an interrupted earlier run" in capsys.readouterr().err
