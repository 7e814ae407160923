// Convolution on the GEMM core. Per image and group the forward pass is
//   out (K_g x out_h*out_w) = W (K_g x C_g*kh*kw) @ patches (C_g*kh*kw x out_h*out_w),
// the patches packed straight from the input into the driver's B
// micro-panels (no im2col buffer); a 1x1 stride-1 convolution without
// padding is a plain GEMM on the input planes. The weight gradient is
//   gw (K_g x C_g*kh*kw) = grad_out (K_g x N*out_h*out_w) @ patches^T,
// its depth cut into chunks of images by the shape alone, the chunks dealt
// round-robin to a fixed number of partial sums, and those added in order:
// threads take whole partial sums (no synchronisation inside a product),
// and every element is the same ordered sum whatever the thread count.
#include <omp.h>

#include <algorithm>

#include "cpu/conv/kernels.h"
#include "cpu/conv/paths.h"
#include "cpu/gemm/driver.h"

namespace dlkern::cpu::conv {
namespace {

using gemm::GemmKernel;

// Runs item(i, threads) for i < items: one item per thread when they share
// out evenly (no synchronisation inside a product), else one after another,
// each product using every thread.
template <typename Item>
void for_items(int64_t items, int nt, const Item& item) {
  if (nt > 1 && (items % nt == 0 || items >= 4 * nt)) {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t i = 0; i < items; ++i) item(i, 1);
  } else {
    for (int64_t i = 0; i < items; ++i) item(i, nt);
  }
}

// A: the group's filters, row-major; B: the patches of one image.
template <typename T>
struct PatchPackers {
  const GemmKernel<T>& K;
  const ConvKernels<T>& ck;
  const Conv2dParams& p;
  const T* w;
  int64_t depth;
  const T* in;
  Nchw st;

  void pack_a(int64_t i0, int64_t rows, int64_t p0, int64_t kc, T* dst) const {
    K.pack_a(rows, kc, w + i0 * depth + p0, depth, 1, T(1), dst);
  }
  void pack_b(int64_t j0, int64_t cols, int64_t p0, int64_t kc, T* dst) const {
    ck.pack_patches(p, in, st, K.nr, j0, cols, p0, kc, dst);
  }
};

// A: grad_out rows of the group, depth over (n, position); B: the patch
// matrix transposed, columns (tap, channel), packed from a channels-last
// copy of the input where each position's channels lie side by side (in
// NCHW every depth step of a B micro-panel would gather from nr planes).
template <typename T>
struct GradWeightPackers {
  const GemmKernel<T>& K;
  const ConvKernels<T>& ck;
  const Conv2dParams& p;
  const T* go;    // channel 0 of the group, image 0
  int64_t go_sn;  // between images
  int64_t plane;  // out_h * out_w
  const Nhwc<T>& x;
  int64_t c0;     // the group's first input channel

  void pack_a(int64_t i0, int64_t rows, int64_t p0, int64_t kc, T* dst) const {
    // The depth range may span images: pack it one image at a time, one
    // micro-panel at a time (the packer lays out whole panels of its own kc).
    for (int64_t r = 0; r < rows; r += K.mr) {
      const int64_t lines = std::min<int64_t>(K.mr, rows - r);
      for (int64_t q = p0; q < p0 + kc;) {
        const int64_t n = q / plane, pos = q % plane, seg = std::min(p0 + kc - q, plane - pos);
        K.pack_a(lines, seg, go + n * go_sn + (i0 + r) * plane + pos, plane, 1, T(1),
                 dst + r * kc + (q - p0) * K.mr);
        q += seg;
      }
    }
  }
  void pack_b(int64_t j0, int64_t cols, int64_t p0, int64_t kc, T* dst) const {
    ck.pack_nhwc_patches(p, x, c0, K.nr, j0, cols, p0, kc, dst);
  }
};

}  // namespace

template <typename T>
void forward_gemm(const Conv2dParams& p, const T* in, Nchw st, const T* w, const T* bias, T* out,
                  bool plain) {
  const GemmKernel<T>& K = gemm::kernels<T>();
  const ConvKernels<T>& ck = kernels<T>();
  const int64_t cin = p.in_channels / p.groups, kout = p.out_channels / p.groups;
  const int64_t depth = cin * p.kernel_h * p.kernel_w, plane = p.out_h * p.out_w;
  const int nt = threads_for(static_cast<double>(p.batch) * p.out_channels * plane * depth);
  // With padding, the patches come from a zero-padded copy of each image's
  // group (a fraction of the patch volume to write, bounded here), on which
  // the packer needs no masks at the borders.
  Conv2dParams q = p;
  q.in_h += p.pad_top + p.pad_bottom, q.in_w += p.pad_left + p.pad_right;
  q.pad_top = q.pad_bottom = q.pad_left = q.pad_right = 0;
  const bool pad = !plain && std::min({p.pad_top, p.pad_bottom, p.pad_left, p.pad_right}) >= 0 &&
                   p.pad_top + p.pad_bottom + p.pad_left + p.pad_right > 0 &&
                   sizeof(T) * cin * q.in_h * q.in_w <= (size_t(16) << 20);
  const Nchw qs{0, q.in_h * q.in_w, q.in_w, 1};
  for_items(p.batch * p.groups, nt, [&](int64_t item, int threads) {
    const int64_t n = item / p.groups, g = item % p.groups;
    const T* x = in + n * st.n + g * cin * st.c;
    const T* wg = w + g * kout * depth;
    const MatrixView<T> c{out + (n * p.out_channels + g * kout) * plane, plane, 1};
    MatmulEpilogue<T> ep;
    ep.row_bias = bias ? bias + g * kout : nullptr;
    if (plain) {
      gemm::gemm_driver(K, kout, plane, depth,
                        gemm::StridedPackers<T>{K, {wg, depth, 1}, {x, st.c, st.w}, T(1)}, c, ep,
                        threads);
    } else if (pad) {
      T* xp = static_cast<T*>(scratch(Scratch::padded, sizeof(T) * cin * q.in_h * q.in_w));
      ck.pad_planes(p, x, st, cin, xp);
      gemm::gemm_driver(K, kout, plane, depth, PatchPackers<T>{K, ck, q, wg, depth, xp, qs}, c,
                        ep, threads);
    } else {
      gemm::gemm_driver(K, kout, plane, depth, PatchPackers<T>{K, ck, p, wg, depth, x, st}, c, ep,
                        threads);
    }
  });
}

