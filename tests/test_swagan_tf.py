"""Official TensorFlow SWAGAN pickles converted by ``scripts/convert_weights.py --format swagan-tf``.

The golden files in ``tests/data/swagan_tf`` were written by ``scripts/dev/make_swagan_tf_golden.py``
with the official code (rinongal/swagan) under tensorflow-cpu: small networks at 8, 16 and 32 px with
random non-trivial weights, pickled the official way, and the official outputs for given z (psi 1 and
the default 0.5), a given W+ and the stored noise. TensorFlow is not needed here.
"""
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import load_script, tiny_wagi
from wagi import swagan_tf as st
from wagi import wavelets
from wagi.checkpoint import load_generator

DATA = Path(__file__).parent / "data" / "swagan_tf"
RESOLUTIONS = (8, 16, 32)
TOLERANCE = 1e-3  # the required bound, in [-1, 1] image units; the measured error is ~3e-6
MISMATCH = 1e-2  # a conversion without one of its steps is off by far more than this


def pkl(res, kind=""):
    return DATA / f"swagan_r{res}{kind}.pkl"


def golden(res):
    return dict(np.load(DATA / f"swagan_r{res}_golden.npz"))


def convert(tmp_path, res=32, kind="", skip=()):
    out = tmp_path / f"g{res}{kind}.pt"
    st.convert_official_pickle(pkl(res, kind), out, skip=skip)
    return out


# ------------------------------------------------------------------ faithful conversion
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("res", RESOLUTIONS)
def test_converted_checkpoint_reproduces_the_official_network(tmp_path, res, fused):
    out = convert(tmp_path, res)
    generator, latent_avg, info = load_generator(out)  # strict load of the written file
    generator.set_fused_modconv(fused)  # both evaluations of the modulated convs
    assert info["format"] == "wagi" and info["latent_avg_source"] == "checkpoint"
    assert generator.size == res and generator.n_latent == 2 * int(np.log2(res)) - 4
    assert generator.config["to_rgb_kernel"] == 3
    gold = golden(res)
    assert gold["wplus"].shape[1] == generator.n_latent + 2  # the official W+ has two unread rows
    errs = st.compare_with_golden(generator, latent_avg, gold)
    assert max(errs.values()) < TOLERANCE, errs
    assert max(np.abs(gold[k]).max() for k in gold if k.startswith("images")) > 1  # non-trivial images
    raw = torch.load(out, weights_only=True)
    assert raw["converted_from"]["sha256"] and raw["converted_from"]["format"] == "swagan-tf"
    assert raw["config"]["generator"]["to_rgb_kernel"] == 3


@pytest.mark.parametrize("step", st.CONVERSION_STEPS)
def test_each_conversion_step_is_needed(tmp_path, step):
    # 32 px: two up-sampling blocks, so every step has something to change.
    out = convert(tmp_path, 32, skip=(step,))
    generator, latent_avg, _ = load_generator(out, compute_latent_avg=True)
    errs = st.compare_with_golden(generator, latent_avg, golden(32))
    assert max(errs.values()) > MISMATCH, (step, errs)


def test_unknown_conversion_step_is_refused():
    with pytest.raises(ValueError, match="unknown conversion steps"):
        st.convert_generator(st.read_official_pickle(pkl(8)), skip=("no_such_step",))


def test_the_moving_average_gs_is_converted_not_g():
    nets = st.read_official_pickle(pkl(16))
    assert st.find_generator(nets) is nets[2] and nets[2].name == "Gs"
    g_errs = st.compare_with_golden(*st.convert_generator(nets[0])[:2], golden(16))
    assert max(g_errs.values()) > MISMATCH  # the training network G has other weights (golden script)


