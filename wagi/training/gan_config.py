"""Configuration of SWAGAN generator training (``scripts/train_generator.py``).

A separate schema from the encoder runs (:mod:`wagi.config`), built with the same machinery: nested
dataclasses, YAML files, ``section.key=value`` overrides, and :class:`~wagi.config.ConfigError`
naming the dotted key for an unknown key, a wrong type, a value outside its allowed set, a missing
file or a cross-key conflict, raised before any heavy work.

Sections: ``experiment`` (name, out_dir, seed, device), ``generator`` and ``discriminator``
(architecture), ``data`` (demo faces or an image folder), ``train`` (schedule, losses,
regularisation, EMA, speed switches, logging). Every key is documented in
``docs/train_generator.md``; ``tests/test_gan.py`` checks that none is missing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ..config import (
    MAX_BATCH,
    MAX_CHANNEL_MULTIPLIER,
    MAX_CHANNELS,
    MAX_N_MLP,
    MAX_STYLE_DIM,
    ConfigError,
    ExperimentConfig,
    all_keys,
    check_channel_table,
    check_dataset_kind,
    check_finite,
    check_power_of_two,
    check_range,
    check_run_location,
    choice_field,
    path_field,
    read_config_data,
    save_config,
    to_dict,
    validate_config,
)
from ..datasets import DATASETS
from ..demo_seeds import TRAIN_SEED_END

MIN_SIZE = 16  # the SWAGAN discriminator needs at least two downsampling levels above 4x4
STDDEV_GROUP = 4  # the discriminator's minibatch-stddev group (wagi.models.swagan.STDDEV_GROUP)


# ----------------------------------------------------------------------------------------------- schema


@dataclass
class GANExperimentConfig(ExperimentConfig):
    name: str = "swagan"


@dataclass
class GANGeneratorConfig:
    size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channel_max: Optional[int] = None
    channels: Optional[Dict[int, int]] = None  # {feature resolution 4 ... size/2: channels}; null: the two above
    lr_mlp: float = 0.01                   # learning-rate multiplier of the mapping network
    to_rgb_kernel: int = 1                 # ToRGB conv size: 1 rosinality's SWAGAN, 3 the official (converted) one
    init: Optional[str] = path_field(None)  # warm start: G and g_ema from this generator file (D fresh)
    trust_checkpoint: bool = False         # allow full unpickling of init (runs code from the file)


@dataclass
class DiscriminatorConfig:
    channel_multiplier: int = 2
    channel_max: Optional[int] = None


@dataclass
class GANDataConfig:
    kind: Optional[str] = choice_field(None, DATASETS, also=(None,))  # wagi.datasets.DATASETS; null: demo / folder
    train_dir: Optional[str] = path_field(None)
    demo: bool = False                     # procedural demo faces instead of a folder
    demo_images: int = TRAIN_SEED_END      # distinct demo training faces: seeds [0, demo_images)
    image_size: Optional[int] = None       # null: generator.size (must equal it when set)
    hflip: bool = True
    workers: int = 4
    prefetch: int = 4                      # batches each loader worker prepares ahead
    preload: bool = False                  # decode/render once, keep uint8 on the training device
    cache_file: Optional[str] = path_field(None, must_exist=False)  # .pt cache of the preloaded images


@dataclass
class GANTrainConfig:
    max_steps: Optional[int] = 100000
    kimg: Optional[float] = None           # alternative length: thousands of real images shown (all ranks)
    batch_size: int = 16                   # per process
    lr: float = 0.002
    g_lr: Optional[float] = None           # generator's learning rate (null: lr); below d_lr: two time-scale updates
    d_lr: Optional[float] = None           # discriminator's learning rate (null: lr)
    betas: List[float] = field(default_factory=lambda: [0.0, 0.99])
    r1: float = 10.0                       # R1 weight gamma (0: off)
    d_reg_every: int = 16                  # lazy R1 interval (0: off)
    path_regularize: float = 2.0           # path-length weight (0: off)
    path_batch_shrink: int = 2
    path_decay: float = 0.01               # EMA rate of the path-length target
    g_reg_every: int = 4                   # lazy path-length interval (0: off)
    mixing: float = 0.9                    # style-mixing probability
    d_warmup: int = 0                      # first steps update only D (no G / path-length / EMA update)
    ema_half_life_kimg: float = 10.0       # g_ema half-life in thousands of images
    ema_rampup: Optional[float] = None     # limit the half-life to rampup x images seen (NVlabs: 0.05)
    amp: str = choice_field("none", ("none", "bf16"))
    reg_amp: bool = False                  # run the R1 / path-length passes under amp too
    fused_modconv: bool = False            # grouped-conv modulated convs (True) or input scaling (False)
    channels_last: bool = False
    compile: bool = False                  # torch.compile the main G / D passes
    log_every: int = 100
    sample_every: int = 1000
    save_every: int = 5000
    keep_checkpoints: int = 3              # step_*.pt files kept (0: all)
    n_sample: int = 64                     # images in each sample grid


@dataclass
class GANConfig:
    experiment: GANExperimentConfig = field(default_factory=GANExperimentConfig)
    generator: GANGeneratorConfig = field(default_factory=GANGeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    data: GANDataConfig = field(default_factory=GANDataConfig)
    train: GANTrainConfig = field(default_factory=GANTrainConfig)


# ------------------------------------------------------------------------------------------ validation


def _positive(value, key: str, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _check_consistency(cfg: GANConfig) -> None:
    """Cross-key and range rules, each raising with the key that must change."""
    g, d, dc, tc = cfg.generator, cfg.discriminator, cfg.data, cfg.train
    check_finite(cfg)
    check_run_location(cfg.experiment, dc.cache_file)
    check_power_of_two(g.size, "generator.size", MIN_SIZE)
    check_range(g.style_dim, "generator.style_dim", 1, MAX_STYLE_DIM)
    check_range(g.n_mlp, "generator.n_mlp", 1, MAX_N_MLP)
    for key, value in (("generator.channel_multiplier", g.channel_multiplier),
                       ("discriminator.channel_multiplier", d.channel_multiplier)):
        check_range(value, key, 1, MAX_CHANNEL_MULTIPLIER)
    for key, value in (("generator.channel_max", g.channel_max), ("discriminator.channel_max", d.channel_max)):
        check_range(value, key, 1, MAX_CHANNELS)
    check_channel_table(g.channels, g.size, g.channel_max)
    check_range(tc.n_sample, "train.n_sample", 1, 1024)  # one grid image; 1024 tiles is already 32 x 32
    check_range(tc.batch_size, "train.batch_size", 1, MAX_BATCH)
    must_be_positive = {
        "generator.style_dim": g.style_dim, "generator.n_mlp": g.n_mlp,
        "generator.channel_multiplier": g.channel_multiplier, "generator.channel_max": g.channel_max,
        "generator.lr_mlp": g.lr_mlp, "discriminator.channel_multiplier": d.channel_multiplier,
        "discriminator.channel_max": d.channel_max, "data.demo_images": dc.demo_images, "data.prefetch": dc.prefetch,
        "train.batch_size": tc.batch_size, "train.lr": tc.lr, "train.g_lr": tc.g_lr, "train.d_lr": tc.d_lr,
        "train.kimg": tc.kimg,
        "train.path_batch_shrink": tc.path_batch_shrink, "train.ema_half_life_kimg": tc.ema_half_life_kimg,
        "train.ema_rampup": tc.ema_rampup, "train.log_every": tc.log_every, "train.sample_every": tc.sample_every,
        "train.save_every": tc.save_every, "train.n_sample": tc.n_sample,
    }
    for key, value in must_be_positive.items():
        _positive(value, key)
    must_not_be_negative = {
        "train.max_steps": tc.max_steps, "train.r1": tc.r1, "train.d_reg_every": tc.d_reg_every,
        "train.path_regularize": tc.path_regularize, "train.g_reg_every": tc.g_reg_every,
        "train.keep_checkpoints": tc.keep_checkpoints, "data.workers": dc.workers, "train.path_decay": tc.path_decay,
        "train.d_warmup": tc.d_warmup,
    }
    for key, value in must_not_be_negative.items():
        _positive(value, key, allow_zero=True)
    if g.to_rgb_kernel < 1 or g.to_rgb_kernel % 2 == 0:
        raise ConfigError("generator.to_rgb_kernel", f"must be a positive odd integer (1 or 3), got {g.to_rgb_kernel}")
    if dc.image_size is not None and dc.image_size != g.size:
        raise ConfigError("data.image_size", f"must equal generator.size ({g.size}) or be null, got {dc.image_size}")
    kind = check_dataset_kind(dc)
    if dc.demo and dc.train_dir is not None:
        raise ConfigError("data.train_dir", "set either data.train_dir or data.demo: true, not both")
    if kind == "folder" and dc.train_dir is None:
        raise ConfigError("data.train_dir", "set a training image folder, or data.demo: true")
    if dc.demo_images > TRAIN_SEED_END:
        raise ConfigError("data.demo_images", f"at most {TRAIN_SEED_END} (the training seeds), got {dc.demo_images}")
    if (tc.max_steps is None) == (tc.kimg is None):
        raise ConfigError("train.kimg", "set exactly one of train.max_steps and train.kimg (the other null)")
    if len(tc.betas) != 2 or not all(0.0 <= b < 1.0 for b in tc.betas):
        raise ConfigError("train.betas", f"must be two numbers in [0, 1), got {tc.betas}")
    if not 0.0 <= tc.mixing <= 1.0:
        raise ConfigError("train.mixing", f"is a probability in [0, 1], got {tc.mixing}")
    if not 0.0 <= tc.path_decay <= 1.0:
        raise ConfigError("train.path_decay", f"must be in [0, 1], got {tc.path_decay}")
    if tc.batch_size > STDDEV_GROUP and tc.batch_size % STDDEV_GROUP:
        raise ConfigError("train.batch_size", f"the discriminator's minibatch-stddev groups need a batch <= "
                                              f"{STDDEV_GROUP} or a multiple of {STDDEV_GROUP}, got {tc.batch_size}")


def gan_from_dict(data: Optional[Dict[str, Any]], check_paths: bool = True) -> GANConfig:
    """Validate a nested dict and return the config object."""
    return validate_config(GANConfig, data, _check_consistency, check_paths)


def gan_to_dict(cfg: GANConfig) -> Dict[str, Any]:
    """Plain nested dict (YAML/JSON/checkpoint-safe)."""
    return to_dict(cfg)


def load_gan_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = (),
                    check_paths: bool = True) -> GANConfig:
    """Read, override and validate a generator-training config. ``path=None`` starts from the defaults."""
    return gan_from_dict(read_config_data(path, overrides), check_paths=check_paths)


def save_gan_config(cfg: GANConfig, path: Union[str, Path]) -> None:
    save_config(cfg, path)  # the writer only needs a dataclass


def all_gan_keys() -> List[str]:
    """Every dotted key of the schema (``docs/train_generator.md`` documents each one)."""
    return all_keys(GANConfig)


def total_steps(cfg: GANConfig, world_size: int = 1) -> int:
    """``train.max_steps``, or the steps that show ``train.kimg`` thousand images with ``world_size`` ranks."""
    tc = cfg.train
    if tc.max_steps is not None:
        return tc.max_steps
    return math.ceil(tc.kimg * 1000 / (tc.batch_size * world_size))


def is_gan_config_dict(data: Any) -> bool:
    """True for a YAML mapping written for this schema (it has a ``discriminator`` section)."""
    return isinstance(data, dict) and "discriminator" in data


__all__ = [
    "GANConfig", "GANExperimentConfig", "GANGeneratorConfig", "DiscriminatorConfig", "GANDataConfig",
    "GANTrainConfig", "ConfigError", "gan_from_dict", "gan_to_dict", "load_gan_config", "save_gan_config",
    "all_gan_keys", "total_steps", "is_gan_config_dict",
]
