#!/usr/bin/env python
"""Train the attribute judge (wagi.models.judge) on procedural demo faces, or evaluate a trained one.

    python scripts/train_judge.py --output pretrained/demo/judge.pt                      # GPU: ~2-3 min
    python scripts/train_judge.py --device cpu --n 2000 --epochs 2 --output /tmp/judge.pt  # slow, for a check
    python scripts/train_judge.py --eval-only pretrained/demo/judge.pt --n-test 4000

Training faces are seeds [900000, 900000 + n) (JUDGE_TRAIN_SEED_OFFSET: inside the training range, disjoint
from the seeds the generator and encoders use); held-out faces are seeds JUDGE_TEST_SEED_OFFSET + i, which
nothing else uses. Faces are rendered once, in parallel (--workers), kept as uint8 on the training device and
augmented there in batch: horizontal flip, translation by up to 4 px, occasional down-and-up resampling,
Gaussian blur (sigma up to 1.2, half of the images), small brightness / contrast / colour jitter and
additive noise, so that the judge also reads the blurrier, slightly noisy GAN samples and reconstructions.
Loss: BCE on the binary heads plus cross-entropy on the categorical heads; AdamW with a warm-up + cosine
schedule that also follows --time-limit (the schedule ends when the time is up).

Held-out accuracy is reported per attribute on clean renders, blurred renders (sigma 1.0) and renders
downsampled to 64 px (the judge resizes them back), stored in the checkpoint's meta and written as JSON
beside the checkpoint (--output with .json).
Exit status: 0 done; 2 bad arguments, existing output without --overwrite, unreadable --eval-only file.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import _require_wagi  # noqa: F401  (one line and exit 2 when wagi is not installed)

from wagi.cli import DefaultsHelpFormatter, quiet_interrupts, run_main

quiet_interrupts(__name__)  # a Ctrl-C while the imports below run: one line, exit status 130

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from wagi.cli import positive_int
from wagi.data.demo_faces import (
    DEMO_FACES_VERSION,
    TRAIN_SEED_END,
    check_seed_range,
    render_from_attributes,
    sample_attributes,
)
from wagi.devices import DEVICE_CHOICES, describe_device, resolve_device
from wagi.fileio import atomic_write
from wagi.models.judge import (  # noqa: E501
    DEFAULT_JUDGE_PATH,
    DEFAULT_LOCAL,
    INPUT_SIZE,
    JUDGE_TEST_SEED_OFFSET,
    JUDGE_TRAIN_SEED_OFFSET,
    AttributeJudge,
    JudgeCheckpointError,
    label_tensors,
    load_judge,
    save_judge,
)

BLUR_RADIUS = 4  # Gaussian kernel taps each side (9 taps: > 3 sigma for sigma <= 1.2)
EVAL_BLUR_SIGMA = 1.0
EVAL_DOWN_SIZE = 64
DOWN_SIZES = (64, 80, 96)  # down-and-up augmentation: intermediate sizes
WARMUP = 0.03  # fraction of the schedule with a linear learning-rate warm-up
TARGET_BINARY_ACCURACY = 0.97  # a warning names the binary attributes below it
RENDER_CHUNK = 64  # faces per rendering job
LOG_EVERY = 20  # steps between recorded losses (each one waits for the GPU)
EVAL_RESERVE = 0.1  # fraction of the remaining --time-limit kept for evaluation and saving
MAX_TRAIN_N = TRAIN_SEED_END - JUDGE_TRAIN_SEED_OFFSET


# ---------------------------------------------------------------------------------------- data
def _render_chunk(job: Tuple[int, int]) -> Tuple[np.ndarray, list]:
    start, count = job
    attrs = [sample_attributes(seed) for seed in range(start, start + count)]
    return np.stack([np.asarray(render_from_attributes(a, INPUT_SIZE)) for a in attrs]), attrs


def render_faces(seed_offset: int, n: int, workers: int,
                 progress: bool = True) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Faces of seeds ``seed_offset + i`` (i < n): uint8 ``(n, 3, 128, 128)`` and ``{name: (n,) long}`` labels.

    Rendered in chunks by a pool of ``workers`` processes that send back uint8 pixels (a quarter of the bytes
    of the float tensors a DataLoader over :class:`DemoFaceDataset` would move; same images)."""
    check_seed_range(seed_offset, n)
    jobs = [(seed_offset + i, min(RENDER_CHUNK, n - i)) for i in range(0, n, RENDER_CHUNK)]
    images = torch.empty((n, 3, INPUT_SIZE, INPUT_SIZE), dtype=torch.uint8)
    attrs: list = []
    bar = tqdm(total=n, desc=f"rendering faces {seed_offset}+", unit="img", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    pool = multiprocessing.Pool(workers) if workers > 1 and len(jobs) > 1 else None
    try:
        results = pool.imap(_render_chunk, jobs) if pool is not None else map(_render_chunk, jobs)
        for (start, count), (pixels, chunk_attrs) in zip(jobs, results):
            i = start - seed_offset
            images[i:i + count] = torch.from_numpy(pixels).permute(0, 3, 1, 2)
            attrs += chunk_attrs
            bar.update(count)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        bar.close()
    return images, label_tensors(attrs)


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float().div_(127.5).sub_(1.0)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``x`` (B, C, H, W) with its own ``sigma`` (B,) (0: unchanged); reflect padding."""
    b, c, h, w = x.shape
    t = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-3).view(b, 1)
    k = torch.exp(-t.view(1, -1) ** 2 / (2 * s ** 2))
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
    y = F.pad(x.reshape(1, b * c, h, w), (BLUR_RADIUS,) * 4, mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    return y.view(b, c, h, w)


def down_up(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resample to ``size`` (antialiased) and back: the softness of a lower-resolution image."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def augment(x: torch.Tensor, gen: torch.Generator, p_blur: float = 0.5, max_sigma: float = 1.2, max_shift: int = 4,
            p_down: float = 0.15, jitter: float = 0.06, max_noise: float = 0.04) -> torch.Tensor:
    """Training augmentation of a float batch in [-1, 1], on its device, one draw per image (see module doc).
    Every transform keeps the labels: they are all flip- and shift-invariant."""
    b, c, h, w = x.shape
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, device=dev, generator=gen)

    # flip + integer translation, border pixels replicated: one gather
    shift = (rand(2, b) * (2 * max_shift + 1)).long() - max_shift
    rows = (torch.arange(h, device=dev).view(1, h) - shift[0].view(b, 1)).clamp_(0, h - 1)
    cols = torch.arange(w, device=dev).view(1, w).expand(b, w)
    cols = torch.where(rand(b, 1) < 0.5, w - 1 - cols, cols)
    cols = (cols - shift[1].view(b, 1)).clamp(0, w - 1)
    x = x[torch.arange(b, device=dev).view(b, 1, 1), :, rows.view(b, h, 1), cols.view(b, 1, w)]  # (B, H, W, C)
    x = x.permute(0, 3, 1, 2).contiguous()
    # down-and-up resampling for a few images (one intermediate size per batch)
    down = rand(b) < p_down
    if down.any():
        size = DOWN_SIZES[int(torch.randint(len(DOWN_SIZES), (1,), device=dev, generator=gen))]
        x[down] = down_up(x[down], size)
    # blur
    sigma = torch.where(rand(b) < p_blur, rand(b) * max_sigma, torch.zeros(b, device=dev))
    x = gaussian_blur(x, sigma)
    # brightness, contrast, colour gain
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 1 + (rand(b, 1, 1, 1) * 2 - 1) * jitter
    bright = (rand(b, 1, 1, 1) * 2 - 1) * jitter
    gain = 1 + (rand(b, c, 1, 1) * 2 - 1) * (jitter / 2)
    x = ((x - mean) * contrast + mean + bright + 1) * gain - 1
    # noise
    x = x + torch.randn(x.shape, device=dev, generator=gen) * (rand(b, 1, 1, 1) * max_noise)
    return x.clamp_(-1, 1)


# ---------------------------------------------------------------------------------------- loss / eval
def judge_loss(judge: AttributeJudge, logits: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor],
               heads: Optional[Sequence[str]] = None) -> torch.Tensor:
    """Sum of the BCE of every binary head and the cross-entropy of every categorical head (batch means);
    only the ``heads`` named, when given."""
    total = 0.0
    for name, out in logits.items():
        if heads is not None and name not in heads:
            continue
        y = labels[name]
        if name in judge.binary:
            total = total + F.binary_cross_entropy_with_logits(out.float(), y.float())
        else:
            total = total + F.cross_entropy(out.float(), y)
    return total


CONDITIONS = ("clean", f"blur{EVAL_BLUR_SIGMA}", f"down{EVAL_DOWN_SIZE}")


def degrade(x: torch.Tensor, condition: str) -> torch.Tensor:
    if condition == "clean":
        return x
    if condition.startswith("blur"):
        return gaussian_blur(x, torch.full((x.shape[0],), float(condition[4:]), device=x.device))
    if condition.startswith("down"):  # the judge resizes the small image back to 128 itself
        size = int(condition[4:])
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    raise ValueError(f"unknown evaluation condition {condition!r}")


@torch.no_grad()
def evaluate(judge: AttributeJudge, images_u8: torch.Tensor, labels: Mapping[str, torch.Tensor],
             device: torch.device, batch_size: int = 256, conditions: Sequence[str] = CONDITIONS
             ) -> Dict[str, Dict[str, float]]:
    """Held-out accuracy ``{condition: {attribute: accuracy}}`` plus ``mean_binary`` / ``mean_categorical``."""
    was_training = judge.training
    judge.eval()
    out: Dict[str, Dict[str, float]] = {}
    n = images_u8.shape[0]
    for cond in conditions:
        correct = {k: 0 for k in judge.names}
        for i in range(0, n, batch_size):
            x = degrade(to_float(images_u8[i:i + batch_size].to(device)), cond)
            pred = judge.predict(x)
            for k, p in pred.items():
                correct[k] += int((p.long().cpu() == labels[k][i:i + batch_size].cpu()).sum())
        acc = {k: v / n for k, v in correct.items()}
        acc["mean_binary"] = sum(acc[k] for k in judge.binary) / max(1, len(judge.binary))
        acc["mean_categorical"] = sum(acc[k] for k in judge.categorical) / max(1, len(judge.categorical))
        out[cond] = acc
    judge.train(was_training)
    return out


def accuracy_table(acc: Mapping[str, Mapping[str, float]]) -> str:
    conds = list(acc)
    names = list(acc[conds[0]])
    width = max(len(n) for n in names)
    lines = [f"{'attribute':<{width}}  " + "  ".join(f"{c:>9}" for c in conds)]
    for name in names:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{100 * acc[c][name]:8.2f}%" for c in conds))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- training
def lr_at(progress: float, lr: float) -> float:
    """Linear warm-up over ``WARMUP`` of the schedule, then cosine decay to 0 at ``progress`` 1."""
    if progress < WARMUP:
        return lr * max(progress, 1e-3) / WARMUP
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - WARMUP) / (1 - WARMUP))))


def train(judge: AttributeJudge, images_u8: torch.Tensor, labels: Mapping[str, torch.Tensor], device: torch.device,
          epochs: int, batch_size: int, lr: float = 3e-3, weight_decay: float = 5e-4, seed: int = 0,
          time_budget_s: Optional[float] = None, amp: bool = True, progress: bool = True,
          aug: Optional[Mapping[str, Any]] = None, heads: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Train ``judge`` in place on uint8 ``images_u8`` (moved to ``device``). Returns a summary dict
    (steps, seconds, first and last loss). The schedule ends after ``epochs`` or ``time_budget_s``,
    whichever comes first. With ``heads``, only those attributes' local heads train (the rest is frozen)."""
    judge.to(device).train()
    params = list(judge.parameters())
    if heads is not None:
        judge.eval()
        for p in judge.parameters():
            p.requires_grad_(False)
        params = []
        for name in heads:
            judge.local_heads[name].train()
            for p in judge.local_heads[name].parameters():
                p.requires_grad_(True)
                params.append(p)
    if device.type == "cuda":
        judge.to(memory_format=torch.channels_last)
    images = images_u8.to(device)
    labels = {k: v.to(device) for k, v in labels.items()}
    n = images.shape[0]
    batch_size = min(batch_size, n)
    steps_per_epoch = n // batch_size
    total = max(1, epochs * steps_per_epoch)
    decay, no_decay = [], []
    for p in params:
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    gen = torch.Generator(device=device).manual_seed(seed)
    cpu_gen = torch.Generator().manual_seed(seed)
    use_amp = amp and device.type == "cuda"
    t0 = time.perf_counter()
    losses = []
    step = 0
    bar = tqdm(total=total, desc="training judge", unit="step", dynamic_ncols=True, disable=not progress,
               file=sys.stderr)
    done = False
    while not done:
        perm = torch.randperm(n, generator=cpu_gen).to(device)
        for i in range(steps_per_epoch):
            elapsed = time.perf_counter() - t0
            prog = step / total
            if time_budget_s is not None:
                prog = max(prog, elapsed / time_budget_s)
            if prog >= 1:
                done = True
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(prog, lr)
            idx = perm[i * batch_size:(i + 1) * batch_size]
            x = augment(to_float(images.index_select(0, idx)), gen, **(aug or {}))
            y = {k: v.index_select(0, idx) for k, v in labels.items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                if heads is None:
                    logits = judge(x)
                else:  # only the local heads learn: the frozen trunk need not run
                    xp = judge.prepare(x)
                    logits = {name: judge.local_heads[name](xp) for name in heads}
            loss = judge_loss(judge, logits, y, heads)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % LOG_EVERY == 0 or step == 1 or step == total:
                losses.append((step, float(loss.detach())))
                bar.set_postfix(loss=f"{losses[-1][1]:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
            bar.update(1)
    bar.close()
    if step and (not losses or losses[-1][0] != step):
        losses.append((step, float(loss.detach())))
    judge.eval()
    return {"steps": step, "planned_steps": total, "train_seconds": time.perf_counter() - t0,
            "first_loss": losses[0][1] if losses else None, "last_loss": losses[-1][1] if losses else None,
            "loss_curve": losses}


# ---------------------------------------------------------------------------------------- CLI
def with_local_heads(judge: AttributeJudge, heads: Sequence[str]) -> AttributeJudge:
    """``judge`` rebuilt with a fresh local head (:data:`DEFAULT_LOCAL` boxes) for each of ``heads`` it lacks;
    every other weight is kept."""
    local = {k: v for k, v in judge.arch.get("local", {}).items()}
    for name in heads:
        if name not in DEFAULT_LOCAL:
            raise ValueError(f"--heads {name}: no local boxes are defined for it (have: {list(DEFAULT_LOCAL)})")
        local.setdefault(name, DEFAULT_LOCAL[name])
    arch = {k: v for k, v in judge.arch.items() if k != "local"}
    new = AttributeJudge(judge.binary, judge.categorical, local=local, **arch)
    missing, unexpected = new.load_state_dict(judge.state_dict(), strict=False)
    if unexpected or any(not k.startswith("local_heads.") for k in missing):
        raise ValueError(f"--finetune: the judge's weights do not fit (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return new


def build_parser() -> argparse.ArgumentParser:
    head, _, rest = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(description=head, epilog=rest, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--output", type=Path, default=DEFAULT_JUDGE_PATH, help="checkpoint to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output and its JSON report")
    p.add_argument("--finetune", type=Path, default=None, metavar="CKPT",
                   help="start from this judge and train only the local heads of --heads (added when missing)")
    p.add_argument("--heads", nargs="+", default=list(DEFAULT_LOCAL), help="with --finetune (default: has_earrings)")
    p.add_argument("--record", action="store_true", help="with --eval-only: store the accuracies in CKPT's meta")
    p.add_argument("--eval-only", type=Path, default=None, metavar="CKPT",
                   help="evaluate this trained judge on --n-test held-out faces instead of training")
    p.add_argument("--n", type=positive_int, default=40000, help="training faces (default 40000)")
    p.add_argument("--n-test", type=positive_int, default=2000, help="held-out faces for evaluation (default 2000)")
    p.add_argument("--epochs", type=positive_int, default=20, help="epochs over the --n faces (default 20)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default 256 on CUDA, 64 on CPU")
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (default 3e-3)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, batch order and augmentation")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--workers", type=positive_int, default=max(1, os.cpu_count() or 1),
                   help="processes rendering faces (default: all CPU cores)")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="whole run (rendering included) within about this many minutes: the learning-rate "
                        "schedule is compressed to end in time")
    p.add_argument("--no-amp", action="store_true", help="train in float32 on CUDA too (default: bfloat16 autocast)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _say(msg: str) -> None:
    print(msg, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    t_start = time.perf_counter()
    args = build_parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    try:
        device = resolve_device(args.device)
    except ValueError as err:
        return fail(str(err))
    progress = not args.no_progress
    batch_size = args.batch_size or (256 if device.type == "cuda" else 64)
    torch.manual_seed(args.seed)

    if args.eval_only is not None:
        try:
            judge, meta = load_judge(args.eval_only, map_location=device, return_meta=True)
        except JudgeCheckpointError as err:
            return fail(str(err))
        _say(describe_device(device))
        images, labels = render_faces(JUDGE_TEST_SEED_OFFSET, args.n_test, args.workers, progress)
        acc = evaluate(judge, images, labels, device, batch_size=batch_size)
        _say(f"held-out accuracy of {args.eval_only} on {args.n_test} faces (seeds {JUDGE_TEST_SEED_OFFSET}+i):")
        _say(accuracy_table(acc))
        if args.record:
            save_judge(judge.cpu(), args.eval_only, **dict(meta, accuracy=acc, n_test=args.n_test,
                                                           test_seed_offset=JUDGE_TEST_SEED_OFFSET))
            _say(f"recorded the accuracies in {args.eval_only}")
        return 0

    report_path = args.output.with_suffix(".json")
    for path in (args.output, report_path):
        if path.exists() and not args.overwrite:
            return fail(f"{path} exists; pass --overwrite to replace it")
    if args.n > MAX_TRAIN_N:
        return fail(f"--n {args.n}: the judge's training seeds are [{JUDGE_TRAIN_SEED_OFFSET}, {TRAIN_SEED_END}), "
                    f"at most {MAX_TRAIN_N} faces")
    if args.time_limit is not None and args.time_limit <= 0:
        return fail(f"--time-limit must be > 0 minutes, got {args.time_limit}")
    _say(describe_device(device))

    t0 = time.perf_counter()
    train_images, train_labels = render_faces(JUDGE_TRAIN_SEED_OFFSET, args.n, args.workers, progress)
    test_images, test_labels = render_faces(JUDGE_TEST_SEED_OFFSET, args.n_test, args.workers, progress)
    render_s = time.perf_counter() - t0
    _say(f"rendered {args.n} training + {args.n_test} held-out faces in {render_s:.1f} s ({args.workers} workers)")

    budget = None
    if args.time_limit is not None:
        budget = (args.time_limit * 60 - (time.perf_counter() - t_start)) * (1 - EVAL_RESERVE)
        if budget <= 0:
            return fail(f"--time-limit {args.time_limit} min was used up by rendering ({render_s:.0f} s)")
    if args.finetune is not None:
        try:
            judge = with_local_heads(load_judge(args.finetune), args.heads)
        except (JudgeCheckpointError, ValueError) as err:
            return fail(str(err))
    else:
        judge = AttributeJudge(local=DEFAULT_LOCAL)
    summary = train(judge, train_images, train_labels, device, args.epochs, batch_size, lr=args.lr,
                    weight_decay=args.weight_decay, seed=args.seed, time_budget_s=budget,
                    amp=not args.no_amp, progress=progress,
                    heads=list(args.heads) if args.finetune is not None else None)
    _say(f"trained {summary['steps']}/{summary['planned_steps']} steps in {summary['train_seconds']:.1f} s, "
         f"loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}")
    del train_images
    acc = evaluate(judge, test_images, test_labels, device, batch_size=max(batch_size, 256))
    _say(f"held-out accuracy on {args.n_test} faces (seeds {JUDGE_TEST_SEED_OFFSET}+i):")
    _say(accuracy_table(acc))
    weak = [f"{k} {100 * acc['clean'][k]:.1f}%" for k in judge.binary if acc["clean"][k] < TARGET_BINARY_ACCURACY]
    if weak:
        print(f"warning: below the {100 * TARGET_BINARY_ACCURACY:.0f}% target on clean held-out faces: "
              f"{', '.join(weak)} (train longer: more --epochs or --n)", file=sys.stderr)

    meta = {
        "train_seed_offset": JUDGE_TRAIN_SEED_OFFSET, "n_train": args.n,
        "test_seed_offset": JUDGE_TEST_SEED_OFFSET, "n_test": args.n_test,
        "demo_faces_version": DEMO_FACES_VERSION, "epochs": args.epochs, "batch_size": batch_size,
        "lr": args.lr, "weight_decay": args.weight_decay, "seed": args.seed, "amp": not args.no_amp,
        "steps": summary["steps"], "planned_steps": summary["planned_steps"],
        "train_seconds": round(summary["train_seconds"], 1), "render_seconds": round(render_s, 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": str(torch.__version__),  # TorchVersion is not plain data
        "accuracy": acc,
    }
    save_judge(judge.cpu(), args.output, **meta)
    report = dict(meta, checkpoint=str(args.output), first_loss=summary["first_loss"],
                  last_loss=summary["last_loss"], loss_curve=summary["loss_curve"],
                  total_seconds=round(time.perf_counter() - t_start, 1))
    atomic_write(report_path, json.dumps(report, indent=2) + "\n")
    _say(f"wrote {args.output} and {report_path} ({report['total_seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    run_main(main)