def test_official_haar_convention_is_the_band_scale_times_ours():
    # The official transform, written from its definition: x1..x4 = (even, even), (odd, even), (even, odd),
    # (odd, odd) rows/columns of each 2x2 block; unnormalised sums and differences.
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    x1, x2, x3, x4 = x[..., 0::2, 0::2], x[..., 1::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 1::2]
    official = torch.cat([x1 + x2 + x3 + x4, -x1 - x3 + x2 + x4, -x1 + x3 - x2 + x4, x1 - x3 - x2 + x4], 1)
    scale = torch.tensor(st.OFFICIAL_BAND_SCALE, dtype=x.dtype).repeat_interleave(3).view(1, 12, 1, 1)
    torch.testing.assert_close(official, scale * wavelets.dwt(x))


def test_stored_source_is_never_executed(tmp_path):
    trap = st.read_official_pickle(pkl(8, "_trap"))
    sources = [net.build_module_src for net in (*trap, *trap[2].components.values())]
    assert sources and all("raise RuntimeError" in s for s in sources)
    with pytest.raises(RuntimeError, match="stored build_module_src was executed"):
        exec(sources[0], {})  # armed: the official unpickler would raise here
    generator, latent_avg, _ = load_generator(convert(tmp_path, 8, "_trap"))
    assert max(st.compare_with_golden(generator, latent_avg, golden(8)).values()) < TOLERANCE


# ------------------------------------------------------------------ the script and its one-line errors
SCRIPT = load_script("convert_weights")


