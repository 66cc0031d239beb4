"""The official TensorFlow SWAGAN (rinongal/swagan) as a WaGI generator, without TensorFlow and without
running code from the file.

**The file.** An official ``.pkl`` is a pickle of the tuple ``(G, D, Gs)`` of dnnlib
``dnnlib.tflib.network.Network`` objects; ``Gs`` (the moving average of G) is the generator to use.
Each Network pickles a state dict ``{version, name, static_kwargs, components, build_module_src,
build_func_name, variables: [(name, numpy array)]}``. Unpickling it the official way *executes*
``build_module_src`` (Python source stored in the file). :func:`read_official_pickle` instead uses a
restricted unpickler: every global the pickle names must be on :data:`ALLOWED_GLOBALS` (the Network
and EasyDict classes become inert stubs that only keep their state; numpy's array and scalar
reconstructors; ``OrderedDict``); anything else is refused with one line naming it. The stored source
is kept as a string and never executed.

**The network.** ``Gs`` runs ``G_main``: the mapping network ``Gs.components.mapping`` (``G_mapping``)
and the synthesis network ``Gs.components.synthesis``, which must be ``G_synthesis_wavelets``
(``architecture='wavelets'``). Official variable names and shapes, output resolution R, feature
resolutions r = 4 ... R/2, W width ``D``::

    mapping    Dense{i}/weight [in, out], Dense{i}/bias [out]          (lrmul 0.01 on both)
    synthesis  4x4/Const/const [1, C4, 4, 4]
               4x4/Conv, {r}x{r}/Conv0_up, {r}x{r}/Conv1:  weight [3, 3, Cin, Cout], mod_weight [D, Cin],
                   mod_bias [Cin], noise_strength [], bias [Cout]
               {r}x{r}/ToWavelet (r = 4 too):  weight [3, 3, C, 12], mod_weight [D, C], mod_bias [C], bias [12]
               noise{j} [1, 1, s, s], j = 0 ... 2 log2 R - 4, s = 2^((j + 5) // 2)
    Gs         dlatent_avg [D], lod []

The official synthesis takes ``2 log2 R - 2`` W+ rows and owns ``2 log2 R - 3`` noise maps, but reads
only the first ``n_latent = 2 log2 R - 4`` rows and ``2 log2 R - 5`` maps (the last ToWavelet is at
R/2), exactly the project generator's. Channel counts follow ``fmap_base`` / ``fmap_max``; they are read
from the variable shapes.

**The conversion** (:data:`CONVERSION_STEPS`; each one is needed, and the tests check that leaving any
one out changes the images):

* ``transpose_dense``: dense weights are ``[in, out]`` in TF and ``[out, in]`` here (mapping layers and
  the modulation of every modulated conv);
* ``modulation_bias``: the official style is ``dense(w) + mod_bias + 1``; rosinality's modulation bias
  holds the 1 (initialised to 1), so ``modulation.bias = mod_bias + 1``;
* ``flip_up_kernels``: the official up-sampling conv is a transposed convolution with the kernel
  flipped in both spatial axes, rosinality's is not: the ``Conv0_up`` kernels are flipped;
* ``haar_bands``: the official Haar transform sums a 2x2 block without the 1/2 of the orthonormal one and
  takes LH as bottom row minus top row and HL as right column minus left, the opposite signs of
  :mod:`wagi.wavelets`; its inverse divides by 4. A wavelet map of the official synthesis is therefore
  :data:`OFFICIAL_BAND_SCALE` = (2, -2, -2, 2) times ours, band by band ([LL | LH | HL | HH], 3 colours
  each), at every level of the skip chain (the chain is linear and applies the same scale on both
  sides), so the ToWavelet weights and biases are divided by that scale per output channel;
* ``latent_avg``: ``Gs``' ``dlatent_avg`` becomes the checkpoint's ``latent_avg``;
* ``noise_maps``: ``noise{j}`` fill the generator's ``noises.noise_{j}`` buffers, so
  ``randomize_noise=False`` reproduces the official ``randomize_noise=False`` images.

Conv kernels are ``[kh, kw, in, out]`` there and ``[1, out, in, kh, kw]`` here (both correlate; only the
up-sampling convs are flipped). ToWavelet convs are 3x3: the generator is built with
``to_rgb_kernel=3``. Everything else (equalised learning rate, biases, noise strength, leaky ReLU with
gain sqrt 2, pixel norm, FIR filters [1, 3, 3, 1]) has the same stored values and semantics.

**Truncation.** The official ``Gs.run(z, None)`` truncates with ``truncation_psi=0.5`` by default
(:data:`OFFICIAL_TRUNCATION_PSI`): ``w = dlatent_avg + psi (w - dlatent_avg)`` on every row;
:func:`generate_like_official` does the same with the converted generator.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from wagi.checkpoint import CheckpointError, infer_generator_kwargs, save_generator
from wagi.fileio import PathLike
from wagi.models.layers import DEFAULT_BLUR_KERNEL
from wagi.models.swagan import WAVELET_CHANNELS, Generator

FORMAT_NAME = "swagan-tf"
SYNTHESIS_FUNC = "G_synthesis_wavelets"
OFFICIAL_BAND_SCALE = (2.0, -2.0, -2.0, 2.0)  # official Haar coefficient / ours, for LL, LH, HL, HH
OFFICIAL_TRUNCATION_PSI = 0.5  # G_main's default truncation_psi: what Gs.run uses unless told otherwise
OFFICIAL_MAPPING_LRMUL = 0.01
OFFICIAL_UNUSED_ROWS = 2  # W+ rows (and noise maps) the official synthesis has but never reads
CONVERSION_STEPS = ("transpose_dense", "modulation_bias", "flip_up_kernels", "haar_bands", "latent_avg",
                    "noise_maps")
_STATE_VERSIONS = (2, 3, 4)  # the dnnlib Network pickle versions that hold the fields read here
_MAX_LISTED = 8  # variables named per category in an error


class OfficialPickleError(CheckpointError):
    """The file is not an official SWAGAN pickle that can be converted; the message says why, in one line."""


# ---------------------------------------------------------------------------------------- restricted unpickler
class OfficialNetwork:
    """Inert stand-in for ``dnnlib.tflib.network.Network``: keeps the pickled state, builds nothing.

    Attributes: ``name``, ``build_func_name``, ``static_kwargs`` (dict), ``components`` (dict of
    OfficialNetwork), ``variables`` (OrderedDict name -> numpy array), ``build_module_src`` (str, never run).
    """

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"a dnnlib Network state must be a dict, got {type(state).__name__}")
        self.state_version = state.get("version")
        self.name = state.get("name")
        self.build_func_name = state.get("build_func_name")
        self.build_module_src = state.get("build_module_src")
        self.static_kwargs = dict(state.get("static_kwargs") or {})
        self.components = dict(state.get("components") or {})
        variables = state.get("variables")
        self.variables = OrderedDict()
        if isinstance(variables, (list, tuple)):
            for item in variables:
                if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
                    self.variables[item[0]] = item[1]

    def __repr__(self) -> str:
        return f"OfficialNetwork({self.name!r}, {self.build_func_name!r}, {len(self.variables)} variables)"


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access): a plain dict here."""


