"""StyleCLIP (Patashnik et al. 2021) for a SWAGAN: text-driven global directions and latent mappers.

Global directions, adapted from StyleSpace channels to W+
    StyleCLIP precomputes, for every StyleSpace channel c, the mean unit-norm change ``Δi_c`` of the CLIP
    image embedding when c is moved by a fixed multiple of its standard deviation (``fs3``). For a text
    edit it forms the CLIP text direction ``Δt`` (target − neutral prompt), the relevance
    ``r_c = Δi_c · Δt``, zeroes channels with ``|r_c| < β``, divides by ``max |r|`` and moves every kept
    channel by ``r_c`` standard deviations.

    A SWAGAN's StyleSpace differs from StyleGAN2's (12-channel ToWavelets outputs, other channel
    counts), and the rest of this project edits in W+. So the "channels" here are the units
    ``(W+ entry l, principal axis j of W)``: the axes are GANSpace components ``u_j`` with standard
    deviations ``σ_j`` (:func:`~wagi.editing.factorization.ganspace_directions`), which play the role of
    StyleSpace's per-channel statistics. :func:`compute_global_stats` measures, by central finite
    differences averaged over sampled codes,

        Δi_{l,j} = normalise( mean_m [ E(G(w_m + t σ_j u_j e_l)) − E(G(w_m − t σ_j u_j e_l)) ] ),

    (E = unit-norm CLIP image embedding, e_l = entry l only, t = ``step``), an ``(n_latent, k, E)`` table
    that does not depend on the text, like ``fs3``. :func:`global_direction` then applies StyleCLIP's
    rule unchanged and returns the W+ direction ``d_l = Σ_j r_{l,j} σ_j u_j`` ``(n_latent, D)``. Units
    along the same axis at different entries are perturbed separately, so entries that do not affect
    the prompt's attribute stay untouched, as channels do in StyleSpace. This is an adaptation, not
    StyleCLIP's exact method: W axes are less disentangled than StyleSpace channels, and only the top
    ``k`` principal axes are probed (cost: 2 · n_latent · k renders per sampled code).

    CLIP itself comes through the small :class:`TextImageEncoder` interface: :func:`load_clip` wraps
    ``open_clip`` or OpenAI's ``clip`` package when one is installed with its weights, and raises
    :class:`CLIPUnavailableError` naming what is missing otherwise. Tests use a tiny random encoder.

Latent mapper
    :class:`LevelsMapper`: three 4-layer MLPs (PixelNorm + 4 × EqualLinear, lr_mul 0.01, fused leaky
    ReLU) on the coarse / medium / fine slices of W+; the edit is ``ŵ = w + 0.1 · M(w)``. StyleCLIP
    hard-codes the slices ``[:4], [4:8], [8:]`` of an 18-entry StyleGAN2; here they come from
    :func:`wagi.models.encoders.style_split` (by feature resolution; SWAGAN 12 → 3/4/5, 16 → 3/4/9)
    unless given. Two details of StyleCLIP's ``Mapper`` are kept so that its trained weights behave the
    same: each MLP gets the ``(N, k, D)`` slice, so its PixelNorm normalises over the k entries (dim 1),
    not over D; and the state_dict keys keep StyleCLIP's spelling ``course_mapping`` for the coarse MLP.
    The linear layers run on ``(N·k, D)`` rows with the bias per feature. (StyleCLIP's CUDA fused
    bias-act indexes the bias along dim 1 of its 3-D input instead, so biases of mappers trained with
    that kernel act differently here.) No training loop: mappers are trained elsewhere and applied here.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from wagi.fileio import PathLike

from ..checkpoint import FORMAT_NAME, FORMAT_VERSION, load_checkpoint, save_checkpoint
from ..models.encoders import style_split
from ..models.layers import EqualLinear, PixelNorm
from .factorization import ganspace_directions

Tensor = torch.Tensor

# ------------------------------------------------------------------------------------------- CLIP
# CLIP prompts are averaged over templates (StyleCLIP averages ImageNet's 80); these few suit both
# photographs and the drawn demo faces.
TEXT_TEMPLATES: Tuple[str, ...] = ("a photo of {}.", "a picture of {}.", "a drawing of {}.",
                                   "a close-up photo of {}.", "a rendering of {}.")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's image normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_IMAGE_SIZE = 224
DEFAULT_CLIP_MODEL = "ViT-B-32"  # StyleCLIP's global directions use ViT-B/32
DEFAULT_CLIP_WEIGHTS = "openai"
OPENAI_CLIP_NAMES = {"ViT-B-32": "ViT-B/32", "ViT-B-16": "ViT-B/16", "ViT-L-14": "ViT-L/14",
                     "ViT-L-14-336": "ViT-L/14@336px"}

DEFAULT_BETA = 0.1  # StyleCLIP's edit.py sweeps beta over 0.11-0.16
DEFAULT_STEP = 2.0  # finite-difference half-step, in standard deviations of W along the axis
DEFAULT_AXES = 32  # principal axes of W probed per W+ entry
DEFAULT_STAT_SAMPLES = 8  # sampled codes the embedding changes are averaged over


class CLIPUnavailableError(RuntimeError):
    """No usable CLIP implementation or weights; the message names what is missing."""


@runtime_checkable
class TextImageEncoder(Protocol):
    """Joint text / image embedding (CLIP or a stand-in).

    ``encode_text(list of N strings) → (N, E)``; ``encode_image(images (N, 3, H, W) in [-1, 1]) → (N, E)``.
    Embeddings need not be normalised: callers normalise.
    """

    def encode_text(self, texts: List[str]) -> Tensor: ...

    def encode_image(self, images: Tensor) -> Tensor: ...


class CLIPEncoder:
    """:class:`TextImageEncoder` over a CLIP model (``open_clip`` or ``clip``): images in [-1, 1] are
    mapped to [0, 1], resized (bicubic, antialiased) to the model's input size and normalised with
    CLIP's mean / std; text goes through the package's tokenizer."""

    def __init__(self, model: nn.Module, tokenizer: Callable[[List[str]], Tensor],
                 image_size: Union[int, Sequence[int]] = CLIP_IMAGE_SIZE):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = tuple(image_size) if isinstance(image_size, (tuple, list)) else (int(image_size),) * 2
        ref = next(model.parameters())
        self.device, self.dtype = ref.device, ref.dtype

    @torch.no_grad()
    def encode_text(self, texts: List[str]) -> Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float()

    @torch.no_grad()
    def encode_image(self, images: Tensor) -> Tensor:
        x = (images.to(self.device, torch.float32) + 1) / 2
        x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        return self.model.encode_image(((x - mean) / std).to(self.dtype)).float()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def load_clip(name: str = DEFAULT_CLIP_MODEL, pretrained: str = DEFAULT_CLIP_WEIGHTS,
              device: Union[str, torch.device] = "cpu") -> CLIPEncoder:
    """A CLIP :class:`TextImageEncoder` from ``open_clip`` (preferred) or OpenAI's ``clip`` package.

    ``name``: open_clip model name (``ViT-B-32``; mapped to ``ViT-B/32`` for ``clip``); ``pretrained``:
    open_clip weights tag or a local checkpoint file (``clip`` takes a file via ``name``). Nothing is
    fetched by WaGI itself; the packages read their own caches. Raises :class:`CLIPUnavailableError`
    when neither package is importable or the weights cannot be loaded.
    """
    try:
        import open_clip
    except ImportError:
        open_clip = None
    if open_clip is not None:
        try:
            model, _, _ = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as err:
            raise CLIPUnavailableError(
                f"open_clip is installed but CLIP {name!r} with weights {pretrained!r} could not be loaded "
                f"({_first_line(err)}); put the weights in open_clip's cache or pass a local checkpoint file "
                "as the weights") from None
        return CLIPEncoder(model, tokenizer, getattr(model.visual, "image_size", CLIP_IMAGE_SIZE))
    try:
        import clip
    except ImportError:
        clip = None
    if clip is not None and hasattr(clip, "load") and hasattr(clip, "tokenize"):
        clip_name = OPENAI_CLIP_NAMES.get(name, name)
        try:
            model, _ = clip.load(clip_name, device=device, jit=False)
        except Exception as err:
            raise CLIPUnavailableError(
                f"the clip package is installed but CLIP {clip_name!r} could not be loaded ({_first_line(err)}); "
                "put its weights in clip's cache (~/.cache/clip) or pass the checkpoint file as the model name"
            ) from None
        return CLIPEncoder(model.float(), clip.tokenize, getattr(model.visual, "input_resolution", CLIP_IMAGE_SIZE))
    raise CLIPUnavailableError(
        "StyleCLIP text directions need CLIP, but neither open_clip (pip install open_clip_torch) nor OpenAI's clip "
        "package (pip install git+https://github.com/openai/CLIP) is installed; install one and make its "
        f"{OPENAI_CLIP_NAMES.get(name, name)} weights available in its cache")


def text_direction(encoder: TextImageEncoder, target: str, neutral: str,
                   templates: Optional[Sequence[str]] = TEXT_TEMPLATES) -> Tensor:
    """StyleCLIP's text direction ``Δt`` ``(E,)``, unit norm: for each prompt the unit-norm mean of the
    unit-norm embeddings of its template sentences; ``Δt`` = normalise(target − neutral)."""
    def embed(prompt: str) -> Tensor:
        sentences = [t.format(prompt) for t in templates] if templates else [prompt]
        e = F.normalize(encoder.encode_text(sentences).float(), dim=-1).mean(0)
        return F.normalize(e, dim=0)

    delta = embed(target) - embed(neutral)
    if float(delta.norm()) < 1e-8:
        raise ValueError(f"target {target!r} and neutral {neutral!r} give the same text embedding")
    return F.normalize(delta, dim=0)


# ------------------------------------------------------------------------------ global direction
@dataclass
class GlobalDirectionStats:
    """Text-independent table of a generator + encoder (the W+ counterpart of StyleCLIP's ``fs3``).

    ``delta_i`` ``(n_latent, k, E)``: unit-norm image-embedding change per unit (entry l, axis j);
    ``axes`` ``(k, D)`` orthonormal W axes; ``scale`` ``(k,)`` standard deviation of W along each axis;
    ``step`` the half-step used (in standard deviations); ``info`` free-form plain data.
    """

    delta_i: Tensor
    axes: Tensor
    scale: Tensor
    step: float = DEFAULT_STEP
    info: Dict[str, Any] = field(default_factory=dict)

    KIND = "styleclip_global_stats"

    @property
    def n_latent(self) -> int:
        return self.delta_i.shape[0]

    def save(self, path: PathLike) -> None:
        save_checkpoint({"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": self.KIND,
                         "delta_i": self.delta_i.cpu(), "axes": self.axes.cpu(), "scale": self.scale.cpu(),
                         "step": float(self.step), "info": dict(self.info)}, path)

    @classmethod
    def load(cls, path: PathLike) -> GlobalDirectionStats:
        ckpt = load_checkpoint(path)
        if not isinstance(ckpt, dict) or ckpt.get("kind") != cls.KIND:
            raise ValueError(f"{path} is not a StyleCLIP global-direction statistics file (kind {cls.KIND!r})")
        stats = cls(ckpt["delta_i"], ckpt["axes"], ckpt["scale"], float(ckpt["step"]), dict(ckpt.get("info", {})))
        stats.check()
        return stats

    def check(self, n_latent: Optional[int] = None, style_dim: Optional[int] = None) -> None:
        """Shape consistency, and agreement with a generator when its sizes are given."""
        if self.delta_i.dim() != 3 or self.axes.dim() != 2 or self.scale.dim() != 1:
            raise ValueError("global-direction statistics need delta_i (L, k, E), axes (k, D), scale (k,)")
        k = self.axes.shape[0]
        if self.delta_i.shape[1] != k or self.scale.shape[0] != k:
            raise ValueError(f"global-direction statistics disagree on the number of axes: delta_i "
                             f"{tuple(self.delta_i.shape)}, axes {tuple(self.axes.shape)}, "
                             f"scale {tuple(self.scale.shape)}")
        if n_latent is not None and self.n_latent != n_latent:
            raise ValueError(f"global-direction statistics were computed for n_latent={self.n_latent}, "
                             f"this generator has {n_latent}")
        if style_dim is not None and self.axes.shape[1] != style_dim:
            raise ValueError(f"global-direction statistics were computed for style_dim={self.axes.shape[1]}, "
                             f"this generator has {style_dim}")


@torch.no_grad()
def compute_global_stats(decode: Callable[[Tensor], Tensor], encoder: TextImageEncoder, latents: Tensor,
                         axes: Tensor, scale: Tensor, step: float = DEFAULT_STEP, batch_size: int = 32,
                         progress: bool = False) -> GlobalDirectionStats:
    """Measure ``Δi`` for every unit (W+ entry, axis) by central differences (see the module docstring).

    Args:
        decode: W+ ``(B, n_latent, D)`` → images ``(B, 3, S, S)`` in [-1, 1] (e.g. ``WaGI.decode``).
        encoder: a :class:`TextImageEncoder`.
        latents: ``(M, n_latent, D)`` codes to average over.
        axes: ``(k, D)`` orthonormal W axes; scale: ``(k,)`` their standard deviations.
        step: half-step in standard deviations; batch_size: renders per ``decode`` call (even).
    """
    if latents.dim() != 3:
        raise ValueError(f"latents must be (M, n_latent, D), got {tuple(latents.shape)}")
    m, n_latent, dim = latents.shape
    if m < 1:
        raise ValueError("compute_global_stats needs at least one code")
    if axes.dim() != 2 or axes.shape[1] != dim or scale.shape != (axes.shape[0],):
        raise ValueError(f"axes must be (k, {dim}) and scale (k,), got {tuple(axes.shape)} and {tuple(scale.shape)}")
    k = axes.shape[0]
    offsets = (float(step) * scale.unsqueeze(1) * axes).to(latents)  # (k, D)
    units = [(entry, j) for entry in range(n_latent) for j in range(k)]
    per_call = max(1, batch_size // 2)
    total: Optional[Tensor] = None
    bar = tqdm(total=m * len(units), desc="StyleCLIP statistics", unit="unit", disable=not progress)
    for code in latents:
        for start in range(0, len(units), per_call):
            chunk = units[start:start + per_call]
            layer = torch.tensor([u[0] for u in chunk], device=latents.device)
            axis = torch.tensor([u[1] for u in chunk], device=latents.device)
            rows = torch.arange(len(chunk), device=latents.device)
            plus = code.unsqueeze(0).repeat(len(chunk), 1, 1)
            minus = plus.clone()
            plus[rows, layer] += offsets[axis]
            minus[rows, layer] -= offsets[axis]
            emb = F.normalize(encoder.encode_image(decode(torch.cat([plus, minus]))).float(), dim=-1)
            diff = emb[:len(chunk)] - emb[len(chunk):]
            if total is None:
                total = torch.zeros(n_latent, k, diff.shape[1], dtype=torch.float64, device=diff.device)
            total[layer.to(diff.device), axis.to(diff.device)] += diff.double()
            bar.update(len(chunk))
    bar.close()
    delta_i = F.normalize(total / m, dim=-1).float().cpu()
    return GlobalDirectionStats(delta_i, axes.detach().float().cpu(), scale.detach().float().cpu(), float(step),
                                {"n_samples": int(m)})


def global_direction(stats: GlobalDirectionStats, encoder: TextImageEncoder, target: str, neutral: str,
                     beta: float = DEFAULT_BETA, templates: Optional[Sequence[str]] = TEXT_TEMPLATES
                     ) -> Tuple[Tensor, Dict[str, Any]]:
    """W+ direction ``(n_latent, D)`` for the edit neutral → target (StyleCLIP's rule on W+ units).

    ``r = Δi · Δt`` ``(n_latent, k)``; units with ``|r| < beta`` are zeroed; ``r /= max |r|``;
    ``d_l = Σ_j r_{l,j} σ_j u_j``. Strength s moves the most relevant unit by s standard deviations.
    Returns ``(direction, info)`` with ``info = {n_kept, n_units, max_relevance, relevance (n_latent, k)}``;
    when no unit passes ``beta`` the direction is zero and ``n_kept`` is 0.
    """
    stats.check()
    dt = text_direction(encoder, target, neutral, templates).to(stats.delta_i)
    if dt.shape[0] != stats.delta_i.shape[2]:
        raise ValueError(f"the encoder's text embedding has {dt.shape[0]} values but the statistics hold "
                         f"{stats.delta_i.shape[2]}-D image embeddings (computed with another encoder?)")
    relevance = stats.delta_i @ dt  # (n_latent, k)
    kept = relevance.abs() >= beta
    r = torch.where(kept, relevance, torch.zeros_like(relevance))
    peak = r.abs().max()
    if float(peak) > 0:
        r = r / peak
    direction = (r * stats.scale) @ stats.axes  # (n_latent, D)
    info = {"n_kept": int(kept.sum()), "n_units": int(kept.numel()), "max_relevance": float(relevance.abs().max()),
            "relevance": relevance}
    return direction, info


@torch.no_grad()
def sample_codes(generator: nn.Module, n: int, seed: int = 0) -> Tensor:
    """``n`` seeded W codes broadcast to W+ ``(n, n_latent, D)`` (``z`` drawn on the CPU)."""
    ref = next(generator.parameters())
    z = torch.randn(n, generator.style_dim, generator=torch.Generator().manual_seed(int(seed)), dtype=ref.dtype)
    w = generator.get_latent(z.to(ref.device))
    return w.unsqueeze(1).repeat(1, generator.n_latent, 1)


def styleclip_global_stats(model: nn.Module, encoder: TextImageEncoder, n_samples: int = DEFAULT_STAT_SAMPLES,
                           n_axes: int = DEFAULT_AXES, step: float = DEFAULT_STEP, seed: int = 0,
                           pca_samples: int = 10_000, batch_size: int = 32, progress: bool = False
                           ) -> GlobalDirectionStats:
    """:func:`compute_global_stats` for a :class:`~wagi.models.wagi.WaGI` model: axes = the top ``n_axes``
    GANSpace components of its generator, codes = ``n_samples`` seeded mapped samples."""
    generator = model.generator
    axes, _, scale = ganspace_directions(generator, pca_samples, min(n_axes, generator.style_dim), seed=seed)
    codes = sample_codes(generator, n_samples, seed=seed + 1)
    stats = compute_global_stats(model.decode, encoder, codes, axes.to(codes), scale.to(codes), step, batch_size,
                                 progress)
    stats.info.update({"pca_samples": int(pca_samples), "seed": int(seed)})
    return stats


# ----------------------------------------------------------------------------------- latent mapper
MAPPER_DEPTH = 4
MAPPER_LR_MUL = 0.01
MAPPER_STEP = 0.1  # StyleCLIP: ŵ = w + 0.1 · M(w)
MAPPER_GROUPS = ("coarse", "medium", "fine")
# state_dict prefixes; "course" is StyleCLIP's own spelling, kept so that its state_dicts load as they are
MAPPER_ATTRS = {"coarse": "course_mapping", "medium": "medium_mapping", "fine": "fine_mapping"}
MAPPER_KEY_PREFIX = "mapper."  # StyleCLIPMapper checkpoints: 'mapper.*' (the mapper), 'decoder.*' (StyleGAN)
FOREIGN_DECODER_PREFIX = "decoder."


class LatentMapper(nn.Module):
    """One StyleCLIP MLP: ``(N, k, D)`` → ``(N, k, D)``. Keys ``mapping.{1..4}.weight / .bias``."""

    def __init__(self, style_dim: int):
        super().__init__()
        self.mapping = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=MAPPER_LR_MUL, activation="fused_lrelu")
            for _ in range(MAPPER_DEPTH)])

    def forward(self, x: Tensor) -> Tensor:
        n, k, d = x.shape
        h = self.mapping[0](x).reshape(n * k, d)  # PixelNorm over dim 1 (the k entries), as in StyleCLIP
        for layer in self.mapping[1:]:
            h = layer(h)
        return h.reshape(n, k, d)


class LevelsMapper(nn.Module):
    """StyleCLIP's LevelsMapper for any ``n_latent``: separate :class:`LatentMapper` per slice.

    Args:
        n_latent, style_dim: of the generator.
        split: ``(coarse_end, medium_end)``; default :func:`style_split` ``(n_latent)``.
        groups: which mappers exist (StyleCLIP's ``--no_{coarse,medium,fine}_mapper`` leave one out;
            its slice then gets a zero shift).
        step: ``ŵ = w + step · M(w)`` (StyleCLIP: 0.1).
    ``forward(w (N, n_latent, D)) → M(w) (N, n_latent, D)``; :meth:`edit` gives ``w + strength · step · M(w)``.
    """

    def __init__(self, n_latent: int, style_dim: int = 512, split: Optional[Sequence[int]] = None,
                 groups: Sequence[str] = MAPPER_GROUPS, step: float = MAPPER_STEP):
        super().__init__()
        self.n_latent, self.style_dim, self.step = int(n_latent), int(style_dim), float(step)
        coarse_end, medium_end = style_split(self.n_latent) if split is None else (int(split[0]), int(split[1]))
        if not 0 <= coarse_end <= medium_end <= self.n_latent:
            raise ValueError(f"mapper split ({coarse_end}, {medium_end}) must satisfy 0 <= coarse_end <= "
                             f"medium_end <= n_latent={self.n_latent}")
        self.split = (coarse_end, medium_end)
        unknown = [g for g in groups if g not in MAPPER_GROUPS]
        if unknown or not groups:
            raise ValueError(f"mapper groups must be a non-empty subset of {MAPPER_GROUPS}, got {list(groups)}")
        self.groups = tuple(g for g in MAPPER_GROUPS if g in groups)
        for g in self.groups:
            self.add_module(MAPPER_ATTRS[g], LatentMapper(style_dim))

    def slices(self) -> Dict[str, slice]:
        c, m = self.split
        return {"coarse": slice(0, c), "medium": slice(c, m), "fine": slice(m, self.n_latent)}

    def forward(self, w: Tensor) -> Tensor:
        if w.dim() != 3 or w.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"mapper input must be (N, {self.n_latent}, {self.style_dim}), got {tuple(w.shape)}")
        parts = []
        for g, sl in self.slices().items():
            x = w[:, sl]
            if g in self.groups and x.shape[1] > 0:
                parts.append(getattr(self, MAPPER_ATTRS[g])(x))
            else:
                parts.append(torch.zeros_like(x))
        return torch.cat(parts, dim=1)

    def edit(self, w: Tensor, strength: float = 1.0) -> Tensor:
        return w + float(strength) * self.step * self(w)

    def save(self, path: PathLike) -> None:
        save_checkpoint({"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": "levels_mapper",
                         "n_latent": self.n_latent, "style_dim": self.style_dim, "split": list(self.split),
                         "groups": list(self.groups), "step": self.step,
                         "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}, path)


def _mapper_state(ckpt: Any, path: PathLike) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
    meta: Dict[str, Any] = {}
    if isinstance(ckpt, dict) and ckpt.get("kind") == "levels_mapper":
        meta = {k: ckpt[k] for k in ("n_latent", "style_dim", "split", "groups", "step") if k in ckpt}
        sd = ckpt.get("state_dict")
    elif isinstance(ckpt, dict) and "state_dict" in ckpt:
        sd = ckpt["state_dict"]
        opts = ckpt.get("opts")
        if isinstance(opts, dict):
            meta["opts"] = opts
    else:
        sd = ckpt
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: no mapper state_dict found (expected a dict of tensors, StyleCLIP's "
                         "{'state_dict': ..., 'opts': ...} or a WaGI levels_mapper file)")
    if any(k.startswith(MAPPER_KEY_PREFIX) for k in sd):
        others = [k for k in sd if not k.startswith((MAPPER_KEY_PREFIX, FOREIGN_DECODER_PREFIX))]
        if others:
            raise ValueError(f"{path}: unexpected keys beside the mapper's: {others[:8]}")
        sd = {k[len(MAPPER_KEY_PREFIX):]: v for k, v in sd.items() if k.startswith(MAPPER_KEY_PREFIX)}
    return sd, meta


def load_mapper(path: PathLike, n_latent: int, style_dim: int, split: Optional[Sequence[int]] = None) -> LevelsMapper:
    """Load a :class:`LevelsMapper` (``weights_only``), validating every key and shape.

    Reads WaGI ``levels_mapper`` files (:meth:`LevelsMapper.save`) and StyleCLIP checkpoints
    (``{'state_dict': {'mapper.course_mapping.mapping.1.weight': ..., 'decoder.*': ...}, 'opts': {...}}``;
    the ``decoder.*`` generator weights are not used). The groups present are read from the keys. A
    mapper trained for another generator loads when the sizes agree but does not transfer.
    """
    sd, meta = _mapper_state(load_checkpoint(path), path)
    if "style_dim" in meta and int(meta["style_dim"]) != style_dim:
        raise ValueError(f"{path}: mapper was built for style_dim={meta['style_dim']}, this generator has {style_dim}")
    if "n_latent" in meta and int(meta["n_latent"]) != n_latent:
        raise ValueError(f"{path}: mapper was built for n_latent={meta['n_latent']}, this generator has {n_latent}")
    opts = meta.get("opts", {})
    if opts.get("stylegan_size"):
        warnings.warn(f"{path}: a StyleCLIP mapper trained with a StyleGAN2 of size {opts['stylegan_size']}; "
                      "mappers do not transfer to a separately trained SWAGAN", stacklevel=2)
    groups = [g for g in MAPPER_GROUPS if any(k.startswith(MAPPER_ATTRS[g] + ".") for k in sd)]
    if not groups:
        raise ValueError(f"{path}: no mapper weights found (expected keys like "
                         f"'{MAPPER_ATTRS['coarse']}.mapping.1.weight'); found {sorted(sd)[:8]}")
    mapper = LevelsMapper(n_latent, style_dim, split if split is not None else meta.get("split"), groups,
                          float(meta.get("step", MAPPER_STEP)))
    expected = mapper.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: mapper keys do not match: missing {missing[:8]}, unexpected {unexpected[:8]}")
    for k, v in sd.items():
        if v.shape != expected[k].shape:
            raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)} "
                             f"(style_dim={style_dim})")
    mapper.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return mapper.eval()
