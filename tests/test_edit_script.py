"""scripts/edit.py and scripts/train_boundary.py end to end on a tiny saved WaGI model."""
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import load_script, tiny_wagi
from wagi.editing import LevelsMapper
from wagi.imageio import caption_height, load_image
from wagi.models.wagi import WaGI

torch.set_num_threads(1)
SIZE, STYLE_DIM, N_LATENT = 32, 32, 6
PAD = 2  # save_strip's default padding


EDIT = load_script("edit")
TRAIN = load_script("train_boundary")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit")
    model = tiny_wagi("fusion.kind=wavelet")
    with torch.no_grad():
        for gate in model.fusion.gates.values():
            gate.fill_(0.7)
    model.save(root / "model.pt")
    rng = np.random.default_rng(0)
    good = root / "good"
    good.mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(good / "a.png")
    Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(good / "b.jpg")  # non-square
    sub = good / "sub"
    sub.mkdir()
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), mode="L").save(sub / "c.png")
    bad = root / "bad"
    bad.mkdir()
    (bad / "text.png").write_text("not an image")
    (bad / "empty.jpg").write_bytes(b"")
    boundary = torch.nn.functional.normalize(torch.randn(1, STYLE_DIM), dim=1)
    np.save(root / "boundary.npy", boundary.numpy())
    return {"root": root, "model": WaGI.load(root / "model.pt").eval(), "ckpt": root / "model.pt",
            "good": good, "bad": bad, "boundary": boundary}


def _panels(path, n, captions=True):
    """The n tiles of a strip (left to right); the caption band, when there is one, sits below them."""
    arr = np.asarray(Image.open(path).convert("RGB"))
    band = caption_height(SIZE) if captions else 0
    assert arr.shape == (SIZE + 2 * PAD + band, n * SIZE + (n + 1) * PAD, 3)
    if captions:  # white band with dark text under every tile
        for i in range(n):
            cell = arr[SIZE + 2 * PAD:, PAD + i * (SIZE + PAD):PAD + i * (SIZE + PAD) + SIZE]
            assert cell.max() == 255 and cell.min() < 100, f"no caption under tile {i}"
    return [arr[PAD:PAD + SIZE, PAD + i * (SIZE + PAD):PAD + i * (SIZE + PAD) + SIZE] for i in range(n)]


