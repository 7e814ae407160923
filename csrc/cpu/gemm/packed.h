// Operands packed once and multiplied many times, micro-tile by micro-tile,
// for kernels that reuse an operand across products (a mixture's factors for
// every tile of samples, attention's key and value blocks for every query
// block that sees them) and act on each micro-tile of a product as it is
// made. The layouts are the driver's (driver.h); the loops are its jr and ir
// loops over one packed block of A and one of B.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/gemm/driver.h"

namespace dlkern::cpu::gemm {

// `lines` lines of length `depth` in micro-panels of W lines (W = mr for an A
// operand, nr for a B operand), the depth in blocks of at most the kernel's
// kc, each depth block's micro-panels one after another. The buffer is kept
// (and only grown) from one pack to the next.
template <typename T>
class Packed {
 public:
  // Line l, depth p is scale * src[l * line_stride + p * k_stride].
  void pack(const GemmKernel<T>& gk, bool a_side, int64_t lines, int64_t depth, const T* src,
            int64_t line_stride, int64_t k_stride, T scale = T(1)) {
    w_ = a_side ? gk.mr : gk.nr;
    lines_ = lines;
    depth_ = depth;
    kc_ = std::max<int64_t>(1, std::min<int64_t>(depth, gk.kc));
    panels_ = (lines + w_ - 1) / w_;
    if (static_cast<int64_t>(data_.size()) < panels_ * w_ * depth) data_.resize(panels_ * w_ * depth);
    const PackFn<T> fn = a_side ? gk.pack_a : gk.pack_b;
    for (int64_t p0 = 0; p0 < depth; p0 += kc_)
      fn(lines, kc(p0), src + p0 * k_stride, line_stride, k_stride, scale, block(p0));
  }

  int64_t lines() const { return lines_; }
  int64_t depth() const { return depth_; }
  int64_t width() const { return w_; }
  // The depth of the block starting at p0, and the step between blocks.
  int64_t kc(int64_t p0) const { return std::min(kc_, depth_ - p0); }
  int64_t kc_step() const { return kc_; }
  // Micro-panel q of the depth block starting at p0.
  const T* panel(int64_t p0, int64_t q) const { return block(p0) + q * w_ * kc(p0); }

 private:
  T* block(int64_t p0) { return data_.data() + panels_ * w_ * p0; }
  const T* block(int64_t p0) const { return data_.data() + panels_ * w_ * p0; }

  int64_t w_ = 1, lines_ = 0, depth_ = 0, kc_ = 1, panels_ = 0;
  std::vector<T> data_;
};

// The product of A (a.lines() rows) and the first b_lines lines of B (columns)
// over A's depth, which is B's, or, in one depth block each, at most B's
// (B's first a.depth() steps: a block of keys shorter than the one packed).
// For each B micro-panel (columns j0 .. j0 + n) and A micro-panel (rows i0 ..
// i0 + m), out(i0, m, j0, n) gives the TileStore the micro-kernel writes
// through (its load_c for the first depth block; later blocks add to what it
// stored), then done(i0, m, j0, n) runs: the tile is complete.
template <typename T, typename Out, typename Done>
void multiply_packed(const GemmKernel<T>& gk, const Packed<T>& a, const Packed<T>& b,
                     int64_t b_lines, Out&& out, Done&& done) {
  const int64_t mr = a.width(), nr = b.width(), depth = a.depth();
  for (int64_t j0 = 0; j0 < b_lines; j0 += nr) {
    const int n = static_cast<int>(std::min(nr, b_lines - j0));
    for (int64_t i0 = 0; i0 < a.lines(); i0 += mr) {
      const int m = static_cast<int>(std::min(mr, a.lines() - i0));
      TileStore<T> tile = out(i0, m, j0, n);
      tile.m = m;
      tile.n = n;
      int64_t p0 = 0;
      do {  // once at least: a product of depth 0 stores zeros (or C)
        gk.micro_kernels[m - 1](a.kc(p0), a.panel(p0, i0 / mr), b.panel(p0, j0 / nr), tile);
        tile.load_c = true;
        tile.row_bias = tile.col_bias = nullptr;
        p0 += a.kc_step();
      } while (p0 < depth);
      done(i0, m, j0, n);
    }
  }
}

// c (= or +=) A B over the first n lines of B, c of any strides.
template <typename T>
void multiply_into(const GemmKernel<T>& gk, const Packed<T>& a, const Packed<T>& b, int64_t n,
                   MatrixView<T> c, bool accumulate) {
  multiply_packed(
      gk, a, b, n,
      [&](int64_t i, int, int64_t j, int) {
        return TileStore<T>{c.data + i * c.row_stride + j * c.col_stride, c.row_stride,
                            c.col_stride, 0, 0, accumulate, nullptr, nullptr, 1};
      },
      [](int64_t, int, int64_t, int) {});
}

}  // namespace dlkern::cpu::gemm
