"""Checkpoint reading and writing: atomic saves, safe loads, and the SWAGAN generator loader.

Project checkpoints hold tensors and plain Python containers only, so they load with
``torch.load(weights_only=True)``; no code from a file runs unless the caller passes ``trust=True``.

Formats read by :func:`load_generator`:

* **WaGI** (written by :func:`save_generator`)::

      {"format": "wagi", "version": 1,
       "generator": {Generator kwargs: size, style_dim, n_mlp, channel_multiplier, blur_kernel, lr_mlp, channels,
                     to_rgb_kernel},
       "config": {resolved run config, plain data},
       "g_ema": state_dict, "latent_avg": (1, style_dim) tensor or None, ...extra}

  ``scripts/convert_weights.py`` writes this format for the official TensorFlow SWAGAN
  (:mod:`wagi.swagan_tf`), with ``to_rgb_kernel: 3`` and a ``converted_from`` entry.

* **rosinality** ``train.py`` / ``convert_weight.py``:
  ``{"g_ema": state_dict, ["latent_avg"], ["args": Namespace], ...}``.
  The pickled ``argparse.Namespace`` is allowed (that class only) and returned as a plain dict.
* a full WaGI model checkpoint (``"state_dict"`` with ``generator.*`` keys): its generator;
* a bare SWAGAN generator state_dict.

Generator hyper-parameters missing from the file are inferred from the state_dict shapes
(size from the number of ToRGB levels, channels from the conv weights, style_dim and n_mlp from
the mapping network).

Integrity: every dict that :func:`save_checkpoint` writes carries ``"integrity": {"algorithm":
"sha256", "digest": ...}``, a hash of everything else in the file (every tensor's dtype, shape and
bytes, every key and plain value, in order; :func:`payload_digest`). :func:`load_checkpoint` checks it
and removes the entry, so a file with one changed byte is refused in one line instead of loading a
changed weight. Files without the entry (older checkpoints, other tools' files) load as before.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from wagi.fileio import PathLike, atomic_write
from wagi.models.swagan import WAVELET_CHANNELS, Generator, default_channels

logger = logging.getLogger(__name__)


FORMAT_NAME = "wagi"
FORMAT_VERSION = 1
LATENT_AVG_SAMPLES = 4096  # mapped samples averaged when a checkpoint carries no latent_avg
LATENT_AVG_SEED = 0
MODEL_GENERATOR_PREFIX = "generator."  # the generator's keys inside a full WaGI model state_dict
_MAX_LISTED_KEYS = 8  # keys named per category in a state_dict mismatch error
_PLAIN_SCALARS = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device, torch.Size)


# The one opt-in to full unpickling, named the same by every script (flag) and config (key).
TRUST_FLAG = "--trust-checkpoint"
TRUST_KEY = "generator.trust_checkpoint"
INTEGRITY_KEY = "integrity"
INTEGRITY_ALGORITHM = "sha256"


class CheckpointError(RuntimeError):
    """A file is not a readable checkpoint, or not the kind of checkpoint that was asked for."""


# ---------------------------------------------------------------------------------------- integrity
def payload_digest(obj: Any) -> str:
    """SHA-256 (hex) of a checkpoint's content: tensors by dtype, shape and bytes; containers by type,
    length, keys and items in order; other values by type and ``repr``. Equal for a saved object and the
    object ``torch.load`` returns for it, whatever device the tensors were mapped to."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach()
            t = (t.to_dense() if t.layout != torch.strided else t).cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)};".encode())
            h.update(t.view(torch.uint8).numpy())
        elif isinstance(x, dict):
            h.update(f"D{len(x)};".encode())
            for k, v in x.items():
                h.update(f"K{type(k).__name__}:{k!r};".encode())
                feed(v)
        elif isinstance(x, (list, tuple)):
            h.update(f"{type(x).__name__}{len(x)};".encode())
            for v in x:
                feed(v)
        elif isinstance(x, set):
            h.update(f"set{len(x)};".encode())
            for r in sorted(f"{type(v).__name__}:{v!r}" for v in x):
                h.update(r.encode() + b";")
        else:
            h.update(f"S{type(x).__name__}:{x!r};".encode())

    feed(obj)
    return h.hexdigest()


