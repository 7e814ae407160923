// Host side of the tensor-core attention forward (forward_tc_kernel.cuh):
// which problems it takes, and the launch.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>

#include "common/dispatch.h"
#include "cuda/attention/forward_tc_kernel.cuh"
#include "dlkern/attention.h"

namespace dlkern::cuda::attention {

// Can the rows of `a` be copied 16 bytes at a time? Unit column stride, and
// every row start 16-byte aligned (the base and every stride a multiple of 8
// elements of 2 bytes).
template <typename U>
bool rows_copyable(const AttentionOperand<U>& a) {
  bool ok = a.col_stride == 1 && a.row_stride % 8 == 0 &&
            reinterpret_cast<std::uintptr_t>(a.data) % 16 == 0;
  for (int d = 0; d < kAttentionLeadDims; ++d) ok = ok && a.lead_stride[d] % 8 == 0;
  return ok;
}

// Split-KV decoding's shape, left to the general kernel: at most a quarter of
// a block of query rows per key/value head (the tensor cores would mostly
// multiply padding, and the heads could not fill the GPU) against many keys.
inline bool decoding(const AttentionParams& p) {
  return p.L * p.group <= kTcRows / 4 && p.S > 8 * kTcRows;
}

// Lets `kernel` use `bytes` of dynamic shared memory on the current device,
// asking the runtime once per device (a bit of `configured` per device).
template <typename Kernel>
void allow_smem(Kernel kernel, int bytes, std::atomic<uint64_t>& configured) {
  int device = 0;
  DLKERN_CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t bit = device < 64 ? uint64_t{1} << device : 0;
  if (bit != 0 && (configured.load() & bit) != 0) return;
  DLKERN_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  configured.fetch_or(bit);
}

template <typename T, int D>
void launch_forward_tc(const TcArgs<T>& a, int64_t blocks, cudaStream_t stream) {
  using S = TcShape<D>;
  static std::atomic<uint64_t> configured{0};
  auto kernel = forward_tc_kernel<T, D>;
  allow_smem(kernel, S::kSmemBytes, configured);
  DLKERN_LAUNCH(kernel, static_cast<unsigned>(blocks), S::kThreads, S::kSmemBytes, stream, a);
}

// Runs the forward and returns true when the problem is one this kernel
// takes: head dimensions E == Ev of 64, 96, 128 or 256, rows of q, k, v and
// out 16-byte aligned with unit column stride (cp.async in, 16-byte stores
// out), not split-KV decoding's shape; any mask,
// window, GQA group and packed varlen batch. Returns false, having queued
// nothing, otherwise.
template <typename T>
bool forward_tc(const AttentionParams& p, AttentionOperand<const T> q, AttentionOperand<const T> k,
                AttentionOperand<const T> v, AttentionOperand<const void> mask,
                AttentionOperand<T> out, AttentionOperand<float> lse, cudaStream_t stream) {
  const bool head_dim = p.E == p.Ev && (p.E == 64 || p.E == 96 || p.E == 128 || p.E == 256);
  if (!head_dim || !rows_copyable(q) || !rows_copyable(k) || !rows_copyable(v) ||
      !rows_copyable(out) || decoding(p))
    return false;
  int64_t heads = 1;
  for (int d = 0; d < kAttentionLeadDims; ++d) heads *= p.lead[d];
  const int64_t q_blocks = (p.L + kTcRows - 1) / kTcRows;
  if (heads == 0 || q_blocks == 0) return true;
  // A block per (head, query block) in gridDim.x: below 2^31 blocks, as Q
  // alone would otherwise fill terabytes.
  DLKERN_CHECK(heads * q_blocks <= INT_MAX, "attention: ", heads * q_blocks,
               " blocks of query rows exceed a CUDA grid");
  const TcArgs<T> a{p, q, k, v, mask, out, lse, static_cast<float>(p.scale), q_blocks};
  dispatch_int<Ints<64, 96, 128, 256>>(p.E, "attention head dimension", [&](auto d) {
    launch_forward_tc<T, decltype(d)::value>(a, heads * q_blocks, stream);
  });
  return true;
}

}  // namespace dlkern::cuda::attention
