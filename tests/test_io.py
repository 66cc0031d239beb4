"""Tests of wagi.imageio: discovery, loading of good/odd/broken files, batching, datasets, saving."""
import os
import pickle
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from tests.badfiles import EXIF_ORIENTATION_TAG, IS_ROOT, ROTATE_90_CW, make_corpus, png_bytes, rgb16_png_bytes
from wagi import imageio
from wagi.imageio import (
    ImageFolderDataset,
    ImageItem,
    ImageLoadError,
    InputNotFoundError,
    LoadReport,
    OutputExistsError,
    OutputIsInputError,
    ProtectedPaths,
    check_image,
    check_output_not_input,
    find_images,
    iter_batches,
    load_image,
    pil_to_tensor,
    save_image,
    save_strip,
)

S = 32
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def unit(v):
    """An 8-bit value as it appears in a loaded tensor."""
    return v / 255.0 * 2.0 - 1.0


def save_pil(img, path, fmt=None, **kw):
    img.save(path, fmt, **kw)
    return str(path)


def pil_info(path, attr):
    with Image.open(path) as img:
        return getattr(img, attr)


def rgb_of(x):
    return x.permute(1, 2, 0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    good, bad = make_corpus(str(root))
    return str(root), good, bad


# ------------------------------------------------------------------------------------------
# Corpus: every file through load_image and iter_batches
# ------------------------------------------------------------------------------------------
def test_corpus_is_varied(corpus):
    _, good, bad = corpus
    assert len(good) >= 20 and len(bad) >= 14
    assert len(set(bad.values())) >= 7  # distinct failure reasons
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("policy", imageio.POLICIES)
def test_corpus_good_files_load(corpus, policy):
    _, good, _ = corpus
    for path in good:
        x = load_image(path, S, policy)
        assert x.shape == (3, S, S) and x.dtype == torch.float32, path
        assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1, path
        assert x.max() - x.min() > 0.1, path  # every good corpus image has visible content


def test_corpus_bad_files_raise_one_line(corpus):
    _, _, bad = corpus
    for path, reason in bad.items():
        with pytest.raises(ImageLoadError) as info:
            load_image(path, S)
        msg = str(info.value)
        assert msg.startswith(f"{path}: cannot read image: "), msg
        assert reason in msg, (reason, msg)
        assert "\n" not in msg
        assert info.value.path == path and reason in info.value.reason


def test_iter_batches_over_corpus(corpus):
    _, good, bad = corpus
    items = sorted(good + list(bad))  # good and bad interleaved
    lines = []
    report = LoadReport(log=lines.append)
    batches = list(iter_batches(items, S, batch_size=4, report=report))
    sizes = [b.shape[0] for b, _ in batches]
    assert sizes == [4] * (len(good) // 4) + ([len(good) % 4] if len(good) % 4 else [])
    assert [it.path for _, its in batches for it in its] == [os.path.abspath(p) for p in items if p in good]
    for b, its in batches:
        assert b.shape[1:] == (3, S, S) and len(its) == b.shape[0]
        assert b.min() >= -1 and b.max() <= 1
    assert sorted(it.path for it, _ in report.failures) == sorted(os.path.abspath(p) for p in bad)
    assert len(lines) == len(bad) and all("\n" not in ln and ": cannot read image: " in ln for ln in lines)
    assert report.n_loaded == len(good) and not report.ok
    assert report.summary() == f"{len(good)} image(s) loaded, {len(bad)} failed"
    # A second pass with the same report does not report the same files again.
    list(iter_batches(items, S, batch_size=4, report=report))
    assert len(lines) == len(bad) and len(report.failures) == len(bad)


def test_iter_batches_keeps_last_partial_batch(tmp_path):
    paths = [save_pil(Image.new("RGB", (S, S), (10 * i, 0, 0)), tmp_path / f"{i}.png") for i in range(7)]
    batches = list(iter_batches(paths, S, batch_size=3))
    assert [b.shape[0] for b, _ in batches] == [3, 3, 1]
    assert [it.rel for _, its in batches for it in its] == [f"{i}.png" for i in range(7)]
    last = batches[-1][0][0]
    assert torch.allclose(last[0], torch.full((S, S), unit(60)))
    named = [ImageItem(os.path.abspath(p), f"set/{i:03d}.png") for i, p in enumerate(paths)]
    (b1, its1), (b2, its2) = iter_batches(named, S, batch_size=4)
    assert its1 + its2 == named and torch.equal(torch.cat([b1, b2]), torch.cat([b for b, _ in batches]))
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(paths, S, batch_size=0))


def test_dataset_skips_unreadable(corpus):
    root, good, bad = corpus
    with pytest.warns(UserWarning, match=r"skipped \d+ unreadable file"):
        ds = ImageFolderDataset(root, S, check="load")
    assert sorted(it.path for it in ds.items) == sorted(good)
    assert {it.path for it, _ in ds.skipped} == set(bad) - {os.path.join(root, "folder.png")}
    x = ds[0]
    assert x.shape == (3, S, S) and x.dtype == torch.float32


def test_dataset_verify_scan_and_fallback(corpus):
    root, good, bad = corpus
    with pytest.warns(UserWarning):
        ds = ImageFolderDataset(root, S)  # check='verify': header-level only
    kept = {it.path for it in ds.items}
    assert set(good) <= kept
    slipped = kept - set(good)  # bad files whose damage only decoding reveals
    assert {os.path.basename(p) for p in slipped} <= {"truncated.jpg", "corrupt_data.png", "nan_values.tif"}
    assert os.path.join(root, "truncated.png") not in kept and os.path.join(root, "bomb.png") not in kept
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(len(ds)):
            x = ds[i]
            assert x.shape == (3, S, S) and x.min() >= -1 and x.max() <= 1
    assert len(caught) == len(slipped)  # each slipped file warned about once
    assert all("using the next image instead" in str(w.message) for w in caught)


def test_dataset_dataloader(tmp_path):
    arr = np.zeros((S, S, 3), np.uint8)
    arr[:, : S // 2] = 255
    path = save_pil(Image.fromarray(arr), tmp_path / "half.png")
    plain = load_image(path, S)
    assert torch.equal(ImageFolderDataset([path], S)[0], plain)  # no augmentation inside the dataset
    loader = torch.utils.data.DataLoader(ImageFolderDataset(str(tmp_path), S), batch_size=2)
    assert next(iter(loader)).shape == (1, 3, S, S)


# ------------------------------------------------------------------------------------------
# Values for simple cases (image already at the target size: no resampling, exact values)
# ------------------------------------------------------------------------------------------
def test_white_l_image_is_plus_one(tmp_path):
    path = save_pil(Image.new("L", (S, S), 255), tmp_path / "white.png")
    assert torch.equal(load_image(path, S), torch.ones(3, S, S))
    resized = load_image(path, 16)  # resampled: a constant stays constant
    assert torch.allclose(resized, torch.ones(3, 16, 16), atol=1e-6)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path, mode):
    values = np.array([[65535, 32768, 0, 255]], dtype=np.uint16).repeat(S, 0).repeat(S // 4, 1)
    if mode == "I;16B":
        img, name = Image.frombytes("I;16B", (S, S), values.astype(">u2").tobytes()), "g.tif"
    elif mode == "I":
        img, name = Image.fromarray(values.astype(np.int32)), "g.tif"
    else:
        img, name = Image.fromarray(values), "g.png"
    path = save_pil(img, tmp_path / name)
    assert pil_info(path, "mode") == mode
    x = load_image(path, S)
    expected = torch.from_numpy(values.astype(np.float64) / 65535 * 2 - 1).float()
    assert torch.allclose(x, expected.expand(3, S, S), atol=1e-6)
    assert x[0, 0, 0] == 1.0 and abs(x[0, 0, S // 4].item()) < 1e-4 and x[0, 0, S // 2] == -1.0


def test_wide_range_int_and_float_are_min_max_scaled(tmp_path):
    ramp = np.linspace(-500.0, 2e6, S)[None].repeat(S, 0)
    x = load_image(save_pil(Image.fromarray(ramp.astype(np.int32)), tmp_path / "i.tif"), S)
    assert x[0, 0, 0] == -1.0 and x[0, 0, -1] == 1.0
    f = load_image(save_pil(Image.fromarray(ramp.astype(np.float32)), tmp_path / "f.tif"), S)
    assert torch.allclose(f, x, atol=1e-5)
    unit_f = np.linspace(0.0, 1.0, S, dtype=np.float32)[None].repeat(S, 0)
    g = load_image(save_pil(Image.fromarray(unit_f), tmp_path / "u.tif"), S)
    assert torch.allclose(g[1], torch.from_numpy(unit_f * 2 - 1), atol=1e-6)


def test_rgba_composites_on_background(tmp_path):
    arr = np.zeros((S, S, 4), np.uint8)
    arr[:, :8] = (0, 0, 0, 0)  # fully transparent black
    arr[:, 8:16] = (255, 0, 0, 255)  # opaque red
    arr[:, 16:] = (255, 0, 0, 128)  # half-transparent red
    path = save_pil(Image.fromarray(arr), tmp_path / "rgba.png")
    x = rgb_of(load_image(path, S))
    assert torch.equal(x[:, :8], torch.ones(S, 8, 3))  # white background
    assert torch.equal(x[:, 8:16], torch.tensor([1.0, -1.0, -1.0]).expand(S, 8, 3))
    half = (1 - 128 / 255) * 2 - 1
    assert torch.allclose(x[:, 16:], torch.tensor([1.0, half, half]).expand(S, 16, 3), atol=1e-6)
    blue_bg = rgb_of(load_image(path, S, background=BLUE))
    assert torch.equal(blue_bg[:, :8], torch.tensor([-1.0, -1.0, 1.0]).expand(S, 8, 3))


def test_la_and_pa_alpha(tmp_path):
    la = np.zeros((S, S, 2), np.uint8)
    la[:, :S // 2] = (40, 0)
    la[:, S // 2:] = (40, 255)
    x = load_image(save_pil(Image.fromarray(la), tmp_path / "la.png"), S)
    assert torch.equal(x[:, :, : S // 2], torch.ones(3, S, S // 2))
    assert torch.allclose(x[:, :, S // 2:], torch.full((3, S, S // 2), unit(40)))
    pa = Image.new("PA", (S, S))
    pa.putpalette([10, 20, 30, 200, 100, 50])
    pa.putdata([(0, 255)] * (S * S // 2) + [(1, 0)] * (S * S // 2))
    y = pil_to_tensor(pa, background=(0, 0, 0)) * 2 - 1
    opaque = torch.tensor([unit(10), unit(20), unit(30)]).view(3, 1, 1)
    assert torch.allclose(y[:, : S // 2], opaque.expand(3, S // 2, S))
    assert torch.equal(y[:, S // 2:], -torch.ones(3, S // 2, S))


def test_palette_maps_colours(tmp_path):
    img = Image.new("P", (S, S))
    img.putpalette([10, 20, 30, 200, 100, 50, 0, 0, 0])
    idx = np.zeros((S, S), np.uint8)
    idx[:, S // 2:] = 1
    idx[0, 0] = 2
    img.putdata(idx.flatten().tolist())
    path = save_pil(img, tmp_path / "p.png")
    x = rgb_of(load_image(path, S))
    assert torch.allclose(x[1, 0], torch.tensor([unit(10), unit(20), unit(30)]))
    assert torch.allclose(x[1, -1], torch.tensor([unit(200), unit(100), unit(50)]))
    # Index 2 declared transparent: composited onto the background.
    trans = save_pil(img, tmp_path / "pt.png", transparency=2)
    y = rgb_of(load_image(trans, S, background=GREEN))
    assert torch.equal(y[0, 0], torch.tensor([-1.0, 1.0, -1.0]))
    assert torch.allclose(y[1, 0], x[1, 0])


def test_bilevel_cmyk_and_16_bit_rgb(tmp_path):
    bits = np.zeros((S, S), bool)
    bits[:, S // 2:] = True
    x = load_image(save_pil(Image.fromarray(bits), tmp_path / "b.png"), S)
    assert torch.equal(x[:, :, : S // 2], -torch.ones(3, S, S // 2))
    assert torch.equal(x[:, :, S // 2:], torch.ones(3, S, S // 2))
    cmyk = save_pil(Image.new("CMYK", (S, S), (0, 255, 255, 0)), tmp_path / "c.tif")
    assert torch.equal(rgb_of(load_image(cmyk, S)), torch.tensor([1.0, -1.0, -1.0]).expand(S, S, 3))
    px = np.zeros((S, S, 3), np.uint16)
    px[..., 0] = 65535
    px[..., 1] = 128 * 257
    (tmp_path / "rgb16.png").write_bytes(rgb16_png_bytes(px))
    y = rgb_of(load_image(str(tmp_path / "rgb16.png"), S))
    assert torch.allclose(y, torch.tensor([1.0, unit(128), -1.0]).expand(S, S, 3), atol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((24, 40, 3), np.uint8)  # landscape: red left half, blue right half
    arr[:, :20] = RED
    arr[:, 20:] = BLUE
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = ROTATE_90_CW
    path = save_pil(Image.fromarray(arr), tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    x = load_image(path, None)
    assert x.shape == (3, 40, 24)  # displayed as portrait
    top, bottom = x[:, :16].mean((1, 2)), x[:, -16:].mean((1, 2))  # rotated clockwise: left goes to top
    assert top[0] > 0.8 and top[2] < -0.8 and bottom[2] > 0.8 and bottom[0] < -0.8
    padded = load_image(path, S, "pad")  # portrait in a square: white columns left and right
    assert torch.equal(padded[:, :, :3], torch.ones(3, S, 3)) and padded[:, :, S // 2].mean() < 0.5


def test_first_frame_of_animation(tmp_path):
    frames = [Image.new("RGB", (S, S), c) for c in (RED, GREEN, BLUE)]
    gif = save_pil(frames[0], tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50)
    tif = save_pil(frames[1], tmp_path / "a.tif", save_all=True, append_images=frames[2:])
    assert pil_info(gif, "n_frames") == 3 and pil_info(tif, "n_frames") == 2
    assert torch.equal(rgb_of(load_image(gif, S)), torch.tensor([1.0, -1.0, -1.0]).expand(S, S, 3))
    assert torch.equal(rgb_of(load_image(tif, S)), torch.tensor([-1.0, 1.0, -1.0]).expand(S, S, 3))


# ------------------------------------------------------------------------------------------
# Geometry of the resize policies
# ------------------------------------------------------------------------------------------
def three_stripes(w, h):
    """Red left quarter, green middle half, blue right quarter."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 4] = RED
    arr[:, w // 4: 3 * w // 4] = GREEN
    arr[:, 3 * w // 4:] = BLUE
    return Image.fromarray(arr)


def test_policies_geometry(tmp_path):
    g = torch.tensor([-1.0, 1.0, -1.0])
    path = save_pil(three_stripes(2 * S, S), tmp_path / "wide.png")
    crop = load_image(path, S, "center_crop")  # short side already S: pure crop of the green middle
    assert torch.equal(rgb_of(crop), g.expand(S, S, 3))
    squashed = rgb_of(load_image(path, S, "resize"))
    assert squashed[:, 2].argmax(-1).eq(0).all() and squashed[:, S // 2].argmax(-1).eq(1).all()
    assert squashed[:, S - 3].argmax(-1).eq(2).all()
    padded = rgb_of(load_image(path, S, "pad"))
    assert torch.equal(padded[: S // 4], torch.ones(S // 4, S, 3))  # white bands above and below
    assert torch.equal(padded[-(S // 4):], torch.ones(S // 4, S, 3))
    assert torch.allclose(padded[S // 2, S // 2], g, atol=1e-5)
    # Downscale by 2 then crop: the inner green stays green.
    big = save_pil(three_stripes(4 * S, 2 * S), tmp_path / "big.png")
    down = rgb_of(load_image(big, S))
    assert torch.allclose(down[:, 4:-4], g.expand(S, S - 8, 3), atol=1e-5)
    up = load_image(save_pil(Image.new("RGB", (12, 10), (30, 60, 90)), tmp_path / "small.png"), S)
    assert torch.allclose(rgb_of(up), torch.tensor([unit(30), unit(60), unit(90)]).expand(S, S, 3), atol=1e-5)
    with pytest.raises(ValueError, match="unknown resize policy"):
        load_image(path, S, "stretch")


def test_jpeg_draft_decoding_matches_full_decode(tmp_path):
    yy, xx = np.mgrid[0:600, 0:800]
    arr = np.stack([xx * 255 // 800, yy * 255 // 600, (xx + yy) * 255 // 1400], -1).astype(np.uint8)
    jpg = save_pil(Image.fromarray(arr), tmp_path / "big.jpg", quality=95)
    png = save_pil(Image.fromarray(arr), tmp_path / "big.png")
    for policy in imageio.POLICIES:
        a, b = load_image(jpg, 64, policy), load_image(png, 64, policy)
        assert (a - b).abs().mean() < 0.02, policy


def test_large_images_are_prereduced_but_keep_enough_pixels(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    arr = np.kron(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
    jpg = save_pil(Image.fromarray(arr), tmp_path / "big.jpg", quality=95)
    png = save_pil(Image.fromarray(arr), tmp_path / "big.png")
    decoded = []
    real = imageio.pil_to_tensor
    monkeypatch.setattr(imageio, "pil_to_tensor", lambda img, bg: decoded.append(img.size) or real(img, bg))
    gap = imageio.REDUCING_GAP
    cases = [("center_crop", 64), ("pad", 64), ("resize", 64), ("center_crop", 100), ("pad", 500)]
    # JPEG: libjpeg scales by 1/2, 1/4, 1/8; other formats: any integer factor.
    expected = {jpg: [(200, 150), (200, 150), (200, 150), (400, 300), (800, 600)],
                png: [(200, 150), (134, 100), (200, 150), (400, 300), (800, 600)]}
    for path in (jpg, png):
        for policy, size in cases:
            load_image(path, size, policy)
            w, h = decoded[-1]
            needed = {"center_crop": min(w, h), "pad": max(w, h), "resize": min(w, h)}[policy]
            assert needed >= (gap * size if w < 800 else size), (path, policy, size, decoded[-1])
            assert w < 800 or size == 500, (path, policy, size, decoded[-1])  # shrunk before the resample
        assert decoded[-len(cases):] == expected[path]
    load_image(jpg, None)
    assert decoded[-1] == (800, 600)
    full = imageio.resize_to_square(real(Image.fromarray(arr), imageio.WHITE), 64) * 2 - 1
    assert (load_image(png, 64) - full).abs().mean() < 0.01  # two-stage resample ~ one full resample


# ------------------------------------------------------------------------------------------
# Error paths beyond the corpus
# ------------------------------------------------------------------------------------------
def test_missing_file_and_permission_messages(tmp_path, monkeypatch):
    missing = str(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(missing, S)
    path = save_pil(Image.new("RGB", (S, S)), tmp_path / "ok.png")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(imageio.Image, "open", denied)
    with pytest.raises(ImageLoadError) as info:
        load_image(path, S)
    assert str(info.value) == f"{path}: cannot read image: permission denied"


@pytest.mark.skipif(IS_ROOT, reason="root reads chmod-000 files; the monkeypatched test covers the message")
def test_real_permission_denied(tmp_path):
    path = save_pil(Image.new("RGB", (S, S)), tmp_path / "locked.png")
    os.chmod(path, 0)
    with pytest.raises(ImageLoadError, match="permission denied"):
        load_image(path, S)


def test_error_pickles_and_check_image(corpus):
    root, good, bad = corpus
    err = ImageLoadError("/x/y.png", "truncated file")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == "/x/y.png: cannot read image: truncated file" and back.reason == "truncated file"
    for path in good:
        check_image(path)
    for name in ("truncated.png", "text.png", "bomb.png", "tiny_1x1.png", "empty.png"):
        with pytest.raises(ImageLoadError):
            check_image(os.path.join(root, name))


def test_size_limits_are_parameters(tmp_path):
    path = save_pil(Image.new("RGB", (40, 30)), tmp_path / "m.png")
    with pytest.raises(ImageLoadError, match="too large: 40x30 px = 1200 pixels"):
        load_image(path, S, max_pixels=1000)
    with pytest.raises(ImageLoadError, match="minimum side is 31 px"):
        load_image(path, S, min_side=31)
    assert load_image(path, S, min_side=30, max_pixels=1200).shape == (3, S, S)


# ------------------------------------------------------------------------------------------
# Bounded decoding: header limits, reduce-on-decode for every mode, peak memory
# ------------------------------------------------------------------------------------------
def _flat_png(path, width, height, colour_type=2, value=0):
    """A valid 8-bit PNG of ``width x height`` constant pixels: a few KB on disk for any size."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = b"\x00" + bytes([value]) * (width * channels)
    with open(path, "wb") as f:
        f.write(png_bytes(width, height, 8, colour_type, zlib.compress(row * height, 9)))
    return str(path)


def test_extreme_aspect_is_refused_from_the_header(tmp_path, monkeypatch):
    banner = tmp_path / "banner.png"  # 8,000,000 x 8: 64 M pixels, under MAX_PIXELS; header + 10 bytes of data
    banner.write_bytes(png_bytes(8_000_000, 8, 8, 2, zlib.compress(b"\x00" * 16)))
    pole = _flat_png(tmp_path / "pole.png", 8, 100_000)  # valid pixel data, 8 x 100,000
    assert os.path.getsize(pole) < 5000
    decoded = []
    monkeypatch.setattr(imageio.Image.Image, "load", lambda self: decoded.append(self) or None)
    for path, dims, ratio in ((str(banner), "8000000x8", "1e+06:1"), (pole, "8x100000", "1.25e+04:1")):
        for call in (lambda path=path: load_image(path, 128), lambda path=path: check_image(path),
                     lambda path=path: load_image(path, None, max_pixels=None)):
            with pytest.raises(ImageLoadError) as info:
                call()
            assert str(info.value) == (f"{path}: cannot read image: image too elongated: {dims} px, aspect ratio "
                                       f"{ratio} (maximum is {imageio.MAX_ASPECT}:1; set WAGI_MAX_IMAGE_ASPECT "
                                       "to change it)")
    assert decoded == []  # refused before any pixel was decoded


def test_image_limits_come_from_the_environment(tmp_path, monkeypatch):
    path = _flat_png(tmp_path / "strip.png", 8 * (imageio.MAX_ASPECT + 1), 8, value=255)
    with pytest.raises(ImageLoadError, match="too elongated"):
        load_image(path, S)
    monkeypatch.setenv("WAGI_MAX_IMAGE_ASPECT", "40")
    assert torch.allclose(load_image(path, S), torch.ones(3, S, S), atol=1e-6)
    assert imageio.image_limits() == (imageio.MAX_PIXELS, 40)
    assert imageio.image_limits(max_pixels=5, max_aspect=None) == (5, None)
    monkeypatch.setenv("WAGI_MAX_IMAGE_PIXELS", "2000")
    with pytest.raises(ImageLoadError, match=r"= 2112 pixels \(maximum is 2000; set WAGI_MAX_IMAGE_PIXELS"):
        load_image(path, S)
    assert load_image(path, S, max_pixels=None).shape == (3, S, S)  # an explicit argument wins
    for bad in ("lots", "0", "-5", "1e9", "x" * 500):
        monkeypatch.setenv("WAGI_MAX_IMAGE_PIXELS", bad)
        with pytest.raises(ImageLoadError) as info:
            load_image(path, S)
        msg = str(info.value)
        assert "WAGI_MAX_IMAGE_PIXELS=" in msg and "is not a positive integer" in msg and len(msg) < 200, msg


BIG_W, BIG_H = 1200, 900


def _big(mode):
    """A smooth ``BIG_W x BIG_H`` test image in ``mode`` (alpha varying across it where there is alpha)."""
    yy, xx = np.mgrid[0:BIG_H, 0:BIG_W]
    rgb = np.stack([xx * 255 // BIG_W, yy * 255 // BIG_H, (xx + yy) * 255 // (BIG_W + BIG_H)], -1).astype(np.uint8)
    alpha = (xx * 255 // BIG_W).astype(np.uint8)
    base = Image.fromarray(rgb)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, alpha]))
    if mode == "LA":
        return Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")
    if mode == "P":
        return base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    if mode == "PA":
        return base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).convert("PA")
    if mode == "1":
        return base.convert("L").convert("1")
    if mode == "I;16":
        return Image.fromarray((xx * 65535 // BIG_W).astype(np.uint16))
    if mode == "I":
        return Image.fromarray((xx * 65535 // BIG_W).astype(np.int32))
    if mode == "F":
        return Image.fromarray((xx / BIG_W).astype(np.float32))
    return base.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "PA", "1", "I;16", "I", "F", "CMYK"])
def test_every_mode_is_reduced_before_float_conversion(tmp_path, monkeypatch, mode):
    img = _big(mode)
    path = save_pil(img, tmp_path / ("big.tif" if mode in ("PA", "I", "F", "CMYK") else "big.png"))
    full = imageio.resize_to_square(pil_to_tensor(img, imageio.WHITE), S) * 2 - 1
    seen = []
    real = imageio.pil_to_tensor
    monkeypatch.setattr(imageio, "pil_to_tensor", lambda im, bg: seen.append(im.size) or real(im, bg))
    x = load_image(path, S)
    # short side 900 -> no less than REDUCING_GAP * 32 = 64 px, long side 86: reduced by 13 (1200 // 86) to
    # 93 x 70, never converted to float at full size
    assert seen == [(93, 70)], seen
    # dithered bilevel and 64-colour palette pixels have sharp edges that the two resamples round differently
    tol = {"1": 0.06, "P": 0.02, "PA": 0.02}.get(mode, 0.01)
    assert (x - full).abs().mean() < tol, (mode, (x - full).abs().mean())


def test_colour_key_survives_reduction(tmp_path):
    img = _big("RGB")
    arr = np.asarray(img).copy()
    arr[:, : BIG_W // 2] = (1, 2, 3)  # the left half is the transparent colour
    path = save_pil(Image.fromarray(arr), tmp_path / "key.png", transparency=(1, 2, 3))
    x = load_image(path, S, "resize")
    # white background, not the key colour (1, 2, 3) = -0.99
    assert torch.allclose(x[:, :, : S // 2 - 1], torch.ones(3, S, S // 2 - 1), atol=1e-5)


_PEAK_RSS = """
import resource, sys
from wagi import imageio
imageio.load_image(sys.argv[1], 64)  # warm up: imports and allocator pools
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
imageio.load_image(sys.argv[2], 64)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="ru_maxrss is in KiB on Linux only")
@pytest.mark.slow
def test_peak_memory_of_a_large_rgba_image_is_bounded(tmp_path):
    small = save_pil(Image.new("RGBA", (64, 64)), tmp_path / "small.png")
    big = _flat_png(tmp_path / "big.png", 4000, 4000, colour_type=6, value=128)  # 64 MB of RGBA pixels, 70 KB file
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS, small, big], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    growth_mib = int(out.stdout.strip())
    # decoded RGBA (61 MiB) and its premultiplied copy for the reduction; a full-size float conversion would
    # need 61 MiB x 4 (float32) x 3 (RGBA, RGB, composite) = 730 MiB more
    assert growth_mib < 200, growth_mib


# ------------------------------------------------------------------------------------------
# Discovery
# ------------------------------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / ".cache").mkdir()
    for rel in ["b.png", "a.jpg", "sub/c.PNG", "sub/deep/d.webp", ".cache/e.png", ".hidden.png"]:
        save_pil(Image.new("RGB", (S, S)), root / rel, "PNG")
    (root / "notes.txt").write_text("x")
    (root / "sub" / "data.json").write_text("{}")
    return root


def test_find_images_folder(tree):
    items = find_images([str(tree)])
    assert [i.rel for i in items] == ["a.jpg", "b.png", "sub/c.PNG", "sub/deep/d.webp"]
    assert all(os.path.isabs(i.path) and i.path == os.path.join(str(tree), *i.rel.split("/")) for i in items)
    assert [i.rel for i in find_images(str(tree), recursive=False)] == ["a.jpg", "b.png"]
    assert items[2].output_path("/out", suffix="_inv") == os.path.join("/out", "sub", "c_inv.png")
    assert items[0].output_path("/out", ext=None) == os.path.join("/out", "a.jpg")


def test_find_images_files_globs_duplicates(tree, tmp_path, monkeypatch):
    notes = str(tree / "notes.txt")
    items = find_images([notes, str(tree / "sub" / "c.PNG")])
    assert [(i.path, i.rel) for i in items] == [(notes, "notes.txt"), (str(tree / "sub" / "c.PNG"), "c.PNG")]
    assert [i.rel for i in find_images([str(tree / "**" / "*.webp")])] == ["sub/deep/d.webp"]
    assert [i.rel for i in find_images([str(tree / "s*")])] == ["sub/c.PNG", "sub/deep/d.webp"]
    # A folder matched by a glob contributes its images like a folder given by name.
    assert [i.rel for i in find_images([str(tree / "*")], recursive=False)] == ["a.jpg", "b.png", "sub/c.PNG"]
    monkeypatch.chdir(tmp_path)
    rel_items = find_images(["imgs/*.png", "imgs", "./imgs/b.png"])  # b.png reached three times
    assert [i.rel for i in rel_items] == ["b.png", "a.jpg", "sub/c.PNG", "sub/deep/d.webp"]
    assert rel_items[0].path == str(tree / "b.png")
    os.symlink(tree / "a.jpg", tmp_path / "link.jpg")
    assert [i.rel for i in find_images([str(tree), str(tmp_path / "link.jpg")])][-1] == "sub/deep/d.webp"


def test_find_images_same_rel_from_two_folders(tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        save_pil(Image.new("RGB", (S, S)), tmp_path / d / "001.png")
    items = find_images([str(tmp_path / "x"), str(tmp_path / "y")])
    assert [i.rel for i in items] == ["001.png", "001__2.png"]
    assert items[1].path == str(tmp_path / "y" / "001.png")


def test_find_images_missing_inputs(tree, tmp_path):
    missing, pattern = str(tmp_path / "nope"), str(tmp_path / "*.gif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError) as info:
        find_images([str(tree), missing, pattern, str(tmp_path / "empty")])
    msg = str(info.value)
    assert "\n" not in msg and f"{missing}: no such file or folder" in msg
    assert f"{pattern}: no image file matches this pattern" in msg and "folder holds no image files" in msg
    lines = []
    items = find_images([missing, str(tree / "b.png")], missing="warn", log=lines.append)
    assert [i.rel for i in items] == ["b.png"] and lines == [f"{missing}: no such file or folder"]
    with pytest.raises(InputNotFoundError, match="no images found"):
        find_images([missing], missing="warn", log=lines.append)


# ------------------------------------------------------------------------------------------
# Saving
# ------------------------------------------------------------------------------------------
def test_save_round_trip_and_permissions(tmp_path):
    x = torch.rand(3, 20, 24) * 2.2 - 1.1  # a little out of range: clamped
    path = save_image(x, tmp_path / "new" / "dir" / "out.png")
    back = load_image(path, None)
    expected = torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1
    assert back.shape == (3, 20, 24) and torch.allclose(back, expected, atol=1e-6)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path / "new" / "dir") == ["out.png"]  # no temporary file left
    jpg = save_image(x, tmp_path / "out.jpg")
    assert pil_info(jpg, "format") == "JPEG"
    with pytest.raises(ValueError, match="unsupported output extension"):
        save_image(x, tmp_path / "out.xyz")
    with pytest.raises(ValueError, match="shape"):
        save_image(x[None], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="NaN"):
        save_image(torch.full((3, 8, 8), float("nan")), tmp_path / "nan.png")


def test_save_refuses_overwrite_unless_asked(tmp_path):
    path = tmp_path / "o.png"
    save_image(-torch.ones(3, 8, 8), path)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError) as info:
        save_image(torch.ones(3, 8, 8), path)
    assert "--overwrite" in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before
    save_image(torch.ones(3, 8, 8), path, overwrite=True)
    assert torch.equal(load_image(str(path), None), torch.ones(3, 8, 8))
    assert sorted(os.listdir(tmp_path)) == ["o.png"]


def test_save_never_writes_onto_inputs(tmp_path):
    src = save_pil(Image.new("RGB", (S, S), RED), tmp_path / "in.png")
    before = Path(src).read_bytes()
    os.symlink(src, tmp_path / "sym.png")
    os.link(src, tmp_path / "hard.png")
    items = find_images([src])
    for target in (src, tmp_path / "sym.png", tmp_path / "hard.png", str(tmp_path / "." / "in.png")):
        with pytest.raises(OutputIsInputError, match="refusing to write onto the input image"):
            check_output_not_input(target, items)
        with pytest.raises(OutputIsInputError):
            save_image(torch.zeros(3, S, S), target, overwrite=True, inputs=ProtectedPaths(items))
    assert Path(src).read_bytes() == before
    check_output_not_input(tmp_path / "other.png", [src])  # a different file is fine


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "keep.png"
    save_image(-torch.ones(3, 8, 8), path)
    before = path.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(torch.ones(3, 8, 8), path, overwrite=True)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["keep.png"]


def test_save_strip(tmp_path):
    colours = [torch.tensor(c).view(3, 1, 1) for c in ([1.0, -1, -1], [-1.0, 1, -1], [-1.0, -1, 1])]
    small = [c.expand(3, 16, 16) for c in colours]
    large = torch.zeros(3, 32, 32)
    path = save_strip(small + [large], tmp_path / "strip.png", padding=2)
    x = load_image(path, None)
    assert x.shape == (3, 32 + 4, 4 * 32 + 5 * 2)
    for k, c in enumerate(colours + [torch.zeros(3, 1, 1)]):
        left = 2 + k * 34
        tile = x[:, 2:34, left: left + 32]
        assert torch.allclose(tile, c.expand(3, 32, 32), atol=1 / 127.5), k
    assert torch.equal(x[:, :2], torch.ones(3, 2, x.shape[-1]))  # white frame
    with pytest.raises(OutputExistsError):
        save_strip(small, tmp_path / "strip.png")


def test_output_folders_are_not_inputs(tmp_path):
    root = tmp_path / "photos"
    for rel in ("a.png", "sub/b.png", "inv/a.png", "inv/deep/c.png", "edits/a.png", "other/d.png"):
        save_pil(Image.new("RGB", (S, S)), root / rel if (root / rel).parent.exists() else
                 (os.makedirs((root / rel).parent) or root / rel), "PNG")
    imageio.mark_output_folder(root / "inv")
    assert (root / "inv" / imageio.OUTPUT_MARKER).is_file()
    rels = [it.rel for it in find_images([str(root)], exclude=[root / "edits"])]
    assert rels == ["a.png", "other/d.png", "sub/b.png"]  # marked and excluded folders left out, whole
    assert [it.rel for it in find_images([str(root / "inv")])] == ["a.png", "deep/c.png"]  # named: read
    assert [it.rel for it in find_images([str(root / "*")])] == ["a.png", "edits/a.png", "other/d.png", "sub/b.png"]
    assert [it.rel for it in find_images([str(root / "**" / "*.png")])] == \
        ["a.png", "edits/a.png", "other/d.png", "sub/b.png"]
