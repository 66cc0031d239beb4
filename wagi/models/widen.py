"""Function-preserving widening of a trained SWAGAN generator (Net2Net-style, Chen et al. 2016).

``widen_generator(g, {4: 160, 8: 160, ...})`` returns a new :class:`~wagi.models.swagan.Generator` with more
feature channels at some resolutions that draws the images ``g`` draws (same latents, same stored noise; equal
up to float round-off), so that training can continue from it instead of starting a wider generator from scratch.

Every parameter and buffer keeps its old values in the leading block; the grown part comes from the new
module's own initialisation (seeded), except in the modulated convs (``*.conv.weight``, ``(1, out, in, k, k)``):

* the new **input** columns ``[:, :, in_old:]`` are zero, so the new channels feed nothing at first. A
  demodulated conv divides each output filter by ``sqrt(sum_i,kh,kw W'^2)``; zero columns add nothing to
  that sum either. Their gradients are not zero (the new channels carry non-zero features), so they train
  from the first step; the new output rows feed only such columns, so theirs start one step later;
* the copied block is multiplied by ``sqrt(in_new / in_old)``: the equalised-lr scale ``1/sqrt(in k^2)``
  of :class:`~wagi.models.layers.ModulatedConv2d` shrinks when ``in`` grows, and the product keeps the
  effective weights ``scale * W * s`` of the trained layer. The ToRGB convs are not demodulated: without it
  their output would shrink. In the demodulated convs a common factor cancels anyway; the same effective
  weights also give the demodulation epsilon the same share, so the output is unchanged there too.

That is the only place a channel count enters a scale in the generator: the modulation layers map W
(``style_dim``, unchanged) to ``in`` styles, and the biases, noise weights and the constant input have no
scale. New output rows, new style rows (bias 1), new biases (0) and new constant-input channels are the
fresh module's; they compute features that no later layer reads until the zero columns have learned.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping

import torch

from .layers import ModulatedConv2d
from .swagan import Generator

MODCONV_WEIGHT_SUFFIX = "conv.weight"  # every ModulatedConv2d weight of the generator, (1, out, in, k, k)
MODCONV_IN_DIM = 2


def channel_table(g: Generator) -> Dict[int, int]:
    """``{feature resolution: channels}`` of ``g`` for 4 ... size/2 (the levels it has)."""
    return {r: int(g.channels[r]) for r in g.feature_resolutions}


def _checked_table(g: Generator, channels: Mapping) -> Dict[int, int]:
    old = channel_table(g)
    try:
        table = {int(r): int(c) for r, c in channels.items()}
    except (TypeError, ValueError):
        raise ValueError(f"channels must map feature resolutions to integers, got {dict(channels)!r}") from None
    for r in table:
        if r not in old:
            raise ValueError(f"channels: resolution {r} is not a feature resolution of this size-{g.size} "
                             f"generator ({list(old)})")
    for r, c in old.items():
        if r not in table:
            raise ValueError(f"channels: resolution {r} is missing (every feature resolution {list(old)} is needed)")
        if table[r] < c:
            raise ValueError(f"channels: resolution {r} has {c} channels and cannot narrow to {table[r]}")
    return {r: table[r] for r in old}


def _grown(key: str, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``new`` with ``old`` in its leading block (the rule of the module docstring for modulated conv weights)."""
    if old.dim() != new.dim() or any(o > n for o, n in zip(old.shape, new.shape)):
        raise ValueError(f"{key}: cannot widen {tuple(old.shape)} to {tuple(new.shape)}")
    out = new.detach().clone()
    block = tuple(slice(0, n) for n in old.shape)
    value = old.detach()
    if key.endswith(MODCONV_WEIGHT_SUFFIX) and out.dim() == 5:
        in_old, in_new = old.shape[MODCONV_IN_DIM], out.shape[MODCONV_IN_DIM]
        out[:, :, in_old:] = 0
        if in_new != in_old:  # in float64, then one rounding to the generator's dtype
            value = value.double() * math.sqrt(in_new / in_old)
    out[block] = value.to(out.dtype)
    return out


@torch.no_grad()
def widen_generator(g: Generator, channels: Mapping[int, int], seed: int = 0) -> Generator:
    """A generator with the channel table ``channels`` that computes what ``g`` computes.

    ``channels``: ``{feature resolution: channels}`` for every resolution 4 ... ``g.size/2`` (int or str keys),
    each at least ``g``'s count; otherwise ``ValueError`` naming the resolution. Size, style_dim, n_mlp,
    lr_mlp, blur kernel and ToRGB kernel are ``g``'s. ``seed`` seeds the new entries' initialisation (the global
    RNG is left as it was). The result is on ``g``'s device and dtype, with ``g``'s train/eval mode,
    ``requires_grad`` flags and modulated-conv evaluation (``fused``) per module.
    """
    table = _checked_table(g, channels)
    cfg = g.config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wide = Generator(cfg["size"], cfg["style_dim"], cfg["n_mlp"], channel_multiplier=cfg["channel_multiplier"],
                         blur_kernel=cfg["blur_kernel"], lr_mlp=cfg["lr_mlp"], channels=table,
                         to_rgb_kernel=cfg["to_rgb_kernel"])
    ref = g.input.input
    wide.to(device=ref.device, dtype=ref.dtype)
    old_sd, new_sd = g.state_dict(), wide.state_dict()
    if set(old_sd) != set(new_sd):
        raise ValueError(f"cannot widen: the keys differ ({sorted(set(old_sd) ^ set(new_sd))[:5]})")
    wide.load_state_dict({k: _grown(k, old_sd[k], v) for k, v in new_sd.items()}, strict=True)
    modules = dict(g.named_modules())
    for name, m in wide.named_modules():
        if isinstance(m, ModulatedConv2d):
            m.fused = modules[name].fused
    flags = dict(g.named_parameters())
    for name, p in wide.named_parameters():
        p.requires_grad_(flags[name].requires_grad)
    return wide.train(g.training)


__all__ = ["widen_generator", "channel_table"]
