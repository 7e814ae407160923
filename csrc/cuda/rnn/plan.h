// Which forward path a sequence takes on CUDA (host only; tests read it
// through _cuda_testing / _cuda_emu_testing).
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/device_limits.h"
#include "dlkern/types.h"

namespace dlkern::cuda::rnn {

// The persistent kernel (persistent.cuh) runs the whole forward time loop in
// one cooperative launch, a block per multiprocessor at most, each block
// holding its units' rows of w_hh in shared memory for every step. Taken when
//   - the batch is small (at most kPersistentMaxBatch): each block computes
//     its gates for the whole batch from a shared-memory copy of h_{t-1}, a
//     few products per thread; larger batches make the per-step GEMM the
//     faster path;
//   - spread over at most one block per multiprocessor (so that the grid is
//     resident at once, which its step barrier needs), a block's slice of
//     w_hh, h_{t-1} and its gate sums fit in the opt-in shared memory of a
//     block.
// Otherwise (and for every backward) the generic path runs: a matmul_cuda and
// a fused pointwise kernel per step.
constexpr int64_t kPersistentMaxBatch = 16;

struct PersistentPlan {
  unsigned blocks = 0;  // 0: the generic path
  int64_t units = 0;    // hidden units per block (the last block may have fewer)
  size_t smem_bytes = 0;
};

inline PersistentPlan persistent_plan(DType dtype, int64_t batch, int64_t hidden, int64_t gates) {
  if (batch < 1 || batch > kPersistentMaxBatch || hidden < 1) return {};
  const DeviceLimits limits = current_device_limits();
  const int64_t sms = limits.multiprocessors;
  const int64_t units = (hidden + sms - 1) / sms;
  const int64_t blocks = (hidden + units - 1) / units;
  // The element and accumulator sizes: float16/bfloat16 hold w_hh in 2 bytes
  // and sum in float32.
  const size_t elem = static_cast<size_t>(dtype_size(dtype));
  const size_t acc = dtype == DType::float64 ? 8 : 4;
  // h_{t-1} (batch, H) and the gate sums (batch, gates * units) in the
  // accumulator type, then the w_hh rows (gates * units, H).
  const size_t smem = acc * static_cast<size_t>(batch * hidden + batch * gates * units) +
                      elem * static_cast<size_t>(gates * units * hidden);
  if (smem > static_cast<size_t>(limits.smem_optin)) return {};
  return {static_cast<unsigned>(blocks), units, smem};
}

}  // namespace dlkern::cuda::rnn