def _with_integrity(obj: Any) -> Any:
    if type(obj) not in (dict, OrderedDict):
        return obj  # a bare tensor or list: nowhere to store the hash
    if INTEGRITY_KEY in obj:
        raise ValueError(f"checkpoint key '{INTEGRITY_KEY}' is reserved for the integrity hash")
    sealed = type(obj)(obj)
    sealed[INTEGRITY_KEY] = {"algorithm": INTEGRITY_ALGORITHM, "digest": payload_digest(obj)}
    return sealed


def _verify_integrity(obj: Any, path: Path) -> Any:
    """Check and remove the integrity entry of a loaded checkpoint (absent: nothing to check)."""
    if not isinstance(obj, dict) or INTEGRITY_KEY not in obj:
        return obj
    record = obj.pop(INTEGRITY_KEY)
    if not isinstance(record, dict) or record.get("algorithm") != INTEGRITY_ALGORITHM \
            or not isinstance(record.get("digest"), str):
        raise CheckpointError(f"{path}: damaged integrity record; the file is corrupt or was edited")
    if payload_digest(obj) != record["digest"]:
        raise CheckpointError(f"{path}: integrity check failed: the content differs from what was saved (a damaged "
                              "or modified file); restore it from a copy or re-create it")
    return obj


# ---------------------------------------------------------------------------------------- plain data
def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise ``TypeError`` naming the first entry of ``obj`` that ``weights_only`` loading would reject.

    Allowed: tensors, str/bytes/numbers/bool/None, torch dtype/device/Size, and dict / list / tuple /
    set of those (dict keys: str, int, float, bool or tuple).
    """
    if isinstance(obj, torch.Tensor):
        if type(obj) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(f"{where}: tensor subclass {type(obj).__name__} is not plain data")
        return
    if type(obj) in _PLAIN_SCALARS:
        return  # exact types: a subclass (torch.__version__'s TorchVersion, numpy.float64) fails weights_only loading
    if type(obj) in (dict, OrderedDict):
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, tuple)):
                raise TypeError(f"{where}: key {k!r} of type {type(k).__name__} is not plain data")
            check_plain(v, f"{where}[{k!r}]")
        return
    if type(obj) in (list, tuple, set):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(obj).__module__}.{type(obj).__qualname__} is not plain data "
                    "(checkpoints hold tensors and plain containers only; convert it, e.g. to a dict or a tensor)")


def _namespaces_to_dicts(obj: Any) -> Any:
    if isinstance(obj, argparse.Namespace):
        return {k: _namespaces_to_dicts(v) for k, v in vars(obj).items()}
    if type(obj) in (dict, OrderedDict):
        return type(obj)((k, _namespaces_to_dicts(v)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(_namespaces_to_dicts(v) for v in obj)
    return obj


# ---------------------------------------------------------------------------------------- save / load
def save_checkpoint(obj: Any, path: PathLike, plain_only: bool = True) -> Path:
    """Write ``obj`` with ``torch.save`` atomically (:func:`wagi.fileio.atomic_write`).

    A reader (or a run killed mid-write) sees either the old file or the complete new one. With
    ``plain_only`` the object is first checked with :func:`check_plain`, so that every saved file
    loads with ``weights_only=True``, and a dict gets the integrity hash (module docstring). Returns the
    final path.
    """
    if plain_only:
        check_plain(obj)
        obj = _with_integrity(obj)
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: PathLike, map_location: Any = "cpu", trust: bool = False) -> Any:
    """Load a checkpoint without running code from it.

    Always tries ``torch.load(weights_only=True)``, allowing ``argparse.Namespace`` (the ``args`` of
    rosinality checkpoints), which is returned as a plain dict. A file that needs any other class
    raises :class:`CheckpointError` naming it and the opt-in (``--trust-checkpoint`` /
    ``generator.trust_checkpoint``); ``trust=True`` then loads it with full unpickling (``weights_only=False``,
    which can execute code from the file), with a ``WARNING:`` line on stderr and a ``UserWarning``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, KeyError, ... here
        # Only a file that holds an unsupported class is worth loading with trust; anything else (an image,
        # text, a truncated file) is simply not a checkpoint.
        if "Weights only load failed" not in str(err) or not re.search(r"GLOBAL (\S+)", str(err)):
            detail = "" if "Weights only load failed" in str(err) else f": {type(err).__name__}: {_first_line(err)}"
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt, truncated or another "
                                  f"file type){detail}") from err
        if not trust:
            found = re.search(r"GLOBAL (\S+)", str(err))
            what = f"it contains {found.group(1)}" if found else "it uses pickle features beyond plain data"
            raise CheckpointError(
                f"{path} cannot be loaded as plain data ({what}); if you trust the file, pass {TRUST_FLAG} "
                f"(config: {TRUST_KEY}: true), which unpickles it fully and can run code stored in it") from err
        notice = f"{path}: full unpickling ({TRUST_FLAG}): this can run code stored in the file"
        logger.warning("WARNING: %s", notice)  # never hidden by PYTHONWARNINGS
        warnings.warn(f"loading {notice}", stacklevel=2)
        try:
            obj = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as err2:
            raise CheckpointError(f"{path} could not be unpickled even with trust=True: "
                                  f"{type(err2).__name__}: {_first_line(err2)}") from err2
    return _namespaces_to_dicts(_verify_integrity(obj, path))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else repr(err)


