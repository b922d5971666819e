// Fused grid generator + bilinear sampler for 2-D inputs (Jaderberg et al. 2015, eq. 1, 3, 5-7).
//
// The source coordinates of each output pixel are computed on the fly from the (N, 3, 3) output->source matrix
// (affine: last row (0, 0, 1); projective: divided by w), so no (N, H_out, W_out, 2) grid is written, read or
// differentiated; the backward pass recomputes the coordinates and reduces the coordinate gradient straight into
// the (N, 3, 3) matrix gradient. Values follow F.grid_sample (bilinear, zeros/border padding, both align_corners)
// and are tested against it in tests/test_kernels.py. The TPS grid kernels (tps_grid.cpp) are bound here
// too; stnkit/kernels/ops.py registers both as torch.library custom ops.
//
// Layout for speed: each output row is processed in blocks of BLK points. Phase A computes the four clamped tap
// offsets, weights and validities of every point of a block (branch-free, SIMD-friendly); phase B
// gathers/blends per channel (vectorised with gathers when built with AVX2). An out-of-range tap gets
// a clamped in-range offset and reads as 0 (a select), so the result equals zeros padding. The input-gradient
// scatter is the only scalar loop (taps of neighbouring points may collide).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int BLK = 64;

template <typename T>
inline T floor_(T v) {
#if defined(__SSE4_1__) || !defined(__x86_64__)
  return std::floor(v);
#else
  return T(int32_t(v + T(4)) - 4);  // v >= -2 here: truncation of a positive number (no libm call without SSE4.1)
#endif
}

// base coordinate of output index i along an axis of n pixels (as stnkit.grid.base_coords, computed in double)
template <typename T>
std::vector<T> base_coords(int64_t n, bool align_corners) {
  std::vector<T> out(n);
  for (int64_t i = 0; i < n; ++i) {
    double c = 0.0;
    if (n > 1) c = align_corners ? double(i) * (2.0 / double(n - 1)) - 1.0 : (2.0 * double(i) + 1.0) / double(n) - 1.0;
    out[i] = T(c);
  }
  return out;
}

template <typename T>
struct Setup {
  std::vector<T> xb, yb;  // output base coordinates (W_out,), (H_out,)
  T sx, tx, sy, ty;       // normalised -> pixel: ix = sx * xs + tx (F.grid_sample's unnormalize)
  T eps;
  Setup(int64_t H, int64_t W, int64_t Ho, int64_t Wo, bool ac, double e)
      : xb(base_coords<T>(Wo, ac)), yb(base_coords<T>(Ho, ac)), eps(T(e)) {
    sx = ac ? T(0.5) * T(W - 1) : T(0.5) * T(W);
    tx = ac ? T(0.5) * T(W - 1) : T(0.5) * T(W) - T(0.5);
    sy = ac ? T(0.5) * T(H - 1) : T(0.5) * T(H);
    ty = ac ? T(0.5) * T(H - 1) : T(0.5) * T(H) - T(0.5);
  }
};

// Per-block tap table (structure of arrays).
template <typename T>
struct Taps {
  int32_t o00[BLK], o01[BLK], o10[BLK], o11[BLK];  // flat offsets into one input plane, clamped in range
  T ax0[BLK], ax1[BLK], ay0[BLK], ay1[BLK];          // x / y tap weights (NaN for a non-finite coordinate)
  T vx0[BLK], vx1[BLK], vy0[BLK], vy1[BLK];          // 1 / 0 validity of each tap column / row
  T mx[BLK], my[BLK];                                // d ix / d xs, d iy / d ys (0 where border clips)
  T xs[BLK], ys[BLK], den[BLK];                      // source point and perspective denominator (backward)
};

