"""Configuration of WaGI runs: one schema (nested dataclasses), YAML files, single-key CLI overrides.

``load_config(path, overrides)`` reads a YAML file, applies ``key.sub=value`` overrides, and validates the
result against the schema *before any heavy work*: an unknown key, a value of the wrong type, a value
outside its allowed set, or a missing file raises :class:`ConfigError` naming the dotted key. A dotted
override into a mapping-valued key (``loss.wavelet_cfg.band_weights.HH=2``) sets that one entry and keeps
the others (from the YAML file, or the schema default when the file does not set the key). The resolved
config is a plain nested dict (``to_dict``) that is saved in every run directory and every checkpoint.

Every key is documented in ``docs/config.md``; keep the two in sync (``tests/test_config.py`` checks it).
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import yaml


class ConfigError(ValueError):
    """A configuration problem, with the dotted key it concerns."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}" if key else message)


def _path(default=None, must_exist: bool = True):
    """A field holding a file or folder path; checked to exist when set (unless ``must_exist`` is False)."""
    return field(default=default, metadata={"path": True, "must_exist": must_exist})


def _choice(default, choices: Sequence[Any]):
    return field(default=default, metadata={"choices": tuple(choices)})


# Demo training faces are seeds [0, 1e6); the held-out ones start at 1e6 (wagi.training.data, which this
# module cannot import: the training package imports the config).
MAX_DEMO_TRAIN_IMAGES = 1_000_000

# ----------------------------------------------------------------------------------------------- schema


@dataclass
class ExperimentConfig:
    name: str = "wagi"
    out_dir: str = "runs"                  # run directory = out_dir/name
    seed: int = 0
    device: str = _choice("auto", ("auto", "cpu", "cuda"))


@dataclass
class GeneratorConfig:
    ckpt: Optional[str] = _path(None)      # rosinality-format or WaGI generator checkpoint
    trust_checkpoint: bool = False         # allow full unpickling of ckpt (runs code from the file)
    size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channel_max: Optional[int] = None      # cap on feature channels (small demo generators)
    to_rgb_kernel: int = 1                 # ToRGB conv size: 1 rosinality's SWAGAN, 3 the official (converted) one
    randomize_noise: bool = False          # inversion uses the stored noise buffers


@dataclass
class EncoderConfig:
    kind: str = _choice("restyle", ("psp", "e4e", "restyle"))
    backbone: str = _choice("ir_se50", ("ir_se50", "resnet34", "small"))
    weights: Optional[str] = _path(None)   # backbone init: model_ir_se50.pth or a torchvision resnet34 file
    input_size: int = 256                  # the encoder sees images resized to this
    n_iters: int = 5                       # ReStyle refinement steps (1 for psp / e4e)
    width: int = 16                        # 'small' backbone: stage widths (w, 2w, 4w, 8w)
    head_channels: Optional[int] = None    # map2style width; None: style_dim (ir_se50/resnet34), 8w (small)


@dataclass
class AlignerConfig:
    enabled: bool = True
    distortion_scale: float = 0.15         # RandomPerspective strength used to simulate edits
    aug_prob: float = 0.9
    width: int = 32
    size: int = 256                        # resolution the aligner's U-Net works at (its flow is upsampled)


@dataclass
class FusionConfig:
    kind: str = _choice("wavelet", ("none", "wavelet", "feature"))
    resolutions: List[int] = field(default_factory=lambda: [32, 64, 128])  # feature resolutions fused
    source: str = _choice("residual", ("residual", "input"))  # DWT of x - x̂0, or of x itself
    levels: int = 1                        # Haar levels of the fusion input pyramid
    width: int = 64                        # channels of the fusion encoder
    gate_init: float = 0.0                 # 0 ⇒ at step 0 the output equals the plain generator's
    aligner: AlignerConfig = field(default_factory=AlignerConfig)


@dataclass
class WaveletLossConfig:
    levels: int = 1
    band_weights: Dict[str, float] = field(default_factory=lambda: {"LH": 1.0, "HL": 1.0, "HH": 1.0})


@dataclass
class LossConfig:
    l2: float = 1.0
    lpips: float = 0.8
    id: float = 0.1
    wavelet: float = 1.0
    w_norm: float = 0.0
    delta_reg: float = 0.0
    aligner: float = 0.1                   # L1 of the aligned residual vs the true residual
    loss_size: Optional[int] = 256         # images are pooled to this size for the losses (None: full)
    wavelet_cfg: WaveletLossConfig = field(default_factory=WaveletLossConfig)
    lpips_net: str = _choice("alex", ("alex", "vgg"))
    lpips_weights: Optional[str] = _path(None)   # torchvision trunk weights; default: torch hub cache
    id_weights: Optional[str] = _path(None)      # model_ir_se50.pth


