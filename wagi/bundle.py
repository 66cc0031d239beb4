"""Bundled demo weights: compact fp16 model files plus a ``manifest.json`` (``scripts/bundle_models.py``).

A bundle folder (``pretrained/demo/``) holds one file per model and a manifest::

    <out>/<name>.pt         kind "wagi": a WaGI model file (WaGI.load reads it back as an fp32 model);
                            kind "generator": an fp16 g_ema file (wagi.checkpoint.load_generator reads it)
    <out>/manifest.json     {"format": "wagi-pretrained", "version": 1, "updated": date,
                             "models": {name: entry}}

Every floating tensor of a bundled file is stored in fp16 except ``latent_avg`` (see :data:`FP32_KEYS`);
integer tensors (BatchNorm ``num_batches_tracked``) are kept as they are; optimiser and RNG state are
dropped. A manifest entry records ``name``, ``file``, ``sha256``, ``bytes``, ``kind``, ``dtype``,
``loader``, ``config`` (the resolved run config, plain data), ``architecture`` (generators: the
Generator kwargs), ``steps``, ``wall_time_s``, ``cards``, ``source`` (the checkpoint path as given),
``metrics`` (the last ``val`` record of the run: per-band L2 ``LL``/``LH1``/``HL1``/``HH1`` and ``mse``,
with its step and file; or None), ``torch`` (the version that wrote the file), ``date`` (UTC) and
``note``.

:func:`bundle` prepares every file in memory and checks it (size limit, fp16 range, exact read-back)
before it writes anything, then writes the files and the merged manifest atomically.
:func:`verify_bundle` recomputes sizes and sha256 digests.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from wagi.fileio import PathLike

from .checkpoint import FORMAT_NAME, CheckpointError, export_generator, load_checkpoint, load_generator, save_checkpoint
from .fileio import atomic_write

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "wagi-pretrained"
MANIFEST_VERSION = 1
MAX_FILE_BYTES = 16 * 2 ** 20  # bundled files live in git: each stays well below hosting limits, clones stay fast
STORE_DTYPE = torch.float16
# Every w+ is latent_avg + E(x): it is kept exact (fp32, as exported generator files keep it); it is only
# n_latent x style_dim values.
FP32_KEYS = frozenset({"latent_avg"})
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # becomes a file name: no dots, no separators
KINDS = ("wagi", "generator")
LOADERS = {"wagi": "wagi.models.wagi.WaGI.load", "generator": "wagi.checkpoint.load_generator"}
FLAGS = {"wagi": "--model", "generator": "--generator"}
# Top-level keys of a training checkpoint that an exported generator file no longer has.
TRAINING_KEYS = ("training", "g", "d", "g_optim", "d_optim")
_HASH_CHUNK = 2 ** 20


class BundleError(ValueError):
    """A bundle cannot be built or read as asked (the message is one line naming the problem)."""


@dataclass
class BundleItem:
    """One model to bundle: ``kind`` 'wagi' or 'generator', its checkpoint, optionally its metrics.jsonl."""

    name: str
    kind: str
    source: Path
    metrics: Optional[Path] = None

    @property
    def flag(self) -> str:
        return f"{FLAGS.get(self.kind, self.kind)} {self.name}"


# ---------------------------------------------------------------------------------------------- helpers


def parse_named_path(text: str, flag: str) -> Tuple[str, Path]:
    """``'NAME=path'`` → ``(NAME, Path(path))``; NAME becomes a file name (letters, digits, ``_``, ``-``)."""
    name, sep, path = text.partition("=")
    if not sep or not path:
        raise BundleError(f"{flag} expects NAME=PATH, got {text!r}")
    check_name(name, flag)
    return name, Path(path)


def check_name(name: str, flag: str = "name") -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise BundleError(f"{flag}: {name!r} is not a valid model name (1-64 letters, digits, '_' or '-', "
                          "starting with a letter or digit)")
    return name


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json_plain(obj: Any, where: str) -> Any:
    """Plain JSON data: tuples become lists; non-finite floats become 'nan' / 'inf' / '-inf' strings."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        return {str(k): _json_plain(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return _json_plain(obj.item(), where)
    raise BundleError(f"{where}: a {type(obj).__name__} cannot be written to the manifest (plain data only)")


