// Which forward path each level of a forest takes on CUDA (host only).
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/device_limits.h"
#include "dlkern/types.h"

namespace dlkern::cuda::tree {

// A level of at most kPersistentMaxRows nodes is narrow: its product is a
// few rows against the weight, which a GEMM launch cannot fill a GPU with,
// and the launches (gather, product, pointwise) cost more than the work.
// Runs of consecutive narrow levels go to the persistent kernels
// (persistent.cuh, persistent_backward.cuh) in one cooperative launch; wider
// levels take the level GEMM path (forward: a gather, one matmul_cuda, one
// pointwise kernel; backward: a pointwise kernel, one matmul_cuda, a scatter).
constexpr int64_t kPersistentMaxRows = 16;

struct PersistentPlan {
  unsigned blocks = 0;  // 0: no persistent path (every level takes the GEMM path)
  int64_t units = 0;    // hidden units per block (the last block may have fewer)
  size_t smem_bytes = 0;
};

// A block per multiprocessor at most (the grid must be resident at once for
// its barrier), each a slice of the H units. A kernel keeps per row of a
// level `shared` values read by every block (the forward: the children's
// rows) and `per_unit` values per unit of its slice (the Tree-LSTM's gate
// sums, the backward's children's gradients) in shared memory, in the
// accumulator type; for kPersistentMaxRows rows they must fit a block.
inline PersistentPlan persistent_plan(DType dtype, int64_t H, int64_t shared, int64_t per_unit) {
  if (H < 1) return {};
  const DeviceLimits limits = current_device_limits();
  const int64_t sms = limits.multiprocessors;
  const int64_t units = (H + sms - 1) / sms;
  const int64_t blocks = (H + units - 1) / units;
  const size_t acc = dtype == DType::float64 ? 8 : 4;
  const size_t smem = acc * static_cast<size_t>(kPersistentMaxRows * (shared + per_unit * units));
  if (smem > static_cast<size_t>(limits.smem_optin)) return {};
  return {static_cast<unsigned>(blocks), units, smem};
}

}  // namespace dlkern::cuda::tree
