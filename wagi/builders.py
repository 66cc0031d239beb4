"""From a validated config to objects: the one place that turns ``wagi.config`` sections into modules.

    generator, latent_avg = build_generator(cfg)           # generator.* (a checkpoint or a fresh SWAGAN)
    encoder = build_encoder_from_config(cfg, n_latent)     # encoder.kind / encoder.backbone (registries)
    fusion = build_fusion(cfg, generator)                  # fusion.kind (FUSIONS) + its aligner
    model = build_model(cfg)                               # WaGI(generator, encoder, latent_avg, fusion)
    criterion = build_criterion(cfg)                       # loss.* (LOSS_TERMS, each weight at its lambda_key)
    train_set = build_dataset(cfg.data, "train", size)     # data.kind (DATASETS), for both trainers

Every choice is a key of a registry filled next to its implementation (:mod:`wagi.registry`,
``docs/extending.md``): :data:`~wagi.models.encoders.ENCODER_HEADS`, :data:`~wagi.models.backbones.BACKBONES`,
:data:`~wagi.models.fusion.FUSIONS`, :data:`~wagi.losses.LOSS_TERMS`, :data:`~wagi.datasets.DATASETS`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from .checkpoint import LATENT_AVG_SAMPLES, load_generator
from .config import ConfigError, WaGIConfig, from_dict, loss_weight, normalise_channels, to_dict
from .datasets import DATASETS, dataset_kind
from .imageio import ImageIOError
from .losses import LOSS_TERMS, InversionCriterion
from .models.backbones import BACKBONES
from .models.encoders import build_encoder
from .models.fusion import FUSIONS, INJECTIONS, Fusion, ResidualAligner
from .models.swagan import Generator, default_channels
from .models.wagi import WaGI

# The generator.* keys that fix the architecture; a checkpoint that records its own config must agree on them.
GENERATOR_CONFIG_KEYS = ("size", "style_dim", "n_mlp", "channel_multiplier", "channel_max", "channels",
                         "to_rgb_kernel")


def as_config(cfg) -> WaGIConfig:
    """``cfg`` itself, or the :class:`WaGIConfig` of a plain dict (paths not checked)."""
    return cfg if isinstance(cfg, WaGIConfig) else from_dict(cfg, check_paths=False)


# ------------------------------------------------------------------------------------------------ generator


def check_generator_config(gc, carried: Optional[Dict[str, Any]], source) -> None:
    """Raise ``ValueError`` naming the first ``generator.<key>`` (:data:`GENERATOR_CONFIG_KEYS`) whose value in
    ``gc`` (a :class:`wagi.config.GeneratorConfig`) differs from the config ``carried`` by the checkpoint
    ``source`` (project GAN checkpoints, exported generator files and WaGI models store it as plain data;
    None or a config without a ``generator`` section: nothing to check)."""
    theirs = carried.get("generator") if isinstance(carried, dict) else None
    if not isinstance(theirs, dict):
        return
    for key in GENERATOR_CONFIG_KEYS:
        if key not in theirs:
            continue  # written before the key existed
        other, mine = theirs[key], getattr(gc, key)
        if key == "channels":  # JSON / YAML round trips leave str or int resolution keys
            other = normalise_channels(other)
        if other != mine:
            raise ValueError(f"generator.{key} is {mine!r} in this config but {other!r} in the "
                             f"config stored in {source}; set generator.{key}: {other!r}")


def config_channel_table(gc) -> Dict[int, int]:
    """``{feature resolution: channels}`` that the generator section ``gc`` describes (4 ... size/2)."""
    table = gc.channels if gc.channels is not None else default_channels(gc.channel_multiplier, gc.channel_max)
    return {2 ** i: int(table[2 ** i]) for i in range(2, int(math.log2(gc.size)))}


def build_generator(cfg, load_weights: bool = True, latent_avg: Optional[torch.Tensor] = None):
    """``(generator, latent_avg)`` from ``cfg.generator``: loaded from ``ckpt`` when given (and ``load_weights``),
    else built fresh (``latent_avg`` passed through).

    A checkpoint that carries its config must agree with ``cfg.generator`` on the architecture keys
    (:func:`check_generator_config`), so the config saved with the model rebuilds the same generator.
    """
    gc = as_config(cfg).generator
    if load_weights and gc.ckpt:
        generator, ckpt_avg, info = load_generator(gc.ckpt, trust=gc.trust_checkpoint)
        check_generator_config(gc, info.get("config"), gc.ckpt)
        if generator.size != gc.size:
            raise ValueError(f"generator.size is {gc.size} but {gc.ckpt} holds a size-{generator.size} SWAGAN")
        theirs = generator.config["to_rgb_kernel"]
        if theirs != gc.to_rgb_kernel:  # the saved model is rebuilt from the config: it must describe the file
            raise ValueError(f"generator.to_rgb_kernel is {gc.to_rgb_kernel} but {gc.ckpt} has {theirs}x{theirs} "
                             f"ToRGB convs; set generator.to_rgb_kernel: {theirs}")
        widths = {r: int(generator.channels[r]) for r in generator.feature_resolutions}
        if widths != config_channel_table(gc):  # e.g. a widened generator (wagi.models.widen) under the old config
            raise ValueError(f"{gc.ckpt} has the channels {widths} but this config describes "
                             f"{config_channel_table(gc)}; set generator.channels: {widths}")
        return generator, latent_avg if latent_avg is not None else ckpt_avg
    generator = Generator(gc.size, gc.style_dim, gc.n_mlp, channel_multiplier=gc.channel_multiplier,
                          channels=gc.channels, channel_max=gc.channel_max, to_rgb_kernel=gc.to_rgb_kernel)
    return generator, latent_avg


def generator_from_config(cfg) -> nn.Module:
    """The architecture ``cfg.generator`` describes, randomly initialised (no checkpoint read)."""
    generator, _ = build_generator(cfg, load_weights=False)
    return generator


# ------------------------------------------------------------------------------------------ encoder, fusion


def build_encoder_from_config(cfg, n_latent: int, load_weights: bool = True) -> nn.Module:
    """The encoder of ``cfg.encoder`` for a generator with ``n_latent`` W+ entries: head ``encoder.kind``
    (:data:`~wagi.models.encoders.ENCODER_HEADS`) on backbone ``encoder.backbone``
    (:data:`~wagi.models.backbones.BACKBONES`, its options from the config; ``encoder.weights`` loaded when
    ``load_weights`` and the backbone takes weights)."""
    cfg = as_config(cfg)
    ec = cfg.encoder
    info = BACKBONES.info(ec.backbone)
    options = dict(info["config_options"](ec))
    if load_weights and ec.weights and "weights" in info["options"]:
        options["weights"] = ec.weights  # loaded strictly, with a report of ignored keys
    return build_encoder(ec.kind, ec.backbone, n_latent, image_size=ec.input_size, style_dim=cfg.generator.style_dim,
                         head_channels=ec.head_channels, **options)


def build_fusion(cfg, generator: nn.Module) -> Optional[Fusion]:
    """The fusion module of ``cfg.fusion`` (None for ``fusion.kind: none``), with a :class:`ResidualAligner`
    when ``fusion.aligner.enabled``."""
    fc = as_config(cfg).fusion
    if fc.kind == "none":
        return None
    aligner = ResidualAligner(fc.aligner.width, fc.aligner.size) if fc.aligner.enabled else None
    fusion = FUSIONS[fc.kind](fc, generator, aligner)
    if not isinstance(fusion, Fusion) or fusion.injects not in INJECTIONS:
        raise ValueError(f"fusion kind {fc.kind!r} built a {type(fusion).__name__}, not a wagi.models.fusion.Fusion "
                        f"that injects one of {INJECTIONS}")
    return fusion


def build_model(cfg, generator: Optional[nn.Module] = None, latent_avg: Optional[torch.Tensor] = None,
                load_weights: bool = True) -> WaGI:
    """The :class:`WaGI` model of a config (:meth:`WaGI.from_config` documents the arguments)."""
    cfg = as_config(cfg)
    if generator is None:
        generator, latent_avg = build_generator(cfg, load_weights=load_weights, latent_avg=latent_avg)
    if latent_avg is None:
        rng = torch.Generator().manual_seed(cfg.experiment.seed)
        with torch.no_grad():
            latent_avg = generator.mean_latent(LATENT_AVG_SAMPLES, generator=rng)[0]
    encoder = build_encoder_from_config(cfg, generator.n_latent, load_weights=load_weights)
    ec = cfg.encoder
    return WaGI(generator, encoder, latent_avg, encoder_kind=ec.kind, n_iters=ec.n_iters,
                encoder_input_size=ec.input_size, fusion=build_fusion(cfg, generator), config=to_dict(cfg),
                randomize_noise=cfg.generator.randomize_noise)


# ---------------------------------------------------------------------------------------------------- loss


def build_criterion(cfg, log_subbands: bool = True) -> InversionCriterion:
    """The inversion loss of ``cfg.loss``: every registered term with its weight read at its ``lambda_key``
    and its options from its ``config_options``."""
    cfg = as_config(cfg)
    lambdas = {t: loss_weight(cfg, t) for t in LOSS_TERMS}
    options = {t: LOSS_TERMS.info(t)["config_options"](cfg.loss) for t in LOSS_TERMS}
    return InversionCriterion(lambdas, log_subbands=log_subbands, **options)


# ---------------------------------------------------------------------------------------------------- data


def build_dataset(dc, split: str, size: int) -> Optional[Dataset]:
    """The ``split`` (``'train'`` / ``'test'``) set of the ``data`` section ``dc`` of either trainer's config, at
    ``size`` px, from :data:`~wagi.datasets.DATASETS`; None when that kind has no such split. An image
    folder with no readable image is a :class:`~wagi.config.ConfigError` naming its key."""
    kind = dataset_kind(dc)
    try:
        return DATASETS[kind](dc, split, size)
    except ImageIOError as err:
        raise ConfigError(f"data.{split}_dir" if kind == "folder" else "data.kind", str(err)) from None


def build_datasets(cfg) -> Tuple[Dataset, Optional[Dataset]]:
    """(train, test) sets of the encoder trainer (``cfg.data`` at ``data.image_size``); test may be None."""
    dc = as_config(cfg).data
    train = build_dataset(dc, "train", dc.image_size)
    return train, build_dataset(dc, "test", dc.image_size)


def dataset_source(dc, n: int, size: int) -> Dict[str, Any]:
    """What a preload cache of the training set of ``dc`` (``n`` images at ``size``) is built from; both trainers
    record the same thing, so a cache written by one serves the other at the same size."""
    return DATASETS.info(dataset_kind(dc))["source"](dc, n, size)
