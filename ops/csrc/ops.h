// Entry points of the wagi.ops CUDA plugin (bound to Python in ops.cpp).
//
// upfirdn2d_cuda:   x (N, C, H, W) -> (N, C, (H*upy + py0 + py1 - kh) / downy + 1,
//                                           (W*upx + px0 + px1 - kw) / downx + 1):
//                   zero insertion, pad (negative = crop), true convolution with kernel (kh, kw), decimation.
// bias_act_cuda:    scale * leaky_relu(x + bias, negative_slope), bias (C,) along dim 1, any rank, same shape out.
// bias_act_grad_cuda: grad * scale * (positive ? 1 : negative_slope), the sign read from the forward output.
#pragma once

#include <optional>

#include <ATen/ATen.h>

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& kernel, int64_t upx, int64_t upy,
                          int64_t downx, int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1);

at::Tensor bias_act_cuda(const at::Tensor& x, const std::optional<at::Tensor>& bias, double negative_slope,
                         double scale);

at::Tensor bias_act_grad_cuda(const at::Tensor& grad, const at::Tensor& out, double negative_slope, double scale);
