// tree_compose on the CPU: node = activation(W [h_c1; ...; h_c_arity] + b),
// level by level (cpu/tree/levels.h). The backward reads the activation's
// slope from the forward's output, so the forward saves nothing beyond it.
#include <vector>

#include "common/tree.h"
#include "cpu/tree/levels.h"
#include "dlkern/matmul.h"

namespace dlkern {
namespace cpu::tree {
namespace {

using dlkern::tree::activate;
using dlkern::tree::activation_slope;

template <typename T, TreeActivation A>
void compose_forward(const TreeForest& f, const TreeParams& p, MatrixView<const T> leaves,
                     const T* weight, const T* bias, T* out) {
  const int64_t H = p.hidden_size, K = f.arity * H;
  copy_rows(leaves, 0, f.n_leaves, H, out);
  if (f.n_levels == 0) return;
  const int64_t widest = widest_level(f);
  // B (K x H) = weight^T: unit u's column is weight's row u.
  const PackedWeight<T> w(gemm::kernels<T>(), K, 1, H, weight, 0, K, 1);
  const AlignedArray<T> a_pack(w.a_pack_size(widest));
  std::vector<T> x(widest * K), z(widest * H);
#pragma omp parallel num_threads(gemm::gemm_threads(widest, H, K))
  {
    const int tid = omp_get_thread_num(), nthreads = omp_get_num_threads();
    for (int64_t l = 0; l < f.n_levels; ++l) {
      const Level lv = level(f, l);
      int64_t r0, r1;
      share(lv.rows, tid, nthreads, &r0, &r1);
      gather(f, lv.nodes, r0, r1, out, H, H, x.data());
#pragma omp barrier
      const StepProduct<T> product{w, a_pack.get(), x.data(), K, z.data(), H, {0}, {false},
                                   {bias}};
      product.run(lv.rows, tid, nthreads, [&](int64_t u0, int64_t u1) {
        for (int64_t r = 0; r < lv.rows; ++r) {
          const T* zr = z.data() + r * H;
          T* dst = out + lv.nodes[r] * H;
#pragma omp simd
          for (int64_t j = u0; j < u1; ++j) dst[j] = activate<A>(zr[j]);
        }
      });
#pragma omp barrier
    }
  }
}

template <typename T, TreeActivation A>
void compose_backward(const TreeForest& f, const TreeParams& p, const T* grad_out, const T* out,
                      const T* weight, T* grad_leaves, T* grad_weight, T* grad_bias) {
  const int64_t H = p.hidden_size, K = f.arity * H, n = f.n_internal;
  // g: the gradient of every node's output, completed level by level (a
  // node's parents are all deeper than it); dz: of each internal node's
  // pre-activation, in schedule order, as the weight gradient reads them.
  std::vector<T> g(grad_out, grad_out + (f.n_leaves + n) * H), dz(n * H), x(n * K);
  const int64_t widest = std::max<int64_t>(1, widest_level(f));
  // B (H x K) = weight: the children's gradients are dz @ weight.
  const PackedWeight<T> w(gemm::kernels<T>(), H, 1, K, weight, 0, 1, K);
  const AlignedArray<T> a_pack(w.a_pack_size(widest));
  std::vector<T> dx(widest * K);
#pragma omp parallel num_threads(gemm::gemm_threads(widest, K, H))
  {
    const int tid = omp_get_thread_num(), nthreads = omp_get_num_threads();
    int64_t u0, u1;
    share(H, tid, nthreads, &u0, &u1);
    for (int64_t l = f.n_levels - 1; l >= 0; --l) {
      const Level lv = level(f, l);
      int64_t r0, r1;
      share(lv.rows, tid, nthreads, &r0, &r1);
      T* dz_level = dz.data() + lv.first * H;
      for (int64_t r = r0; r < r1; ++r) {
        const T* y = out + lv.nodes[r] * H;
        const T* gr = g.data() + lv.nodes[r] * H;
        T* d = dz_level + r * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) d[j] = gr[j] * activation_slope<A>(y[j]);
      }
      if (grad_weight) gather(f, lv.nodes, r0, r1, out, H, H, x.data() + lv.first * K);
#pragma omp barrier
      const StepProduct<T> product{w, a_pack.get(), dz_level, H, dx.data(), K, {0}, {false},
                                   {nullptr}};
      product.run(lv.rows, tid, nthreads, [](int64_t, int64_t) {});
#pragma omp barrier
      scatter_add(f, lv, dx.data(), H, g.data(), u0, u1);
#pragma omp barrier
    }
  }
  if (grad_leaves) std::copy_n(g.data(), f.n_leaves * H, grad_leaves);
  if (grad_weight) matmul_cpu<T>({H, K, n}, {dz.data(), 1, H}, {x.data(), K, 1}, {grad_weight, K, 1});
  if (grad_bias) rnn::column_sums<T>(n, H, dz.data(), grad_bias);
}

}  // namespace
}  // namespace cpu::tree

template <typename T>
void tree_compose_forward_cpu(const TreeForest& f, const TreeParams& p, TreeActivation act,
                              MatrixView<const T> leaves, const T* weight, const T* bias, T* out) {
  tree::dispatch_activation(act, [&](auto a) {
    cpu::tree::compose_forward<T, decltype(a)::value>(f, p, leaves, weight, bias, out);
  });
}

template <typename T>
void tree_compose_backward_cpu(const TreeForest& f, const TreeParams& p, TreeActivation act,
                               const T* grad_out, const T* out, const T* weight, T* grad_leaves,
                               T* grad_weight, T* grad_bias) {
  tree::dispatch_activation(act, [&](auto a) {
    cpu::tree::compose_backward<T, decltype(a)::value>(f, p, grad_out, out, weight, grad_leaves,
                                                       grad_weight, grad_bias);
  });
}

#define DLKERN_INSTANTIATE(T)                                                                   \
  template void tree_compose_forward_cpu<T>(const TreeForest&, const TreeParams&, TreeActivation, \
                                            MatrixView<const T>, const T*, const T*, T*);       \
  template void tree_compose_backward_cpu<T>(const TreeForest&, const TreeParams&,              \
                                             TreeActivation, const T*, const T*, const T*, T*,  \
                                             T*, T*);
DLKERN_INSTANTIATE(float)
DLKERN_INSTANTIATE(double)
#undef DLKERN_INSTANTIATE

}  // namespace dlkern