// Phase A: taps of output points (w0 .. w0+n) of row h.
//
// Non-finite values follow F.grid_sample: a tap outside the input is never read (its value is 0, selected, so an
// Inf pixel there cannot turn 0 * Inf into NaN); a NaN coordinate (or an infinite one with zeros padding) has
// every tap outside and NaN weights, so the output and the coordinate gradient are NaN and the input gradient
// gets nothing. Border padding clips an infinite coordinate to the border, and NaN to 0 (as torch's forward).
template <typename T, bool projective, bool border>
inline void make_taps(const Setup<T>& s, const T* m, T yt, int64_t w0, int n, int64_t H, int64_t W, Taps<T>& t) {
  const T* xb = s.xb.data() + w0;
  const T Wm1 = T(W - 1), Hm1 = T(H - 1), hiX = T(W + 1), hiY = T(H + 1);
  const int32_t iW = int32_t(W), iWm1 = int32_t(W - 1), iHm1 = int32_t(H - 1);
#pragma omp simd
  for (int j = 0; j < n; ++j) {  // branch-free (selects, min/max) so that it vectorises
    const T xt = xb[j];
    T u = m[0] * xt + m[1] * yt + m[2];
    T v = m[3] * xt + m[4] * yt + m[5];
    T d = T(1);
    if constexpr (projective) {
      const T ww = m[6] * xt + m[7] * yt + m[8];
      const T aw = std::max(std::abs(ww), s.eps);  // |w| clamped, sign kept (transforms/projective.py)
      d = ww < T(0) ? -aw : aw;
      u = u / d;
      v = v / d;
    }
    t.xs[j] = u;
    t.ys[j] = v;
    t.den[j] = d;
    T ix = s.sx * u + s.tx, iy = s.sy * v + s.ty;
    T gx = s.sx, gy = s.sy;
    T bad = T(0) * ix + T(0) * iy;  // NaN iff a coordinate is NaN or infinite, else 0
    if constexpr (border) {  // clip to the border pixel centres; a clipped coordinate (or one on them) has no
      // gradient (torch's clip_coordinates_set_grad), a NaN one a NaN gradient
      gx = (ix != ix ? ix : T((ix > T(0)) & (ix < Wm1))) * gx;
      gy = (iy != iy ? iy : T((iy > T(0)) & (iy < Hm1))) * gy;
      ix = std::min(std::max(T(0), ix), Wm1);
      iy = std::min(std::max(T(0), iy), Hm1);
      bad = T(0);
    }
    t.mx[j] = gx;
    t.my[j] = gy;
    ix = std::min(std::max(T(-2), ix), hiX);  // far outside (and NaN) -> every tap out of range
    iy = std::min(std::max(T(-2), iy), hiY);
    const T fx0 = floor_(ix), fy0 = floor_(iy);
    const T fx = ix - fx0 + bad, fy = iy - fy0 + bad;
    const int32_t x0 = int32_t(fx0), y0 = int32_t(fy0), x1 = x0 + 1, y1 = y0 + 1;
    const T vx0 = T((x0 >= 0) & (x0 <= iWm1)), vx1 = T((x1 >= 0) & (x1 <= iWm1));
    const T vy0 = T((y0 >= 0) & (y0 <= iHm1)), vy1 = T((y1 >= 0) & (y1 <= iHm1));
    const int32_t cx0 = std::min(std::max(x0, 0), iWm1), cx1 = std::min(std::max(x1, 0), iWm1);
    const int32_t cy0 = std::min(std::max(y0, 0), iHm1), cy1 = std::min(std::max(y1, 0), iHm1);
    t.o00[j] = cy0 * iW + cx0;
    t.o01[j] = cy0 * iW + cx1;
    t.o10[j] = cy1 * iW + cx0;
    t.o11[j] = cy1 * iW + cx1;
    t.ax0[j] = T(1) - fx;
    t.ax1[j] = fx;
    t.ay0[j] = T(1) - fy;
    t.ay1[j] = fy;
    t.vx0[j] = vx0;
    t.vx1[j] = vx1;
    t.vy0[j] = vy0;
    t.vy1[j] = vy1;
  }
}

// The four tap values of point j of a block; a tap outside the input reads 0 (selected, never multiplied).
template <typename T>
inline void tap_values(const Taps<T>& t, const T* p, int j, T& p00, T& p01, T& p10, T& p11) {
  p00 = (t.vx0[j] * t.vy0[j] != T(0)) ? p[t.o00[j]] : T(0);
  p01 = (t.vx1[j] * t.vy0[j] != T(0)) ? p[t.o01[j]] : T(0);
  p10 = (t.vx0[j] * t.vy1[j] != T(0)) ? p[t.o10[j]] : T(0);
  p11 = (t.vx1[j] * t.vy1[j] != T(0)) ? p[t.o11[j]] : T(0);
}

