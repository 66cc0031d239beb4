"""Fixed-shape inference replayed as one CUDA graph (the fast path's launch-overhead lever).

At the demo and benchmark shapes a generator forward is hundreds of small kernels; on an H100 their launches,
not the arithmetic, set much of the time (docs/performance.md). :class:`CudaGraphCall` records one call of a
function on static input buffers and replays the recorded kernels afterwards: each call copies its inputs into
the buffers, replays, and returns the graph's output tensors (overwritten by the next call: clone what you keep,
or pass ``clone=True``).

    from wagi.fastpath import CudaGraphCall
    run = CudaGraphCall(lambda w: g([w], input_is_latent=True, randomize_noise=False)[0], w_example)
    img = run(w)            # same shapes, dtypes and device as w_example

Rules (checked where cheap): CUDA tensors only; every call passes tensors of the recorded shapes and dtypes;
no autograd (the call runs under ``torch.no_grad``); the function must not synchronise with the host or change
its control flow with the inputs' values. Random numbers drawn inside (e.g. ``randomize_noise=True``) are new on
every replay (PyTorch's CUDA generator supports graph capture). The recorded call runs in ``precision`` whatever
autocast surrounds the construction (``'fp32'`` switches autocast off); an autocast entered inside ``fn`` is
recorded with it.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from wagi.precision import check_precision, precision_context

Outputs = Union[Tensor, Sequence[Tensor]]


class CudaGraphCall:
    """Record ``fn(*example_inputs)`` once as a CUDA graph; calling the object replays it on new inputs.

    Args:
        fn: the function of tensors to record (its outputs: a tensor or a tuple/list of tensors).
        example_inputs: CUDA tensors with the shapes and dtypes of every later call (copied into static buffers).
        warmup: eager calls on a side stream before recording (cuDNN / cuBLAS pick their algorithms there).
        precision: ``'fp32'`` (no autocast), ``'bf16'`` or ``'fp16'`` (the recorded call runs under autocast).
        clone: return copies of the outputs instead of the graph's own buffers.
    """

    def __init__(self, fn: Callable[..., Outputs], *example_inputs: Tensor, warmup: int = 3,
                 precision: str = "fp32", clone: bool = False):
        if not example_inputs:
            raise ValueError("CudaGraphCall needs at least one example input tensor")
        for i, x in enumerate(example_inputs):
            if not isinstance(x, Tensor) or x.device.type != "cuda":
                where = x.device if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"CudaGraphCall records CUDA work: input {i} is on {where}, not a CUDA tensor")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (cuDNN and cuBLAS choose their kernels there), got {warmup}")
        self.fn, self.precision, self.clone = fn, check_precision(precision), clone
        self.device = example_inputs[0].device
        self.static_inputs = [x.detach().clone() for x in example_inputs]
        with torch.cuda.device(self.device):
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self._call()
            torch.cuda.current_stream(self.device).wait_stream(side)
            torch.cuda.synchronize(self.device)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_outputs = self._call()

    def _call(self) -> Outputs:
        with torch.no_grad(), _precision(self.device, self.precision):
            return self.fn(*self.static_inputs)

    def __call__(self, *inputs: Tensor) -> Outputs:
        if len(inputs) != len(self.static_inputs):
            raise ValueError(f"recorded with {len(self.static_inputs)} inputs, called with {len(inputs)}")
        for i, (buf, x) in enumerate(zip(self.static_inputs, inputs)):
            if x.shape != buf.shape or x.dtype != buf.dtype:
                raise ValueError(f"input {i}: recorded {tuple(buf.shape)} {buf.dtype}, got {tuple(x.shape)} "
                                 f"{x.dtype}; record another CudaGraphCall for this shape")
            buf.copy_(x)
        self.graph.replay()
        if not self.clone:
            return self.static_outputs
        if isinstance(self.static_outputs, Tensor):
            return self.static_outputs.clone()
        return type(self.static_outputs)(t.clone() for t in self.static_outputs)


def graphed_or_eager(fn: Callable[..., Outputs], *example_inputs: Tensor, enabled: bool = True,
                     precision: str = "fp32", clone: bool = True) -> Callable[..., Outputs]:
    """A :class:`CudaGraphCall` of ``fn`` where the inputs are on CUDA and ``enabled``; else ``fn`` itself
    under the same ``precision`` (and no autograd), so callers need one code path for both devices."""
    if enabled and example_inputs and all(isinstance(x, Tensor) and x.is_cuda for x in example_inputs):
        return CudaGraphCall(fn, *example_inputs, precision=precision, clone=clone)
    check_precision(precision)

    def eager(*inputs: Tensor) -> Outputs:
        device: Optional[torch.device] = inputs[0].device if inputs else None
        with torch.no_grad(), _precision(device or torch.device("cpu"), precision):
            return fn(*inputs)

    return eager


def _precision(device: torch.device, precision: str):
    """``precision_context``, except that ``'fp32'`` also switches off an autocast the caller is in."""
    if precision == "fp32":
        return torch.autocast(torch.device(device).type, enabled=False)
    return precision_context(device, precision)
