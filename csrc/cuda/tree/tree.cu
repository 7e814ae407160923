// tree_compose on CUDA (docs/tree-cuda.md). Forward: the leaves copied into
// the output, then per level either the GEMM path (a gather of the
// children's rows, one matmul_cuda against weight^T, one pointwise kernel
// for bias and activation) or, for runs of narrow levels, the persistent
// kernel (plan.h). Backward, per level from the deepest: the activation's
// derivative, one matmul_cuda for the children's gradients, and the
// deterministic scatter into their rows, or for runs of narrow levels the
// persistent backward; then the weight gradient as one product over all
// internal nodes and the bias gradient as column sums.
#include <cstdint>

#include "cuda/tree/host.h"
#include "dlkern/tree.h"

namespace dlkern {
namespace {

using namespace cuda::tree;

template <typename T, TreeActivation A>
void compose_forward(const TreeForest& f, const TreeParams& p, MatrixView<const T> leaves,
                     const T* weight, const T* bias, T* out, cudaStream_t stream) {
  const int64_t H = p.hidden_size, K = f.arity * H;
  if ((f.n_leaves + f.n_internal) * H == 0) return;
  copy_rows<T, T>(f.n_leaves, H, leaves, out, stream);
  if (f.n_levels == 0) return;
  const DeviceForest d(f, false, stream);
  const PersistentPlan plan = persistent_plan(DTypeOf<T>::value, H, K, 0);
  const int64_t rows = widest_wide_level(f, plan);
  Scratch x(sizeof(T) * rows * K, stream), z(sizeof(T) * rows * H, stream);
  Scratch arrived(sizeof(unsigned), stream);
  forward_levels(
      f, plan,
      [&](int64_t l0, int64_t l1) {
        launch_persistent(compose_persistent_kernel<T, A>, plan, arrived.get<unsigned>(), stream,
                          d.args, l0, l1, H, plan.units, weight, bias, out);
      },
      [&](int64_t l) {
        const int64_t n = level_rows(f, l);
        const int64_t* nodes = d.args.order + f.level_offset[l];
        gather<T>(d.args, n, nodes, H, out, x.get<T>(), stream);
        gemm<T>({n, H, K}, {x.get<T>(), K, 1}, {weight, 1, K}, {z.get<T>(), H, 1}, stream);
        auto kernel = compose_forward_kernel<T, A>;
        DLKERN_LAUNCH(kernel, grid_stride_blocks(n * H, kThreads), kThreads, 0, stream, n, H,
                      nodes, z.get<const T>(), bias, out);
      });
}

template <typename T, TreeActivation A>
void compose_backward(const TreeForest& f, const TreeParams& p, const T* grad_out, const T* out,
                      const T* weight, T* grad_leaves, T* grad_weight, T* grad_bias,
                      cudaStream_t stream) {
  using Acc = Accumulator<T>;
  const int64_t H = p.hidden_size, K = f.arity * H, n = f.n_internal;
  const DeviceForest d(f, true, stream);
  // g: every node's output gradient, completed level by level (a node's
  // parents are all deeper); dz: the internal nodes' pre-activation
  // gradients in schedule order; x: their gathered children, the same order.
  Scratch g(sizeof(Acc) * (f.n_leaves + n) * H, stream), dz(sizeof(T) * n * H, stream);
  Scratch x(grad_weight ? sizeof(T) * n * K : 0, stream);
  copy_rows<Acc, T>(f.n_leaves + n, H, {grad_out, H, 1}, g.get<Acc>(), stream);
  if (grad_weight) gather<T>(d.args, n, d.args.order, H, out, x.get<T>(), stream);
  const PersistentPlan plan = persistent_plan(DTypeOf<T>::value, H, H, f.arity);
  Scratch dx(sizeof(T) * widest_wide_level(f, plan) * K, stream);
  Scratch arrived(sizeof(unsigned), stream);
  // The persistent backward reads the weight's columns: as rows of weight^T.
  Scratch weight_t(plan.blocks > 0 ? sizeof(T) * K * H : 0, stream);
  if (plan.blocks > 0) transpose<T>(H, K, weight, weight_t.get<T>(), stream);
  if (H > 0)
    backward_levels(
        f, plan,
        [&](int64_t l_lo, int64_t l_hi) {
          launch_persistent(compose_backward_persistent_kernel<T, A>, plan,
                            arrived.get<unsigned>(), stream, d.args, d.scatter, l_lo, l_hi, H,
                            plan.units, weight_t.get<const T>(), out, g.get<Acc>(),
                            dz.get<T>());
        },
        [&](int64_t l) {
          const int64_t m = level_rows(f, l), first = f.level_offset[l];
          T* dz_level = dz.get<T>() + first * H;
          auto kernel = compose_backward_kernel<T, A>;
          DLKERN_LAUNCH(kernel, grid_stride_blocks(m * H, kThreads), kThreads, 0, stream, m, H,
                        d.args.order + first, g.get<const Acc>(), out, dz_level);
          gemm<T>({m, K, H}, {dz_level, H, 1}, {weight, K, 1}, {dx.get<T>(), K, 1}, stream);
          scatter_add<Acc, T>(d, l, H, dx.get<const T>(), g.get<Acc>(), stream);
        });
  copy_rows<T, Acc>(f.n_leaves, H, {g.get<const Acc>(), H, 1}, grad_leaves, stream);
  product<T>({H, K, n}, {dz.get<T>(), 1, H}, {x.get<T>(), K, 1}, grad_weight, K, stream);
  cuda::rnn::column_sums<T>(n, H, dz.get<const T>(), grad_bias, stream);
}

}  // namespace

void tree_compose_forward_cuda(DType dtype, const TreeForest& f, const TreeParams& p,
                               TreeActivation act, MatrixView<const void> leaves,
                               const void* weight, const void* bias, void* out,
                               cudaStream_t stream) {
  dispatch_dtype<TreeTypes>(dtype, "tree_compose on CUDA", [&](auto tag) {
    using T = decltype(tag);
    with_activation(act, [&](auto a) {
      compose_forward<T, decltype(a)::value>(
          f, p, cuda::rnn::typed<T>(leaves), static_cast<const T*>(weight),
          static_cast<const T*>(bias), static_cast<T*>(out), stream);
    });
  });
}

void tree_compose_backward_cuda(DType dtype, const TreeForest& f, const TreeParams& p,
                                TreeActivation act, const void* grad_out, const void* out,
                                const void* weight, void* grad_leaves, void* grad_weight,
                                void* grad_bias, cudaStream_t stream) {
  dispatch_dtype<TreeTypes>(dtype, "tree_compose_backward on CUDA", [&](auto tag) {
    using T = decltype(tag);
    with_activation(act, [&](auto a) {
      compose_backward<T, decltype(a)::value>(
          f, p, static_cast<const T*>(grad_out), static_cast<const T*>(out),
          static_cast<const T*>(weight), static_cast<T*>(grad_leaves),
          static_cast<T*>(grad_weight), static_cast<T*>(grad_bias), stream);
    });
  });
}

}  // namespace dlkern
