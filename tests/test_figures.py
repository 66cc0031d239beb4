"""Qualitative figure (wagi.figures, scripts/qualitative_grid.py): detail boxes, crop errors, layout, errors."""
import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import load_script
from wagi import figures
from wagi.data.demo_faces import TEST_SEED_OFFSET, render_from_attributes, sample_attributes, write_demo_dataset
from wagi.figures import (
    FigureInputError,
    box_mse,
    crop_window,
    detail_boxes,
    fixed_boxes,
    grid_layout,
    qualitative_grid,
)
from wagi.imageio import find_images, load_image, save_image

torch.set_num_threads(1)

SIZE = 128
# Held-out seeds 1000031..33: text on clothing + glasses + drop earrings; text + glasses; no text.
OFFSET = TEST_SEED_OFFSET + 31
N_FACES = 3
STEP = 4  # 8-bit levels: the 'shifted' method differs from the GT by exactly this much at every pixel
LEVEL = 2.0 / 255.0  # one 8-bit level in [-1, 1] units
LEAK = 8  # 8-bit levels: the downsampling filter spreads a drawn detail a little beyond its box
DETAILS = {"text": "has_text", "eyes": "has_glasses", "ears": "has_earrings", "necklace": "has_necklace"}

qg = load_script("qualitative_grid")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """gt/ (demo faces + labels.jsonl), nolabels/ (same PNGs), methods noisy/, shifted/, same/."""
    root = tmp_path_factory.mktemp("qual")
    write_demo_dataset(root / "gt", N_FACES, SIZE, seed_offset=OFFSET, labels=True, progress=False)
    shutil.copytree(root / "gt", root / "nolabels", ignore=shutil.ignore_patterns("*.jsonl"))
    g = torch.Generator().manual_seed(0)
    for item in find_images(root / "gt"):
        x = load_image(item.path, None)
        save_image(x + 0.05 * torch.randn(x.shape, generator=g), root / "noisy" / item.rel)
        u8 = np.asarray(Image.open(item.path)).astype(np.int16)
        shifted = np.where(u8 + STEP <= 255, u8 + STEP, u8 - STEP).astype(np.uint8)  # |diff| = STEP everywhere
        (root / "shifted").mkdir(exist_ok=True)
        Image.fromarray(shifted).save(root / "shifted" / item.rel)
        save_image(x, root / "same" / item.rel)
    return root


def _methods(root, *names):
    return {n: root / n for n in names}


# ------------------------------------------------------------------------------------------------
# Boxes
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(TEST_SEED_OFFSET, TEST_SEED_OFFSET + 12))
def test_detail_boxes_inside_image_and_cover_the_details(seed):
    attrs = sample_attributes(seed)
    boxes = detail_boxes(attrs, SIZE)
    assert set(boxes) == set(figures.CROP_NAMES)
    for x0, y0, x1, y1 in boxes.values():
        assert 0 <= x0 <= x1 <= SIZE and 0 <= y0 <= y1 <= SIZE
    for name in ("eyes", "ears", "necklace"):
        x0, y0, x1, y1 = boxes[name]
        assert x1 - x0 >= 4 and y1 - y0 >= 4
    on = np.asarray(render_from_attributes(attrs, SIZE), dtype=np.float64)
    for crop, flag in DETAILS.items():
        if not attrs[flag]:
            continue
        # The renderer keeps every other part bit-identical when one detail is switched off, so the
        # changed pixels are exactly that detail (plus the filter's spread).
        off = np.asarray(render_from_attributes({**attrs, flag: False}, SIZE), dtype=np.float64)
        diff = np.abs(on - off).max(-1)
        if crop == "ears":
            diff[:, int(attrs["head_cx"] * SIZE):] = 0  # the box holds the left ear; the right one mirrors it
        if diff.sum() == 0:
            continue  # detail hidden (an earring behind long hair)
        x0, y0, x1, y1 = boxes[crop]
        inside = np.zeros(diff.shape, bool)
        inside[y0:y1, x0:x1] = True
        assert diff[~inside].max() <= LEAK, (crop, seed)
        assert diff[inside].sum() >= 0.95 * diff.sum(), (crop, seed)


def test_text_box_has_more_variance_than_skin(data):
    attrs = sample_attributes(OFFSET)
    assert attrs["has_text"] and not attrs["text_on_badge"]
    img = np.asarray(Image.open(data / "gt" / "000000.png"), dtype=np.float64)
    x0, y0, x1, y1 = detail_boxes(attrs, SIZE)["text"]
    assert (x1 - x0) * (y1 - y0) >= 100
    text_var = img[y0:y1, x0:x1].reshape(-1, 3).var(0).mean()
    rx, ry = attrs["head_rx"], attrs["head_rx"] * attrs["head_aspect"]
    cx, cy = int((attrs["head_cx"] + 0.55 * rx) * SIZE), int((attrs["head_cy"] + 0.3 * ry) * SIZE)  # a cheek
    skin = img[cy - 3:cy + 3, cx - 3:cx + 3].reshape(-1, 3)
    assert skin.var(0).mean() < 1.0  # flat skin
    assert text_var > 1000.0  # light letters on a darker shirt


