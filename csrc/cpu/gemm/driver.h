// The BLIS-style GEMM driver behind matmul_cpu, for every CPU kernel that is a
// matrix product in disguise.
//
//   C (m x n) = A (m x k) @ B (k x n), then the epilogue of MatmulEpilogue.
//
// The driver owns the loop nest, the cache blocking, the packed buffers and
// the threads; the caller supplies packers that copy blocks of A and B into
// the layouts below. The strided-matrix packers (StridedPackers) are the
// default; convolution can pack input patches straight into B panels
// (implicit GEMM, no im2col buffer), attention and recurrent cells can pack
// their operands as they like.
//
// Packed layouts (T = float or double; MR, NR from the GemmKernel in use):
//
//   A block, rows [i0, i0 + rows) x depth [p0, p0 + kc):
//     ceil(rows / MR) micro-panels, one after another, MR * kc elements each.
//     Micro-panel q holds rows i0 + q*MR + r (r < MR) depth-major:
//       panel[p * MR + r] = alpha * A(i0 + q*MR + r, p0 + p)
//     Rows past i0 + rows are zero.
//
//   B panel, depth [p0, p0 + kc) x columns [j0, j0 + cols):
//     ceil(cols / NR) micro-panels, NR * kc elements each. Micro-panel q
//     holds columns j0 + q*NR + j (j < NR):
//       panel[p * NR + j] = B(p0 + p, j0 + q*NR + j)
//     Columns past j0 + cols are zero.
//
// The micro-kernel computes whole NR-wide rows and stores only the valid
// columns; the zeros keep the discarded lanes finite and cheap. The driver
// never multiplies by alpha: packers fold it into A.
//
// Loop nest (BLIS): jc over NC columns of C, pc over KC of depth (pack the B
// panel, kc x NC, shared by all threads and kept in L3), ic over MC rows
// (pack an A block, MC x kc, private to a thread and kept in its L2), jr over
// NR-wide B micro-panels (kc x NR, reused from L1 across the ir loop), ir
// over MR-tall A micro-panels: one micro-kernel call per MR x NR tile.
//
// Threads: the team splits C into tm x tn parts. Splitting rows (tm) is
// preferred: every core then streams the one shared B panel and keeps its own
// A block in its private L2. Columns are split only where rows are too few.
// All threads pack the shared B panel together, between two barriers.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "cpu/isa.h"
#include "dlkern/config.h"
#include "dlkern/matmul.h"

