// gemm_cpu and gemm_batched_cpu: strided operands through the driver.
#include "dlkern/gemm.h"

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
  // or more: below that, waking a thread costs more than it saves.
  const double work = static_cast<double>(m) * static_cast<double>(n) *
                      static_cast<double>(std::max<int64_t>(k, 1));
  const double by_work = std::max(1.0, work / (1 << 20));
  return static_cast<int>(std::min<double>(get_num_threads(), by_work));
}

namespace {

struct Buffer {
  void* data = nullptr;
  size_t bytes = 0;
  ~Buffer() { ::operator delete(data, std::align_val_t(64)); }
};

thread_local Buffer buffers[2];

// One product, `nthreads` threads.
template <typename T>
void gemm_one(GemmShape s, MatrixView<const T> a, MatrixView<const T> b, MatrixView<T> c,
              GemmEpilogue<T> ep, int nthreads) {
  if (c.col_stride != 1 && c.row_stride == 1) {
    // C stored by columns: compute C^T = B^T A^T, whose rows are contiguous,
    // so that tiles are stored with full vectors.
    std::swap(s.m, s.n);
    std::swap(a, b);
    std::swap(a.row_stride, a.col_stride);
    std::swap(b.row_stride, b.col_stride);
    std::swap(c.row_stride, c.col_stride);
    std::swap(ep.row_bias, ep.col_bias);
  }
  const GemmKernel<T>& kernel = gemm_kernel<T>();
  gemm_driver(kernel, s.m, s.n, s.k, StridedPackers<T>{kernel, a, b, ep.alpha}, c, ep, nthreads);
}

void check_shape(const char* fn, GemmShape s) {
  DLKERN_CHECK(s.m >= 0 && s.n >= 0 && s.k >= 0, fn, ": m, n and k must be >= 0, got m=", s.m,
               " n=", s.n, " k=", s.k);
}

}  // namespace

void* workspace(Workspace slot, size_t bytes) {
  Buffer& buf = buffers[static_cast<int>(slot)];
  if (buf.bytes < bytes) {
    ::operator delete(buf.data, std::align_val_t(64));
    buf.data = nullptr;
    buf.bytes = 0;
    buf.data = ::operator new(bytes, std::align_val_t(64));
    buf.bytes = bytes;
  }
  return buf.data;
}

}  // namespace cpu::gemm

template <typename T>
void gemm_cpu(GemmShape shape, MatrixView<const T> a, MatrixView<const T> b, MatrixView<T> c,
              const GemmEpilogue<T>& epilogue) {
  cpu::gemm::check_shape("gemm_cpu", shape);
  cpu::gemm::gemm_one(shape, a, b, c, epilogue,
                      cpu::gemm::gemm_threads(shape.m, shape.n, shape.k));
}

template <typename T>
void gemm_batched_cpu(GemmShape shape, GemmBatch batch, MatrixView<const T> a,
                      MatrixView<const T> b, MatrixView<T> c, const GemmEpilogue<T>& epilogue) {
  cpu::gemm::check_shape("gemm_batched_cpu", shape);
  DLKERN_CHECK(batch.count >= 0, "gemm_batched_cpu: batch count must be >= 0, got ", batch.count);
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

#define DLKERN_INSTANTIATE(T)                                                                   \
  template void gemm_cpu<T>(GemmShape, MatrixView<const T>, MatrixView<const T>, MatrixView<T>, \
                            const GemmEpilogue<T>&);                                            \
  template void gemm_batched_cpu<T>(GemmShape, GemmBatch, MatrixView<const T>,                  \
                                    MatrixView<const T>, MatrixView<T>, const GemmEpilogue<T>&);
DLKERN_INSTANTIATE(float)
DLKERN_INSTANTIATE(double)
#undef DLKERN_INSTANTIATE

}  // namespace dlkern
