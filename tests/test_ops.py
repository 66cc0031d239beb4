"""CPU tests of wagi.ops: reference ops against naive computations, gradients of the autograd Functions
used on the CUDA path (run here with the reference as their forward), the WAGI_OPS_IMPL switch, the
lazy build (nothing at import) and the build-cache helpers."""
import itertools
import os
import subprocess
import sys
import textwrap
import threading
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import wagi.ops as ops
from wagi.ops import _plugin
from wagi.ops.bias_act import REF_IMPL, _FusedLeakyReLUFn
from wagi.ops.upfirdn2d import Geometry, _geometry, _grad_geometry, _upfirdn2d_ref, _UpFirDn2dFn, output_size

BLUR = np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0]) / 64.0  # rosinality make_kernel([1, 3, 3, 1])


# ---------------------------------------------------------------------------------------------------------
# naive references
# ---------------------------------------------------------------------------------------------------------
def _xy(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def naive_upfirdn2d(x, k, up=1, down=1, pad=(0, 0)):
    """Zero insertion, pad/crop, true convolution (flipped kernel), decimation; explicit index loops."""
    upx, upy = _xy(up)
    downx, downy = _xy(down)
    px0, px1, py0, py1 = (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else pad
    n, c, h, w = x.shape
    kh, kw = k.shape
    z = np.zeros((n, c, h * upy, w * upx))
    for i in range(h):
        for j in range(w):
            z[:, :, i * upy, j * upx] = x[:, :, i, j]
    hp, wp = h * upy + py0 + py1, w * upx + px0 + px1
    p = np.zeros((n, c, hp, wp))
    for i in range(hp):
        for j in range(wp):
            si, sj = i - py0, j - px0  # negative pads shift the window inside z: cropping
            if 0 <= si < z.shape[2] and 0 <= sj < z.shape[3]:
                p[:, :, i, j] = z[:, :, si, sj]
    ho, wo = hp - kh + 1, wp - kw + 1
    full = np.zeros((n, c, ho, wo))
    for a in range(kh):
        for b in range(kw):
            full += k[kh - 1 - a, kw - 1 - b] * p[:, :, a:a + ho, b:b + wo]
    return full[:, :, ::downy, ::downx]


def naive_lrelu(x, bias, slope, scale):
    v = x if bias is None else x + bias.reshape(1, -1, *([1] * (x.ndim - 2)))
    return np.where(v > 0, v, v * slope) * scale


def _away_from_zero(shape, generator, margin=0.05):
    """Random fp64 values with |v| >= margin, so finite differences never straddle the ReLU kink."""
    v = torch.rand(shape, generator=generator, dtype=torch.float64) + margin
    sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
    return v * sign


# ---------------------------------------------------------------------------------------------------------
# upfirdn2d reference
# ---------------------------------------------------------------------------------------------------------
UPS = [1, 2, (2, 3)]
DOWNS = [1, 2, (3, 1)]
PADS = [(0, 0), (2, 1), (1, -1, 2, 0), (-1, -1)]
KERNEL_SHAPES = [(4, 4), (3, 2)]


@pytest.mark.parametrize("up,down,pad,kshape", list(itertools.product(UPS, DOWNS, PADS, KERNEL_SHAPES)))
def test_upfirdn2d_ref_matches_naive(up, down, pad, kshape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 7))
    k = rng.standard_normal(kshape)
    want = naive_upfirdn2d(x, k, up, down, pad)
    got = ops.upfirdn2d_ref(torch.from_numpy(x), torch.from_numpy(k), up=up, down=down, pad=pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    # The dispatcher runs the reference on CPU, bit for bit.
    assert torch.equal(ops.upfirdn2d(torch.from_numpy(x), torch.from_numpy(k), up=up, down=down, pad=pad), got)


@pytest.mark.parametrize("size,up,down,pad,kshape", [
    ((1, 1), 3, 1, (1, 1), (3, 3)),        # single pixel
    ((9, 4), 1, 3, (0, 0), (1, 1)),        # pure decimation
    ((6, 5), (1, 2), (2, 1), (0, 1, 1, 0), (1, 4)),
    ((7, 3), 4, 3, (-3, 2, 1, -2), (5, 3)),
    ((8, 8), 2, 1, (2, 1), (4, 4)),        # rosinality Upsample
    ((8, 8), 1, 2, (1, 1), (4, 4)),        # rosinality Downsample
    ((9, 9), 1, 1, (1, 1), (4, 4)),        # Blur after the stride-2 transposed conv
])
def test_upfirdn2d_ref_matches_naive_special(size, up, down, pad, kshape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, *size))
    k = rng.standard_normal(kshape)
    got = ops.upfirdn2d_ref(torch.from_numpy(x), torch.from_numpy(k), up=up, down=down, pad=pad)
    np.testing.assert_allclose(got.numpy(), naive_upfirdn2d(x, k, up, down, pad), rtol=0, atol=1e-12)


def test_upfirdn2d_kernel_is_flipped():
    # A one-hot input reproduces the kernel itself (true convolution), not its mirror image.
    x = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    x[0, 0, 1, 1] = 1
    k = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    out = ops.upfirdn2d_ref(x, k, pad=(2, 2, 1, 1))
    assert torch.equal(out[0, 0, 1:3, 1:4], k)


def test_upsample_of_constant_is_constant():
    # rosinality Upsample: kernel * up^2, pad (2, 1) for the 4-tap kernel; the interior keeps a constant.
    k = torch.from_numpy(BLUR * 4)
    out = ops.upfirdn2d_ref(torch.full((1, 1, 6, 6), 3.0, dtype=torch.float64), k, up=2, pad=(2, 1))
    assert out.shape == (1, 1, 12, 12)
    torch.testing.assert_close(out[..., 2:-2, 2:-2], torch.full((1, 1, 8, 8), 3.0, dtype=torch.float64),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("n,up,down,p0,p1,k", [
    (5, 1, 1, 0, 0, 1), (5, 2, 1, 2, 1, 4), (8, 1, 2, 1, 1, 4), (7, 3, 2, -1, 2, 3), (6, 1, 3, 1, 1, 3),
    (4, 2, 3, 0, -2, 2), (9, 1, 4, 2, 0, 5),
])
def test_output_size_formula(n, up, down, p0, p1, k):
    want = (n * up + p0 + p1 - k) // down + 1
    assert output_size(n, up, down, p0, p1, k) == want
    x = torch.zeros(1, 1, n, n + 1)
    out = ops.upfirdn2d_ref(x, torch.ones(k, k), up=up, down=down, pad=(p0, p1))
    assert out.shape[2:] == (want, output_size(n + 1, up, down, p0, p1, k))


def test_upfirdn2d_bad_input():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="N, C, H, W"):
        ops.upfirdn2d(torch.zeros(4, 4), torch.ones(2, 2))
    with pytest.raises(ValueError, match="2-D kernel"):
        ops.upfirdn2d(x, torch.ones(4))
    with pytest.raises(ValueError, match="pad must have 2 or 4"):
        ops.upfirdn2d(x, torch.ones(2, 2), pad=(1, 2, 3))
    with pytest.raises(ValueError, match="up must be >= 1"):
        ops.upfirdn2d(x, torch.ones(2, 2), up=0)
    with pytest.raises(ValueError, match="down must be an int or an"):
        ops.upfirdn2d(x, torch.ones(2, 2), down=(1, 2, 3))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        ops.upfirdn2d(x, torch.ones(3, 3), pad=(-1, -1))


@pytest.mark.parametrize("up,down,pad,kshape", [
    (2, 1, (2, 1), (4, 4)), (1, 2, (1, 1), (4, 4)), ((2, 1), (1, 3), (1, -1, 0, 2), (3, 2)),
])
def test_upfirdn2d_ref_gradcheck(up, down, pad, kshape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(kshape, generator=g, dtype=torch.float64, requires_grad=True)
    fn = lambda x, k: ops.upfirdn2d_ref(x, k, up=up, down=down, pad=pad)  # noqa: E731
    assert gradcheck(fn, (x, k))
    assert gradgradcheck(fn, (x, k))


# ---------------------------------------------------------------------------------------------------------
# the autograd Function of the CUDA path, with the reference as its forward
# ---------------------------------------------------------------------------------------------------------
FN_CASES = [
    # (size, up, down, pad, kernel shape)
    ((5, 6), 2, 1, (2, 1), (4, 4)),
    ((6, 5), 1, 2, (1, 1), (4, 4)),
    ((5, 5), 1, 1, (1, 1), (4, 4)),
    ((6, 7), 1, 3, (1, 1), (3, 3)),              # (in*up + p0 + p1 - k) not a multiple of down
    ((5, 4), 3, 2, (2, -1, 0, 3), (3, 4)),
    ((7, 6), (2, 1), (1, 2), (-2, 1, 3, -1), (2, 5)),
]


def _ref_forward(x, kernel, g):
    return _upfirdn2d_ref(x, kernel, g)


def _fn(size, up, down, pad, kshape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, *size, generator=gen, dtype=torch.float64, requires_grad=True)
    k = torch.randn(kshape, generator=gen, dtype=torch.float64)
    g = _geometry(x, k, up, down, pad)
    return x, k, g


@pytest.mark.parametrize("size,up,down,pad,kshape", FN_CASES)
def test_upfirdn2d_function_gradients(size, up, down, pad, kshape):
    x, k, g = _fn(size, up, down, pad, kshape)
    fn = lambda x: _UpFirDn2dFn.apply(x, k, g, _ref_forward)  # noqa: E731
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))

    # Same first and second derivatives as autograd through the reference, for an R1-style penalty
    # |d/dx sum(w * tanh(upfirdn2d(x)))|^2, whose gradient runs through the backward of the backward.
    w = torch.randn_like(fn(x))

    def r1(f):
        (gx,) = torch.autograd.grad((torch.tanh(f(x)) * w).sum(), x, create_graph=True)
        (ggx,) = torch.autograd.grad((gx ** 2).sum(), x)
        return gx.detach(), ggx

    gx_fn, ggx_fn = r1(fn)
    gx_ref, ggx_ref = r1(lambda x: ops.upfirdn2d_ref(x, k, up=up, down=down, pad=pad))
    assert ggx_ref.abs().max() > 1e-3
    torch.testing.assert_close(gx_fn, gx_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(ggx_fn, ggx_ref, rtol=0, atol=1e-12)


def test_grad_geometry_restores_input_size():
    # For every geometry the gradient op maps d(out) back to exactly the input size, and applying the
    # rule twice gives an op with the forward's output size.
    for n, up, down, p0, p1, k in itertools.product(range(1, 8), (1, 2, 3), (1, 2, 3), (-2, 0, 1, 3),
                                                    (-1, 0, 2), (1, 2, 4)):
        if n * up + p0 + p1 < k:
            continue
        out = output_size(n, up, down, p0, p1, k)
        g = _grad_geometry(Geometry((up, up), (down, down), (p0, p1, p0, p1)), (n, n), (out, out), (k, k))
        assert g.up == (down, down) and g.down == (up, up)
        assert output_size(out, down, up, g.pad[0], g.pad[1], k) == n
        gg = _grad_geometry(g, (out, out), (n, n), (k, k))
        assert gg.up == (up, up) and gg.pad[0] == p0
        assert output_size(n, up, down, gg.pad[0], gg.pad[1], k) == out


def test_upfirdn2d_function_rejects_kernel_grad():
    x, k, g = _fn((4, 4), 1, 1, (1, 1), (2, 2))
    with pytest.raises(ValueError, match="kernel as a constant"):
        _UpFirDn2dFn.apply(x, k.requires_grad_(), g, _ref_forward)


# ---------------------------------------------------------------------------------------------------------
# bias + leaky ReLU
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 5), (2, 4, 3, 5), (1, 4, 2, 3, 2)])
@pytest.mark.parametrize("slope,scale", [(0.2, 2 ** 0.5), (0.0, 1.0), (0.5, 3.0)])
def test_fused_leaky_relu_ref_matches_naive(shape, slope, scale):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    b = rng.standard_normal(shape[1])
    got = ops.fused_leaky_relu_ref(torch.from_numpy(x), torch.from_numpy(b), slope, scale)
    np.testing.assert_allclose(got.numpy(), naive_lrelu(x, b, slope, scale), rtol=1e-15, atol=0)
    got = ops.fused_leaky_relu(torch.from_numpy(x), None, negative_slope=slope, scale=scale)
    np.testing.assert_allclose(got.numpy(), naive_lrelu(x, None, slope, scale), rtol=1e-15, atol=0)


