// The persistent forward of the recurrent sequences (the persistent-RNN idea,
// Diamos et al. 2016): one cooperative launch runs the whole time loop. Each
// block owns a slice of hidden units, all gates of them, and keeps those rows
// of w_hh in shared memory for every step instead of reading the weight again
// per step as the per-step GEMM does. Per step a block reads h_{t-1} (written
// by every block the step before) into shared memory, computes its gates' sums
// for the running rows, runs the pointwise update of its units (the generic
// path's lstm_unit / gru_unit), and meets the other blocks at a grid barrier.
// The selection rule is in plan.h.
#pragma once

#include "cuda/grid_barrier.cuh"
#include "cuda/rnn/sequence.cuh"

namespace dlkern::cuda::rnn {

// h (2, batch, H): h_{t-1} of step t in half t % 2, h_t into the other (a
// block still reading step t's half would race with writes into it); half 0
// holds the initial state. running, offset: rnn::Schedule's, on the device.
// Dynamic shared memory as plan.h sizes it.
template <typename T, int Gates>
__global__ void __launch_bounds__(kThreads)
    persistent_sequence_kernel(SequenceArgs<T> a, int64_t seq_len, const int64_t* running,
                               const int64_t* offset, int64_t units, const T* w_hh, T* h,
                               unsigned* arrived) {
  using Acc = Accumulator<T>;
  const int64_t B = a.batch, H = a.H;
  const int64_t u0 = blockIdx.x * units, U = H - u0 < units ? H - u0 : units;
  const int64_t width = Gates * U;  // this block's gate columns: gate k, unit u at k * U + u
  DLKERN_DYNAMIC_SMEM(Acc, smem);
  Acc* h_s = smem;              // (B, H)
  Acc* sums = h_s + B * H;      // (B, width)
  T* w_s = reinterpret_cast<T*>(sums + B * Gates * units);  // (width, H)
  for (int64_t i = threadIdx.x; i < width * H; i += blockDim.x) {
    const int64_t q = i / H, col = i - q * H, k = q / U, u = q - k * U;
    w_s[i] = w_hh[(k * H + u0 + u) * H + col];
  }
  for (int64_t t = 0; t < seq_len; ++t) {
    const StepArgs s{t, offset[t], running[t], t + 1 < seq_len ? running[t + 1] : 0};
    const T* h_in = h + (t % 2) * B * H;
    T* h_out = h + ((t + 1) % 2) * B * H;
    for (int64_t i = threadIdx.x; i < s.running * H; i += blockDim.x)
      h_s[i] = convert<Acc>(h_in[i]);
    __syncthreads();
    // A warp per (row, gate column): its lanes read consecutive elements of
    // the weight row and of h (no bank conflicts), then sum across the warp.
    for (int64_t i = threadIdx.x / 32; i < s.running * width; i += blockDim.x / 32) {
      const int64_t r = i / width, q = i - r * width;
      const T* w = w_s + q * H;
      const Acc* x = h_s + r * H;
      Acc sum = 0;
      for (int64_t col = threadIdx.x % 32; col < H; col += 32) sum += convert<Acc>(w[col]) * x[col];
      for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
      if (threadIdx.x % 32 == 0) sums[i] = sum;
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < B * U; i += blockDim.x) {
      const int64_t r = i / U, u = i - r * U, j = u0 + u;
      if (r >= s.running) {
        ended_unit(a, s, r, j);
        continue;
      }
      Acc hp[Gates];
      for (int k = 0; k < Gates; ++k) hp[k] = sums[r * width + k * U + u];
      if constexpr (Gates == 4)
        lstm_unit(a, s, r, j, hp, h_s[r * H + j], h_out + r * H + j);
      else
        gru_unit(a, s, r, j, hp, h_s[r * H + j], h_out + r * H + j);
    }
    grid_barrier(arrived, static_cast<unsigned>(t + 1));
  }
}

}  // namespace dlkern::cuda::rnn
