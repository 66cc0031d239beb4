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
import json
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

import torch

from wagi import ops
from wagi.devices import resolve_device


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


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ------------------------------------------------------------------------------------------------ ops


def bench_ops(device: torch.device, quick: bool) -> List[Dict]:
    rows = []
    if device.type != "cuda":
        print("[ops] CUDA not available: timing the reference only")
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k2 = torch.outer(k, k)
    k2 = (k2 / k2.sum()).to(device)
    scale = 1 if not quick else 8
    cases = [
        ("upsample x2 (8,512,64,64) k4", (8, 512 // scale, 64, 64), dict(up=2, pad=(2, 1)), k2 * 4),
        ("blur pad (8,256,257,257) k4", (8, 256 // scale, 257, 257), dict(pad=(1, 1)), k2 * 4),
        ("downsample x2 (16,256,128,128) k4", (16, 256 // scale, 128, 128), dict(down=2, pad=(1, 1)), k2),
        ("skip upsample (8,3,512,512) k4", (8, 3, 512 // scale, 512 // scale), dict(up=2, pad=(2, 1)), k2 * 4),
    ]
    for name, shape, kw, kern in cases:
        x = torch.randn(shape, device=device)
        t_ref = time_fn(lambda: ops.upfirdn2d_ref(x, kern, **kw), device)
        row = {"op": "upfirdn2d", "case": name, "ref_ms": t_ref}
        if device.type == "cuda":
            y_fast = ops.upfirdn2d(x, kern, **kw)
            row["fast_ms"] = time_fn(lambda: ops.upfirdn2d(x, kern, **kw), device)
            row["speedup"] = t_ref / row["fast_ms"]
            row["rel_err"] = rel_err(y_fast, ops.upfirdn2d_ref(x, kern, **kw))
            xg = x.clone().requires_grad_(True)

            def fb(fn):
                def run():
                    y = fn(xg, kern, **kw)
                    (g,) = torch.autograd.grad(y.sum(), xg)
                    return g
                return run

            row["fwd_bwd_ref_ms"] = time_fn(fb(ops.upfirdn2d_ref), device)
            row["fwd_bwd_fast_ms"] = time_fn(fb(ops.upfirdn2d), device)
        rows.append(row)
    for name, shape in [("bias+lrelu (16,512,64,64)", (16, 512 // scale, 64, 64)),
                        ("bias+lrelu (8,64,512,512)", (8, 64 // scale, 512 // scale, 512 // scale))]:
        x = torch.randn(shape, device=device)
        b = torch.randn(shape[1], device=device)
        t_ref = time_fn(lambda: ops.fused_leaky_relu_ref(x, b), device)
        row = {"op": "bias_act", "case": name, "ref_ms": t_ref}
        if device.type == "cuda":
            row["fast_ms"] = time_fn(lambda: ops.fused_leaky_relu(x, b), device)
            row["speedup"] = t_ref / row["fast_ms"]
            row["rel_err"] = rel_err(ops.fused_leaky_relu(x, b), ops.fused_leaky_relu_ref(x, b))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ generator


def _make_generator(size: int, device: torch.device, channel_multiplier: int = 2):
    from wagi.models.swagan import Generator

    g = Generator(size, 512, 8, channel_multiplier=channel_multiplier).to(device).eval()
    for p in g.parameters():
        p.requires_grad_(False)
    return g


def bench_generator(device: torch.device, quick: bool, sizes: Optional[List[int]] = None) -> List[Dict]:
    rows = []
    configs = [(256, 16), (1024, 8)] if not quick else [(64, 4)]
    if sizes:
        configs = [c for c in configs if c[0] in sizes]
    for size, batch in configs:
        g = _make_generator(size, device)
        torch.manual_seed(0)
        w = g.mean_latent(1024).detach().repeat(batch, 1) + 0.5 * torch.randn(batch, 512, device=device)
        latent = w.unsqueeze(1).repeat(1, g.n_latent, 1)

        def fwd(dtype=None, gen=g):
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return gen([latent], input_is_latent=True, randomize_noise=False)[0]

        ref_img = fwd().float()
        row = {"bench": "generator", "size": size, "batch": batch}
        t = time_fn(fwd, device, iters=10 if quick else 20)
        row["fwd_fp32_ms_per_img"] = t / batch

        lat_g = latent.clone().requires_grad_(True)

        def fwd_bwd(dtype=None):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                img = g([lat_g], input_is_latent=True, randomize_noise=False)[0]
            (gr,) = torch.autograd.grad(img.float().square().mean(), lat_g)
            return gr

        row["fwd_bwd_fp32_ms_per_img"] = time_fn(fwd_bwd, device, iters=10 if quick else 20) / batch
        if device.type == "cuda":
            bf = lambda: fwd(torch.bfloat16)  # noqa: E731
            fast_img = bf().float()
            row["fwd_bf16_ms_per_img"] = time_fn(bf, device) / batch
            row["bf16_rel_err"] = rel_err(fast_img, ref_img)
            row["bf16_max_abs_err"] = float((fast_img - ref_img).abs().max())
            row["fwd_bwd_bf16_ms_per_img"] = time_fn(lambda: fwd_bwd(torch.bfloat16), device) / batch
        rows.append(row)
        g = None  # frees the device memory before the next size (the closures above hold the name)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _bench_model_cfg(size: int, kind: str, fusion: str, n_iters: int = 1):
    from wagi.config import from_dict

    res = [size // 8, size // 4, size // 2] if fusion == "wavelet" else [min(64, size // 4)]
    return from_dict({
        "experiment": {"name": "bench"},
        "generator": {"size": size},
        "encoder": {"kind": kind, "backbone": "ir_se50", "input_size": 256, "n_iters": n_iters},
        "fusion": {"kind": fusion, "resolutions": res, "levels": 2},
        "loss": {"lpips": 0.0, "id": 0.0, "l2": 1.0, "wavelet": 1.0, "loss_size": None},
        "data": {"demo": True, "image_size": size},
    }, check_paths=False)


def bench_inversion(device: torch.device, quick: bool) -> List[Dict]:
    """Full inversion (encoder + generator + fusion), 256² in → size² out, random weights, fp32."""
    from wagi.models.wagi import WaGI

    size, batch = (1024, 8) if not quick else (64, 2)
    rows = []
    variants = [("e4e + wavelet fusion (WaGI)", "e4e", "wavelet", 1), ("e4e, no fusion", "e4e", "none", 1),
                ("e4e + feature fusion (HFGI-style)", "e4e", "feature", 1),
                ("ReStyle x5, no fusion", "restyle", "none", 5)]
    x = torch.rand(batch, 3, 256, 256, device=device) * 2 - 1
    for name, kind, fusion, iters in variants:
        cfg = _bench_model_cfg(size, kind, fusion, iters)
        torch.manual_seed(0)
        model = WaGI.from_config(cfg, latent_avg=torch.zeros(512)).to(device).eval()
        if fusion == "wavelet":  # open the gates so the fused path does real work
            for g in model.fusion.gates.values():
                g.data.fill_(1.0)

        def run(dtype=None):
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return model.invert(x)[0]

        row = {"bench": "inversion", "variant": name, "size": size, "batch": batch,
               "fp32_ms_per_img": time_fn(run, device, warmup=3, iters=10) / batch}
        if device.type == "cuda":
            row["bf16_ms_per_img"] = time_fn(lambda: run(torch.bfloat16), device, warmup=3, iters=10) / batch
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
    batches = (1, 8) if quick else ((1, 16, 64) if device.type == "cpu" else (1, 16, 64, 256))
    faces = DemoFaceDataset(max(batches), 128, seed_offset=TEST_SEED_OFFSET)
    images = torch.stack([faces[i] for i in range(len(faces))]).to(device)
    rows = []
    for name, path in files:
        model = WaGI.load(path).to(device).eval()
        for batch in batches:
            x = images[:batch]

            def run():
                with torch.no_grad():
                    return model.invert(x)[0]

            iters = 5 if device.type == "cpu" else 20
            ms = time_fn(run, device, warmup=2, iters=iters)
            rows.append({"bench": "demo", "model": name, "batch": batch, "size": model.image_size,
                         "threads": torch.get_num_threads() if device.type == "cpu" else None,
                         "ms_per_img": ms / batch, "images_per_s": 1000.0 * batch / ms})
        model = None  # frees the device memory before the next model
    return rows


def bench_train_step(device: torch.device, quick: bool) -> List[Dict]:
    """One optimisation step of the trainer's step modules at size² (batch 8), random weights."""
    from wagi.losses import InversionCriterion
    from wagi.models.wagi import WaGI
    from wagi.training.trainer import EncoderStep, FusionStep

    size, batch = (1024, 8) if not quick else (64, 2)
    rows = []
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    crit = InversionCriterion({"l2": 1.0, "wavelet": 1.0}).to(device)
    for stage, fusion in (("fusion", "wavelet"), ("encoder", "none")):
        cfg = _bench_model_cfg(size, "e4e", fusion)
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
            step = EncoderStep(model, crit, 256)
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

        row = {"bench": "train_step", "stage": stage, "size": size, "batch": batch,
               "fp32_ms_per_img": time_fn(run, device, warmup=3, iters=10) / batch}
        if device.type == "cuda":
            row["bf16_ms_per_img"] = time_fn(lambda: run(torch.bfloat16), device, warmup=3, iters=10) / batch
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
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        p.error(str(e))
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHES)}")
    results = {"device": device_name(device), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
               "ops_impl": ops.active_impl(device), "results": {}}
    print(f"device: {results['device']}  torch {torch.__version__}")
    for n in names:
        kwargs = {}
        if n == "demo":
            kwargs["models_dir"] = args.models
        if n == "generator" and args.sizes:
            kwargs["sizes"] = [int(s) for s in args.sizes.split(",")]
        rows = BENCHES[n](device, args.quick, **kwargs)
        results["results"][n] = rows
        print_table(n, rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    run_main(main)