def test_negative_slope_is_honoured():
    x = torch.tensor([[-2.0, 3.0]])
    assert torch.equal(ops.fused_leaky_relu(x, negative_slope=0.1, scale=1.0), torch.tensor([[-0.2, 3.0]]))
    assert torch.equal(ops.fused_leaky_relu(x, negative_slope=0.0, scale=2.0), torch.tensor([[0.0, 6.0]]))
    act = ops.FusedLeakyReLU(2, negative_slope=0.5, scale=1.0)
    assert torch.equal(act(x), torch.tensor([[-1.0, 3.0]]))


def test_fused_leaky_relu_module():
    act = ops.FusedLeakyReLU(3)
    assert list(act.state_dict()) == ["bias"] and act.bias.shape == (3,)
    with torch.no_grad():
        act.bias.copy_(torch.tensor([0.5, -1.0, 0.0]))
    x = torch.tensor([[[1.0], [0.5], [-2.0]]])  # (1, 3, 1)
    out = act(x)
    want = torch.tensor([[[1.5], [-0.1], [-0.4]]]) * 2 ** 0.5
    torch.testing.assert_close(out, want, rtol=1e-6, atol=0)
    out.sum().backward()
    torch.testing.assert_close(act.bias.grad, torch.tensor([1.0, 0.2, 0.2]) * 2 ** 0.5, rtol=1e-6, atol=0)
    assert list(ops.FusedLeakyReLU(3, bias=False).parameters()) == []


