// The level loop shared by the CPU tree kernels: each level's gather of the
// children's rows, and the deterministic scatter of gradients back into them.
// Forward, per level (in chunks of rows, below): gather the children's rows
// into a (rows, arity * H) matrix, one product on the GEMM engine with a
// weight packed once per call (rnn::StepProduct), one pointwise pass.
// Backward, from the deepest level: the pointwise derivative, one product
// for the children's gradients, and a scatter that adds them into the
// children's rows.
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
// packing and the product, a multiple of the micro-kernel's mr. It does not
// depend on the thread count, so neither do the results.
inline int64_t chunk_rows(int64_t k, int64_t element_size, int64_t mr) {
  const int64_t fit = (int64_t(256) << 10) / std::max<int64_t>(1, k * element_size);
  return std::max(mr, fit / mr * mr);
}

// A level and its rows in chunks, in node order.
struct ChunkedLevel {
  Level whole;
  std::vector<Level> chunks;
};

// The levels, shallowest or deepest first, in chunks of at most `rows` rows.
inline std::vector<ChunkedLevel> chunked_levels(const TreeForest& f, int64_t rows,
                                                bool deepest_first) {
  std::vector<ChunkedLevel> out;
  for (int64_t i = 0; i < f.n_levels; ++i) {
    ChunkedLevel c{level(f, deepest_first ? f.n_levels - 1 - i : i), {}};
    for (int64_t r = 0; r < c.whole.rows; r += rows)
      c.chunks.push_back({c.whole.nodes + r, std::min(rows, c.whole.rows - r), c.whole.first + r});
    out.push_back(std::move(c));
  }
  return out;
}

// What a level loop packs once per call: B (k x units), element (p, u) =
// src[u * unit_stride + p * k_stride], in the micro-kernels' layout, and the
// levels in chunks (A in L2, k wide), in the loop's order.
template <typename T>
struct LevelProducts {
  LevelProducts(const TreeForest& f, int64_t k, int64_t units, const T* src, int64_t unit_stride,
                int64_t k_stride, bool deepest_first)
      : w(gemm::kernels<T>(), k, 1, units, src, 0, unit_stride, k_stride),
        levels(chunked_levels(f, chunk_rows(k, sizeof(T), w.kernel().mr), deepest_first)) {
    for (const ChunkedLevel& l : levels) {
      widest_level = std::max(widest_level, l.whole.rows);
      for (const Level& c : l.chunks) rows = std::max(rows, c.rows);
    }
  }

  int threads() const { return gemm::gemm_threads(widest_level, w.units(), w.k()); }

  // C = A @ B (+ bias) for chunk lv's rows by the calling thread alone, A
  // (rows x k) and C (rows x units) contiguous, A packed into a_pack
  // (a_pack_size() elements, the thread's own); after(u0, u1) follows each
  // block of columns.
  template <typename After>
  void run(const Level& lv, const T* a, T* c, const T* bias, T* a_pack, After&& after) const {
    const StepProduct<T> product{w, a_pack, a, w.k(), c, w.units(), {0}, {false}, {bias}};
    product.run(lv.rows, 0, 1, after);
  }

  int64_t a_pack_size() const { return w.a_pack_size(rows); }

  const PackedWeight<T> w;
  const std::vector<ChunkedLevel> levels;
  int64_t rows = 1;          // the most rows of a chunk
  int64_t widest_level = 1;  // the most rows of a level
};

// The level loop, called by every thread tid of nthreads of a region:
// chunk(c, first) runs chunk c of the level starting at schedule position
// first, alone; spread(whole, t, nt) is what thread t of nt does with a
// finished level (the backward's scatter: each thread a share of the
// units). A level of several chunks runs them on all threads in turn (every
// nthreads-th from the tid-th), then spread on all; consecutive levels of
// one chunk (the deep, narrow ones, and every level of a chain) run on
// thread 0 alone, chunk then spread(whole, 0, 1), with no barrier between
// them. Either way each element is the same sum, added in the same order,
// so results do not depend on the thread count.
template <typename Chunk, typename Spread>
void for_levels(const std::vector<ChunkedLevel>& levels, int tid, int nthreads, Chunk&& chunk,
                Spread&& spread) {
  for (size_t i = 0; i < levels.size();) {
    if (levels[i].chunks.size() > 1) {
      const ChunkedLevel& l = levels[i++];
      for (size_t c = tid; c < l.chunks.size(); c += nthreads) chunk(l.chunks[c], l.whole.first);
#pragma omp barrier
      spread(l.whole, tid, nthreads);
#pragma omp barrier
      continue;
    }
    size_t j = i;
    while (j < levels.size() && levels[j].chunks.size() == 1) ++j;
    if (tid == 0)
      for (size_t k = i; k < j; ++k) {
        chunk(levels[k].whole, levels[k].whole.first);
        spread(levels[k].whole, 0, 1);
      }
#pragma omp barrier
    i = j;
  }
}

// Thread tid's share of rows [0, rows).
inline void share(int64_t rows, int tid, int nthreads, int64_t* r0, int64_t* r1) {
  gemm::detail::split(rows, nthreads, tid, r0, r1);
}

// A spread that does nothing (the forward's).
inline void no_spread(const Level&, int, int) {}

// For each node of chunk c, its children's rows of table (n_nodes, H) side
// by side in x (rows, arity * H), zeros for a missing child.
template <typename T>
void gather(const TreeForest& f, const Level& c, const T* table, int64_t H, T* x) {
  const int64_t K = f.arity * H;
  for (int64_t r = 0; r < c.rows; ++r) {
    const int64_t* ch = children_of(f, c.nodes[r]);
    for (int64_t k = 0; k < f.arity; ++k) {
      T* dst = x + r * K + k * H;
      if (ch[k] < 0)
        std::fill_n(dst, H, T(0));
      else
        std::copy_n(table + ch[k] * H, H, dst);
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
