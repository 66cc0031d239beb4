"""Attribute judge: a small CNN that reads the demo-domain attributes off an image.

Trained on procedural demo faces (:mod:`wagi.data.demo_faces`) with the renderer's own attribute dicts
as labels (``scripts/train_judge.py``), it serves three purposes:

* labelling generated images, to fit InterFaceGAN directions on the generator's own samples;
* measuring edit success: does the edited reconstruction now show (or no longer show) the attribute?
* the feature space (:meth:`AttributeJudge.features`, ``FEATURE_DIM`` values per image) of a Fréchet
  distance between generator samples and real demo faces ("FD-judge", :func:`wagi.metrics.frechet_distance`).

Heads: one logit per binary attribute (``BINARY_ATTRIBUTES``) and one logit vector per categorical
attribute (``CATEGORICAL_ATTRIBUTES``: the label is the index of ``attrs[name]`` in the class tuple).

Architecture: stages of 3x3 conv + BatchNorm + ReLU at 128, 64, 32, 16 and 8 px, 2x2 max-pooling
between stages, global average and global max pooling (concatenated: the features), one linear layer per
head. The global max matters for the tiny accessories: "is there a bead anywhere" is a max, and with average
pooling alone the earring head stayed at chance level in training. The first stage runs at the full
128 px resolution (no strided stem): earrings are ~1.5 px beads, freckles and stubble single dots at
128 px, and a strided stem would average them away before any filter sees them. Max-pooling (rather than
strided convolutions) passes such isolated responses on undiminished. Inputs of any size are resized to
``INPUT_SIZE`` (bilinear, antialiased when shrinking) first.

Seeds: the judge trains on faces ``JUDGE_TRAIN_SEED_OFFSET + i`` (inside the training range, but far
from the seeds [0, 60000) that generators and encoders use) and is evaluated on
``JUDGE_TEST_SEED_OFFSET + i`` (held-out range, above the held-out sets that other parts use).

Checkpoint (:func:`save_judge` / :func:`load_judge`; plain data, loads with ``weights_only=True``)::

    {"format": "wagi-judge", "version": 1,
     "binary": [names], "categorical": {name: [classes]},
     "arch": {AttributeJudge kwargs}, "state_dict": {...}, "meta": {seeds, accuracies, ...}}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from wagi.data.demo_faces import BINARY_ATTRIBUTES, CATEGORICAL_ATTRIBUTES, TEST_SEED_OFFSET
from wagi.fileio import PathLike

JUDGE_FORMAT = "wagi-judge"
JUDGE_VERSION = 1
INPUT_SIZE = 128  # the judge always looks at 128 x 128 images
DEFAULT_CHANNELS: Tuple[int, ...] = (24, 32, 64, 128, 256)  # one stage each at 128, 64, 32, 16, 8 px
DEFAULT_CONVS: Tuple[int, ...] = (1, 1, 2, 2, 2)  # 3x3 convs per stage (fewer at 128 and 64 px, for speed)
FEATURE_DIM = 2 * DEFAULT_CHANNELS[-1]  # size of features(x) with the default architecture: mean and max
JUDGE_TRAIN_SEED_OFFSET = 900_000  # training faces: seeds [900000, 900000 + n), inside the training range
JUDGE_TEST_SEED_OFFSET = TEST_SEED_OFFSET + 500_000  # held-out faces of the judge only
DEFAULT_JUDGE_PATH = Path("pretrained/demo/judge.pt")
LOCAL_BOX = 48  # side of a local head's box at 128 px
# Ear regions (top, left) at 128 px: for every head geometry sample_attributes draws, the lobes lie at
# x 28..45 / 83..100, y 57..70 and drop earrings reach y ~78; boxes of 48 px keep a margin for shifts.
EAR_BOXES = ((40, 8), (40, 72))
DEFAULT_LOCAL: Dict[str, Tuple[Tuple[int, int], ...]] = {"has_earrings": EAR_BOXES}


class JudgeCheckpointError(ValueError):
    """A judge checkpoint is missing, is not a judge checkpoint, or was trained for other attributes."""


def default_categorical() -> Dict[str, Tuple[Any, ...]]:
    return {k: tuple(v) for k, v in CATEGORICAL_ATTRIBUTES.items()}


def labels_from_attributes(attrs: Mapping[str, Any], binary: Sequence[str] = BINARY_ATTRIBUTES,
                           categorical: Optional[Mapping[str, Sequence[Any]]] = None) -> Dict[str, int]:
    """Judge labels of one attribute dict (:func:`~wagi.data.demo_faces.sample_attributes`).

    Returns ``{name: 0/1}`` for each binary attribute and ``{name: class index}`` for each categorical
    one (the index of ``attrs[name]`` in its class tuple). Raises ``KeyError`` for a missing attribute,
    ``ValueError`` for a value that is not one of the classes.
    """
    categorical = CATEGORICAL_ATTRIBUTES if categorical is None else categorical
    out: Dict[str, int] = {}
    for name in binary:
        if name not in attrs:
            raise KeyError(f"attribute dict has no {name!r}")
        out[name] = int(bool(attrs[name]))
    for name, classes in categorical.items():
        if name not in attrs:
            raise KeyError(f"attribute dict has no {name!r}")
        try:
            out[name] = list(classes).index(attrs[name])
        except ValueError:
            raise ValueError(f"attribute {name}={attrs[name]!r} is not one of {tuple(classes)}") from None
    return out


def label_tensors(attr_dicts: Sequence[Mapping[str, Any]], binary: Sequence[str] = BINARY_ATTRIBUTES,
                  categorical: Optional[Mapping[str, Sequence[Any]]] = None) -> Dict[str, torch.Tensor]:
    """Labels of many attribute dicts: ``{name: (N,) long tensor}`` (binary: 0/1)."""
    categorical = CATEGORICAL_ATTRIBUTES if categorical is None else categorical
    rows = [labels_from_attributes(a, binary, categorical) for a in attr_dicts]
    names = list(binary) + list(categorical)
    return {n: torch.tensor([r[n] for r in rows], dtype=torch.long) for n in names}


class ConvBNReLU(nn.Module):
    """3x3 conv (no bias) + BatchNorm + ReLU. In eval mode the BatchNorm is folded into the convolution's
    weights on the fly (a few thousand multiplies), saving one pass over the activations (~30% on a CPU)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.bn.track_running_stats:
            return F.relu(self.bn(self.conv(x)), inplace=True)
        scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
        weight = self.conv.weight * scale.view(-1, 1, 1, 1)
        bias = self.bn.bias - self.bn.running_mean * scale
        return F.relu(F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), padding=1), inplace=True)


