"""Lazy build, cache and selection of the wagi.ops CUDA plugin (sources in ``ops/csrc``).

Nothing is compiled or imported from ``torch.utils.cpp_extension`` when ``wagi.ops`` is imported or
used on CPU tensors. The first call of an op on a CUDA tensor builds the plugin with ninja and nvcc
(one to two minutes), or loads it from the on-disk cache, and keeps it for the rest of the process.

Choosing the implementation: environment variable ``WAGI_OPS_IMPL``
  * ``auto`` (default): the CUDA plugin for CUDA tensors, the PyTorch reference for anything else. If the
    build fails, ONE warning names the cause and the reference is used for the rest of the process.
  * ``ref``: always the PyTorch reference (never builds anything). Use this to force the fallback.
  * ``cuda``: CUDA tensors must use the plugin; a failed build raises ``RuntimeError``.
CPU tensors always use the reference. ``active_impl(device)`` says which one runs, ``plugin_status()``
reports the build state without building.

Build location: ``$TORCH_EXTENSIONS_DIR/wagi_ops_<digest>`` (default root ``~/.cache/torch_extensions``),
where ``<digest>`` hashes the csrc sources, the torch, CUDA and Python versions, the target GPU
architectures (``TORCH_CUDA_ARCH_LIST`` or those of the visible GPUs) and the compiler flags. The sources
are copied into that folder, so ``ninja`` run there rebuilds with the full compiler log. A file
``BUILD_OK`` marks a finished build: later processes import the library directly (no ninja or nvcc
needed). Editing a source gives a new digest, hence a fresh build; old folders can be deleted freely.

Troubleshooting:
  * Build hangs: torch versions that lock with a plain ``lock`` file (FileBaton) wait forever on a lock
    left by an interrupted build. Before building, such a lock is removed with a warning when the process
    that started the build is gone (same host) or, if that is unknown, when the folder has been idle for
    ``STALE_LOCK_SECONDS``; or delete ``<build dir>/lock`` yourself (``plugin_status()["build_dir"]``).
    Newer torch holds an OS lock that dies with its process; its leftover ``lock`` file is harmless.
  * "ninja is required": ``pip install ninja`` (listed in requirements.txt).
  * "CUDA toolkit not found": install the CUDA toolkit that matches ``torch.version.cuda`` (nvcc; conda's
    runtime-only cudatoolkit is not enough) and set ``CUDA_HOME``.
  * Compiler errors (e.g. "unsupported GNU version"): the host compiler must be one that your nvcc
    supports; select it with ``CXX``/``CC``. Run ``ninja`` in the build folder to see the full log, or
    ``python -m wagi.ops.compile_check``.
  * Meanwhile ``WAGI_OPS_IMPL=ref`` gives the same results (up to float rounding), only slower.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional, Tuple, Union

import torch

IMPL_ENV = "WAGI_OPS_IMPL"
IMPLS = ("auto", "ref", "cuda")
CSRC_DIR = Path(__file__).resolve().parent / "csrc"
SOURCE_SUFFIXES = (".cpp", ".cu", ".h")  # what setup.py's package_data ships
BUILD_PREFIX = "wagi_ops_"
BUILD_OK = "BUILD_OK"        # written after a successful build + import
OWNER_FILE = "BUILD_OWNER"   # "<host> <pid>" of the process that started the last build
STALE_LOCK_SECONDS = 300.0   # longer than any compile step of these sources that writes nothing to the folder
LOCK_POLL_SECONDS = 1.0
ERROR_LINES = 6              # lines of the compiler output quoted in the fallback warning
MAX_LINE_CHARS = 300

# Exactness first: no --use_fast_math (it changes division/exp rounding and flushes denormals).
CXX_FLAGS = ["/O2"] if os.name == "nt" else ["-O3"]
CUDA_FLAGS = ["-O3"]

_lock = threading.Lock()
_state: Dict[str, object] = {"module": None, "error": None, "build_dir": None, "source": None, "warned": False}


def impl_setting() -> str:
    """The value of ``WAGI_OPS_IMPL`` (``auto`` when unset)."""
    value = os.environ.get(IMPL_ENV, "auto").strip().lower() or "auto"
    if value not in IMPLS:
        raise ValueError(f"{IMPL_ENV}={value!r} is not one of {', '.join(IMPLS)}")
    return value


def build_root() -> Path:
    """``$TORCH_EXTENSIONS_DIR``, else ``~/.cache/torch_extensions``."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "torch_extensions"


