// Kernels for the emulator's own tests (tests/test_emu.py through
// fixtures_module.cpp, and sanitizer_check.cpp). Some are deliberately wrong:
// the tests expect the emulator to expose them. Written as CUDA like every
// kernel in csrc/cuda, so they would build with nvcc too.
#pragma once

#include <cstdint>

#include "cuda/grid_barrier.cuh"
#include "cuda/mma.cuh"
#include "cuda/runtime.cuh"

namespace dlkern::fixtures {

using namespace ::dlkern::cuda;  // the mma.cuh wrappers

// ------------------------------------------------------- missing barrier --
constexpr int kShiftMaxThreads = 256;

// out[t] = in[t - 1] (out[0] = in[0]) through shared memory.
__global__ void shift_kernel(const float* in, float* out) {
  __shared__ float buf[kShiftMaxThreads];
  const int t = threadIdx.x;
  buf[t] = in[t];
  __syncthreads();
  out[t] = buf[t == 0 ? 0 : t - 1];
}

// The same with its __syncthreads() forgotten. Run thread by thread in
// forward order it still works (thread t - 1 has written buf[t - 1] before
// thread t reads it); any other order reads elements not yet written.
__global__ void shift_missing_sync_kernel(const float* in, float* out) {
  __shared__ float buf[kShiftMaxThreads];
  const int t = threadIdx.x;
  buf[t] = in[t];
  out[t] = buf[t == 0 ? 0 : t - 1];
}

// ------------------------------------------------- a correct block reduce --
constexpr int kReduceMaxThreads = 1024;

// Each block sums its n floats (a shared-memory tree down to 32 values, then
// warp 0 finishes with shuffles) and records every thread's built-in
// indices in ids[(block * threads + tid) * 6 + 0..5]. Blocks need >= 32 threads.
__global__ void block_reduce_kernel(const float* in, int n, float* sums, int* ids) {
  __shared__ float partial[kReduceMaxThreads];
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const float* x = in + static_cast<int64_t>(block) * n;
  float v = 0.0f;
  for (int i = static_cast<int>(tid); i < n; i += static_cast<int>(threads)) v += x[i];
  partial[tid] = v;
  int* id = ids + (static_cast<int64_t>(block) * threads + tid) * 6;
  id[0] = static_cast<int>(threadIdx.x);
  id[1] = static_cast<int>(threadIdx.y);
  id[2] = static_cast<int>(threadIdx.z);
  id[3] = static_cast<int>(blockIdx.x);
  id[4] = static_cast<int>(blockIdx.y);
  id[5] = static_cast<int>(blockIdx.z);
  __syncthreads();
  unsigned span = 32;
  while (span < threads) span *= 2;
  for (unsigned stride = span / 2; stride >= 32; stride /= 2) {
    if (tid < stride && tid + stride < threads) partial[tid] += partial[tid + stride];
    __syncthreads();
  }
  if (tid < 32) {
    float s = partial[tid];
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
    if (tid == 0) sums[block] = s;
  }
}

// --------------------------------------------------------------- atomics --
struct AtomicCounters {
  int add;
  unsigned int add_u;
  unsigned long long add_ull;
  float add_f;
  double add_d;
  __half add_h;
  __nv_bfloat16 add_bf;
  int max;
  int min;
  unsigned int inc;
  unsigned int dec;
  int cas;
  int exch;
  unsigned int bits_or;
  unsigned int bits_and;
  unsigned int bits_xor;
  int sub;
};

// Every thread of every block updates every counter; blocks run in parallel
// on the emulator's worker threads. exch_seen[g] is what thread g swapped out.
__global__ void atomics_kernel(AtomicCounters* c, int* exch_seen) {
  const int g = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  atomicAdd(&c->add, 1);
  atomicAdd(&c->add_u, 2u);
  atomicAdd(&c->add_ull, 1ull << 33);
  atomicAdd(&c->add_f, 0.5f);
  atomicAdd(&c->add_d, 0.25);
  if (g < 1000) atomicAdd(&c->add_h, __float2half_rn(1.0f));        // exact up to 2048
  if (g < 200) atomicAdd(&c->add_bf, __float2bfloat16_rn(1.0f));    // exact up to 256
  atomicMax(&c->max, g * 7 % 1001);
  atomicMin(&c->min, -(g * 13 % 997));
  atomicInc(&c->inc, 9u);  // counts modulo 10
  atomicDec(&c->dec, 9u);
  int old = atomicAdd(&c->cas, 0);
  for (;;) {
    const int seen = atomicCAS(&c->cas, old, old + 3);
    if (seen == old) break;
    old = seen;
  }
  exch_seen[g] = atomicExch(&c->exch, g);
  atomicOr(&c->bits_or, 1u << (g % 32));
  atomicAnd(&c->bits_and, ~(1u << (g % 31)));
  atomicXor(&c->bits_xor, 1u << (g % 5));
  atomicSub(&c->sub, 2);
}

// ------------------------------------------------ exited lanes in a mask --
// Lanes 16..31 exit; lanes 0..15 shuffle down by 8 with the full mask, so
// lanes 8..15 read from exited lanes: undefined on a GPU, poison (-1) here.
__global__ void exited_lane_shuffle_kernel(const int* in, int* out) {
  const int lane = threadIdx.x;
  if (lane >= 16) return;
  out[lane] = __shfl_down_sync(0xffffffffu, in[lane], 8);
}

// -------------------------------------------------------------- cp.async --
// Two groups per thread (chunks t and n + t of `in`, 4 floats each, n =
// blockDim.x) into dynamic shared memory; out[phase][group][t] records the
// thread's own destinations before any wait (phase 0), after
// cp_async_wait<1> (phase 1) and after cp_async_wait<0> (phase 2). Reading
// before the wait is a bug on a GPU; the emulator shows the old contents.
__global__ void cp_async_early_read_kernel(const float* in, float* out) {
  DLKERN_DYNAMIC_SMEM(float, stage);
  const int t = threadIdx.x, n = blockDim.x;
  for (int group = 0; group < 2; ++group) {
    cp_async_16(&stage[(group * n + t) * 4], in + (group * n + t) * 4);
    cp_async_commit();
  }
  for (int phase = 0; phase < 3; ++phase) {
    if (phase == 1) cp_async_wait<1>();
    if (phase == 2) cp_async_wait<0>();
    for (int group = 0; group < 2; ++group)
      for (int i = 0; i < 4; ++i)
        out[((phase * 2 + group) * n + t) * 4 + i] = stage[(group * n + t) * 4 + i];
  }
}

// Waits for its own copy, then reads its neighbour's chunk without the
// __syncthreads() that must come between: out[t] should be chunk (t + 1) % n.
__global__ void cp_async_missing_barrier_kernel(const float* in, float* out) {
  DLKERN_DYNAMIC_SMEM(float, stage);
  const int t = threadIdx.x, n = blockDim.x;
  cp_async_16(&stage[t * 4], in + t * 4);
  cp_async_commit();
  cp_async_wait<0>();
  const int from = (t + 1) % n;
  for (int i = 0; i < 4; ++i) out[t * 4 + i] = stage[from * 4 + i];
}

// ----------------------------------------------------- dynamic shared mem --
// out = in reversed, through n floats of dynamic shared memory.
__global__ void reverse_kernel(const float* in, int n, float* out) {
  DLKERN_DYNAMIC_SMEM(float, buf);
  for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = in[i];
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = buf[n - 1 - i];
}

// Reads dynamic shared memory nobody wrote.
__global__ void read_uninitialised_kernel(unsigned int* out) {
  DLKERN_DYNAMIC_SMEM(unsigned int, buf);
  out[threadIdx.x] = buf[threadIdx.x];
}

__global__ void count_kernel(unsigned long long* blocks) {
  if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) atomicAdd(blocks, 1ull);
}

