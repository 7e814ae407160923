// Split-KV decoding on CUDA: when a key/value head's query rows (L times the
// GQA group) fit one block of the general kernel and S is long, that head
// alone would be one long block and a few heads would leave most of the GPU
// idle. The keys of each key/value head are then split into chunks, a block
// per (key/value head, chunk) writing partial outputs and log-sum-exps, and
// split_kv_combine_kernel folds each row's chunks in chunk order with
// combine_lse: the result does not depend on which block ran first.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/attention/forward_general_kernel.cuh"

namespace dlkern::cuda::attention {

// About this many blocks in all: an H200's 132 multiprocessors twice over,
// a constant so that the split, and the rounding of the result, depend on the
// problem alone and not on the device.
constexpr int64_t kSplitBlocks = 256;
// No chunk shorter than four key tiles: below that the partial results cost
// as much to write and combine as the chunk to compute.
constexpr int64_t kMinChunk = 4 * general::kBlockK;

// Keys per chunk (a whole number of key tiles, shorter than S), or 0 when
// the forward does not split: the group's rows fit one block (the kernel's
// gathered rows), S is longer than kMinChunk, and there are fewer than
// kSplitBlocks key/value heads.
inline int64_t split_kv_chunk(const AttentionParams& p, int64_t kv_heads) {
  if (p.L < 1 || p.group * p.L > general::kBlockQ || p.S <= kMinChunk || kv_heads == 0 ||
      kv_heads >= kSplitBlocks)
    return 0;
  const int64_t per_head = (kSplitBlocks + kv_heads - 1) / kv_heads;
  const int64_t tiles = ((p.S + per_head - 1) / per_head + general::kBlockK - 1) / general::kBlockK;
  const int64_t chunk = std::max(kMinChunk, tiles * general::kBlockK);
  return chunk < p.S ? chunk : 0;
}

constexpr int kCombineThreads = 128;

// A block per (query head, row), threads over the value columns (one at least,
// for the log-sum-exp); partial results as ForwardArgs lays them out.
template <typename T>
__global__ void __launch_bounds__(kCombineThreads)
    split_kv_combine_kernel(ForwardArgs<T> a) {
  using Acc = Accumulator<T>;
  const AttentionParams& p = a.p;
  const int64_t n = blockIdx.x / p.L, i = blockIdx.x % p.L;
  const Head h(p, n);
  if (i >= h.seq.L) return;  // a varlen sequence shorter than p.L
  const int64_t R = n % p.group * h.seq.L + i, rows = p.group * p.L;
  const int64_t first = n / p.group * a.chunks * rows + R;
  for (int64_t e = threadIdx.x; e < (p.Ev > 0 ? p.Ev : 1); e += blockDim.x) {
    Acc lse = neg_inf<Acc>(), o = 0;
    for (int64_t c = 0; c < a.chunks; ++c) {
      const int64_t slot = first + c * rows;
      Acc wa, wb;
      lse = ::dlkern::attention::combine_lse(lse, a.part_lse[slot], wa, wb);
      if (e < p.Ev) o = wa * o + wb * a.part_out[slot * p.Ev + e];
    }
    if (e < p.Ev) h.rows(a.out)[i * a.out.row_stride + e * a.out.col_stride] = convert<T>(o);
    if (e == 0) h.rows(a.lse)[i * a.lse.row_stride] = lse;
  }
}

}  // namespace dlkern::cuda::attention
