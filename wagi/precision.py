"""One precision switch for inference: ``--precision fp32|bf16|fp16`` of ``invert.py`` and ``edit.py``.

``fp32`` runs the model as it is, with no autocast context at all, so its results are bit-identical to a
call without the switch. ``bf16`` / ``fp16`` run the whole call (encoder, generator, fusion) under
``torch.autocast`` with that dtype: matrix multiplications and convolutions in reduced precision with fp32
accumulation, the custom ops (upfirdn2d, bias + leaky ReLU) in the dtype of their input (their CUDA kernels
take fp16 and bf16, the reference paths any dtype), weights and outputs stay fp32. Reduced precision is opt-in:
its accuracy against fp32 is measured per model (``docs/performance.md``) before any default uses it. On a CPU,
bf16 and fp16 run but are usually much slower than fp32.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager, Union

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def precision_context(device: Union[str, torch.device], precision: str = "fp32") -> ContextManager:
    """The context a model call runs in: nothing for ``fp32``, ``torch.autocast`` for ``bf16`` / ``fp16``."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=AUTOCAST_DTYPES[precision])