class LocalHead(nn.Module):
    """One binary attribute read from fixed boxes at full resolution: a small CNN over each box (boxes
    after the first are mirrored left-right, so a mirrored pair of regions shares one filter bank), the
    global max over positions and boxes, one logit. For details the global trunk misses: earrings are a
    few pixels of a 128 px face, mostly half hidden by hair, and the trunk's head stayed at chance level."""

    def __init__(self, boxes: Sequence[Sequence[int]], size: int = LOCAL_BOX, channels: Sequence[int] = (16, 32, 32)):
        super().__init__()
        self.boxes = [tuple(int(v) for v in b) for b in boxes]
        self.size = int(size)
        layers, cin = [], 3
        for i, c in enumerate(channels):
            if i == 2:
                layers.append(nn.MaxPool2d(2))
            layers.append(ConvBNReLU(cin, c))
            cin = c
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(cin, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.size
        crops = []
        for i, (y, x0) in enumerate(self.boxes):
            c = x[..., y:y + s, x0:x0 + s]
            crops.append(c.flip(-1) if i else c)
        h = self.body(torch.cat(crops, 0))  # (n_boxes * N, C, h, w)
        h = h.amax(dim=(2, 3)).view(len(self.boxes), x.shape[0], -1).amax(0)
        return self.out(h)[:, 0]


class AttributeJudge(nn.Module):
    """Predicts the demo attributes of ``(N, 3, S, S)`` images in ``[-1, 1]`` (any ``S``; resized to 128).

    Args:
        binary: names of the binary attributes (one logit each).
        categorical: ``{name: classes}`` (one logit per class).
        channels: channels of the stages at 128, 64, 32, 16, 8 px (more entries: more, smaller stages).
        convs: 3x3 convolutions per stage.
    """

    def __init__(self, binary: Sequence[str] = BINARY_ATTRIBUTES,
                 categorical: Optional[Mapping[str, Sequence[Any]]] = None,
                 channels: Sequence[int] = DEFAULT_CHANNELS, convs: Sequence[int] = DEFAULT_CONVS,
                 local: Optional[Mapping[str, Sequence[Sequence[int]]]] = None):
        super().__init__()
        categorical = default_categorical() if categorical is None else {k: tuple(v) for k, v in categorical.items()}
        if len(channels) != len(convs) or not channels or min(convs) < 1:
            raise ValueError(f"channels {tuple(channels)} and convs {tuple(convs)} need equal, non-zero lengths "
                             "and at least one conv per stage")
        self.binary = tuple(binary)
        self.categorical = categorical
        self.arch = {"channels": [int(c) for c in channels], "convs": [int(c) for c in convs]}
        stages = []
        cin = 3
        for i, (c, k) in enumerate(zip(channels, convs)):
            layers = [nn.MaxPool2d(2)] if i else []
            for _ in range(k):
                layers.append(ConvBNReLU(cin, c))
                cin = c
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.feature_dim = 2 * cin  # global mean and global max of the last stage
        self.binary_head = nn.Linear(self.feature_dim, len(self.binary)) if self.binary else None
        self.cat_heads = nn.ModuleDict({k: nn.Linear(self.feature_dim, len(v)) for k, v in categorical.items()})
        local = dict(local or {})
        unknown = [k for k in local if k not in self.binary]
        if unknown:
            raise ValueError(f"local heads {unknown} are not binary attributes of this judge")
        self.local_heads = nn.ModuleDict({k: LocalHead(v) for k, v in local.items()})
        if local:
            self.arch["local"] = {k: [list(map(int, b)) for b in v] for k, v in local.items()}

    @property
    def names(self) -> Tuple[str, ...]:
        return self.binary + tuple(self.categorical)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Check ``x`` and resize it to ``INPUT_SIZE`` (bilinear, antialiased); match the weights' dtype."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"the judge expects (N, 3, H, W) images, got shape {tuple(x.shape)}")
        w = self.stages[0][0].conv.weight
        if not x.is_floating_point():
            raise TypeError(f"the judge expects float images in [-1, 1], got {x.dtype}")
        x = x.to(w.dtype)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            shrink = x.shape[-1] > INPUT_SIZE or x.shape[-2] > INPUT_SIZE
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                              antialias=shrink)
        # channels_last: the fast convolution path on CPUs (oneDNN) and on tensor-core GPUs
        return x.contiguous(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, feature_dim)`` embedding: global mean and global max of the last stage (the FD-judge space)."""
        h = self.stages(self.prepare(x))
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)

    def heads(self, feats: torch.Tensor) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        if self.binary_head is not None:
            logits = self.binary_head(feats)
            for i, name in enumerate(self.binary):
                out[name] = logits[:, i]
        for name, head in self.cat_heads.items():
            out[name] = head(feats)
        return out

    def features_and_logits(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """:meth:`features` and :meth:`forward` from one pass of the trunk."""
        x = self.prepare(x)
        h = self.stages(x)
        feats = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        out = self.heads(feats)
        for name, head in self.local_heads.items():
            out[name] = head(x)
        return feats, out

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{name: logits}``: binary ``(N,)``, categorical ``(N, n_classes)``; a local head, where there
        is one, gives its attribute's logit instead of the trunk's."""
        return self.features_and_logits(x)[1]

    def probabilities(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{name: probabilities}``: binary ``(N,)`` sigmoid, categorical ``(N, n_classes)`` softmax."""
        return {k: (v.float().sigmoid() if k in self.binary else v.float().softmax(dim=1))
                for k, v in self(x).items()}

    def predict(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{name: (N,)}``: bool for binary attributes, class index (long) for categorical ones."""
        return {k: (v > 0 if k in self.binary else v.argmax(dim=1)) for k, v in self(x).items()}

    def predict_values(self, x: torch.Tensor) -> Dict[str, list]:
        """Like :meth:`predict` but with the attribute values (``True``, ``'blonde'``...) as Python lists."""
        out = {}
        for k, v in self.predict(x).items():
            v = v.tolist()
            out[k] = v if k in self.binary else [self.categorical[k][i] for i in v]
        return out


# ---------------------------------------------------------------------------------------- save / load
def judge_state(judge: AttributeJudge, **meta: Any) -> Dict[str, Any]:
    """The checkpoint dict of ``judge`` (plain data; see the module docstring)."""
    return {
        "format": JUDGE_FORMAT,
        "version": JUDGE_VERSION,
        "binary": list(judge.binary),
        "categorical": {k: list(v) for k, v in judge.categorical.items()},
        "arch": dict(judge.arch),
        "feature_dim": judge.feature_dim,
        "state_dict": {k: v.detach().cpu().contiguous().clone() for k, v in judge.state_dict().items()},
        "meta": meta,
    }


def save_judge(judge: AttributeJudge, path: PathLike, **meta: Any) -> Path:
    """Write ``judge`` to ``path`` atomically (:func:`wagi.checkpoint.save_checkpoint`); ``meta``: plain data
    (training seeds, accuracies, ...). Returns the path."""
    from wagi.checkpoint import save_checkpoint

    return save_checkpoint(judge_state(judge, **meta), path)


def load_judge(path: PathLike, map_location: Any = "cpu", binary: Optional[Sequence[str]] = BINARY_ATTRIBUTES,
               categorical: Optional[Mapping[str, Sequence[Any]]] = None, return_meta: bool = False):
    """Load a judge written by :func:`save_judge` (``weights_only=True``), in eval mode.

    ``binary`` / ``categorical`` (default: the current demo attribute lists) must equal those the judge
    was trained for; pass ``None`` to accept whatever the file holds. Raises :class:`JudgeCheckpointError`
    (a ``ValueError``; one line) for a missing file, a file that is not a judge checkpoint, or mismatched
    attributes. With ``return_meta`` returns ``(judge, meta)``.
    """
    path = Path(path)
    if not path.is_file():
        raise JudgeCheckpointError(f"judge checkpoint not found: {path} (train one with scripts/train_judge.py)")
    try:
        from wagi.checkpoint import load_checkpoint  # weights_only, and the integrity hash of save_judge's files

        obj = load_checkpoint(path, map_location=map_location)
    except Exception as err:  # unpickling / zip errors of all kinds
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise JudgeCheckpointError(f"{path} is not a readable judge checkpoint ({type(err).__name__}: "
                                   f"{first[:200]})") from None
    if not isinstance(obj, dict) or obj.get("format") != JUDGE_FORMAT:
        what = f"format {obj.get('format')!r}" if isinstance(obj, dict) and "format" in obj else \
            f"a {type(obj).__name__} without a format field"
        raise JudgeCheckpointError(f"{path} is not an attribute-judge checkpoint ({what}; expected format "
                                   f"{JUDGE_FORMAT!r} written by scripts/train_judge.py)")
    if obj.get("version") != JUDGE_VERSION:
        raise JudgeCheckpointError(f"{path}: judge checkpoint version {obj.get('version')!r}, this code reads "
                                   f"version {JUDGE_VERSION}")
    file_binary = tuple(obj["binary"])
    file_cat = {k: tuple(v) for k, v in obj["categorical"].items()}
    if binary is not None and tuple(binary) != file_binary:
        raise JudgeCheckpointError(f"{path}: judge was trained for binary attributes {list(file_binary)}, "
                                   f"expected {list(binary)}; retrain it with scripts/train_judge.py")
    want_cat = default_categorical() if categorical is None and binary is not None else categorical
    if want_cat is not None and {k: tuple(v) for k, v in want_cat.items()} != file_cat:
        diff = sorted(set(want_cat) ^ set(file_cat)) or sorted(
            k for k in want_cat if tuple(want_cat[k]) != file_cat.get(k))
        raise JudgeCheckpointError(f"{path}: judge was trained for other categorical attributes or classes "
                                   f"(differing: {', '.join(map(str, diff))}); retrain it with scripts/train_judge.py")
    judge = AttributeJudge(file_binary, file_cat, **obj["arch"])
    try:
        judge.load_state_dict(obj["state_dict"])
    except RuntimeError as err:
        raise JudgeCheckpointError(f"{path}: weights do not fit the stored architecture "
                                   f"({str(err).strip().splitlines()[0][:200]})") from None
    judge.eval()
    if isinstance(map_location, (str, torch.device)):
        judge.to(map_location)
    return (judge, obj.get("meta", {})) if return_meta else judge


__all__ = ["AttributeJudge", "JudgeCheckpointError", "labels_from_attributes", "label_tensors", "save_judge",
           "load_judge", "judge_state", "FEATURE_DIM", "INPUT_SIZE", "JUDGE_TRAIN_SEED_OFFSET",
           "JUDGE_TEST_SEED_OFFSET", "DEFAULT_JUDGE_PATH", "JUDGE_FORMAT", "JUDGE_VERSION"]