// ------------------------------------------------ kernels that must fail --
// Half the block waits at one __syncthreads(), half at another.
__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
    out[threadIdx.x] = 1;
  } else {
    __syncthreads();
    out[threadIdx.x] = 2;
  }
}

// Threads past `active` return before the barrier the others wait at.
__global__ void exit_before_barrier_kernel(int active, int* out) {
  if (static_cast<int>(threadIdx.x) >= active) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

// Lanes 0..15 shuffle with the whole warp while lanes 16..31 wait at
// __syncthreads(): neither side can finish.
__global__ void warp_vs_barrier_kernel(int* out) {
  const int lane = threadIdx.x;
  if (lane < 16)
    out[lane] = __shfl_sync(0xffffffffu, lane, 0);
  else
    __syncthreads();
}

// Even lanes vote with __ballot_sync, odd lanes with __any_sync.
__global__ void mismatched_votes_kernel(int* out) {
  const int lane = threadIdx.x;
  out[lane] = lane % 2 ? __any_sync(0xffffffffu, 1) : static_cast<int>(__ballot_sync(0xffffffffu, 1));
}

// Every lane shuffles with a mask naming lane 0 only.
__global__ void mask_without_self_kernel(int* out) {
  out[threadIdx.x] = __shfl_sync(0x1u, static_cast<int>(threadIdx.x), 0);
}

// A shuffle width that is not a power of two.
__global__ void bad_width_kernel(int* out) {
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1, 12);
}

// An mma issued by a block of 16 threads: half a warp.
__global__ void partial_warp_mma_kernel(float* out) {
  const uint32_t a[2] = {0, 0}, b[1] = {0};
  const float c[4] = {0, 0, 0, 0};
  float d[4];
  mma_m16n8k8_f16(d, a, b, c);
  out[threadIdx.x] = d[0];
}

// ldmatrix with row addresses 8 bytes off 16-byte alignment.
__global__ void misaligned_ldmatrix_kernel(uint32_t* out) {
  __shared__ __align__(16) uint16_t tile[8 * 16 + 8];
  for (int i = threadIdx.x; i < 8 * 16 + 8; i += 32) tile[i] = static_cast<uint16_t>(i);
  __syncwarp();
  uint32_t r[1];
  ldmatrix_x1(r, &tile[(threadIdx.x % 8) * 16 + 4]);
  out[threadIdx.x] = r[0];
}

// Rounds of a cooperative launch: in round k every block publishes b * 1000 + k
// (slot parity k % 2), meets the others at the grid barrier, and adds up what
// every block published; sums[b] is its total over the rounds. Without the
// barrier a block would read slots not yet written (0xff bytes, -1) or stale.
__global__ void grid_rounds_kernel(int rounds, unsigned* arrived, int* slots, long long* sums) {
  const unsigned blocks = gridDim.x, b = blockIdx.x;
  long long total = 0;
  for (int k = 1; k <= rounds; ++k) {
    int* round = slots + (k % 2) * blocks;
    if (threadIdx.x == 0) round[b] = static_cast<int>(b) * 1000 + k;
    grid_barrier(arrived, static_cast<unsigned>(k));
    if (threadIdx.x == blockDim.x - 1)
      for (unsigned o = 0; o < blocks; ++o) total += round[o];
  }
  if (threadIdx.x == blockDim.x - 1) sums[b] = total;
}

}  // namespace dlkern::fixtures
