// upfirdn2d: zero insertion by (upx, upy), pad/crop by (px0, px1, py0, py1), true convolution with a 2-D FIR
// kernel (kh, kw), decimation by (downx, downy). One output sample along an axis is
//
//   out[o] = sum_t  xup[o * down + t - p0] * kernel[k - 1 - t],   t = 0 .. k-1,
//
// where xup[j] = x[j / up] when j is a multiple of up (and inside the input), else 0. Only the taps with
// (o * down + t - p0) divisible by up touch a non-zero sample: about k / up taps per axis (polyphase form).
//
// Two kernels:
//  * tiled: compile-time up, down and kernel size (the cases StyleGAN2/SWAGAN use: 4x4 kernel with up 2,
//    down 2, or a plain blur). A block stages its input patch in shared memory; each thread computes an
//    RX x RY group of outputs from a register window, with all tap positions known at compile time. The
//    group origin is a multiple of `up`, so the polyphase phase of every output in the group depends only
//    on px0 mod up (a template parameter) and never diverges inside a warp. Reading the window row by row,
//    a blur thread loads 28 shared values for its 4 outputs instead of 64.
//  * generic: any up/down/pad/kernel, one output per thread, reading only the non-zero taps.
// Both accumulate in at::opmath_type (float for half/bfloat16, double for double).
#include "ops.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <limits>

namespace {

constexpr int kBlockThreads = 256;
constexpr int kTileThreadsX = 32;             // one warp along x: coalesced rows in and out
constexpr int kTileThreadsY = 8;
constexpr int kRowsPerThread = 4;             // outputs per thread along y, reusing the register window
constexpr size_t kMaxSharedBytes = 48 * 1024; // default dynamic shared memory limit per block
constexpr int64_t kMaxGridYZ = 65535;

struct Geometry {
  int64_t planes;  // N * C
  int in_h, in_w, out_h, out_w;
  int upx, upy, downx, downy;
  int px0, py0;
  int kh, kw;
};

__host__ __device__ __forceinline__ int pos_mod(int a, int b) {
  const int r = a % b;
  return r < 0 ? r + b : r;
}

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename scalar_t>
__global__ void upfirdn2d_generic_kernel(const scalar_t* __restrict__ x,
                                         const at::opmath_type<scalar_t>* __restrict__ k,
                                         scalar_t* __restrict__ y, const Geometry g, const int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t in_plane = static_cast<int64_t>(g.in_h) * g.in_w;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int ox = static_cast<int>(idx % g.out_w);
    const int64_t rest = idx / g.out_w;
    const int oy = static_cast<int>(rest % g.out_h);
    const int64_t plane = rest / g.out_h;
    // Position of tap 0 in the upsampled, padded signal; the first tap landing on an input sample.
    const int jx = ox * g.downx - g.px0;
    const int jy = oy * g.downy - g.py0;
    const int tx0 = pos_mod(-jx, g.upx);
    const int ty0 = pos_mod(-jy, g.upy);
    const scalar_t* xp = x + plane * in_plane;
    acc_t acc = 0;
    for (int ty = ty0; ty < g.kh; ty += g.upy) {
      const int iy = (jy + ty) / g.upy;  // exact: jy + ty is a multiple of upy
      if (iy < 0 || iy >= g.in_h) continue;
      const acc_t* krow = k + (g.kh - 1 - ty) * g.kw + (g.kw - 1);
      const scalar_t* xrow = xp + static_cast<int64_t>(iy) * g.in_w;
      for (int tx = tx0; tx < g.kw; tx += g.upx) {
        const int ix = (jx + tx) / g.upx;
        if (ix < 0 || ix >= g.in_w) continue;
        acc += static_cast<acc_t>(xrow[ix]) * krow[-tx];
      }
    }
    y[idx] = static_cast<scalar_t>(acc);
  }
}

