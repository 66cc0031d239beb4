// Fused bias + leaky ReLU + gain, and its gradient.
//
//   forward:  out = scale * leaky_relu(x + bias[c], slope)        (c = index along dim 1)
//   backward: grad_x = (grad * scale) * (positive ? 1 : slope)
//
// "positive" is x + bias > 0, recovered from the saved output: out > 0 when scale > 0, out < 0 when
// scale < 0 (requires slope >= 0; the Python wrapper routes other slopes to the reference). With
// scale == 0 the gradient is zero either way. The operation order matches the PyTorch reference
// (add, leaky_relu, multiply), so fp32 results agree to rounding.
//
// Layouts: contiguous (channel = (i / inner) % C, inner = prod(shape[2:])) and channels_last / channels_last_3d
// (channel = i % C); anything else is made contiguous first. Elements are processed in 16-byte packs when
// the pointers are aligned and the channel pattern inside a pack is simple (one channel, or consecutive ones).
#include "ops.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops cover the rest
constexpr int kPackBytes = 16;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// How the bias index varies inside one pack of VEC elements.
enum class BiasMode { kNone, kConstant, kConsecutive };

template <typename scalar_t, int VEC, BiasMode MODE>
__global__ void bias_act_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ bias,
                                        scalar_t* __restrict__ out, const int64_t n_packs, const int64_t inner,
                                        const int64_t channels, const at::opmath_type<scalar_t> slope,
                                        const at::opmath_type<scalar_t> scale) {
  using acc_t = at::opmath_type<scalar_t>;
  using pack_t = Pack<scalar_t, VEC>;
  const pack_t* xp = reinterpret_cast<const pack_t*>(x);
  pack_t* op = reinterpret_cast<pack_t*>(out);
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < n_packs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const pack_t in = xp[p];
    int64_t c0 = 0;
    if (MODE != BiasMode::kNone) c0 = (p * VEC / inner) % channels;
    pack_t res;
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      acc_t v = static_cast<acc_t>(in.v[i]);
      if (MODE == BiasMode::kConstant) v += static_cast<acc_t>(bias[c0]);
      if (MODE == BiasMode::kConsecutive) v += static_cast<acc_t>(bias[c0 + i]);
      res.v[i] = static_cast<scalar_t>((v > acc_t(0) ? v : v * slope) * scale);
    }
    op[p] = res;
  }
}

template <typename scalar_t, int VEC>
__global__ void bias_act_grad_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ out,
                                     scalar_t* __restrict__ grad_x, const int64_t n_packs,
                                     const at::opmath_type<scalar_t> slope, const at::opmath_type<scalar_t> scale,
                                     const bool scale_negative) {
  using acc_t = at::opmath_type<scalar_t>;
  using pack_t = Pack<scalar_t, VEC>;
  const pack_t* gp = reinterpret_cast<const pack_t*>(grad);
  const pack_t* yp = reinterpret_cast<const pack_t*>(out);
  pack_t* dp = reinterpret_cast<pack_t*>(grad_x);
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < n_packs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const pack_t g = gp[p];
    const pack_t y = yp[p];
    pack_t res;
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const acc_t yv = static_cast<acc_t>(y.v[i]);
      const bool positive = scale_negative ? yv < acc_t(0) : yv > acc_t(0);
      const acc_t gs = static_cast<acc_t>(g.v[i]) * scale;
      res.v[i] = static_cast<scalar_t>(positive ? gs : gs * slope);
    }
    dp[p] = res;
  }
}

bool aligned(const void* ptr) { return reinterpret_cast<std::uintptr_t>(ptr) % kPackBytes == 0; }

int64_t grid_for(int64_t n) { return std::max<int64_t>(1, std::min((n + kThreads - 1) / kThreads, kMaxBlocks)); }

template <typename scalar_t, int VEC, BiasMode MODE>
void launch_forward(const at::Tensor& x, const scalar_t* bias, at::Tensor& out, int64_t inner, int64_t channels,
                    double slope, double scale, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n_packs = x.numel() / VEC;
  bias_act_forward_kernel<scalar_t, VEC, MODE><<<static_cast<unsigned>(grid_for(n_packs)), kThreads, 0, stream>>>(
      x.data_ptr<scalar_t>(), bias, out.data_ptr<scalar_t>(), n_packs, inner, channels, static_cast<acc_t>(slope),
      static_cast<acc_t>(scale));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int VEC>
void launch_grad(const at::Tensor& grad, const at::Tensor& out, at::Tensor& grad_x, double slope, double scale,
                 cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n_packs = grad.numel() / VEC;
  bias_act_grad_kernel<scalar_t, VEC><<<static_cast<unsigned>(grid_for(n_packs)), kThreads, 0, stream>>>(
      grad.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>(), n_packs,
      static_cast<acc_t>(slope), static_cast<acc_t>(scale), scale < 0);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Dense layout in which both tensors are laid out identically, element for element.
at::MemoryFormat dense_format(const at::Tensor& t) {
  if (t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return at::MemoryFormat::ChannelsLast;
  }
  if (t.dim() == 5 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast3d)) {
    return at::MemoryFormat::ChannelsLast3d;
  }
  return at::MemoryFormat::Contiguous;
}

}  // namespace