def _run_facts(ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    """Steps, wall time and cards of a checkpoint: from its ``training`` state, or top-level keys
    (exported files); None where the checkpoint does not record them."""
    training = ckpt.get("training")
    training = training if isinstance(training, Mapping) else {}

    def get(key: str) -> Any:
        return training[key] if key in training else ckpt.get(key)

    step, wall, cards = get("step"), get("wall_time_s"), get("cards")
    return {"steps": None if step is None else int(step),
            "wall_time_s": None if wall is None else float(wall),
            "cards": None if cards is None else [str(c) for c in cards]}


def run_metrics_file(source: Path) -> Optional[Path]:
    """``<run>/metrics.jsonl`` when ``source`` is ``<run>/checkpoints/<file>`` and the file exists."""
    from .training.common import CHECKPOINT_DIR

    if source.parent.name != CHECKPOINT_DIR:
        return None
    path = source.parent.parent / "metrics.jsonl"
    return path if path.is_file() else None


def last_val_record(path: PathLike, max_step: Optional[int] = None) -> Optional[Dict[str, Any]]:
    """The last ``kind == 'val'`` record of a metrics.jsonl with ``step <= max_step`` (any step if None).

    Returns ``{"step", "values", "file"}`` or None. A line that is not JSON is skipped: a run killed
    mid-write leaves a truncated last line.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"metrics file not found: {path}")
    found = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or rec.get("kind") != "val":
                continue
            step = rec.get("step")
            if max_step is not None and isinstance(step, int) and step > max_step:
                continue
            found = rec
    if found is None:
        return None
    values = {k: v for k, v in found.items() if k not in ("kind", "step", "time")}
    return {"step": found.get("step"), "values": values, "file": str(path)}


def half_state_dict(sd: Mapping[str, torch.Tensor], where: str,
                    keep_fp32: frozenset = FP32_KEYS) -> OrderedDict[str, torch.Tensor]:
    """Floating tensors → fp16 (except ``keep_fp32`` keys); other dtypes unchanged. Raises
    :class:`BundleError` when a value does not fit the fp16 range."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in sd.items():
        v = v.detach().cpu()
        if v.is_floating_point() and k not in keep_fp32:
            h = v.to(STORE_DTYPE)
            if not torch.isfinite(h).all() and torch.isfinite(v).all():
                raise BundleError(f"{where}: '{k}' has values beyond the fp16 range "
                                  f"(max |x| = {v.abs().max().item():.4g} > {torch.finfo(STORE_DTYPE).max:.0f})")
            v = h
        out[k] = v.clone()
    return out


# ------------------------------------------------------------------------------------------- preparing


@dataclass
class _Prepared:
    item: BundleItem
    data: bytes
    entry: Dict[str, Any]


def _load_source(item: BundleItem) -> Mapping[str, Any]:
    if not item.source.is_file():
        raise BundleError(f"{item.flag}: checkpoint not found: {item.source}")
    try:
        ckpt = load_checkpoint(item.source)
    except CheckpointError as err:
        raise BundleError(f"{item.flag}: {err}") from None
    if not isinstance(ckpt, Mapping):
        raise BundleError(f"{item.flag}: {item.source} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def wagi_fp16_checkpoint(model, **extra: Any) -> Dict[str, Any]:
    """``model.checkpoint_dict(**extra)`` with the state_dict stored in fp16 (see the module docstring)."""
    ckpt = model.checkpoint_dict(dtype=str(STORE_DTYPE).replace("torch.", ""), **extra)
    ckpt["state_dict"] = half_state_dict(ckpt["state_dict"], "state_dict")
    ckpt["latent_avg"] = ckpt["latent_avg"].detach().float().clone()
    return ckpt


def _prepare_wagi(item: BundleItem, tmp: Path) -> Tuple[bytes, Dict[str, Any]]:
    from .models.wagi import WaGI

    raw = _load_source(item)
    try:
        model = WaGI.load(item.source)
    except (CheckpointError, ValueError) as err:
        hint = "; bundle generator files with --generator" if raw.get("kind") != "wagi_model" else ""
        raise BundleError(f"{item.flag}: {err}{hint}") from None
    facts = _run_facts(raw)
    try:
        ckpt = wagi_fp16_checkpoint(model, exported_from=str(item.source), step=facts["steps"],
                                    wall_time_s=facts["wall_time_s"], cards=facts["cards"])
    except BundleError as err:
        raise BundleError(f"{item.flag}: {err}") from None
    out = tmp / f"{item.name}.pt"
    save_checkpoint(ckpt, out)
    # Read the file back as users will, and check that it is the fp16-rounded model, exactly, in fp32.
    back = WaGI.load(out).state_dict()
    for k, v in model.state_dict().items():
        ref = v.to(STORE_DTYPE).float() if v.is_floating_point() and k not in FP32_KEYS else v
        if back[k].dtype != v.dtype or not torch.equal(back[k], ref):
            raise BundleError(f"{item.flag}: '{k}' does not read back as written (dtype {back[k].dtype})")
    entry = {"config": model.config, **facts}
    return out.read_bytes(), entry


def _is_exported_generator(ckpt: Mapping[str, Any]) -> bool:
    g = ckpt.get("g_ema")
    if ckpt.get("format") != FORMAT_NAME or not isinstance(g, Mapping) or any(k in ckpt for k in TRAINING_KEYS):
        return False
    return all(v.dtype == STORE_DTYPE for v in g.values() if isinstance(v, torch.Tensor) and v.is_floating_point())


def _prepare_generator(item: BundleItem, tmp: Path) -> Tuple[bytes, Dict[str, Any]]:
    raw = _load_source(item)
    if raw.get("kind") == "wagi_model":
        raise BundleError(f"{item.flag}: {item.source} is a WaGI model checkpoint (encoder + generator), not a "
                          "generator checkpoint; bundle it with --model")
    out = tmp / f"{item.name}.pt"
    try:
        if _is_exported_generator(raw):
            out.write_bytes(item.source.read_bytes())  # already the compact file: kept byte for byte
        else:
            export_generator(item.source, out)
        _, _, info = load_generator(out)
    except (CheckpointError, ValueError) as err:
        raise BundleError(f"{item.flag}: {err}") from None
    entry = {"config": info.get("config") or info.get("args") or {},
             "architecture": dict(info["generator_kwargs"]), **_run_facts(raw)}
    return out.read_bytes(), entry


def _prepare(item: BundleItem, tmp: Path, max_bytes: int, note: Optional[str]) -> _Prepared:
    data, entry = (_prepare_wagi if item.kind == "wagi" else _prepare_generator)(item, tmp)
    if len(data) >= max_bytes:
        raise BundleError(f"{item.flag}: the fp16 file is {len(data) / 2 ** 20:.2f} MiB, over the "
                          f"{max_bytes / 2 ** 20:g} MiB limit for bundled files; bundle a smaller model")
    metrics_file = item.metrics if item.metrics is not None else run_metrics_file(item.source)
    metrics = None
    if metrics_file is not None:
        metrics = last_val_record(metrics_file, entry.get("steps"))
        if metrics is None and item.metrics is not None:
            raise BundleError(f"--metrics {item.name}: {item.metrics} has no 'val' record"
                              + (f" at or before step {entry['steps']}" if entry.get("steps") is not None else ""))
    full = {
        "name": item.name, "file": f"{item.name}.pt", "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data), "kind": item.kind, "dtype": str(STORE_DTYPE).replace("torch.", ""),
        "loader": LOADERS[item.kind], "config": entry["config"],
        **({"architecture": entry["architecture"]} if "architecture" in entry else {}),
        "steps": entry["steps"], "wall_time_s": entry["wall_time_s"], "cards": entry["cards"],
        "source": str(item.source), "metrics": metrics, "torch": torch.__version__, "date": _now(),
    }
    if note is not None:
        full["note"] = note
    return _Prepared(item, data, _json_plain(full, f"manifest entry {item.name!r}"))


# ---------------------------------------------------------------------------------------------- bundle


def resolve_model_specs(bundle_dir: PathLike, specs: Sequence[str]) -> Dict[str, Path]:
    """``--model`` values (a bundled model name, or NAME=PATH) to ``{name: path}``; no specs: every WaGI model
    of the bundle. An unknown name is a :class:`BundleError` listing the bundled ones."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)["models"]
    bundled = {n: bundle_dir / e["file"] for n, e in manifest.items() if e.get("kind") == "wagi"}
    if not specs:
        return bundled
    out: Dict[str, Path] = {}
    for spec in specs:
        name, eq, path = spec.partition("=")
        if eq:
            out[name] = Path(path)
        elif name in bundled:
            out[name] = bundled[name]
        else:
            raise BundleError(f"--model {name}: not a bundled model (bundled: {', '.join(sorted(bundled))}); "
                              "give NAME=PATH for another checkpoint")
    return out


def read_manifest(out_dir: PathLike, missing_ok: bool = False) -> Dict[str, Any]:
    """The bundle's manifest (an empty one when absent and ``missing_ok``)."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        if missing_ok:
            return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "models": {}}
        raise BundleError(f"no manifest: {path} not found")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise BundleError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT \
            or not isinstance(manifest.get("models"), dict):
        raise BundleError(f"{path} is not a WaGI bundle manifest (expected format {MANIFEST_FORMAT!r} "
                          "with a 'models' mapping)")
    if int(manifest.get("version", 0)) > MANIFEST_VERSION:
        raise BundleError(f"{path} has manifest version {manifest['version']}; this code reads version "
                          f"{MANIFEST_VERSION}")
    return manifest


def _check_items(out_dir: Path, items: Sequence[BundleItem], manifest: Mapping[str, Any], overwrite: bool) -> None:
    seen: Dict[str, BundleItem] = {}
    for item in items:
        if item.kind not in KINDS:
            raise BundleError(f"unknown kind {item.kind!r} for {item.name!r} (one of {KINDS})")
        check_name(item.name, FLAGS[item.kind])
        if item.name in seen:
            raise BundleError(f"name {item.name!r} is given twice ({seen[item.name].flag} and {item.flag})")
        seen[item.name] = item
        if not item.source.is_file():
            raise BundleError(f"{item.flag}: checkpoint not found: {item.source}")
        if item.metrics is not None and not item.metrics.is_file():
            raise BundleError(f"--metrics {item.name}: metrics file not found: {item.metrics}")
        if overwrite:
            continue
        old = manifest["models"].get(item.name)
        if old is not None:
            raise BundleError(f"{out_dir / MANIFEST_NAME} already has {item.name!r} ({old.get('kind')} from "
                              f"{old.get('source')}); pass --overwrite to replace it")
        if os.path.lexists(out_dir / f"{item.name}.pt"):
            raise BundleError(f"{out_dir / (item.name + '.pt')} exists but is not in the manifest; "
                              "pass --overwrite to replace it")


def bundle(out_dir: PathLike, items: Sequence[BundleItem], note: Optional[str] = None, overwrite: bool = False,
           max_bytes: Optional[int] = None) -> List[Dict[str, Any]]:
    """Write ``<out_dir>/<name>.pt`` for every item and merge their entries into the manifest.

    Nothing is written unless every item passes (readable, right kind, fits fp16, under ``max_bytes``,
    default :data:`MAX_FILE_BYTES`, no name clash). Entries already in the manifest are kept; replacing
    one needs ``overwrite``. Returns the new manifest entries.
    """
    out_dir = Path(out_dir)
    if not items:
        raise BundleError("nothing to bundle: give at least one --model or --generator")
    limit = MAX_FILE_BYTES if max_bytes is None else int(max_bytes)
    manifest = read_manifest(out_dir, missing_ok=True)
    _check_items(out_dir, items, manifest, overwrite)
    with tempfile.TemporaryDirectory(prefix="wagi_bundle_") as tmp:
        prepared = [_prepare(item, Path(tmp), limit, note) for item in items]
    for p in prepared:
        atomic_write(out_dir / p.entry["file"], p.data)
    write_manifest(out_dir, manifest, {p.item.name: p.entry for p in prepared})
    return [p.entry for p in prepared]


def write_manifest(out_dir: PathLike, manifest: Mapping[str, Any], entries: Mapping[str, Mapping[str, Any]]) -> None:
    """Merge ``entries`` (name → entry, each with a ``file`` inside the bundle) into ``manifest`` and write it."""
    models = dict(manifest["models"])
    for name, entry in entries.items():
        check_name(name)
        models[name] = _json_plain(dict(entry), f"manifest entry {name!r}")
    head = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "updated": _now(),
            "models": dict(sorted(models.items()))}
    out = {**head, **{k: v for k, v in manifest.items() if k not in head}}
    atomic_write(Path(out_dir) / MANIFEST_NAME, json.dumps(out, indent=2, allow_nan=False) + "\n")


