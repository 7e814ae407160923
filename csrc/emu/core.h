// The emulator's execution core as the device code sees it: the built-in
// index variables, block barriers, warp collectives, cp.async queues and
// kernel launch. csrc/emu/core.cpp implements it with one fiber per CUDA
// thread and one worker thread per running block (see docs/emulator.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "dlkern/types.h"

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};

namespace dlkern::emu {

// The order in which the runnable threads of a block run between two
// synchronisation points. A correct kernel gives the same result in each.
enum class Order : int { forward = 0, reverse = 1, shuffle = 2 };

struct Schedule {
  Order order = Order::forward;
  uint64_t seed = 0;  // for Order::shuffle: the same seed gives the same interleaving
};

// The schedule of the launches made from the calling host thread.
void set_schedule(Schedule schedule);
Schedule schedule();

// "forward", "reverse", "shuffle"; parse_order throws dlkern::ValueError on others.
Order parse_order(const std::string& name);
const char* order_name(Order order);

// Where a device function was called from, for error messages.
struct Site {
  const char* file;
  int line;
  const char* function;
};

// Trailing parameters of the emulated device functions that record their
// caller (default arguments are evaluated at the call site).
#define DLKERN_EMU_SITE_PARAMS                                                          \
  const char *dlkern_site_file = __builtin_FILE(), int dlkern_site_line = __builtin_LINE(), \
             const char *dlkern_site_function = __builtin_FUNCTION()
#define DLKERN_EMU_SITE ::dlkern::emu::Site{dlkern_site_file, dlkern_site_line, dlkern_site_function}

namespace detail {

// " in function (file:line)", or "" for an unknown site.
std::string describe_site(const Site& site);

// threadIdx and friends. Each worker thread runs one block at a time and its
// fibers never migrate, so thread-local storage is per block; the scheduler
// rewrites thread_idx at every switch between fibers.
struct Builtins {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
inline thread_local Builtins builtins{};

// A warp collective: every participating lane posts a payload (its operands
// and where its results go) and waits; once all lanes named in the mask have
// arrived, `resolve` gets the 32 payloads (null for lanes not taking part)
// and writes every lane's results. `aligned` operations (mma, ldmatrix) need
// all 32 lanes of the warp.
struct WarpOp {
  const char* name;
  bool aligned;
  void (*resolve)(void* const* payloads);
};

void warp_collective(const WarpOp& op, unsigned mask, void* payload, const Site& site);
void sync_block(const Site& site);
void* dynamic_smem();

void cp_async_issue(void* smem_dst, const void* gmem_src, bool valid);
void cp_async_commit();
void cp_async_wait(int pending);

struct KernelLaunch {
  const char* name;
  const void* kernel;  // identifies the kernel for cudaFuncSetAttribute
  dim3 grid;
  dim3 block;
  size_t dynamic_smem_bytes;
  void (*body)(void* context);  // runs the kernel for the current thread
  void* context;
  // cudaLaunchCooperativeKernel: every block runs at once (one worker each),
  // so that blocks may wait for each other (a grid-wide barrier).
  bool cooperative = false;
};

// Checks the configuration like the CUDA runtime, runs every block, and
// throws dlkern::Error on an invalid launch, a deadlock or a failing thread.
void run(const KernelLaunch& launch);

}  // namespace detail

// Under DLKERN_EMU, DLKERN_LAUNCH(kernel, grid, block, smem, stream, args...)
// lands here. The arguments are converted to the kernel's parameter types
// once, as CUDA does at launch, and every thread gets its own copy.
// DLKERN_LAUNCH_COOPERATIVE lands in the same place with `cooperative` set.
template <typename... Params, typename... Args>
void launch(const char* name, bool cooperative, void (*kernel)(Params...), dim3 grid,
            dim3 block, size_t dynamic_smem_bytes,
            cudaStream_t /*stream: launches are synchronous*/, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args),
                "DLKERN_LAUNCH: wrong number of kernel arguments");
  const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  auto body = [&]() { std::apply(kernel, params); };
  detail::run({name, reinterpret_cast<const void*>(kernel), grid, block, dynamic_smem_bytes,
               [](void* f) { (*static_cast<decltype(body)*>(f))(); }, &body, cooperative});
}

inline void* dynamic_smem() { return detail::dynamic_smem(); }

}  // namespace dlkern::emu
