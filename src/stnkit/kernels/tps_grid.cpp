// Thin-plate-spline grid kernels of the stnkit_warp extension (bound in warp.cpp), used by transforms/tps.py
// and tested in tests/transforms/test_fast_paths.py.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

// ------------------------------------------------------------------------------------------------------------
// Thin-plate-spline grid: grid[n, p, :] = base[p, :] + sum_k M[p, k] * offsets[n, k, :], with M^T (K, P) given.
// Each sample's rows are accumulated in a fixed order (k ascending), so a sample's grid does not depend on the
// batch it is computed in (a batched GEMM picks kernels by batch size; data generation needs row invariance).
// Work is split over chunks of output points so that a chunk of M^T stays in cache for the whole batch.
constexpr int64_t TPS_CHUNK = 512;

template <typename T>
void tps_forward_kernel(const T* off, const T* mt, const T* base, T* out, int64_t N, int64_t K, int64_t P) {
  const int64_t chunks = (P + TPS_CHUNK - 1) / TPS_CHUNK;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<T> gx(TPS_CHUNK), gy(TPS_CHUNK);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t p0 = c * TPS_CHUNK, np = std::min(TPS_CHUNK, P - p0);
      for (int64_t n = 0; n < N; ++n) {
        const T* o = off + n * K * 2;
        T* dst = out + (n * P + p0) * 2;
        for (int64_t j = 0; j < np; ++j) {
          gx[j] = base[(p0 + j) * 2];
          gy[j] = base[(p0 + j) * 2 + 1];
        }
        T* x = gx.data();
        T* y = gy.data();
        for (int64_t k = 0; k < K; ++k) {  // fixed order: k ascending
          const T ox = o[2 * k], oy = o[2 * k + 1];
          const T* row = mt + k * P + p0;
#pragma omp simd
          for (int64_t j = 0; j < np; ++j) {
            x[j] += row[j] * ox;
            y[j] += row[j] * oy;
          }
        }
        for (int64_t j = 0; j < np; ++j) {
          dst[2 * j] = gx[j];
          dst[2 * j + 1] = gy[j];
        }
      }
    }
  });
}

template <typename T>
void tps_backward_kernel(const T* grad, const T* mt, T* grad_off, int64_t N, int64_t K, int64_t P) {
  const int64_t chunks = (P + TPS_CHUNK - 1) / TPS_CHUNK;
  std::vector<T> partial(chunks * N * K * 2);  // per-chunk sums, reduced in chunk order (deterministic)
  constexpr int KB = 4;  // control points per pass: one load of the gradient feeds 2 * KB multiply-adds
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<T> gx(TPS_CHUNK), gy(TPS_CHUNK);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t p0 = c * TPS_CHUNK, np = std::min(TPS_CHUNK, P - p0);
      for (int64_t n = 0; n < N; ++n) {
        const T* g = grad + (n * P + p0) * 2;
        for (int64_t j = 0; j < np; ++j) {
          gx[j] = g[2 * j];
          gy[j] = g[2 * j + 1];
        }
        T* part = partial.data() + (c * N + n) * K * 2;
        const T* x = gx.data();
        const T* y = gy.data();
        int64_t k = 0;
        for (; k + KB <= K; k += KB) {
          const T* r0 = mt + k * P + p0;
          const T* r1 = r0 + P;
          const T* r2 = r1 + P;
          const T* r3 = r2 + P;
          T sx0 = 0, sy0 = 0, sx1 = 0, sy1 = 0, sx2 = 0, sy2 = 0, sx3 = 0, sy3 = 0;
#pragma omp simd reduction(+ : sx0, sy0, sx1, sy1, sx2, sy2, sx3, sy3)
          for (int64_t j = 0; j < np; ++j) {
            sx0 += r0[j] * x[j]; sy0 += r0[j] * y[j];
            sx1 += r1[j] * x[j]; sy1 += r1[j] * y[j];
            sx2 += r2[j] * x[j]; sy2 += r2[j] * y[j];
            sx3 += r3[j] * x[j]; sy3 += r3[j] * y[j];
          }
          part[2 * k] = sx0; part[2 * k + 1] = sy0;
          part[2 * k + 2] = sx1; part[2 * k + 3] = sy1;
          part[2 * k + 4] = sx2; part[2 * k + 5] = sy2;
          part[2 * k + 6] = sx3; part[2 * k + 7] = sy3;
        }
        for (; k < K; ++k) {
          const T* row = mt + k * P + p0;
          T sx = 0, sy = 0;
#pragma omp simd reduction(+ : sx, sy)
          for (int64_t j = 0; j < np; ++j) {
            sx += row[j] * x[j];
            sy += row[j] * y[j];
          }
          part[2 * k] = sx;
          part[2 * k + 1] = sy;
        }
      }
    }
  });
  for (int64_t i = 0; i < N * K * 2; ++i) {
    double acc = 0;
    for (int64_t c = 0; c < chunks; ++c) acc += double(partial[c * N * K * 2 + i]);
    grad_off[i] = T(acc);
  }
}

}  // namespace

torch::Tensor tps_grid_forward(torch::Tensor offsets, torch::Tensor mt, torch::Tensor base) {
  TORCH_CHECK(offsets.device().is_cpu() && offsets.dim() == 3 && offsets.size(2) == 2, "offsets must be (N, K, 2)");
  TORCH_CHECK(mt.dim() == 2 && mt.size(0) == offsets.size(1), "M^T must be (K, P)");
  TORCH_CHECK(base.numel() == mt.size(1) * 2, "base must have P * 2 values");
  TORCH_CHECK(offsets.scalar_type() == mt.scalar_type() && mt.scalar_type() == base.scalar_type(), "dtype mismatch");
  offsets = offsets.contiguous();
  mt = mt.contiguous();
  base = base.contiguous();
  const auto N = offsets.size(0), K = offsets.size(1), P = mt.size(1);
  auto out = torch::empty({N, P, 2}, offsets.options());
  AT_DISPATCH_FLOATING_TYPES(offsets.scalar_type(), "stnkit_tps_forward", [&] {
    tps_forward_kernel<scalar_t>(offsets.data_ptr<scalar_t>(), mt.data_ptr<scalar_t>(), base.data_ptr<scalar_t>(),
                                 out.data_ptr<scalar_t>(), N, K, P);
  });
  return out;
}

torch::Tensor tps_grid_backward(torch::Tensor grad, torch::Tensor mt) {
  TORCH_CHECK(grad.device().is_cpu() && grad.dim() == 3 && grad.size(2) == 2, "grad must be (N, P, 2)");
  TORCH_CHECK(mt.dim() == 2 && mt.size(1) == grad.size(1), "M^T must be (K, P)");
  grad = grad.contiguous();
  mt = mt.contiguous();
  const auto N = grad.size(0), P = grad.size(1), K = mt.size(0);
  auto grad_off = torch::empty({N, K, 2}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "stnkit_tps_backward", [&] {
    tps_backward_kernel<scalar_t>(grad.data_ptr<scalar_t>(), mt.data_ptr<scalar_t>(), grad_off.data_ptr<scalar_t>(),
                                  N, K, P);
  });
  return grad_off;
}