# ---------------------------------------------------------------------------------------- generator
def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _describe_foreign(ckpt: Mapping, path: Path) -> Optional[str]:
    """A one-line explanation when ``ckpt`` is a known checkpoint kind that is not a SWAGAN generator."""
    sd = ckpt.get("state_dict")
    if isinstance(sd, Mapping) and any(str(k).startswith(("encoder.", "decoder.")) for k in sd):
        return (f"{path} is a pSp-family encoder checkpoint (pSp / e4e / ReStyle / HyperStyle / HFGI: 'state_dict' "
                "with encoder.* / decoder.* keys), not a generator checkpoint; give load_generator the SWAGAN "
                "generator checkpoint (rosinality 'g_ema' or a WaGI file)")
    return None


def _check_swagan_state_dict(sd: Mapping[str, torch.Tensor], path: Path) -> None:
    rgb = sd.get("to_rgb1.conv.weight")
    if rgb is None:
        raise CheckpointError(f"{path}: the state_dict is not a SWAGAN generator (no 'to_rgb1.conv.weight'; "
                              f"first keys: {list(sd)[:5]})")
    if rgb.dim() == 5 and rgb.shape[1] == 3:
        raise CheckpointError(f"{path} holds a StyleGAN2 (non-SWAGAN) generator: its ToRGB layers output 3 "
                              f"channels, SWAGAN's output {WAVELET_CHANNELS} wavelet channels")
    if rgb.dim() != 5 or rgb.shape[1] != WAVELET_CHANNELS or rgb.shape[-1] != rgb.shape[-2] \
            or rgb.shape[-1] % 2 == 0:
        raise CheckpointError(f"{path}: 'to_rgb1.conv.weight' has shape {tuple(rgb.shape)}, expected "
                              f"(1, {WAVELET_CHANNELS}, C, k, k) with k odd (1 in rosinality's SWAGAN, 3 in the "
                              "official one) for a SWAGAN generator")


