"""GPU tests of the wagi.ops CUDA plugin: values against the PyTorch reference in fp64/fp32/fp16/bf16,
first- and second-order gradients, memory layouts, and the build cache. Skipped without CUDA."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import wagi.ops as ops
from wagi.ops import _plugin

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DEVICE = "cuda"
# (atol, rtol) against a float64 reference; the kernels accumulate in float, so only the output rounding
# of the storage type remains.
TOL = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (1e-2, 5e-3),
    torch.bfloat16: (6e-2, 2e-2),
}
DTYPES = list(TOL)

# (input shape, up, down, pad, kernel shape): the tiled kernels (4x4 kernel with up 2 in all four pad
# phases, down 2, blur), several blocks per plane, many small planes, and the generic kernel.
UPFIRDN_CASES = [
    ((2, 3, 16, 16), 2, 1, (2, 1), (4, 4)),            # rosinality Upsample
    ((2, 3, 15, 17), 2, 1, (1, 2), (4, 4)),
    ((2, 3, 15, 17), 2, 1, (1, 2, 2, 1), (4, 4)),
    ((2, 3, 15, 17), 2, 1, (2, 1, 1, 2), (4, 4)),
    ((1, 2, 9, 11), 2, 1, (-1, 0, 3, -2), (4, 4)),
    ((2, 3, 16, 16), 1, 2, (1, 1), (4, 4)),            # rosinality Downsample
    ((2, 3, 17, 15), 1, 2, (2, 2, 0, 1), (4, 4)),
    ((2, 3, 16, 16), 1, 1, (2, 2), (4, 4)),            # discriminator Blur
    ((2, 3, 33, 9), 1, 1, (1, 1), (4, 4)),             # Blur after the transposed conv (odd size)
    ((1, 2, 70, 130), 2, 1, (2, 1), (4, 4)),           # several blocks along x and y
    ((1, 2, 131, 67), 1, 2, (1, 1), (4, 4)),
    ((1, 2, 100, 45), 1, 1, (-1, 2, 1, -2), (4, 4)),
    ((4, 300, 4, 4), 2, 1, (2, 1), (4, 4)),            # many small planes per block
    ((3, 70, 2, 3), 1, 2, (1, 1), (4, 4)),
    ((2, 3, 13, 10), 3, 2, (1, 2), (3, 3)),            # generic kernel from here on
    ((2, 3, 12, 9), (2, 1), (1, 3), (1, -1, 2, 0), (3, 5)),
    ((2, 3, 8, 8), 2, 2, (0, 1), (2, 2)),
    ((2, 3, 7, 9), 1, 1, (0, 0), (1, 1)),
    ((1, 1, 1, 1), 4, 1, (1, 2), (4, 4)),
    ((2, 2, 10, 10), 1, 3, (2, 2), (5, 5)),
]


@pytest.fixture(autouse=True)
def cuda_impl(monkeypatch):
    monkeypatch.setenv(_plugin.IMPL_ENV, "cuda")  # a failed build raises instead of falling back


def _inputs(shape, kshape, dtype, seed=0, requires_grad=False):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(shape, generator=gen, device=DEVICE, dtype=torch.float64).to(dtype)
    k = torch.randn(kshape, generator=gen, device=DEVICE, dtype=torch.float64)  # asymmetric: catches flips
    return x.requires_grad_(requires_grad), k


def _assert_close(got, want, dtype):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(got.double(), want.double(), atol=atol, rtol=rtol)


def test_plugin_is_built_once_and_cached_on_disk():
    assert ops.active_impl(DEVICE) == "cuda"
    first = _plugin._load("cuda")
    assert _plugin._load("cuda") is first
    status = ops.plugin_status()
    assert status["loaded"] and status["error"] is None
    build_dir = Path(status["build_dir"])
    library = next(build_dir.glob(f"{_plugin.BUILD_PREFIX}*.so"))
    assert (build_dir / _plugin.BUILD_OK).exists()
    stamp = library.stat().st_mtime_ns

    # A new process imports the cached library: no compiler, no ninja, the same file.
    script = textwrap.dedent("""
        import torch
        import torch.utils.cpp_extension as ce
        def forbidden(*args, **kwargs):
            raise AssertionError("rebuilt")
        ce.load = ce._jit_compile = forbidden
        import wagi.ops as ops
        x = torch.randn(1, 1, 4, 4, device="cuda")
        y = ops.upfirdn2d(x, torch.ones(2, 2, device="cuda"), up=2)
        torch.cuda.synchronize()
        status = ops.plugin_status()
        print(status["source"], status["build_dir"])
    """)
    env = {**os.environ, _plugin.IMPL_ENV: "cuda"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cache", str(build_dir)]
    assert library.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,up,down,pad,kshape", UPFIRDN_CASES)
def test_upfirdn2d_matches_reference(shape, up, down, pad, kshape, dtype):
    x, k = _inputs(shape, kshape, dtype, requires_grad=True)
    out = ops.upfirdn2d(x, k, up=up, down=down, pad=pad)
    assert type(out.grad_fn).__name__ == "_UpFirDn2dFnBackward"  # the CUDA path ran
    assert out.dtype == dtype
    want = ops.upfirdn2d_ref(x.detach().double(), k, up=up, down=down, pad=pad)
    assert out.shape == want.shape
    _assert_close(out, want, dtype)

    # First-order gradient (the flipped-kernel upfirdn2d with swapped up/down) against the reference.
    w = torch.randn(out.shape, device=DEVICE).to(dtype).double()  # representable in dtype
    (gx,) = torch.autograd.grad(out, x, w.to(dtype))
    xr = x.detach().double().requires_grad_()
    (gx_ref,) = torch.autograd.grad(ops.upfirdn2d_ref(xr, k, up=up, down=down, pad=pad), xr, w)
    _assert_close(gx, gx_ref, dtype)


@pytest.mark.parametrize("shape,up,down,pad,kshape", [UPFIRDN_CASES[i] for i in (0, 2, 5, 7, 15, 16)])
def test_upfirdn2d_gradgradcheck_fp64(shape, up, down, pad, kshape):
    x, k = _inputs((1, 2, *[min(s, 6) for s in shape[2:]]), kshape, torch.float64, requires_grad=True)
    fn = lambda x: ops.upfirdn2d(x, k, up=up, down=down, pad=pad)  # noqa: E731
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape,up,down,pad,kshape", [UPFIRDN_CASES[i] for i in (0, 5, 8, 15)])
def test_upfirdn2d_double_backward_matches_reference(shape, up, down, pad, kshape, dtype):
    # R1-style penalty |d/dx sum(w * tanh(upfirdn2d(x)))|^2 and its gradient.
    x, k = _inputs(shape, kshape, dtype, requires_grad=True)
    xr = x.detach().double().requires_grad_()

    def r1(f, x):
        y = f(x, k, up=up, down=down, pad=pad)
        w = torch.linspace(-1, 1, y.numel(), device=DEVICE, dtype=y.dtype).reshape(y.shape)
        (gx,) = torch.autograd.grad((torch.tanh(y) * w).sum(), x, create_graph=True)
        (ggx,) = torch.autograd.grad((gx ** 2).sum(), x)
        return gx.detach(), ggx

    gx, ggx = r1(ops.upfirdn2d, x)
    gx_ref, ggx_ref = r1(ops.upfirdn2d_ref, xr)
    scale = ggx_ref.abs().max().item()
    assert scale > 1e-3
    _assert_close(gx, gx_ref, dtype)
    torch.testing.assert_close(ggx.double() / scale, ggx_ref / scale, atol=TOL[dtype][0] * 10, rtol=0)


def test_upfirdn2d_kernel_grad_uses_reference():
    # The CUDA kernel is a constant: a kernel that requires grad is routed to the reference.
    x, k = _inputs((1, 2, 6, 6), (4, 4), torch.float64, requires_grad=True)
    k.requires_grad_()
    out = ops.upfirdn2d(x, k, up=2, pad=(2, 1))
    assert type(out.grad_fn).__name__ != "_UpFirDn2dFnBackward"
    out.square().sum().backward()
    kr = k.detach().requires_grad_()
    ops.upfirdn2d_ref(x.detach(), kr, up=2, pad=(2, 1)).square().sum().backward()
    torch.testing.assert_close(k.grad, kr.grad, rtol=1e-12, atol=1e-12)


def test_upfirdn2d_noncontiguous_and_channels_last_inputs():
    x, k = _inputs((2, 4, 12, 10), (4, 4), torch.float32)
    for view in (x.transpose(2, 3), x[:, ::2], x.to(memory_format=torch.channels_last)):
        want = ops.upfirdn2d_ref(view.double(), k, up=2, pad=(2, 1))
        _assert_close(ops.upfirdn2d(view, k, up=2, pad=(2, 1)), want, torch.float32)


# ---------------------------------------------------------------------------------------------------------
# bias + leaky ReLU
# ---------------------------------------------------------------------------------------------------------
# (shape, memory format): packs with one channel, packs over consecutive channels ((N, C) and
# channels_last), scalar fallbacks (odd sizes), rank 3 and 5.
BIAS_ACT_CASES = [
    ((4, 8, 16, 16), torch.contiguous_format),
    ((3, 5, 7, 9), torch.contiguous_format),
    ((16, 512), torch.contiguous_format),
    ((7, 13), torch.contiguous_format),
    ((4, 16, 6, 6), torch.channels_last),
    ((2, 3, 5, 5), torch.channels_last),
    ((2, 6, 33), torch.contiguous_format),
    ((2, 8, 3, 4, 4), torch.channels_last_3d),
]


def _bias_act_inputs(shape, fmt, dtype, seed=0):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(shape, generator=gen, device=DEVICE, dtype=torch.float64)
    b = torch.randn(shape[1], generator=gen, device=DEVICE, dtype=torch.float64)
    return x.to(dtype).contiguous(memory_format=fmt).requires_grad_(), b.to(dtype).requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,fmt", BIAS_ACT_CASES)
@pytest.mark.parametrize("slope,scale", [(0.2, 2 ** 0.5), (0.0, 1.0), (0.5, -1.5)])
def test_fused_leaky_relu_matches_reference(shape, fmt, dtype, slope, scale):
    x, b = _bias_act_inputs(shape, fmt, dtype)
    out = ops.fused_leaky_relu(x, b, slope, scale)
    assert type(out.grad_fn).__name__ == "_FusedLeakyReLUFnBackward"
    assert out.dtype == dtype and out.is_contiguous(memory_format=fmt)
    xr, br = x.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    want = ops.fused_leaky_relu_ref(xr, br, slope, scale)
    _assert_close(out, want, dtype)

    w = torch.randn(shape, device=DEVICE).to(dtype).double()  # representable in dtype
    gx, gb = torch.autograd.grad(out, (x, b), w.to(dtype))
    gx_ref, gb_ref = torch.autograd.grad(want, (xr, br), w)
    # Where the reference is within rounding of the kink, the low-precision sign may differ.
    near_kink = (xr + br.view(1, -1, *[1] * (x.dim() - 2))).abs() < 4 * TOL[dtype][0]
    _assert_close(gx.double()[~near_kink], gx_ref[~near_kink], dtype)
    if dtype in (torch.float32, torch.float64):
        reduced = gx_ref.numel() // shape[1]
        torch.testing.assert_close(gb.double(), gb_ref, atol=TOL[dtype][0] * reduced, rtol=TOL[dtype][1])


def test_fused_leaky_relu_without_bias_and_misaligned():
    x = torch.randn(1, 4099, device=DEVICE)[:, 3:]  # storage offset: no 16-byte packs
    for inp in (x, x.reshape(-1), torch.randn(5, 8, device=DEVICE)):
        torch.testing.assert_close(ops.fused_leaky_relu(inp), ops.fused_leaky_relu_ref(inp), rtol=1e-6, atol=1e-7)


def test_fused_leaky_relu_gradgradcheck_fp64():
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    x = torch.rand(2, 3, 4, generator=gen, device=DEVICE, dtype=torch.float64) + 0.05
    x = (x * torch.where(torch.rand(x.shape, generator=gen, device=DEVICE) < 0.5, -1.0, 1.0)).requires_grad_()
    b = torch.zeros(3, device=DEVICE, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: ops.fused_leaky_relu(x, b, 0.2, 2 ** 0.5)  # noqa: E731
    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_fused_leaky_relu_double_backward_matches_reference(dtype):
    # Two stacked activations with elementwise weights; gradient of the R1-style penalty w.r.t. them.
    gen = torch.Generator(device=DEVICE).manual_seed(2)
    shape = (4, 8, 5, 5)
    x, a, c, w = (torch.randn(shape, generator=gen, device=DEVICE, dtype=dtype) for _ in range(4))
    b1, b2 = (torch.randn(8, generator=gen, device=DEVICE, dtype=dtype) for _ in range(2))

    def run(f, cast):
        leaves = [cast(t).requires_grad_() for t in (x, a, c, b1, b2)]
        xx, aa, cc, bb1, bb2 = leaves
        h = f(f(xx * aa, bb1) * cc, bb2)
        (gx,) = torch.autograd.grad((h * cast(w)).sum(), xx, create_graph=True)
        # The biases only move the kinks: their second-order gradients are zero (or unused).
        return (gx.detach(),) + torch.autograd.grad((gx ** 2).sum(), (aa, cc, bb1, bb2), allow_unused=True,
                                                    materialize_grads=True)

    got = run(ops.fused_leaky_relu, lambda t: t.detach().clone())
    want = run(ops.fused_leaky_relu_ref, lambda t: t.detach().double())
    for g, r in zip(got, want):
        scale = max(r.abs().max().item(), 1.0)
        torch.testing.assert_close(g.double() / scale, r / scale, atol=TOL[dtype][0] * 10, rtol=0)


def test_negative_slope_below_zero_uses_reference():
    x = torch.randn(2, 3, 4, device=DEVICE, requires_grad=True)
    out = ops.fused_leaky_relu(x, None, negative_slope=-0.5, scale=1.0)
    assert type(out.grad_fn).__name__ != "_FusedLeakyReLUFnBackward"
    torch.testing.assert_close(out, torch.where(x > 0, x, -0.5 * x))


def test_fused_leaky_relu_module_on_cuda():
    act = ops.FusedLeakyReLU(6).to(DEVICE)
    with torch.no_grad():
        act.bias.copy_(torch.linspace(-1, 1, 6))
    x = torch.randn(3, 6, 4, 4, device=DEVICE)
    act(x).sum().backward()
    ref = ops.FusedLeakyReLU(6).to(DEVICE)
    ref.load_state_dict(act.state_dict())
    ops.fused_leaky_relu_ref(x, ref.bias).sum().backward()
    torch.testing.assert_close(act.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-5)
