"""The local interactive page of ``scripts/app.py``: pick or upload an image, invert it, edit it with sliders.

Two layers:

- :class:`AppEngine` (no Gradio): loads the bundled WaGI models and their editing directions on first use,
  inverts an image file into an :class:`Inversion` (input ``x``, fused reconstruction, unfused ``base``,
  ``w+``; tensors ``(1, 3, S, S)`` in [-1, 1] and ``(1, n_latent, D)``), renders an edit
  ``w+ + Σ_k s_k · d_k`` of it, and writes the downloads. Models are shared by every user (read only);
  inversions live in the caller's :class:`InversionCache`.
- :func:`build_app`: the Gradio page over it. Each browser session has its own ``InversionCache`` (a
  ``gr.State``), so concurrent users never see each other's images. Named API endpoints, scriptable
  with ``gradio_client``: ``/invert`` (image file, model → input, reconstruction, unfused reconstruction,
  metrics, sub-band view, latent file) and ``/edit`` (image file, model, fusion on/off, one strength per
  slider → edited image, sub-band view, result file, latent file). ``/edit`` inverts the image itself
  when this session has not inverted it yet.

Uploads go through :func:`wagi.imageio.load_image` (the guarded decoder of every script): a corrupt,
huge, oddly shaped or non-image file becomes a one-line message in the page (``gr.Error``), never a
traceback, and the server keeps serving.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import io
import logging
import os
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image

from wagi.bundle import BundleError, read_manifest
from wagi.fileio import PathLike
from wagi.imageio import ImageIOError, load_image, save_image
from wagi.inference import DEMO_CKPT, EXAMPLES_DIR, save_latent
from wagi.metrics import band_keys, psnr, subband_l2
from wagi.reports import plot_subbands

logger = logging.getLogger(__name__)


DEMO_BUNDLE = DEMO_CKPT.parent
WAGI_KIND = "wagi"  # manifest entries of this kind are WaGI models the page can load
DEFAULT_HOST = "127.0.0.1"  # local only: the page serves whoever can reach the port
DEFAULT_PORT = 7860
N_SEFA = 4  # SeFa components offered as sliders: the first few carry the large, global changes
SEFA_RANGE = 8.0  # slider range ± for unit-norm SeFa directions (edit.py's default strengths are ±3)
SHIPPED_RANGE = 2.0  # slider range ± in units of a shipped direction's documented strength
SLIDER_STEPS = 40  # steps per slider over its whole range
CACHED_INVERSIONS = 4  # per session: a few recent images, so going back to one does not re-invert
MAX_UPLOAD = "50mb"  # Gradio refuses larger uploads before our decoder sees them
SUBBAND_TILE_INCHES = 1.6  # sub-band view: small tiles keep its rendering near 0.1 s
SUBBAND_DPI = 80


@dataclass(frozen=True)
class Slider:
    """One editing slider: the name of its direction, its label and range (± ``limit``)."""

    key: str  # "shipped:<name>" or "sefa:<index>"
    label: str
    limit: float

    @property
    def step(self) -> float:
        return 2 * self.limit / SLIDER_STEPS


@dataclass
class Inversion:
    """One inverted image: ``x`` the input at the model size, ``recon`` fused, ``base`` unfused (each
    ``(1, 3, S, S)`` in [-1, 1]), ``w_plus`` ``(1, n_latent, D)``; ``model`` the model's name."""

    model: str
    x: torch.Tensor
    recon: torch.Tensor
    base: torch.Tensor
    w_plus: torch.Tensor


