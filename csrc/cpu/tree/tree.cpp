// tree_compose on the CPU: node = activation(W [h_c1; ...; h_c_arity] + b),
// level by level (cpu/tree/levels.h). The backward reads the activation's
// slope from the forward's output, so the forward saves nothing beyond it.
#include <vector>

#include "cpu/tree/levels.h"
#include "cpu/tree/pointwise.h"
#include "dlkern/matmul.h"

namespace dlkern {
namespace cpu::tree {
namespace {

template <typename T>
void compose_forward(const TreeForest& f, const TreeParams& p, TreeActivation act,
                     MatrixView<const T> leaves, const T* weight, const T* bias, T* out) {
  const auto activate = kernels<T>().activate[static_cast<int>(act)];
  const int64_t H = p.hidden_size, K = f.arity * H;
  copy_rows(leaves, 0, f.n_leaves, H, out);
  if (f.n_levels == 0) return;
  // B (K x H) = weight^T: unit u's column is weight's row u.
  const LevelProducts<T> w(f, K, H, weight, K, 1, false);
#pragma omp parallel num_threads(w.threads())
  {
    const AlignedArray<T> pack(w.a_pack_size());
    std::vector<T> x(w.rows * K), z(w.rows * H);
    // A chunk: gather, product, activation into the output rows.
    auto chunk = [&](const Level& c, int64_t) {
      gather(f, c, out, H, x.data());
      w.run(c, x.data(), z.data(), bias, pack.get(), [&](int64_t u0, int64_t u1) {
        for (int64_t r = 0; r < c.rows; ++r)
          activate(z.data() + r * H, out + c.nodes[r] * H, u0, u1);
      });
    };
    for_levels(w.levels, omp_get_thread_num(), omp_get_num_threads(), chunk, no_spread);
  }
}

template <typename T>
void compose_backward(const TreeForest& f, const TreeParams& p, TreeActivation act,
                      const T* grad_out, const T* out, const T* weight, T* grad_leaves,
                      T* grad_weight, T* grad_bias) {
  const auto slope = kernels<T>().slope[static_cast<int>(act)];
  const int64_t H = p.hidden_size, K = f.arity * H, n = f.n_internal;
  // g: the gradient of every node's output, completed level by level (a
  // node's parents are all deeper than it); dz: of each internal node's
  // pre-activation, in schedule order, as the weight gradient reads them;
  // x: the gathered children's rows, likewise.
  std::vector<T> g(grad_out, grad_out + (f.n_leaves + n) * H), dz(n * H);
  std::vector<T> x(grad_weight ? n * K : 0);
  // B (H x K) = weight: the children's gradients are dz @ weight.
  const LevelProducts<T> w(f, H, K, weight, 1, K, true);
  std::vector<T> dx(w.widest_level * K);  // a level's children's gradients
#pragma omp parallel num_threads(w.threads())
  {
    const AlignedArray<T> pack(w.a_pack_size());
    // A chunk of the level starting at schedule position first: dz, the
    // gathered rows, the children's gradients.
    auto chunk = [&](const Level& c, int64_t first) {
      T* dz_c = dz.data() + c.first * H;
      for (int64_t r = 0; r < c.rows; ++r)
        slope(g.data() + c.nodes[r] * H, out + c.nodes[r] * H, dz_c + r * H, H);
      if (grad_weight) gather(f, c, out, H, x.data() + c.first * K);
      w.run(c, dz_c, dx.data() + (c.first - first) * K, nullptr, pack.get(),
            [](int64_t, int64_t) {});
    };
    auto spread = [&](const Level& l, int t, int nt) {
      int64_t u0, u1;
      share(H, t, nt, &u0, &u1);
      scatter_add(f, l, dx.data(), H, g.data(), u0, u1);
    };
    for_levels(w.levels, omp_get_thread_num(), omp_get_num_threads(), chunk, spread);
  }
  if (grad_leaves) std::copy_n(g.data(), f.n_leaves * H, grad_leaves);
  if (grad_weight)
    matmul_cpu<T>({H, K, n}, {dz.data(), 1, H}, {x.data(), K, 1}, {grad_weight, K, 1});
  if (grad_bias) rnn::column_sums<T>(n, H, dz.data(), grad_bias);
}

}  // namespace
}  // namespace cpu::tree

template <typename T>
void tree_compose_forward_cpu(const TreeForest& f, const TreeParams& p, TreeActivation act,
                              MatrixView<const T> leaves, const T* weight, const T* bias, T* out) {
  cpu::tree::compose_forward<T>(f, p, act, leaves, weight, bias, out);
}

template <typename T>
void tree_compose_backward_cpu(const TreeForest& f, const TreeParams& p, TreeActivation act,
                               const T* grad_out, const T* out, const T* weight, T* grad_leaves,
                               T* grad_weight, T* grad_bias) {
  cpu::tree::compose_backward<T>(f, p, act, grad_out, out, weight, grad_leaves, grad_weight,
                                 grad_bias);
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