def test_fused_leaky_relu_bad_bias():
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        ops.fused_leaky_relu(torch.zeros(2, 4, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="rank >= 2"):
        ops.fused_leaky_relu(torch.zeros(4), torch.zeros(4))


def test_fused_leaky_relu_ref_gradcheck():
    gen = torch.Generator().manual_seed(3)
    x = _away_from_zero((2, 3, 4), gen).requires_grad_()
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # keeps x + b away from the kink
    fn = lambda x, b: ops.fused_leaky_relu_ref(x, b, 0.3, 1.7)  # noqa: E731
    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("slope,scale", [(0.2, 2 ** 0.5), (0.0, 1.0), (1.5, 0.5), (0.2, -0.7)])
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 2, 3)])
def test_fused_leaky_relu_function_gradients(slope, scale, shape):
    gen = torch.Generator().manual_seed(4)
    x = _away_from_zero(shape, gen).requires_grad_()
    b = torch.zeros(shape[1], dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: _FusedLeakyReLUFn.apply(x, b, slope, scale, REF_IMPL)  # noqa: E731
    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))

    # Two stacked activations with elementwise weights a, c: the R1-style penalty |d loss / dx|^2 has
    # gradients w.r.t. a, c and the biases that run through the backward of the backward.
    a, c, w = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3))
    a.requires_grad_()
    c.requires_grad_()
    b1, b2 = (torch.randn(shape[1], generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))

    def derivatives(f):
        h2 = f(f(x * a, b1) * c, b2)
        (gx,) = torch.autograd.grad((h2 * w).sum(), x, create_graph=True)
        grads = torch.autograd.grad((gx ** 2).sum(), (a, c, b1, b2), allow_unused=True, materialize_grads=True)
        return (h2.detach(), gx.detach()) + grads

    got = derivatives(fn)
    want = derivatives(lambda x, b: ops.fused_leaky_relu_ref(x, b, slope, scale))
    assert want[3].abs().max() > 1e-3  # d penalty / dc is not trivially zero
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def test_fused_leaky_relu_function_without_bias():
    gen = torch.Generator().manual_seed(5)
    x = _away_from_zero((2, 5), gen).requires_grad_()
    fn = lambda x: _FusedLeakyReLUFn.apply(x, None, 0.2, 2 ** 0.5, REF_IMPL)  # noqa: E731
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


