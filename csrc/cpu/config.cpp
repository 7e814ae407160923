#include "dlkern/config.h"

#include <sched.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "dlkern/error.h"

namespace dlkern {
namespace {

int default_num_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    // OpenMP allows a list ("4,2"); the first entry is the outer level.
    int n = std::atoi(env);
    if (n >= 1) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
  unsigned n = std::thread::hardware_concurrency();
  return n >= 1 ? static_cast<int>(n) : 1;
}

std::atomic<int>& num_threads_setting() {
  static std::atomic<int> n{default_num_threads()};
  return n;
}

bool cpu_can_run(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::generic: return true;
    case CpuIsa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CpuIsa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  }
  return false;
}

CpuIsa parse_isa(const char* name) {
  for (CpuIsa isa : {CpuIsa::generic, CpuIsa::avx2, CpuIsa::avx512})
    if (std::strcmp(name, cpu_isa_name(isa)) == 0) return isa;
  throw ValueError(detail::concat("DLKERN_CPU_ISA must be generic, avx2 or avx512; got '", name,
                                  "'"));
}

CpuIsa initial_isa() {
  if (const char* env = std::getenv("DLKERN_CPU_ISA"); env && *env) {
    CpuIsa isa = parse_isa(env);
    if (cpu_can_run(isa)) return isa;
  }
  return cpu_isa_supported();
}

std::atomic<int>& isa_setting() {
  static std::atomic<int> isa{static_cast<int>(initial_isa())};
  return isa;
}

}  // namespace

void set_num_threads(int n) {
  DLKERN_CHECK(n >= 1, "set_num_threads: n must be at least 1, got ", n);
  num_threads_setting().store(n);
}

int get_num_threads() { return num_threads_setting().load(); }

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::generic: return "generic";
    case CpuIsa::avx2: return "avx2";
    case CpuIsa::avx512: return "avx512";
  }
  return "unknown";
}

CpuIsa cpu_isa_supported() {
  if (cpu_can_run(CpuIsa::avx512)) return CpuIsa::avx512;
  if (cpu_can_run(CpuIsa::avx2)) return CpuIsa::avx2;
  return CpuIsa::generic;
}

CpuIsa cpu_isa() { return static_cast<CpuIsa>(isa_setting().load()); }

void set_cpu_isa(CpuIsa isa) {
  DLKERN_CHECK(cpu_can_run(isa), "set_cpu_isa: this CPU cannot run ", cpu_isa_name(isa),
               " kernels; the best it supports is ", cpu_isa_name(cpu_isa_supported()));
  isa_setting().store(static_cast<int>(isa));
}

}  // namespace dlkern