@dataclass
class DataConfig:
    train_dir: Optional[str] = _path(None)
    test_dir: Optional[str] = _path(None)
    demo: bool = False                     # procedural demo faces instead of folders
    demo_images: Optional[int] = None      # demo training faces: seeds [0, demo_images); None: [0, 1e6)
    demo_test_size: int = 64               # held-out demo images for validation (seeds from 1e6)
    image_size: int = 256
    hflip: bool = True
    workers: int = 2
    preload: bool = False                  # render/decode the training set once, uint8 on the training device
    cache_file: Optional[str] = _path(None, must_exist=False)  # .pt cache of the preloaded images


@dataclass
class TrainConfig:
    stage: str = _choice("encoder", ("encoder", "fusion", "joint"))
    encoder_ckpt: Optional[str] = _path(None)   # stage 'fusion': the trained basic encoder to freeze
    max_steps: int = 100000
    batch_size: int = 8
    lr: float = 1e-4
    optimizer: str = _choice("ranger", ("adam", "ranger"))
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    scheduler: str = _choice("constant", ("constant", "cosine"))
    grad_clip: Optional[float] = None
    amp: str = _choice("none", ("none", "bf16"))
    train_generator: bool = False
    log_every: int = 50
    image_every: int = 500
    val_every: int = 2500
    save_every: int = 5000
    val_batches: Optional[int] = None      # None: the whole test set
    keep_checkpoints: int = 3


@dataclass
class WaGIConfig:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ------------------------------------------------------------------------------------------ validation


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp, key: str):
    """Check ``value`` against the annotation ``tp`` (ints are accepted for floats); return it converted."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(key, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping (section), got {value!r}")
        return _build(tp, value, key)
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "2e-4" (no dot) as a string; accept any text Python reads as a float.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(key, f"unsupported type {tp}")


class _OverrideMapping(dict):
    """A mapping that exists only because a dotted override reached into it: for a mapping-valued key
    (``Dict[...]``) its entries are merged over the key's default instead of replacing it."""


def _is_mapping_type(tp) -> bool:
    origin = typing.get_origin(tp)
    if origin is Union:
        return any(_is_mapping_type(a) for a in typing.get_args(tp) if a is not type(None))
    return origin in (dict, Dict)