# ---------------------------------------------------------------------------------------------------------
# implementation switch, lazy build and build cache
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def fresh_plugin(monkeypatch):
    """Isolated plugin state; a build function that records its calls and fails like nvcc would."""
    saved = dict(_plugin._state)
    _plugin._state.update(module=None, error=None, build_dir=None, source=None, warned=False)
    calls = []

    def failing_build(verbose=False):
        calls.append(1)
        _plugin._state["build_dir"] = Path("/tmp/wagi_ops_test")
        raise RuntimeError("Error building extension 'wagi_ops_x': [1/3] /usr/local/cuda/bin/nvcc -c a.cu\n"
                           "FAILED: upfirdn2d.cuda.o\n"
                           "upfirdn2d.cu(12): error: identifier \"foo\" is undefined\n"
                           "1 error detected in the compilation of \"upfirdn2d.cu\".\n"
                           "ninja: build stopped: subcommand failed.")

    monkeypatch.setattr(_plugin, "build", failing_build)
    monkeypatch.delenv(_plugin.IMPL_ENV, raising=False)
    yield calls
    _plugin._state.clear()
    _plugin._state.update(saved)


FAKE_CUDA_TENSOR = types.SimpleNamespace(device=torch.device("cuda"))


def test_impl_setting(monkeypatch):
    monkeypatch.delenv(_plugin.IMPL_ENV, raising=False)
    assert _plugin.impl_setting() == "auto"
    for value in ("ref", "CUDA", " auto "):
        monkeypatch.setenv(_plugin.IMPL_ENV, value)
        assert _plugin.impl_setting() == value.strip().lower()
    monkeypatch.setenv(_plugin.IMPL_ENV, "fast")
    with pytest.raises(ValueError, match="WAGI_OPS_IMPL='fast' is not one of auto, ref, cuda"):
        _plugin.impl_setting()


