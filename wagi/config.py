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
import math
import os
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import yaml

from wagi.datasets import DATASETS, dataset_kind
from wagi.demo_seeds import TRAIN_SEED_END
from wagi.losses import EXTRA_LAMBDAS_KEY, LOSS_TERMS, lambda_key
from wagi.models.backbones import BACKBONES
from wagi.models.encoders import ENCODER_HEADS
from wagi.models.fusion import FUSIONS
from wagi.registry import Registry


class ConfigError(ValueError):
    """A configuration problem, with the dotted key it concerns; the message is one line."""

    def __init__(self, key: str, message: str):
        self.key = key
        text = " ".join((f"config key '{key}': {message}" if key else str(message)).split())
        super().__init__(text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + " ...")


# Bounds on what a config file may make the reader do: real configs are a few KB, a few hundred nodes
# and under ten levels deep; an "anchors and aliases" bomb expands a few hundred bytes into billions
# of nodes, and deep nesting exhausts the recursion of the YAML composer.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000   # scalars, lists and mappings after expanding every alias
MAX_CONFIG_DEPTH = 64
MAX_MESSAGE_CHARS = 500
_SHOWN = reprlib.Repr()
_SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxlevel = 60, 60, 6, 6, 3


def shown(value: Any) -> str:
    """A short repr for error messages: never the whole of a huge or deeply nested value."""
    return _SHOWN.repr(value)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a depth limit while composing; :func:`safe_yaml` adds the size limit."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                raise ConfigError("", f"YAML nested more than {MAX_CONFIG_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(node: yaml.Node) -> int:
    """Nodes of the document once every alias is expanded, counted without expanding (memoised per node);
    raises :class:`ConfigError` above ``MAX_CONFIG_NODES``, or when an alias contains its own anchor."""
    memo: Dict[int, int] = {}
    pending = object()

    def size(n: yaml.Node, depth: int) -> int:
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError("", f"YAML nested more than {MAX_CONFIG_DEPTH} levels deep (through aliases)")
        known = memo.get(id(n))
        if known is pending:
            raise ConfigError("", "YAML alias refers to a node that contains it (a recursive structure)")
        if known is not None:
            return known
        memo[id(n)] = pending  # type: ignore[assignment]
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(c, depth + 1) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in n.value)
        if total > MAX_CONFIG_NODES:
            raise ConfigError("", f"YAML expands to more than {MAX_CONFIG_NODES} values (anchors and aliases?)")
        memo[id(n)] = total
        return total

    return size(node, 0)


