"""The WaGI model: encoder + SWAGAN generator + wavelet fusion + ``latent_avg``, used by every script.

    model = WaGI.load("pretrained/demo/wagi.pt")
    recon, w_plus, extras = model.invert(images)          # images (N,3,H,W) in [-1, 1]
    edited = model.edit(images, direction, strength=3.0)

Data flow (docs/method.md explains each step):

    w+   = latent_avg + E(x)                   psp / e4e
    w+_0 = latent_avg, ŷ_0 = G(latent_avg);  w+_{t+1} = w+_t + E([x, ŷ_t])   restyle (K steps)
    x̂0   = G(w+)                               plain reconstruction
    x̂    = G(w+, corrections = F(x, x̂0))       wavelet fusion (only the cheap skip chain is recomputed;
                                               fusion.cascade: level by level, coarse to fine)

The generator runs with its stored noise buffers by default (config ``generator.randomize_noise: false``), so
inversion is deterministic; with ``randomize_noise`` true every synthesis draws fresh noise maps from the
global torch RNG.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    state_dict_mismatch,
)
from ..config import ConfigError, from_dict, shown
from ..tensors import resize
from .encoders import ENCODER_HEADS
from .fusion import FEATURE_CONDITIONS, WAVELET_CORRECTIONS, Fusion


def _as_wplus(latent: torch.Tensor, n_latent: int) -> torch.Tensor:
    """(D,), (1,D), (N,D) or (N,n_latent,D) → (N or 1, n_latent, D)."""
    if latent.dim() == 1:
        latent = latent.unsqueeze(0)
    if latent.dim() == 2:
        latent = latent.unsqueeze(1).expand(-1, n_latent, -1)
    if latent.dim() != 3 or latent.shape[1] != n_latent:
        raise ValueError(f"expected a latent of shape (N, {n_latent}, D), got {tuple(latent.shape)}")
    return latent


def _as_direction(direction: torch.Tensor, n_latent: int) -> torch.Tensor:
    """(D,), (1,D), (n_latent,D) or (1,n_latent,D) → (1, n_latent, D); a (1,D) direction moves every entry."""
    d = direction
    if d.dim() == 3 and d.shape[0] == 1:
        d = d[0]
    if d.dim() == 1:
        d = d.unsqueeze(0)
    if d.dim() != 2 or d.shape[0] not in (1, n_latent):
        raise ValueError(f"a direction must have shape (D,), (1, D) or ({n_latent}, D), got {tuple(direction.shape)}")
    return d.expand(n_latent, -1).unsqueeze(0)


class WaGI(nn.Module):
    """Inversion model. See the module docstring.

    Args:
        generator: a :class:`wagi.models.swagan.Generator`.
        encoder: maps (N, C, S_enc, S_enc) → (N, n_latent, style_dim) *deltas*; C = 6 for iterative heads.
        latent_avg: (style_dim,) or (n_latent, style_dim) average latent.
        encoder_kind: a key of :data:`~wagi.models.encoders.ENCODER_HEADS` (``'psp'``, ``'e4e'``, ``'restyle'``,
            ``'restyle_e4e'``, ...); its registered ``iterative`` property selects the ReStyle loop.
        n_iters: refinement steps of an iterative head (1 otherwise).
        encoder_input_size: size the encoder sees.
        fusion: a :class:`~wagi.models.fusion.Fusion` (``WaveletFusion``, ``FeatureFusion``, ...) or None.
        config: resolved config (plain dict), stored in checkpoints.
        randomize_noise: fresh generator noise on every synthesis (False: the stored noise buffers).
    """

    def __init__(self, generator: nn.Module, encoder: nn.Module, latent_avg: torch.Tensor,
                 encoder_kind: str = "restyle", n_iters: int = 1, encoder_input_size: int = 256,
                 fusion: Optional[nn.Module] = None, config: Optional[Dict[str, Any]] = None,
                 randomize_noise: bool = False):
        super().__init__()
        head = ENCODER_HEADS.info(encoder_kind)  # raises for an unknown kind
        if fusion is not None and not isinstance(fusion, Fusion):
            raise ValueError(f"fusion must be a wagi.models.fusion.Fusion, got {type(fusion).__name__}")
        self.generator = generator
        self.encoder = encoder
        self.fusion = fusion
        self.encoder_kind = encoder_kind
        self.iterative: bool = head["iterative"]      # ReStyle: refine on cat([x, x̂_t]) for n_iters steps
        self.progressive: bool = head["progressive"]  # e4e: encoder.set_progressive_stage / progressive_stage
        self.n_iters = int(n_iters) if self.iterative else 1
        self.encoder_input_size = int(encoder_input_size)
        self.n_latent = generator.n_latent
        self.register_buffer("latent_avg", _as_wplus(latent_avg.detach().float(), self.n_latent)[0].clone())
        self.config = config or {}
        self.randomize_noise = bool(randomize_noise)

    # ----------------------------------------------------------------------------------------- pieces

    @property
    def image_size(self) -> int:
        return self.generator.size

    @property
    def n_active(self) -> Optional[int]:
        """Active W+ deltas of a progressive (e4e) head, ``0 .. n_latent - 1``; None for other heads."""
        return int(self.encoder.progressive_stage) if self.progressive else None

    def set_n_active(self, n_active: int) -> None:
        """Set the active deltas of a progressive head (e4e's training schedule)."""
        if not self.progressive:
            raise ValueError(f"encoder kind {self.encoder_kind!r} has no progressive stages")
        self.encoder.set_progressive_stage(n_active)

    def synthesize(self, w_plus: torch.Tensor, feature_conditions=None) -> List[torch.Tensor]:
        return self.generator.synthesize(w_plus, randomize_noise=self.randomize_noise,
                                         feature_conditions=feature_conditions)

    def compose(self, branches: List[torch.Tensor], corrections: Optional[Dict[int, torch.Tensor]] = None):
        return self.generator.compose(branches, wavelet_corrections=corrections)

    def decode(self, w_plus: torch.Tensor) -> torch.Tensor:
        """Plain generator image G(w+) (N,3,S,S)."""
        return self.compose(self.synthesize(w_plus))

    def average_image(self, batch: int = 1) -> torch.Tensor:
        """G(latent_avg) at the encoder's input size, repeated ``batch`` times (ReStyle's first input)."""
        img = self.decode(self.latent_avg.unsqueeze(0).to(self._dtype()))
        return resize(img, self.encoder_input_size).expand(batch, -1, -1, -1)

    def _dtype(self) -> torch.dtype:
        return self.latent_avg.dtype

    def encoder_input(self, x: torch.Tensor, current: Optional[torch.Tensor] = None) -> torch.Tensor:
        xe = resize(x, self.encoder_input_size)
        if not self.iterative:
            return xe
        if current is None:
            cur = self.average_image(x.shape[0]).to(x.dtype)
        else:
            cur = resize(current, self.encoder_input_size)
        return torch.cat([xe, cur], dim=1)

    def encoder_step(self, x: torch.Tensor, w: torch.Tensor, current: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One encoder pass: ``w + E(encoder_input(x, current))``, w+ ``(N, n_latent, D)``.

        psp / e4e (one-pass heads): ``w`` is ``latent_avg`` and ``current`` unused. ReStyle (iterative): ``w`` is
        the previous step's latent and ``current`` its image (``None``: the average image, step 0).
        """
        return w + self.encoder(self.encoder_input(x, current))

    def encode(self, x: torch.Tensor, return_steps: bool = False,
               ) -> Union[torch.Tensor, List[Tuple[torch.Tensor, torch.Tensor]]]:
        """w+ (N, n_latent, D) of images ``x``; with ``return_steps`` a list of (w+_t, x̂_t) per ReStyle step."""
        avg = self.latent_avg.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
        if not self.iterative:
            w = self.encoder_step(x, avg)
            return [(w, self.decode(w))] if return_steps else w
        w, current, steps = avg, None, []
        for _ in range(self.n_iters):
            w = self.encoder_step(x, w, current)
            if return_steps or len(steps) < self.n_iters - 1:
                current = self.decode(w)
                steps.append((w, current))
        return steps if return_steps else w

    def fusion_outputs(self, x: torch.Tensor, x_hat0: torch.Tensor, target: Optional[torch.Tensor] = None,
                       source_map: Optional[torch.Tensor] = None):
        """Arguments for the fused generator pass: ``{fusion.injects: fusion(...)}``, i.e.
        ``{'wavelet_corrections': ...}`` or ``{'feature_conditions': ...}``. A cascade fusion (``fusion.cascade``)
        gets the generator's :meth:`~wagi.models.swagan.Generator.correction_image`, so that each level sees the
        residual the coarser levels left, in training and inference alike."""
        if self.fusion is None:
            return {}
        kwargs = {"correction_image": self.generator.correction_image} if self.fusion.cascade else {}
        return {self.fusion.injects: self.fusion(x, x_hat0, target=target, source_map=source_map, **kwargs)}

    def fused_decode(self, w_plus: torch.Tensor, branches: List[torch.Tensor],
                     fuse_args: Dict[str, Any]) -> torch.Tensor:
        """The fused image. Wavelet corrections reuse the first pass's branches (only the skip chain is
        recomputed); feature conditions change the convolutional features, so they need a full pass."""
        if FEATURE_CONDITIONS in fuse_args:
            return self.compose(self.synthesize(w_plus, feature_conditions=fuse_args[FEATURE_CONDITIONS]))
        return self.compose(branches, fuse_args.get(WAVELET_CORRECTIONS))

    # --------------------------------------------------------------------------------------- main API

    def invert(self, images: torch.Tensor, fuse: bool = True) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]:
        """Invert images (N,3,H,W) in [-1,1] (resized to the generator size).

        Returns ``(reconstruction, w_plus, extras)``; extras: ``base`` (x̂0, the unfused image) and the
        fusion outputs (``wavelet_corrections`` or ``feature_conditions``) when a fusion module is present.
        """
        x = resize(images, self.image_size)
        w = self.encode(x)
        branches = self.synthesize(w)
        base = self.compose(branches)
        extras: Dict[str, Any] = {"base": base}
        if not fuse or self.fusion is None:
            return base, w, extras
        fuse_args = self.fusion_outputs(x, base)
        extras.update(fuse_args)
        return self.fused_decode(w, branches, fuse_args), w, extras

    def edit(self, images_or_latents: torch.Tensor, direction: torch.Tensor,
             strength: Union[float, Sequence[float]] = 1.0, fuse: bool = True) -> torch.Tensor:
        """Apply ``w+ ← w+ + strength · direction`` and render.

        ``images_or_latents``: images (N,3,H,W) (inverted first; the input's details are moved onto the
        edited image through the fusion's aligner) or latents (N,n_latent,D) / (N,D) (no fusion: there is
        no input image to take details from). ``direction``: (D,), (1,D) or (n_latent,D). A list of
        strengths returns (len(strengths), N, 3, S, S).
        """
        d = _as_direction(direction.to(self.latent_avg), self.n_latent)
        single = np.ndim(strength) == 0  # a number, numpy scalar or 0-d tensor
        strengths = [float(strength)] if single else [float(s) for s in strength]
        is_image = images_or_latents.dim() == 4
        if is_image:
            x = resize(images_or_latents, self.image_size)
            w = self.encode(x)
            base = self.decode(w)
        else:
            w = _as_wplus(images_or_latents, self.n_latent)
            x = base = None
        outs = [self.render_edit(w, d, s, x, base, fuse=fuse) for s in strengths]
        return outs[0] if single else torch.stack(outs)

    def render_edit(self, w_plus: torch.Tensor, direction: torch.Tensor, strength: float,
                    x: Optional[torch.Tensor] = None, base: Optional[torch.Tensor] = None,
                    fuse: bool = True) -> torch.Tensor:
        """Render ``w_plus + strength · direction`` (codes already inverted: the edit loop of :meth:`edit`).

        ``x``: the inverted images at the generator size and ``base``: their unfused reconstructions;
        with both given and ``fuse``, the fusion moves the input's details onto the edited image.
        ``direction``: (N or 1, n_latent, D) or anything :meth:`edit` accepts.
        """
        d = direction.to(w_plus) if direction.dim() == 3 else _as_direction(direction.to(w_plus), self.n_latent)
        we = w_plus + float(strength) * d
        branches = self.synthesize(we)
        edited = self.compose(branches)
        if x is not None and base is not None and fuse and self.fusion is not None:
            reuse = self.fusion.edit_mode == "reuse"
            args = self.fusion_outputs(x, base, target=None if reuse else edited)
            if WAVELET_CORRECTIONS in args:  # not where the edit changed the image (fusion.edit_gate)
                args[WAVELET_CORRECTIONS] = self.fusion.gate_edit(args[WAVELET_CORRECTIONS], base, edited)
            edited = self.fused_decode(we, branches, args)
        return edited

    # ------------------------------------------------------------------------------------ persistence

    def checkpoint_dict(self, **extra) -> Dict[str, Any]:
        """Tensors + plain containers only (loads with ``torch.load(weights_only=True)``). A progressive head
        below its last stage records ``n_active``, so the loaded model uses the deltas it was trained with."""
        if self.progressive and self.n_active != self.n_latent - 1:
            extra = {"n_active": self.n_active, **extra}
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": "wagi_model", "config": self.config,
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
                "latent_avg": self.latent_avg.detach().cpu(), **extra}

    def save(self, path, **extra) -> None:
        save_checkpoint(self.checkpoint_dict(**extra), path)

    @classmethod
    def from_config(cls, cfg, generator: Optional[nn.Module] = None, latent_avg: Optional[torch.Tensor] = None,
                    load_weights: bool = True) -> WaGI:
        """Build from a :class:`wagi.config.WaGIConfig` (or its plain dict): :func:`wagi.builders.build_model`.

        Without a ``latent_avg`` (given, or carried by the generator checkpoint) it is the mean of
        ``LATENT_AVG_SAMPLES`` mapped samples drawn from a local RNG seeded with ``experiment.seed``: the same
        config gives the same ``latent_avg``, and the global torch RNG is left as it was.
        """
        from ..builders import build_model  # wagi.builders imports this module (it builds WaGI): import at call

        return build_model(cfg, generator=generator, latent_avg=latent_avg, load_weights=load_weights)

    @classmethod
    def load(cls, path, map_location="cpu") -> WaGI:
        """Load a WaGI checkpoint (project format; ``weights_only=True``, integrity hash checked).

        Everything the file says is checked before memory is spent on it: the stored config against the
        schema and its ranges, then the state_dict against a model built on the meta device (no
        allocation), so a wrong size, width, style_dim or a foreign entry is one
        :class:`~wagi.checkpoint.CheckpointError` line naming the keys.
        """
        from ..builders import generator_from_config  # wagi.builders imports this module: import at call

        ckpt = load_checkpoint(path, map_location=map_location)
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_NAME or ckpt.get("kind") != "wagi_model":
            kind = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
            raise ValueError(f"{path} is not a WaGI model checkpoint (found kind {shown(kind)}); "
                             "generator-only files load with wagi.checkpoint.load_generator")
        version = ckpt.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise CheckpointError(f"{path}: format version {shown(version)} is not an integer")
        if version > FORMAT_VERSION:
            raise ValueError(f"{path} was written by a newer WaGI (format version {version})")
        config, sd, latent_avg = ckpt.get("config"), ckpt.get("state_dict"), ckpt.get("latent_avg")
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: 'config' is {shown(config)}, not the mapping of the run's config")
        if not isinstance(sd, dict) or not sd:
            raise CheckpointError(f"{path}: 'state_dict' is a {type(sd).__name__}, not a mapping of tensors")
        bad = next((k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
        if bad is not None:
            raise CheckpointError(f"{path}: state_dict entry {shown(bad)} is a {type(sd[bad]).__name__}, "
                                  "not a tensor")
        if not isinstance(latent_avg, torch.Tensor) or not latent_avg.is_floating_point():
            raise CheckpointError(f"{path}: 'latent_avg' is {shown(latent_avg)}, not a float tensor")
        try:
            cfg = from_dict(config, check_paths=False)
        except ConfigError as err:
            raise CheckpointError(f"{path}: the stored config is not valid: {err}") from None
        try:
            with torch.device("meta"):  # shapes only: nothing allocated for a config that does not fit
                probe = cls.from_config(cfg, latent_avg=torch.zeros(cfg.generator.style_dim), load_weights=False,
                                        generator=generator_from_config(cfg))
        except (ValueError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"{path}: cannot build the model its config describes: {err}") from None
        mismatch = state_dict_mismatch(probe, sd)
        if mismatch:
            raise CheckpointError(f"{path}: the weights do not match the stored config: {mismatch}")
        non_finite = next((k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if non_finite is not None:
            raise CheckpointError(f"{path}: weight '{non_finite}' holds NaN or infinite values")
        d = cfg.generator.style_dim
        if latent_avg.numel() not in (d, probe.n_latent * d) or latent_avg.shape[-1] != d:
            raise CheckpointError(f"{path}: 'latent_avg' has shape {tuple(latent_avg.shape)}, expected ({d},) or "
                                  f"({probe.n_latent}, {d})")
        model = cls.from_config(cfg, latent_avg=latent_avg, load_weights=False, generator=generator_from_config(cfg))
        state = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
        model.load_state_dict(state, strict=True)
        n_active = ckpt.get("n_active")
        if n_active is not None:
            if not model.progressive or not isinstance(n_active, int) or not 0 <= n_active < model.n_latent:
                raise CheckpointError(f"{path}: 'n_active' is {shown(n_active)}, not a stage of a progressive "
                                      f"encoder (0 to {model.n_latent - 1})")
            model.set_n_active(n_active)
        return model