@pytest.mark.parametrize("mode", ["auto", "ref", "cuda"])
def test_cpu_tensors_always_use_the_reference(fresh_plugin, monkeypatch, mode):
    monkeypatch.setenv(_plugin.IMPL_ENV, mode)
    x = torch.randn(1, 2, 6, 6)
    k = torch.from_numpy(BLUR).float()
    assert torch.equal(ops.upfirdn2d(x, k, up=2, pad=(2, 1)), ops.upfirdn2d_ref(x, k, up=2, pad=(2, 1)))
    b = torch.randn(2)
    assert torch.equal(ops.fused_leaky_relu(x, b), ops.fused_leaky_relu_ref(x, b))
    assert ops.active_impl("cpu") == "ref"
    assert fresh_plugin == []  # nothing was built


def test_ref_mode_never_builds(fresh_plugin, monkeypatch):
    monkeypatch.setenv(_plugin.IMPL_ENV, "ref")
    assert _plugin.plugin_for(FAKE_CUDA_TENSOR) is None
    assert ops.active_impl("cuda") == "ref"
    assert fresh_plugin == []


def test_auto_mode_build_failure_warns_once_and_falls_back(fresh_plugin):
    with pytest.warns(RuntimeWarning) as record:
        assert _plugin.plugin_for(FAKE_CUDA_TENSOR) is None
    assert len(record) == 1
    message = str(record[0].message)
    assert 'error: identifier "foo" is undefined' in message
    assert "nvcc -c a.cu" not in message  # the command line is not part of the cause
    assert "run ninja in /tmp/wagi_ops_test to see the full log" in message
    assert "set WAGI_OPS_IMPL=ref to silence" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _plugin.plugin_for(FAKE_CUDA_TENSOR) is None
        assert ops.active_impl("cuda") == "ref"
    assert fresh_plugin == [1]  # one attempt per process
    status = ops.plugin_status()
    assert status["loaded"] is False and "undefined" in status["error"]