def source_files() -> List[Path]:
    return sorted(p for p in CSRC_DIR.iterdir() if p.suffix in SOURCE_SUFFIXES)


def _arch_key() -> str:
    env = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if env:
        return env
    if torch.cuda.is_available():
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{major}.{minor}" for major, minor in sorted(caps))
    return "default"


def build_digest(files: Optional[List[Path]] = None, arch: Optional[str] = None) -> str:
    """Hash of everything the compiled library depends on: sources, versions, target archs, flags."""
    h = hashlib.sha256()
    for path in files if files is not None else source_files():
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    config = [torch.__version__, str(torch.version.cuda), f"py{sys.version_info.major}{sys.version_info.minor}",
              arch if arch is not None else _arch_key(), " ".join(CXX_FLAGS), " ".join(CUDA_FLAGS)]
    h.update("\n".join(config).encode())
    return h.hexdigest()[:16]


def _library_path(build_dir: Path, name: str) -> Path:
    return build_dir / (name + (".pyd" if os.name == "nt" else ".so"))


def _import_library(build_dir: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, _library_path(build_dir, name))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {name} from {build_dir}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _owner_state(build_dir: Path) -> str:
    """``alive`` / ``dead``: the process that started the last build, if it ran on this host; else ``unknown``."""
    try:
        host, pid = (build_dir / OWNER_FILE).read_text().split()
        pid_value = int(pid)
    except (OSError, ValueError):
        return "unknown"
    if host != socket.gethostname():
        return "unknown"
    # This process is not building (builds are serialised in-process), so a lock it left is abandoned.
    return "alive" if pid_value != os.getpid() and _pid_alive(pid_value) else "dead"


def _newest_mtime(build_dir: Path) -> float:
    newest = 0.0
    for path in build_dir.iterdir():
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:
            pass
    return newest


def clear_stale_lock(build_dir: Path, stale_after: float = STALE_LOCK_SECONDS,
                     poll: float = LOCK_POLL_SECONDS) -> bool:
    """Wait while another process builds in ``build_dir``; remove its ``lock`` once it is abandoned.

    Abandoned: the process that started the build is dead (same host), or, when that is unknown (other
    host, no owner file), nothing in the folder changed for ``stale_after`` seconds. A live builder is
    waited for. Returns True when a lock was removed (with a warning).
    """
    lock = build_dir / "lock"
    while lock.exists():
        owner = _owner_state(build_dir)
        idle = time.time() - _newest_mtime(build_dir)
        if owner == "dead" or (owner == "unknown" and idle > stale_after):
            warnings.warn(f"wagi.ops: removing stale build lock {lock} (left by an interrupted build)",
                          RuntimeWarning, stacklevel=2)
            try:
                lock.unlink()
            except FileNotFoundError:
                pass
            return True
        time.sleep(poll)
    return False


def _torch_waits_on_lock_files() -> bool:
    """Older torch (FileBaton) blocks while a ``lock`` file exists; newer torch holds an OS lock instead."""
    from torch.utils import cpp_extension
    return hasattr(cpp_extension, "FileBaton")


def _copy_sources(build_dir: Path) -> List[Path]:
    copies = []
    for src in source_files():
        dst = build_dir / src.name
        data = src.read_bytes()
        if not dst.exists() or dst.read_bytes() != data:
            tmp = build_dir / f".{src.name}.{os.getpid()}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, dst)  # atomic: a concurrent build never sees half a file
        copies.append(dst)
    return copies


def _cuda_home() -> Optional[str]:
    from torch.utils import cpp_extension
    return cpp_extension.CUDA_HOME