at::Tensor bias_act_cuda(const at::Tensor& x, const std::optional<at::Tensor>& bias, double negative_slope,
                         double scale) {
  TORCH_CHECK(x.is_cuda(), "bias_act_cuda: x must be a CUDA tensor");
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) {
    TORCH_CHECK(x.dim() >= 2 && bias->dim() == 1 && bias->size(0) == x.size(1),
                "bias_act_cuda: bias must have shape (x.shape[1],), got ", bias->sizes(), " for x ", x.sizes());
  }
  const c10::cuda::CUDAGuard guard(x.device());
  const at::MemoryFormat fmt = dense_format(x);
  const at::Tensor xc = x.contiguous(fmt);
  at::Tensor out = at::empty_like(xc, xc.options(), fmt);
  if (out.numel() == 0) return out;
  at::Tensor b;
  if (has_bias) b = bias->to(xc.device(), xc.scalar_type()).contiguous();
  const int64_t channels = x.dim() >= 2 ? x.size(1) : 1;
  int64_t inner = 1;
  if (fmt == at::MemoryFormat::Contiguous) {
    for (int64_t d = 2; d < x.dim(); ++d) inner *= x.size(d);
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, xc.scalar_type(),
                                  "bias_act_cuda", [&] {
    constexpr int kVec = kPackBytes / sizeof(scalar_t);
    const bool aligned_packs = xc.numel() % kVec == 0 && aligned(xc.data_ptr()) && aligned(out.data_ptr());
    const scalar_t* bp = has_bias ? b.data_ptr<scalar_t>() : nullptr;
    if (!has_bias) {
      if (aligned_packs) {
        launch_forward<scalar_t, kVec, BiasMode::kNone>(xc, bp, out, inner, channels, negative_slope, scale, stream);
      } else {
        launch_forward<scalar_t, 1, BiasMode::kNone>(xc, bp, out, inner, channels, negative_slope, scale, stream);
      }
    } else if (aligned_packs && inner % kVec == 0) {
      // Spatial size a multiple of the pack: every pack lies inside one channel.
      launch_forward<scalar_t, kVec, BiasMode::kConstant>(xc, bp, out, inner, channels, negative_slope, scale,
                                                          stream);
    } else if (aligned_packs && inner == 1 && channels % kVec == 0) {
      // Channel innermost ((N, C) or channels_last): a pack covers kVec consecutive channels.
      launch_forward<scalar_t, kVec, BiasMode::kConsecutive>(xc, bp, out, inner, channels, negative_slope, scale,
                                                             stream);
    } else {
      launch_forward<scalar_t, 1, BiasMode::kConstant>(xc, bp, out, inner, channels, negative_slope, scale, stream);
    }
  });
  return out;
}

at::Tensor bias_act_grad_cuda(const at::Tensor& grad, const at::Tensor& out, double negative_slope, double scale) {
  TORCH_CHECK(grad.is_cuda() && out.is_cuda(), "bias_act_grad_cuda: tensors must be on CUDA");
  TORCH_CHECK(grad.sizes() == out.sizes(), "bias_act_grad_cuda: grad ", grad.sizes(), " vs output ", out.sizes());
  TORCH_CHECK(grad.scalar_type() == out.scalar_type(), "bias_act_grad_cuda: grad and output dtypes differ");
  const c10::cuda::CUDAGuard guard(out.device());
  const at::MemoryFormat fmt = dense_format(out);
  const at::Tensor yc = out.contiguous(fmt);
  const at::Tensor gc = grad.contiguous(fmt);
  at::Tensor grad_x = at::empty_like(yc, yc.options(), fmt);
  if (grad_x.numel() == 0) return grad_x;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, yc.scalar_type(),
                                  "bias_act_grad_cuda", [&] {
    constexpr int kVec = kPackBytes / sizeof(scalar_t);
    const bool packable = yc.numel() % kVec == 0 && aligned(yc.data_ptr()) && aligned(gc.data_ptr()) &&
                          aligned(grad_x.data_ptr());
    if (packable) {
      launch_grad<scalar_t, kVec>(gc, yc, grad_x, negative_slope, scale, stream);
    } else {
      launch_grad<scalar_t, 1>(gc, yc, grad_x, negative_slope, scale, stream);
    }
  });
  return grad_x;
}