def test_cuda_mode_build_failure_raises(fresh_plugin, monkeypatch):
    monkeypatch.setenv(_plugin.IMPL_ENV, "cuda")
    for _ in range(2):
        with pytest.raises(RuntimeError, match='(?s)WAGI_OPS_IMPL=cuda .*identifier "foo".*run ninja in'):
            _plugin.plugin_for(FAKE_CUDA_TENSOR)
    assert fresh_plugin == [1]


def test_import_and_cpu_use_build_nothing():
    script = textwrap.dedent("""
        import sys
        import torch
        import torch.utils.cpp_extension as ce
        def forbidden(*args, **kwargs):
            raise AssertionError("cpp_extension used")
        ce.load = ce._jit_compile = forbidden
        import wagi.ops as ops
        x = torch.randn(1, 2, 5, 5)
        ops.upfirdn2d(x, torch.ones(2, 2), up=2)
        ops.fused_leaky_relu(x, torch.zeros(2))
        ops.FusedLeakyReLU(2)(x)
        status = ops.plugin_status()
        assert status["loaded"] is False and status["build_dir"] is None, status
        assert not [m for m in sys.modules if m.startswith("wagi_ops_")]
        print("clean")
    """)
    env = {**os.environ, _plugin.IMPL_ENV: "auto"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


def test_build_dir_naming(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert _plugin.build_root() == tmp_path
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    assert _plugin.build_root() == Path.home() / ".cache" / "torch_extensions"

    src = tmp_path / "a.cu"
    src.write_text("int a;")
    d1 = _plugin.build_digest([src], arch="9.0")
    assert d1 == _plugin.build_digest([src], arch="9.0")
    assert d1 != _plugin.build_digest([src], arch="8.0")
    src.write_text("int b;")
    assert d1 != _plugin.build_digest([src], arch="9.0")
    # The shipped sources are exactly what setup.py's package_data covers.
    names = {p.name for p in _plugin.source_files()}
    assert {"ops.cpp", "ops.h", "upfirdn2d.cu", "bias_act.cu"} <= names
    assert all(p.suffix in (".cpp", ".cu", ".h") for p in _plugin.source_files())


def _old(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_stale_lock_without_owner_is_removed_after_idle_time(tmp_path):
    lock = tmp_path / "lock"
    lock.touch()
    _old(lock, 1000)
    with pytest.warns(RuntimeWarning, match="removing stale build lock"):
        assert _plugin.clear_stale_lock(tmp_path, stale_after=300, poll=0.01)
    assert not lock.exists()
    assert _plugin.clear_stale_lock(tmp_path) is False  # no lock: returns at once


def test_stale_lock_of_dead_owner_is_removed_at_once(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / _plugin.OWNER_FILE).write_text(f"{_plugin.socket.gethostname()} {proc.pid}\n")
    (tmp_path / "lock").touch()
    with pytest.warns(RuntimeWarning, match="removing stale build lock"):
        assert _plugin.clear_stale_lock(tmp_path, stale_after=1e9, poll=0.01)


def test_lock_of_live_builder_is_waited_for(tmp_path):
    # A live owner on this host (the parent process stands in for it) is never interrupted, however old.
    (tmp_path / _plugin.OWNER_FILE).write_text(f"{_plugin.socket.gethostname()} {os.getppid()}\n")
    lock = tmp_path / "lock"
    lock.touch()
    _old(lock, 1000)
    _old(tmp_path / _plugin.OWNER_FILE, 1000)
    release = threading.Timer(0.3, lock.unlink)
    release.start()
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _plugin.clear_stale_lock(tmp_path, stale_after=0.0, poll=0.02) is False
    assert time.time() - start >= 0.25
    release.join()
