// Host-side helpers of the tree launchers (tree.cu, lstm.cu): the
// activation switch, the level loop that picks each level's path, and
// launches of the memory-bound passes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/rnn/host.h"
#include "cuda/tree/persistent_backward.cuh"
#include "cuda/tree/schedule.h"

namespace dlkern::cuda::tree {

using rnn::gemm;
// For the launchers, which take this namespace whole.
using cuda::Accumulator;
using cuda::grid_stride_blocks;
using cuda::Scratch;

// The tree kernels' dtypes on CUDA: the recurrent family's.
using TreeTypes = rnn::RnnTypes;

// body(std::integral_constant<TreeActivation, act>{}).
template <typename Body>
void with_activation(TreeActivation act, Body&& body) {
  using A = TreeActivation;
  switch (act) {
    case A::tanh: return body(std::integral_constant<A, A::tanh>{});
    case A::relu: return body(std::integral_constant<A, A::relu>{});
    case A::sigmoid: return body(std::integral_constant<A, A::sigmoid>{});
    case A::identity: return body(std::integral_constant<A, A::identity>{});
  }
}

template <typename Out, typename T>
void copy_rows(int64_t rows, int64_t H, MatrixView<const T> src, Out* dst, cudaStream_t stream) {
  if (!dst || rows * H == 0) return;
  auto kernel = copy_rows_kernel<Out, T>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(rows * H, kThreads), kThreads, 0, stream, rows, H,
                src, dst);
}

// out (cols, rows) = in (rows, cols) transposed.
template <typename T>
void transpose(int64_t rows, int64_t cols, const T* in, T* out, cudaStream_t stream) {
  if (rows * cols == 0) return;
  auto kernel = transpose_kernel<T>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(rows * cols, kThreads), kThreads, 0, stream, rows,
                cols, in, out);
}

// x (rows, arity * H) = the children's rows of table for nodes (device).
template <typename T>
void gather(const Forest& f, int64_t rows, const int64_t* nodes, int64_t H, const T* table, T* x,
            cudaStream_t stream) {
  if (rows * f.arity * H == 0) return;
  auto kernel = gather_kernel<T>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(rows * f.arity * H, kThreads), kThreads, 0, stream, f,
                rows, nodes, H, table, x);
}

// Level l's children's slots of src (rows, arity * H) added into dst.
template <typename Acc, typename Src>
void scatter_add(const DeviceForest& d, int64_t l, int64_t H, const Src* src, Acc* dst,
                 cudaStream_t stream) {
  const int64_t g0 = d.groups.level[l], groups = d.groups.level[l + 1] - g0;
  if (groups * H == 0) return;
  auto kernel = scatter_add_kernel<Acc, Src>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(groups * H, kThreads), kThreads, 0, stream, d.scatter,
                g0, groups, H, src, dst);
}

// C = A @ B, or zeros when the sum is empty (k == 0); skipped for a null C.
template <typename T>
void product(MatmulShape s, MatrixView<const void> a, MatrixView<const void> b, T* c, int64_t ldc,
             cudaStream_t stream) {
  if (!c || s.m * s.n == 0) return;
  if (s.k == 0) {
    DLKERN_CUDA_CHECK(cudaMemsetAsync(c, 0, sizeof(T) * s.m * s.n, stream));
    return;
  }
  gemm<T>(s, a, b, {c, ldc, 1}, stream);
}

// The forward's level loop: runs of narrow levels (plan.h) to persistent(l0,
// l1) when the plan has a persistent path, every other level to wide(l).
template <typename Persistent, typename Wide>
void forward_levels(const TreeForest& f, const PersistentPlan& plan, Persistent&& persistent,
                    Wide&& wide) {
  for (int64_t l = 0; l < f.n_levels;) {
    int64_t l1 = l;
    while (plan.blocks > 0 && l1 < f.n_levels && level_rows(f, l1) <= kPersistentMaxRows) ++l1;
    if (l1 > l) {
      persistent(l, l1);
      l = l1;
    } else {
      wide(l++);
    }
  }
}

// The backward's level loop, from the deepest: runs of narrow levels to
// persistent(l_lo, l_hi) when the plan has a persistent path, every other
// level to wide(l).
template <typename Persistent, typename Wide>
void backward_levels(const TreeForest& f, const PersistentPlan& plan, Persistent&& persistent,
                     Wide&& wide) {
  for (int64_t l = f.n_levels - 1; l >= 0;) {
    int64_t lo = l + 1;
    while (plan.blocks > 0 && lo > 0 && level_rows(f, lo - 1) <= kPersistentMaxRows) --lo;
    if (lo <= l) {
      persistent(lo, l + 1);
      l = lo - 1;
    } else {
      wide(l--);
    }
  }
}

// The most rows of a level taking the GEMM path (1 when none does).
inline int64_t widest_wide_level(const TreeForest& f, const PersistentPlan& plan) {
  int64_t rows = 1;
  for (int64_t l = 0; l < f.n_levels; ++l)
    if (plan.blocks == 0 || level_rows(f, l) > kPersistentMaxRows)
      rows = std::max(rows, level_rows(f, l));
  return rows;
}

// A cooperative launch of kernel over plan's blocks, its barrier counter zeroed first.
template <typename Kernel, typename... Args>
void launch_persistent(Kernel kernel, const PersistentPlan& plan, unsigned* arrived,
                       cudaStream_t stream, Args... args) {
  DLKERN_CUDA_CHECK(cudaMemsetAsync(arrived, 0, sizeof(unsigned), stream));
  DLKERN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(plan.smem_bytes)));
  DLKERN_LAUNCH_COOPERATIVE(kernel, plan.blocks, kThreads, plan.smem_bytes, stream, args...,
                            arrived);
}

}  // namespace dlkern::cuda::tree