// d out / d (u, v[, w]) of one channel at the points of a block, from its four taps (eq. 7 and the quotient rule
// of the perspective division); K = 2 (affine: u = xs, v = ys) or 3 (projective).
template <typename T, bool projective>
inline void tap_derivs(const Taps<T>& t, const T* p, int nb, T eps, T* du, T* dv, T* dw) {
#pragma omp simd
  for (int j = 0; j < nb; ++j) {
    T p00, p01, p10, p11;
    tap_values(t, p, j, p00, p01, p10, p11);
    const T dx = t.ay0[j] * (p01 - p00) + t.ay1[j] * (p11 - p10);
    const T dy = t.ax0[j] * (p10 - p00) + t.ax1[j] * (p11 - p01);
    const T gx = dx * t.mx[j], gy = dy * t.my[j];  // d out / d (xs, ys)
    if constexpr (projective) {  // xs = u / w, ys = v / w; a clamped |w| passes no gradient (as clamp_min)
      const T d = t.den[j];
      dw[j] = -T(std::abs(d) > eps) * (gx * t.xs[j] + gy * t.ys[j]) / d;
      du[j] = gx / d;
      dv[j] = gy / d;
    } else {
      du[j] = gx;
      dv[j] = gy;
    }
  }
}

// Output (and, with deriv, d out / d (u, v[, w]) per channel, shape (N, C, K, H_out, W_out), for the backward).
template <typename T, bool projective, bool border>
void forward_kernel(const T* in, const T* mat, T* out, T* deriv, int64_t N, int64_t C, int64_t H, int64_t W,
                    int64_t Ho, int64_t Wo, bool ac, double eps) {
  const Setup<T> s(H, W, Ho, Wo, ac, eps);
  const int64_t plane_in = H * W, plane_out = Ho * Wo;
  constexpr int K = projective ? 3 : 2;
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    Taps<T> t;
    for (int64_t n = n0; n < n1; ++n) {
      const T* m = mat + 9 * n;
      for (int64_t h = 0; h < Ho; ++h) {
        for (int64_t w0 = 0; w0 < Wo; w0 += BLK) {
          const int nb = int(std::min<int64_t>(BLK, Wo - w0));
          make_taps<T, projective, border>(s, m, s.yb[h], w0, nb, H, W, t);
          for (int64_t c = 0; c < C; ++c) {
            const T* p = in + (n * C + c) * plane_in;
            T* q = out + (n * C + c) * plane_out + h * Wo + w0;
#pragma omp simd
            for (int j = 0; j < nb; ++j) {  // eq. 5, taps outside the input read as 0
              T p00, p01, p10, p11;
              tap_values(t, p, j, p00, p01, p10, p11);
              q[j] = t.ay0[j] * (t.ax0[j] * p00 + t.ax1[j] * p01) + t.ay1[j] * (t.ax0[j] * p10 + t.ax1[j] * p11);
            }
            if (deriv) {
              T* d = deriv + (n * C + c) * K * plane_out + h * Wo + w0;
              tap_derivs<T, projective>(t, p, nb, s.eps, d, d + plane_out, projective ? d + 2 * plane_out : nullptr);
            }
          }
        }
      }
    }
  });
}