def test_fixed_boxes_and_crop_window():
    assert fixed_boxes(100) == {"text": (33, 80, 67, 99), "eyes": (26, 33, 74, 50),
                                "ears": (20, 35, 37, 54), "necklace": (32, 67, 68, 84)}
    assert crop_window((10, 10, 20, 14), 128, 3) == (0, 0, 43, 43)  # 43 = ceil(128 / 3), shifted inside
    assert crop_window((60, 60, 70, 70), 128, 4) == (49, 49, 81, 81)  # centred: (130 - 32) / 2
    assert crop_window((0, 100, 60, 120), 128, 4) == (0, 68, 60, 128)  # the box is larger than 128 / 4
    with pytest.raises(ValueError, match="zoom"):
        crop_window((0, 0, 1, 1), 128, 0.5)


def test_box_mse_is_mean_square_in_the_box():
    x = torch.zeros(3, 8, 8)
    y = torch.zeros(3, 8, 8)
    y[:, 2:4, 2:6] = 0.5  # 24 values of 0.25 out of the 3 * 4 * 4 = 48 of the box
    assert box_mse(x, y, (2, 2, 6, 6)) == pytest.approx(0.125, abs=1e-15)
    assert box_mse(x, y, (0, 0, 2, 2)) == 0.0
    with pytest.raises(ValueError, match="empty"):
        box_mse(x, y, (3, 3, 3, 5))


# ------------------------------------------------------------------------------------------------
# Figure
# ------------------------------------------------------------------------------------------------
def test_crop_errors_equal_hand_computation(data):
    fig = qualitative_grid(data / "gt", _methods(data, "noisy", "shifted", "same"), n=N_FACES, zoom=3)
    assert [r.key for r in fig.rows] == ["000000", "000001", "000002"]
    for row in fig.rows:
        attrs = sample_attributes(OFFSET + int(row.key))
        assert row.source == "labels"
        boxes = detail_boxes(attrs, SIZE)
        assert list(row.windows) == (["text", "eyes", "ears"] if attrs["has_earrings"] or not attrs["has_necklace"]
                                     else ["text", "eyes", "necklace"])
        gt = np.asarray(Image.open(data / "gt" / f"{row.key}.png"), dtype=np.float64) / 127.5 - 1
        noisy = np.asarray(Image.open(data / "noisy" / f"{row.key}.png"), dtype=np.float64) / 127.5 - 1
        for crop, (x0, y0, x1, y1) in row.windows.items():
            assert (x0, y0, x1, y1) == crop_window(boxes[crop], SIZE, 3)
            bx0, by0, bx1, by1 = boxes[crop]
            assert x0 <= bx0 and y0 <= by0 and x1 >= bx1 and y1 >= by1
            hand = ((gt[y0:y1, x0:x1] - noisy[y0:y1, x0:x1]) ** 2).mean()
            assert row.errors["noisy"][crop] == pytest.approx(hand, rel=1e-6)
            assert row.errors["shifted"][crop] == pytest.approx((STEP * LEVEL) ** 2, rel=1e-5)
            assert row.errors["same"][crop] == 0.0


