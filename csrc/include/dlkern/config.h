// Run-time configuration of the CPU kernels: threads and instruction set.
#pragma once

namespace dlkern {

// Threads used by CPU kernels. The default comes from OMP_NUM_THREADS, else
// the number of cores this process may run on. n < 1 throws ValueError.
void set_num_threads(int n);
int get_num_threads();

// Instruction set of the CPU micro-kernels, picked at run time: the best the
// CPU supports, or DLKERN_CPU_ISA=generic|avx2|avx512 from the environment.
enum class CpuIsa : int { generic = 0, avx2 = 1, avx512 = 2 };

CpuIsa cpu_isa();            // the one in use
CpuIsa cpu_isa_supported();  // the best this CPU and build can run
void set_cpu_isa(CpuIsa isa);  // ValueError if the CPU cannot run it
const char* cpu_isa_name(CpuIsa isa);

}  // namespace dlkern
