// The N-ary Tree-LSTM on the CPU (cpu/tree/levels.h's level loop). Per
// internal node, with x = [h_1; ...; h_N] its children's h (zeros where
// missing) and p its node input's projection (computed for every node at
// once before the levels):
//   [i o u | f_1 .. f_N] = [u_iou; u_f] x + [p_iou | p_f, ..., p_f]
//   c = i u + sum_k f_k c_k,   h = o tanh(c)
// one product per level (per chunk of a wide level) over the stacked weight
// [u_iou; u_f], then one pointwise pass per row. The forward saves the activated gates; the
// backward reads c and h from the forward's outputs.
#include <vector>

#include "cpu/tree/levels.h"
#include "cpu/tree/pointwise.h"
#include "dlkern/matmul.h"

namespace dlkern {
namespace cpu::tree {
namespace {

// [top; bottom]: the rows of two contiguous matrices with `cols` columns, stacked.
template <typename T>
std::vector<T> stack(const T* top, int64_t top_rows, const T* bottom, int64_t bottom_rows,
                     int64_t cols) {
  std::vector<T> s(top, top + top_rows * cols);
  s.insert(s.end(), bottom, bottom + bottom_rows * cols);
  return s;
}

// The children's c rows of `node`, null where missing, into cc (arity entries).
template <typename T>
const T* const* children_c(const TreeForest& f, int64_t node, const T* c, int64_t H,
                           std::vector<const T*>& cc) {
  const int64_t* ch = children_of(f, node);
  for (int64_t k = 0; k < f.arity; ++k) cc[k] = ch[k] >= 0 ? c + ch[k] * H : nullptr;
  return cc.data();
}

template <typename T>
void lstm_forward(const TreeForest& f, const TreeParams& p, MatrixView<const T> leaves_h,
                  MatrixView<const T> leaves_c, MatrixView<const T> inputs, const T* w_iou,
                  const T* u_iou, const T* w_f, const T* u_f, const T* b_iou, const T* b_f,
                  T* h_out, T* c_out, T* saved) {
  const int64_t H = p.hidden_size, K = f.arity * H, G = 3 * H + K, I = p.input_size;
  const int64_t n = f.n_internal;
  const auto node_forward = kernels<T>().lstm_forward;
  copy_rows(leaves_h, 0, f.n_leaves, H, h_out);
  if (leaves_c.data)
    copy_rows(leaves_c, 0, f.n_leaves, H, c_out);
  else
    std::fill_n(c_out, f.n_leaves * H, T(0));
  if (f.n_levels == 0) return;
  // Every node input's projection with the biases, node order; without
  // inputs one row of the biases (zeros where absent), which every node reads.
  const int64_t proj_rows = inputs.data ? n : 1, proj_stride = inputs.data ? 4 * H : 0;
  std::vector<T> proj(proj_rows * 4 * H);
  const int64_t k = inputs.data ? I : 0;
  rnn::project<T>(proj_rows, 3 * H, k, inputs, w_iou, b_iou, {proj.data(), 4 * H, 1}, false);
  rnn::project<T>(proj_rows, H, k, inputs, w_f, b_f, {proj.data() + 3 * H, 4 * H, 1}, false);
  const std::vector<T> u_all = stack(u_iou, 3 * H, u_f, K, K);
  const LevelProducts<T> w(f, K, G, u_all.data(), K, 1, false);
#pragma omp parallel num_threads(w.threads())
  {
    const AlignedArray<T> pack(w.a_pack_size());
    std::vector<T> x(w.rows * K), z(w.rows * G);
    std::vector<const T*> cc(f.arity);
    // A chunk: gather, product, then each node's pass.
    auto chunk = [&](const Level& c, int64_t) {
      gather(f, c, h_out, H, x.data());
      w.run(c, x.data(), z.data(), nullptr, pack.get(), [](int64_t, int64_t) {});
      for (int64_t r = 0; r < c.rows; ++r) {
        const int64_t node = c.nodes[r], j = node - f.n_leaves;
        T* zr = z.data() + r * G;
        node_forward(zr, proj.data() + j * proj_stride, children_c(f, node, c_out, H, cc),
                     f.arity, c_out + node * H, h_out + node * H, H);
        if (saved) std::copy_n(zr, G, saved + j * G);
      }
    };
    for_levels(w.levels, omp_get_thread_num(), omp_get_num_threads(), chunk, no_spread);
  }
}

template <typename T>
void lstm_backward(const TreeForest& f, const TreeParams& p, const T* grad_h, const T* grad_c,
                   const T* h, const T* c_all, const T* saved, MatrixView<const T> inputs,
                   const T* w_iou, const T* u_iou, const T* w_f, const T* u_f, T* grad_leaves_h,
                   T* grad_leaves_c, T* grad_inputs, T* grad_w_iou, T* grad_u_iou, T* grad_w_f,
                   T* grad_u_f, T* grad_b_iou, T* grad_b_f) {
  const int64_t H = p.hidden_size, K = f.arity * H, G = 3 * H + K, I = p.input_size;
  const int64_t n = f.n_internal, n_nodes = f.n_leaves + n;
  const auto node_backward = kernels<T>().lstm_backward;
  // gh, gc: the gradients of every node's h and c, completed level by level;
  // d: every internal node's pre-activation gradients, in schedule order.
  std::vector<T> gh(n_nodes * H, T(0)), gc(n_nodes * H, T(0)), d(n * G), x;
  if (grad_h) std::copy_n(grad_h, n_nodes * H, gh.begin());
  if (grad_c) std::copy_n(grad_c, n_nodes * H, gc.begin());
  if (grad_u_iou || grad_u_f) x.resize(n * K);
  const std::vector<T> u_all = stack(u_iou, 3 * H, u_f, K, K);
  // B (G x K) = [u_iou; u_f]: the children's h gradients are d @ B.
  const LevelProducts<T> w(f, G, K, u_all.data(), 1, K, true);
  // A level's children's h gradients and their shares of the cells' gradients.
  std::vector<T> dx(w.widest_level * K), dck(w.widest_level * K);
#pragma omp parallel num_threads(w.threads())
  {
    const AlignedArray<T> pack(w.a_pack_size());
    std::vector<const T*> cc(f.arity);
    // A chunk of the level starting at schedule position first.
    auto chunk = [&](const Level& c, int64_t first) {
      T* d_c = d.data() + c.first * G;
      for (int64_t r = 0; r < c.rows; ++r) {
        const int64_t node = c.nodes[r];
        node_backward(saved + (node - f.n_leaves) * G, c_all + node * H,
                      children_c(f, node, c_all, H, cc), f.arity, gh.data() + node * H,
                      gc.data() + node * H, d_c + r * G, dck.data() + (c.first - first + r) * K,
                      H);
      }
      if (!x.empty()) gather(f, c, h, H, x.data() + c.first * K);
      w.run(c, d_c, dx.data() + (c.first - first) * K, nullptr, pack.get(),
            [](int64_t, int64_t) {});
    };
    auto spread = [&](const Level& l, int t, int nt) {
      int64_t u0, u1;
      share(H, t, nt, &u0, &u1);
      scatter_add(f, l, dx.data(), H, gh.data(), u0, u1);
      scatter_add(f, l, dck.data(), H, gc.data(), u0, u1);
    };
    for_levels(w.levels, omp_get_thread_num(), omp_get_num_threads(), chunk, spread);
  }
  if (grad_leaves_h) std::copy_n(gh.data(), f.n_leaves * H, grad_leaves_h);
  if (grad_leaves_c) std::copy_n(gc.data(), f.n_leaves * H, grad_leaves_c);
  if (grad_u_iou)
    matmul_cpu<T>({3 * H, K, n}, {d.data(), 1, G}, {x.data(), K, 1}, {grad_u_iou, K, 1});
  if (grad_u_f)
    matmul_cpu<T>({K, K, n}, {d.data() + 3 * H, 1, G}, {x.data(), K, 1}, {grad_u_f, K, 1});
  // The input side, schedule order: [d_i d_o d_u | sum_k d_f_k] (the node
  // input's projection feeds every forget gate).
  std::vector<T> dp(n * 4 * H);
  for (int64_t r = 0; r < n; ++r) {
    const T* dr = d.data() + r * G;
    T* out = dp.data() + r * 4 * H;
    std::copy_n(dr, 3 * H, out);
    std::copy_n(dr + 3 * H, H, out + 3 * H);
    for (int64_t k = 1; k < f.arity; ++k)
      for (int64_t j = 0; j < H; ++j) out[3 * H + j] += dr[(3 + k) * H + j];
  }
  if (grad_b_iou || grad_b_f) {
    std::vector<T> sums(4 * H);
    rnn::column_sums<T>(n, 4 * H, dp.data(), sums.data());
    if (grad_b_iou) std::copy_n(sums.data(), 3 * H, grad_b_iou);
    if (grad_b_f) std::copy_n(sums.data() + 3 * H, H, grad_b_f);
  }
  if (!inputs.data) {
    if (grad_w_iou) std::fill_n(grad_w_iou, 3 * H * I, T(0));
    if (grad_w_f) std::fill_n(grad_w_f, H * I, T(0));
    return;
  }
  // The node inputs in schedule order, as dp's rows.
  std::vector<T> in(n * I);
  for (int64_t r = 0; r < n; ++r) {
    const int64_t j = f.order[r] - f.n_leaves;
    for (int64_t q = 0; q < I; ++q)
      in[r * I + q] = inputs.data[j * inputs.row_stride + q * inputs.col_stride];
  }
  if (grad_w_iou)
    matmul_cpu<T>({3 * H, I, n}, {dp.data(), 1, 4 * H}, {in.data(), I, 1}, {grad_w_iou, I, 1});
  if (grad_w_f)
    matmul_cpu<T>({H, I, n}, {dp.data() + 3 * H, 1, 4 * H}, {in.data(), I, 1}, {grad_w_f, I, 1});
  if (grad_inputs) {
    const std::vector<T> w_x = stack(w_iou, 3 * H, w_f, H, I);
    std::vector<T> g(n * I);
    rnn::times_weight<T>(n, I, 4 * H, {dp.data(), 4 * H, 1}, w_x.data(), g.data(), false);
    for (int64_t r = 0; r < n; ++r)
      std::copy_n(g.data() + r * I, I, grad_inputs + (f.order[r] - f.n_leaves) * I);
  }
}

}  // namespace
}  // namespace cpu::tree

template <typename T>
void tree_lstm_forward_cpu(const TreeForest& f, const TreeParams& p, MatrixView<const T> leaves_h,
                           MatrixView<const T> leaves_c, MatrixView<const T> node_inputs,
                           const T* w_iou, const T* u_iou, const T* w_f, const T* u_f,
                           const T* b_iou, const T* b_f, T* h_out, T* c_out, T* saved) {
  cpu::tree::lstm_forward<T>(f, p, leaves_h, leaves_c, node_inputs, w_iou, u_iou, w_f, u_f, b_iou,
                             b_f, h_out, c_out, saved);
}

template <typename T>
void tree_lstm_backward_cpu(const TreeForest& f, const TreeParams& p, const T* grad_h,
                            const T* grad_c, const T* h, const T* c, const T* saved,
                            MatrixView<const T> node_inputs, const T* w_iou, const T* u_iou,
                            const T* w_f, const T* u_f, T* grad_leaves_h, T* grad_leaves_c,
                            T* grad_inputs, T* grad_w_iou, T* grad_u_iou, T* grad_w_f,
                            T* grad_u_f, T* grad_b_iou, T* grad_b_f) {
  cpu::tree::lstm_backward<T>(f, p, grad_h, grad_c, h, c, saved, node_inputs, w_iou, u_iou, w_f,
                              u_f, grad_leaves_h, grad_leaves_c, grad_inputs, grad_w_iou,
                              grad_u_iou, grad_w_f, grad_u_f, grad_b_iou, grad_b_f);
}

#define DLKERN_INSTANTIATE(T)                                                                    \
  template void tree_lstm_forward_cpu<T>(const TreeForest&, const TreeParams&,                   \
                                         MatrixView<const T>, MatrixView<const T>,               \
                                         MatrixView<const T>, const T*, const T*, const T*,      \
                                         const T*, const T*, const T*, T*, T*, T*);              \
  template void tree_lstm_backward_cpu<T>(const TreeForest&, const TreeParams&, const T*,        \
                                          const T*, const T*, const T*, const T*,                \
                                          MatrixView<const T>, const T*, const T*, const T*,     \
                                          const T*, T*, T*, T*, T*, T*, T*, T*, T*, T*);
DLKERN_INSTANTIATE(float)
DLKERN_INSTANTIATE(double)
#undef DLKERN_INSTANTIATE

}  // namespace dlkern