// U, D: up/down factors (both axes); K: kernel size (K x K); PHX, PHY: px0 mod U, py0 mod U;
// RX, RY: outputs per thread (multiples of U).
template <typename scalar_t, int U, int D, int K, int PHX, int PHY, int RX, int RY>
__global__ void
upfirdn2d_tiled_kernel(const scalar_t* __restrict__ x, const at::opmath_type<scalar_t>* __restrict__ k,
                       scalar_t* __restrict__ y, const Geometry g, const int tile_w, const int tile_h) {
  using acc_t = at::opmath_type<scalar_t>;
  static_assert(RX % U == 0 && RY % U == 0, "an output group must start on a polyphase boundary");
  // Input step between neighbouring thread groups, and the register window each thread reads.
  constexpr int SX = RX * D / U;
  constexpr int SY = RY * D / U;
  constexpr int WX = ((RX - 1) * D + K - 1 - PHX) / U + 1;
  constexpr int WY = ((RY - 1) * D + K - 1 - PHY) / U + 1;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* tile = reinterpret_cast<acc_t*>(smem_raw);

  // Flipped kernel: kf[ty][tx] multiplies the sample at tap offset (ty, tx).
  acc_t kf[K][K];
#pragma unroll
  for (int i = 0; i < K; ++i) {
#pragma unroll
    for (int j = 0; j < K; ++j) kf[i][j] = k[(K - 1 - i) * K + (K - 1 - j)];
  }

  const int ox0 = blockIdx.x * blockDim.x * RX;
  const int oy0 = blockIdx.y * blockDim.y * RY;
  // Input sample under window column 0 of thread 0: o * D / U - (p0 - PH) / U, both divisions exact.
  const int ix0 = ox0 / U * D - (g.px0 - PHX) / U;
  const int iy0 = oy0 / U * D - (g.py0 - PHY) / U;
  const int64_t in_plane = static_cast<int64_t>(g.in_h) * g.in_w;
  const int64_t out_plane = static_cast<int64_t>(g.out_h) * g.out_w;
  const int rows = blockDim.z * tile_h;
  const int row_lane = threadIdx.y + blockDim.y * threadIdx.z;
  const int row_step = blockDim.y * blockDim.z;

  for (int64_t plane0 = static_cast<int64_t>(blockIdx.z) * blockDim.z; plane0 < g.planes;
       plane0 += static_cast<int64_t>(gridDim.z) * blockDim.z) {
    for (int r = row_lane; r < rows; r += row_step) {
      const int z = r / tile_h;
      const int iy = iy0 + (r - z * tile_h);
      const int64_t plane = plane0 + z;
      const bool row_ok = plane < g.planes && iy >= 0 && iy < g.in_h;
      const scalar_t* xrow = x + (row_ok ? plane * in_plane + static_cast<int64_t>(iy) * g.in_w : 0);
      acc_t* trow = tile + r * tile_w;
      for (int c = threadIdx.x; c < tile_w; c += blockDim.x) {
        const int ix = ix0 + c;
        trow[c] = (row_ok && ix >= 0 && ix < g.in_w) ? static_cast<acc_t>(xrow[ix]) : acc_t(0);
      }
    }
    __syncthreads();

    const int64_t plane = plane0 + threadIdx.z;
    if (plane < g.planes) {
      const acc_t* base = tile + (threadIdx.z * tile_h + threadIdx.y * SY) * tile_w + threadIdx.x * SX;
      acc_t acc[RY][RX];
#pragma unroll
      for (int b = 0; b < RY; ++b) {
#pragma unroll
        for (int a = 0; a < RX; ++a) acc[b][a] = 0;
      }
      // Stream the window row by row (few live registers); each row feeds the outputs whose vertical
      // tap ty = wy * U + PHY - b * D lies inside the kernel. Taps that would fall on zeros inserted by
      // upsampling are skipped at compile time.
#pragma unroll
      for (int wy = 0; wy < WY; ++wy) {
        acc_t row[WX];
#pragma unroll
        for (int wx = 0; wx < WX; ++wx) row[wx] = base[wy * tile_w + wx];
#pragma unroll
        for (int b = 0; b < RY; ++b) {
          const int ty = wy * U + PHY - b * D;
          if (ty < 0 || ty >= K) continue;
#pragma unroll
          for (int a = 0; a < RX; ++a) {
#pragma unroll
            for (int tx = 0; tx < K; ++tx) {
              if ((a * D + tx + U - PHX) % U != 0) continue;
              acc[b][a] += row[(a * D + tx - PHX) / U] * kf[ty][tx];
            }
          }
        }
      }
      const int oxb = ox0 + threadIdx.x * RX;
      const int oyb = oy0 + threadIdx.y * RY;
      scalar_t* yp = y + plane * out_plane;
#pragma unroll
      for (int b = 0; b < RY; ++b) {
#pragma unroll
        for (int a = 0; a < RX; ++a) {
          const int oy = oyb + b;
          const int ox = oxb + a;
          if (oy < g.out_h && ox < g.out_w) yp[oy * g.out_w + ox] = static_cast<scalar_t>(acc[b][a]);
        }
      }
    }
    __syncthreads();
  }
}