def _as_uint8(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _max_diff(a, b):
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_edit_images_strips_fusion_and_bad_files(setup, tmp_path, capsys):
    out = tmp_path / "out"
    rc = EDIT.main(["--ckpt", str(setup["ckpt"]), "--input", str(setup["good"]), str(setup["bad"]),
                    str(tmp_path / "missing.png"), "--direction", f"boundary:{setup['root'] / 'boundary.npy'}",
                    "--strengths", "-3,0,3", "--output", str(out), "--batch-size", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1
    for name in ("text.png", "empty.jpg", "missing.png"):
        assert sum(name in line for line in err.splitlines()) == 1, err  # each bad input named once
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a.png", "b.png", "sub/c.png"]
    model = setup["model"]
    x = load_image(setup["good"] / "a.png", SIZE).unsqueeze(0)
    with torch.no_grad():
        recon, w, _ = model.invert(x)
        plus = model.edit(x, setup["boundary"], 3.0)
    input_p, minus_p, zero_p, plus_p = _panels(out / "a.png", 4)
    assert _max_diff(input_p, _as_uint8(x[0])) <= 1  # the input as the model sees it comes first
    assert _max_diff(zero_p, _as_uint8(recon[0])) <= 1  # strength 0: the fused reconstruction
    assert _max_diff(plus_p, _as_uint8(plus[0])) <= 1
    assert _max_diff(minus_p, plus_p) > 10  # the edit does something


def test_edit_default_output_is_under_outputs(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert EDIT.main(["--ckpt", str(setup["ckpt"]), "--input", str(setup["good"] / "a.png"), "--direction",
                      f"boundary:{setup['root'] / 'boundary.npy'}", "--strengths", "0,1", "--device", "cpu"]) == 0
    assert (tmp_path / "outputs" / "edits" / "a.png").is_file()  # inside the ignored outputs/ folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]


def test_edit_overwrite_individual_and_no_fusion(setup, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--ckpt", str(setup["ckpt"]), "--input", str(setup["good"] / "a.png"), "--direction", "sefa:0",
            "--strengths", "-2,2", "--output", str(out), "--individual", "--no-fusion", "--device", "cpu"]
    assert EDIT.main(args) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.png", "a_s+2.png", "a_s-2.png"]
    assert (out / ".wagi-outputs").is_file()  # a later scan of a parent folder leaves these out
    model = setup["model"]
    x = load_image(setup["good"] / "a.png", SIZE).unsqueeze(0)
    with torch.no_grad():
        from wagi.editing import sefa_directions

        d = sefa_directions(model.generator)[0][:1]
        plain = model.edit(x, d, 2.0, fuse=False)
    single = np.asarray(Image.open(out / "a_s+2.png").convert("RGB"))
    assert _max_diff(single, _as_uint8(plain[0])) <= 1
    assert _max_diff(_panels(out / "a.png", 3)[2], single) == 0  # input, -2, +2 (captioned)
    plain_out = tmp_path / "plain"
    assert EDIT.main(args[:args.index("--output")] + ["--output", str(plain_out), "--plain", "--no-fusion",
                                                      "--device", "cpu"]) == 0
    minus_p, plus_p = _panels(plain_out / "a.png", 2, captions=False)  # --plain: the edits alone
    assert _max_diff(plus_p, single) == 0
    capsys.readouterr()
    assert EDIT.main(args) == 1  # outputs exist
    assert "--overwrite" in capsys.readouterr().err
    assert EDIT.main(args + ["--overwrite"]) == 0


def test_edit_latents_bundle_and_mapper(setup, tmp_path, capsys):
    model = setup["model"]
    w = torch.randn(2, N_LATENT, STYLE_DIM)
    torch.save({"names": ["x.png", "y.png"], "w_plus": w}, tmp_path / "latents.pt")
    np.save(tmp_path / "z.npy", w[0].numpy())
    torch.save(torch.zeros(18, STYLE_DIM), tmp_path / "foreign.pt")
    torch.manual_seed(3)
    mapper = LevelsMapper(N_LATENT, STYLE_DIM)
    for p in mapper.parameters():
        p.data.normal_()
    mapper.save(tmp_path / "mapper.pt")
    out = tmp_path / "out"
    rc = EDIT.main(["--ckpt", str(setup["ckpt"]), "--latents", str(tmp_path / "latents.pt"), str(tmp_path / "z.npy"),
                    str(tmp_path / "foreign.pt"), "--direction", f"mapper:{tmp_path / 'mapper.pt'}",
                    "--output", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 1 and "foreign.pt" in captured.err and "no wavelet fusion" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["x.png", "y.png", "z.png"]
    with torch.no_grad():
        expected = model.decode(w + 0.1 * mapper(w))  # default strengths 0, 0.5, 1: last = StyleCLIP's edit
        base = model.decode(w)
    panels = _panels(out / "y.png", 3)
    assert _max_diff(panels[2], _as_uint8(expected[1])) <= 1
    assert _max_diff(panels[0], _as_uint8(base[1])) <= 1


def test_edit_usage_errors(setup, tmp_path, monkeypatch, capsys):
    img = str(setup["good"] / "a.png")
    monkeypatch.setattr(EDIT, "DEFAULT_CKPT", tmp_path / "pretrained" / "demo" / "wagi.pt")
    assert EDIT.main(["--input", img, "--direction", "sefa:0", "--output", str(tmp_path / "o")]) == 2
    assert "pass --ckpt" in capsys.readouterr().err
    assert EDIT.main(["--ckpt", str(tmp_path / "nope.pt"), "--input", img, "--direction", "sefa:0"]) == 2
    ck = ["--ckpt", str(setup["ckpt"]), "--input", img, "--output", str(tmp_path / "o"), "--device", "cpu"]
    assert EDIT.main(ck + ["--direction", "warp:1"]) == 2
    assert EDIT.main(ck + ["--direction", "sefa:0", "--layers", "4:9"]) == 2
    assert EDIT.main(ck + ["--direction", "sefa:0", "--strengths", "a,b"]) == 2
    monkeypatch.setitem(sys.modules, "open_clip", None)
    monkeypatch.setitem(sys.modules, "clip", None)
    capsys.readouterr()
    assert EDIT.main(ck + ["--direction", "text:a smiling face"]) == 2
    err = capsys.readouterr().err
    assert "open_clip" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------- train_boundary
@pytest.fixture(scope="module")
def labelled(setup):
    """12 images: 6 bright, 6 dark (label 'bright'), plus a numeric 'lum' score and an unreadable file."""
    folder = setup["root"] / "labelled"
    folder.mkdir()
    rng = np.random.default_rng(1)
    records = []
    for i in range(12):
        bright = i % 2 == 0
        arr = np.clip((200 if bright else 50) + rng.integers(-30, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:02d}.png")
        records.append({"file": f"{i:02d}.png", "bright": bright, "lum": float(arr.mean()),
                        "tone": "light" if bright else "dark"})
    records.append({"file": "broken.png", "bright": True, "lum": 1.0, "tone": "light"})
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (folder / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_train_boundary_from_images(setup, labelled, tmp_path, capsys):
    out = tmp_path / "bright.npy"
    rc = TRAIN.main(["--ckpt", str(setup["ckpt"]), "--images", str(labelled), "--attribute", "bright",
                     "--output", str(out), "--device", "cpu", "--batch-size", "5"])
    err = capsys.readouterr().err
    assert rc == 1 and sum("broken.png" in line for line in err.splitlines()) == 1  # written, one input failed
    assert f"about 4 training codes in the smaller class for a {STYLE_DIM}-dim boundary" in err  # 6 a class, 70 %
    b = np.load(out)
    assert b.shape == (1, STYLE_DIM) and abs(np.linalg.norm(b) - 1) < 1e-5
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["n_pos"] == 6 and report["n_neg"] == 6 and report["n_codes"] == 12
    assert report["shape"] == [1, STYLE_DIM] and 0 <= report["train_acc"] <= 1 and len(report["failed"]) == 1
    # the boundary is the classifier's normal on the mean W+ codes: bright codes lie on its positive side
    model = setup["model"]
    imgs = torch.stack([load_image(labelled / f"{i:02d}.png", SIZE) for i in range(12)])
    with torch.no_grad():
        w = model.invert(imgs, fuse=False)[1].mean(1)
    proj = (w @ torch.from_numpy(b)[0]).numpy()
    assert proj[0::2].mean() > proj[1::2].mean()

    per = tmp_path / "per.npy"
    assert TRAIN.main(["--ckpt", str(setup["ckpt"]), "--images", str(labelled), "--attribute", "tone=light",
                       "--output", str(per), "--per-layer", "--classifier", "logistic", "--device", "cpu"]) == 1
    p = np.load(per)
    assert p.shape == (N_LATENT, STYLE_DIM)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), np.ones(N_LATENT), atol=1e-5)
    assert json.loads(per.with_suffix(".json").read_text())["positive"] == "tone == light"
    capsys.readouterr()
    assert TRAIN.main(["--ckpt", str(setup["ckpt"]), "--images", str(labelled), "--attribute", "bright",
                       "--output", str(out)]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_train_boundary_help_says_how_many_codes(capsys):
    assert TRAIN.build_parser().parse_args(["--demo", "--attribute", "a", "--output", "b.npy"]).n == 1000
    with pytest.raises(SystemExit):
        TRAIN.build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "How many codes" in text and "about 10 min on 2 CPU cores" in text


def test_train_boundary_from_latents_and_demo(setup, tmp_path, capsys):
    rng = np.random.default_rng(5)
    normal = rng.normal(size=STYLE_DIM)
    normal /= np.linalg.norm(normal)
    w = rng.normal(size=(40, N_LATENT, STYLE_DIM)).astype(np.float32)
    score = w.mean(1) @ normal
    names = [f"{i:03d}.png" for i in range(40)]
    torch.save({"names": names, "w_plus": torch.from_numpy(w)}, tmp_path / "latents.pt")
    (tmp_path / "labels.csv").write_text("file,score\n" + "".join(f"{n},{s}\n" for n, s in zip(names, score)))
    out = tmp_path / "score.npy"
    assert TRAIN.main(["--ckpt", str(setup["ckpt"]), "--latents", str(tmp_path / "latents.pt"), "--labels",
                       str(tmp_path / "labels.csv"), "--attribute", "score", "--chosen-ratio", "0.3",
                       "--output", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["n_pos"] == 12 and report["n_neg"] == 12 and report["binary_labels"] is False
    assert float(np.load(out)[0] @ normal) > 0.5  # 24 codes in 32-D: roughly the planted normal
    from wagi.checkpoint import save_generator

    save_generator(tmp_path / "g.pt", setup["model"].generator, None)
    per = tmp_path / "per.npy"
    assert TRAIN.main(["--generator", str(tmp_path / "g.pt"), "--latents", str(tmp_path / "latents.pt"),
                       "--labels", str(tmp_path / "labels.csv"), "--attribute", "score", "--chosen-ratio", "0.3",
                       "--per-layer", "--output", str(per)]) == 0
    assert np.load(per).shape == (N_LATENT, STYLE_DIM)
    assert TRAIN.main(["--generator", str(tmp_path / "g.pt"), "--demo", "--attribute", "smile",
                       "--output", str(tmp_path / "g_demo.npy")]) == 2  # images need the encoder
    demo = tmp_path / "demo.npy"
    assert TRAIN.main(["--ckpt", str(setup["ckpt"]), "--demo", "--n", "8", "--attribute", "smile",
                       "--chosen-ratio", "0.25", "--split-ratio", "1", "--output", str(demo), "--device", "cpu"]) == 0
    rep = json.loads(demo.with_suffix(".json").read_text())
    assert rep["n_pos"] == 2 and rep["n_neg"] == 2 and rep["val_acc"] is None and rep["source"] == "demo"
    assert abs(np.linalg.norm(np.load(demo)) - 1) < 1e-5
    capsys.readouterr()
    assert TRAIN.main(["--ckpt", str(tmp_path / "none.pt"), "--demo", "--attribute", "smile",
                       "--output", str(tmp_path / "x.npy")]) == 2
    assert TRAIN.main(["--ckpt", str(setup["ckpt"]), "--latents", str(tmp_path / "latents.pt"),
                       "--attribute", "score", "--output", str(tmp_path / "y.npy")]) == 2  # no --labels
    assert "--labels" in capsys.readouterr().err


def test_edit_refuses_non_finite_strengths_in_one_line(setup, tmp_path, capsys):
    for text in ("nan", "-3,inf,3", "0,-inf"):
        rc = EDIT.main(["--ckpt", str(setup["ckpt"]), "--input", str(setup["good"]), "--direction",
                        f"boundary:{setup['root'] / 'boundary.npy'}", "--strengths", text,
                        "--output", str(tmp_path / "out"), "--device", "cpu"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "--strengths must be finite numbers" in err, err
    assert not (tmp_path / "out").exists()


def test_edit_latents_keeps_going_past_bad_entries(setup, tmp_path, capsys):
    w = torch.randn(4, N_LATENT, STYLE_DIM)
    w[1, 0, 0] = float("nan")
    w[2, 3, 5] = float("inf")
    names = ["good_a", "has_nan", "bad\x00name", "good_b"]
    torch.save({"names": names, "w_plus": w}, tmp_path / "latents.pt")
    w2 = w.clone()
    w2[2] = 0.0  # a finite code whose name holds a NUL byte
    torch.save({"names": names, "w_plus": w2}, tmp_path / "latents2.pt")
    out = tmp_path / "out"
    rc = EDIT.main(["--ckpt", str(setup["ckpt"]), "--latents", str(tmp_path / "latents.pt"),
                    str(tmp_path / "latents2.pt"), "--direction", f"boundary:{setup['root'] / 'boundary.npy'}",
                    "--output", str(out), "--device", "cpu", "--overwrite"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["good_a.png", "good_b.png"]  # every usable code rendered
    assert sum("NaN or infinite" in ln for ln in err) == 3  # has_nan twice, bad\x00name's inf once
    assert sum("refusing an output name with a NUL byte" in ln and "'bad\\x00name'" in ln for ln in err) == 1
    assert all("\x00" not in ln for ln in err)


def test_non_finite_model_weights_are_refused(setup, tmp_path, capsys):
    from wagi.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(setup["ckpt"])
    name = next(k for k in ck["state_dict"] if k.startswith("generator.") and ck["state_dict"][k].numel() > 8)
    ck["state_dict"][name].view(-1)[3] = float("nan")
    save_checkpoint(ck, tmp_path / "nan.pt")
    rc = EDIT.main(["--ckpt", str(tmp_path / "nan.pt"), "--input", str(setup["good"]), "--direction",
                    f"boundary:{setup['root'] / 'boundary.npy'}", "--output", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"'{name}' holds NaN or infinite values" in err, err
