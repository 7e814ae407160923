// The general CUDA attention forward (forward_general_kernel.cuh), host side:
// the grid of (key/value head, row block, key chunk, value block) items, and
// split-KV decoding's partial results and combine (split_kv.cuh).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "cuda/attention/forward_general_kernel.cuh"
#include "cuda/attention/split_kv.cuh"
#include "cuda/launch.cuh"
#include "dlkern/attention.h"

namespace dlkern::cuda::attention {

// Any dtype, head dimension, mask, window, GQA and varlen problem; lse in
// Accumulator<T>.
template <typename T>
void forward_general(const AttentionParams& p, AttentionOperand<const T> q,
                     AttentionOperand<const T> k, AttentionOperand<const T> v,
                     AttentionOperand<const void> mask, AttentionOperand<T> out,
                     AttentionOperand<Accumulator<T>> lse, cudaStream_t stream) {
  using namespace general;
  using Acc = Accumulator<T>;
  const auto ceil_div = [](int64_t x, int64_t y) { return (x + y - 1) / y; };
  int64_t heads = 1;
  for (int d = 0; d < kAttentionLeadDims; ++d) heads *= p.lead[d];
  if (heads == 0 || p.L == 0) return;
  const int64_t kv_heads = heads / p.group;

  const bool gathered = p.group * p.L <= kBlockQ;
  const int64_t chunk = split_kv_chunk(p, kv_heads);
  const int64_t chunks = chunk ? ceil_div(p.S, chunk) : 1;
  const int64_t slots = kv_heads * chunks * p.group * p.L;
  Scratch partials(chunk ? sizeof(Acc) * slots * (p.Ev + 1) : 0, stream);
  Acc* part_lse = partials.get<Acc>();
  const ForwardArgs<T> a{p, q, k, v, mask, out, lse, gathered,
                         gathered ? 1 : p.group * ceil_div(p.L, kBlockQ), chunk ? chunk : p.S,
                         chunks, std::max<int64_t>(1, ceil_div(p.Ev, kBlockV)),
                         chunk ? part_lse + slots : nullptr, part_lse};

  const int64_t items = kv_heads * a.row_blocks * a.chunks * a.value_blocks;
  const unsigned grid =
      static_cast<unsigned>(std::min<int64_t>(items, std::numeric_limits<int>::max()));
  constexpr int smem = kSmemElems * sizeof(Acc);
  auto kernel = chunk ? attention_forward_general_kernel<T, true>
                      : attention_forward_general_kernel<T, false>;
  DLKERN_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  DLKERN_LAUNCH(kernel, grid, kThreads, smem, stream, a, items);
  if (!chunk) return;
  // A block per query row: heads * L = kv_heads * group * L, under
  // kSplitBlocks * kBlockQ when the forward splits.
  auto combine = split_kv_combine_kernel<T>;
  DLKERN_LAUNCH(combine, static_cast<unsigned>(heads * p.L), kCombineThreads, 0, stream, a);
}

}  // namespace dlkern::cuda::attention