def _numpy_reconstructors() -> Dict[Tuple[str, str], Any]:
    # Taken from numpy's own pickling so that they are the functions numpy would call, whatever its version.
    array_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    scalar = np.float32(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x spellings
        out[(f"{core}.multiarray", "_reconstruct")] = array_reconstruct
        out[(f"{core}.multiarray", "scalar")] = scalar
        out[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return out


ALLOWED_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("dnnlib.tflib.network", "Network"): OfficialNetwork,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    **_numpy_reconstructors(),
}
"""Every global an official pickle may name, mapped to what it becomes here; all others are refused."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not part of the official format")


class _Refused(pickle.UnpicklingError):
    """A global outside :data:`ALLOWED_GLOBALS`; the message is its dotted name."""


def read_official_pickle(path: PathLike) -> Any:
    """Unpickle an official ``.pkl`` with the restricted unpickler (no code from the file runs).

    Returns what the file holds, Networks as :class:`OfficialNetwork`. Raises
    :class:`OfficialPickleError` when the file is not a pickle or names a global outside
    :data:`ALLOWED_GLOBALS`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official pickle not found: {path}")
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except _Refused as err:
        raise OfficialPickleError(
            f"{path}: refusing to unpickle: it needs {err}, which is not on the allow-list of the official SWAGAN "
            "format (dnnlib Network / EasyDict, numpy arrays); the file was not loaded") from None
    except Exception as err:  # pickle raises UnpicklingError, EOFError, ValueError, TypeError, ... on non-pickles
        raise OfficialPickleError(f"{path} is not a readable pickle ({type(err).__name__}: {_first_line(err)}); "
                                  "expected an official SWAGAN network .pkl") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else repr(err)


# ---------------------------------------------------------------------------------------- the generator network
def find_generator(obj: Any, where: str = "the pickle") -> OfficialNetwork:
    """``Gs`` from an official pickle's content: the last item of ``(G, D, Gs)``, or a lone Network."""
    if isinstance(obj, OfficialNetwork):
        gs = obj
    elif isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(n, OfficialNetwork) for n in obj):
        gs = obj[2]
    else:
        kind = (f"a {type(obj).__name__} of {len(obj)} items" if isinstance(obj, (tuple, list))
                else f"a {type(obj).__name__}")
        raise OfficialPickleError(f"{where} holds {kind}, not the official (G, D, Gs) tuple of dnnlib Networks")
    if gs.state_version not in _STATE_VERSIONS:
        raise OfficialPickleError(f"{where}: Network {gs.name!r} has state version {gs.state_version!r}; "
                                  f"the official format has {list(_STATE_VERSIONS)}")
    synthesis, mapping = gs.components.get("synthesis"), gs.components.get("mapping")
    if not isinstance(synthesis, OfficialNetwork) or not isinstance(mapping, OfficialNetwork):
        raise OfficialPickleError(f"{where}: Network {gs.name!r} ({gs.build_func_name}) has no mapping and "
                                  "synthesis components: it is not an official generator (Gs)")
    if synthesis.build_func_name != SYNTHESIS_FUNC:
        arch = synthesis.static_kwargs.get("architecture", gs.static_kwargs.get("architecture"))
        what = ("a plain StyleGAN2 generator" if "stylegan" in str(synthesis.build_func_name).lower()
                else "a generator of another kind")
        raise OfficialPickleError(f"{where} holds {what} (synthesis {synthesis.build_func_name!r}, architecture "
                                  f"{arch!r}), not a SWAGAN synthesis ({SYNTHESIS_FUNC!r}, architecture "
                                  "'wavelets'); only SWAGAN generators convert")
    return gs


