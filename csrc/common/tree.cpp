// The forest's validation and depth schedule, and the shape rules of
// tree_compose and tree_lstm, in words that name the argument, what was
// expected and what was given.
#include "common/tree.h"

#include <algorithm>
#include <cstring>

#include "dlkern/error.h"

namespace dlkern {

int64_t tree_levels(const int64_t* children, int64_t n_internal, int64_t arity, int64_t n_leaves,
                    int64_t* depth, int64_t* order, int64_t* level_offset) {
  DLKERN_CHECK(n_leaves >= 0, "tree_levels: n_leaves must be >= 0, got ", n_leaves);
  DLKERN_CHECK(n_internal >= 0, "tree_levels: children must have n_internal >= 0 rows, got ",
               n_internal);
  DLKERN_CHECK(arity >= 1, "tree_levels: children must be (n_internal, arity) with arity >= 1, "
               "got arity ", arity);
  const int64_t n_nodes = n_leaves + n_internal;
  int64_t n_levels = 0;
  for (int64_t i = 0; i < n_internal; ++i) {
    const int64_t self = n_leaves + i;
    int64_t d = 1;
    for (int64_t k = 0; k < arity; ++k) {
      const int64_t c = children[i * arity + k];
      DLKERN_CHECK(c >= -1 && c < n_nodes, "tree_levels: children[", i, ", ", k, "] = ", c,
                   " is out of range; expected -1 (no child) or a node index in [0, ", n_nodes,
                   ") (n_leaves ", n_leaves, " + n_internal ", n_internal, ")");
      DLKERN_CHECK(c < self, "tree_levels: children[", i, ", ", k, "] = ", c,
                   " points at or after its own node ", self,
                   " (n_leaves + ", i, "); internal nodes must be in topological order, each "
                   "child before its parent");
      if (c >= n_leaves) d = std::max(d, depth[c - n_leaves] + 1);
    }
    depth[i] = d;
    n_levels = std::max(n_levels, d);
  }
  // Counting sort by depth: stable, so node order within a level.
  std::fill(level_offset, level_offset + n_levels + 1, int64_t(0));
  for (int64_t i = 0; i < n_internal; ++i) ++level_offset[depth[i]];
  for (int64_t l = 1; l <= n_levels; ++l) level_offset[l] += level_offset[l - 1];
  // level_offset[d] now ends depth d's run; fill each run from its start.
  for (int64_t i = n_internal - 1; i >= 0; --i) order[--level_offset[depth[i]]] = n_leaves + i;
  // Depth d's run starts at level_offset[d]; shift so that level l (depth l + 1) starts at l.
  std::memmove(level_offset, level_offset + 1, sizeof(int64_t) * n_levels);
  level_offset[n_levels] = n_internal;
  return n_levels;
}

TreeActivation tree_activation(const char* name) {
  const char* names[] = {"tanh", "relu", "sigmoid", "identity"};
  for (int a = 0; a < 4; ++a)
    if (std::strcmp(name, names[a]) == 0) return static_cast<TreeActivation>(a);
  throw ValueError(std::string("tree_compose: activation must be 'tanh', 'relu', 'sigmoid' or "
                               "'identity', got '") + name + "'");
}

namespace {

void check_matrix(const char* op, const char* name, int64_t rows, int64_t cols, int64_t want_rows,
                  int64_t want_cols, const char* want) {
  DLKERN_CHECK(rows == want_rows && cols == want_cols, op, ": ", name, " must have shape ", want,
               " = (", want_rows, ", ", want_cols, "), got (", rows, ", ", cols, ")");
}

void check_vector(const char* op, const char* name, int64_t size, int64_t want, const char* what) {
  DLKERN_CHECK(size < 0 || size == want, op, ": ", name, " must have ", what, " = ", want,
               " elements, got ", size);
}

}  // namespace

TreeParams tree_compose_params(int64_t n_leaves, int64_t n_internal, int64_t arity,
                               int64_t leaves_rows, int64_t leaves_cols, int64_t weight_rows,
                               int64_t weight_cols, int64_t bias_size) {
  const char* op = "tree_compose";
  DLKERN_CHECK(leaves_rows == n_leaves, op, ": leaves must have n_leaves = ", n_leaves,
               " rows, got ", leaves_rows);
  const int64_t H = leaves_cols;
  check_matrix(op, "weight", weight_rows, weight_cols, H, arity * H, "(H, arity * H)");
  check_vector(op, "bias", bias_size, H, "H");
  return {n_leaves, n_internal, arity, H, 0};
}

TreeParams tree_lstm_params(int64_t n_leaves, int64_t n_internal, int64_t arity,
                            int64_t leaves_rows, int64_t leaves_cols, int64_t leaves_c_rows,
                            int64_t leaves_c_cols, int64_t w_iou_rows, int64_t w_iou_cols,
                            int64_t u_iou_rows, int64_t u_iou_cols, int64_t w_f_rows,
                            int64_t w_f_cols, int64_t u_f_rows, int64_t u_f_cols,
                            int64_t b_iou_size, int64_t b_f_size, int64_t inputs_rows,
                            int64_t inputs_cols) {
  const char* op = "tree_lstm";
  DLKERN_CHECK(leaves_rows == n_leaves, op, ": leaves must have n_leaves = ", n_leaves,
               " rows, got ", leaves_rows);
  const int64_t H = leaves_cols;
  if (leaves_c_rows >= 0)
    check_matrix(op, "the leaves' c", leaves_c_rows, leaves_c_cols, n_leaves, H,
                 "(n_leaves, H), the leaves' h shape");
  const int64_t I = w_iou_cols;
  check_matrix(op, "w_iou", w_iou_rows, w_iou_cols, 3 * H, I, "(3 * H, input_size)");
  check_matrix(op, "u_iou", u_iou_rows, u_iou_cols, 3 * H, arity * H, "(3 * H, arity * H)");
  check_matrix(op, "w_f", w_f_rows, w_f_cols, H, I, "(H, input_size), input_size from w_iou");
  check_matrix(op, "u_f", u_f_rows, u_f_cols, arity * H, arity * H, "(arity * H, arity * H)");
  check_vector(op, "b_iou", b_iou_size, 3 * H, "3 * H");
  check_vector(op, "b_f", b_f_size, H, "H");
  if (inputs_rows >= 0)
    check_matrix(op, "node_inputs", inputs_rows, inputs_cols, n_internal, I,
                 "(n_internal, input_size), input_size from w_iou");
  return {n_leaves, n_internal, arity, H, I};
}

}  // namespace dlkern
