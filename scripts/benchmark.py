#!/usr/bin/env python
"""Benchmarks of WaGI: custom ops vs reference, generator forward / forward+backward, fast path.

    python scripts/benchmark.py                       # everything that fits the device
    python scripts/benchmark.py --only ops,generator --json bench.json
    python scripts/benchmark.py --quick               # small shapes (CPU smoke run)

Timing: on CUDA the median of CUDA-event timings after warm-up; on CPU the median wall time. Random
weights, PyTorch defaults (TF32 convolutions as PyTorch enables them by default). Prints a table with
the device name and writes JSON. Numbers go to docs/performance.md with date, card and command.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import platform
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

import torch

from wagi import ops
from wagi.devices import resolve_device
from wagi.fileio import atomic_write
from wagi.precision import AUTOCAST_DTYPES, PRECISIONS


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int = 5, iters: int = 20) -> float:
    """Median time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def profile_table(fn: Callable[[], object], device: torch.device, top: int, iters: int = 3) -> List[Dict]:
    """The ``top`` operators / kernels of ``fn()`` by self time (device time on CUDA: the kernels; CPU time
    otherwise), from ``torch.profiler`` over ``iters`` calls after one warm-up call: name, calls per ``fn()``,
    self time per ``fn()`` in ms and share of the total self time."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(iters):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = prof.key_averages()

    def self_us(e) -> float:
        if device.type == "cuda":
            return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)))
        return float(e.self_cpu_time_total)

    rows = [(e.key, e.count, self_us(e)) for e in events]
    if device.type == "cuda":  # kernels only: CPU-side operator records carry no device time of their own
        rows = [r for r in rows if r[2] > 0]
    total = sum(r[2] for r in rows) or 1.0
    rows.sort(key=lambda r: -r[2])
    return [{"name": name[:80], "calls": count / iters, "self_ms": us / iters / 1e3, "share": us / total}
            for name, count, us in rows[:top]]


def progress(message: str) -> None:
    """One progress line on stderr, at once (also when stderr is redirected to a file)."""
    print(message, file=sys.stderr, flush=True)


def iterations(quick: bool) -> Tuple[int, int]:
    """(warm-up, timed) calls per measurement."""
    return (1, 3) if quick else (5, 20)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ------------------------------------------------------------------------------- rosinality's SWAGAN


ROSINALITY_FILES = ("swagan.py", "model.py", "op/__init__.py", "op/conv2d_gradfix.py")
ROSINALITY_MODULES = ("op", "op.fused_act", "op.upfirdn2d", "op.conv2d_gradfix", "model", "swagan")


def _load_module(name: str, path: Path, package: bool = False) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # their files import each other by these top-level names
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _ops_shim(root: Path) -> types.ModuleType:
    """A stand-in for their ``op`` package: WaGI's upfirdn2d / fused_leaky_relu (same signatures and
    results) with their own pure-Python ``conv2d_gradfix``."""
    shim = types.ModuleType("op")
    shim.__path__ = []  # a package, so that ``op.conv2d_gradfix`` resolves below
    shim.FusedLeakyReLU, shim.fused_leaky_relu, shim.upfirdn2d = ops.FusedLeakyReLU, ops.fused_leaky_relu, ops.upfirdn2d
    sys.modules["op"] = shim
    shim.conv2d_gradfix = _load_module("op.conv2d_gradfix", root / "op" / "conv2d_gradfix.py")
    return shim


@contextlib.contextmanager
def rosinality_modules(root: Path, build_ops: bool = True):
    """Import ``swagan`` from a checkout of rosinality/stylegan2-pytorch at ``root`` (no ``sys.path`` edit).

    Their ``op`` package compiles its CUDA extensions when imported; where that fails (no CUDA toolkit, a
    CPU-only machine), or with ``build_ops=False`` (no build attempted), their network runs on WaGI's ops
    instead, and the second value says so. The modules are removed from ``sys.modules`` on exit. Yields
    ``(swagan module, ops description)``.
    """
    root = Path(root).expanduser()
    missing = [f for f in ROSINALITY_FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"--rosinality {root}: not a checkout of rosinality/stylegan2-pytorch "
                                f"(missing {', '.join(missing)})")
    saved = {n: sys.modules.pop(n) for n in ROSINALITY_MODULES if n in sys.modules}
    try:
        if not build_ops:
            _ops_shim(root)
            ops_used = "WaGI's ops (theirs not built: not asked to)"
        else:
            try:
                _load_module("op", root / "op" / "__init__.py", package=True)
                ops_used = "their CUDA ops"
            except Exception as err:  # their extensions did not build: run their network on WaGI's ops
                for n in ROSINALITY_MODULES:
                    sys.modules.pop(n, None)
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                _ops_shim(root)
                ops_used = f"WaGI's ops (theirs did not build: {first[:120]})"
        _load_module("model", root / "model.py")
        yield _load_module("swagan", root / "swagan.py"), ops_used
    finally:
        for n in ROSINALITY_MODULES:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


def rosinality_generator(module: types.ModuleType, ours, device: torch.device):
    """Their Generator with our weights (rosinality's key names: a strict load), for timing and a check."""
    cfg = ours.config
    theirs = module.Generator(cfg["size"], ours.style_dim, cfg["n_mlp"], channel_multiplier=cfg["channel_multiplier"],
                              lr_mlp=cfg["lr_mlp"])
    theirs.load_state_dict(ours.state_dict(), strict=True)
    theirs = theirs.to(device).eval()
    for p in theirs.parameters():
        p.requires_grad_(False)
    return theirs


# ------------------------------------------------------------------------------------------------ ops


def _shape(shape) -> str:
    return "(" + ",".join(str(int(v)) for v in shape) + ")"


def bench_ops(device: torch.device, quick: bool) -> List[Dict]:
    rows = []
    if device.type != "cuda":
        progress("[ops] CUDA not available: timing the reference only")
    warm, iters = iterations(quick)
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k2 = torch.outer(k, k)
    k2 = (k2 / k2.sum()).to(device)
    if quick:
        shapes = [(2, 64, 32, 32), (2, 32, 65, 65), (2, 32, 64, 64), (2, 3, 128, 128)]
    else:
        shapes = [(8, 512, 64, 64), (8, 256, 257, 257), (16, 256, 128, 128), (8, 3, 512, 512)]
    cases = [
        ("upsample x2", shapes[0], dict(up=2, pad=(2, 1)), k2 * 4),
        ("blur pad", shapes[1], dict(pad=(1, 1)), k2 * 4),
        ("downsample x2", shapes[2], dict(down=2, pad=(1, 1)), k2),
        ("skip upsample", shapes[3], dict(up=2, pad=(2, 1)), k2 * 4),
    ]
    for name, shape, kw, kern in cases:
        label = f"{name} {_shape(shape)} k4"  # the shape actually run
        progress(f"[ops] upfirdn2d {label}")
        x = torch.randn(shape, device=device)
        t_ref = time_fn(lambda: ops.upfirdn2d_ref(x, kern, **kw), device, warm, iters)
        row = {"op": "upfirdn2d", "case": label, "ref_ms": t_ref}
        if device.type == "cuda":
            y_fast = ops.upfirdn2d(x, kern, **kw)
            row["fast_ms"] = time_fn(lambda: ops.upfirdn2d(x, kern, **kw), device, warm, iters)
            row["speedup"] = t_ref / row["fast_ms"]
            row["rel_err"] = rel_err(y_fast, ops.upfirdn2d_ref(x, kern, **kw))
            xg = x.clone().requires_grad_(True)

            def fb(fn):
                def run():
                    y = fn(xg, kern, **kw)
                    (g,) = torch.autograd.grad(y.sum(), xg)
                    return g
                return run

            row["fwd_bwd_ref_ms"] = time_fn(fb(ops.upfirdn2d_ref), device, warm, iters)
            row["fwd_bwd_fast_ms"] = time_fn(fb(ops.upfirdn2d), device, warm, iters)
        rows.append(row)
    act_shapes = [(2, 64, 32, 32), (2, 8, 128, 128)] if quick else [(16, 512, 64, 64), (8, 64, 512, 512)]
    for shape in act_shapes:
        label = f"bias+lrelu {_shape(shape)}"
        progress(f"[ops] {label}")
        x = torch.randn(shape, device=device)
        b = torch.randn(shape[1], device=device)
        t_ref = time_fn(lambda: ops.fused_leaky_relu_ref(x, b), device, warm, iters)
        row = {"op": "bias_act", "case": label, "ref_ms": t_ref}
        if device.type == "cuda":
            row["fast_ms"] = time_fn(lambda: ops.fused_leaky_relu(x, b), device, warm, iters)
            row["speedup"] = t_ref / row["fast_ms"]
            row["rel_err"] = rel_err(ops.fused_leaky_relu(x, b), ops.fused_leaky_relu_ref(x, b))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ generator


QUICK_CHANNEL_MAX = 128  # --quick: generators capped at 128 channels (rosinality's table has 512 up to 32 px)


def _make_generator(size: int, device: torch.device, channel_multiplier: int = 2, channel_max: Optional[int] = None):
    from wagi.models.swagan import Generator

    g = Generator(size, 512, 8, channel_multiplier=channel_multiplier, channel_max=channel_max).to(device).eval()
    for p in g.parameters():
        p.requires_grad_(False)
    return g


def _graph_rows(g, latent: torch.Tensor, ref_img: torch.Tensor, device: torch.device, precision: str, warm: int,
                iters: int, batch: int) -> Dict:
    """The forward replayed as one CUDA graph (wagi.fastpath): fp32 and ``precision``, each with its error
    against the eager fp32 image; then the same with input-scaled modulated convolutions
    (``Generator.set_fused_modconv(False)``: one batched convolution instead of a grouped one)."""
    from wagi.fastpath import CudaGraphCall
    from wagi.models.layers import ModulatedConv2d

    def forward(w):
        return g([w], input_is_latent=True, randomize_noise=False)[0]

    row = {}
    was_fused = all(m.fused for m in g.modules() if isinstance(m, ModulatedConv2d))
    for label, fused in (("graph", True), ("graph_inputscaled", False)):
        g.set_fused_modconv(fused)
        try:
            for prec in ("fp32", precision):
                run = CudaGraphCall(forward, latent, precision=prec)
                img = run(latent).float()
                row[f"fwd_{prec}_{label}_ms_per_img"] = time_fn(lambda: run(latent), device, warm, iters) / batch
                row[f"{prec}_{label}_rel_err"] = rel_err(img, ref_img)
                run = None
        except RuntimeError as e:  # recorded in the row: the eager rows above still stand
            row[f"{label}_error"] = str(e).strip().splitlines()[0][:200]
        finally:
            g.set_fused_modconv(was_fused)
    return row


def bench_generator(device: torch.device, quick: bool, sizes: Optional[List[int]] = None,
                    rosinality: Optional[Path] = None, precision: str = "bf16", profile: int = 0) -> List[Dict]:
    """Generator forward (and forward + backward to W+) at each size; with ``rosinality`` (a checkout of
    rosinality/stylegan2-pytorch) also their SWAGAN with the same weights, latents and noise, timed in the
    same run, with its output's relative difference from ours. ``profile`` > 0: also the top ``profile``
    kernels of the forward (reduced precision on CUDA, fp32 on the CPU) under ``row['profile']``."""
    rows = []
    warm, iters = iterations(quick)
    configs = [(256, 16), (1024, 8)] if not quick else [(64, 4)]
    if sizes:
        configs = [(s, 4 if quick else (16 if s <= 256 else 8)) for s in sizes]
    stack = contextlib.ExitStack()
    theirs_module, ops_used = (stack.enter_context(rosinality_modules(rosinality)) if rosinality is not None
                               else (None, None))
    # rosinality's Generator has the full channel table: keep it when comparing, also with --quick
    channel_max = QUICK_CHANNEL_MAX if quick and rosinality is None else None
    channels = f"<= {channel_max}" if channel_max else "rosinality's (cm 2)"
    with stack:
        for size, batch in configs:
            progress(f"[generator] {size}x{size}, batch {batch}, channels {channels}")
            g = _make_generator(size, device, channel_max=channel_max)
            torch.manual_seed(0)
            w = g.mean_latent(1024).detach().repeat(batch, 1) + 0.5 * torch.randn(batch, 512, device=device)
            latent = w.unsqueeze(1).repeat(1, g.n_latent, 1)

            def fwd(dtype=None, gen=g):
                with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    return gen([latent], input_is_latent=True, randomize_noise=False)[0]

            ref_img = fwd().float()
            row = {"bench": "generator", "size": size, "batch": batch, "channels": channels}
            row["fwd_fp32_ms_per_img"] = time_fn(fwd, device, warm, iters) / batch

            lat_g = latent.clone().requires_grad_(True)

            def fwd_bwd(dtype=None):
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    img = g([lat_g], input_is_latent=True, randomize_noise=False)[0]
                (gr,) = torch.autograd.grad(img.float().square().mean(), lat_g)
                return gr

            row["fwd_bwd_fp32_ms_per_img"] = time_fn(fwd_bwd, device, warm, iters) / batch
            if device.type == "cuda":
                low = AUTOCAST_DTYPES[precision]
                fast_img = fwd(low).float()
                row[f"fwd_{precision}_ms_per_img"] = time_fn(lambda: fwd(low), device, warm, iters) / batch
                row[f"{precision}_rel_err"] = rel_err(fast_img, ref_img)
                row[f"{precision}_max_abs_err"] = float((fast_img - ref_img).abs().max())
                row[f"fwd_bwd_{precision}_ms_per_img"] = time_fn(lambda: fwd_bwd(low), device, warm, iters) / batch
                row.update(_graph_rows(g, latent, ref_img, device, precision, warm, iters, batch))
            if profile:
                low = AUTOCAST_DTYPES[precision] if device.type == "cuda" else None
                progress(f"[generator] profiling the {size}x{size} forward ({precision if low else 'fp32'})")
                row["profile"] = profile_table(lambda: fwd(low), device, profile)
                row["profile_precision"] = precision if low else "fp32"
            if theirs_module is not None:
                progress(f"[generator] rosinality's SWAGAN {size}x{size} ({ops_used})")
                theirs = rosinality_generator(theirs_module, g, device)
                their_img = fwd(gen=theirs).float()
                row["rosinality_fwd_fp32_ms_per_img"] = time_fn(lambda: fwd(gen=theirs), device, warm, iters) / batch
                row["ours_vs_rosinality"] = row["fwd_fp32_ms_per_img"] / row["rosinality_fwd_fp32_ms_per_img"]
                row["rosinality_rel_err"] = rel_err(ref_img, their_img)
                row["rosinality_ops"] = ops_used
                theirs = None
            rows.append(row)
            g = None  # frees the device memory before the next size (the closures above hold the name)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def _encoder_setup(quick: bool) -> Tuple[str, int]:
    """(backbone, encoder input size): IR-SE50 at 256 as in the paper; the small backbone at 64 for --quick."""
    return ("small", 64) if quick else ("ir_se50", 256)


def _bench_model_cfg(size: int, kind: str, fusion: str, n_iters: int = 1, quick: bool = False):
    from wagi.config import from_dict

    backbone, input_size = _encoder_setup(quick)
    res = [size // 8, size // 4, size // 2] if fusion == "wavelet" else [min(64, size // 4)]
    return from_dict({
        "experiment": {"name": "bench"},
        "generator": {"size": size, "channel_max": QUICK_CHANNEL_MAX if quick else None},
        "encoder": {"kind": kind, "backbone": backbone, "input_size": input_size, "n_iters": n_iters},
        "fusion": {"kind": fusion, "resolutions": res, "levels": 2},
        "loss": {"lpips": 0.0, "id": 0.0, "l2": 1.0, "wavelet": 1.0, "loss_size": None},
        "data": {"demo": True, "image_size": size},
    }, check_paths=False)


def bench_inversion(device: torch.device, quick: bool, precision: str = "bf16") -> List[Dict]:
    """Full inversion (encoder + generator + fusion), encoder input → size² out, random weights, fp32 (and bf16
    autocast on CUDA). IR-SE50 at 256 → 1024; --quick: the small backbone at 64 → 64, generator channels
    capped at QUICK_CHANNEL_MAX."""
    from wagi.models.wagi import WaGI

    size, batch = (1024, 8) if not quick else (64, 2)
    backbone, input_size = _encoder_setup(quick)
    warm, iters = (1, 2) if quick else (3, 10)
    rows = []
    variants = [("e4e + wavelet fusion (WaGI)", "e4e", "wavelet", 1), ("e4e, no fusion", "e4e", "none", 1),
                ("e4e + feature fusion (HFGI-style)", "e4e", "feature", 1),
                ("ReStyle x5, no fusion", "restyle", "none", 5)]
    x = torch.rand(batch, 3, input_size, input_size, device=device) * 2 - 1
    for name, kind, fusion, n_iters in variants:
        progress(f"[inversion] {name}: {backbone} at {input_size} -> {size}x{size}, batch {batch}")
        cfg = _bench_model_cfg(size, kind, fusion, n_iters, quick)
        torch.manual_seed(0)
        model = WaGI.from_config(cfg, latent_avg=torch.zeros(512)).to(device).eval()
        if fusion == "wavelet":  # open the gates so the fused path does real work
            for g in model.fusion.gates.values():
                g.data.fill_(1.0)

        def run(dtype=None, inp=x):
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return model.invert(inp)[0]

        row = {"bench": "inversion", "variant": name, "encoder": f"{backbone} @{input_size}", "size": size,
               "batch": batch, "fp32_ms_per_img": time_fn(run, device, warm, iters) / batch}
        if device.type == "cuda":
            from wagi.fastpath import CudaGraphCall

            ref = run()
            row[f"{precision}_ms_per_img"] = time_fn(lambda: run(AUTOCAST_DTYPES[precision]), device, warm,
                                                     iters) / batch
            x1 = x[:1].contiguous()
            row["fp32_batch1_ms"] = time_fn(lambda: run(None, x1), device, warm, iters)
            for prec in ("fp32", precision):  # the whole invert() replayed as one CUDA graph
                try:
                    graphed = CudaGraphCall(lambda inp: model.invert(inp)[0], x, precision=prec)
                    row[f"{prec}_graph_ms_per_img"] = time_fn(lambda: graphed(x), device, warm, iters) / batch
                    row[f"{prec}_graph_rel_err"] = rel_err(graphed(x).float(), ref.float())
                    graphed = CudaGraphCall(lambda inp: model.invert(inp)[0], x1, precision=prec)
                    row[f"{prec}_graph_batch1_ms"] = time_fn(lambda: graphed(x1), device, warm, iters)
                except RuntimeError as e:  # a host sync inside invert() cannot be recorded: say so, go on
                    row[f"{prec}_graph_error"] = str(e).strip().splitlines()[0][:200]
                    with contextlib.suppress(RuntimeError):
                        torch.cuda.synchronize(device)
                graphed = None
        rows.append(row)
        model = None  # frees the device memory before the next model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


DEMO_DIR = "pretrained/demo"
DEMO_MODELS = ("wagi", "wavelet_restyle", "l2_restyle", "hfgi")


def bench_demo(device: torch.device, quick: bool, models_dir: str = DEMO_DIR) -> List[Dict]:
    """Inversion throughput of the bundled demo models (trained weights, fp32) on held-out demo faces at 128².

    The whole ``model.invert`` call is timed (encoder passes, generator, fusion), images already in memory;
    on the CPU with the threads torch uses (``torch.get_num_threads()``).
    """
    from pathlib import Path

    from wagi.data.demo_faces import TEST_SEED_OFFSET, DemoFaceDataset
    from wagi.models.wagi import WaGI

    files = [(n, Path(models_dir) / f"{n}.pt") for n in DEMO_MODELS]
    files = [(n, f) for n, f in files if f.is_file()]
    if not files:
        print(f"[demo] no bundled models in {models_dir}: skipped")
        return []
    batches = (8,) if quick else ((1, 16, 64) if device.type == "cpu" else (1, 16, 64, 256))
    faces = DemoFaceDataset(max(batches), 128, seed_offset=TEST_SEED_OFFSET)
    images = torch.stack([faces[i] for i in range(len(faces))]).to(device)
    rows = []
    for name, path in files:
        model = WaGI.load(path).to(device).eval()
        for batch in batches:
            progress(f"[demo] {name}, batch {batch}")
            x = images[:batch]

            def run():
                with torch.no_grad():
                    return model.invert(x)[0]

            warm, iters = (1, 3) if quick else (2, 5 if device.type == "cpu" else 20)
            ms = time_fn(run, device, warm, iters)
            rows.append({"bench": "demo", "model": name, "batch": batch, "size": model.image_size,
                         "threads": torch.get_num_threads() if device.type == "cpu" else None,
                         "ms_per_img": ms / batch, "images_per_s": 1000.0 * batch / ms})
        model = None  # frees the device memory before the next model
    return rows


def bench_train_step(device: torch.device, quick: bool, precision: str = "bf16") -> List[Dict]:
    """One optimisation step of the trainer's step modules at size² (batch 8), random weights."""
    from wagi.losses import InversionCriterion
    from wagi.models.wagi import WaGI
    from wagi.training.trainer import EncoderStep, FusionStep

    size, batch = (1024, 8) if not quick else (64, 2)
    backbone, input_size = _encoder_setup(quick)
    warm, iters = (1, 2) if quick else (3, 10)
    rows = []
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    crit = InversionCriterion({"l2": 1.0, "wavelet": 1.0}).to(device)
    for stage, fusion in (("fusion", "wavelet"), ("encoder", "none")):
        progress(f"[train_step] {stage} stage: {backbone} at {input_size}, {size}x{size}, batch {batch}")
        cfg = _bench_model_cfg(size, "e4e", fusion, quick=quick)
        torch.manual_seed(0)
        model = WaGI.from_config(cfg, latent_avg=torch.zeros(512)).to(device)
        for p in model.generator.parameters():
            p.requires_grad_(False)
        if stage == "fusion":
            for p in model.encoder.parameters():
                p.requires_grad_(False)
            model.encoder.eval()
            step = FusionStep(model, crit, None, 0.1, 0.15, 0.9)
            params = list(model.fusion.parameters())
        else:
            step = EncoderStep(model, crit, input_size)
            params = list(model.encoder.parameters())
        opt = torch.optim.Adam(params, lr=1e-4)
        seeds = list(range(batch))
        avg = model.latent_avg.unsqueeze(0).expand(batch, -1, -1)

        def run(dtype=None):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = step(x, seeds)[0] if stage == "fusion" else step(x, avg, None)[0]
            loss.backward()
            opt.step()

        row = {"bench": "train_step", "stage": stage, "encoder": f"{backbone} @{input_size}", "size": size,
               "batch": batch, "fp32_ms_per_img": time_fn(run, device, warm, iters) / batch}
        if device.type == "cuda":
            row[f"{precision}_ms_per_img"] = time_fn(lambda: run(AUTOCAST_DTYPES[precision]), device, warm,
                                                     iters) / batch
        rows.append(row)
        model = step = opt = None  # frees the device memory before the next stage
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


BENCHES = {"demo": bench_demo, "ops": bench_ops, "generator": bench_generator, "inversion": bench_inversion,
           "train_step": bench_train_step}


def print_table(title: str, rows: List[Dict]) -> None:
    if not rows:
        return
    for r in rows:
        if r.get("profile"):
            shape = ", ".join(f"{k} {r[k]}" for k in ("size", "batch") if k in r)
            print_table(f"{title} profile ({shape}, {r.get('profile_precision', '')}; per call)", r["profile"])
    rows = [{k: v for k, v in r.items() if k != "profile"} for r in rows]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    print(f"\n## {title}")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--only", default=",".join(BENCHES), help=f"comma list of {sorted(BENCHES)}")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="small shapes (smoke run on CPU)")
    p.add_argument("--sizes", default=None, help="generator sizes to run, e.g. 256,1024")
    p.add_argument("--json", default=None, help="write results here")
    p.add_argument("--models", default=DEMO_DIR, help="folder of the bundled demo models (bench 'demo')")
    p.add_argument("--precision", choices=[x for x in PRECISIONS if x != "fp32"], default="bf16",
                   help="the reduced precision timed beside fp32 on CUDA (autocast, wagi.precision)")
    p.add_argument("--rosinality", type=Path, default=None, metavar="PATH",
                   help="a checkout of rosinality/stylegan2-pytorch: bench 'generator' also times its SWAGAN "
                        "(same weights, latents and noise) in the same run")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="bench 'generator': also a torch.profiler table of the forward's top N kernels (device "
                        "self time on CUDA, CPU self time otherwise); 0: none")
    args = p.parse_args(argv)
    if args.profile < 0:
        p.error(f"--profile takes a number of rows >= 0, got {args.profile}")
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # each table line as soon as it is printed
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        p.error(str(e))
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHES)}")
    sizes = None
    if args.sizes:
        try:
            sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
        except ValueError:
            p.error(f"--sizes takes comma-separated integers, got {args.sizes!r}")
        if not sizes or any(v < 8 or v & (v - 1) for v in sizes):
            p.error(f"--sizes: powers of two >= 8, got {args.sizes!r}")
    if args.rosinality is not None:
        missing = [f for f in ROSINALITY_FILES if not (args.rosinality / f).is_file()]
        if missing:
            p.error(f"--rosinality {args.rosinality}: not a checkout of rosinality/stylegan2-pytorch "
                    f"(missing {', '.join(missing)})")
    t0 = time.perf_counter()
    results = {"device": device_name(device), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
               "ops_impl": ops.active_impl(device), "results": {}}
    print(f"device: {results['device']}  torch {torch.__version__}")
    for n in names:
        kwargs = {}
        if n == "demo":
            kwargs["models_dir"] = args.models
        if n == "generator" and sizes:
            kwargs["sizes"] = sizes
        if n == "generator" and args.rosinality is not None:
            kwargs["rosinality"] = args.rosinality
        if n == "generator" and args.profile:
            kwargs["profile"] = args.profile
        if n in ("generator", "inversion", "train_step"):
            kwargs["precision"] = args.precision
        t_bench = time.perf_counter()
        rows = BENCHES[n](device, args.quick, **kwargs)
        progress(f"[{n}] {time.perf_counter() - t_bench:.1f} s")
        results["results"][n] = rows
        print_table(n, rows)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    progress(f"done in {results['seconds']} s")
    if args.json:
        atomic_write(args.json, json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    run_main(main)