def _kwarg(net: OfficialNetwork, key: str, default: Any) -> Any:
    return net.static_kwargs.get(key, default)


def _check_supported(gs: OfficialNetwork, where: str) -> Dict[str, Any]:
    """Refuse official options the project generator does not implement; return its lr_mlp / blur_kernel."""
    synthesis, mapping = gs.components["synthesis"], gs.components["mapping"]
    problems = []
    if _kwarg(synthesis, "architecture", "skip") != "wavelets":
        problems.append(f"architecture {_kwarg(synthesis, 'architecture', 'skip')!r} (needs 'wavelets')")
    if _kwarg(synthesis, "num_channels", 3) != 3:
        problems.append(f"num_channels {_kwarg(synthesis, 'num_channels', 3)} (needs 3)")
    if _kwarg(mapping, "label_size", 0):
        problems.append(f"label_size {_kwarg(mapping, 'label_size', 0)} (conditional generators are not supported)")
    for net, key in ((synthesis, "nonlinearity"), (mapping, "mapping_nonlinearity")):
        if _kwarg(net, key, "lrelu") != "lrelu":
            problems.append(f"{key} {_kwarg(net, key, 'lrelu')!r} (needs 'lrelu')")
    if not _kwarg(mapping, "normalize_latents", True):
        problems.append("normalize_latents False")
    for net in (synthesis, mapping):
        if _kwarg(net, "dtype", "float32") != "float32":
            problems.append(f"dtype {_kwarg(net, 'dtype', 'float32')!r}")
    if problems:
        raise OfficialPickleError(f"{where}: the SWAGAN generator uses options this converter does not support: "
                                  + "; ".join(problems))
    kernel = _kwarg(synthesis, "resample_kernel", list(DEFAULT_BLUR_KERNEL))
    return {"lr_mlp": float(_kwarg(mapping, "mapping_lrmul", OFFICIAL_MAPPING_LRMUL)),
            "blur_kernel": [float(k) for k in (kernel if kernel is not None else [1, 1])]}


