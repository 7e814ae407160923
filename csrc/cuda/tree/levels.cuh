// The tree kernels' memory-bound passes around the level products: copies of
// row blocks, the gather of a level's children's rows, and the deterministic
// scatter of the children's gradients. One thread per element (grid-stride);
// no atomics: every sum runs in a fixed order, so results repeat exactly.
#pragma once

#include <cstdint>

#include "cuda/numeric.cuh"
#include "dlkern/types.h"

namespace dlkern::cuda::tree {

constexpr int kThreads = 256;

// The forest on the device: children (n_internal, arity), order and
// level_offset as dlkern::tree_levels makes them.
struct Forest {
  const int64_t* children;
  const int64_t* order;
  const int64_t* level_offset;
  int64_t n_leaves, arity;
};

__device__ __forceinline__ int64_t child_of(const Forest& f, int64_t node, int64_t k) {
  return f.children[(node - f.n_leaves) * f.arity + k];
}

#define DLKERN_TREE_GRID_STRIDE(e, count)                                          \
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < (count); \
       e += int64_t{gridDim.x} * blockDim.x)

// dst (rows, H) contiguous = src's rows converted; a null src gives zeros.
template <typename Out, typename T>
__global__ void __launch_bounds__(kThreads)
    copy_rows_kernel(int64_t rows, int64_t H, MatrixView<const T> src, Out* dst) {
  DLKERN_TREE_GRID_STRIDE(e, rows * H) {
    const int64_t r = e / H, j = e - r * H;
    dst[e] = src.data ? convert<Out>(src.data[r * src.row_stride + j * src.col_stride])
                      : convert<Out>(0.0f);
  }
}

// out (cols, rows) = in (rows, cols) transposed, both contiguous.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    transpose_kernel(int64_t rows, int64_t cols, const T* in, T* out) {
  DLKERN_TREE_GRID_STRIDE(e, rows * cols) {
    const int64_t c = e / rows, r = e - c * rows;
    out[e] = in[r * cols + c];
  }
}

// x (rows, arity * H): row r holds the rows of table (n_nodes, H) of
// nodes[r]'s children side by side, zeros for a missing child.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gather_kernel(Forest f, int64_t rows, const int64_t* nodes, int64_t H, const T* table, T* x) {
  const int64_t K = f.arity * H;
  DLKERN_TREE_GRID_STRIDE(e, rows * K) {
    const int64_t r = e / K, q = e - r * K, k = q / H, j = q - k * H;
    const int64_t c = child_of(f, nodes[r], k);
    x[e] = c >= 0 ? table[c * H + j] : convert<T>(0.0f);
  }
}

// The backward's scatter groups on the device (schedule.h's scatter_groups):
// group g adds slots slot[start[g]] .. slot[start[g + 1] - 1] (r * arity + k
// of its level's rows) into child[g]'s row; level l's groups are
// level[l] .. level[l + 1] - 1.
struct Scatter {
  const int64_t* child;
  const int64_t* start;
  const int64_t* slot;
  const int64_t* level;
};

// One unit of group g's child: *dst += value(slot) for its slots, in order.
// One thread per (group, unit): a child named by several slots sums them in
// the CPU's order, whatever the launch's shape.
template <typename Acc, typename Value>
__device__ __forceinline__ void add_slots(const Scatter& s, int64_t g, Value&& value, Acc* dst) {
  Acc sum = *dst;
  for (int64_t i = s.start[g]; i < s.start[g + 1]; ++i) sum += value(s.slot[i]);
  *dst = sum;
}

// Level l's groups (g0 .. g0 + groups - 1): unit j of each child's row of dst
// gathers its slots of src (rows of arity * H, slot q at q * H).
template <typename Acc, typename Src>
__global__ void __launch_bounds__(kThreads)
    scatter_add_kernel(Scatter s, int64_t g0, int64_t groups, int64_t H, const Src* src,
                       Acc* dst) {
  DLKERN_TREE_GRID_STRIDE(e, groups * H) {
    const int64_t g = g0 + e / H, j = e % H;
    add_slots(s, g, [&](int64_t q) { return convert<Acc>(src[q * H + j]); },
              dst + s.child[g] * H + j);
  }
}

}  // namespace dlkern::cuda::tree