template <typename T>
void grad_weight_gemm(const Conv2dParams& p, const T* grad_out, const T* in, Nchw st, T* gw) {
  const GemmKernel<T>& K = gemm::kernels<T>();
  const ConvKernels<T>& ck = kernels<T>();
  const int64_t cin = p.in_channels / p.groups, kout = p.out_channels / p.groups;
  const int64_t taps = p.kernel_h * p.kernel_w, depth = cin * taps, plane = p.out_h * p.out_w;
  const int nt = threads_for(static_cast<double>(p.batch) * p.out_channels * plane * depth);
  const bool plain = plain_1x1(p, st);
  const int64_t rows = (p.out_h - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1;
  const int64_t cols = (p.out_w - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1;
  const int64_t image = plain ? 0 : rows * cols * p.in_channels;  // of the channels-last copy
  // Chunks of at least ~1024 positions (a deep enough product), at most
  // ~64 MiB of copy; up to 8 partial sums.
  constexpr int64_t kPartials = 8;
  int64_t chunk = std::clamp<int64_t>((1023 + plane) / plane, 1, p.batch);
  if (image > 0) chunk = std::clamp<int64_t>((int64_t(64) << 20) / (sizeof(T) * image), 1, chunk);
  const int64_t chunks = (p.batch + chunk - 1) / chunk;
  chunk = (p.batch + chunks - 1) / chunks;  // evened out
  const int64_t partials = std::min(chunks, kPartials);
  // partial[(s * groups + g)]: K_g x depth, columns (tap, channel) (channel
  // only for 1x1, where they coincide with gw's).
  T* partial = static_cast<T*>(
      scratch(Scratch::product, sizeof(T) * partials * p.out_channels * depth));

  auto sum_partial = [&](int64_t s, int64_t g, int threads) {
    T* c = partial + (s * p.groups + g) * kout * depth;
    for (int64_t j = s; j < chunks; j += partials) {
      const int64_t n0 = j * chunk, images = std::min(chunk, p.batch - n0);
      MatmulEpilogue<T> ep;
      ep.accumulate = j > s;
      if (plain) {
        // grad_out (K_g x positions) @ the input planes transposed: no copy,
        // the GEMM's packers transpose.
        for (int64_t n = n0; n < n0 + images; ++n, ep.accumulate = true)
          gemm::gemm_driver(K, kout, cin, plane,
                            gemm::StridedPackers<T>{
                                K, {grad_out + (n * p.out_channels + g * kout) * plane, plane, 1},
                                {in + n * st.n + g * cin * st.c, st.w, st.c}, T(1)},
                            MatrixView<T>{c, depth, 1}, ep, threads);
        continue;
      }
      const Nhwc<T> x{static_cast<T*>(scratch(Scratch::nhwc, sizeof(T) * images * image)), rows,
                      cols, p.in_channels};
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int64_t r = 0; r < images * rows; ++r)
        ck.to_nhwc(p, in + n0 * st.n, st, r / rows, r % rows, r % rows + 1, x);
      const GradWeightPackers<T> packers{
          K, ck, p, grad_out + (n0 * p.out_channels + g * kout) * plane, p.out_channels * plane,
          plane, x, g * cin};
      gemm::gemm_driver(K, kout, depth, images * plane, packers, MatrixView<T>{c, depth, 1}, ep,
                        threads);
    }
  };
  const int64_t items = partials * p.groups;
  if (nt > 1 && items >= nt) {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t i = 0; i < items; ++i) sum_partial(i / p.groups, i % p.groups, 1);
  } else {
    for (int64_t i = 0; i < items; ++i) sum_partial(i / p.groups, i % p.groups, nt);
  }
  // gw = the partial sums in order, columns (channel, tap).
  for (int64_t k = 0; k < p.out_channels; ++k)
    for (int64_t c = 0; c < cin; ++c)
      for (int64_t t = 0; t < taps; ++t) {
        T sum = partial[k * depth + t * cin + c];
        for (int64_t s = 1; s < partials; ++s)
          sum += partial[(s * p.out_channels + k) * depth + t * cin + c];
        gw[(k * cin + c) * taps + t] = sum;
      }
}

#define DLKERN_INSTANTIATE(T)                                                                   \
  template void forward_gemm<T>(const Conv2dParams&, const T*, Nchw, const T*, const T*, T*,    \
                                bool);                                                          \
  template void grad_weight_gemm<T>(const Conv2dParams&, const T*, const T*, Nchw, T*);
DLKERN_INSTANTIATE(float)
DLKERN_INSTANTIATE(double)
#undef DLKERN_INSTANTIATE

}  // namespace dlkern::cpu::conv