def _names(items: Iterable[str]) -> str:
    items = list(items)
    more = f" ... (+{len(items) - _MAX_LISTED})" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def _levels(synthesis: OfficialNetwork, where: str) -> List[int]:
    """Feature resolutions 4 ... R/2 that have a ToWavelet layer; checked to be contiguous."""
    found = sorted(int(m.group(1)) for name in synthesis.variables
                   for m in [re.fullmatch(r"(\d+)x\1/ToWavelet/weight", name)] if m)
    if not found:
        raise OfficialPickleError(f"{where}: the SWAGAN synthesis has no '<r>x<r>/ToWavelet/weight' variables "
                                  f"(first variables: {_names(list(synthesis.variables)[:5])})")
    expected = [2 ** i for i in range(2, int(np.log2(found[-1])) + 1)]
    if found != expected:
        missing = [f"{r}x{r}/ToWavelet/weight" for r in expected if r not in found]
        raise OfficialPickleError(f"{where}: missing variables {_names(missing)}")
    resolution = _kwarg(synthesis, "resolution", 2 * found[-1])
    if resolution != 2 * found[-1]:
        raise OfficialPickleError(f"{where}: the synthesis says resolution {resolution} but its ToWavelet layers "
                                  f"stop at {found[-1]}x{found[-1]} (a {2 * found[-1]} px network)")
    return found


def _plan(levels: Sequence[int]) -> List[Tuple[str, str, str]]:
    """``(official variable, project key, kind)`` for every synthesis variable that is read."""
    plan = [("4x4/Const/const", "input.input", "copy")]

    def styled(scope: str, prefix: str, up: bool) -> None:
        plan.extend([(f"{scope}/weight", f"{prefix}.conv.weight", "conv_up" if up else "conv"),
                     (f"{scope}/mod_weight", f"{prefix}.conv.modulation.weight", "dense"),
                     (f"{scope}/mod_bias", f"{prefix}.conv.modulation.bias", "mod_bias"),
                     (f"{scope}/noise_strength", f"{prefix}.noise.weight", "scalar"),
                     (f"{scope}/bias", f"{prefix}.activate.bias", "copy")])

    def to_wavelet(scope: str, prefix: str) -> None:
        plan.extend([(f"{scope}/weight", f"{prefix}.conv.weight", "wavelet_conv"),
                     (f"{scope}/mod_weight", f"{prefix}.conv.modulation.weight", "dense"),
                     (f"{scope}/mod_bias", f"{prefix}.conv.modulation.bias", "mod_bias"),
                     (f"{scope}/bias", f"{prefix}.bias", "wavelet_bias")])

    styled("4x4/Conv", "conv1", up=False)
    to_wavelet("4x4/ToWavelet", "to_rgb1")
    for k, r in enumerate(levels[1:]):
        styled(f"{r}x{r}/Conv0_up", f"convs.{2 * k}", up=True)
        styled(f"{r}x{r}/Conv1", f"convs.{2 * k + 1}", up=False)
        to_wavelet(f"{r}x{r}/ToWavelet", f"to_rgbs.{k}")
    n_noise = 2 * len(levels) - 1  # the generator's num_layers
    plan.extend((f"noise{j}", f"noises.noise_{j}", "noise") for j in range(n_noise))
    return plan