def file_entry(out_dir: PathLike, file: str, kind: str, **fields: Any) -> Dict[str, Any]:
    """A manifest entry for a file already written inside the bundle: size, sha256, date and ``fields``."""
    path = Path(out_dir) / file
    if not _inside_bundle(file) or not path.is_file():
        raise BundleError(f"{file!r} is not a file inside the bundle {out_dir}")
    return {"file": file, "kind": kind, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "torch": torch.__version__, "date": _now(), **fields}


def _inside_bundle(file: str) -> bool:
    """A relative path that stays inside the bundle folder (``wagi.pt``, ``directions/glasses.npy``)."""
    parts = Path(file).parts
    return bool(parts) and not Path(file).is_absolute() and ".." not in parts and "\\" not in file


def verify_bundle(out_dir: PathLike) -> Tuple[List[str], int]:
    """Recompute size and sha256 of every file in the manifest: ``(problems, n_files_checked)``.

    Each problem is one line: ``missing <file>``, ``size <file>: ...`` or ``sha256 <file>: ...``.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    problems: List[str] = []
    for name, entry in manifest["models"].items():
        file = entry.get("file") if isinstance(entry, Mapping) else None
        if not isinstance(file, str) or not _inside_bundle(file) or not entry.get("sha256"):
            problems.append(f"entry {name!r}: no 'file' inside the bundle and 'sha256' in the manifest")
            continue
        path = out_dir / file
        if not path.is_file():
            problems.append(f"missing {file}")
            continue
        size = path.stat().st_size
        if entry.get("bytes") is not None and size != entry["bytes"]:
            problems.append(f"size {file}: {size} bytes, manifest says {entry['bytes']}")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            problems.append(f"sha256 {file}: {digest}, manifest says {entry['sha256']}")
    return problems, len(manifest["models"])


__all__ = [
    "BundleError", "BundleItem", "bundle", "verify_bundle", "read_manifest", "parse_named_path", "check_name",
    "sha256_file", "last_val_record", "write_manifest", "file_entry", "run_metrics_file", "half_state_dict",
    "wagi_fp16_checkpoint",
    "MANIFEST_NAME", "MAX_FILE_BYTES", "FP32_KEYS",
]
