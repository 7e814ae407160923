// Throughput probes for the benchmark harness: the FLOP rate the FMA units
// reach, the core clock, and the memory copy bandwidth. They are measured
// rather than read from a spec sheet, so that "% of peak" holds on any machine,
// virtual or not, at whatever clock it runs.
#pragma once

#include <cstdint>
#include <vector>

#include "dlkern/config.h"
#include "dlkern/types.h"

namespace dlkern::peak {

// What one timed probe did: units of work (FLOPs, cycles) in `seconds` on
// `threads` threads.
struct ProbeRun {
  double work;
  double seconds;
  int threads;
};

// `threads` threads each run `iters` iterations of independent FMA chains in
// `dtype` (float32 or float64) with the instruction set `isa`; work = FLOPs.
ProbeRun fma_throughput(CpuIsa isa, DType dtype, int threads, int64_t iters);

// One thread runs `iters` blocks of dependent integer adds (one cycle each on
// every x86 core); work = cycles, so work / seconds is the clock. work is 0
// where the probe is not implemented (non-x86).
ProbeRun clock_cycles(int64_t iters);

// Seconds for each of `reps` copies of a `bytes` buffer into another, split
// over `threads` threads (each copies the part it first touched).
std::vector<double> copy_seconds(int64_t bytes, int threads, int reps);

// --- per-instruction-set FMA loops (peak.cpp, peak_avx2.cpp, peak_avx512.cpp)

struct FmaLoop {
  double flops;
  double sink;  // depends on every chain, so the loop cannot be dropped
};

FmaLoop fma_loop_generic(DType dtype, int64_t iters);
FmaLoop fma_loop_avx2(DType dtype, int64_t iters);
FmaLoop fma_loop_avx512(DType dtype, int64_t iters);

// The loop shared by every instruction set. `Ops` names a vector type V, its
// lane count, how many independent chains fit the register file with room for
// the two constants, and set1 / fma / sum. Enough chains hide the FMA latency
// on every port (latency 4 x 2 ports needs 8); acc = acc * a + b converges to
// 1, so values never overflow or go subnormal.
template <typename Ops>
FmaLoop fma_chains(int64_t iters) {
  using V = typename Ops::V;
  V acc[Ops::chains];
  for (int c = 0; c < Ops::chains; ++c) acc[c] = Ops::set1(1.0 + c * 1e-3);
  const V a = Ops::set1(0.999999);
  const V b = Ops::set1(1e-6);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 32
    for (int c = 0; c < Ops::chains; ++c) acc[c] = Ops::fma(acc[c], a, b);
  }
  double sink = 0;
  for (int c = 0; c < Ops::chains; ++c) sink += Ops::sum(acc[c]);
  return {2.0 * Ops::lanes * Ops::chains * static_cast<double>(iters), sink};
}

}  // namespace dlkern::peak