def _band_scale(dtype: torch.dtype) -> torch.Tensor:
    """Per-channel scale of the 12 wavelet channels ([LL | LH | HL | HH] x RGB)."""
    return torch.tensor(OFFICIAL_BAND_SCALE, dtype=dtype).repeat_interleave(WAVELET_CHANNELS // 4)


def _convert(value: np.ndarray, kind: str, skip: Sequence[str]) -> torch.Tensor:
    t = torch.from_numpy(np.array(value, dtype=np.float32))
    if kind in ("conv", "conv_up", "wavelet_conv"):
        if t.dim() != 4:
            raise ValueError("a conv kernel must be 4-D [kh, kw, in, out]")
        if kind == "conv_up" and "flip_up_kernels" not in skip:
            t = t.flip(0, 1)
        t = t.permute(3, 2, 0, 1).unsqueeze(0)  # [kh, kw, in, out] -> [1, out, in, kh, kw]
        if kind == "wavelet_conv" and "haar_bands" not in skip:
            if t.shape[1] != WAVELET_CHANNELS:
                raise ValueError(f"a ToWavelet conv must have {WAVELET_CHANNELS} outputs")
            t = t / _band_scale(t.dtype).view(1, -1, 1, 1, 1)
        return t.contiguous()
    if kind == "dense":
        if t.dim() != 2:
            raise ValueError("a dense weight must be 2-D [in, out]")
        if "transpose_dense" in skip:  # what a converter that forgot the layout would do
            return t.reshape(t.shape[1], t.shape[0]).contiguous()
        return t.t().contiguous()
    if kind == "mod_bias":
        return t + 1 if "modulation_bias" not in skip else t
    if kind == "scalar":
        return t.reshape(1)
    if kind == "wavelet_bias":
        if t.shape != (WAVELET_CHANNELS,):
            raise ValueError(f"a ToWavelet bias must be [{WAVELET_CHANNELS}]")
        if "haar_bands" not in skip:
            t = t / _band_scale(t.dtype)
        return t.view(1, WAVELET_CHANNELS, 1, 1)
    return t  # copy, noise


def convert_generator(gs: Any, skip: Sequence[str] = (), where: str = "the pickle"
                      ) -> Tuple[Generator, Optional[torch.Tensor], Dict[str, Any]]:
    """Convert the official ``Gs`` (or the unpickled ``(G, D, Gs)``, see :func:`find_generator`) into a
    :class:`Generator` (eval mode, weights loaded strictly).

    Returns ``(generator, latent_avg (1, D) or None, info)``; ``info`` holds ``generator_kwargs`` and the
    official ``resolution``, ``static_kwargs`` (plain values only), unused variables, and the
    ``truncation_psi`` / ``truncation_cutoff`` that ``Gs.run`` uses by default (0.5 / None unless the
    pickle's kwargs override them). ``skip`` leaves
    out named steps of :data:`CONVERSION_STEPS`; it exists for the tests that prove each step matters.
    Missing or misshapen variables raise :class:`OfficialPickleError` naming them.
    """
    unknown = set(skip) - set(CONVERSION_STEPS)
    if unknown:
        raise ValueError(f"unknown conversion steps {sorted(unknown)}; the steps are {list(CONVERSION_STEPS)}")
    gs = find_generator(gs, where)
    extra_kwargs = _check_supported(gs, where)
    synthesis, mapping = gs.components["synthesis"], gs.components["mapping"]
    levels = _levels(synthesis, where)
    plan = _plan(levels)

    n_mlp = len([n for n in mapping.variables if re.fullmatch(r"Dense\d+/weight", n)])
    mapping_plan = []
    for i in range(n_mlp):
        mapping_plan += [(f"Dense{i}/weight", f"style.{i + 1}.weight", "dense"),
                         (f"Dense{i}/bias", f"style.{i + 1}.bias", "copy")]
    missing = [name for name, _, _ in plan if name not in synthesis.variables]
    missing += [f"G_mapping/{name}" for name, _, _ in mapping_plan if name not in mapping.variables]
    if n_mlp == 0:
        missing.append("G_mapping/Dense0/weight")
    if missing:
        raise OfficialPickleError(f"{where}: the SWAGAN generator misses variables {_names(missing)}")
    unused_noise = {f"noise{j}" for j in range(2 * len(levels) - 1, 2 * len(levels) - 1 + OFFICIAL_UNUSED_ROWS)}
    unexpected = [n for n in synthesis.variables if n not in {p[0] for p in plan} | unused_noise]
    unexpected += [f"G_mapping/{n}" for n in mapping.variables if n not in {p[0] for p in mapping_plan}]
    if unexpected:
        raise OfficialPickleError(f"{where}: unexpected variables {_names(unexpected)}: not the official "
                                  f"{SYNTHESIS_FUNC} layout")

    sd: Dict[str, torch.Tensor] = OrderedDict()
    source_of: Dict[str, Tuple[str, Tuple[int, ...]]] = {}  # project key -> (official name, official shape)
    bad = []
    for net, steps, prefix in ((mapping, mapping_plan, "G_mapping/"), (synthesis, plan, "")):
        for name, key, kind in steps:
            value = net.variables[name]
            source_of[key] = (prefix + name, tuple(np.shape(value)))
            if kind == "noise" and "noise_maps" in skip:
                continue
            try:
                if not isinstance(value, np.ndarray) and not np.isscalar(value):
                    raise ValueError(f"is a {type(value).__name__}, not an array")
                sd[key] = _convert(value, kind, skip)
            except (ValueError, TypeError, RuntimeError) as err:
                bad.append(f"{prefix}{name} {tuple(np.shape(value))} ({err})")
    if bad:
        raise OfficialPickleError(f"{where}: misshapen variables {_names(bad)}")

    try:
        kwargs = infer_generator_kwargs(sd)
    except CheckpointError as err:
        raise OfficialPickleError(f"{where}: {err}") from None
    kwargs.update(extra_kwargs)
    kwargs["to_rgb_kernel"] = int(sd["to_rgb1.conv.weight"].shape[-1])
    try:
        with torch.device("meta"):
            probe = Generator(**kwargs)
    except (TypeError, ValueError) as err:
        raise OfficialPickleError(f"{where}: the variables describe no valid generator ({kwargs}): {err}") from None
    own = probe.state_dict()
    shaped = [f"{source_of[k][0]} {source_of[k][1]} (becomes {k} {tuple(v.shape)}, the generator needs "
              f"{tuple(own[k].shape)})" for k, v in sd.items() if tuple(v.shape) != tuple(own[k].shape)]
    if shaped:
        raise OfficialPickleError(f"{where}: misshapen variables {_names(shaped)}")

    generator = Generator(**kwargs)
    full = generator.state_dict()
    full.update(sd)  # buffers that the file does not hold (Haar / FIR kernels; noise maps when skipped)
    generator.load_state_dict(full, strict=True)
    generator.eval()

    latent_avg = None
    if "latent_avg" not in skip:
        avg = gs.variables.get("dlatent_avg")
        if avg is None:
            raise OfficialPickleError(f"{where}: the generator misses variable dlatent_avg")
        avg = np.asarray(avg, dtype=np.float32)
        if avg.shape != (generator.style_dim,):
            raise OfficialPickleError(f"{where}: misshapen variables dlatent_avg {avg.shape} (needs "
                                      f"({generator.style_dim},))")
        latent_avg = torch.from_numpy(avg.copy()).view(1, -1)
    info = {"generator_kwargs": dict(generator.config), "resolution": 2 * levels[-1],
            "static_kwargs": _plain(dict(synthesis.static_kwargs)),
            "truncation_psi": _plain(_kwarg(gs, "truncation_psi", OFFICIAL_TRUNCATION_PSI)),
            "truncation_cutoff": _plain(_kwarg(gs, "truncation_cutoff", None)),
            "unused_variables": sorted(unused_noise & set(synthesis.variables))}
    return generator, latent_avg, info


def _plain(obj: Any) -> Any:
    """Static kwargs as plain data (numbers, strings, lists, dicts); anything else as its repr."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or type(obj) in (str, int, float, bool):
        return obj
    return repr(obj)


# ---------------------------------------------------------------------------------------- file to file
def convert_official_pickle(input_path: PathLike, output_path: PathLike, skip: Sequence[str] = ()
                            ) -> Tuple[Generator, Optional[torch.Tensor], Dict[str, Any]]:
    """Convert an official SWAGAN ``.pkl`` into a WaGI generator checkpoint at ``output_path``.

    The checkpoint (:func:`wagi.checkpoint.save_generator`) holds the generator kwargs (with
    ``to_rgb_kernel: 3``), ``latent_avg`` (the official ``dlatent_avg``), the noise maps in the
    ``noises.*`` buffers, a ``config`` with the ``generator`` keys a run config must agree on, and
    ``converted_from`` (source file name, sha256, official static kwargs). Returns what
    :func:`convert_generator` returns.
    """
    input_path = Path(input_path)
    gs = find_generator(read_official_pickle(input_path), str(input_path))
    generator, latent_avg, info = convert_generator(gs, skip=skip, where=str(input_path))
    kwargs = info["generator_kwargs"]
    config_keys = {k: kwargs[k] for k in ("size", "style_dim", "n_mlp", "to_rgb_kernel")}
    if kwargs.get("channels") is None:
        config_keys["channel_multiplier"] = kwargs["channel_multiplier"]
    source = {"format": FORMAT_NAME, "file": input_path.name,
              "sha256": hashlib.sha256(input_path.read_bytes()).hexdigest(),
              "network": gs.name, "synthesis": SYNTHESIS_FUNC, "static_kwargs": info["static_kwargs"],
              "truncation_psi": info["truncation_psi"], "truncation_cutoff": info["truncation_cutoff"],
              "skipped_steps": list(skip)}
    save_generator(output_path, generator, latent_avg, config={"generator": config_keys}, converted_from=source)
    return generator, latent_avg, info


# ---------------------------------------------------------------------------------------- official semantics
def official_wplus_to_latent(dlatents: torch.Tensor, generator: Generator) -> torch.Tensor:
    """Official W+ ``(N, n_latent + 2, D)`` (the synthesis' input) to the generator's ``(N, n_latent, D)``.

    The official synthesis never reads its last two rows, so they are dropped.
    """
    expected = (generator.n_latent + OFFICIAL_UNUSED_ROWS, generator.style_dim)
    if dlatents.dim() != 3 or tuple(dlatents.shape[1:]) != expected:
        raise ValueError(f"official W+ must be (N, {expected[0]}, {expected[1]}), got {tuple(dlatents.shape)}")
    return dlatents[:, :generator.n_latent]


def generate_like_official(generator: Generator, latent_avg: Optional[torch.Tensor], z: torch.Tensor,
                           truncation_psi: float = OFFICIAL_TRUNCATION_PSI) -> torch.Tensor:
    """The converted generator's answer to the official ``Gs.run(z, None, truncation_psi=psi,
    randomize_noise=False)``: images ``(N, 3, R, R)`` in [-1, 1] units (not clipped).

    The official default is ``psi = 0.5`` (:data:`OFFICIAL_TRUNCATION_PSI`); psi 1 disables truncation.
    """
    if truncation_psi != 1 and latent_avg is None:
        raise ValueError("truncation needs latent_avg (the converted checkpoint carries the official dlatent_avg)")
    w = generator.get_latent(z)
    if truncation_psi != 1:
        w = latent_avg + truncation_psi * (w - latent_avg)
    return generator([w], input_is_latent=True, randomize_noise=False)[0]


def compare_with_golden(generator: Generator, latent_avg: Optional[torch.Tensor],
                        golden: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Max abs error of a converted generator against the official outputs in a golden file.

    ``golden`` is a ``*_golden.npz`` of ``scripts/dev/make_swagan_tf_golden.py`` (``z``, ``w``,
    ``images_psi100`` / ``images_psi050``, ``wplus``, ``images_wplus``); returns ``{"w": mapping error,
    "psi1.0": ..., "psi0.5": ..., "wplus": ...}`` in [-1, 1] image units (W units for ``w``).
    """
    z = torch.from_numpy(np.asarray(golden["z"], dtype=np.float32))
    out = {}
    with torch.no_grad():
        out["w"] = (generator.get_latent(z) - torch.from_numpy(golden["w"])).abs().max().item()
        for psi in (1.0, 0.5):
            ref = torch.from_numpy(golden[f"images_psi{int(round(psi * 100)):03d}"])
            img = generate_like_official(generator, latent_avg, z, truncation_psi=psi)
            if img.shape != ref.shape:
                raise ValueError(f"the generator gives {tuple(img.shape)} images, the golden file {tuple(ref.shape)}")
            out[f"psi{psi}"] = (img - ref).abs().max().item()
        wplus = official_wplus_to_latent(torch.from_numpy(golden["wplus"]), generator)
        img = generator([wplus], input_is_latent=True, randomize_noise=False)[0]
        out["wplus"] = (img - torch.from_numpy(golden["images_wplus"])).abs().max().item()
    return out


__all__ = [
    "ALLOWED_GLOBALS", "CONVERSION_STEPS", "FORMAT_NAME", "OFFICIAL_BAND_SCALE", "OFFICIAL_TRUNCATION_PSI",
    "OfficialNetwork", "OfficialPickleError", "compare_with_golden", "convert_generator", "convert_official_pickle",
    "find_generator", "generate_like_official", "official_wplus_to_latent", "read_official_pickle",
]
