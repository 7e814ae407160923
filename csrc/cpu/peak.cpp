// The benchmark harness's throughput probes (see peak.h) and the portable
// FMA loop: multiply-add in plain C++, which the compiler is free to
// vectorise for the baseline instruction set, as it does for the generic
// kernels.
#include "cpu/peak.h"

#include <omp.h>

#include <chrono>
#include <cstring>
#include <memory>

#include "dlkern/error.h"

namespace dlkern::peak {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration<double>(t1 - t0).count();
}

template <typename T>
struct Scalar {
  using V = T;
  static constexpr int lanes = 1, chains = 16;
  static V set1(double x) { return static_cast<T>(x); }
  static V fma(V a, V b, V c) { return a * b + c; }
  static double sum(V v) { return v; }
};

// Written by the probes so their results count as used.
volatile double g_sink;

}  // namespace

FmaLoop fma_loop_generic(DType dtype, int64_t iters) {
  return dtype == DType::float64 ? fma_chains<Scalar<double>>(iters)
                                 : fma_chains<Scalar<float>>(iters);
}

ProbeRun fma_throughput(CpuIsa isa, DType dtype, int threads, int64_t iters) {
  DLKERN_CHECK_TYPE(dtype == DType::float32 || dtype == DType::float64,
                    "fma_throughput: dtype must be float32 or float64, got ", dtype_name(dtype));
  DLKERN_CHECK(threads >= 1 && iters >= 1, "fma_throughput: threads and iters must be >= 1, got ",
               threads, " and ", iters);
  FmaLoop (*loop)(DType, int64_t) = isa == CpuIsa::avx512 ? fma_loop_avx512
                                    : isa == CpuIsa::avx2 ? fma_loop_avx2
                                                          : fma_loop_generic;
  double flops = 0, sink = 0;
  int used = 0;
  Clock::time_point t0, t1;
#pragma omp parallel num_threads(threads) reduction(+ : flops, sink)
  {
    // Every thread starts after t0 and has finished before t1.
#pragma omp single
    {
      used = omp_get_num_threads();
      t0 = Clock::now();
    }
    FmaLoop r = loop(dtype, iters);
    flops += r.flops;
    sink += r.sink;
#pragma omp barrier
#pragma omp single
    t1 = Clock::now();
  }
  g_sink = sink;
  return {flops, seconds_between(t0, t1), used};
}

ProbeRun clock_cycles(int64_t iters) {
  DLKERN_CHECK(iters >= 1, "clock_cycles: iters must be >= 1, got ", iters);
#if defined(__x86_64__) || defined(__i386__)
  // A register operand, not an immediate: some cores fold add-immediate
  // chains at rename, which would beat one add per cycle.
  unsigned long x = 0, one = 1;
  auto t0 = Clock::now();
  for (int64_t i = 0; i < iters; ++i) {
#define DLKERN_ADD8 \
  "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t" \
  "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
    asm volatile(DLKERN_ADD8 DLKERN_ADD8 DLKERN_ADD8 DLKERN_ADD8
                 DLKERN_ADD8 DLKERN_ADD8 DLKERN_ADD8 DLKERN_ADD8
                 : "+r"(x)
                 : "r"(one));
#undef DLKERN_ADD8
  }
  auto t1 = Clock::now();
  g_sink = static_cast<double>(x);
  return {64.0 * static_cast<double>(iters), seconds_between(t0, t1), 1};
#else
  return {0.0, 0.0, 1};
#endif
}

std::vector<double> copy_seconds(int64_t bytes, int threads, int reps) {
  DLKERN_CHECK(bytes >= 4096 && threads >= 1 && reps >= 1,
               "copy_seconds: need bytes >= 4096, threads >= 1, reps >= 1; got ", bytes, ", ",
               threads, ", ", reps);
  std::unique_ptr<char[]> src(new char[bytes]), dst(new char[bytes]);
  // Page-aligned parts, one per thread; the last takes the remainder.
  auto part = [&](int t, int n) {
    int64_t step = (bytes / n) & ~int64_t{4095};
    int64_t begin = t * step;
    return std::pair<int64_t, int64_t>{begin, t == n - 1 ? bytes - begin : step};
  };
#pragma omp parallel num_threads(threads)
  {
    auto [begin, size] = part(omp_get_thread_num(), omp_get_num_threads());
    std::memset(src.get() + begin, 1, size);  // first touch places the pages
    std::memset(dst.get() + begin, 0, size);
  }
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
#pragma omp parallel num_threads(threads)
    {
      auto [begin, size] = part(omp_get_thread_num(), omp_get_num_threads());
      std::memcpy(dst.get() + begin, src.get() + begin, size);
    }
    times.push_back(seconds_between(t0, Clock::now()));
  }
  g_sink = dst[bytes - 1];
  return times;
}

}  // namespace dlkern::peak
