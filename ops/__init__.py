"""Custom ops of WaGI (installed as ``wagi.ops``): upfirdn2d and fused bias + leaky ReLU.

Each op has a CUDA implementation, built lazily on first CUDA use (never at import) and cached on disk,
and a pure-PyTorch reference with identical semantics and first/second-order gradients, used for CPU
tensors, when the CUDA build fails (one warning), or when ``WAGI_OPS_IMPL=ref`` is set.

Public API:
  upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)) / upfirdn2d_ref(...)       (N, C, H, W) -> (N, C, H', W')
  fused_leaky_relu(x, bias=None, negative_slope=0.2, scale=2**0.5) / fused_leaky_relu_ref(...)
  FusedLeakyReLU(channel, bias=True, negative_slope=0.2, scale=2**0.5)
  active_impl(device) -> "cuda" | "ref";  plugin_status() -> dict
Build location, the ``WAGI_OPS_IMPL`` switch and troubleshooting: see ``wagi.ops._plugin``;
``python -m wagi.ops.compile_check`` compiles the CUDA sources (no GPU needed) and prints OK.
"""
from ._plugin import active_impl, plugin_status
from .bias_act import FusedLeakyReLU, fused_leaky_relu, fused_leaky_relu_ref
from .upfirdn2d import upfirdn2d, upfirdn2d_ref

__all__ = ["upfirdn2d", "upfirdn2d_ref", "FusedLeakyReLU", "fused_leaky_relu", "fused_leaky_relu_ref",
           "active_impl", "plugin_status"]