def run_script(tmp_path, src, capsys, *extra):
    out = tmp_path / "out.pt"
    code = SCRIPT.main(["--format", "swagan-tf", "--input", str(src), "--output", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, out


def test_script_converts_and_refuses_to_overwrite(tmp_path, capsys):
    code, out, err, path = run_script(tmp_path, pkl(16), capsys)
    assert code == 0 and err == ""
    assert "to_rgb_kernel: 3" in out and "psi 0.5" in out
    assert load_generator(path)[0].size == 16
    code, _, err, _ = run_script(tmp_path, pkl(16), capsys)
    assert code == 1 and "--overwrite" in err
    assert run_script(tmp_path, pkl(16), capsys, "--overwrite")[0] == 0


class _FakeNetwork:
    """A network state to pickle; the fixture's subclass pickles under the official class name."""

    def __init__(self, state):
        self.state = state

    def __getstate__(self):
        return self.state


@pytest.fixture
def official_like(monkeypatch):
    """``write(path, obj)``: pickle ``obj`` with _FakeNetwork named as the official dnnlib class."""
    for name in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"):  # pickle imports the package chain
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    network = type("Network", (_FakeNetwork,), {"__module__": "dnnlib.tflib.network"})
    sys.modules["dnnlib.tflib.network"].Network = network

    def fake(net):
        return network({"version": net.state_version, "name": net.name, "static_kwargs": net.static_kwargs,
                             "components": {k: fake(v) for k, v in net.components.items()},
                             "build_module_src": net.build_module_src, "build_func_name": net.build_func_name,
                             "variables": list(net.variables.items())})

    def write(path, nets):
        path.write_bytes(pickle.dumps(tuple(fake(n) for n in nets), protocol=4))
        return path
    return write


def one_line_error(tmp_path, src, capsys):
    code, _, err, out = run_script(tmp_path, src, capsys)
    assert code == 1 and not out.exists()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_error_not_a_pickle(tmp_path, capsys):
    src = tmp_path / "image.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    assert "is not a readable pickle" in one_line_error(tmp_path, src, capsys)


def test_error_class_outside_the_allow_list_is_named_and_not_called(tmp_path, capsys):
    marker = tmp_path / "ran"
    src = tmp_path / "evil.pkl"  # os.system("touch <marker>") when unpickled the ordinary way
    src.write_bytes(b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR.")
    err = one_line_error(tmp_path, src, capsys)
    assert "os.system" in err and "allow-list" in err and not marker.exists()
    src.write_bytes(pickle.dumps(types.SimpleNamespace(a=1)))
    assert "types.SimpleNamespace" in one_line_error(tmp_path, src, capsys)
    src.write_bytes(pickle.dumps({"G": 1}))
    assert "not the official (G, D, Gs) tuple" in one_line_error(tmp_path, src, capsys)


def test_error_plain_stylegan2_pickle(tmp_path, capsys, official_like):
    G, D, Gs = st.read_official_pickle(pkl(8))
    Gs.components["synthesis"].build_func_name = "G_synthesis_stylegan2"
    Gs.components["synthesis"].static_kwargs["architecture"] = "skip"
    err = one_line_error(tmp_path, official_like(tmp_path / "sg2.pkl", (G, D, Gs)), capsys)
    assert "plain StyleGAN2 generator" in err and "G_synthesis_stylegan2" in err and "not a SWAGAN synthesis" in err


def test_error_missing_and_misshapen_variables_are_named(tmp_path, capsys, official_like):
    G, D, Gs = st.read_official_pickle(pkl(32))
    synthesis = Gs.components["synthesis"]
    del synthesis.variables["16x16/Conv1/weight"]
    del Gs.components["mapping"].variables["Dense1/bias"]
    err = one_line_error(tmp_path, official_like(tmp_path / "missing.pkl", (G, D, Gs)), capsys)
    assert "misses variables" in err and "16x16/Conv1/weight" in err and "G_mapping/Dense1/bias" in err

    G, D, Gs = st.read_official_pickle(pkl(32))
    synthesis = Gs.components["synthesis"]
    synthesis.variables["8x8/Conv1/mod_bias"] = np.zeros(5, np.float32)
    synthesis.variables["16x16/ToWavelet/bias"] = np.zeros(9, np.float32)
    err = one_line_error(tmp_path, official_like(tmp_path / "shapes.pkl", (G, D, Gs)), capsys)
    assert "misshapen variables" in err and "16x16/ToWavelet/bias (9,)" in err

    G, D, Gs = st.read_official_pickle(pkl(32))
    Gs.components["synthesis"].variables["8x8/Conv1/mod_bias"] = np.zeros(5, np.float32)
    err = one_line_error(tmp_path, official_like(tmp_path / "shapes2.pkl", (G, D, Gs)), capsys)
    assert "misshapen variables 8x8/Conv1/mod_bias (5,)" in err

    G, D, Gs = st.read_official_pickle(pkl(8))
    del Gs.variables["dlatent_avg"]
    assert "dlatent_avg" in one_line_error(tmp_path, official_like(tmp_path / "avg.pkl", (G, D, Gs)), capsys)


def test_numpy_1_array_pickles_are_allowed(tmp_path):
    # Official files were written with numpy 1.x, which names numpy.core.multiarray (numpy 2: numpy._core).
    data = pickle.dumps(np.arange(6, dtype=np.float32).reshape(2, 3), protocol=3).replace(
        b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"cnumpy.core.multiarray\n_reconstruct" in data
    (tmp_path / "a.pkl").write_bytes(data)
    np.testing.assert_array_equal(st.read_official_pickle(tmp_path / "a.pkl"), np.arange(6).reshape(2, 3))


# ------------------------------------------------------------------ configs
def test_configs_accept_the_converted_checkpoint(tmp_path):
    ckpt = convert(tmp_path, 32)
    keys = ["generator.size=32", "generator.style_dim=16", "generator.n_mlp=3"]
    with pytest.raises(ValueError, match="set generator.to_rgb_kernel: 3"):
        tiny_wagi(f"generator.ckpt={ckpt}", *keys)
    with pytest.raises(ValueError, match="generator.style_dim is 32 in this config but 16"):
        tiny_wagi(f"generator.ckpt={ckpt}", "generator.size=32", "generator.to_rgb_kernel=3")
    with pytest.raises(ValueError, match=r"set generator.channels: \{4: 8, 8: 8, 16: 4\}"):  # the file's widths
        tiny_wagi(f"generator.ckpt={ckpt}", *keys, "generator.to_rgb_kernel=3")
    keys.append("generator.channels={4: 8, 8: 8, 16: 4}")
    m = tiny_wagi(f"generator.ckpt={ckpt}", *keys, "generator.to_rgb_kernel=3")
    generator, latent_avg, _ = load_generator(ckpt)
    torch.testing.assert_close(m.latent_avg, latent_avg.expand(generator.n_latent, -1))  # W+ rows
    w = torch.randn(1, generator.n_latent, 16)
    with torch.no_grad():
        torch.testing.assert_close(m.decode(w), generator([w], input_is_latent=True, randomize_noise=False)[0])


def official_ffhq_network(resolution=1024, fmap_base=16 << 10, fmap_max=512, latent=512, mapping_layers=8):
    """An official Gs with the variable names and shapes of the FFHQ configuration (config-f), all zeros.

    Shapes follow the official ``nf(stage) = min(fmap_base / 2**stage, fmap_max)`` with stage = log2(r) - 1;
    the arrays are zero-stride views, so the 1024 px network costs no memory until converted.
    """
    def zeros(*shape):
        return np.broadcast_to(np.float32(0), shape)

    def nf(r):
        return int(min(fmap_base / 2 ** (np.log2(r) - 1), fmap_max))

    def net(name, func, variables, components=None, **kwargs):
        n = st.OfficialNetwork()
        n.__setstate__({"version": 4, "name": name, "build_func_name": func, "build_module_src": "",
                        "static_kwargs": {"resolution": resolution, "architecture": "wavelets", **kwargs},
                        "components": components or {}, "variables": list(variables.items())})
        return n

    mapping = {}
    for i in range(mapping_layers):
        mapping[f"Dense{i}/weight"], mapping[f"Dense{i}/bias"] = zeros(latent, latent), zeros(latent)
    syn = {f"noise{j}": zeros(1, 1, 2 ** ((j + 5) // 2), 2 ** ((j + 5) // 2))
           for j in range(2 * int(np.log2(resolution)) - 3)}
    syn["4x4/Const/const"] = zeros(1, nf(4), 4, 4)

    def layer(scope, cin, cout, k=3, noise=True):
        syn.update({f"{scope}/weight": zeros(k, k, cin, cout), f"{scope}/mod_weight": zeros(latent, cin),
                    f"{scope}/mod_bias": zeros(cin), f"{scope}/bias": zeros(cout)})
        if noise:
            syn[f"{scope}/noise_strength"] = zeros()

    layer("4x4/Conv", nf(4), nf(4))
    layer("4x4/ToWavelet", nf(4), 12, noise=False)
    for r in (2 ** i for i in range(3, int(np.log2(resolution)))):
        layer(f"{r}x{r}/Conv0_up", nf(r // 2), nf(r))
        layer(f"{r}x{r}/Conv1", nf(r), nf(r))
        layer(f"{r}x{r}/ToWavelet", nf(r), 12, noise=False)
    components = {"synthesis": net("G_synthesis", st.SYNTHESIS_FUNC, syn),
                  "mapping": net("G_mapping", "G_mapping", mapping)}
    return net("Gs", "G_main", {"dlatent_avg": zeros(latent), "lod": zeros()}, components)


@pytest.mark.parametrize("name", ["wagi_ffhq1024_encoder", "wagi_ffhq1024"])
def test_paper_configs_describe_the_converted_ffhq_generator(name):
    from wagi.builders import check_generator_config
    from wagi.config import load_config

    generator, latent_avg, info = st.convert_generator(official_ffhq_network())
    kw = info["generator_kwargs"]
    assert (generator.n_latent, len(generator.state_dict()), latent_avg.shape) == (16, 213, (1, 512))
    written = {"size": 1024, "style_dim": 512, "n_mlp": 8, "to_rgb_kernel": 3, "channel_multiplier": 2}
    assert {k: kw[k] for k in written} == written and kw["channels"] is None  # rosinality's table, cm 2
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml", check_paths=False)
    assert cfg.generator.ckpt == "pretrained/swagan_ffhq1024.pt"
    check_generator_config(cfg.generator, {"generator": written}, "the converted file")  # what convert writes
