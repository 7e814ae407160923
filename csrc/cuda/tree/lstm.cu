// The N-ary Tree-LSTM on CUDA (docs/tree-cuda.md). Forward: every node
// input's projection as one matmul_cuda against the stacked [w_iou; w_f]
// (before the levels); then per level the GEMM path (gather, one matmul_cuda
// against the stacked [u_iou; u_f]^T, one pointwise kernel for the node
// update) or, for runs of narrow levels, the persistent kernel. float16 and
// bfloat16 keep every node's c in float32 between levels. Backward, per level
// from the deepest: the pointwise derivative, one matmul_cuda for the
// children's h gradients, the deterministic scatter of those and of the cell
// gradients, or for runs of narrow levels the persistent backward; then the
// weight gradients as single products over all nodes.
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda/tree/host.h"
#include "dlkern/tree.h"

namespace dlkern {
namespace {

using namespace cuda::tree;

// [top; bottom] (top_rows + bottom_rows, cols) in scratch, both contiguous.
template <typename T>
void stack(const T* top, int64_t top_rows, const T* bottom, int64_t bottom_rows, int64_t cols,
           T* out, cudaStream_t stream) {
  const size_t a = sizeof(T) * top_rows * cols, b = sizeof(T) * bottom_rows * cols;
  if (a) DLKERN_CUDA_CHECK(cudaMemcpyAsync(out, top, a, cudaMemcpyDeviceToDevice, stream));
  if (b)
    DLKERN_CUDA_CHECK(
        cudaMemcpyAsync(out + top_rows * cols, bottom, b, cudaMemcpyDeviceToDevice, stream));
}

template <typename T>
void lstm_forward(const TreeForest& f, const TreeParams& p, MatrixView<const T> leaves_h,
                  MatrixView<const T> leaves_c, MatrixView<const T> inputs, const T* w_iou,
                  const T* u_iou, const T* w_f, const T* u_f, const T* b_iou, const T* b_f,
                  T* h_out, T* c_out, Accumulator<T>* saved, cudaStream_t stream) {
  using Acc = Accumulator<T>;
  constexpr bool kSameState = std::is_same_v<Acc, T>;
  const int64_t H = p.hidden_size, N = f.arity, K = N * H, G = 3 * H + K, I = p.input_size;
  const int64_t n = f.n_internal, n_nodes = f.n_leaves + n;
  if (n_nodes * H == 0) return;
  // c of every node in the accumulator type: c_out itself for float and double.
  Scratch c_copy(kSameState ? 0 : sizeof(Acc) * n_nodes * H, stream);
  Acc* c_state = kSameState ? reinterpret_cast<Acc*>(c_out) : c_copy.get<Acc>();
  copy_rows<T, T>(f.n_leaves, H, leaves_h, h_out, stream);
  copy_rows<T, T>(f.n_leaves, H, leaves_c, c_out, stream);
  if (!kSameState) copy_rows<Acc, T>(f.n_leaves, H, leaves_c, c_state, stream);
  if (f.n_levels == 0) return;
  const DeviceForest d(f, false, stream);
  const bool has_inputs = inputs.data && I > 0;
  Scratch weights(sizeof(T) * (G * K + (has_inputs ? 4 * H * I : 0)), stream);
  Scratch proj(has_inputs ? sizeof(T) * n * 4 * H : 0, stream);
  T* u_all = weights.get<T>();
  stack(u_iou, 3 * H, u_f, K, K, u_all, stream);
  if (has_inputs) {
    T* w_x = u_all + G * K;
    stack(w_iou, 3 * H, w_f, H, I, w_x, stream);
    gemm<T>({n, 4 * H, I}, {inputs.data, inputs.row_stride, inputs.col_stride}, {w_x, 1, I},
            {proj.get<T>(), 4 * H, 1}, stream);
  }
  const LstmForward<T> a{d.args, H, proj.get<const T>(), b_iou, b_f, c_state, h_out, c_out,
                         saved};
  const PersistentPlan plan = persistent_plan(DTypeOf<T>::value, H, K, 3 + N);
  const int64_t rows = widest_wide_level(f, plan);
  Scratch x(sizeof(T) * rows * K, stream), z(sizeof(T) * rows * G, stream);
  Scratch arrived(sizeof(unsigned), stream);
  forward_levels(
      f, plan,
      [&](int64_t l0, int64_t l1) {
        launch_persistent(lstm_persistent_kernel<T>, plan, arrived.get<unsigned>(), stream, a,
                          l0, l1, plan.units, static_cast<const T*>(u_all));
      },
      [&](int64_t l) {
        const int64_t m = level_rows(f, l);
        const int64_t* nodes = d.args.order + f.level_offset[l];
        gather<T>(d.args, m, nodes, H, h_out, x.get<T>(), stream);
        gemm<T>({m, G, K}, {x.get<T>(), K, 1}, {u_all, 1, K}, {z.get<T>(), G, 1}, stream);
        auto kernel = lstm_forward_kernel<T>;
        DLKERN_LAUNCH(kernel, grid_stride_blocks(m * H, kThreads), kThreads, 0, stream, a, m,
                      nodes, z.get<const T>());
      });
}

template <typename T>
void lstm_backward(const TreeForest& f, const TreeParams& p, const T* grad_h, const T* grad_c,
                   const T* h, const T* c, const Accumulator<T>* saved,
                   MatrixView<const T> inputs, const T* w_iou, const T* u_iou, const T* w_f,
                   const T* u_f, T* grad_leaves_h, T* grad_leaves_c, T* grad_inputs,
                   T* grad_w_iou, T* grad_u_iou, T* grad_w_f, T* grad_u_f, T* grad_b_iou,
                   T* grad_b_f, cudaStream_t stream) {
  using Acc = Accumulator<T>;
  const int64_t H = p.hidden_size, N = f.arity, K = N * H, G = 3 * H + K, I = p.input_size;
  const int64_t n = f.n_internal, n_nodes = f.n_leaves + n;
  const DeviceForest d(f, true, stream);
  // gh, gc: every node's h and c gradients, completed level by level; dg:
  // the internal nodes' pre-activation gradients in schedule order, x their
  // gathered children's h, dp the input projection's gradients (node order).
  Scratch state(sizeof(Acc) * 2 * n_nodes * H, stream);
  Acc* gh = state.get<Acc>();
  Acc* gc = gh + n_nodes * H;
  copy_rows<Acc, T>(n_nodes, H, {grad_h, H, 1}, gh, stream);
  copy_rows<Acc, T>(n_nodes, H, {grad_c, H, 1}, gc, stream);
  Scratch grads(sizeof(T) * n * (G + 4 * H), stream);
  T* dg = grads.get<T>();
  T* dp = dg + n * G;
  Scratch x(grad_u_iou || grad_u_f ? sizeof(T) * n * K : 0, stream);
  gather<T>(d.args, x.get<T>() ? n : 0, d.args.order, H, h, x.get<T>(), stream);
  Scratch weights(sizeof(T) * (G * K + 4 * H * I), stream);
  T* u_all = weights.get<T>();
  T* w_x = u_all + G * K;
  stack(u_iou, 3 * H, u_f, K, K, u_all, stream);
  const PersistentPlan plan = persistent_plan(DTypeOf<T>::value, H, G, 2 * N);
  const int64_t rows = widest_wide_level(f, plan);
  Scratch dx(sizeof(T) * rows * K, stream), dck(sizeof(Acc) * rows * K, stream);
  Scratch arrived(sizeof(unsigned), stream);
  // The persistent backward reads [u_iou; u_f]'s columns: as rows of its transpose.
  Scratch u_all_t(plan.blocks > 0 ? sizeof(T) * K * G : 0, stream);
  if (plan.blocks > 0) transpose<T>(G, K, u_all, u_all_t.get<T>(), stream);
  const LstmBackward<T> a{d.args, H, c, saved, gh, gc};
  if (H > 0)
    backward_levels(
        f, plan,
        [&](int64_t l_lo, int64_t l_hi) {
          launch_persistent(lstm_backward_persistent_kernel<T>, plan, arrived.get<unsigned>(),
                            stream, a, d.scatter, l_lo, l_hi, plan.units,
                            u_all_t.get<const T>(), dg);
        },
        [&](int64_t l) {
          const int64_t m = level_rows(f, l), first = f.level_offset[l];
          T* d_level = dg + first * G;
          auto kernel = lstm_backward_kernel<T>;
          DLKERN_LAUNCH(kernel, grid_stride_blocks(m * H, kThreads), kThreads, 0, stream, a, m,
                        d.args.order + first, d_level, dck.get<Acc>());
          gemm<T>({m, K, G}, {d_level, G, 1}, {u_all, K, 1}, {dx.get<T>(), K, 1}, stream);
          scatter_add<Acc, T>(d, l, H, dx.get<const T>(), gh, stream);
          scatter_add<Acc, Acc>(d, l, H, dck.get<const Acc>(), gc, stream);
        });
  copy_rows<T, Acc>(f.n_leaves, H, {gh, H, 1}, grad_leaves_h, stream);
  copy_rows<T, Acc>(f.n_leaves, H, {gc, H, 1}, grad_leaves_c, stream);
  product<T>({3 * H, K, n}, {dg, 1, G}, {x.get<T>(), K, 1}, grad_u_iou, K, stream);
  product<T>({K, K, n}, {dg + 3 * H, 1, G}, {x.get<T>(), K, 1}, grad_u_f, K, stream);
  if (n * H > 0) {
    auto kernel = input_grads_kernel<T>;
    DLKERN_LAUNCH(kernel, grid_stride_blocks(n * 4 * H, kThreads), kThreads, 0, stream, d.args,
                  n, H, dg, dp);
  }
  for (auto [out, col, width] : {std::tuple{grad_b_iou, int64_t{0}, 3 * H},
                                 std::tuple{grad_b_f, 3 * H, H}}) {
    if (!out || width == 0) continue;
    auto kernel = cuda::rnn::column_sums_kernel<T>;
    DLKERN_LAUNCH(kernel, grid_stride_blocks(width, kThreads), kThreads, 0, stream, n, width,
                  dp + col, 4 * H, out);
  }
  const MatrixView<const void> v{inputs.data, inputs.row_stride, inputs.col_stride};
  if (!inputs.data) {
    for (auto [out, size] : {std::pair{grad_w_iou, 3 * H * I}, std::pair{grad_w_f, H * I}})
      if (out && size) DLKERN_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(T) * size, stream));
    return;
  }
  product<T>({3 * H, I, n}, {dp, 1, 4 * H}, v, grad_w_iou, I, stream);
  product<T>({H, I, n}, {dp + 3 * H, 1, 4 * H}, v, grad_w_f, I, stream);
  stack(w_iou, 3 * H, w_f, H, I, w_x, stream);
  product<T>({n, I, 4 * H}, {dp, 4 * H, 1}, {w_x, I, 1}, grad_inputs, I, stream);
}

}  // namespace