template <typename scalar_t, int U, int D, int K, int PHX, int PHY, int RX, int RY>
bool launch_tiled(const scalar_t* x, const at::opmath_type<scalar_t>* k, scalar_t* y, const Geometry& g,
                  cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int SX = RX * D / U;
  constexpr int SY = RY * D / U;
  constexpr int WX = ((RX - 1) * D + K - 1 - PHX) / U + 1;
  constexpr int WY = ((RY - 1) * D + K - 1 - PHY) / U + 1;
  const int64_t groups_x = ceil_div(g.out_w, RX);
  const int64_t groups_y = ceil_div(g.out_h, RY);
  // Small planes: narrower blocks, several planes per block, so that threads are not left idle.
  int bx = kTileThreadsX;
  while (bx > 1 && bx / 2 >= groups_x) bx /= 2;
  int by = kTileThreadsY;
  while (by > 1 && by / 2 >= groups_y) by /= 2;
  constexpr int64_t kMaxBlockZ = 64;  // CUDA's limit on blockDim.z
  const int bz = static_cast<int>(
      std::min<int64_t>(std::min<int64_t>(std::max(1, kBlockThreads / (bx * by)), kMaxBlockZ), g.planes));
  const int tile_w = (bx - 1) * SX + WX;
  const int tile_h = (by - 1) * SY + WY;
  const size_t smem = static_cast<size_t>(bz) * tile_w * tile_h * sizeof(acc_t);
  const int64_t grid_y = ceil_div(g.out_h, static_cast<int64_t>(by) * RY);
  if (smem > kMaxSharedBytes || grid_y > kMaxGridYZ) return false;
  const dim3 block(bx, by, bz);
  const dim3 grid(static_cast<unsigned>(ceil_div(g.out_w, static_cast<int64_t>(bx) * RX)),
                  static_cast<unsigned>(grid_y),
                  static_cast<unsigned>(std::min<int64_t>(ceil_div(g.planes, bz), kMaxGridYZ)));
  upfirdn2d_tiled_kernel<scalar_t, U, D, K, PHX, PHY, RX, RY>
      <<<grid, block, smem, stream>>>(x, k, y, g, tile_w, tile_h);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

// Instantiates the tiled kernel for the pad phase (px0 mod U, py0 mod U) of this call.
template <typename scalar_t, int U, int D, int K, int RX, int RY>
bool launch_tiled_phase(const scalar_t* x, const at::opmath_type<scalar_t>* k, scalar_t* y, const Geometry& g,
                        cudaStream_t stream) {
  static_assert(U == 1 || U == 2, "tiled kernels exist for up = 1 and up = 2");
  if constexpr (U == 1) {
    return launch_tiled<scalar_t, U, D, K, 0, 0, RX, RY>(x, k, y, g, stream);
  } else {
    const int phase = pos_mod(g.px0, U) * U + pos_mod(g.py0, U);
    switch (phase) {
      case 0: return launch_tiled<scalar_t, U, D, K, 0, 0, RX, RY>(x, k, y, g, stream);
      case 1: return launch_tiled<scalar_t, U, D, K, 0, 1, RX, RY>(x, k, y, g, stream);
      case 2: return launch_tiled<scalar_t, U, D, K, 1, 0, RX, RY>(x, k, y, g, stream);
      default: return launch_tiled<scalar_t, U, D, K, 1, 1, RX, RY>(x, k, y, g, stream);
    }
  }
}

template <typename scalar_t>
void launch_generic(const scalar_t* x, const at::opmath_type<scalar_t>* k, scalar_t* y, const Geometry& g,
                    cudaStream_t stream) {
  const int64_t total = g.planes * g.out_h * g.out_w;
  constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loop covers the rest
  const int64_t blocks = std::min(ceil_div(total, kBlockThreads), kMaxBlocks);
  upfirdn2d_generic_kernel<scalar_t><<<static_cast<unsigned>(blocks), kBlockThreads, 0, stream>>>(x, k, y, g, total);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& kernel, int64_t upx, int64_t upy,
                          int64_t downx, int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1) {
  TORCH_CHECK(x.is_cuda(), "upfirdn2d_cuda: x must be a CUDA tensor");
  TORCH_CHECK(x.dim() == 4, "upfirdn2d_cuda: x must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(kernel.dim() == 2, "upfirdn2d_cuda: kernel must be 2-D, got ", kernel.sizes());
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d_cuda: up/down must be >= 1");
  const int64_t in_h = x.size(2), in_w = x.size(3);
  const int64_t kh = kernel.size(0), kw = kernel.size(1);
  TORCH_CHECK(kh >= 1 && kw >= 1, "upfirdn2d_cuda: empty kernel");
  const int64_t out_h = (in_h * upy + py0 + py1 - kh) / downy + 1;
  const int64_t out_w = (in_w * upx + px0 + px1 - kw) / downx + 1;
  TORCH_CHECK(in_h * upy + py0 + py1 >= kh && in_w * upx + px0 + px1 >= kw,
              "upfirdn2d_cuda: padded input smaller than the kernel");
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  TORCH_CHECK(in_h * in_w < kIntMax && out_h * out_w < kIntMax && (in_h + kh) * upy < kIntMax &&
                  (in_w + kw) * upx < kIntMax && out_h * downy < kIntMax && out_w * downx < kIntMax,
              "upfirdn2d_cuda: plane too large for 32-bit indexing");

  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty({x.size(0), x.size(1), out_h, out_w}, xc.options());
  if (y.numel() == 0) return y;

  Geometry g;
  g.planes = x.size(0) * x.size(1);
  g.in_h = static_cast<int>(in_h);
  g.in_w = static_cast<int>(in_w);
  g.out_h = static_cast<int>(out_h);
  g.out_w = static_cast<int>(out_w);
  g.upx = static_cast<int>(upx);
  g.upy = static_cast<int>(upy);
  g.downx = static_cast<int>(downx);
  g.downy = static_cast<int>(downy);
  g.px0 = static_cast<int>(px0);
  g.py0 = static_cast<int>(py0);
  g.kh = static_cast<int>(kh);
  g.kw = static_cast<int>(kw);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, xc.scalar_type(),
                                  "upfirdn2d_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor kc = kernel.to(xc.device(), c10::CppTypeToScalarType<acc_t>::value).contiguous();
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const acc_t* kp = kc.data_ptr<acc_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const bool square = upx == upy && downx == downy && kh == kw;
    bool done = false;
    if (square && kh == 4) {
      if (upx == 2 && downx == 1) {
        done = launch_tiled_phase<scalar_t, 2, 1, 4, 2, kRowsPerThread>(xp, kp, yp, g, stream);
      } else if (upx == 1 && downx == 2) {
        done = launch_tiled_phase<scalar_t, 1, 2, 4, 1, kRowsPerThread>(xp, kp, yp, g, stream);
      } else if (upx == 1 && downx == 1) {
        done = launch_tiled_phase<scalar_t, 1, 1, 4, 1, kRowsPerThread>(xp, kp, yp, g, stream);
      }
    }
    if (!done) launch_generic<scalar_t>(xp, kp, yp, g, stream);
  });
  return y;
}
