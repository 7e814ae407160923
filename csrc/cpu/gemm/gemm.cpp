// matmul_cpu and matmul_batched_cpu: strided operands through the driver.
#include "dlkern/matmul.h"

#include <omp.h>

#include <algorithm>
#include <new>
#include <utility>

#include "cpu/gemm/driver.h"
#include "dlkern/error.h"

namespace dlkern {
namespace cpu::gemm {

int gemm_threads(int64_t m, int64_t n, int64_t k) {
  if (omp_in_parallel()) return 1;
  // Each thread should get about 2^20 multiply-adds (several microseconds)
  // or more: below that, waking a thread costs more than it saves. A
  // matrix-vector product is bound by reading the matrix, and a second core
  // brings its own bandwidth: 2^17 there.
  const double grain = (m == 1 || n == 1) ? (1 << 17) : (1 << 20);
  const double work = static_cast<double>(m) * static_cast<double>(n) *
                      static_cast<double>(std::max<int64_t>(k, 1));
  return static_cast<int>(std::clamp(work / grain, 1.0, static_cast<double>(get_num_threads())));
}

namespace {

struct Buffer {
  void* data = nullptr;
  size_t bytes = 0;
  ~Buffer() { ::operator delete(data, std::align_val_t(64)); }
};

thread_local Buffer buffers[2];

// A matrix-vector product with `nthreads` threads, each taking a share of
// the rows.
template <typename T>
void gemv_threaded(const GemmKernel<T>& kernel, Gemv<T> g, int nthreads) {
  if (g.ks == 1 && g.xs != 1 && g.k > 0) {
    // The dot-product form reads x by vectors.
    T* x = static_cast<T*>(workspace(Workspace::pack_b, sizeof(T) * g.k));
    for (int64_t p = 0; p < g.k; ++p) x[p] = g.x[p * g.xs];
    g.x = x;
    g.xs = 1;
  }
  // Whole cache lines of y per thread where y is contiguous.
  constexpr int64_t kRowGrain = 16;
  const int64_t grains = detail::ceil_div(g.rows, kRowGrain);
  const int parts = static_cast<int>(std::min<int64_t>(nthreads, grains));
  if (parts <= 1) {
    kernel.gemv(g);
    return;
  }
#pragma omp parallel num_threads(parts)
  {
    int64_t g0, g1;
    detail::split(grains, omp_get_num_threads(), omp_get_thread_num(), &g0, &g1);
    Gemv<T> part = g;
    const int64_t i0 = g0 * kRowGrain;
    part.rows = std::min(g.rows, g1 * kRowGrain) - i0;
    part.a += i0 * g.rs;
    part.y += i0 * g.ys;
    if (part.bias) part.bias += i0 * g.bias_stride;
    if (part.rows > 0) kernel.gemv(part);
  }
}

// One product, `nthreads` threads.
template <typename T>
void gemm_one(MatmulShape s, MatrixView<const T> a, MatrixView<const T> b, MatrixView<T> c,
              const MatmulEpilogue<T>& ep, int nthreads) {
  if (s.m == 0 || s.n == 0) return;
  const GemmKernel<T>& kernel = kernels<T>();
  if (s.n == 1) {  // C = A x
    gemv_threaded<T>(kernel,
                     {s.m, s.k, a.data, a.row_stride, a.col_stride, b.data, b.row_stride,
                      ep.alpha, c.data, c.row_stride, ep.accumulate, ep.row_bias,
                      ep.bias_stride, ep.col_bias},
                     nthreads);
    return;
  }
  if (s.m == 1) {  // C^T = B^T x
    gemv_threaded<T>(kernel,
                     {s.n, s.k, b.data, b.col_stride, b.row_stride, a.data, a.col_stride,
                      ep.alpha, c.data, c.col_stride, ep.accumulate, ep.col_bias,
                      ep.bias_stride, ep.row_bias},
                     nthreads);
    return;
  }
  // Compute C or C^T = B^T A^T, whichever costs less: columns of the
  // product are padded to whole NR-wide micro-panels (rows are not), and a C
  // whose rows are not contiguous is stored element by element, which costs
  // about as much as 64 depth steps per element.
  const int64_t nr = kernel.nr;
  auto cost = [&](int64_t rows, int64_t cols, bool unit_stride_rows) {
    return static_cast<double>(rows) * static_cast<double>(detail::ceil_div(cols, nr) * nr) *
               static_cast<double>(s.k) +
           (unit_stride_rows ? 0.0 : 64.0 * static_cast<double>(rows) * static_cast<double>(cols));
  };
  MatmulEpilogue<T> e = ep;
  if (cost(s.n, s.m, c.row_stride == 1) < cost(s.m, s.n, c.col_stride == 1)) {
    std::swap(s.m, s.n);
    std::swap(a, b);
    std::swap(a.row_stride, a.col_stride);
    std::swap(b.row_stride, b.col_stride);
    std::swap(c.row_stride, c.col_stride);
    std::swap(e.row_bias, e.col_bias);
  }
  gemm_driver(kernel, s.m, s.n, s.k, StridedPackers<T>{kernel, a, b, e.alpha}, c, e, nthreads);
}

void check_shape(const char* fn, MatmulShape s) {
  DLKERN_CHECK(s.m >= 0 && s.n >= 0 && s.k >= 0, fn, ": m, n and k must be >= 0, got m=", s.m,
               " n=", s.n, " k=", s.k);
}

}  // namespace

void* workspace(Workspace slot, size_t bytes) {
  Buffer& buf = buffers[static_cast<int>(slot)];
  if (buf.bytes < bytes) {
    ::operator delete(buf.data, std::align_val_t(64));
    buf.data = nullptr;  // still consistent if the allocation throws
    buf.bytes = 0;
    buf.data = ::operator new(bytes, std::align_val_t(64));
    buf.bytes = bytes;
  }
  return buf.data;
}

}  // namespace cpu::gemm

template <typename T>
void matmul_cpu(MatmulShape shape, MatrixView<const T> a, MatrixView<const T> b,
                MatrixView<T> c, const MatmulEpilogue<T>& epilogue) {
  cpu::gemm::check_shape("matmul_cpu", shape);
  cpu::gemm::gemm_one(shape, a, b, c, epilogue,
                      cpu::gemm::gemm_threads(shape.m, shape.n, shape.k));
}

template <typename T>
void matmul_batched_cpu(MatmulShape shape, MatmulBatch batch, MatrixView<const T> a,
                        MatrixView<const T> b, MatrixView<T> c,
                        const MatmulEpilogue<T>& epilogue) {
  cpu::gemm::check_shape("matmul_batched_cpu", shape);
  DLKERN_CHECK(batch.count >= 0, "matmul_batched_cpu: batch count must be >= 0, got ",
               batch.count);
  auto product = [&](int64_t i, int nthreads) {
    cpu::gemm::gemm_one<T>(shape, {a.data + i * batch.a_stride, a.row_stride, a.col_stride},
                           {b.data + i * batch.b_stride, b.row_stride, b.col_stride},
                           {c.data + i * batch.c_stride, c.row_stride, c.col_stride}, epilogue,
                           nthreads);
  };
  const int per_product = cpu::gemm::gemm_threads(shape.m, shape.n, shape.k);
  const int available = omp_in_parallel() ? 1 : get_num_threads();
  // Products too small for all threads, or many of them: one product per
  // thread, no synchronisation inside. A shared C (c_stride 0) keeps the
  // order of the products.
  if (available > 1 && batch.count > 1 && batch.c_stride != 0 &&
      (per_product < available || batch.count >= 4 * available)) {
    const int team = static_cast<int>(std::min<int64_t>(available, batch.count));
#pragma omp parallel for num_threads(team) schedule(static)
    for (int64_t i = 0; i < batch.count; ++i) product(i, 1);
  } else {
    for (int64_t i = 0; i < batch.count; ++i) product(i, per_product);
  }
}

#define DLKERN_INSTANTIATE(T)                                                              \
  template void matmul_cpu<T>(MatmulShape, MatrixView<const T>, MatrixView<const T>,       \
                              MatrixView<T>, const MatmulEpilogue<T>&);                    \
  template void matmul_batched_cpu<T>(MatmulShape, MatmulBatch, MatrixView<const T>,       \
                                      MatrixView<const T>, MatrixView<T>,                  \
                                      const MatmulEpilogue<T>&);
DLKERN_INSTANTIATE(float)
DLKERN_INSTANTIATE(double)
#undef DLKERN_INSTANTIATE

}  // namespace dlkern
