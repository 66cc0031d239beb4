"""SWAGAN training: non-saturating logistic GAN loss, lazy R1, path-length regularisation, EMA generator.

One training step ``s`` (rosinality's ``train.py`` schedule, Karras et al. 2020):

1. **D step**: ``L_D = softplus(D(G(z))) + softplus(-D(x))`` (means over the batch), ``z`` fresh, G frozen.
2. **Lazy R1** when ``s % d_reg_every == 0``: ``L_R1 = gamma/2 * E ||grad_x D(x)||^2 * d_reg_every``.
3. **G step**: ``L_G = softplus(-D(G(z)))``, D frozen.
4. **Lazy path length** when ``s % g_reg_every == 0``, on ``batch // path_batch_shrink`` samples:
   ``l = ||J_w^T y||`` with ``J_w = d G(w) / d w`` (per W+ layer, averaged over layers, square-rooted)
   and ``y ~ N(0, I) / sqrt(H W)``; ``L_PL = w_pl * g_reg_every * E (l - a)^2`` where the target
   ``a`` is an EMA (rate ``path_decay``) of the batch mean of ``l``, kept in :attr:`GANTrainer.path_length_mean`.
5. **EMA**: ``g_ema <- lerp(g_ema, G, 1 - beta)``, ``beta = 0.5 ** (global_batch / (1000 * half_life_kimg))``
   (with 10 kimg at batch 32: rosinality's ``0.5 ** (32 / 10000)``).

With lazy regularisation each optimiser runs with ``lr * c`` and ``betas ** c``, ``c = k / (k + 1)``
for its interval ``k`` (Karras et al. 2020, sec. 3.1 and appendix B). Every generator input mixes
two styles with probability ``mixing`` at a random W+ index, and every noise map is drawn fresh.

Randomness: every draw (z, mixing, noise maps, the path-length projection, horizontal flips) comes
from generators reseeded at each step from ``(seed, step, rank)`` (:class:`StepRandom`), and the data
order is a function of ``(seed, step)`` (:class:`~wagi.training.data.StepBatchSampler`), so a run
resumed from a checkpoint repeats the uninterrupted run bit for bit on the CPU (on a GPU up to
cuDNN's non-deterministic algorithms), given the same world size.

Precision: with ``train.amp: bf16`` the main G and D passes run under bf16 autocast (weights, optimiser
states and EMA stay fp32; losses are computed from fp32 logits). The R1 and path-length passes run in
fp32 unless ``train.reg_amp``: both differentiate a gradient, and bf16's 8-bit mantissa makes such
second-order terms noisy.

No per-step host-device synchronisation: losses are summed on the device and read at log steps, the
non-finite check records the first bad step of each term on the device and raises at the next
log or save step, and every random draw is made by device generators.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..builders import build_dataset, dataset_source
from ..checkpoint import (
    LATENT_AVG_SAMPLES,
    LATENT_AVG_SEED,
    load_checkpoint,
    load_generator,
    save_generator,
)
from ..config import normalise_channels
from ..datasets import dataset_description
from ..models.swagan import Discriminator, Generator
from ..models.widen import channel_table, widen_generator
from . import data as D
from .common import RunLogger, TrainerBase, TrainingStopped, restoring_from
from .data import PreloadedImages, preload_images
from .distributed import DistInfo, all_reduce_mean, barrier
from .gan_config import GANConfig, gan_to_dict, save_gan_config, total_steps
from .optim import state_mismatch

logger = logging.getLogger(__name__)

Tensor = torch.Tensor

# Buffers (noise maps, FIR and Haar kernels) never change: DDP need not broadcast them at every forward.
# The option was renamed in recent PyTorch releases.
_DDP_OPTIONS = inspect.signature(nn.parallel.DistributedDataParallel).parameters
_NO_FORWARD_BUFFER_SYNC = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_OPTIONS
                           else {"broadcast_buffers": False})

CHECKPOINT_KIND = "swagan_training"
SAMPLE_SEED = 12_345  # the fixed z of the sample grids: seed + SAMPLE_SEED
LOSS_TERMS = ("d_loss", "r1", "g_loss", "path_loss")  # checked for non-finite values
NO_BAD_STEP = 2 ** 62  # "no non-finite value seen" in the first-bad-step record
BENCHMARK_WARMUP = 20  # steps before timing: cuDNN autotuning, compilation, allocator warm-up


# ------------------------------------------------------------------------------------------ loss formulas


def _at_least_fp32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def d_logistic_loss(real_pred: Tensor, fake_pred: Tensor) -> Tensor:
    """Discriminator logistic loss ``mean softplus(D(fake)) + mean softplus(-D(real))``; logits ``(N, 1)``."""
    return F.softplus(fake_pred).mean() + F.softplus(-real_pred).mean()


def g_nonsaturating_loss(fake_pred: Tensor) -> Tensor:
    """Non-saturating generator loss ``mean softplus(-D(G(z)))`` = ``-mean log sigmoid(D(G(z)))``."""
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred: Tensor, real_img: Tensor) -> Tensor:
    """R1: ``mean_i ||d sum(real_pred) / d real_img_i||^2``, differentiable (needs ``real_img.requires_grad``).

    ``real_pred`` ``(N, 1)`` are the logits of ``real_img`` ``(N, C, H, W)``; sample i's logit depends
    only on image i, so the gradient of the sum gives every per-sample gradient at once.
    """
    (grad,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return _at_least_fp32(grad).pow(2).flatten(1).sum(1).mean()


def path_lengths(fake_img: Tensor, latents: Tensor, noise: Tensor) -> Tensor:
    """Per-sample path lengths ``(N,)``: ``sqrt(mean_layers ||J_w^T y||^2)`` (Karras et al. 2020, eq. 4).

    ``fake_img`` ``(N, C, H, W)`` = G(``latents`` ``(N, n_latent, style_dim)``), ``noise`` ``y`` of the
    image's shape (usually ``randn / sqrt(H W)``). Differentiable w.r.t. the generator's weights.
    """
    (grad,) = torch.autograd.grad((fake_img * noise).sum(), latents, create_graph=True)
    return _at_least_fp32(grad).pow(2).sum(2).mean(1).sqrt()


def ema_beta(step: int, global_batch: int, half_life_kimg: float, rampup: Optional[float] = None) -> float:
    """EMA decay per step: ``0.5 ** (global_batch / half_life_images)``.

    ``rampup`` (NVlabs' ``ema_rampup``) limits the half-life to ``rampup`` x the images seen after this
    step, so that early in training g_ema is not dominated by the random initialisation.
    """
    half_life = half_life_kimg * 1000.0
    if rampup is not None:
        half_life = min(half_life, (step + 1) * global_batch * rampup)
    return 0.5 ** (global_batch / max(half_life, 1e-8))


def mix_latents(w1: Tensor, w2: Tensor, inject_index: Union[int, Tensor], n_latent: int) -> Tensor:
    """Style mixing: W+ ``(N, n_latent, D)`` with ``w1`` ``(N, D)`` at layers ``< inject_index``, ``w2`` after.

    ``inject_index == n_latent`` gives no mixing. Same result as ``Generator.styles_to_latent([w1, w2],
    inject_index)``, but the index may be a device tensor, so no host synchronisation is needed.
    """
    layer = torch.arange(n_latent, device=w1.device).view(1, n_latent, 1)
    return torch.where(layer < inject_index, w1.unsqueeze(1), w2.unsqueeze(1))


# ---------------------------------------------------------------------------------------- random draws


def step_seed(seed: int, step: int, rank: int, stream: str) -> int:
    """A 63-bit seed that is a pure function of ``(seed, step, rank, stream)``."""
    digest = hashlib.blake2b(f"{seed}/{step}/{rank}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch seeds must fit in a signed 64-bit integer


def _channels_last_(module: nn.Module) -> None:
    """channels_last for the 4-D parameters only (modulated conv weights are 5-D and stay as they are)."""
    for p in module.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)


class StepRandom:
    """The random streams of one training step, reseeded from ``(seed, step, rank)`` at every step.

    ``cpu`` draws the few scalars that steer Python control flow (mixing), ``device`` draws z, noise
    maps and the path-length projection on the training device, ``flip`` draws the horizontal flips
    of the *global* batch (rank-independent, so the flips of a sample do not depend on the world size).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.Generator()
        self.dev = torch.Generator(device=device)
        self.flip = torch.Generator(device=device)

    def reseed(self, seed: int, step: int, rank: int) -> None:
        self.cpu.manual_seed(step_seed(seed, step, rank, "cpu"))
        self.dev.manual_seed(step_seed(seed, step, rank, "device"))
        self.flip.manual_seed(step_seed(seed, step, 0, "flip"))

    def latents(self, batch: int, style_dim: int, n_latent: int, mixing: float) -> Tuple[Tensor, Tensor]:
        """``z`` ``(2, N, style_dim)`` and the mixing index (a 0-dim device tensor; ``n_latent``: no mixing)."""
        coin = float(torch.rand((), generator=self.cpu))
        cut = int(torch.randint(1, n_latent, (), generator=self.cpu))
        inject = cut if coin < mixing else n_latent
        z = torch.randn(2, batch, style_dim, generator=self.dev, device=self.device)
        return z, torch.full((), inject, dtype=torch.long, device=self.device)

    def noise(self, batch: int, resolutions: Sequence[int]) -> List[Tensor]:
        return [torch.randn(batch, 1, r, r, generator=self.dev, device=self.device) for r in resolutions]

    def like(self, t: Tensor) -> Tensor:
        return torch.randn(t.shape, generator=self.dev, device=self.device, dtype=t.dtype)

    def flips(self, batch: int, rank: int, world_size: int) -> Tensor:
        """Boolean ``(batch,)``: this rank's slice of the global batch's flip decisions (p = 0.5)."""
        u = torch.rand(batch * world_size, generator=self.flip, device=self.device)
        return u[rank * batch:(rank + 1) * batch] < 0.5


# -------------------------------------------------------------------------------------- trained passes


class GeneratorPass(nn.Module):
    """Mapping, style mixing and synthesis in one module (what DDP and torch.compile wrap).

    ``forward(z (2, N, style_dim), inject_index (0-dim long), noise [num_layers x (N, 1, r, r)])``
    returns ``(image (N, 3, size, size), W+ latent (N, n_latent, style_dim))``.
    """

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, z: Tensor, inject_index: Tensor, noise: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        g = self.generator
        two, batch, dim = z.shape
        w = g.style(z.reshape(two * batch, dim)).view(two, batch, dim)
        latent = mix_latents(w[0], w[1], inject_index, g.n_latent)
        image, _ = g([latent], input_is_latent=True, noise=list(noise))
        return image, latent


class DiscriminatorPass(nn.Module):
    """``forward(*images)`` returns the logits ``(N, 1)`` of each batch: one DDP forward per optimiser step."""

    def __init__(self, discriminator: Discriminator, channels_last: bool = False):
        super().__init__()
        self.discriminator = discriminator
        self.channels_last = channels_last

    def forward(self, *images: Tensor) -> Tuple[Tensor, ...]:
        if self.channels_last:
            images = tuple(x.contiguous(memory_format=torch.channels_last) for x in images)
        return tuple(self.discriminator(x) for x in images)


# ------------------------------------------------------------------------------------------------- data


def build_gan_dataset(cfg: GANConfig) -> Dataset:
    """The training set of ``data.kind`` (:func:`wagi.builders.build_dataset`): ``demo_images`` demo faces
    (seeds 0...) or the images of ``train_dir``; items are ``(3, S, S)`` float tensors in ``[-1, 1]``."""
    return build_dataset(cfg.data, "train", cfg.generator.size)


# ------------------------------------------------------------------------------------- checkpoint state


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _cpu_state(module: nn.Module) -> Dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------- trainer


class GANTrainer(TrainerBase):
    """Build G, D, g_ema, optimisers and data from a validated :class:`GANConfig`; ``train()`` runs it.

    Args:
        cfg: the config (``wagi.training.gan_config.load_gan_config``).
        resume: a training checkpoint path, ``'auto'`` (the run's ``checkpoints/latest.pt`` if it
            exists) or None.
        progress: show a tqdm bar (main rank).
        dist_info: a process-group description; default: join the one ``torchrun`` describes.
        write: create the run directory (config.yaml, metrics, samples, checkpoints); False for benchmarks.

    Attributes: ``G``, ``D``, ``g_ema`` (the plain modules), ``g_optim``, ``d_optim``, ``step`` (steps
    done), ``path_length_mean`` (0-dim tensor), ``max_steps``, ``run_dir``, ``ckpt_dir``.
    """

    def __init__(self, cfg: GANConfig, resume: Optional[str] = None, progress: bool = True,
                 dist_info: Optional[DistInfo] = None, write: bool = True):
        self.cfg = cfg
        ec, gc, dcfg, tc = cfg.experiment, cfg.generator, cfg.discriminator, cfg.train
        self.write = write
        self._start_run(ec, dist_info, progress)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: autotune each convolution once
        self.max_steps = total_steps(cfg, self.dist.world_size)
        self.global_batch = tc.batch_size * self.dist.world_size

        # The failure-prone, cheap things first: the data (a folder scan) before any model is built.
        self.train_set = build_gan_dataset(cfg)
        D.check_batch_fits(len(self.train_set), tc.batch_size, self.dist.world_size, dataset_description(cfg.data))

        self.G = Generator(gc.size, gc.style_dim, gc.n_mlp, gc.channel_multiplier, lr_mlp=gc.lr_mlp,
                           channels=gc.channels, channel_max=gc.channel_max,
                           to_rgb_kernel=gc.to_rgb_kernel).to(self.device)
        self.D = Discriminator(gc.size, dcfg.channel_multiplier, channel_max=dcfg.channel_max).to(self.device)
        self.G.set_fused_modconv(tc.fused_modconv)
        if tc.channels_last:
            _channels_last_(self.G)
            _channels_last_(self.D)
        self.g_ema = copy.deepcopy(self.G).eval()
        for p in self.g_ema.parameters():
            p.requires_grad_(False)
        self._ema_params, self._g_params = list(self.g_ema.parameters()), list(self.G.parameters())
        self.noise_resolutions = [getattr(self.G.noises, f"noise_{i}").shape[-1] for i in range(self.G.num_layers)]

        self.r1_on = tc.r1 > 0 and tc.d_reg_every > 0
        self.pl_on = tc.path_regularize > 0 and tc.g_reg_every > 0
        self.g_optim = self._adam(self.G, *self._adam_settings("g"))
        self.d_optim = self._adam(self.D, *self._adam_settings("d"))
        self.path_length_mean = torch.zeros((), device=self.device)

        if not self._resume(resume) and gc.init is not None:
            self._warm_start(Path(gc.init))

        self.g_pass = GeneratorPass(self.G)
        self.d_pass = DiscriminatorPass(self.D, tc.channels_last)
        self.g_train: nn.Module = self.g_pass
        self.d_train: nn.Module = self.d_pass
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            ddp = nn.parallel.DistributedDataParallel
            self.g_train = ddp(self.g_pass, device_ids=ids, **_NO_FORWARD_BUFFER_SYNC)
            self.d_train = ddp(self.d_pass, device_ids=ids, **_NO_FORWARD_BUFFER_SYNC)
        # The regularisation passes differentiate a gradient, which torch.compile does not support:
        # they use the eager modules; the main passes may be compiled.
        self.g_fast, self.d_fast, self.d_frozen = self.g_train, self.d_train, self.d_pass
        if tc.compile:
            self.g_fast, self.d_fast = torch.compile(self.g_train), torch.compile(self.d_train)
            self.d_frozen = torch.compile(self.d_pass)

        self.rand = StepRandom(self.device)
        self.sample_z = torch.randn(tc.n_sample, gc.style_dim,
                                    generator=torch.Generator().manual_seed(ec.seed + SAMPLE_SEED))
        self._open_run_folder(lambda path: save_gan_config(cfg, path))
        self._reset_stats()
        self._first_bad = {t: torch.full((), NO_BAD_STEP, dtype=torch.long, device=self.device) for t in LOSS_TERMS}
        self._preloaded: Optional[PreloadedImages] = None

    # ------------------------------------------------------------------------------------------ setup

    def _adam_settings(self, which: str) -> Tuple[float, Tuple[float, float]]:
        """``(lr, betas)`` of the G (``'g'``) or D (``'d'``) optimiser: ``train.g_lr`` / ``train.d_lr`` (else
        ``train.lr``) and ``train.betas`` with the lazy-regularisation correction ``lr * c``, ``betas ** c``,
        ``c = k / (k + 1)`` for the regulariser's interval ``k`` (``c = 1`` when it is off)."""
        tc = self.cfg.train
        if which == "g":
            lr, reg_every = (tc.g_lr if tc.g_lr is not None else tc.lr), (tc.g_reg_every if self.pl_on else 0)
        else:
            lr, reg_every = (tc.d_lr if tc.d_lr is not None else tc.lr), (tc.d_reg_every if self.r1_on else 0)
        c = reg_every / (reg_every + 1) if reg_every > 0 else 1.0
        return lr * c, (tc.betas[0] ** c, tc.betas[1] ** c)

    def _adam(self, module: nn.Module, lr: float, betas: Tuple[float, float]) -> torch.optim.Optimizer:
        fused = {"fused": True} if self.device.type == "cuda" else {}
        return torch.optim.Adam(module.parameters(), lr=lr, betas=betas, **fused)

    def _apply_adam_settings(self) -> None:
        """Set both optimisers' lr and betas from the config (a resumed Adam state carries the saved run's):
        the config wins, so ``--set train.lr=...`` takes effect on ``--resume``; unchanged values are a no-op."""
        for which, optim in (("g", self.g_optim), ("d", self.d_optim)):
            lr, betas = self._adam_settings(which)
            for group in optim.param_groups:
                if group["lr"] != lr:
                    logger.info("%s optimiser: lr %.6g -> %.6g (from this config)", which.upper(), group["lr"], lr)
                if tuple(group["betas"]) != betas:
                    logger.info("%s optimiser: betas %s -> %s (from this config)", which.upper(),
                                tuple(group["betas"]), betas)
                group["lr"], group["betas"] = lr, betas

    @staticmethod
    def _requires_grad(module: nn.Module, flag: bool) -> None:
        for p in module.parameters():
            p.requires_grad_(flag)

    def _autocast(self, regularizer: bool = False):
        tc = self.cfg.train
        enabled = tc.amp == "bf16" and (tc.reg_amp or not regularizer)
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    # ------------------------------------------------------------------------------------ checkpoints

    def training_state(self) -> Dict[str, Any]:
        return {**self._run_state(), "path_length_mean": self.path_length_mean.detach().cpu().clone(),
                "global_batch": self.global_batch, "kimg": self.step * self.global_batch / 1000.0,
                "max_steps": self.max_steps}

    @torch.no_grad()
    def latent_avg(self) -> Tensor:
        """Mean of ``LATENT_AVG_SAMPLES`` mapped z of g_ema (fixed seed), ``(1, style_dim)``, fp32."""
        rng = torch.Generator().manual_seed(LATENT_AVG_SEED)
        return self.g_ema.mean_latent(LATENT_AVG_SAMPLES, generator=rng).float()

    def save(self) -> Optional[Path]:
        """Atomically write ``checkpoints/step_XXXXXXX.pt`` and ``latest.pt`` (main rank; returns the path).

        The file is a WaGI generator file (:func:`wagi.checkpoint.save_generator`: ``format``,
        ``generator`` kwargs, ``config``, ``g_ema``, ``latent_avg``) plus ``kind``, ``discriminator``
        kwargs, ``g``, ``d``, ``g_optim``, ``d_optim`` and ``training`` (step, rng, path_length_mean, ...).
        """
        def write(path: Path) -> None:
            save_generator(path, self.g_ema, self.latent_avg(), config=gan_to_dict(self.cfg), kind=CHECKPOINT_KIND,
                           discriminator=dict(self.D.config), g=_cpu_state(self.G), d=_cpu_state(self.D),
                           g_optim=_to_cpu(self.g_optim.state_dict()), d_optim=_to_cpu(self.d_optim.state_dict()),
                           training=self.training_state())

        return self._write_checkpoint(write, self.cfg.train.keep_checkpoints)

    def _warm_start(self, path: Path) -> None:
        """Start G and g_ema from a trained generator (``generator.init``); D and the optimisers start fresh.

        Used to continue training a generator whose full training state is gone (an exported fp16
        g_ema file is enough): the architecture must match the config exactly, except that a generator
        narrower-or-equal at every feature resolution is widened to the config's channel table first
        (:func:`wagi.models.widen.widen_generator`, seeded with ``experiment.seed``: the same images at step 0).
        """
        g, _, info = load_generator(path, trust=self.cfg.generator.trust_checkpoint)
        theirs_k, mine_k = g.config["to_rgb_kernel"], self.G.config["to_rgb_kernel"]
        if theirs_k != mine_k:
            raise ValueError(f"generator.init: {path} has {theirs_k}x{theirs_k} ToRGB convs but "
                             f"generator.to_rgb_kernel is {mine_k}; set generator.to_rgb_kernel: {theirs_k}")
        old, new = channel_table(g), channel_table(self.G)
        if old.keys() == new.keys() and old != new and all(old[r] <= new[r] for r in old):
            g = widen_generator(g, new, seed=self.cfg.experiment.seed)
            if self.dist.is_main:
                logger.info("warm start: widened %s from %s to %s channels", path, old, new)
        mine = self.G.state_dict()
        theirs = g.state_dict()
        bad = [k for k in mine if k not in theirs or theirs[k].shape != mine[k].shape]
        if bad or len(theirs) != len(mine):
            raise ValueError(f"generator.init: {path} does not match this config's generator "
                             f"(first mismatching key: {bad[0] if bad else 'extra keys'})")
        with torch.no_grad():
            self.G.load_state_dict({k: v.float() for k, v in theirs.items()}, strict=True)
            self.g_ema.load_state_dict(self.G.state_dict(), strict=True)
        if self.dist.is_main:
            logger.info("warm start: G and g_ema from %s (%s); D starts fresh", path, info["format"])

    def _load_training_state(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location="cpu")
        if not isinstance(ckpt, dict) or ckpt.get("kind") != CHECKPOINT_KIND or "training" not in ckpt:
            raise ValueError(f"--resume: {path} is not a SWAGAN training checkpoint")
        with restoring_from(path):
            theirs = ckpt.get("config", {})
            mine = gan_to_dict(self.cfg)
            for section in ("generator", "discriminator"):
                for key, value in mine[section].items():
                    if key == "trust_checkpoint":
                        continue  # how a file may be opened, not part of the network
                    other = theirs.get(section, {}).get(key)
                    if key == "channels":  # a config that went through JSON has str resolution keys
                        other = normalise_channels(other)
                    if other != value:
                        raise ValueError(f"--resume: {section}.{key} is {other!r} in {path} "
                                         f"but {value!r} in this config")
            self.G.load_state_dict(ckpt["g"], strict=True)
            self.D.load_state_dict(ckpt["d"], strict=True)
            self.g_ema.load_state_dict(ckpt["g_ema"], strict=True)
            self.g_optim.load_state_dict(ckpt["g_optim"])
            self.d_optim.load_state_dict(ckpt["d_optim"])
            for name, optim in (("G", self.g_optim), ("D", self.d_optim)):
                mismatch = state_mismatch(optim)
                if mismatch:
                    raise ValueError(f"--resume: {path}: {name} {mismatch}")
            self._apply_adam_settings()
            tr = ckpt["training"]
            self.path_length_mean.copy_(tr["path_length_mean"])
            self._restore_run_state(tr)
        if self.dist.is_main:
            note = ""
            if int(tr.get("world_size", 1)) != self.dist.world_size:
                note = (f" (it was written with {tr.get('world_size')} processes, this run has "
                        f"{self.dist.world_size}: the random streams differ from the original run)")
            logger.info("resumed from %s at step %d%s", path, self.step, note)

    # --------------------------------------------------------------------------------------- samples

    @torch.no_grad()
    def sample_images(self) -> Tensor:
        """g_ema's images of the fixed sample z, with the stored noise maps: ``(n_sample, 3, S, S)`` on the CPU."""
        out = []
        for z in self.sample_z.split(self.cfg.train.batch_size):
            img, _ = self.g_ema([z.to(self.device)], randomize_noise=False)
            out.append(img.float().cpu())
        return torch.cat(out)

    def write_samples(self) -> Optional[Path]:
        if not (self.dist.is_main and self.write):
            return None
        from torchvision.utils import make_grid, save_image

        imgs = self.sample_images()
        grid = make_grid(imgs, nrow=max(1, math.ceil(math.sqrt(imgs.shape[0]))), normalize=True,
                         value_range=(-1, 1))
        out = self.run_dir / "samples"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"step_{self.step:07d}.png"
        save_image(grid, path)
        self.logger.image("samples/g_ema", grid, self.step)
        return path

    # ---------------------------------------------------------------------------------- bookkeeping

    def _reset_stats(self) -> None:
        self._sums: Dict[str, Tensor] = {}
        self._counts: Dict[str, int] = {}
        self._interval_steps = 0
        self._data_wait = 0.0
        self._interval_t0 = time.perf_counter()

    def _record(self, name: str, value: Tensor, step: int) -> None:
        v = value.detach().float()
        self._sums[name] = self._sums[name] + v if name in self._sums else v.clone()
        self._counts[name] = self._counts.get(name, 0) + 1
        if name in self._first_bad:
            bad = torch.where(torch.isfinite(v), NO_BAD_STEP, step)
            torch.minimum(self._first_bad[name], bad, out=self._first_bad[name])

    def check_finite(self) -> None:
        """Raise :class:`TrainingStopped` naming the loss term and step of the first non-finite value."""
        names = list(self._first_bad)
        first = torch.stack([self._first_bad[n] for n in names])
        if self.dist.enabled:
            torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MIN)
        values = first.tolist()
        step = min(values)
        if step < NO_BAD_STEP:
            term = names[values.index(step)]
            raise TrainingStopped(f"non-finite loss term '{term}' at step {step}; stopping. The last good checkpoint "
                                  f"is kept in {self.ckpt_dir}")

    def _flush_stats(self) -> Dict[str, float]:
        """Means since the last flush (averaged over ranks) plus speed figures; resets the sums."""
        names = sorted(self._sums)
        values: Dict[str, float] = {}
        if names:
            stacked = torch.stack([self._sums[n] / self._counts[n] for n in names])
            stacked = all_reduce_mean(stacked, self.dist)
            values = dict(zip(names, stacked.tolist()))
        if self.pl_on:
            values["path_length_mean"] = float(self.path_length_mean)
        elapsed = max(time.perf_counter() - self._interval_t0, 1e-9)
        values["steps_per_s"] = self._interval_steps / elapsed
        values["data_wait_frac"] = self._data_wait / elapsed
        values["kimg"] = self.step * self.global_batch / 1000.0
        values["ema_beta"] = ema_beta(self.step, self.global_batch, self.cfg.train.ema_half_life_kimg,
                                      self.cfg.train.ema_rampup)
        self._reset_stats()
        return values

    # -------------------------------------------------------------------------------------- the step

    def _prepare_real(self, real: Tensor) -> Tensor:
        real = real.to(self.device, non_blocking=True)
        if self.cfg.data.hflip:
            flips = self.rand.flips(real.shape[0], self.dist.rank, self.dist.world_size)
            real = torch.where(flips.view(-1, 1, 1, 1), real.flip(-1), real)
        return real

    def _fake_inputs(self, batch: int) -> Tuple[Tensor, Tensor, List[Tensor]]:
        gc = self.G
        z, inject = self.rand.latents(batch, gc.style_dim, gc.n_latent, self.cfg.train.mixing)
        return z, inject, self.rand.noise(batch, self.noise_resolutions)

    def d_step(self, real: Tensor) -> Tensor:
        """One discriminator update on ``real`` (already on the device) and fresh fakes; returns L_D."""
        s = self.step
        self._requires_grad(self.G, False)
        self._requires_grad(self.D, True)
        z, inject, noise = self._fake_inputs(real.shape[0])
        with torch.no_grad(), self._autocast():
            fake, _ = self.g_fast(z, inject, noise)
        with self._autocast():
            real_pred, fake_pred = self.d_fast(real, fake)
        real_pred, fake_pred = real_pred.float(), fake_pred.float()
        d_loss = d_logistic_loss(real_pred, fake_pred)
        self.d_optim.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optim.step()
        self._record("d_loss", d_loss, s)
        self._record("real_score", real_pred.mean(), s)
        self._record("fake_score", fake_pred.mean(), s)
        return d_loss.detach()

    def d_reg_step(self, real: Tensor) -> Tensor:
        """Lazy R1 update: ``gamma / 2 * R1 * d_reg_every``; returns the R1 penalty."""
        tc, s = self.cfg.train, self.step
        real = real.detach().requires_grad_(True)
        with self._autocast(regularizer=True):
            (real_pred,) = self.d_train(real)
        real_pred = real_pred.float()
        r1 = r1_penalty(real_pred, real)
        self.d_optim.zero_grad(set_to_none=True)
        # 0 * logits ties every parameter (also the last bias, whose R1 gradient is none) into the
        # graph, so that DDP reduces a gradient for each of them.
        (tc.r1 / 2 * r1 * tc.d_reg_every + 0 * real_pred.sum()).backward()
        self.d_optim.step()
        self._record("r1", r1, s)
        return r1.detach()

    def g_step(self, batch: int) -> Tensor:
        """One generator update against the frozen discriminator; returns L_G."""
        s = self.step
        self._requires_grad(self.G, True)
        self._requires_grad(self.D, False)
        z, inject, noise = self._fake_inputs(batch)
        with self._autocast():
            fake, _ = self.g_fast(z, inject, noise)
            (fake_pred,) = self.d_frozen(fake)
        g_loss = g_nonsaturating_loss(fake_pred.float())
        self.g_optim.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optim.step()
        self._record("g_loss", g_loss, s)
        return g_loss.detach()

    def g_reg_step(self, batch: int) -> Tensor:
        """Lazy path-length update on ``batch // path_batch_shrink`` samples; returns the penalty."""
        tc, s = self.cfg.train, self.step
        n = max(1, batch // tc.path_batch_shrink)
        z, inject, noise = self._fake_inputs(n)
        with self._autocast(regularizer=True):
            fake, latent = self.g_train(z, inject, noise)
        fake = fake.float()
        y = self.rand.like(fake) / math.sqrt(fake.shape[2] * fake.shape[3])
        lengths = path_lengths(fake, latent, y)
        # The target is shared by all ranks (mean over the global batch), so the buffer stays identical.
        batch_mean = all_reduce_mean(lengths.mean().detach(), self.dist)
        target = self.path_length_mean + tc.path_decay * (batch_mean - self.path_length_mean)
        path_loss = (lengths - target).pow(2).mean()
        self.g_optim.zero_grad(set_to_none=True)
        (tc.path_regularize * tc.g_reg_every * path_loss + 0 * fake[0, 0, 0, 0]).backward()
        self.g_optim.step()
        self.path_length_mean.copy_(target)
        self._record("path_loss", path_loss, s)
        self._record("path_length", lengths.mean(), s)
        return path_loss.detach()

    @torch.no_grad()
    def update_ema(self) -> None:
        beta = ema_beta(self.step, self.global_batch, self.cfg.train.ema_half_life_kimg, self.cfg.train.ema_rampup)
        torch._foreach_lerp_(self._ema_params, self._g_params, 1.0 - beta)  # one fused update for all tensors

    def train_step(self, real: Tensor) -> None:
        """One full step (D, lazy R1, G, lazy path length, EMA) on this rank's ``real`` batch ``(N, 3, S, S)``.

        During the first ``train.d_warmup`` steps only D and its R1 penalty are updated.
        """
        tc = self.cfg.train
        s = self.step
        self.rand.reseed(self.cfg.experiment.seed, s, self.dist.rank)
        real = self._prepare_real(real)
        self.d_step(real)
        if self.r1_on and s % tc.d_reg_every == 0:
            self.d_reg_step(real)
        if s >= tc.d_warmup:  # D warm-up (a fresh D beside a trained G): G, path length and EMA wait
            self.g_step(real.shape[0])
            if self.pl_on and s % tc.g_reg_every == 0:
                self.g_reg_step(real.shape[0])
            self.update_ema()
        self.step += 1
        self._interval_steps += 1

    # ---------------------------------------------------------------------------------------- data

    def _loader(self, sampler: D.StepBatchSampler) -> Iterator[Tensor]:
        """The batches of ``sampler`` through a DataLoader, moved to the device."""
        dc = self.cfg.data
        extra = {"prefetch_factor": dc.prefetch, "persistent_workers": True} if dc.workers > 0 else {}
        loader = DataLoader(self.train_set, batch_sampler=sampler, num_workers=dc.workers,
                            collate_fn=D.collate_images, pin_memory=self.device.type == "cuda", **extra)
        for x in loader:
            yield x.to(self.device, non_blocking=True)

    def _preload(self) -> PreloadedImages:
        if self._preloaded is None:
            dc = self.cfg.data
            source = dataset_source(dc, len(self.train_set), self.cfg.generator.size)
            self._preloaded = D.load_preloaded(self.train_set, source, self.device, self.dist, dc.cache_file,
                                               dc.workers, self.progress, render=preload_images)
        return self._preloaded

    # ------------------------------------------------------------------------------------------ loops

    def _train(self, time_limit_s: Optional[float]) -> Dict[str, float]:
        tc = self.cfg.train
        last: Dict[str, float] = {}
        with self._training_slice(time_limit_s, self.max_steps, self.cfg.experiment.name) as pbar:
            it = self.batches()
            self._reset_stats()
            while self.step < self.max_steps:
                t = time.perf_counter()
                real = next(it)
                self._data_wait += time.perf_counter() - t
                self.train_step(real)
                if pbar is not None:
                    pbar.update(1)
                s = self.step
                final = s == self.max_steps
                log_now = s % tc.log_every == 0 or final
                if log_now or s % tc.save_every == 0:
                    self.check_finite()
                if log_now:
                    last = self._flush_stats()
                    self.logger.log("train", s, last)
                    if pbar is not None:
                        pbar.set_postfix(d=f"{last.get('d_loss', float('nan')):.3f}",
                                         g=f"{last.get('g_loss', float('nan')):.3f}")
                if s % tc.sample_every == 0 or final:
                    self.write_samples()
                if self._end_step(self.save, s % tc.save_every == 0, final, at_sync_point=log_now,
                                  before_stop=self.check_finite):
                    break
        return last

    def benchmark(self, n_steps: int, warmup: int = BENCHMARK_WARMUP) -> Dict[str, Any]:
        """Time ``n_steps`` training steps after ``warmup`` ones (data loading included; nothing is written).

        Returns ``steps_per_s``, ``images_per_s`` (all ranks), ``ms_per_step``, ``max_memory_gib``
        (CUDA peak of this rank, else None), ``device``, ``world_size`` and the speed switches.
        """
        if n_steps < 1:
            raise ValueError(f"benchmark needs at least one step, got {n_steps}")
        it = self.batches()

        def sync():
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            barrier(self.dist)

        for _ in range(warmup):
            self.train_step(next(it))
        sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        for _ in range(n_steps):
            self.train_step(next(it))
        sync()
        elapsed = time.perf_counter() - t0
        self.check_finite()
        tc = self.cfg.train
        return {
            "steps_per_s": n_steps / elapsed, "ms_per_step": 1000.0 * elapsed / n_steps,
            "images_per_s": n_steps * self.global_batch / elapsed,
            "max_memory_gib": (torch.cuda.max_memory_allocated(self.device) / 2 ** 30
                               if self.device.type == "cuda" else None),
            "device": self.device_name(),
            "world_size": self.dist.world_size, "batch_size": tc.batch_size, "size": self.cfg.generator.size,
            "amp": tc.amp, "fused_modconv": tc.fused_modconv, "channels_last": tc.channels_last,
            "compile": tc.compile, "preload": self.cfg.data.preload, "steps": n_steps, "warmup": warmup,
        }


__all__ = [
    "GANTrainer", "GeneratorPass", "DiscriminatorPass", "StepRandom", "RunLogger", "PreloadedImages",
    "d_logistic_loss", "g_nonsaturating_loss", "r1_penalty", "path_lengths", "ema_beta", "mix_latents",
    "step_seed", "build_gan_dataset", "preload_images", "TrainingStopped", "CHECKPOINT_KIND",
]
