"""scripts/benchmark.py: --quick labels the shapes it runs and reports progress as it goes; --rosinality
imports a checkout of rosinality/stylegan2-pytorch without sys.path edits and compares its SWAGAN with ours.
No timing is asserted (figures go to docs/performance.md)."""
import json
import sys

import pytest
import torch

from tests.helpers import load_script

BENCH = load_script("benchmark")

# A stand-in checkout: the same file layout as rosinality/stylegan2-pytorch. Its ``op`` package fails to
# build like theirs does without a CUDA toolkit; its swagan.py imports what theirs imports (``op`` names and
# ``model``) and defines the Generator with rosinality's key names, here WaGI's own class.
FAKE_FILES = {
    "op/__init__.py": "raise RuntimeError('Ninja is required to load C++ extensions')\n",
    "op/conv2d_gradfix.py": "import torch.nn.functional as F\nconv2d = F.conv2d\nMARK = 'their gradfix'\n",
    "model.py": "from op import FusedLeakyReLU, fused_leaky_relu, upfirdn2d, conv2d_gradfix\nLOADED = True\n",
    "swagan.py": (
        "from op import FusedLeakyReLU, fused_leaky_relu, upfirdn2d, conv2d_gradfix\n"
        "from model import LOADED\n"
        "from wagi.models.swagan import Generator as _G\n"
        "GRADFIX = conv2d_gradfix.MARK\n"
        "class Generator(_G):\n"
        "    def __init__(self, size, style_dim, n_mlp, channel_multiplier=2, blur_kernel=(1, 3, 3, 1), lr_mlp=0.01):\n"
        "        super().__init__(size, style_dim, n_mlp, channel_multiplier, lr_mlp=lr_mlp)\n"
    ),
}


@pytest.fixture()
def fake_checkout(tmp_path):
    for rel, text in FAKE_FILES.items():
        path = tmp_path / "stylegan2-pytorch" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "stylegan2-pytorch"


def test_quick_ops_labels_are_the_shapes_run_and_progress_is_printed(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert BENCH.main(["--quick", "--only", "ops", "--device", "cpu", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    res = json.loads(out.read_text())
    cases = [row["case"] for row in res["results"]["ops"]]
    assert cases == ["upsample x2 (2,64,32,32) k4", "blur pad (2,32,65,65) k4", "downsample x2 (2,32,64,64) k4",
                     "skip upsample (2,3,128,128) k4", "bias+lrelu (2,64,32,32)", "bias+lrelu (2,8,128,128)"]
    assert all(row["ref_ms"] > 0 for row in res["results"]["ops"])
    progress = [ln for ln in captured.err.splitlines() if ln.startswith("[ops]")]
    assert len(progress) == 8  # "CUDA not available", one line per case and the total, on stderr
    assert "| upfirdn2d | upsample x2 (2,64,32,32) k4 |" in captured.out  # the table on stdout
    assert res["seconds"] > 0


def test_rosinality_checkout_runs_on_our_ops_when_theirs_do_not_build(fake_checkout, capsys):
    before = set(sys.modules)
    rows = BENCH.bench_generator(torch.device("cpu"), quick=True, sizes=[8], rosinality=fake_checkout)
    (row,) = rows
    assert row["size"] == 8 and row["channels"] == "rosinality's (cm 2)"  # full table: their class has no cap
    assert row["rosinality_rel_err"] == 0.0  # same weights, latents and noise through the same layers
    assert row["rosinality_fwd_fp32_ms_per_img"] > 0 and row["ours_vs_rosinality"] > 0
    assert row["rosinality_ops"].startswith("WaGI's ops (theirs did not build: Ninja is required")
    assert "op" not in sys.modules and "swagan" not in sys.modules and "model" not in sys.modules
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in ("op", "model", "swagan")}
    assert "rosinality's SWAGAN 8x8" in capsys.readouterr().err


def test_rosinality_module_loading_restores_modules_and_uses_their_gradfix(fake_checkout):
    sentinel = object()
    sys.modules["model"] = sentinel  # a user's own module of that name survives the benchmark
    try:
        with BENCH.rosinality_modules(fake_checkout) as (swagan, ops_used):
            assert swagan.GRADFIX == "their gradfix" and "did not build" in ops_used
            assert sys.modules["model"] is not sentinel
        assert sys.modules["model"] is sentinel
    finally:
        sys.modules.pop("model", None)


def test_bad_arguments_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        BENCH.main(["--rosinality", str(tmp_path), "--only", "generator", "--device", "cpu"])
    assert exc.value.code == 2
    assert "not a checkout of rosinality/stylegan2-pytorch (missing swagan.py" in capsys.readouterr().err
    for bad in (["--sizes", "64,abc"], ["--sizes", "100"], ["--only", "nope"]):
        with pytest.raises(SystemExit) as exc:
            BENCH.main(bad + ["--device", "cpu"])
        assert exc.value.code == 2


def test_profile_table_of_the_generator_forward(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert BENCH.main(["--quick", "--only", "generator", "--device", "cpu", "--sizes", "16", "--profile", "5",
                       "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]["generator"]
    table = row["profile"]
    assert 1 <= len(table) <= 5 and row["profile_precision"] == "fp32"
    shares = [r["share"] for r in table]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    assert all(r["name"] and r["calls"] > 0 and r["self_ms"] > 0 for r in table)
    assert any("conv" in r["name"] for r in table)  # the convolutions are among the top operators
    printed = capsys.readouterr().out
    assert "## generator profile (size 16, batch 4, fp32; per call)" in printed
    assert f"| {table[0]['name']} |" in printed and "| profile |" not in printed  # its own table, not a column


def test_profile_needs_a_non_negative_row_count(capsys):
    with pytest.raises(SystemExit) as exc:
        BENCH.main(["--quick", "--only", "generator", "--device", "cpu", "--profile", "-1"])
    assert exc.value.code == 2 and "--profile" in capsys.readouterr().err
