"""Saved latent codes and attribute labels: the inputs of ``edit.py --latents`` and ``train_boundary.py``.

Latent files (as ``invert.py --save-latents`` writes them, and common variants):

- one code per file: ``.pt`` / ``.npy`` holding ``(n_latent, D)`` or ``(1, n_latent, D)``; its name is the
  file name without extension;
- a batch without names: ``(N, n_latent, D)`` → names ``<file stem>_<i>``;
- a bundle: ``.pt`` dict ``{name: (n_latent, D) or (1, n_latent, D)}`` or ``.npz`` with one array per name;
- a dict ``{'latents' | 'w_plus' | 'latent' | 'w': (N, n_latent, D), 'names' | 'files' | 'paths': [str]}``
  (``invert.py --latents-bundle`` writes ``{'names', 'w_plus'}`` as ``.pt``, or the same two arrays as ``.npz``).

``.pt`` files load with ``weights_only=True`` (no code from the file runs); ``.npy`` / ``.npz`` without pickle.

Labels (``labels.jsonl`` from ``scripts/make_demo_dataset.py --labels``, or a CSV with a header): one
record per image, its name under ``file`` (or ``name``, ``path``, ``rel``), attributes as other fields.
Names match across files by :func:`name_key`: the relative path without an image extension, so
``000001.png`` in labels.jsonl matches a bundle entry ``000001`` or ``000001.png``.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from wagi.fileio import PathLike

from ..imageio import IMAGE_EXTENSIONS

Tensor = torch.Tensor

LATENT_KEYS = ("latents", "w_plus", "latent", "w")
NAME_KEYS = ("names", "files", "paths", "rels")
LABEL_NAME_FIELDS = ("file", "name", "path", "rel")
_TRUE = ("true", "yes")
_FALSE = ("false", "no")


class LatentFileError(ValueError):
    """A latent file that cannot be used; ``str(err)`` is one line starting with the path."""


def name_key(name: str) -> str:
    """Matching key of an image / code name: ``/``-separated, without an image extension."""
    name = name.replace(os.sep, "/")
    while name.startswith("./"):
        name = name[2:]
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in IMAGE_EXTENSIONS else name


def _to_tensor(x: Any) -> Optional[Tensor]:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray) and x.dtype.kind in "fiub":
        return torch.from_numpy(np.ascontiguousarray(x))
    return None


def _read(path: Path) -> Any:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        if suffix in (".pt", ".pth"):
            from ..checkpoint import load_checkpoint  # weights_only, and the integrity hash of bundles we wrote

            return load_checkpoint(path)
    except Exception as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        detail = f"{type(err).__name__}: {text}" if text else type(err).__name__
        raise LatentFileError(f"{path}: cannot read latents ({detail})") from None
    raise LatentFileError(f"{path}: unsupported latent file type {suffix!r} (use .pt, .npy or .npz)")


def _entries(obj: Any, path: Path) -> List[Tuple[str, Tensor]]:
    stem = path.stem
    t = _to_tensor(obj)
    if t is not None:
        if t.dim() == 3 and t.shape[0] > 1:
            return [(f"{stem}_{i}", t[i]) for i in range(t.shape[0])]
        return [(stem, t)]
    if not isinstance(obj, dict):
        raise LatentFileError(f"{path}: holds a {type(obj).__name__}, not a tensor or a dict of tensors")
    key = next((k for k in LATENT_KEYS if k in obj and _to_tensor(obj[k]) is not None), None)
    if key is not None:
        t = _to_tensor(obj[key])
        name_key_ = next((k for k in NAME_KEYS if k in obj), None)
        if name_key_ is None:
            return _entries(t, path)
        names = obj[name_key_]
        if isinstance(names, np.ndarray) and names.dtype.kind == "U":  # .npz bundles store names as a str array
            names = [str(n) for n in names.reshape(-1)]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise LatentFileError(f"{path}: '{name_key_}' must be a list of strings")
        if t.dim() == 2:
            t = t.unsqueeze(0)
        if len(names) != t.shape[0]:
            raise LatentFileError(f"{path}: {len(names)} names for {t.shape[0]} latents")
        return list(zip(names, t))
    entries = [(str(k), _to_tensor(v)) for k, v in obj.items() if k not in NAME_KEYS]
    bad = [k for k, v in entries if v is None]
    if bad or not entries:
        raise LatentFileError(f"{path}: a latent bundle must map names to tensors; "
                              f"{'entries ' + str(bad[:4]) + ' are not tensors' if bad else 'it is empty'}")
    return entries


def _printable(name: str) -> str:
    return name if name.isprintable() else repr(name)  # a NUL or newline in a name must not break the line


def check_code(code: Tensor, n_latent: int, style_dim: int, where: str) -> Tensor:
    """``(n_latent, D)`` / ``(1, n_latent, D)`` → float ``(n_latent, D)``; else :class:`LatentFileError`."""
    shape = tuple(code.shape)
    if code.dim() == 3 and code.shape[0] == 1:
        code = code[0]
    if code.dim() != 2 or code.shape != (n_latent, style_dim):
        hint = ""
        if code.dim() == 2 and code.shape[1] == style_dim:
            hint = f" ({code.shape[0]} W+ entries: codes of another generator do not transfer)"
        raise LatentFileError(f"{where}: latent has shape {shape}, expected ({n_latent}, {style_dim}) "
                              f"or (1, {n_latent}, {style_dim}){hint}")
    if not code.is_floating_point():
        raise LatentFileError(f"{where}: latent must hold floating-point values, got {code.dtype}")
    code = code.float()
    if not torch.isfinite(code).all():
        raise LatentFileError(f"{where}: latent holds NaN or infinite values")
    return code


def load_latents(path: PathLike, n_latent: int, style_dim: int,
                 on_bad_entry: Optional[Callable[[str], None]] = None) -> List[Tuple[str, Tensor]]:
    """Codes of one latent file: ``[(name, (n_latent, D) float tensor), ...]`` in file order.

    Raises ``FileNotFoundError`` or :class:`LatentFileError` (one line naming the file and the problem).
    With ``on_bad_entry``, an entry of a bundle that is unusable (wrong shape, NaN) is reported through it
    as one line and left out, so the other codes of the file are still used.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such latent file")
    entries = _entries(_read(path), path)
    codes = []
    for name, code in entries:
        try:
            codes.append((name, check_code(code, n_latent, style_dim,
                                           f"{path}[{_printable(name)}]" if len(entries) > 1 else str(path))))
        except LatentFileError as err:
            if on_bad_entry is None:
                raise
            on_bad_entry(str(err))
    return codes