def safe_yaml(text: str, what: str = "config") -> Any:
    """Parse YAML ``text`` as plain data (``yaml.safe_load`` semantics) within ``MAX_CONFIG_NODES`` values
    after alias expansion and ``MAX_CONFIG_DEPTH`` levels; any problem is one :class:`ConfigError` line."""
    try:
        loader = _BoundedLoader(text)  # the reader refuses control and undecodable characters already here
    except yaml.YAMLError as e:
        raise ConfigError("", f"{what} is not valid YAML: {e}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except ConfigError:
        raise
    except yaml.YAMLError as e:
        raise ConfigError("", f"{what} is not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError("", f"{what}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def path_field(default=None, must_exist: bool = True):
    """A schema field holding a file or folder path; checked to exist when set (unless ``must_exist`` is False)."""
    return field(default=default, metadata={"path": True, "must_exist": must_exist})


def choice_field(default, choices: Union[Sequence[Any], Registry], also: Sequence[Any] = ()):
    """A schema field whose value is one of ``choices``: a fixed sequence, or a :class:`~wagi.registry.Registry`
    read at validation time (so kinds registered later are accepted), plus the fixed values ``also``."""
    fixed = choices if isinstance(choices, Registry) else tuple(choices)
    return field(default=default, metadata={"choices": fixed, "also": tuple(also)})


def allowed_values(f: dataclasses.Field) -> Optional[List[Any]]:
    """The values a choice field accepts now (None: not a choice field)."""
    choices = f.metadata.get("choices")
    return None if choices is None else list(f.metadata.get("also", ())) + list(choices)





# ----------------------------------------------------------------------------------------------- schema


@dataclass
class ExperimentConfig:
    name: str = "wagi"
    out_dir: str = "runs"                  # run directory = out_dir/name
    seed: int = 0
    device: str = choice_field("auto", ("auto", "cpu", "cuda"))


@dataclass
class GeneratorConfig:
    ckpt: Optional[str] = path_field(None)      # rosinality-format or WaGI generator checkpoint
    trust_checkpoint: bool = False         # allow full unpickling of ckpt (runs code from the file)
    size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channel_max: Optional[int] = None      # cap on feature channels (small demo generators)
    channels: Optional[Dict[int, int]] = None  # {feature resolution 4 ... size/2: channels}; null: the two above
    to_rgb_kernel: int = 1                 # ToRGB conv size: 1 rosinality's SWAGAN, 3 the official (converted) one
    randomize_noise: bool = False          # inversion uses the stored noise buffers


@dataclass
class EncoderConfig:
    kind: str = choice_field("restyle", ENCODER_HEADS)  # wagi.models.encoders.ENCODER_HEADS
    backbone: str = choice_field("ir_se50", BACKBONES)  # wagi.models.backbones.BACKBONES
    weights: Optional[str] = path_field(None)   # backbone init: model_ir_se50.pth or a torchvision resnet34 file
    input_size: int = 256                  # the encoder sees images resized to this
    n_iters: int = 5                       # ReStyle refinement steps (1 for psp / e4e)
    width: int = 16                        # 'small' backbone: stage widths (w, 2w, 4w, 8w)
    head_channels: Optional[int] = None    # map2style width; None: style_dim (ir_se50/resnet34), 8w (small)
    progressive_every: Optional[int] = None  # progressive heads (e4e): one more W+ delta every N steps; None: all
    progressive_start: int = 0             # with progressive_every: steps trained with W only (no deltas)


@dataclass
class AlignerConfig:
    enabled: bool = True
    distortion_scale: float = 0.15         # RandomPerspective strength used to simulate edits
    aug_prob: float = 0.9
    width: int = 32
    size: int = 256                        # resolution the aligner's U-Net works at (its flow is upsampled)


EDIT_AUG_SOURCES = ("sefa", "random")  # where an augmentation edit's direction comes from (fusion.edit_aug.sources)


@dataclass
class EditAugConfig:
    prob: float = 0.0                      # share of stage-2 samples whose latent is edited (0: off)
    strength: List[float] = field(default_factory=lambda: [1.0, 3.0])  # |s| uniform in [lo, hi], sign random
    sources: List[str] = field(default_factory=lambda: ["sefa", "random"])  # picked uniformly per edit
    sefa_components: int = 8               # a SeFa edit uses one of the generator's top-k components
    mask: List[float] = field(default_factory=lambda: [0.06, 0.15, 2])  # [lo, hi, dilate px]: where it changed


@dataclass
class FusionConfig:
    kind: str = choice_field("wavelet", FUSIONS, also=("none",))  # wagi.models.fusion.FUSIONS
    resolutions: List[int] = field(default_factory=lambda: [32, 64, 128])  # feature resolutions fused
    source: str = choice_field("residual", ("residual", "input"))  # DWT of x - x̂0, or of x itself
    levels: int = 1                        # Haar levels of the fusion input pyramid
    width: int = 64                        # channels of the fusion encoder
    gate_init: float = 0.0                 # 0 ⇒ at step 0 the output equals the plain generator's
    aligner: AlignerConfig = field(default_factory=AlignerConfig)
    edit_mode: str = choice_field("reuse", ("reuse", "recompute"))  # edits: reuse the recon corrections, or recompute
    edit_gate: Optional[List[float]] = field(default_factory=lambda: [0.02, 0.06, 1])  # [lo, hi, dilate] or null
    edit_signal: str = choice_field("pixel", ("high", "pixel"))  # what the edit gate measures
    cascade: bool = False                  # levels coarse to fine, each from the residual the coarser ones left
    edit_aug: EditAugConfig = field(default_factory=EditAugConfig)  # stage 2: real latent edits as augmentation


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
    edit_aug: float = 1.0                  # the edit pass of fusion.edit_aug (used only when its prob > 0)
    lattice: float = 0.0                   # periodic (block) component of the error, folded modulo each period
    lattice_periods: List[int] = field(default_factory=lambda: [4, 8, 16])  # px of the loss image
    loss_size: Optional[int] = 256         # images are pooled to this size for the losses (None: full)
    terms: Dict[str, float] = field(default_factory=dict)  # weights of registered terms without a key above
    wavelet_cfg: WaveletLossConfig = field(default_factory=WaveletLossConfig)
    lpips_net: str = choice_field("alex", ("alex", "vgg"))
    lpips_weights: Optional[str] = path_field(None)   # torchvision trunk weights; default: torch hub cache
    id_weights: Optional[str] = path_field(None)      # model_ir_se50.pth


@dataclass
class DataConfig:
    kind: Optional[str] = choice_field(None, DATASETS, also=(None,))  # wagi.datasets.DATASETS; null: demo / folder
    train_dir: Optional[str] = path_field(None)
    test_dir: Optional[str] = path_field(None)
    demo: bool = False                     # procedural demo faces instead of folders
    demo_images: Optional[int] = None      # demo training faces: seeds [0, demo_images); None: [0, 1e6)
    demo_test_size: int = 64               # held-out demo images for validation (seeds from 1e6)
    image_size: int = 256
    hflip: bool = True
    workers: int = 2
    preload: bool = False                  # render/decode the training set once, uint8 on the training device
    cache_file: Optional[str] = path_field(None, must_exist=False)  # .pt cache of the preloaded images


@dataclass
class TrainConfig:
    stage: str = choice_field("encoder", ("encoder", "fusion", "joint"))
    encoder_ckpt: Optional[str] = path_field(None)   # stage 'fusion': the trained basic encoder to freeze
    fusion_ckpt: Optional[str] = path_field(None)    # stage 'fusion' / 'joint': start the fusion module from this model
    max_steps: int = 100000
    batch_size: int = 8
    lr: float = 1e-4
    optimizer: str = choice_field("ranger", ("adam", "ranger"))
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    scheduler: str = choice_field("constant", ("constant", "cosine"))
    grad_clip: Optional[float] = None
    amp: str = choice_field("none", ("none", "bf16"))
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
        members = [a for a in args if a is not type(None)]
        if len(members) == 1 and typing.get_origin(members[0]) in (dict, Dict, list, List):
            return _coerce(value, members[0], key)  # Optional[mapping or list]: the entry's own error
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(key, f"expected {' or '.join(_type_name(a) for a in args)}, got {shown(value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping (section), got {shown(value)}")
        return _build(tp, value, key)
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {shown(value)}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {shown(value)}")
        if args[0] is int:  # YAML gives int keys, JSON and dotted overrides give their decimal text
            out = {}
            for k, v in value.items():
                if isinstance(k, bool) or not (isinstance(k, int) or (isinstance(k, str) and k.strip().isdigit())):
                    raise ConfigError(key, f"keys must be integers, got {shown(k)}")
                out[int(k)] = _coerce(v, args[1], f"{key}.{k}")
            return out
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "2e-4" (no dot) as a string; accept any text Python reads as a float.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {shown(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {shown(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {shown(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {shown(value)}")
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
        allowed = allowed_values(f)
        if allowed is not None and value not in allowed:
            raise ConfigError(full, f"must be one of {allowed}, got {shown(value)}")
        kwargs[name] = value
    return cls(**kwargs)


CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"  # the configs shipped with the repository


def _missing_paths(obj, prefix: str = "") -> List[typing.Tuple[str, str]]:
    """``(dotted key, value)`` of every path key that must exist and does not, in schema order."""
    missing = []
    for f in dataclasses.fields(obj):
        full = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            missing += _missing_paths(value, full)
        elif f.metadata.get("path") and value is not None and f.metadata.get("must_exist", True):
            if not os.path.exists(os.path.expanduser(value)):
                missing.append((full, value))
    return missing


def _producing_run_hint(value: str) -> str:
    """For a missing file inside the run folder of a shipped config (``runs/NAME/checkpoints/...``): which
    training to run first; else an empty string."""
    parts = Path(value).parts
    if "checkpoints" not in parts[1:]:
        return ""
    name = parts[parts.index("checkpoints", 1) - 1]
    config = CONFIGS_DIR / f"{name}.yaml"
    if not config.is_file():
        return ""
    return f" (train {name} first: python scripts/train.py --config configs/{name}.yaml)"


def _check_paths(obj) -> None:
    """Raise one :class:`ConfigError` listing every missing path, so a new setup learns all it lacks at once."""
    missing = _missing_paths(obj)
    if len(missing) == 1:
        key, value = missing[0]
        raise ConfigError(key, f"file or folder not found: {value}{_producing_run_hint(value)}")
    if missing:
        listing = "; ".join(f"{key}: {value}{_producing_run_hint(value)}" for key, value in missing)
        err = ConfigError("", f"{len(missing)} files or folders not found: {listing}")
        err.key = missing[0][0]
        raise err


# Upper bounds that keep a typo from asking for terabytes before the first step; each is several times
# what the paper setting (1024 px, style_dim 512, 18 w+ codes) uses.
MAX_IMAGE_SIDE = 4096
MAX_STYLE_DIM = 4096
MAX_CHANNELS = 4096        # any feature width
MAX_N_MLP = 64
MAX_CHANNEL_MULTIPLIER = 16
MAX_HAAR_LEVELS = 8        # 2**8 = 256: an image at least 256 px per side for the coarsest band
MAX_N_ITERS = 100
MAX_EDIT_MASK_DILATE = 32  # px of fusion.edit_aug.mask: an edit's reach at 1024 px; more masks the whole face
MAX_BATCH = 4096           # per process; the largest published GAN batches are 2048 over many GPUs (wagi.cli too)


def check_range(value: Any, key: str, lo: Optional[float] = None, hi: Optional[float] = None,
                lo_open: bool = False) -> None:
    """Raise :class:`ConfigError` for ``key`` unless ``lo <= value <= hi`` (``lo < value`` when
    ``lo_open``); ``None`` values pass (optional keys)."""
    if value is None:
        return
    low_bad = lo is not None and (value <= lo if lo_open else value < lo)
    if low_bad or (hi is not None and value > hi):
        lower = "" if lo is None else (f"> {lo:g}" if lo_open else f">= {lo:g}")
        upper = "" if hi is None else f"<= {hi:g}"
        raise ConfigError(key, f"must be {' and '.join(b for b in (lower, upper) if b)}, got {shown(value)}")


def check_lo_hi_dilate(values: Any, key: str, max_dilate: int, form: str) -> None:
    """A change threshold ``[lo, hi, dilate]`` (``fusion.edit_gate``, ``fusion.edit_aug.mask``): 0 <= lo < hi and
    an integer dilation in [0, max_dilate]; else ConfigError naming ``key``."""
    if len(values) != 3:
        raise ConfigError(key, f"is {form}, got {len(values)} values")
    lo, hi, dilate = values
    check_range(lo, key, 0.0)
    if not hi > lo:
        raise ConfigError(key, f"needs hi > lo, got lo={lo}, hi={hi}")
    if dilate != int(dilate) or not 0 <= dilate <= max_dilate:
        raise ConfigError(key, f"dilate (the third value) is an integer in [0, {max_dilate}], got {dilate}")


def check_power_of_two(value: Optional[int], key: str, lo: int, hi: int = MAX_IMAGE_SIDE) -> None:
    if value is not None and (value < lo or value > hi or value & (value - 1)):
        raise ConfigError(key, f"must be a power of two from {lo} to {hi}, got {shown(value)}")


def normalise_channels(channels: Any) -> Any:
    """A stored ``generator.channels`` with int resolution keys and int values (a config written to JSON has str
    keys); None and anything that is not such a mapping come back unchanged (to be compared and refused)."""
    if not isinstance(channels, dict):
        return channels
    try:
        return {int(r): int(c) for r, c in channels.items()}
    except (TypeError, ValueError):
        return channels


def check_channel_table(channels: Optional[Dict[int, int]], size: int, channel_max: Optional[int],
                        prefix: str = "generator") -> None:
    """``<prefix>.channels`` (None passes) names every feature resolution 4 ... size/2 of a size-``size`` SWAGAN
    generator and nothing else, each with 1 to :data:`MAX_CHANNELS` channels; ``<prefix>.channel_max``, when set,
    must not cut the table (the generator would apply the cap silently)."""
    if channels is None:
        return
    key = f"{prefix}.channels"
    needed = [2 ** i for i in range(2, int(math.log2(size)))]
    for r in channels:
        if r not in needed:
            raise ConfigError(key, f"resolution {r} is not a feature resolution of a size-{size} generator "
                                   f"(those are {needed})")
    for r in needed:
        if r not in channels:
            raise ConfigError(key, f"resolution {r} is missing (give every feature resolution {needed})")
        check_range(channels[r], f"{key}.{r}", 1, MAX_CHANNELS)
    if channel_max is not None and channel_max < max(channels.values()):
        raise ConfigError(f"{prefix}.channel_max", f"is {channel_max}, below the {max(channels.values())} channels "
                                                   f"of {key}; set it to null (the table gives every width)")


def check_finite(obj: Any, prefix: str = "") -> None:
    """Every float of a config dataclass (also inside lists and mappings) is finite: YAML reads ``.nan``
    and ``.inf``, and the float coercion accepts ``"nan"``."""
    def visit(value: Any, key: str) -> None:
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                visit(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {value}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                visit(v, f"{key}[{i}]")
        elif isinstance(value, dict):
            for k, v in value.items():
                visit(v, f"{key}.{k}")

    visit(obj, prefix)


def check_run_location(experiment: Any, cache_file: Optional[str]) -> None:
    """``experiment.name`` is one folder name, ``experiment.out_dir`` is not a file, and
    ``data.cache_file`` is not a folder (shared by the encoder and the generator schemas)."""
    name = experiment.name
    if not name.strip() or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise ConfigError("experiment.name", f"must be one folder name (no '/', not '.' or '..'), got {shown(name)}")
    if "\0" in experiment.out_dir or not experiment.out_dir.strip():
        raise ConfigError("experiment.out_dir", f"must be a folder path, got {shown(experiment.out_dir)}")
    out_dir = os.path.expanduser(experiment.out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError("experiment.out_dir", f"{experiment.out_dir} is a file, not a folder")
    run_dir = os.path.join(out_dir, name)
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError("experiment.name", f"{run_dir} is a file, not a run folder")
    if cache_file is not None:
        if "\0" in cache_file or not cache_file.strip():
            raise ConfigError("data.cache_file", f"must be a file path, got {shown(cache_file)}")
        if os.path.isdir(os.path.expanduser(cache_file)):
            raise ConfigError("data.cache_file",
                              f"{cache_file} is a folder; give a file path (e.g. {cache_file}/images.pt)")


def _check_consistency(cfg: WaGIConfig) -> None:
    """Cross-key and range rules, each raising with the key that must change."""
    check_finite(cfg)
    check_run_location(cfg.experiment, cfg.data.cache_file)
    g, enc, fu, lc = cfg.generator, cfg.encoder, cfg.fusion, cfg.loss
    check_power_of_two(g.size, "generator.size", 8)
    check_range(g.style_dim, "generator.style_dim", 1, MAX_STYLE_DIM)
    check_range(g.n_mlp, "generator.n_mlp", 1, MAX_N_MLP)
    check_range(g.channel_multiplier, "generator.channel_multiplier", 1, MAX_CHANNEL_MULTIPLIER)
    check_range(g.channel_max, "generator.channel_max", 1, MAX_CHANNELS)
    check_channel_table(g.channels, g.size, g.channel_max)
    check_range(enc.input_size, "encoder.input_size", 16, MAX_IMAGE_SIDE)
    check_range(enc.n_iters, "encoder.n_iters", 1, MAX_N_ITERS)
    check_range(enc.width, "encoder.width", 1, MAX_CHANNELS)
    check_range(enc.head_channels, "encoder.head_channels", 1, MAX_CHANNELS)
    al = fu.aligner
    check_range(al.distortion_scale, "fusion.aligner.distortion_scale", 0.0, 1.0)
    check_range(al.aug_prob, "fusion.aligner.aug_prob", 0.0, 1.0)
    check_range(al.width, "fusion.aligner.width", 1, MAX_CHANNELS)
    check_power_of_two(al.size, "fusion.aligner.size", 8)
    check_range(fu.levels, "fusion.levels", 1, MAX_HAAR_LEVELS)
    check_range(fu.width, "fusion.width", 1, MAX_CHANNELS)
    if fu.edit_gate is not None:
        check_lo_hi_dilate(fu.edit_gate, "fusion.edit_gate", 8, "[lo, hi, dilate] or null")
    check_range(lc.aligner, "loss.aligner", 0.0)
    _check_cascade(fu)
    _check_edit_aug(cfg)
    for name in LOSS_TERMS:
        key = lambda_key(name)
        if key.startswith(EXTRA_LAMBDAS_KEY + "."):
            check_range(lc.terms.get(name, 0.0), key, 0.0)
        elif loss_weight(cfg, name) is None:
            raise ConfigError(key, f"loss term '{name}' names this weight key, which the config does not have")
        else:
            check_range(loss_weight(cfg, name), key, 0.0)
    for name in lc.terms:
        if name not in LOSS_TERMS or lambda_key(name) != f"{EXTRA_LAMBDAS_KEY}.{name}":
            own = [t for t in LOSS_TERMS if lambda_key(t) == f"{EXTRA_LAMBDAS_KEY}.{t}"]
            why = (f"its weight is {lambda_key(name)}" if name in LOSS_TERMS else
                   f"terms weighted here: {own or 'none registered'}")
            raise ConfigError(f"{EXTRA_LAMBDAS_KEY}.{name}", f"is not a registered loss term without a key of its own "
                                                             f"({why})")
    wl = lc.wavelet_cfg
    check_range(wl.levels, "loss.wavelet_cfg.levels", 1, MAX_HAAR_LEVELS)
    for band, weight in wl.band_weights.items():
        check_range(weight, f"loss.wavelet_cfg.band_weights.{band}", 0.0)
    check_range(lc.loss_size, "loss.loss_size", 1, MAX_IMAGE_SIDE)
    loss_side = lc.loss_size if lc.loss_size is not None else g.size
    if not lc.lattice_periods:
        raise ConfigError("loss.lattice_periods", "needs at least one period (px)")
    for i, p in enumerate(lc.lattice_periods):
        check_range(p, f"loss.lattice_periods[{i}]", 2, MAX_IMAGE_SIDE)
        if lc.lattice > 0 and p > loss_side:
            what = "loss.loss_size" if lc.loss_size is not None else "generator.size (loss.loss_size: null)"
            raise ConfigError(f"loss.lattice_periods[{i}]", f"a period of {p} px does not fit the loss image "
                                                            f"({what} is {loss_side})")
    if loss_side % (2 ** wl.levels) or loss_side < 2 ** wl.levels:
        what = "loss.loss_size" if lc.loss_size is not None else "generator.size (loss.loss_size: null)"
        raise ConfigError("loss.wavelet_cfg.levels", f"{wl.levels} Haar levels need a loss image divisible by "
                                                     f"{2 ** wl.levels}; {what} is {loss_side}")
    dc = cfg.data
    check_range(dc.image_size, "data.image_size", 8, MAX_IMAGE_SIDE)
    check_range(dc.demo_test_size, "data.demo_test_size", 1)
    tc = cfg.train
    check_range(tc.lr, "train.lr", 0.0, lo_open=True)
    if len(tc.betas) != 2 or not all(0.0 <= b < 1.0 for b in tc.betas):
        raise ConfigError("train.betas", f"must be two numbers in [0, 1), got {shown(tc.betas)}")
    check_range(tc.weight_decay, "train.weight_decay", 0.0)
    check_range(tc.grad_clip, "train.grad_clip", 0.0, lo_open=True)  # a negative norm would flip every gradient
    check_range(tc.val_batches, "train.val_batches", 1)
    check_range(tc.batch_size, "train.batch_size", 1, MAX_BATCH)
    for key in ("batch_size", "log_every", "image_every", "val_every", "save_every"):
        if getattr(tc, key) < 1:
            raise ConfigError(f"train.{key}", f"must be >= 1, got {getattr(tc, key)}")
    for key in ("max_steps", "keep_checkpoints"):
        if getattr(tc, key) < 0:
            raise ConfigError(f"train.{key}", f"must be >= 0, got {getattr(tc, key)}")
    if not ENCODER_HEADS.info(cfg.encoder.kind)["iterative"] and cfg.encoder.n_iters != 1:
        raise ConfigError("encoder.n_iters", f"'{cfg.encoder.kind}' encoders run one step; set n_iters: 1")
    check_range(enc.progressive_every, "encoder.progressive_every", 1)
    check_range(enc.progressive_start, "encoder.progressive_start", 0)
    if enc.progressive_every is not None and not ENCODER_HEADS.info(enc.kind)["progressive"]:
        progressive = [k for k in ENCODER_HEADS if ENCODER_HEADS.info(k)["progressive"]]
        raise ConfigError("encoder.progressive_every", f"'{enc.kind}' heads have no progressive stages (those of "
                                                       f"{progressive} do); set it to null")
    if enc.progressive_start and enc.progressive_every is None:
        raise ConfigError("encoder.progressive_start", "only applies with encoder.progressive_every (the schedule); "
                                                       "set it to 0 or set progressive_every")
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
        if r % (2 ** (cfg.fusion.levels - 1)):
            raise ConfigError("fusion.levels", f"{cfg.fusion.levels} Haar levels need every fusion resolution "
                                               f"divisible by {2 ** (cfg.fusion.levels - 1)}; {r} is not")
    dc = cfg.data
    kind = check_dataset_kind(dc)
    if kind == "folder" and cfg.train.max_steps > 0 and dc.train_dir is None:
        raise ConfigError("data.train_dir", "set a training image folder, or data.demo: true")
    if dc.demo_images is not None:
        if kind != "demo":
            raise ConfigError("data.demo_images", "only applies to the demo faces (data.demo: true); set it to null")
        if not 1 <= dc.demo_images <= TRAIN_SEED_END:
            raise ConfigError("data.demo_images", f"must be in [1, {TRAIN_SEED_END}] (the demo training "
                                                  f"seeds), got {dc.demo_images}")
    if dc.preload and kind == "demo" and dc.demo_images is None:
        raise ConfigError("data.demo_images", "data.preload needs a finite training set: set data.demo_images "
                                              "(the number of demo faces to render once), or data.preload: false")
    if dc.workers < 0:
        raise ConfigError("data.workers", f"must be >= 0, got {dc.workers}")
    if cfg.encoder.head_channels is not None and cfg.encoder.head_channels < 1:
        raise ConfigError("encoder.head_channels", f"must be >= 1 or null, got {cfg.encoder.head_channels}")
    if cfg.train.stage == "fusion" and cfg.fusion.kind == "none":
        raise ConfigError("fusion.kind", f"stage 'fusion' needs a fusion kind (one of {list(FUSIONS)})")
    for band in cfg.loss.wavelet_cfg.band_weights:
        if band not in ("LL", "LH", "HL", "HH"):
            raise ConfigError(f"loss.wavelet_cfg.band_weights.{band}", "bands are LL, LH, HL, HH")


def _check_cascade(fu) -> None:
    """``fusion.cascade`` needs wavelet corrections computed from the residual."""
    if fu.cascade and fu.kind == "feature":
        raise ConfigError("fusion.cascade", "applies to wavelet corrections (fusion.kind: wavelet), not to 'feature'")
    if fu.cascade and fu.source != "residual":
        raise ConfigError("fusion.cascade", f"computes each level from the residual the coarser levels left; it needs "
                                            f"fusion.source: residual, got {fu.source!r}")


def _check_edit_aug(cfg: WaGIConfig) -> None:
    """``fusion.edit_aug`` and ``loss.edit_aug``: their ranges and what the augmentation needs."""
    fu, ea = cfg.fusion, cfg.fusion.edit_aug
    check_range(ea.prob, "fusion.edit_aug.prob", 0.0, 1.0)
    if len(ea.strength) != 2 or not 0.0 <= ea.strength[0] <= ea.strength[1]:
        raise ConfigError("fusion.edit_aug.strength", f"is [lo, hi] with 0 <= lo <= hi, got {shown(ea.strength)}")
    if not ea.sources:
        raise ConfigError("fusion.edit_aug.sources", f"needs at least one of {list(EDIT_AUG_SOURCES)}")
    for i, src in enumerate(ea.sources):
        if src not in EDIT_AUG_SOURCES or src in ea.sources[:i]:
            raise ConfigError(f"fusion.edit_aug.sources[{i}]", f"must be one of {list(EDIT_AUG_SOURCES)}, each at "
                                                               f"most once, got {shown(src)}")
    check_range(ea.sefa_components, "fusion.edit_aug.sefa_components", 1, cfg.generator.style_dim)
    check_lo_hi_dilate(ea.mask, "fusion.edit_aug.mask", MAX_EDIT_MASK_DILATE, "[lo, hi, dilate]")
    check_range(cfg.loss.edit_aug, "loss.edit_aug", 0.0)
    if ea.prob > 0:
        if fu.kind == "none":
            raise ConfigError("fusion.edit_aug.prob", "edit augmentation trains a fusion module; fusion.kind is 'none'")
        if cfg.train.stage == "encoder":
            raise ConfigError("fusion.edit_aug.prob", "edit augmentation applies to train.stage 'fusion' or 'joint' "
                                                      "(the encoder stage has no fusion); set it to 0")
        if not cfg.loss.edit_aug > 0:
            raise ConfigError("loss.edit_aug", "fusion.edit_aug.prob > 0 needs a positive weight for its loss")


def check_dataset_kind(dc) -> str:
    """The dataset kind a ``data`` section selects (:func:`wagi.datasets.dataset_kind`); ``data.demo: true``
    with another ``data.kind`` is a conflict (shared by the encoder and the generator schemas)."""
    if dc.demo and dc.kind not in (None, "demo"):
        raise ConfigError("data.kind", f"is {dc.kind!r} but data.demo is true; set data.demo: false (or data.kind: "
                                       "null for the demo faces)")
    return dataset_kind(dc)


def loss_weight(cfg: WaGIConfig, term: str) -> Optional[float]:
    """The weight of the registered loss term ``term`` in ``cfg``, read at its ``lambda_key`` (``loss.l2``,
    ``loss.terms.<name>``, ...); None when the config has no such key."""
    node: Any = cfg
    for part in lambda_key(term).split("."):
        if isinstance(node, dict):
            node = node.get(part, 0.0)
        elif dataclasses.is_dataclass(node) and hasattr(node, part):
            node = getattr(node, part)
        else:
            return None
    return node


def validate_config(schema, data: Optional[Dict[str, Any]], check_consistency: Callable[[Any], None],
                    check_paths: bool = True):
    """Build the dataclass ``schema`` from a nested dict (``None``: the defaults), then run its cross-key
    rules ``check_consistency`` and, with ``check_paths``, check that the path keys that must exist do.
    Raises :class:`ConfigError` naming the first bad key; missing paths are listed all at once."""
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
        value = safe_yaml(raw, f"the value of --set {key}") if raw.strip() != "" else None
    except ConfigError as e:
        raise ConfigError(key, f"cannot parse value {shown(raw)}: {e}") from None
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
    data: Any = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("", f"config file not found: {path}" if not p.exists() else
                              f"config file {path} is not a regular file")
        try:
            with open(p, "rb") as f:
                raw = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as e:
            raise ConfigError("", f"cannot read config file {path}: {e.strerror or e}") from None
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError("", f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes; is it a config?")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError("", f"config file {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                                  f"{e.start})") from None
        data = safe_yaml(text, f"config file {path}")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError("", f"config file {path} must hold a mapping of sections at the top level, "
                                  f"got a {type(data).__name__}: {shown(data)}")
    return apply_overrides(data, overrides)


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = (),
                check_paths: bool = True) -> WaGIConfig:
    """Read, override and validate a config. ``path=None`` starts from the defaults."""
    return from_dict(read_config_data(path, overrides), check_paths=check_paths)


def save_config(cfg: WaGIConfig, path: Union[str, Path]) -> None:
    from .fileio import atomic_write

    atomic_write(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


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
