// The level loop shared by the CPU tree kernels: each level's gather of the
// children's rows, and the deterministic scatter of gradients back into them.
// Forward, per level (in chunks of rows, below): gather the children's rows
// into a (rows, arity * H) matrix, one product on the GEMM engine with a
// weight packed once per call (rnn::StepProduct), one pointwise pass. Backward, from the deepest level:
// the pointwise derivative, one product for the children's gradients, and a
// scatter that adds them into the children's rows.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/gemm/driver.h"
#include "cpu/rnn/common.h"
#include "cpu/rnn/recurrent.h"
#include "dlkern/tree.h"

namespace dlkern::cpu::tree {

using rnn::AlignedArray;
using rnn::PackedWeight;
using rnn::StepProduct;

// The nodes of level l (indices into [leaves; internal]) and their number.
struct Level {
  const int64_t* nodes;
  int64_t rows;
  int64_t first;  // position of nodes[0] in the schedule order
};

inline Level level(const TreeForest& f, int64_t l) {
  return {f.order + f.level_offset[l], f.level_offset[l + 1] - f.level_offset[l],
          f.level_offset[l]};
}

inline const int64_t* children_of(const TreeForest& f, int64_t node) {
  return f.children + (node - f.n_leaves) * f.arity;
}

// How many of a level's rows run as one product: enough that the gathered
// rows (rows x k elements) stay in a 256 KiB L2 between the gather, the
// packing and the product (every thread's column blocks stream all of
// them), a multiple of the micro-kernel's mr. It does not depend on the
// thread count, so neither do the results.
inline int64_t chunk_rows(int64_t k, int64_t element_size, int64_t mr) {
  const int64_t fit = (int64_t(256) << 10) / std::max<int64_t>(1, k * element_size);
  return std::max(mr, fit / mr * mr);
}

// The levels cut into chunks of at most `rows` rows, shallowest level first
// or deepest first; within a level always in node order.
inline std::vector<Level> chunks(const TreeForest& f, int64_t rows, bool deepest_first) {
  std::vector<Level> out;
  for (int64_t i = 0; i < f.n_levels; ++i) {
    const Level lv = level(f, deepest_first ? f.n_levels - 1 - i : i);
    for (int64_t r = 0; r < lv.rows; r += rows)
      out.push_back({lv.nodes + r, std::min(rows, lv.rows - r), lv.first + r});
  }
  return out;
}

// The most rows any chunk has.
inline int64_t widest(const std::vector<Level>& parts) {
  int64_t rows = 1;
  for (const Level& p : parts) rows = std::max(rows, p.rows);
  return rows;
}

// What a level loop packs once per call: B (k x units), element (p, u) =
// src[u * unit_stride + p * k_stride], in the micro-kernels' layout; the
// levels in chunks (in L2 as A, k wide), in the loop's order; the buffer the
// threads pack each chunk's A into.
template <typename T>
struct LevelProducts {
  LevelProducts(const TreeForest& f, int64_t k, int64_t units, const T* src, int64_t unit_stride,
                int64_t k_stride, bool deepest_first)
      : w(gemm::kernels<T>(), k, 1, units, src, 0, unit_stride, k_stride),
        parts(chunks(f, chunk_rows(k, sizeof(T), w.kernel().mr), deepest_first)),
        rows(widest(parts)),
        a_pack(w.a_pack_size(rows)) {}

  int threads() const { return gemm::gemm_threads(rows, w.units(), w.k()); }

  // C = A @ B (+ bias) for chunk lv's rows, A (rows x k) and C (rows x
  // units) contiguous; thread tid's column blocks, each followed by
  // after(u0, u1). Every thread of the region must call it (see StepProduct).
  template <typename After>
  void run(const Level& lv, const T* a, T* c, const T* bias, int tid, int nthreads,
           After&& after) const {
    const StepProduct<T> product{w, a_pack.get(), a, w.k(), c, w.units(), {0}, {false}, {bias}};
    product.run(lv.rows, tid, nthreads, after);
  }

  const PackedWeight<T> w;
  const std::vector<Level> parts;
  const int64_t rows;  // the most rows of a chunk
  const AlignedArray<T> a_pack;
};

// Thread tid's share of rows [0, rows).
inline void share(int64_t rows, int tid, int nthreads, int64_t* r0, int64_t* r1) {
  gemm::detail::split(rows, nthreads, tid, r0, r1);
}

// Rows [r0, r1) of `nodes`: each node's children's rows of `table` (ld
// apart, `width` wide), side by side in x (rows, arity * width), zeros for a
// missing child.
template <typename T>
void gather(const TreeForest& f, const int64_t* nodes, int64_t r0, int64_t r1, const T* table,
            int64_t ld, int64_t width, T* x) {
  const int64_t K = f.arity * width;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t* ch = children_of(f, nodes[r]);
    for (int64_t k = 0; k < f.arity; ++k) {
      T* dst = x + r * K + k * width;
      if (ch[k] < 0)
        std::fill_n(dst, width, T(0));
      else
        std::copy_n(table + ch[k] * ld, width, dst);
    }
  }
}

// Units [u0, u1) of each child's slot of dx (rows, arity * H) added into the
// child's row of g (n_nodes, H), rows and slots in order: one thread owns the
// units, so a node that is the child of several parents gathers their sums
// in the same order whatever the thread count.
template <typename T>
void scatter_add(const TreeForest& f, Level lv, const T* dx, int64_t H, T* g, int64_t u0,
                 int64_t u1) {
  const int64_t K = f.arity * H;
  for (int64_t r = 0; r < lv.rows; ++r) {
    const int64_t* ch = children_of(f, lv.nodes[r]);
    for (int64_t k = 0; k < f.arity; ++k) {
      if (ch[k] < 0) continue;
      T* dst = g + ch[k] * H;
      const T* src = dx + r * K + k * H;
#pragma omp simd
      for (int64_t j = u0; j < u1; ++j) dst[j] += src[j];
    }
  }
}

// Rows [r0, r1) of a strided (rows, H) view copied into contiguous dst.
template <typename T>
void copy_rows(MatrixView<const T> src, int64_t r0, int64_t r1, int64_t H, T* dst) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = src.data + r * src.row_stride;
    if (src.col_stride == 1) {
      std::memcpy(dst + r * H, row, sizeof(T) * H);
      continue;
    }
    for (int64_t j = 0; j < H; ++j) dst[r * H + j] = row[j * src.col_stride];
  }
}

}  // namespace dlkern::cpu::tree