# ---------------------------------------------------------------------------------------------- labels
def _parse_value(text: str) -> Any:
    s = text.strip()
    if s.lower() in _TRUE:
        return True
    if s.lower() in _FALSE:
        return False
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def _record_name(record: Dict[str, Any], where: str) -> str:
    for f in LABEL_NAME_FIELDS:
        if isinstance(record.get(f), str) and record[f]:
            return record[f]
    raise ValueError(f"{where}: record has no file name field ({', '.join(LABEL_NAME_FIELDS)})")


def read_labels(path: PathLike) -> Dict[str, Dict[str, Any]]:
    """``{name_key: record}`` from ``.jsonl`` (one JSON object per line), ``.json`` (a list of objects)
    or ``.csv`` (header row; ``true``/``false`` and numbers parsed). Duplicate names are an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such labels file")
    suffix = path.suffix.lower()
    records: List[Tuple[str, Dict[str, Any]]] = []
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{i}: not valid JSON ({err.msg})") from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{path}:{i}: each line must be a JSON object")
                records.append((f"{path}:{i}", rec))
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{path}: a .json labels file must hold a list of objects")
        records = [(f"{path}[{i}]", r) for i, r in enumerate(data)]
    elif suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f), 2):
                records.append((f"{path}:{i}", {k: _parse_value(v or "") for k, v in row.items() if k is not None}))
    else:
        raise ValueError(f"{path}: unsupported labels file type {suffix!r} (use .jsonl, .json or .csv)")
    out: Dict[str, Dict[str, Any]] = {}
    for where, rec in records:
        key = name_key(_record_name(rec, where))
        if key in out:
            raise ValueError(f"{where}: duplicate labels for {key!r}")
        out[key] = rec
    return out


def attribute_value(record: Dict[str, Any], attribute: str, where: str = "record") -> Union[bool, float]:
    """The label of one record for ``attribute``: ``NAME`` (a bool, or a number used as a score) or
    ``NAME=VALUE`` (True where the field equals VALUE, compared as text; for categorical fields)."""
    name, _, wanted = attribute.partition("=")
    if name not in record:
        raise KeyError(f"{where}: no attribute {name!r}")
    value = record[name]
    if "=" in attribute:
        return str(value).lower() == wanted.lower() if isinstance(value, bool) else str(value) == wanted
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    raise ValueError(f"{where}: attribute {name!r} is {value!r}, not a bool or a number; "
                     f"use {name}=VALUE to pick one category")


def labels_array(values: Sequence[Union[bool, float]]) -> np.ndarray:
    """Bool labels → bool array; any number among them → float scores."""
    if all(isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=bool)
    return np.asarray([float(v) for v in values], dtype=np.float64)