class InversionCache:
    """The inversions of one session, the ``CACHED_INVERSIONS`` most recent, keyed by model and file."""

    def __init__(self, capacity: int = CACHED_INVERSIONS):
        self.capacity = capacity
        self._items: OrderedDict[tuple, Inversion] = OrderedDict()
        self.session_id = uuid.uuid4().hex  # names this session's download folder
        self.last_edit: Optional[Tuple[Inversion, torch.Tensor, torch.Tensor]] = None  # (inversion, image, w+)

    def get(self, key: tuple) -> Optional[Inversion]:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: tuple, item: Inversion) -> None:
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def file_key(model: str, path: PathLike) -> tuple:
    """Cache key of an image file: the model and the sha256 of the file's bytes (every upload through the
    API is a new file, so the path alone would miss; the bytes are hashed once per path and version)."""
    st = os.stat(path)
    return model, _content_hash(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _content_hash(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bundled_models(bundle_dir: PathLike = DEMO_BUNDLE) -> Dict[str, Path]:
    """The WaGI models of a bundle's manifest, name → file, the demo model ``wagi`` first."""
    manifest = read_manifest(bundle_dir, missing_ok=True)
    names = sorted((n for n, e in manifest["models"].items() if isinstance(e, dict) and e.get("kind") == WAGI_KIND),
                   key=lambda n: (n != "wagi", n))
    return {n: Path(bundle_dir) / manifest["models"][n]["file"] for n in names}


def example_images(folder: PathLike = EXAMPLES_DIR) -> List[Path]:
    from wagi.imageio import find_images

    return [Path(item.path) for item in find_images([os.fspath(folder)])]


def band_table(x: torch.Tensor, outputs: Sequence[Tuple[str, torch.Tensor]]) -> str:
    """Markdown table: per-band L2 (Haar level 1, MSE per band) and PSNR of each output against ``x``."""
    keys = band_keys(1)
    lines = ["| vs input | " + " | ".join(f"L2 {k}" for k in keys) + " | PSNR (dB) |",
             "|---|" + "---|" * (len(keys) + 1)]
    for name, y in outputs:
        bands = subband_l2(x, y)
        cells = [f"{float(bands[k][0]):.3g}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {float(psnr(x, y)[0]):.2f} |")
    return "\n".join(lines)


def to_pil(x: torch.Tensor) -> Image.Image:
    from wagi.imageio import tensor_to_pil

    return tensor_to_pil(x[0] if x.dim() == 4 else x)


def _per_entry(direction: torch.Tensor, n_latent: int) -> torch.Tensor:
    """``(1, D)`` or ``(n_latent, D)`` → ``(1, n_latent, D)``."""
    return direction.expand(n_latent, -1).unsqueeze(0).contiguous()


class AppEngine:
    """Models, directions, inversion and edits of the page (see the module docstring)."""

    def __init__(self, models: Dict[str, Path], bundle_dir: PathLike = DEMO_BUNDLE,
                 download_dir: Optional[PathLike] = None, n_sefa: int = N_SEFA):
        if not models:
            raise ValueError("no WaGI model to serve: pass --ckpt or restore pretrained/demo")
        import tempfile

        self.model_paths = dict(models)
        self.bundle_dir = Path(bundle_dir)
        self.n_sefa = n_sefa
        self._tmp = None
        if download_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="wagi-app-")
            download_dir = self._tmp.name
        self.download_dir = Path(download_dir)
        self._models: Dict[str, torch.nn.Module] = {}
        self._directions: Dict[str, Dict[str, torch.Tensor]] = {}
        self._lock = threading.Lock()
        self.sliders = self._slider_specs()

    @property
    def model_names(self) -> List[str]:
        return list(self.model_paths)

    def _slider_specs(self) -> List[Slider]:
        from wagi.editing.shipped import direction_entries

        try:
            entries = direction_entries(self.bundle_dir)
        except BundleError as err:
            logger.warning("no shipped directions: %s", err)
            entries = {}
        out = [Slider(f"shipped:{n}", f"{n} ({e.get('attribute', n)}; documented strength {float(e['strength']):g})",
                      SHIPPED_RANGE * float(e["strength"])) for n, e in sorted(entries.items())]
        out += [Slider(f"sefa:{k}", f"SeFa component {k}", SEFA_RANGE) for k in range(self.n_sefa)]
        return out

    # ------------------------------------------------------------------ models and directions
    def model(self, name: str):
        """The WaGI model ``name`` (loaded on first use, then shared)."""
        from wagi.models.wagi import WaGI

        if name not in self.model_paths:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(self.model_paths)}")
        with self._lock:
            if name not in self._models:
                self._models[name] = WaGI.load(self.model_paths[name], map_location="cpu").eval()
            return self._models[name]

    def directions(self, name: str) -> Dict[str, torch.Tensor]:
        """Slider key → unit direction ``(1, n_latent, D)`` for model ``name``; shipped directions fitted
        for another generator are left out (they mean nothing in this model's W space)."""
        from wagi.editing import sefa_directions
        from wagi.editing.directions import as_direction
        from wagi.editing.shipped import check_direction_fits, load_shipped

        model = self.model(name)
        with self._lock:
            if name in self._directions:
                return self._directions[name]
            n, dim = model.n_latent, model.generator.style_dim
            out: Dict[str, torch.Tensor] = {}
            wanted = [s.key.split(":", 1)[1] for s in self.sliders if s.key.startswith("shipped:")]
            if wanted:
                for d_name, d in load_shipped(self.bundle_dir, wanted, n, dim).items():
                    try:
                        check_direction_fits(d.entry, model.generator, d_name)
                    except BundleError as err:
                        logger.warning("%s", err)
                        continue
                    out[f"shipped:{d_name}"] = _per_entry(as_direction(d.direction, n, dim), n).to(model.latent_avg)
            if self.n_sefa:
                eigvecs, _ = sefa_directions(model.generator, n_components=self.n_sefa)
                for k in range(self.n_sefa):
                    out[f"sefa:{k}"] = _per_entry(eigvecs[k:k + 1], n).to(model.latent_avg)
            self._directions[name] = out
            return out

    # ------------------------------------------------------------------ inversion and edits
    def load(self, name: str, path: PathLike) -> torch.Tensor:
        """The image file as ``(1, 3, S, S)`` for model ``name``; :class:`ImageIOError` with a one-line
        message naming the file by its base name (not the server's upload folder)."""
        model = self.model(name)
        try:
            return load_image(path, model.image_size).unsqueeze(0).to(model.latent_avg)
        except ImageIOError as err:
            reason = getattr(err, "reason", None) or str(err)
            raise ImageIOError(f"{Path(path).name}: cannot read image: {reason}") from None

    @torch.no_grad()
    def invert(self, name: str, path: PathLike, cache: Optional[InversionCache] = None) -> Inversion:
        try:
            key = file_key(name, path)
        except OSError:  # missing, a folder, unreadable: load() below says which, in one line
            key = None
        found = cache.get(key) if cache is not None and key is not None else None
        if found is not None:
            return found
        x = self.load(name, path)
        recon, w, extras = self.model(name).invert(x)
        inv = Inversion(name, x, recon, extras["base"], w)
        if cache is not None and key is not None:
            cache.put(key, inv)
        return inv

    def edited_latent(self, inv: Inversion, strengths: Dict[str, float]) -> torch.Tensor:
        """``w+ + Σ_k s_k · d_k`` over the sliders of ``strengths`` (key → strength)."""
        dirs = self.directions(inv.model)
        w = inv.w_plus.clone()
        for key, s in strengths.items():
            if s and key in dirs:
                w = w + float(s) * dirs[key]
        return w

    @torch.no_grad()
    def edit(self, inv: Inversion, strengths: Dict[str, float], fuse: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """The edited image ``(1, 3, S, S)`` and its code ``(1, n_latent, D)``; all strengths 0 gives the
        reconstruction itself (fused or not)."""
        w = self.edited_latent(inv, strengths)
        if not any(strengths.get(k) for k in self.directions(inv.model)):
            return (inv.recon if fuse else inv.base), inv.w_plus
        model = self.model(inv.model)
        shift = w - inv.w_plus  # one combined direction at strength 1: one generator pass for all sliders
        return model.render_edit(inv.w_plus, shift, 1.0, x=inv.x, base=inv.base, fuse=fuse), w

    def subband_view(self, inv: Inversion, output: torch.Tensor, output_name: str = "output") -> Image.Image:
        png = plot_subbands([("input", inv.x[0]), (output_name, output[0])], tile_inches=SUBBAND_TILE_INCHES,
                            dpi=SUBBAND_DPI)
        return Image.open(io.BytesIO(png)).convert("RGB")

    def metrics(self, inv: Inversion) -> str:
        return band_table(inv.x.double(), [("reconstruction (fused)", inv.recon.double()),
                                           ("unfused G(w+)", inv.base.double())])

    def write_downloads(self, cache: InversionCache, image: torch.Tensor, w_plus: torch.Tensor) -> Tuple[str, str]:
        """``wagi_result.png`` and ``wagi_latent.pt`` (w+ ``(n_latent, D)`` float32, a plain tensor, as
        ``invert.py --save-latents pt`` writes) in this session's folder, replacing the previous ones."""
        folder = self.download_dir / cache.session_id
        png = save_image(image[0], folder / "wagi_result.png", overwrite=True)
        pt = save_latent(w_plus[0], folder / "wagi_latent.pt", overwrite=True)
        return png, pt


# ---------------------------------------------------------------------------------------------- page
def slider_param(slider: Slider) -> str:
    """The API parameter of a slider: the shipped direction's name, or ``sefa_<k>``."""
    kind, name = slider.key.split(":", 1)
    return name if kind == "shipped" else f"{kind}_{name}"


def build_app(engine: AppEngine, examples: Sequence[PathLike] = ()):
    """The Gradio page (``gr.Blocks``) over ``engine``; launch it with :func:`launch`."""
    import gradio as gr

    def fail(err: Exception):
        return gr.Error(str(err).splitlines()[0] if str(err) else type(err).__name__)

    def run_invert(path, model_name, cache):
        if not path:
            raise gr.Error("pick an example or upload an image first")

        def go():
            c = cache if cache is not None else InversionCache()
            inv = engine.invert(model_name, path, c)
            _, latent = engine.write_downloads(c, inv.recon, inv.w_plus)
            return (to_pil(inv.x), to_pil(inv.recon), to_pil(inv.base), engine.metrics(inv),
                    engine.subband_view(inv, inv.recon, "reconstruction"), latent, c)
        return guarded("inversion", go)

    def guarded(what, fn):
        """``fn()``, with every failure turned into a one-line message in the page."""
        try:
            return fn()
        except gr.Error:
            raise
        except (ImageIOError, ValueError, BundleError, OSError) as err:
            raise fail(err) from None
        except Exception as err:  # keep serving whatever happened; the log has the details
            logger.exception("%s failed", what)
            raise gr.Error(f"{what} failed: {type(err).__name__}: {err}") from None

    def edit_step(path, model_name, fuse, values, cache):
        """The edit of the sliders' ``values``, kept in the session as ``cache.last_edit``."""
        cache = cache if cache is not None else InversionCache()
        if not path:
            raise gr.Error("pick an example or upload an image first")
        inv = engine.invert(model_name, path, cache)
        strengths = {s.key: float(v or 0.0) for s, v in zip(engine.sliders, values)}
        image, w = engine.edit(inv, strengths, fuse=bool(fuse))
        cache.last_edit = (inv, image, w)
        return cache

    def views_step(cache):
        inv, image, w = cache.last_edit
        png, pt = engine.write_downloads(cache, image, w)
        return engine.subband_view(inv, image, "edited"), png, pt

    def run_edit(path, model_name, fuse, *values_and_cache):
        *values, cache = values_and_cache

        def go():
            c = edit_step(path, model_name, fuse, values, cache)
            return (to_pil(c.last_edit[1]), *views_step(c), c)
        return guarded("edit", go)

    def run_edit_image(path, model_name, fuse, *values_and_cache):
        """The page's live edit: the edited image first; the sub-band view and downloads follow (views_step)."""
        *values, cache = values_and_cache

        def go():
            c = edit_step(path, model_name, fuse, values, cache)
            return to_pil(c.last_edit[1]), c
        return guarded("edit", go)

    def run_edit_views(cache):
        if cache is None or cache.last_edit is None:
            return None, None, None
        return guarded("edit", lambda: views_step(cache))

    # The page's own steps: a cleared upload clears the panels instead of raising a message.
    def page_invert(path, model_name, cache):
        if not path:
            if cache is not None:
                cache.last_edit = None
            return None, None, None, "", None, None, cache
        return run_invert(path, model_name, cache)

    def page_edit_image(path, model_name, fuse, *values_and_cache):
        if not path:
            return None, values_and_cache[-1]
        return run_edit_image(path, model_name, fuse, *values_and_cache)

    # API parameter names: one per slider (``glasses``, ``sefa_0``), so scripts can pass strengths by name.
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
              for n in ["path", "model_name", "fuse", *[slider_param(s) for s in engine.sliders], "cache"]]
    run_edit.__signature__ = inspect.Signature(params)

    with gr.Blocks(title="WaGI: invert and edit", delete_cache=(3600, 3600)) as demo:
        cache = gr.State(None)  # this session's InversionCache, made by its first call
        gr.Markdown("# WaGI: wavelet GAN inversion\nPick an example or upload an image; it is inverted with the "
                    "chosen model, then edited live with the sliders. Everything runs on this machine.")
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                upload = gr.File(label="image (upload)", type="filepath", elem_id="upload")
                gallery = gr.Gallery(value=[os.fspath(p) for p in examples], label="examples (click one)",
                                     columns=4, height=180, allow_preview=False, elem_id="examples")
                model = gr.Dropdown(engine.model_names, value=engine.model_names[0], label="model", elem_id="model")
                fuse = gr.Checkbox(value=True, label="wavelet fusion on edits", elem_id="fuse")
                reset = gr.Button("reset sliders", elem_id="reset")
            with gr.Column(scale=3):
                with gr.Row():
                    shown_input = gr.Image(label="input", type="pil", interactive=False, elem_id="input",
                                           format="png")
                    recon = gr.Image(label="reconstruction (fused)", type="pil", interactive=False, elem_id="recon",
                                           format="png")
                    unfused = gr.Image(label="unfused G(w+)", type="pil", interactive=False, elem_id="unfused",
                                           format="png")
                    edited = gr.Image(label="edited", type="pil", interactive=False, elem_id="edited",
                                      format="png")
                metrics = gr.Markdown(label="per-band L2 and PSNR", elem_id="metrics")
                sliders = []
                with gr.Row():  # shipped directions left, SeFa components right
                    for kind in ("shipped", "sefa"):
                        with gr.Column(min_width=240):
                            sliders += [gr.Slider(-s.limit, s.limit, value=0.0, step=s.step, label=s.label,
                                                  elem_id=f"slider-{s.key.replace(':', '-')}")
                                        for s in engine.sliders if s.key.startswith(kind + ":")]
                subbands = gr.Image(label="Haar sub-bands (level 1): input vs output", type="pil", show_label=False,
                                    interactive=False, elem_id="subbands", format="png")
                gr.Markdown("Haar sub-bands (level 1) of the input and the output: LL as colours, |LH|, |HL|, "
                            "|HH| as heat maps (one scale per band column).")
                with gr.Row():
                    result_file = gr.File(label="result image", elem_id="result-file")
                    latent_file = gr.File(label="latent code w+ (.pt)", elem_id="latent-file")

        invert_outputs = [shown_input, recon, unfused, metrics, subbands, latent_file, cache]
        edit_inputs = [upload, model, fuse, *sliders, cache]
        edit_outputs = [edited, subbands, result_file, latent_file, cache]

        def pick_example(evt):
            return os.fspath(examples[evt.index])

        pick_example.__annotations__["evt"] = gr.SelectData  # Gradio passes the click by this annotation

        gallery.select(pick_example, None, upload, api_name=False)

        def live_edit(trigger, **kw):
            trigger(page_edit_image, edit_inputs, [edited, cache], api_name=False, **kw).success(
                run_edit_views, cache, [subbands, result_file, latent_file], api_name=False)

        for trigger in (upload.change, model.change):
            trigger(page_invert, [upload, model, cache], invert_outputs, api_name=False).success(
                page_edit_image, edit_inputs, [edited, cache], api_name=False).success(
                run_edit_views, cache, [subbands, result_file, latent_file], api_name=False)
        for s in sliders:
            live_edit(s.release, trigger_mode="always_last")
        live_edit(fuse.change)
        live_edit(reset.click(lambda: [0.0] * len(sliders), None, sliders, api_name=False).then)
        # The scriptable endpoints (gradio_client): same functions, visible names.
        api_invert = gr.Button(visible=False)
        api_invert.click(run_invert, [upload, model, cache], invert_outputs, api_name="invert")
        api_edit = gr.Button(visible=False)
        api_edit.click(run_edit, edit_inputs, edit_outputs, api_name="edit")
    return demo


def launch(demo, host: str = DEFAULT_HOST, port: Optional[int] = DEFAULT_PORT,
           example_dirs: Sequence[PathLike] = (EXAMPLES_DIR,), **kwargs):
    """Serve the page on ``host:port`` (local by default), never through a public share link.

    ``example_dirs``: the folders of the example images, which the page may serve; Gradio otherwise serves
    only files under the working directory and the temporary folder, so a server started elsewhere could
    not show the bundled examples."""
    demo.queue(default_concurrency_limit=1)  # one model call at a time: the CPU is the bottleneck
    return demo.launch(server_name=host, server_port=port, share=False, max_file_size=MAX_UPLOAD,
                       show_error=True, allowed_paths=[os.fspath(d) for d in example_dirs], **kwargs)


__all__ = ["AppEngine", "Inversion", "InversionCache", "Slider", "bundled_models", "example_images", "band_table",
           "build_app", "launch", "file_key", "DEFAULT_HOST", "DEFAULT_PORT"]
