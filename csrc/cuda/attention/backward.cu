// Host side of the CUDA attention backward: D = rowsum(dO * O) into
// stream-ordered scratch, then the dK/dV pass and the dQ pass, each block
// owning the gradient rows it writes: on tensor cores (backward_tc.cuh) for
// float16/bfloat16 with E = Ev of 64 or 128, else on CUDA cores
// (backward_general.cuh).
#include <algorithm>

#include "common/dispatch.h"
#include "cuda/attention/backward_general.cuh"
#include "cuda/attention/backward_tc.cuh"
#include "cuda/attention/operand.h"
#include "cuda/launch.cuh"
#include "cuda/numeric.cuh"
#include "dlkern/attention.h"

namespace dlkern {
namespace {

using namespace cuda::attention;

// The largest tile (kMaxBlock rows, halved as needed) whose shared memory,
// for both passes, fits the device's per-block limit.
template <typename A>
int64_t tile_rows(const AttentionParams& p) {
  int device = 0, optin = 0;
  DLKERN_CUDA_CHECK(cudaGetDevice(&device));
  DLKERN_CUDA_CHECK(
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const auto bytes = [&](int64_t b) {
    return static_cast<int64_t>(sizeof(A)) *
           std::max(KeyGradsLayout(b, p.E, p.Ev).size, QueryGradsLayout(b, p.E, p.Ev).size);
  };
  int64_t b = kMaxBlock;
  while (b > 1 && bytes(b) > optin) b /= 2;
  DLKERN_CHECK(bytes(b) <= optin, "attention_backward on CUDA: head dimensions E=", p.E,
               " and Ev=", p.Ev, " need ", bytes(b), " bytes of shared memory per block, more "
               "than the device's ", optin, "; use smaller heads or the CPU");
  return b;
}

// A grid-stride kernel over `items` blocks of `threads` threads: grids of at
// most 65536 blocks in x (grid_stride_blocks), the kernel strides over the rest.
template <typename Kernel, typename... Args>
void launch(Kernel kernel, int64_t items, int threads, int smem, cudaStream_t stream,
            Args... args) {
  if (items == 0) return;
  DLKERN_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  DLKERN_LAUNCH(kernel, cuda::grid_stride_blocks(items, 1), threads, smem, stream, args...);
}

// The two main passes on CUDA cores: any dtype and head dimensions.
template <typename T>
void general_passes(BackwardArgs<T> a, cudaStream_t stream) {
  using A = cuda::Accumulator<T>;
  const AttentionParams& p = a.p;
  a.block = tile_rows<A>(p);
  const int64_t key_blocks = (p.S + a.block - 1) / a.block;
  launch(key_grads_kernel<T>, a.heads / p.group * key_blocks, kBackwardThreads,
         static_cast<int>(sizeof(A) * KeyGradsLayout(a.block, p.E, p.Ev).size), stream, a,
         key_blocks);
  const int64_t query_blocks = (p.L + a.block - 1) / a.block;
  launch(query_grads_kernel<T>, a.heads * query_blocks, kBackwardThreads,
         static_cast<int>(sizeof(A) * QueryGradsLayout(a.block, p.E, p.Ev).size), stream, a,
         query_blocks);
}

// The tensor-core passes when they take the problem; false, having queued
// nothing, otherwise.
template <typename T>
bool tensor_core_passes(const BackwardArgs<T>& a, cudaStream_t stream) {
  const AttentionParams& p = a.p;
  if (!cuda::kTensorCore<T> || p.E != p.Ev || (p.E != 64 && p.E != 128)) return false;
  if constexpr (cuda::kTensorCore<T>) {
    dispatch_int<Ints<64, 128>>(static_cast<int>(p.E), "attention head dimension", [&](auto d) {
      constexpr int D = decltype(d)::value;
      const int64_t key_blocks = (p.S + kTcOuter - 1) / kTcOuter;
      launch(key_grads_tc_kernel<T, D>, a.heads / p.group * key_blocks, kTcThreads,
             TcLayout<D>::kBytes, stream, a, key_blocks);
      const int64_t query_blocks = (p.L + kTcOuter - 1) / kTcOuter;
      launch(query_grads_tc_kernel<T, D>, a.heads * query_blocks, kTcThreads,
             TcLayout<D>::kBytes, stream, a, query_blocks);
    });
  }
  return true;
}

// The three passes on the operands in `a`; sets its heads and the D scratch.
template <typename T>
void backward(BackwardArgs<T> a, cudaStream_t stream) {
  using A = cuda::Accumulator<T>;
  const AttentionParams& p = a.p;
  a.heads = 1;
  for (int d = 0; d < kAttentionLeadDims; ++d) a.heads *= p.lead[d];
  if (a.heads == 0) return;
  cuda::Scratch delta(sizeof(A) * a.heads * p.L, stream);
  a.delta = delta.get<A>();
  if (a.heads * p.L > 0) {
    auto kernel = delta_kernel<T>;
    DLKERN_LAUNCH(kernel, cuda::grid_stride_blocks(a.heads * p.L, kBackwardThreads),
                  kBackwardThreads, 0, stream, a);
  }
  if (!tensor_core_passes(a, stream)) general_passes(a, stream);
}

}  // namespace

void attention_backward_cuda(DType dtype, const AttentionParams& p,
                             AttentionOperand<const void> grad_out,
                             AttentionOperand<const void> query, AttentionOperand<const void> key,
                             AttentionOperand<const void> value,
                             AttentionOperand<const void> mask, AttentionOperand<const void> out,
                             AttentionOperand<const void> lse, AttentionOperand<void> grad_query,
                             AttentionOperand<void> grad_key, AttentionOperand<void> grad_value,
                             cudaStream_t stream) {
  using Types = Types<float, double, __half, __nv_bfloat16>;
  dispatch_dtype<Types>(dtype, "attention_backward on CUDA", [&](auto tag) {
    using T = decltype(tag);
    using A = cuda::Accumulator<T>;
    backward<T>({p, typed<const T>(grad_out), typed<const T>(query), typed<const T>(key),
                 typed<const T>(value), mask, typed<const T>(out), typed<const A>(lse),
                 typed<T>(grad_query), typed<T>(grad_key), typed<T>(grad_value), nullptr, 0, 0},
                stream);
  });
}

}  // namespace dlkern
