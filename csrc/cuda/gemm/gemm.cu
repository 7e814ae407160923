// Host side of the CUDA GEMM: picks a kernel for the dtype and layout.
#include "common/dispatch.h"
#include "cuda/gemm/simt.cuh"
#include "cuda/gemm/tensor_core.cuh"
#include "dlkern/matmul.h"

namespace dlkern {
namespace {

using namespace cuda::gemm;

template <typename T>
Operands<T> operands(MatmulShape s, MatmulBatch bt, MatrixView<const void> a,
                               MatrixView<const void> b, MatrixView<void> c) {
  return {s.m, s.n, s.k,
          static_cast<const T*>(a.data), bt.a_stride, a.row_stride, a.col_stride,
          static_cast<const T*>(b.data), bt.b_stride, b.row_stride, b.col_stride,
          static_cast<T*>(c.data), bt.c_stride, c.row_stride, c.col_stride};
}

dim3 grid_for(MatmulShape s, MatmulBatch bt, int tile_m, int tile_n) {
  return dim3(static_cast<unsigned>((s.n + tile_n - 1) / tile_n),
              static_cast<unsigned>((s.m + tile_m - 1) / tile_m), static_cast<unsigned>(bt.count));
}

// Can a matrix be copied 16 bytes at a time along its unit-stride dimension?
// `extent` is that dimension's length and `stride` the other dimension's.
bool vector_copyable(const void* data, int64_t extent, int64_t stride, int64_t batch_stride) {
  constexpr int64_t kChunk = tensor_core::kChunk;
  return reinterpret_cast<std::uintptr_t>(data) % 16 == 0 && extent % kChunk == 0 &&
         stride % kChunk == 0 && batch_stride % kChunk == 0;
}

template <typename T, bool kVector, bool kAKMajor, bool kBNMajor>
void launch_tensor_core(const Operands<T>& op, dim3 grid, cudaStream_t stream) {
  constexpr int smem = cuda::tc::smem_bytes<tensor_core::Shape, kAKMajor, kBNMajor>();
  auto kernel = gemm_tensor_core_kernel<T, kVector, kAKMajor, kBNMajor>;
  DLKERN_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  DLKERN_LAUNCH(kernel, grid, tensor_core::kThreads, smem, stream, op);
}

// float16 / bfloat16 on tensor cores. A unit stride along K (A) or N (B) is
// "major" and otherwise along M (A) or K (B); with 16-byte aligned rows the
// tiles are copied asynchronously, else element by element.
template <typename T>
void gemm_tensor_core(MatmulShape s, MatmulBatch bt, MatrixView<const void> a,
                      MatrixView<const void> b, MatrixView<void> c, cudaStream_t stream) {
  const auto op = operands<T>(s, bt, a, b, c);
  const dim3 grid = grid_for(s, bt, tensor_core::Shape::kBlockM, tensor_core::Shape::kBlockN);
  const bool a_k = a.col_stride == 1 && vector_copyable(a.data, s.k, a.row_stride, bt.a_stride);
  const bool a_m = a.row_stride == 1 && vector_copyable(a.data, s.m, a.col_stride, bt.a_stride);
  const bool b_n = b.col_stride == 1 && vector_copyable(b.data, s.n, b.row_stride, bt.b_stride);
  const bool b_k = b.row_stride == 1 && vector_copyable(b.data, s.k, b.col_stride, bt.b_stride);
  if ((a_k || a_m) && (b_n || b_k)) {
    if (a_k && b_n) return launch_tensor_core<T, true, true, true>(op, grid, stream);
    if (a_k) return launch_tensor_core<T, true, true, false>(op, grid, stream);
    if (b_n) return launch_tensor_core<T, true, false, true>(op, grid, stream);
    return launch_tensor_core<T, true, false, false>(op, grid, stream);
  }
  launch_tensor_core<T, false, true, true>(op, grid, stream);
}

template <typename T>
void gemm_simt(MatmulShape s, MatmulBatch bt, MatrixView<const void> a, MatrixView<const void> b,
               MatrixView<void> c, cudaStream_t stream) {
  using namespace simt;
  auto kernel = gemm_simt_kernel<T>;
  DLKERN_LAUNCH(kernel, grid_for(s, bt, kTile, kTile), kThreads, 0, stream,
                operands<T>(s, bt, a, b, c));
}

}  // namespace

void matmul_cuda(DType dtype, MatmulShape s, MatmulBatch bt, MatrixView<const void> a,
                 MatrixView<const void> b, MatrixView<void> c, cudaStream_t stream) {
  DLKERN_CHECK(s.m >= 0 && s.n >= 0 && s.k >= 0 && bt.count >= 0,
               "matmul_cuda: sizes must be non-negative, got m=", s.m, " n=", s.n, " k=", s.k,
               " batch=", bt.count);
  DLKERN_CHECK(bt.count <= 65535, "matmul_cuda: at most 65535 batch entries per call, got ",
               bt.count);
  DLKERN_CHECK((s.m + 63) / 64 <= 65535, "matmul_cuda: at most ", 65535 * 64, " rows, got ", s.m);
  if (s.m == 0 || s.n == 0 || bt.count == 0) return;
  dispatch_dtype<Types<__half, __nv_bfloat16, float, double>>(
      dtype, "matmul on CUDA", [&](auto tag) {
        using T = decltype(tag);
        if constexpr (cuda::kTensorCore<T>)
          gemm_tensor_core<T>(s, bt, a, b, c, stream);
        else
          gemm_simt<T>(s, bt, a, b, c, stream);
      });
}

}  // namespace dlkern