def _field_default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _build(cls, data: Dict[str, Any], prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            full = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(full, f"unknown key (valid keys here: {', '.join(sorted(names))})")
    kwargs = {}
    for name, f in names.items():
        full = f"{prefix}.{name}" if prefix else name
        if name not in data:
            continue
        raw = data[name]
        if isinstance(raw, _OverrideMapping) and _is_mapping_type(hints[name]):
            default = _field_default(f)
            raw = {**(default if isinstance(default, dict) else {}), **raw}
        value = _coerce(raw, hints[name], full)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(full, f"must be one of {list(choices)}, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)


def _check_paths(obj, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        full = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_paths(value, full)
        elif f.metadata.get("path") and value is not None and f.metadata.get("must_exist", True):
            if not os.path.exists(os.path.expanduser(value)):
                raise ConfigError(full, f"file or folder not found: {value}")


def _check_consistency(cfg: WaGIConfig) -> None:
    """Cross-key rules, each raising with the key that must change."""
    tc = cfg.train
    for key in ("batch_size", "log_every", "image_every", "val_every", "save_every"):
        if getattr(tc, key) < 1:
            raise ConfigError(f"train.{key}", f"must be >= 1, got {getattr(tc, key)}")
    for key in ("max_steps", "keep_checkpoints"):
        if getattr(tc, key) < 0:
            raise ConfigError(f"train.{key}", f"must be >= 0, got {getattr(tc, key)}")
    if cfg.encoder.kind in ("psp", "e4e") and cfg.encoder.n_iters != 1:
        raise ConfigError("encoder.n_iters", f"'{cfg.encoder.kind}' encoders run one step; set n_iters: 1")
    if cfg.encoder.n_iters < 1:
        raise ConfigError("encoder.n_iters", "must be >= 1")
    if cfg.generator.to_rgb_kernel < 1 or cfg.generator.to_rgb_kernel % 2 == 0:
        raise ConfigError("generator.to_rgb_kernel", f"must be a positive odd integer (1 or 3), got "
                                                     f"{cfg.generator.to_rgb_kernel}")
    for r in (cfg.fusion.resolutions if cfg.fusion.kind != "none" else []):
        if r < 4 or r >= cfg.generator.size or r & (r - 1):
            raise ConfigError("fusion.resolutions",
                              f"{r} is not a feature resolution of a size-{cfg.generator.size} SWAGAN "
                              f"(powers of two from 4 to {cfg.generator.size // 2})")
    if not cfg.data.demo and cfg.train.max_steps > 0 and cfg.data.train_dir is None:
        raise ConfigError("data.train_dir", "set a training image folder, or data.demo: true")
    dc = cfg.data
    if dc.demo_images is not None:
        if not dc.demo:
            raise ConfigError("data.demo_images", "only applies to the demo faces (data.demo: true); set it to null")
        if not 1 <= dc.demo_images <= MAX_DEMO_TRAIN_IMAGES:
            raise ConfigError("data.demo_images", f"must be in [1, {MAX_DEMO_TRAIN_IMAGES}] (the demo training "
                                                  f"seeds), got {dc.demo_images}")
    if dc.preload and dc.demo and dc.demo_images is None:
        raise ConfigError("data.demo_images", "data.preload needs a finite training set: set data.demo_images "
                                              "(the number of demo faces to render once), or data.preload: false")
    if dc.workers < 0:
        raise ConfigError("data.workers", f"must be >= 0, got {dc.workers}")
    if cfg.encoder.head_channels is not None and cfg.encoder.head_channels < 1:
        raise ConfigError("encoder.head_channels", f"must be >= 1 or null, got {cfg.encoder.head_channels}")
    if cfg.train.stage == "fusion" and cfg.fusion.kind == "none":
        raise ConfigError("fusion.kind", "stage 'fusion' needs a fusion kind ('wavelet' or 'feature')")
    for band in cfg.loss.wavelet_cfg.band_weights:
        if band not in ("LL", "LH", "HL", "HH"):
            raise ConfigError(f"loss.wavelet_cfg.band_weights.{band}", "bands are LL, LH, HL, HH")


def validate_config(schema, data: Optional[Dict[str, Any]], check_consistency: Callable[[Any], None],
                    check_paths: bool = True):
    """Build the dataclass ``schema`` from a nested dict (``None``: the defaults), then run its cross-key
    rules ``check_consistency`` and, with ``check_paths``, check that the path keys that must exist do.
    Raises :class:`ConfigError` naming the first bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"a config must be a mapping at the top level, got {type(data).__name__}")
    cfg = _build(schema, data)
    check_consistency(cfg)
    if check_paths:
        _check_paths(cfg)
    return cfg


def from_dict(data: Dict[str, Any], check_paths: bool = True) -> WaGIConfig:
    """Validate a nested dict and return the config object."""
    return validate_config(WaGIConfig, data, _check_consistency, check_paths)


def to_dict(cfg: WaGIConfig) -> Dict[str, Any]:
    """Plain nested dict (YAML/JSON/checkpoint-safe)."""
    return dataclasses.asdict(cfg)


def parse_override(text: str):
    """``"train.lr=2e-4"`` → ``(["train", "lr"], 2e-4)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(text, "an override must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(text, "empty key in override")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(key, f"cannot parse value {raw!r}: {e}") from None
    return key.split("."), value


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``section.key=value`` overrides to a nested dict (copied, not changed in place). Mappings that
    the file does not give are created as :class:`_OverrideMapping`, so that validation merges a dotted
    override into a mapping-valued key over that key's default."""
    data = dict(data or {})
    for text in overrides or ():
        parts, value = parse_override(text)
        node = data
        for i, p in enumerate(parts[:-1]):
            child = node.get(p)
            if child is None:
                child = _OverrideMapping()
            elif not isinstance(child, dict):
                raise ConfigError(".".join(parts[: i + 1]), "is not a section, cannot set a sub-key")
            else:
                child = type(child)(child) if isinstance(child, _OverrideMapping) else dict(child)
            node[p] = child
            node = child
        node[parts[-1]] = value
    return data


def read_config_data(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """The nested dict of a YAML config file (``path=None``: empty) with ``section.key=value`` overrides
    applied; not validated yet (see :func:`validate_config`)."""
    data: Dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("", f"config file not found: {path}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError("", f"{path} is not valid YAML: {e}") from None
    return apply_overrides(data, overrides)


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = (),
                check_paths: bool = True) -> WaGIConfig:
    """Read, override and validate a config. ``path=None`` starts from the defaults."""
    return from_dict(read_config_data(path, overrides), check_paths=check_paths)


def save_config(cfg: WaGIConfig, path: Union[str, Path]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def all_keys(cls=WaGIConfig, prefix: str = "") -> List[str]:
    """Every dotted key of the schema (used to check that docs/config.md documents each one)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        full = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, full))
        else:
            keys.append(full)
    return keys
