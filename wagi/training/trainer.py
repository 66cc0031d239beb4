"""The WaGI trainer: encoder stage, fusion stage, validation, logging, atomic checkpoints, exact resume, DDP.

Stages (``train.stage``):

* ``encoder``: train the basic encoder (pSp / e4e / ReStyle) against the frozen generator. ReStyle runs
  ``encoder.n_iters`` refinement steps per batch; each step's loss is back-propagated with the previous
  latent and image detached and the gradients accumulate into one optimiser step (as ReStyle does).
* ``fusion``: freeze the encoder (loaded from ``train.encoder_ckpt``) and train the fusion module and its
  aligner. The distortion Δ = x − x̂0 is warped by a random perspective; the aligner must undo the warp
  given x̂0 (L1, weight ``loss.aligner``) and the fusion consumes the aligned map, so it learns to work
  with the imperfectly aligned residuals it will see on edited images. With ``fusion.edit_aug`` a share of the
  samples also gets a real latent edit and an edit pass (:mod:`wagi.training.edit_aug`, loss ``loss.edit_aug``).
* ``joint``: everything that is not frozen trains together.

A progressive head (e4e) with ``encoder.progressive_every`` set trains W only for ``encoder.progressive_start``
steps, then one more W+ delta every ``progressive_every`` steps (:func:`progressive_n_active`, set before each
step, so a resumed run follows the same schedule); the delta regulariser sums over the active deltas only.
Checkpoints record ``n_active``.

The order of data and every augmentation are pure functions of ``(seed, step)`` (see
:mod:`wagi.training.data`), so a run resumed from a checkpoint continues exactly as the uninterrupted run,
and W processes with batch b follow one process with batch W·b. With ``data.preload`` the batches are
gathered from a uint8 copy of the training set on the training device, in the same order.

Runs go in time slices: ``train(time_limit_s=...)`` or a first SIGINT / SIGTERM stops after the current
step with a checkpoint (``stop_reason`` says why), and ``--resume auto`` continues exactly. Checkpoints
record ``training.wall_time_s`` (seconds in ``train()`` over all slices) and ``training.cards``.

After each validation whose MSE is the lowest so far, ``checkpoints/best.pt`` is written atomically (the
same content as a periodic checkpoint; never pruned, and ``latest.pt`` does not point at it). Checkpoints
record ``training.best_val`` (that MSE) and ``training.best_step``, so a resumed run keeps them.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import wavelets as wv
from ..builders import build_criterion, build_datasets, build_generator, dataset_source
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import FusionConfig, WaGIConfig, save_config
from ..datasets import dataset_description
from ..editing.factorization import sefa_directions
from ..losses import InversionCriterion, NonFiniteLossError
from ..models.fusion import random_perspective
from ..models.wagi import WaGI
from ..tensors import resize
from . import data as D
from .common import TrainerBase, TrainingStopped, restoring_from
from .distributed import DistInfo, all_reduce_mean, barrier
from .edit_aug import EditAugmentation, edit_change_mask, edit_loss, edit_target
from .optim import apply_hyperparameters, build_optimizer, build_scheduler, state_mismatch

logger = logging.getLogger(__name__)

BEST = "best.pt"  # the checkpoint with the lowest validation MSE so far (beside latest.pt; never pruned)


def progressive_n_active(step: int, n_latent: int, every: Optional[int], start: int = 0) -> int:
    """e4e's progressive schedule: the W+ deltas a progressive head trains at ``step`` (0-based).

    ``every`` None: all ``n_latent - 1`` from the start. Otherwise none (W only) for the first ``start`` steps,
    then one at step ``start`` and one more every ``every`` steps (delta k from step ``start + (k - 1) * every``),
    up to ``n_latent - 1``: e4e's ``progressive_start`` / ``progressive_step_every``.
    """
    last = n_latent - 1
    if every is None:
        return last
    if step < start:
        return 0
    return min(last, 1 + (step - start) // every)


class EncoderStep(nn.Module):
    """One ReStyle refinement step (or the single psp/e4e pass) and its loss; DDP wraps this module."""

    def __init__(self, model: WaGI, criterion: InversionCriterion, loss_size: Optional[int]):
        super().__init__()
        self.model, self.criterion, self.loss_size = model, criterion, loss_size

    def forward(self, x: torch.Tensor, w_prev: torch.Tensor, img_prev: Optional[torch.Tensor]):
        m = self.model
        w = m.encoder_step(x, w_prev, img_prev)
        img = m.decode(w)
        ls = self.loss_size
        loss, logs = self.criterion(resize(img, ls) if ls else img, resize(x, ls) if ls else x, w_plus=w,
                                    latent_avg=m.latent_avg, n_active=m.n_active)
        return loss, logs, w, img


class FusionStep(nn.Module):
    """The fusion-stage forward: frozen inversion, warped residual, aligner, fused pass, losses; with
    ``edit_aug`` (:class:`~wagi.training.edit_aug.EditAugmentation`) also the edit pass of the edited samples."""

    def __init__(self, model: WaGI, criterion: InversionCriterion, loss_size: Optional[int], aligner_lambda: float,
                 distortion_scale: float, aug_prob: float, edit_aug: Optional[EditAugmentation] = None,
                 edit_aug_lambda: float = 0.0):
        super().__init__()
        self.model, self.criterion, self.loss_size = model, criterion, loss_size
        self.aligner_lambda, self.distortion_scale, self.aug_prob = aligner_lambda, distortion_scale, aug_prob
        self.edit_aug, self.edit_aug_lambda = edit_aug, edit_aug_lambda

    def forward(self, x: torch.Tensor, seeds: List[int], train_encoder: bool = False):
        m = self.model
        with torch.set_grad_enabled(train_encoder):
            w = m.encode(x)
        with torch.no_grad() if not train_encoder else torch.enable_grad():
            branches = m.synthesize(w)
            base = m.compose(branches)
        fusion = m.fusion
        extra = {}
        source_map = None
        if fusion.has_aligner:
            delta = (x - base).detach()
            warped = torch.stack([random_perspective(delta[i:i + 1], self.distortion_scale, self.aug_prob,
                                                     generator=torch.Generator().manual_seed(int(s)))[0]
                                  for i, s in enumerate(seeds)])
            source_map = fusion.aligner(warped, base)
            extra["aligner"] = (self.aligner_lambda, F.l1_loss(source_map, delta))
        fuse_args = m.fusion_outputs(x, base, source_map=source_map)
        img = m.fused_decode(w, branches, fuse_args)
        ls = self.loss_size
        side = {}
        if self.edit_aug is not None:
            value, side = self.edit_pass(x, w.detach(), base.detach(), seeds)
            extra["edit_aug"] = (self.edit_aug_lambda, value)
        loss, logs = self.criterion(resize(img, ls) if ls else img, resize(x, ls) if ls else x, w_plus=w,
                                    latent_avg=m.latent_avg, extra_terms=extra, n_active=m.n_active)
        logs.update(side)
        return loss, logs, w, img

    def edit_pass(self, x: torch.Tensor, w: torch.Tensor, base: torch.Tensor, seeds: List[int]):
        """``(L_edit, side logs)`` of the samples that :attr:`edit_aug` edits (:mod:`wagi.training.edit_aug`);
        L_edit is 0 without gradient when none is. Side logs: ``edit_aug_share`` (edited samples / batch) and
        ``edit_aug_changed`` (the mean of the change mask m over the edited samples)."""
        m, ls = self.model, self.loss_size
        picked, shifts = self.edit_aug.draw_batch(seeds)
        share = len(picked) / max(len(seeds), 1)
        if not picked:
            return x.new_zeros(()), {"edit_aug_share": share, "edit_aug_changed": 0.0}
        idx = torch.tensor(picked, device=x.device)
        xs, bs = x[idx], base[idx]
        we = w[idx] + shifts.to(w).unsqueeze(1)  # the same shift for every W+ entry
        with torch.no_grad():
            branches = m.synthesize(we)
            edited = m.compose(branches)
            lo, hi, dilate = self.edit_aug.mask
            mask = edit_change_mask(bs, edited, lo, hi, dilate)
            target = edit_target(xs, bs, edited, mask)
        img = m.fused_decode(we, branches, m.fusion_outputs(xs, bs, target=edited))
        value = edit_loss(resize(img, ls) if ls else img, resize(target, ls) if ls else target)
        return value, {"edit_aug_share": share, "edit_aug_changed": float(mask.mean())}


class Trainer(TrainerBase):
    """Build everything from a validated config and run ``train()``. See the module docstring.

    Attributes: ``model`` (:class:`WaGI`), ``optimizer``, ``scheduler``, ``step`` (steps done), ``run_dir``,
    ``ckpt_dir``, ``wall_time_s``, ``cards``, ``stop_reason`` (None, or why the last ``train()`` stopped early).
    """

    def __init__(self, cfg: WaGIConfig, resume: Optional[str] = None, progress: bool = True,
                 dist_info: Optional[DistInfo] = None):
        self.cfg = cfg
        self._start_run(cfg.experiment, dist_info, progress)
        tc = cfg.train

        # Build the cheap, failure-prone things first (weights files, datasets) before heavy work; the generator
        # checkpoint comes first, so that a config that does not match it fails at once.
        generator = latent_avg = None
        if cfg.generator.ckpt:
            generator, latent_avg = build_generator(cfg)
        self.criterion = build_criterion(cfg).to(self.device)
        self.train_set, self.test_set = build_datasets(cfg)
        D.check_batch_fits(len(self.train_set), tc.batch_size, self.dist.world_size, dataset_description(cfg.data))
        self.model = WaGI.from_config(cfg, generator=generator, latent_avg=latent_avg).to(self.device)
        self._setup_stage()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, tc.optimizer, tc.lr, tc.betas, tc.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, tc.scheduler, tc.max_steps)
        self.best_val: Optional[float] = None  # lowest validation MSE so far, and the step it was measured at
        self.best_step: Optional[int] = None
        self._preloaded: Optional[D.PreloadedImages] = None

        self._resume(resume)
        self._apply_progressive_schedule()  # a function of the step: a resumed run continues the schedule

        if tc.stage == "encoder":
            self.step_module: nn.Module = EncoderStep(self.model, self.criterion, cfg.loss.loss_size)
        else:
            fa = cfg.fusion.aligner
            self.step_module = FusionStep(self.model, self.criterion, cfg.loss.loss_size, cfg.loss.aligner,
                                          fa.distortion_scale, fa.aug_prob, self._edit_augmentation(),
                                          cfg.loss.edit_aug)
        self.ddp_module = self.step_module
        if self.dist.enabled:
            # e4e's progressive schedule leaves the heads of inactive deltas out of the loss until their stage:
            # DDP must then look for parameters without a gradient at every step.
            staged = self.model.progressive and cfg.encoder.progressive_every is not None
            self.ddp_module = nn.parallel.DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=staged)

        self._open_run_folder(lambda path: save_config(cfg, path))
        self._set_train_modes()

    # --------------------------------------------------------------------------------------- setup

    def _setup_stage(self) -> None:
        cfg, m = self.cfg, self.model
        stage = cfg.train.stage
        for p in m.parameters():
            p.requires_grad_(False)
        if stage in ("encoder", "joint"):
            for p in m.encoder.parameters():
                p.requires_grad_(True)
        if stage in ("fusion", "joint"):
            if m.fusion is None:
                raise ValueError(f"train.stage '{stage}' needs fusion.kind 'wavelet' or 'feature'")
            for p in m.fusion.parameters():
                p.requires_grad_(True)
        if cfg.train.train_generator:
            for p in m.generator.parameters():
                p.requires_grad_(True)
        if stage == "fusion":
            if not cfg.train.encoder_ckpt:
                raise ValueError("train.stage 'fusion' needs train.encoder_ckpt (a trained encoder checkpoint)")
            self._load_encoder(cfg.train.encoder_ckpt)
        if cfg.train.fusion_ckpt:
            if stage == "encoder" or m.fusion is None:
                raise ValueError("train.fusion_ckpt starts a fusion module: it needs train.stage 'fusion' or 'joint' "
                                 "and a fusion.kind")
            self._load_fusion(cfg.train.fusion_ckpt)
        if stage == "encoder" and m.fusion is not None:
            m.fusion = None  # the fusion module has no role in the encoder stage
            m.config["fusion"]["kind"] = "none"  # so that its checkpoints load as encoder-only models

    def _edit_augmentation(self) -> Optional[EditAugmentation]:
        """``fusion.edit_aug`` (None when its prob is 0). The SeFa directions are computed once, from the
        generator as it is at the start of the run."""
        ea = self.cfg.fusion.edit_aug
        if ea.prob <= 0:
            return None
        if self.cfg.fusion.edit_mode != "recompute" and self.dist.is_main:
            logger.warning("fusion.edit_aug trains the fusion's recompute edit pass, but fusion.edit_mode is %r: "
                           "the saved model's edits will not use it (set fusion.edit_mode: recompute, or evaluate "
                           "with --edit-mode recompute)", self.cfg.fusion.edit_mode)
        sefa = None
        if "sefa" in ea.sources:
            sefa, _ = sefa_directions(self.model.generator, n_components=ea.sefa_components)
        return EditAugmentation(ea.prob, ea.strength, ea.sources, self.cfg.generator.style_dim, sefa=sefa,
                                mask=ea.mask)

    def _load_encoder(self, path: str) -> None:
        ckpt = load_checkpoint(path, map_location="cpu")
        if not isinstance(ckpt, dict) or ckpt.get("kind") != "wagi_model":
            raise ValueError(f"train.encoder_ckpt: {path} is not a WaGI checkpoint")
        with restoring_from(path, "train.encoder_ckpt"):
            self._apply_encoder(ckpt, path)

    # the fusion settings that decide its modules' shapes and what they compute: a start file must share them
    FUSION_KEYS = ("kind", "resolutions", "levels", "width", "source", "cascade")

    def _load_fusion(self, path: str) -> None:
        """``train.fusion_ckpt``: the fusion module (and its aligner) of a WaGI model or training checkpoint, to
        continue or fine-tune it; the rest of the run (optimiser, step count) starts fresh."""
        ckpt = load_checkpoint(path, map_location="cpu")
        if not isinstance(ckpt, dict) or ckpt.get("kind") != "wagi_model":
            raise ValueError(f"train.fusion_ckpt: {path} is not a WaGI checkpoint")
        with restoring_from(path, "train.fusion_ckpt"):
            own, theirs = self.cfg.fusion, ckpt["config"]["fusion"]
            defaults = FusionConfig()  # what a file written before a key existed was trained with
            for key in self.FUSION_KEYS:
                mine, saved = getattr(own, key), theirs.get(key, getattr(defaults, key))
                if saved != mine:
                    raise ValueError(f"train.fusion_ckpt: fusion.{key} is {saved!r} in {path} "
                                     f"but {mine!r} in this config")
            state = {k[len("fusion."):]: v.float() if v.is_floating_point() else v
                     for k, v in ckpt["state_dict"].items() if k.startswith("fusion.")}
            self.model.fusion.load_state_dict(state, strict=True)

    def _apply_encoder(self, ckpt: Dict[str, Any], path: str) -> None:
        own = self.cfg.encoder
        theirs = ckpt["config"]["encoder"]
        for key in ("kind", "backbone", "input_size", "head_channels"):
            if theirs.get(key) != getattr(own, key):
                raise ValueError(f"train.encoder_ckpt: encoder.{key} is {theirs.get(key)!r} in {path} "
                                 f"but {getattr(own, key)!r} in this config")
        enc = {k[len("encoder."):]: v.float() if v.is_floating_point() else v
               for k, v in ckpt["state_dict"].items() if k.startswith("encoder.")}
        self.model.encoder.load_state_dict(enc, strict=True)
        self.model.latent_avg.copy_(ckpt["latent_avg"].to(self.model.latent_avg))
        if self.model.progressive:  # the frozen encoder keeps the deltas it was trained with (all when unrecorded)
            self.model.set_n_active(int(ckpt.get("n_active", self.model.n_latent - 1)))

    def _set_train_modes(self) -> None:
        """Trained modules in train mode; frozen ones in eval mode (their BatchNorm statistics stay fixed)."""
        m, tc = self.model, self.cfg.train
        m.train()
        if not tc.train_generator:
            m.generator.eval()
        if tc.stage == "fusion":
            m.encoder.eval()

    def _apply_progressive_schedule(self) -> None:
        """Set a progressive head's active deltas for the current step (``encoder.progressive_every``)."""
        ec, m = self.cfg.encoder, self.model
        if ec.progressive_every is not None and m.progressive and self.cfg.train.stage != "fusion":
            m.set_n_active(progressive_n_active(self.step, m.n_latent, ec.progressive_every, ec.progressive_start))

    # --------------------------------------------------------------------------------- checkpoints

    def training_state(self) -> Dict[str, Any]:
        return {**self._run_state(), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "best_val": self.best_val, "best_step": self.best_step, "n_active": self.model.n_active}

    def save(self, tag: Optional[str] = None) -> Optional[Path]:
        """Atomically write ``step_XXXXXXX.pt`` and ``latest.pt`` (main process only)."""
        def write(path: Path) -> None:
            save_checkpoint(self.model.checkpoint_dict(training=self.training_state()), path)

        return self._write_checkpoint(write, self.cfg.train.keep_checkpoints, f"{tag}.pt" if tag else None)

    def update_best(self, val_mse: float) -> Optional[Path]:
        """Record a validation MSE measured at the current step; when it is the lowest so far (and finite),
        update ``best_val`` / ``best_step`` and atomically write ``checkpoints/best.pt`` (main process).
        Returns the path written, or None."""
        if not math.isfinite(val_mse) or (self.best_val is not None and val_mse >= self.best_val):
            return None
        self.best_val, self.best_step = float(val_mse), self.step
        if not self.dist.is_main:
            return None
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(self.model.checkpoint_dict(training=self.training_state()), self.ckpt_dir / BEST)

    def _load_training_state(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location="cpu")
        if not isinstance(ckpt, dict) or ckpt.get("kind") != "wagi_model" or "training" not in ckpt:
            raise ValueError(f"--resume: {path} is not a WaGI training checkpoint")
        with restoring_from(path):
            if ckpt["config"].get("train", {}).get("stage") != self.cfg.train.stage:
                raise ValueError(f"--resume: {path} is from stage {ckpt['config']['train']['stage']!r}, "
                                 f"this run is stage {self.cfg.train.stage!r}")
            state = ckpt["state_dict"]
            own = self.model.state_dict()
            missing = [k for k in own if k not in state]
            unexpected = [k for k in state if k not in own]
            if missing or unexpected:
                raise ValueError(f"--resume: {path} does not match this model: missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]}")
            self.model.load_state_dict(state, strict=True)
            tr = ckpt["training"]
            self.optimizer.load_state_dict(tr["optimizer"])
            mismatch = state_mismatch(self.optimizer)
            if mismatch:
                raise ValueError(f"--resume: {path}: {mismatch}")
            self.scheduler.load_state_dict(tr["scheduler"])
            tc = self.cfg.train
            for change in apply_hyperparameters(self.optimizer, self.scheduler, tc.lr, tc.betas, tc.weight_decay):
                logger.info("optimiser: %s (from this config)", change)
            self.best_val = tr.get("best_val")
            self.best_step = tr.get("best_step")
            self._restore_run_state(tr)
        if self.dist.is_main:
            logger.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------------------------- logging

    def log(self, kind: str, values: Dict[str, float]) -> None:
        """One metrics record at the current step (:class:`~wagi.training.common.RunLogger`)."""
        self.logger.log(kind, self.step, values)

    def log_images(self, x: torch.Tensor, img: torch.Tensor) -> None:
        if not self.dist.is_main:
            return
        from torchvision.utils import make_grid, save_image

        n = min(4, x.shape[0])
        x, img = x[:n].detach().float().cpu(), resize(img[:n].detach().float().cpu(), x.shape[-1])
        hf = wv.high_bands(wv.dwt(img - x)).abs().sum(1, keepdim=True)  # where the HF error sits
        hf = F.interpolate(hf / hf.amax().clamp_min(1e-8) * 2 - 1, scale_factor=2.0,
                           mode="nearest").expand(-1, 3, -1, -1)
        grid = make_grid(torch.cat([x, img, hf]), nrow=n, value_range=(-1, 1), normalize=True)
        out = self.run_dir / "images"
        out.mkdir(exist_ok=True)
        save_image(grid, out / f"step_{self.step:07d}.png")
        self.logger.image("train/input|recon|hf_error", grid, self.step)

    # ------------------------------------------------------------------------------------ training

    def _autocast(self):
        enabled = self.cfg.train.amp == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self, x: torch.Tensor) -> Dict[str, float]:
        cfg, m = self.cfg, self.model
        x = x.to(self.device, non_blocking=True)
        seeds = D.sample_seeds(cfg.experiment.seed, self.step, x.shape[0], self.dist.rank, self.dist.world_size)
        if cfg.data.hflip:
            flips = torch.tensor([random.Random(s).random() < 0.5 for s in seeds], device=x.device)
            x = torch.where(flips.view(-1, 1, 1, 1), x.flip(-1), x)
        self._apply_progressive_schedule()
        self.optimizer.zero_grad(set_to_none=True)
        logs: Dict[str, float] = {}
        try:
            if cfg.train.stage == "encoder":
                n_iters = m.n_iters
                w = m.latent_avg.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
                img = None
                for it in range(n_iters):
                    sync = it == n_iters - 1 or not self.dist.enabled
                    ctx = self.ddp_module.no_sync() if not sync else contextlib.nullcontext()
                    with ctx:
                        with self._autocast():
                            loss, logs, w, img = self.ddp_module(x, w, img)
                        loss.backward()
                    w, img = w.detach(), img.detach()
            else:
                with self._autocast():
                    loss, logs, _, img = self.ddp_module(x, seeds, cfg.train.stage == "joint")
                loss.backward()
        except NonFiniteLossError as e:
            raise TrainingStopped(f"non-finite loss term '{e.term}' ({e.value}) at step {self.step}; "
                                  f"stopping. The last good checkpoint is kept in {self.ckpt_dir}") from None
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self._last_batch = (x, img)
        return logs

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Per-sub-band L2 (1 level) and MSE of the test set, never dropping the last batch."""
        if self.test_set is None:
            return {}
        loader = D.test_loader(self.test_set, self.cfg.train.batch_size, 0)
        m = self.model.eval()
        sums: Dict[str, float] = {}
        count = 0
        for i, x in enumerate(loader):
            if self.cfg.train.val_batches is not None and i >= self.cfg.train.val_batches:
                break
            x = x.to(self.device)
            with self._autocast():
                recon, _, _ = m.invert(x)
            recon = recon.float()
            xs = resize(x, recon.shape[-1])
            bands = wv.subband_mse(recon, xs, reduce_batch=False)
            bands["mse"] = (recon - xs).pow(2).mean(dim=(1, 2, 3))
            for k, v in bands.items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
            count += x.shape[0]
        self._set_train_modes()
        return {k: v / max(count, 1) for k, v in sums.items()}

    def _loader(self, sampler: D.StepBatchSampler) -> Iterable[torch.Tensor]:
        """The batches of ``sampler`` on the CPU (:func:`~wagi.training.data.train_loader`); the step moves them."""
        return D.train_loader(self.train_set, sampler, self.cfg.data.workers, self.cfg.experiment.seed)

    def _preload(self) -> D.PreloadedImages:
        if self._preloaded is None:
            dc = self.cfg.data
            source = dataset_source(dc, len(self.train_set), dc.image_size)
            self._preloaded = D.load_preloaded(self.train_set, source, self.device, self.dist, dc.cache_file,
                                               dc.workers, self.progress)
        return self._preloaded

    def _train(self, time_limit_s: Optional[float]) -> Dict[str, float]:
        cfg, tc = self.cfg, self.cfg.train
        self._set_train_modes()
        last_logs: Dict[str, float] = {}
        with self._training_slice(time_limit_s, tc.max_steps, f"{cfg.experiment.name} [{tc.stage}]") as pbar:
            t0 = time.time()
            it = self.batches()
            while self.step < tc.max_steps:
                x = next(it)
                logs = self.train_step(x)
                last_logs = logs
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix(loss=f"{logs.get('total', float('nan')):.4f}")
                s = self.step
                final = s == tc.max_steps
                log_now = s % tc.log_every == 0 or final
                if log_now:
                    vals = {k: float(all_reduce_mean(torch.tensor(v, device=self.device), self.dist))
                            for k, v in logs.items()}
                    vals["lr"] = self.optimizer.param_groups[0]["lr"]
                    vals["steps_per_s"] = tc.log_every / max(time.time() - t0, 1e-9)
                    t0 = time.time()
                    self.log("train", vals)
                if s % tc.image_every == 0:
                    self.log_images(*self._last_batch)
                if s % tc.val_every == 0 or final:
                    if self.dist.is_main:
                        val = self.validate()
                        if val:
                            self.log("val", val)
                            line = (f"step {s}: val mse {val['mse']:.5f} "
                                    + " ".join(f"{k} {v:.5f}" for k, v in val.items() if k != "mse"))
                            if pbar is not None:
                                pbar.write(line)  # above the bar
                            else:  # --no-progress hides the bar, not the results
                                print(line, flush=True)
                            self._update_wall_time()
                            self.update_best(val["mse"])
                    barrier(self.dist)
                if self._end_step(self._save_synced, s % tc.save_every == 0, final, at_sync_point=log_now):
                    break
        return last_logs

    def _save_synced(self) -> None:
        self.save()
        barrier(self.dist)