def build(verbose: bool = False) -> Tuple[ModuleType, str, Path]:
    """Build (or load from the disk cache) the plugin. Returns ``(module, "built" | "cache", build_dir)``.

    Raises on any failure; callers decide between fallback and error.
    """
    digest = build_digest()
    name = BUILD_PREFIX + digest
    build_dir = build_root() / name
    build_dir.mkdir(parents=True, exist_ok=True)
    _state["build_dir"] = build_dir

    def cached() -> Optional[ModuleType]:
        if (build_dir / BUILD_OK).exists() and _library_path(build_dir, name).exists():
            try:
                return _import_library(build_dir, name)
            except ImportError:
                (build_dir / BUILD_OK).unlink(missing_ok=True)  # damaged library: rebuild it
        return None

    module = cached()
    if module is not None:
        return module, "cache", build_dir

    from torch.utils import cpp_extension
    if not cpp_extension.is_ninja_available():
        raise RuntimeError("ninja is required to build the CUDA ops: pip install ninja")
    if _cuda_home() is None:
        raise RuntimeError("CUDA toolkit not found (no nvcc): install it and set CUDA_HOME")
    if _torch_waits_on_lock_files():
        clear_stale_lock(build_dir)
        module = cached()  # another process may have finished the build while we waited
        if module is not None:
            return module, "cache", build_dir

    sources = [p for p in _copy_sources(build_dir) if p.suffix != ".h"]
    (build_dir / OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    module = cpp_extension.load(name=name, sources=[str(p) for p in sources], extra_cflags=CXX_FLAGS,
                                extra_cuda_cflags=CUDA_FLAGS, build_directory=str(build_dir), verbose=verbose)
    (build_dir / BUILD_OK).write_text(f"torch {torch.__version__} cuda {torch.version.cuda}\n")
    return module, "built", build_dir


def _summarize(error: BaseException) -> str:
    """First compiler error lines of a failed build (the start of the message for other failures)."""
    lines = []
    for line in str(error).splitlines():
        line = line.strip()
        if line.startswith("Error building extension"):
            line = line.split(":", 1)[0]  # the rest of that line is the full nvcc command
        if line:
            lines.append(line[:MAX_LINE_CHARS])
    errors = [ln for ln in lines if re.search(r"error", ln, re.IGNORECASE)]
    picked = (errors or lines)[:ERROR_LINES]
    return "\n    ".join(picked) if picked else type(error).__name__


def _load(mode: str) -> Optional[ModuleType]:
    """The plugin, building it on first use; ``None`` (after one warning) when it failed in auto mode."""
    module = _state["module"]
    if module is not None:  # fast path for every op call after the first
        return module  # type: ignore[return-value]
    with _lock:
        if _state["module"] is None and _state["error"] is None:
            try:
                module, source, _ = build()
                _state["module"], _state["source"] = module, source
            except Exception as error:  # any build or import failure falls back in auto mode
                _state["error"] = error
        if _state["module"] is not None:
            return _state["module"]  # type: ignore[return-value]
        error = _state["error"]
        build_dir = _state["build_dir"] or build_root()
        cause = _summarize(error)  # type: ignore[arg-type]
        if mode == "cuda":
            raise RuntimeError(f"wagi.ops: {IMPL_ENV}=cuda but the CUDA plugin is unavailable:\n    {cause}\n"
                               f"  build dir: {build_dir}\n  run ninja in {build_dir} to see the full log") from error
        if not _state["warned"]:
            _state["warned"] = True
            warnings.warn(f"wagi.ops: building the CUDA ops failed; using the slower PyTorch reference ops "
                          f"for the rest of this process.\n    {cause}\n  build dir: {build_dir}\n"
                          f"  run ninja in {build_dir} to see the full log; set {IMPL_ENV}=ref to silence "
                          f"this warning.", RuntimeWarning, stacklevel=3)
        return None


def plugin_for(x: torch.Tensor) -> Optional[ModuleType]:
    """The plugin module if the CUDA implementation should run for tensor ``x``, else ``None``."""
    if x.device.type != "cuda":
        return None
    mode = impl_setting()
    if mode == "ref":
        return None
    return _load(mode)


def active_impl(device: Union[str, torch.device] = "cuda") -> str:
    """``"cuda"`` or ``"ref"``: the implementation that runs for tensors on ``device``.

    For a CUDA device in ``auto``/``cuda`` mode this builds or loads the plugin (as the first op call would).
    """
    if torch.device(device).type != "cuda":
        return "ref"
    mode = impl_setting()
    if mode == "ref":
        return "ref"
    return "cuda" if _load(mode) is not None else "ref"


def plugin_status() -> Dict[str, object]:
    """Build state without building: impl setting, loaded, source ("built"/"cache"), build_dir, error."""
    error = _state["error"]
    return {
        "impl": impl_setting(),
        "loaded": _state["module"] is not None,
        "source": _state["source"],
        "build_dir": str(_state["build_dir"]) if _state["build_dir"] is not None else None,
        "error": _summarize(error) if error is not None else None,  # type: ignore[arg-type]
    }