def infer_generator_kwargs(sd: Mapping[str, torch.Tensor], size: Optional[int] = None,
                           channel_multiplier: Optional[int] = None) -> Dict[str, Any]:
    """Generator kwargs read from the shapes of a SWAGAN state_dict (``lr_mlp`` / ``blur_kernel``: defaults).

    ``to_rgb_kernel`` is read from ``to_rgb1.conv.weight`` and listed only when it is not 1. The channel
    table becomes ``channel_multiplier`` when it matches rosinality's table (given or
    inferred multiplier), an explicit ``channels`` dict otherwise. ``size`` / ``channel_multiplier``
    given by the caller are checked against the shapes.
    """
    def need(key: str) -> torch.Tensor:
        if key not in sd:
            raise CheckpointError(f"the state_dict has no '{key}', which every SWAGAN generator has")
        return sd[key]

    mlp_ids = sorted(int(m.group(1)) for k in sd for m in [re.fullmatch(r"style\.(\d+)\.weight", k)] if m)
    if not mlp_ids:
        raise CheckpointError("the state_dict has no mapping network ('style.N.weight')")
    style_dim = int(need("style.1.weight").shape[1])
    n_rgbs = len({m.group(1) for k in sd for m in [re.fullmatch(r"to_rgbs\.(\d+)\.bias", k)] if m})
    log_size = n_rgbs + 2
    inferred_size = 2 ** (log_size + 1)
    if size is not None and int(size) != inferred_size:
        raise CheckpointError(f"size {size} was asked for, but the state_dict is a {inferred_size}x{inferred_size} "
                              f"SWAGAN ({n_rgbs} upsampling ToRGB levels)")
    channels = {4: int(need("input.input").shape[1])}
    for k in range(n_rgbs):
        channels[2 ** (k + 3)] = int(need(f"convs.{2 * k}.conv.weight").shape[1])

    def matches(cm: int) -> bool:
        table = default_channels(cm)
        return all(table[r] == c for r, c in channels.items())

    if channel_multiplier is not None:
        cm: Optional[int] = int(channel_multiplier)
        if not matches(cm):
            raise CheckpointError(f"channel_multiplier {channel_multiplier} was asked for, but the state_dict's "
                                  f"channels are {channels}")
    elif 64 in channels and channels[64] % 256 == 0 and matches(channels[64] // 256):
        cm = channels[64] // 256
    elif matches(2):  # sizes <= 128 at full width: every level has 512 channels, any multiplier fits
        cm = 2
    else:
        cm = None
    kwargs: Dict[str, Any] = {"size": inferred_size, "style_dim": style_dim, "n_mlp": len(mlp_ids)}
    to_rgb_kernel = int(need("to_rgb1.conv.weight").shape[-1])
    if to_rgb_kernel != 1:
        kwargs["to_rgb_kernel"] = to_rgb_kernel
    if cm is None:
        kwargs["channels"] = channels
    else:
        kwargs["channel_multiplier"] = cm
    return kwargs


def apply_multiplier_hint(gen_kwargs: Dict[str, Any], hint: Optional[int]) -> Dict[str, Any]:
    """Use rosinality's ``args.channel_multiplier`` where the shapes fit any multiplier (all levels < 64).

    The shapes stay authoritative: a hint that contradicts them is ignored.
    """
    if hint is None or "channel_multiplier" not in gen_kwargs:
        return gen_kwargs
    used = {r: c for r, c in default_channels(gen_kwargs["channel_multiplier"]).items() if r < gen_kwargs["size"]}
    if all(default_channels(int(hint))[r] == c for r, c in used.items()):
        return {**gen_kwargs, "channel_multiplier": int(hint)}
    return gen_kwargs


def state_dict_mismatch(model: torch.nn.Module, sd: Mapping[str, torch.Tensor]) -> Optional[str]:
    """One line listing the missing, unexpected and mis-shaped keys of ``sd`` for ``model`` (a few of each),
    or None when they fit; ``model`` may live on the meta device, so nothing is allocated to compare."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    parts = []
    for name, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped (file vs model)", shapes)):
        if items:
            more = f" ... (+{len(items) - _MAX_LISTED_KEYS})" if len(items) > _MAX_LISTED_KEYS else ""
            parts.append(f"{len(items)} {name}: {', '.join(items[:_MAX_LISTED_KEYS])}{more}")
    return "; ".join(parts) or None


def _args_hints(args: Any) -> Dict[str, Any]:
    if not isinstance(args, Mapping):
        return {}
    if args.get("arch") not in (None, "swagan"):
        raise CheckpointError(f"the checkpoint was trained with --arch {args.get('arch')!r}, not 'swagan'")
    return {k: args[k] for k in ("channel_multiplier",) if args.get(k) is not None}


def load_generator(path: PathLike, size: Optional[int] = None, channel_multiplier: Optional[int] = None,
                   map_location: Any = "cpu", trust: bool = False, key: str = "g_ema",
                   compute_latent_avg: bool = False) -> Tuple[Generator, Optional[torch.Tensor], Dict[str, Any]]:
    """Build a :class:`Generator` from a checkpoint and load its weights strictly.

    Returns ``(generator in eval mode, latent_avg or None, info)``; ``latent_avg`` is ``(1, style_dim)``
    from the file, or computed as the mean of 4096 mapped samples (seed 0) when the file has none
    and ``compute_latent_avg`` is set. ``info`` holds ``format`` ('wagi', 'wagi_model', 'rosinality'
    or 'state_dict'), ``generator_kwargs``, ``args`` (rosinality's Namespace as a dict, or None),
    ``config`` (WaGI files), ``latent_avg_source`` ('checkpoint', 'computed' or None) and ``path``.
    """
    path = Path(path)
    ckpt = load_checkpoint(path, map_location=map_location, trust=trust)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")

    info: Dict[str, Any] = {"path": str(path), "args": None, "config": None, "key": key}
    hints: Dict[str, Any] = {}
    if ckpt.get("format") == FORMAT_NAME:
        if ckpt.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{path} is a WaGI checkpoint of version {ckpt.get('version')!r}; "
                                  f"this code reads version {FORMAT_VERSION}")
        info["format"] = FORMAT_NAME
        info["config"] = ckpt.get("config")
        gen_kwargs = ckpt.get("generator")  # absent: inferred from the shapes below
        model_sd = ckpt.get("state_dict")
        if key in ckpt:
            sd = ckpt[key]
        elif isinstance(model_sd, Mapping) and any(str(k).startswith(MODEL_GENERATOR_PREFIX) for k in model_sd):
            # a full WaGI model (encoder + generator + fusion): take its generator
            info["format"] = "wagi_model"
            n = len(MODEL_GENERATOR_PREFIX)
            sd = OrderedDict((k[n:], v) for k, v in model_sd.items() if k.startswith(MODEL_GENERATOR_PREFIX))
        else:
            raise CheckpointError(f"{path} is a WaGI checkpoint without a '{key}' generator state_dict "
                                  f"(keys: {sorted(map(str, ckpt))[:10]})")
    elif key in ckpt:
        info["format"] = "rosinality"
        info["args"] = ckpt.get("args") if isinstance(ckpt.get("args"), Mapping) else None
        hints = _args_hints(info["args"])
        gen_kwargs = None
        sd = ckpt[key]
    elif _is_state_dict(ckpt) and "style.1.weight" in ckpt:
        info["format"] = "state_dict"
        gen_kwargs = None
        sd = ckpt
    else:
        foreign = _describe_foreign(ckpt, path)
        if foreign:
            raise CheckpointError(foreign)
        raise CheckpointError(f"{path} has no '{key}' generator state_dict "
                              f"(top-level keys: {sorted(map(str, ckpt))[:10]})")

    if not _is_state_dict(sd):
        raise CheckpointError(f"{path}: '{key}' is not a state_dict of tensors")
    _check_swagan_state_dict(sd, path)

    if gen_kwargs is not None:
        gen_kwargs = dict(gen_kwargs)
        if size is not None and int(size) != int(gen_kwargs.get("size", -1)):
            raise CheckpointError(f"size {size} was asked for, but {path} holds a {gen_kwargs.get('size')} generator")
        if channel_multiplier is not None and gen_kwargs.get("channels") is None \
                and int(channel_multiplier) != int(gen_kwargs.get("channel_multiplier", 2)):
            raise CheckpointError(f"channel_multiplier {channel_multiplier} was asked for, but {path} holds "
                                  f"channel_multiplier {gen_kwargs.get('channel_multiplier')}")
    else:
        gen_kwargs = infer_generator_kwargs(sd, size=size, channel_multiplier=channel_multiplier)
        if channel_multiplier is None:
            gen_kwargs = apply_multiplier_hint(gen_kwargs, hints.get("channel_multiplier"))

    try:
        with torch.device("meta"):
            probe = Generator(**gen_kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot build a Generator from {gen_kwargs}: {err}") from err
    mismatch = state_dict_mismatch(probe, sd)
    if mismatch:
        raise CheckpointError(f"{path}: '{key}' does not match Generator({gen_kwargs}): {mismatch}")
    generator = Generator(**gen_kwargs)
    generator.load_state_dict(sd, strict=True)
    generator.to(next(iter(sd.values())).device).eval()
    info["generator_kwargs"] = generator.config

    latent_avg = ckpt.get("latent_avg")
    if isinstance(latent_avg, torch.Tensor) and latent_avg.ndim == 2 and latent_avg.shape[0] > 1 \
            and latent_avg.shape[1] == generator.style_dim and bool((latent_avg == latent_avg[:1]).all()):
        # A WaGI model file stores latent_avg as w+ (n_latent, style_dim), one row repeated: the generator's w.
        latent_avg = latent_avg[:1]
    if latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor) or latent_avg.shape[-1] != generator.style_dim \
                or latent_avg.numel() != generator.style_dim:
            shape = tuple(latent_avg.shape) if isinstance(latent_avg, torch.Tensor) else type(latent_avg).__name__
            raise CheckpointError(f"{path}: latent_avg must hold {generator.style_dim} values, got {shape}")
        latent_avg = latent_avg.reshape(1, generator.style_dim)
        info["latent_avg_source"] = "checkpoint"
    elif compute_latent_avg:
        rng = torch.Generator().manual_seed(LATENT_AVG_SEED)
        latent_avg = generator.mean_latent(LATENT_AVG_SAMPLES, generator=rng)
        info["latent_avg_source"] = "computed"
    else:
        info["latent_avg_source"] = None
    return generator, latent_avg, info


def save_generator(path: PathLike, g_ema: Generator, latent_avg: Optional[torch.Tensor],
                   config: Optional[Mapping[str, Any]] = None, **extra: Any) -> Path:
    """Save a generator in the WaGI format (see the module docstring), atomically.

    ``config`` is the resolved run config (plain data); ``extra`` entries are stored at the top level
    (e.g. ``step=...``, ``metrics={...}``). Everything must be plain data (:func:`check_plain`).
    """
    if not isinstance(g_ema, Generator):
        raise TypeError(f"save_generator expects a wagi Generator, got {type(g_ema).__name__}")
    reserved = {"format", "version", "generator", "config", "g_ema", "latent_avg"}
    clash = reserved & set(extra)
    if clash:
        raise ValueError(f"save_generator extra keys {sorted(clash)} clash with the format's own keys")
    if latent_avg is not None:
        if latent_avg.numel() != g_ema.style_dim:
            raise ValueError(f"latent_avg must hold style_dim={g_ema.style_dim} values, got {tuple(latent_avg.shape)}")
        latent_avg = latent_avg.detach().reshape(1, g_ema.style_dim).cpu().clone()
    ckpt = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "generator": dict(g_ema.config),
        "config": dict(config) if config is not None else {},
        "g_ema": OrderedDict((k, v.detach().cpu().clone()) for k, v in g_ema.state_dict().items()),
        "latent_avg": latent_avg,
        **extra,
    }
    return save_checkpoint(ckpt, path, plain_only=True)


def export_generator(src: PathLike, out: PathLike, dtype: torch.dtype = torch.float16, network: str = "g_ema") -> Path:
    """Write a compact single-generator WaGI file (weights in ``dtype``, ``latent_avg`` in fp32).

    ``src`` is any file :func:`load_generator` reads (a generator training checkpoint, for
    ``train_generator.py --export``); :func:`load_generator` reads the result back into an fp32 :class:`Generator`.
    ``network``: ``'g_ema'`` (the averaged generator, what every user wants) or ``'g'`` (the raw generator of a
    training checkpoint, for diagnostics: does the average blur what the raw one draws?).
    """
    if network not in ("g_ema", "g"):
        raise ValueError(f"network must be 'g_ema' or 'g', got {network!r}")
    g, latent_avg, info = load_generator(src, compute_latent_avg=True, key=network)
    half = g.to(dtype)
    bad = [k for k, v in half.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{src}: g_ema does not fit {dtype} (non-finite after the cast: {bad[:5]})")
    src_ckpt = load_checkpoint(src)
    training = src_ckpt.get("training") if isinstance(src_ckpt, dict) else None
    extra = {"dtype": str(dtype).replace("torch.", ""), "exported_from": str(src), "network": network}
    if isinstance(training, dict) and "step" in training:
        extra.update(step=int(training["step"]), kimg=float(training.get("kimg", 0.0)),
                     wall_time_s=float(training.get("wall_time_s", 0.0)), cards=list(training.get("cards", [])))
    return save_generator(out, half, latent_avg.float(), config=info.get("config") or {}, **extra)


__all__: List[str] = [
    "CheckpointError", "check_plain", "save_checkpoint", "load_checkpoint", "infer_generator_kwargs",
    "payload_digest", "INTEGRITY_KEY", "state_dict_mismatch", "TRUST_FLAG", "TRUST_KEY",
    "apply_multiplier_hint",
    "load_generator", "save_generator", "export_generator", "FORMAT_NAME", "FORMAT_VERSION",
]
