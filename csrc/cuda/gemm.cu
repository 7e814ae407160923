// Host side of the CUDA GEMM: picks a kernel for the dtype and layout.
#include "cuda/gemm.cuh"
#include "dlkern/gemm.h"

namespace dlkern {
namespace {

template <typename T>
void launch_gemm(GemmShape s, GemmBatch bt, MatrixView<const void> a, MatrixView<const void> b,
                 MatrixView<void> c, cudaStream_t stream) {
  using namespace cuda::gemm_simt;
  cuda::GemmOperands<T> op{s.m, s.n, s.k,
                           static_cast<const T*>(a.data), bt.a_stride, a.row_stride, a.col_stride,
                           static_cast<const T*>(b.data), bt.b_stride, b.row_stride, b.col_stride,
                           static_cast<T*>(c.data), bt.c_stride, c.row_stride, c.col_stride};
  const dim3 grid(static_cast<unsigned>((s.n + kTile - 1) / kTile),
                  static_cast<unsigned>((s.m + kTile - 1) / kTile),
                  static_cast<unsigned>(bt.count));
  auto kernel = cuda::gemm_simt_kernel<T>;
  DLKERN_LAUNCH(kernel, grid, kThreads, 0, stream, op);
}

}  // namespace

void gemm_cuda(DType dtype, GemmShape s, GemmBatch bt, MatrixView<const void> a,
               MatrixView<const void> b, MatrixView<void> c, cudaStream_t stream) {
  DLKERN_CHECK(s.m >= 0 && s.n >= 0 && s.k >= 0 && bt.count >= 0,
               "gemm_cuda: sizes must be non-negative, got m=", s.m, " n=", s.n, " k=", s.k,
               " batch=", bt.count);
  DLKERN_CHECK(bt.count <= 65535, "gemm_cuda: at most 65535 batch entries per call, got ", bt.count);
  if (s.m == 0 || s.n == 0 || bt.count == 0) return;
  switch (dtype) {
    case DType::float16: return launch_gemm<__half>(s, bt, a, b, c, stream);
    case DType::bfloat16: return launch_gemm<__nv_bfloat16>(s, bt, a, b, c, stream);
    case DType::float32: return launch_gemm<float>(s, bt, a, b, c, stream);
    case DType::float64: return launch_gemm<double>(s, bt, a, b, c, stream);
  }
}

}  // namespace dlkern
