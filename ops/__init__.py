"""Custom ops of WaGI (installed as ``wagi.ops``): upfirdn2d and fused bias + leaky ReLU.

Each op has a CUDA implementation, built lazily on first CUDA use, and a pure-PyTorch reference with
identical semantics and first/second-order gradients, used for CPU tensors, when the CUDA build fails,
or when ``WAGI_OPS_IMPL=ref`` is set.
"""
from .upfirdn2d import upfirdn2d, upfirdn2d_ref
from .bias_act import FusedLeakyReLU, fused_leaky_relu, fused_leaky_relu_ref

__all__ = ["upfirdn2d", "upfirdn2d_ref", "FusedLeakyReLU", "fused_leaky_relu", "fused_leaky_relu_ref"]