// Gradients to the input (scatter, eq. 6) and to the (N, 3, 3) matrix. With deriv (saved by the forward pass)
// the matrix gradient is a streaming reduction; without it the taps are recomputed and gathered again.
template <typename T, bool projective, bool border>
void backward_kernel(const T* grad_out, const T* in, const T* mat, const T* deriv, T* grad_in, T* grad_mat,
                     int64_t N, int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo, bool ac, double eps) {
  const Setup<T> s(H, W, Ho, Wo, ac, eps);
  const int64_t plane_in = H * W, plane_out = Ho * Wo;
  constexpr int K = projective ? 3 : 2;
  const bool need_taps = grad_in || (grad_mat && !deriv);
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    Taps<T> t;
    T gk[3][BLK], dk[3][BLK], sc[4][BLK];
    for (int64_t n = n0; n < n1; ++n) {
      const T* m = mat + 9 * n;
      double acc[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};  // d loss / d matrix entries of this sample
      for (int64_t h = 0; h < Ho; ++h) {
        const T yt = s.yb[h];
        T s0[3] = {0, 0, 0}, s1[3] = {0, 0, 0};  // per row: sums of g_k and of g_k * x_t, k = u, v, w
        for (int64_t w0 = 0; w0 < Wo; w0 += BLK) {
          const int nb = int(std::min<int64_t>(BLK, Wo - w0));
          if (need_taps) make_taps<T, projective, border>(s, m, yt, w0, nb, H, W, t);
          if (grad_mat) {
            for (int k = 0; k < K; ++k)
              for (int j = 0; j < nb; ++j) gk[k][j] = T(0);
            for (int64_t c = 0; c < C; ++c) {
              const T* g = grad_out + (n * C + c) * plane_out + h * Wo + w0;
              const T* d = deriv ? deriv + (n * C + c) * K * plane_out + h * Wo + w0 : nullptr;
              if (!deriv) tap_derivs<T, projective>(t, in + (n * C + c) * plane_in, nb, s.eps, dk[0], dk[1], dk[2]);
              for (int k = 0; k < K; ++k) {
                const T* dd = d ? d + k * plane_out : dk[k];
                T* gg = gk[k];
#pragma omp simd
                for (int j = 0; j < nb; ++j) gg[j] += g[j] * dd[j];
              }
            }
            const T* xb = s.xb.data() + w0;
            for (int k = 0; k < K; ++k) {
              const T* gg = gk[k];
              T a0 = 0, a1 = 0;
#pragma omp simd reduction(+ : a0, a1)
              for (int j = 0; j < nb; ++j) {
                a0 += gg[j];
                a1 += gg[j] * xb[j];
              }
              s0[k] += a0;
              s1[k] += a1;
            }
          }
          if (grad_in) {  // eq. 6: sequential scatter (taps of neighbouring points collide); sample n owns it
            for (int64_t c = 0; c < C; ++c) {
              const T* g = grad_out + (n * C + c) * plane_out + h * Wo + w0;
              T* q = grad_in + (n * C + c) * plane_in;
#pragma omp simd
              for (int j = 0; j < nb; ++j) {  // the four weighted gradients, vectorised
                const T gy0 = g[j] * t.ay0[j], gy1 = g[j] * t.ay1[j];
                sc[0][j] = (t.vx0[j] * t.vy0[j] != T(0)) ? gy0 * t.ax0[j] : T(0);
                sc[1][j] = (t.vx1[j] * t.vy0[j] != T(0)) ? gy0 * t.ax1[j] : T(0);
                sc[2][j] = (t.vx0[j] * t.vy1[j] != T(0)) ? gy1 * t.ax0[j] : T(0);
                sc[3][j] = (t.vx1[j] * t.vy1[j] != T(0)) ? gy1 * t.ax1[j] : T(0);
              }
              // one pass per tap: within a pass neighbouring points rarely hit the same pixel, so the
              // read-modify-writes do not wait on each other (one interleaved pass was 2x slower)
              for (int j = 0; j < nb; ++j) q[t.o00[j]] += sc[0][j];
              for (int j = 0; j < nb; ++j) q[t.o01[j]] += sc[1][j];
              for (int j = 0; j < nb; ++j) q[t.o10[j]] += sc[2][j];
              for (int j = 0; j < nb; ++j) q[t.o11[j]] += sc[3][j];
            }
          }
        }
        for (int k = 0; k < K; ++k) {  // row k of the matrix multiplies (x_t, y_t, 1)
          acc[3 * k] += double(s1[k]);
          acc[3 * k + 1] += double(s0[k]) * double(yt);
          acc[3 * k + 2] += double(s0[k]);
        }
      }
      if (grad_mat) {
        for (int k = 0; k < 9; ++k) grad_mat[9 * n + k] = T(acc[k]);
      }
    }
  });
}


