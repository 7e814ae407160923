// The persistent forward for runs of narrow levels (a chain: thousands of
// levels of one node each): one cooperative launch walks the run's levels,
// meeting at a grid barrier between them instead of launching a gather, a
// product and a pointwise pass per level. Each block owns a slice of hidden
// units (all gates of them for the Tree-LSTM). Per level it reads its
// nodes' children's rows from global memory (written by every block before
// the barrier) into shared memory, computes its units' dot products with the
// weight rows (read from global memory: L2-resident across levels), and
// writes its units of the nodes' outputs. The rule that picks it is plan.h's.
//
// Memory ordering: a node's row is written once, at its level, and read only
// at deeper levels, after at least one grid_barrier; the barrier's fences
// order the writes before the arrival and the reads after the wait, and the
// reads are plain loads (no read-only cache path for data this kernel writes).
#pragma once

#include "cuda/grid_barrier.cuh"
#include "cuda/tree/plan.h"
#include "cuda/tree/pointwise.cuh"

namespace dlkern::cuda::tree {

// x_s (rows, arity * H) = the children's rows of table for the level's nodes.
template <typename T, typename Acc>
__device__ __forceinline__ void load_children(const Forest& f, const int64_t* nodes,
                                              int64_t rows, int64_t H, const T* table,
                                              Acc* x_s) {
  const int64_t K = f.arity * H;
  for (int64_t e = threadIdx.x; e < rows * K; e += blockDim.x) {
    const int64_t r = e / K, q = e - r * K, k = q / H, j = q - k * H;
    const int64_t c = child_of(f, nodes[r], k);
    x_s[e] = c >= 0 ? convert<Acc>(table[c * H + j]) : Acc(0);
  }
}

// w (K) . x (K) by one warp, in a fixed order; the sum in every lane. The
// weight comes from L2: unrolled, a lane keeps several loads in flight.
template <typename T, typename Acc>
__device__ __forceinline__ Acc warp_dot(const T* w, const Acc* x, int64_t K) {
  Acc sum = 0;
#pragma unroll 4
  for (int64_t q = threadIdx.x % 32; q < K; q += 32) sum += convert<Acc>(w[q]) * x[q];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  return sum;
}

// Levels [l0, l1) of tree_compose. Dynamic shared memory: x_s
// (kPersistentMaxRows, arity * H) in the accumulator type.
template <typename T, TreeActivation A>
__global__ void __launch_bounds__(kThreads)
    compose_persistent_kernel(Forest f, int64_t l0, int64_t l1, int64_t H, int64_t units,
                              const T* weight, const T* bias, T* out, unsigned* arrived) {
  using Acc = Accumulator<T>;
  const int64_t K = f.arity * H, u0 = blockIdx.x * units;
  const int64_t U = H - u0 < units ? H - u0 : units;
  DLKERN_DYNAMIC_SMEM(Acc, x_s);
  for (int64_t l = l0; l < l1; ++l) {
    const int64_t first = f.level_offset[l], rows = f.level_offset[l + 1] - first;
    const int64_t* nodes = f.order + first;
    load_children(f, nodes, rows, H, out, x_s);
    __syncthreads();
    for (int64_t i = threadIdx.x / 32; i < rows * U; i += blockDim.x / 32) {
      const int64_t r = i / U, j = u0 + (i - r * U);
      const Acc sum = warp_dot(weight + j * K, x_s + r * K, K);
      if (threadIdx.x % 32 == 0)
        out[nodes[r] * H + j] =
            convert<T>(dlkern::tree::activate<A>(sum + load<Acc>(bias, j)));
    }
    grid_barrier(arrived, static_cast<unsigned>(l - l0 + 1));
  }
}

// Levels [l0, l1) of the Tree-LSTM; u_all ((3 + arity) H, arity * H) is the
// stacked [u_iou; u_f]. Dynamic shared memory: x_s as above, then the gate
// sums (kPersistentMaxRows, (3 + arity) * units).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    lstm_persistent_kernel(LstmForward<T> a, int64_t l0, int64_t l1, int64_t units,
                           const T* u_all, unsigned* arrived) {
  using Acc = Accumulator<T>;
  const Forest& f = a.f;
  const int64_t H = a.H, K = f.arity * H, gates = 3 + f.arity, u0 = blockIdx.x * units;
  const int64_t U = H - u0 < units ? H - u0 : units, width = gates * U;
  DLKERN_DYNAMIC_SMEM(Acc, x_s);
  Acc* sums = x_s + kPersistentMaxRows * K;
  for (int64_t l = l0; l < l1; ++l) {
    const int64_t first = f.level_offset[l], rows = f.level_offset[l + 1] - first;
    const int64_t* nodes = f.order + first;
    load_children(f, nodes, rows, H, a.h_out, x_s);
    __syncthreads();
    for (int64_t i = threadIdx.x / 32; i < rows * width; i += blockDim.x / 32) {
      const int64_t r = i / width, q = i - r * width, g = q / U, u = q - g * U;
      const Acc sum = warp_dot(u_all + (g * H + u0 + u) * K, x_s + r * K, K);
      if (threadIdx.x % 32 == 0) sums[i] = sum;
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < rows * U; i += blockDim.x) {
      const int64_t r = i / U, u = i - r * U;
      const Acc* s = sums + r * width + u;
      lstm_node(a, nodes[r], u0 + u, [&](int64_t q) { return s[q * U]; });
    }
    grid_barrier(arrived, static_cast<unsigned>(l - l0 + 1));
  }
}

}  // namespace dlkern::cuda::tree