namespace dlkern::cpu::gemm {

// What a micro-kernel does with rows 0..m and columns 0..n of its tile of
// A @ B (m <= MR, n <= NR), element (i, j) at c[i*rs + j*cs]:
//   c = tile [+ c if load_c] [+ row_bias[i*bias_stride]] [+ col_bias[j*bias_stride]]
template <typename T>
struct TileStore {
  T* c;
  int64_t rs, cs;
  int m, n;
  bool load_c;
  const T* row_bias;
  const T* col_bias;
  int64_t bias_stride;
};

// tile = sum over p < kc of a[p*MR + i] * b[p*NR + j], then stored as above.
template <typename T>
using MicroKernelFn = void (*)(int64_t kc, const T* a, const T* b, const TileStore<T>& out);

// Packs `lines` lines of length kc into ceil(lines / W) zero-padded
// micro-panels (W = MR for A, NR for B): dst[q*W*kc + p*W + w] =
// scale * src[(q*W + w) * line_stride + p * k_stride]. A is packed with
// lines = rows, B with lines = columns.
template <typename T>
using PackFn = void (*)(int64_t lines, int64_t kc, const T* src, int64_t line_stride,
                        int64_t k_stride, T scale, T* dst);

// A matrix-vector product, for C with one row or one column, where packing
// would cost more than the product:
//   y[i*ys] = alpha * sum over p < k of a[i*rs + p*ks] * x[p*xs]
//             [+ y[i*ys] if accumulate] [+ bias[i*bias_stride]] [+ *bias0]
// for i < rows.
template <typename T>
struct Gemv {
  int64_t rows, k;
  const T* a;
  int64_t rs, ks;
  const T* x;
  int64_t xs;
  T alpha;
  T* y;
  int64_t ys;
  bool accumulate;
  const T* bias;
  int64_t bias_stride;
  const T* bias0;
};

template <typename T>
using GemvFn = void (*)(const Gemv<T>& g);

// One instruction set's micro-kernel, its packers and its cache blocking.
template <typename T>
struct GemmKernel {
  int mr, nr;          // register tile of C
  int64_t mc, kc, nc;  // A block mc x kc (L2), B panel kc x nc (L3); mc % mr == nc % nr == 0
  const MicroKernelFn<T>* micro_kernels;  // [r - 1] computes the first r <= mr rows of a tile
  PackFn<T> pack_a;    // W = mr
  PackFn<T> pack_b;    // W = nr
  GemvFn<T> gemv;
};

// Defined in microkernel_<isa>.cpp for float and double.
template <typename T> const GemmKernel<T>& kernels_generic();
template <typename T> const GemmKernel<T>& kernels_avx2();
template <typename T> const GemmKernel<T>& kernels_avx512();
template <> const GemmKernel<float>& kernels_generic<float>();
template <> const GemmKernel<double>& kernels_generic<double>();
template <> const GemmKernel<float>& kernels_avx2<float>();
template <> const GemmKernel<double>& kernels_avx2<double>();
template <> const GemmKernel<float>& kernels_avx512<float>();
template <> const GemmKernel<double>& kernels_avx512<double>();

// The kernel of the instruction set in use (cpu_isa()).
template <typename T>
const GemmKernel<T>& kernels() {
  return by_isa(&kernels_avx512<T>, &kernels_avx2<T>, &kernels_generic<T>);
}

// Threads worth using for an m x n x k product: get_num_threads(), or 1
// inside a parallel region (the caller parallelises outside), and fewer for
// small products, where waking threads costs more than it saves.
int gemm_threads(int64_t m, int64_t n, int64_t k);

// A 64-byte aligned scratch buffer owned by the calling thread, reused by
// later calls on that thread (grown, never shrunk). Two slots, so a thread
// can hold an A block and a B panel at once.
enum class Workspace : int { pack_a = 0, pack_b = 1 };
void* workspace(Workspace slot, size_t bytes);

namespace detail {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// [begin, end) of part `i` of `parts` near-equal parts of `count` items.
inline void split(int64_t count, int parts, int i, int64_t* begin, int64_t* end) {
  int64_t base = count / parts, extra = count % parts;
  *begin = i * base + std::min<int64_t>(i, extra);
  *end = *begin + base + (i < extra ? 1 : 0);
}

// Rows of threads (tm) x columns of threads (tn) = nt, giving the smallest
// largest share of micro-tiles; ties go to more rows (see the header).
inline int row_ways(int nt, int64_t m_tiles, int64_t n_tiles) {
  int best = nt;
  int64_t best_work = INT64_MAX;
  for (int tm = nt; tm >= 1; --tm) {
    if (nt % tm) continue;
    int64_t work = ceil_div(m_tiles, tm) * ceil_div(n_tiles, nt / tm);
    if (work < best_work) best = tm, best_work = work;
  }
  return best;
}

}  // namespace detail

// Runs C = A @ B + epilogue with `nthreads` threads (see gemm_threads).
// `packers` has two const methods (StridedPackers is an example):
//   pack_a(i0, rows, p0, kc, dst): pack the A block described at the top;
//   pack_b(j0, cols, p0, kc, dst): pack the B panel described at the top.
// Both are called concurrently from several threads on disjoint dst ranges.
// epilogue.alpha is ignored (the packers apply it). k == 0 stores the
// epilogue alone: C = bias, or C + bias with accumulate.
template <typename T, typename Packers>
void gemm_driver(const GemmKernel<T>& kernel, int64_t m, int64_t n, int64_t k,
                 const Packers& packers, MatrixView<T> c, const MatmulEpilogue<T>& epilogue,
                 int nthreads) {
  using detail::ceil_div;
  if (m <= 0 || n <= 0) return;
  const int64_t MR = kernel.mr, NR = kernel.nr;
  const int64_t kc_max = std::max<int64_t>(1, std::min(kernel.kc, k));
  const int64_t nc_max = std::min(kernel.nc, ceil_div(n, NR) * NR);
  T* b_panel = static_cast<T*>(workspace(Workspace::pack_b, sizeof(T) * kc_max * nc_max));

  auto body = [&](int tid, int nt) {
    const int tm = detail::row_ways(nt, ceil_div(m, MR), ceil_div(nc_max, NR));
    const int tn = nt / tm;
    // This thread's rows, in whole micro-panels, cut into near-equal A blocks.
    int64_t q0, q1;
    detail::split(ceil_div(m, MR), tm, tid / tn, &q0, &q1);
    const int64_t row_begin = q0 * MR, row_end = std::min(m, q1 * MR);
    const int64_t blocks = ceil_div(row_end - row_begin, kernel.mc);
    const int64_t block_rows = ceil_div(ceil_div(row_end - row_begin, blocks), MR) * MR;
    T* a_block = nullptr;
    if (row_begin < row_end)
      a_block = static_cast<T*>(workspace(Workspace::pack_a, sizeof(T) * kc_max * block_rows));

    for (int64_t jc = 0; jc < n; jc += kernel.nc) {
      const int64_t nc = std::min(kernel.nc, n - jc);
      const int64_t panels = ceil_div(nc, NR);
      int64_t jr0, jr1;  // this thread's B micro-panels
      detail::split(panels, tn, tid % tn, &jr0, &jr1);

      for (int64_t pc = 0; pc == 0 || pc < k; pc += kernel.kc) {
        const int64_t kc = std::min(kernel.kc, k - pc);
        // Everyone is done with the previous panel; pack this one together.
        if (nt > 1 && (jc > 0 || pc > 0)) {
#pragma omp barrier
        }
        int64_t b0, b1;
        detail::split(panels, nt, tid, &b0, &b1);
        if (b0 < b1)
          packers.pack_b(jc + b0 * NR, std::min(nc, b1 * NR) - b0 * NR, pc, kc,
                         b_panel + b0 * NR * kc);
        if (nt > 1) {
#pragma omp barrier
        }
        if (jr0 == jr1) continue;

        TileStore<T> out{};
        out.rs = c.row_stride;
        out.cs = c.col_stride;
        out.load_c = epilogue.accumulate || pc > 0;
        const bool last = pc + kc >= k;
        out.bias_stride = epilogue.bias_stride;
        for (int64_t ic = row_begin; ic < row_end; ic += block_rows) {
          const int64_t mc = std::min(block_rows, row_end - ic);
          packers.pack_a(ic, mc, pc, kc, a_block);
          for (int64_t jr = jr0; jr < jr1; ++jr) {
            const int64_t j = jc + jr * NR;
            out.n = static_cast<int>(std::min(NR, n - j));
            out.col_bias = last && epilogue.col_bias ? epilogue.col_bias + j * epilogue.bias_stride
                                                     : nullptr;
            const T* b = b_panel + jr * NR * kc;
            for (int64_t ir = 0; ir < mc; ir += MR) {
              const int64_t i = ic + ir;
              out.m = static_cast<int>(std::min(MR, row_end - i));
              out.c = c.data + i * c.row_stride + j * c.col_stride;
              out.row_bias = last && epilogue.row_bias
                                 ? epilogue.row_bias + i * epilogue.bias_stride
                                 : nullptr;
              kernel.micro_kernels[out.m - 1](kc, a_block + ir * kc, b, out);
            }
          }
        }
      }
    }
  };

  if (nthreads <= 1) {
    body(0, 1);
  } else {
#pragma omp parallel num_threads(nthreads)
    body(omp_get_thread_num(), omp_get_num_threads());
  }
}

// The default packers, for strided matrices (any strides, zero and negative
// included); alpha is folded into A.
template <typename T>
struct StridedPackers {
  const GemmKernel<T>& kernel;
  MatrixView<const T> a, b;
  T alpha;

  void pack_a(int64_t i0, int64_t rows, int64_t p0, int64_t kc, T* dst) const {
    kernel.pack_a(rows, kc, a.data + i0 * a.row_stride + p0 * a.col_stride, a.row_stride,
                  a.col_stride, alpha, dst);
  }
  void pack_b(int64_t j0, int64_t cols, int64_t p0, int64_t kc, T* dst) const {
    kernel.pack_b(cols, kc, b.data + p0 * b.row_stride + j0 * b.col_stride, b.col_stride,
                  b.row_stride, T(1), dst);
  }
};

}  // namespace dlkern::cpu::gemm