def test_png_size_pixels_and_determinism(data):
    methods = _methods(data, "noisy", "same")
    fig = qualitative_grid(data / "gt", methods, n=N_FACES)
    # 3 blocks (GT + 2 methods) of 1 + 3 tiles, 3 rows: the layout formula written out
    fixed = figures.MARGIN_LEFT + figures.MARGIN_RIGHT + 3 * 3 * figures.CROP_GAP + 2 * figures.BLOCK_GAP
    tile = min(figures.MAX_TILE, (1600 - fixed) // 12)
    width = fixed + 12 * tile
    height = figures.HEADER + 3 * (tile + figures.LABEL_STRIP) + 2 * figures.ROW_GAP + figures.FOOTER
    assert (fig.layout.tile, fig.layout.width, fig.layout.height) == (tile, width, height) == (126, 1600, 486)
    png = Image.open(io.BytesIO(fig.png))
    assert png.size == (width, height)
    arr = np.asarray(png.convert("RGB"))
    # The crops are nearest-neighbour copies of the GT pixels: check the first crop of the first row.
    row = fig.rows[0]
    crop, (x0, y0, x1, y1) = next(iter(row.windows.items()))
    gt = np.asarray(Image.open(data / "gt" / f"{row.key}.png"))
    tx, ty = fig.layout.tile_x(0, 1), fig.layout.row_y(0)
    inner = slice(figures.FRAME_PX, tile - figures.FRAME_PX)
    src = ((np.arange(tile) + 0.5) * (x1 - x0) // tile).astype(int)
    expected = gt[y0 + src][:, x0 + src][inner, inner]
    np.testing.assert_array_equal(arr[ty:ty + tile, tx:tx + tile][inner, inner], expected)
    assert tuple(arr[ty, tx]) == figures.CROP_COLOURS[crop]  # the frame
    again = qualitative_grid(data / "gt", methods, n=N_FACES)
    assert again.png == fig.png
    narrow = qualitative_grid(data / "gt", methods, n=1, max_width=800)
    assert Image.open(io.BytesIO(narrow.png)).size == (narrow.layout.width, narrow.layout.height)
    assert narrow.layout.width <= 800


def test_attributes_from_seed_or_fixed_boxes(data):
    with_labels = qualitative_grid(data / "gt", _methods(data, "same"), n=N_FACES)
    from_seed = qualitative_grid(data / "nolabels", _methods(data, "same"), n=N_FACES, seed_offset=OFFSET)
    assert [r.source for r in from_seed.rows] == ["seed"] * N_FACES
    assert [r.windows for r in from_seed.rows] == [r.windows for r in with_labels.rows]
    lines = []
    wrong = qualitative_grid(data / "nolabels", _methods(data, "same"), names=["000000"],
                             seed_offset=OFFSET + 1, zoom=2, log=lines.append)
    assert wrong.rows[0].source == "fixed"
    assert wrong.rows[0].windows == {c: crop_window(b, SIZE, 2) for c, b in fixed_boxes(SIZE).items()
                                     if c in ("text", "eyes", "ears")}
    assert len(lines) == 1 and "000000" in lines[0] and "fixed boxes" in lines[0]


def test_automatic_choice_prefers_text_and_accessories(data):
    fig = qualitative_grid(data / "gt", _methods(data, "same"), n=2)
    assert [r.key for r in fig.rows] == ["000000", "000001"]  # both have text; 000002 has none
    fig = qualitative_grid(data / "gt", _methods(data, "same"), names=["000002.png", "000000"], crops="eyes,necklace")
    assert [r.key for r in fig.rows] == ["000002", "000000"]
    assert [list(r.windows) for r in fig.rows] == [["eyes", "necklace"]] * 2


# ------------------------------------------------------------------------------------------------
# Errors and the CLI
# ------------------------------------------------------------------------------------------------
def test_errors(data, tmp_path):
    same = _methods(data, "same")
    with pytest.raises(FigureInputError, match="ground-truth folder .*nowhere not found"):
        qualitative_grid(tmp_path / "nowhere", same)
    with pytest.raises(FigureInputError, match="method x: folder .*absent not found"):
        qualitative_grid(data / "gt", {"x": tmp_path / "absent"})
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(data / "same" / "000000.png", partial / "000000.png")
    with pytest.raises(FigureInputError, match=r"method part \(.*\) has no image for 000001.png$"):
        qualitative_grid(data / "gt", {"part": partial}, names=["000000", "000001"])
    with pytest.raises(FigureInputError, match="unknown crop name.*'nose'"):
        qualitative_grid(data / "gt", same, crops="text,nose")
    with pytest.raises(FigureInputError, match="000099 not in the ground-truth folder"):
        qualitative_grid(data / "gt", same, names=["000099"])
    with pytest.raises(FigureInputError, match="do not fit 300 px"):
        qualitative_grid(data / "gt", same, n=1, max_width=300)
    with pytest.raises(FigureInputError, match="tiles would be"):
        grid_layout(1, 12, 3)


def test_cli_writes_png_and_reports_errors(data, tmp_path, capsys):
    out = tmp_path / "fig.png"
    args = ["--gt", str(data / "gt"), "--method", f"noisy={data / 'noisy'}", "--output", str(out), "--n", "2"]
    assert qg.main(args) == 0
    printed = capsys.readouterr().out
    assert "| 000000 | noisy | text " in printed
    img = Image.open(out)
    layout = grid_layout(2, 2, 3)
    assert img.size == (layout.width, layout.height)
    assert qg.main(args) == 2  # exists, no --overwrite
    assert "output file exists" in capsys.readouterr().err
    assert qg.main(args + ["--overwrite", "--names", "000001,000005"]) == 2
    assert "000005 not in the ground-truth folder" in capsys.readouterr().err
    other = tmp_path / "other.png"
    assert qg.main(["--gt", str(data / "gt"), "--method", f"m={tmp_path / 'none'}", "--output", str(other)]) == 2
    assert "method m: folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        qg.main(args + ["--crops", "text,mouth"])
    assert e.value.code == 2
    assert "unknown crop name(s) 'mouth'" in capsys.readouterr().err
    target = data / "gt" / "000000.png"
    before = target.read_bytes()
    assert qg.main(["--gt", str(data / "gt"), "--method", f"same={data / 'same'}", "--output", str(target),
                    "--names", "000000", "--overwrite"]) == 2
    assert "refusing to write onto the input image" in capsys.readouterr().err
    assert target.read_bytes() == before