void tree_lstm_forward_cuda(DType dtype, const TreeForest& f, const TreeParams& p,
                            MatrixView<const void> leaves_h, MatrixView<const void> leaves_c,
                            MatrixView<const void> node_inputs, const void* w_iou,
                            const void* u_iou, const void* w_f, const void* u_f,
                            const void* b_iou, const void* b_f, void* h_out, void* c_out,
                            void* saved, cudaStream_t stream) {
  dispatch_dtype<TreeTypes>(dtype, "tree_lstm on CUDA", [&](auto tag) {
    using T = decltype(tag);
    lstm_forward<T>(f, p, cuda::rnn::typed<T>(leaves_h), cuda::rnn::typed<T>(leaves_c),
                    cuda::rnn::typed<T>(node_inputs), static_cast<const T*>(w_iou),
                    static_cast<const T*>(u_iou), static_cast<const T*>(w_f),
                    static_cast<const T*>(u_f), static_cast<const T*>(b_iou),
                    static_cast<const T*>(b_f), static_cast<T*>(h_out), static_cast<T*>(c_out),
                    static_cast<Accumulator<T>*>(saved), stream);
  });
}

void tree_lstm_backward_cuda(DType dtype, const TreeForest& f, const TreeParams& p,
                             const void* grad_h, const void* grad_c, const void* h,
                             const void* c, const void* saved, MatrixView<const void> node_inputs,
                             const void* w_iou, const void* u_iou, const void* w_f,
                             const void* u_f, void* grad_leaves_h, void* grad_leaves_c,
                             void* grad_inputs, void* grad_w_iou, void* grad_u_iou,
                             void* grad_w_f, void* grad_u_f, void* grad_b_iou, void* grad_b_f,
                             cudaStream_t stream) {
  dispatch_dtype<TreeTypes>(dtype, "tree_lstm_backward on CUDA", [&](auto tag) {
    using T = decltype(tag);
    lstm_backward<T>(f, p, static_cast<const T*>(grad_h), static_cast<const T*>(grad_c),
                     static_cast<const T*>(h), static_cast<const T*>(c),
                     static_cast<const Accumulator<T>*>(saved), cuda::rnn::typed<T>(node_inputs),
                     static_cast<const T*>(w_iou), static_cast<const T*>(u_iou),
                     static_cast<const T*>(w_f), static_cast<const T*>(u_f),
                     static_cast<T*>(grad_leaves_h), static_cast<T*>(grad_leaves_c),
                     static_cast<T*>(grad_inputs), static_cast<T*>(grad_w_iou),
                     static_cast<T*>(grad_u_iou), static_cast<T*>(grad_w_f),
                     static_cast<T*>(grad_u_f), static_cast<T*>(grad_b_iou),
                     static_cast<T*>(grad_b_f), stream);
  });
}

}  // namespace dlkern