void check(const torch::Tensor& input, const torch::Tensor& mat) {
  TORCH_CHECK(input.device().is_cpu() && mat.device().is_cpu(), "stnkit fused warp: CPU tensors only");
  TORCH_CHECK(input.dim() == 4, "stnkit fused warp: input must be (N, C, H, W)");
  TORCH_CHECK(mat.dim() == 3 && mat.size(1) == 3 && mat.size(2) == 3, "stnkit fused warp: matrix must be (N, 3, 3)");
  TORCH_CHECK(input.size(0) == mat.size(0), "stnkit fused warp: batch mismatch");
  TORCH_CHECK(input.scalar_type() == mat.scalar_type(), "stnkit fused warp: dtype mismatch");
  TORCH_CHECK(input.size(2) > 0 && input.size(3) > 0,
              "stnkit fused warp: expected input to have non-empty spatial dimensions, but input has sizes ",
              input.sizes());
  TORCH_CHECK(input.size(2) * input.size(3) < (int64_t(1) << 31), "stnkit fused warp: input plane too large");
}

}  // namespace

std::vector<torch::Tensor> warp_forward(torch::Tensor input, torch::Tensor mat, int64_t Ho, int64_t Wo,
                                        bool align_corners, bool projective, bool border, double eps,
                                        bool save_deriv) {
  check(input, mat);
  input = input.contiguous();
  mat = mat.contiguous();
  const auto N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  auto out = torch::empty({N, C, Ho, Wo}, input.options());
  torch::Tensor deriv = save_deriv ? torch::empty({N, C, projective ? 3 : 2, Ho, Wo}, input.options())
                                   : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "stnkit_warp_forward", [&] {
    auto* f = projective ? (border ? forward_kernel<scalar_t, true, true> : forward_kernel<scalar_t, true, false>)
                         : (border ? forward_kernel<scalar_t, false, true> : forward_kernel<scalar_t, false, false>);
    f(input.data_ptr<scalar_t>(), mat.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
      save_deriv ? deriv.data_ptr<scalar_t>() : nullptr, N, C, H, W, Ho, Wo, align_corners, eps);
  });
  return {out, deriv};
}

std::vector<torch::Tensor> warp_backward(torch::Tensor grad_out, torch::Tensor input, torch::Tensor mat,
                                         torch::Tensor deriv, bool need_input_grad, bool need_mat_grad,
                                         bool align_corners, bool projective, bool border, double eps) {
  check(input, mat);
  input = input.contiguous();
  mat = mat.contiguous();
  grad_out = grad_out.contiguous();
  const bool has_deriv = deriv.defined() && deriv.numel() > 0;
  if (has_deriv) deriv = deriv.contiguous();
  const auto N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const auto Ho = grad_out.size(2), Wo = grad_out.size(3);
  torch::Tensor grad_mat = need_mat_grad ? torch::zeros({N, 3, 3}, mat.options()) : torch::Tensor();
  torch::Tensor grad_in = need_input_grad ? torch::zeros_like(input) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "stnkit_warp_backward", [&] {
    auto* f = projective ? (border ? backward_kernel<scalar_t, true, true> : backward_kernel<scalar_t, true, false>)
                         : (border ? backward_kernel<scalar_t, false, true> : backward_kernel<scalar_t, false, false>);
    f(grad_out.data_ptr<scalar_t>(), input.data_ptr<scalar_t>(), mat.data_ptr<scalar_t>(),
      has_deriv ? deriv.data_ptr<scalar_t>() : nullptr, need_input_grad ? grad_in.data_ptr<scalar_t>() : nullptr,
      need_mat_grad ? grad_mat.data_ptr<scalar_t>() : nullptr, N, C, H, W, Ho, Wo, align_corners, eps);
  });
  return {grad_in, grad_mat};
}

torch::Tensor tps_grid_forward(torch::Tensor offsets, torch::Tensor mt, torch::Tensor base);  // tps_grid.cpp
torch::Tensor tps_grid_backward(torch::Tensor grad, torch::Tensor mt);                        // tps_grid.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &warp_forward, "fused affine/projective grid + bilinear sample (CPU)");
  m.def("backward", &warp_backward, "gradients of the fused warp to input and matrix (CPU)");
  m.def("tps_grid_forward", &tps_grid_forward, "batch-invariant TPS grid base + M @ offsets (CPU)");
  m.def("tps_grid_backward", &tps_grid_backward, "gradient of the TPS grid to the offsets (CPU)");
}
