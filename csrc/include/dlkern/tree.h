// Recursive (tree-structured) networks over whole forests: tree_compose and
// the N-ary Tree-LSTM of Tai et al. (2015), forward and backward, on the CPU and on CUDA.
//
// A forest: n_leaves leaf vectors, then n_internal internal nodes in
// topological order. children (n_internal, arity) row-major int64 holds, for
// internal node i (node n_leaves + i of the concatenation [leaves; internal]),
// the indices of its children in that concatenation, -1 for a missing child
// (zeros). A child must come before its parent (index < n_leaves + i). A node
// may be the child of several parents (a DAG): its gradient is the sum over
// them, added in a fixed order (deepest parent level first, then node order,
// then child slot), so results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "dlkern/types.h"

namespace dlkern {

// Validates children and computes the depth schedule: leaves have depth 0, an
// internal node 1 + the largest depth of its present children (1 when it has
// none). depth (n_internal) receives each internal node's depth; order
// (n_internal) the internal nodes' indices into [leaves; internal] grouped by
// depth, shallowest first, in node order within a depth; level_offset
// (n_internal + 1 elements of room) the start of each depth's run in order,
// then n_internal. Returns the number of levels (the largest depth; 0 when
// n_internal is 0). Throws ValueError naming the first bad entry: an index
// below -1, at or past n_leaves + n_internal (out of range), or at or past
// the node's own index (pointing forward: not in topological order).
int64_t tree_levels(const int64_t* children, int64_t n_internal, int64_t arity, int64_t n_leaves,
                    int64_t* depth, int64_t* order, int64_t* level_offset);

// A validated forest as the kernels take it (host memory; the arrays of
// tree_levels and the children it validated).
struct TreeForest {
  int64_t n_leaves, n_internal, arity, n_levels;
  const int64_t* children;
  const int64_t* order;
  const int64_t* level_offset;
};

enum class TreeActivation : int { tanh = 0, relu = 1, sigmoid = 2, identity = 3 };

// The activation named "tanh", "relu", "sigmoid" or "identity"; ValueError otherwise.
TreeActivation tree_activation(const char* name);

// A checked problem: hidden size H, node input size I (tree_lstm: w_iou's
// columns, whether or not node inputs are given; 0 for tree_compose).
struct TreeParams {
  int64_t n_leaves, n_internal, arity, hidden_size, input_size;
};

// tree_compose's shape rule: leaves (n_leaves, H), weight (H, arity * H), bias
// (H,) or absent (-1). ValueError naming the argument otherwise.
TreeParams tree_compose_params(int64_t n_leaves, int64_t n_internal, int64_t arity,
                               int64_t leaves_rows, int64_t leaves_cols, int64_t weight_rows,
                               int64_t weight_cols, int64_t bias_size);

// tree_lstm's shape rule (H is the leaves' width; see docs/tree-cpu.md):
// leaves_h and leaves_c (n_leaves, H) (c absent: -1), w_iou (3H, I), u_iou
// (3H, arity * H), w_f (H, I), u_f (arity * H, arity * H), b_iou (3H,) and
// b_f (H,) or absent (-1), node_inputs (n_internal, I) or absent (-1 each).
TreeParams tree_lstm_params(int64_t n_leaves, int64_t n_internal, int64_t arity,
                            int64_t leaves_rows, int64_t leaves_cols, int64_t leaves_c_rows,
                            int64_t leaves_c_cols, int64_t w_iou_rows, int64_t w_iou_cols,
                            int64_t u_iou_rows, int64_t u_iou_cols, int64_t w_f_rows,
                            int64_t w_f_cols, int64_t u_f_rows, int64_t u_f_cols,
                            int64_t b_iou_size, int64_t b_f_size, int64_t inputs_rows,
                            int64_t inputs_cols);

// The width of tree_lstm's saved row per internal node, in node order: the
// activated gates i, o, u, then f_1 .. f_arity, each H wide.
inline int64_t tree_lstm_saved_width(int64_t hidden_size, int64_t arity) {
  return (3 + arity) * hidden_size;
}

// CPU, float and double. leaves (and node_inputs) are strided views; weights
// and biases contiguous row-major, a null bias meaning zeros; outputs
// contiguous (n_leaves + n_internal, H), written in full (leaf rows copied),
// not overlapping the inputs.
template <typename T>
void tree_compose_forward_cpu(const TreeForest& f, const TreeParams& p, TreeActivation act,
                              MatrixView<const T> leaves, const T* weight, const T* bias, T* out);

// grad_out and out (the forward's result) contiguous (n_leaves + n_internal,
// H); grad_out holds the gradient of every node's output (zero rows where a
// node's output is unused). grad_leaves (n_leaves, H), grad_weight (H,
// arity * H), grad_bias (H,), each written in full, any may be null to skip it.
template <typename T>
void tree_compose_backward_cpu(const TreeForest& f, const TreeParams& p, TreeActivation act,
                               const T* grad_out, const T* out, const T* weight, T* grad_leaves,
                               T* grad_weight, T* grad_bias);

// leaves_c null means zero cells; node_inputs null means no inputs (the
// w_iou and w_f terms vanish). h_out, c_out contiguous (n_leaves + n_internal,
// H); saved contiguous (n_internal, tree_lstm_saved_width) or null.
template <typename T>
void tree_lstm_forward_cpu(const TreeForest& f, const TreeParams& p, MatrixView<const T> leaves_h,
                           MatrixView<const T> leaves_c, MatrixView<const T> node_inputs,
                           const T* w_iou, const T* u_iou, const T* w_f, const T* u_f,
                           const T* b_iou, const T* b_f, T* h_out, T* c_out, T* saved);

// grad_h, grad_c (contiguous (n_leaves + n_internal, H), null meaning zeros):
// gradients of every node's h and c; h, c and saved are the forward's.
// Outputs, each written in full and nullable: grad_leaves_h, grad_leaves_c
// (n_leaves, H), grad_inputs (n_internal, I), and the weight and bias
// gradients of their arguments' shapes (w_iou's and w_f's zero without node
// inputs).
template <typename T>
void tree_lstm_backward_cpu(const TreeForest& f, const TreeParams& p, const T* grad_h,
                            const T* grad_c, const T* h, const T* c, const T* saved,
                            MatrixView<const T> node_inputs, const T* w_iou, const T* u_iou,
                            const T* w_f, const T* u_f, T* grad_leaves_h, T* grad_leaves_c,
                            T* grad_inputs, T* grad_w_iou, T* grad_u_iou, T* grad_w_f,
                            T* grad_u_f, T* grad_b_iou, T* grad_b_f);

// CUDA: device pointers of `dtype` (float16 and bfloat16 compute every sum,
// activation and the Tree-LSTM cell state in float32, and tree_lstm's saved
// is float32 for them; docs/tree-cuda.md), queued on `stream`, with the CPU
// functions' semantics and layouts. The
// forest (children, order, level_offset) stays in host memory: each call
// uploads it once to stream-ordered scratch.
void tree_compose_forward_cuda(DType dtype, const TreeForest& f, const TreeParams& p,
                               TreeActivation act, MatrixView<const void> leaves,
                               const void* weight, const void* bias, void* out,
                               cudaStream_t stream);

void tree_compose_backward_cuda(DType dtype, const TreeForest& f, const TreeParams& p,
                                TreeActivation act, const void* grad_out, const void* out,
                                const void* weight, void* grad_leaves, void* grad_weight,
                                void* grad_bias, cudaStream_t stream);

void tree_lstm_forward_cuda(DType dtype, const TreeForest& f, const TreeParams& p,
                            MatrixView<const void> leaves_h, MatrixView<const void> leaves_c,
                            MatrixView<const void> node_inputs, const void* w_iou,
                            const void* u_iou, const void* w_f, const void* u_f,
                            const void* b_iou, const void* b_f, void* h_out, void* c_out,
                            void* saved, cudaStream_t stream);

void tree_lstm_backward_cuda(DType dtype, const TreeForest& f, const TreeParams& p,
                             const void* grad_h, const void* grad_c, const void* h,
                             const void* c, const void* saved, MatrixView<const void> node_inputs,
                             const void* w_iou, const void* u_iou, const void* w_f,
                             const void* u_f, void* grad_leaves_h, void* grad_leaves_c,
                             void* grad_inputs, void* grad_w_iou, void* grad_u_iou,
                             void* grad_w_f, void* grad_u_f, void* grad_b_iou, void* grad_b_f,
                             cudaStream_t stream);

}  // namespace dlkern
