// The persistent backward for runs of narrow levels, deepest first, in one
// cooperative launch (the forward's counterpart, persistent.cuh). Each block
// owns a slice of the H units: of every node's accumulated gradient rows
// (only it reads or writes those units of them) and of the children's
// gradient columns. Per level:
//   A. the pointwise derivative of the level's nodes for the block's units
//      (written to global memory in schedule order, as the GEMM path does,
//      for the weight gradients after the levels);
//   grid barrier (B reads every unit of A's result);
//   B. the rows of A's result into shared memory, the block's columns of the
//      children's gradients (dot products with the weight's columns), and
//      the scatter of those columns into the children's rows, in the groups'
//      order (schedule.h), one thread per (child, unit).
// A of the next level reads only the block's own units of the gradient
// rows, which B wrote in the same block: one barrier per level suffices.
#pragma once

#include "cuda/tree/persistent.cuh"

namespace dlkern::cuda::tree {

// The block's slice of units [u0, u0 + U).
struct Slice {
  int64_t u0, U;
};

__device__ __forceinline__ Slice slice(int64_t H, int64_t units) {
  const int64_t u0 = blockIdx.x * units;
  return {u0, H - u0 < units ? H - u0 : units};
}

// Level l's groups for the block's units: dst's rows gather the children's
// slots of dx_s (slot q, unit u at q * U + u).
template <typename Acc>
__device__ __forceinline__ void scatter_slice(const Scatter& s, int64_t l, int64_t H, Slice b,
                                              const Acc* dx_s, Acc* dst) {
  const int64_t g0 = s.level[l], groups = s.level[l + 1] - g0;
  for (int64_t e = threadIdx.x; e < groups * b.U; e += blockDim.x) {
    const int64_t g = g0 + e / b.U, u = e % b.U;
    add_slots(s, g, [&](int64_t q) { return dx_s[q * b.U + u]; }, dst + s.child[g] * H + b.u0 + u);
  }
}

// B: x_s (rows, width) = rows of src (width apart) in the accumulator type;
// dx_s (rows * arity, U) = the block's columns of x_s @ w, w (width, arity *
// H) given transposed as wt (arity * H, width): a column is a contiguous row.
template <typename T, typename Acc>
__device__ __forceinline__ void children_grads(const T* src, int64_t rows, int64_t width,
                                               const T* wt, int64_t arity, int64_t H, Slice b,
                                               Acc* x_s, Acc* dx_s) {
  for (int64_t e = threadIdx.x; e < rows * width; e += blockDim.x) x_s[e] = convert<Acc>(src[e]);
  __syncthreads();
  for (int64_t i = threadIdx.x / 32; i < rows * arity * b.U; i += blockDim.x / 32) {
    const int64_t r = i / (arity * b.U), q = i - r * arity * b.U, k = q / b.U, u = q - k * b.U;
    const Acc sum = warp_dot(wt + (k * H + b.u0 + u) * width, x_s + r * width, width);
    if (threadIdx.x % 32 == 0) dx_s[i] = sum;
  }
  __syncthreads();
}

// Levels [l_lo, l_hi) of tree_compose's backward, from l_hi - 1. g: every
// node's output gradient; dz (n_internal, H) in schedule order; weight_t the
// weight transposed, (arity * H, H). Dynamic shared memory:
// (kPersistentMaxRows, H + arity * units), accumulator type.
template <typename T, TreeActivation A>
__global__ void __launch_bounds__(kThreads)
    compose_backward_persistent_kernel(Forest f, Scatter s, int64_t l_lo, int64_t l_hi,
                                       int64_t H, int64_t units, const T* weight_t, const T* y,
                                       Accumulator<T>* g, T* dz, unsigned* arrived) {
  using Acc = Accumulator<T>;
  const Slice b = slice(H, units);
  DLKERN_DYNAMIC_SMEM(Acc, x_s);
  Acc* dx_s = x_s + kPersistentMaxRows * H;
  unsigned generation = 0;
  for (int64_t l = l_hi - 1; l >= l_lo; --l) {
    const int64_t first = f.level_offset[l], rows = f.level_offset[l + 1] - first;
    const int64_t* nodes = f.order + first;
    for (int64_t e = threadIdx.x; e < rows * b.U; e += blockDim.x) {
      const int64_t r = e / b.U, j = b.u0 + e % b.U, i = nodes[r] * H + j;
      dz[(first + r) * H + j] =
          convert<T>(g[i] * dlkern::tree::activation_slope<A>(convert<Acc>(y[i])));
    }
    grid_barrier(arrived, ++generation);
    children_grads(dz + first * H, rows, H, weight_t, f.arity, H, b, x_s, dx_s);
    scatter_slice(s, l, H, b, dx_s, g);
    __syncthreads();
  }
}

// Levels [l_lo, l_hi) of the Tree-LSTM's backward, from l_hi - 1. d
// (n_internal, (3 + arity) H) in schedule order; u_all_t the stacked
// [u_iou; u_f] transposed, (arity * H, (3 + arity) H). Dynamic shared
// memory: (kPersistentMaxRows, (3 + arity) H + 2 arity units), accumulator
// type. The cell gradients' shares are scattered in A (each unit's share is
// the block's own), the h gradients in B.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    lstm_backward_persistent_kernel(LstmBackward<T> a, Scatter s, int64_t l_lo, int64_t l_hi,
                                    int64_t units, const T* u_all_t, T* d, unsigned* arrived) {
  using Acc = Accumulator<T>;
  const Forest& f = a.f;
  const int64_t H = a.H, N = f.arity, G = (3 + N) * H;
  const Slice b = slice(H, units);
  DLKERN_DYNAMIC_SMEM(Acc, x_s);
  Acc* dx_s = x_s + kPersistentMaxRows * G;
  Acc* dck_s = dx_s + kPersistentMaxRows * N * units;
  unsigned generation = 0;
  for (int64_t l = l_hi - 1; l >= l_lo; --l) {
    const int64_t first = f.level_offset[l], rows = f.level_offset[l + 1] - first;
    const int64_t* nodes = f.order + first;
    for (int64_t e = threadIdx.x; e < rows * b.U; e += blockDim.x) {
      const int64_t r = e / b.U, u = e % b.U;
      lstm_node_backward(a, nodes[r], b.u0 + u, d + (first + r) * G + b.u0 + u,
                         [&](int64_t k, Acc v) { dck_s[(r * N + k) * b.U + u] = v; });
    }
    __syncthreads();
    scatter_slice(s, l, H, b, dck_s, a.gc);
    grid_barrier(arrived, ++generation);
    children_grads(d + first * G, rows, G, u_all_t, N, H, b, x_s, dx_s);
    scatter_slice(s, l, H, b, dx_s, a.gh);
    __syncthreads();
  }
}

}  // namespace dlkern::cuda::tree
