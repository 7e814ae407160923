// The emulator's execution core: fibers, the per-block scheduler, deadlock
// detection, warp collectives, cp.async queues and the worker pool.
//
// A launch hands its blocks to min(blocks, cores) worker threads (a cooperative
// launch: one per block, since its blocks may wait for each other). A worker
// runs one block at a time: each CUDA thread of the block is a ucontext fiber
// with its own stack (stacks are kept and reused for later blocks). Fibers run
// cooperatively in "rounds": every runnable fiber, in the schedule's order,
// runs until it reaches a synchronisation point (__syncthreads, a warp
// collective) or exits, and switches straight to the next one. Between rounds
// the scheduler completes the warp collectives whose lanes have all arrived,
// then releases __syncthreads once every thread waits there. When nothing can
// move, the block is deadlocked and the launch throws, naming the kernel and
// what every thread waits for.
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dlkern/error.h"
#include "emu/core.h"
#include "emu/runtime_api.h"

#if defined(__SANITIZE_ADDRESS__)
#define DLKERN_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DLKERN_EMU_ASAN 1
#endif
#endif

#if defined(DLKERN_EMU_ASAN)
#include <pthread.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace dlkern::emu {

namespace {
thread_local Schedule tls_schedule{};
}  // namespace

void set_schedule(Schedule s) { tls_schedule = s; }
Schedule schedule() { return tls_schedule; }

Order parse_order(const std::string& name) {
  for (Order o : {Order::forward, Order::reverse, Order::shuffle})
    if (name == order_name(o)) return o;
  throw ValueError("the emulator's order must be 'forward', 'reverse' or 'shuffle', got '" + name + "'");
}

const char* order_name(Order order) {
  switch (order) {
    case Order::forward: return "forward";
    case Order::reverse: return "reverse";
    case Order::shuffle: return "shuffle";
  }
  return "unknown";
}

namespace detail {

std::string describe_site(const Site& s) {
  if (!s.file) return "";
  const char* slash = std::strrchr(s.file, '/');
  return ::dlkern::detail::concat(" in ", s.function, " (", slash ? slash + 1 : s.file, ":", s.line,
                                  ")");
}

namespace {

using ::dlkern::detail::concat;

// Address sanitizer instrumentation makes frames larger.
#if defined(DLKERN_EMU_ASAN)
constexpr size_t kStackBytes = 256 * 1024;
#else
constexpr size_t kStackBytes = 128 * 1024;
#endif

// A fiber stack with an inaccessible guard page below it, so that an
// overflow faults instead of corrupting the neighbouring stack.
class Stack {
 public:
  Stack() {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, kStackBytes + page_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    base_ = static_cast<char*>(p);
    mprotect(base_, page_, PROT_NONE);
  }
  ~Stack() { munmap(base_, kStackBytes + page_); }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  void* bottom() const { return base_ + page_; }
  size_t size() const { return kStackBytes; }

 private:
  char* base_;
  size_t page_;
};

enum class State { ready, at_barrier, at_warp_op, exited };

struct PendingCopy {
  void* dst;
  unsigned char bytes[16];
  bool valid;
  uint64_t group;
};

struct Fiber {
  ucontext_t context;
  Stack stack;
  unsigned linear = 0;
  uint3 index{};
  State state = State::ready;
  Site site{};                    // where it waits
  const WarpOp* op = nullptr;     // the collective it waits at
  unsigned mask = 0;
  void* payload = nullptr;
  std::vector<PendingCopy> copies;  // cp.async not yet landed, oldest first
  uint64_t commits = 0;             // cp.async groups committed so far
#if defined(DLKERN_EMU_ASAN)
  void* fake_stack = nullptr;
#endif

  // Lands the copies of every group older than the `pending` newest ones.
  void land_copies(uint64_t pending) {
    const uint64_t done = commits > pending ? commits - pending : 0;
    size_t kept = 0;
    for (PendingCopy& c : copies) {
      if (c.group < done) {
        if (c.valid)
          std::memcpy(c.dst, c.bytes, 16);
        else
          std::memset(c.dst, 0, 16);
      } else {
        copies[kept++] = c;
      }
    }
    copies.resize(kept);
  }
};

// One launch as the workers see it.
struct Job {
  const KernelLaunch* launch;
  Schedule schedule;
  uint64_t blocks;
  unsigned threads_per_block;
  std::atomic<uint64_t> next_block{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::exception_ptr error;

  void fail(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (!error) error = e;
    failed = true;
  }
};

std::string describe_dim(const uint3& v) { return concat("(", v.x, ",", v.y, ",", v.z, ")"); }

class Executor;
thread_local Executor* tls_executor = nullptr;

Executor& executor(const char* what) {
  if (!tls_executor)
    throw Error(concat(what, " was called outside an emulated kernel; device functions run only "
                             "inside a kernel launched with DLKERN_LAUNCH"));
  return *tls_executor;
}

void fiber_main();

// Runs blocks on one worker thread.
class Executor {
 public:
  Executor() {
#if defined(DLKERN_EMU_ASAN)
    pthread_attr_t attr;
    pthread_getattr_np(pthread_self(), &attr);
    pthread_attr_getstack(&attr, &main_stack_bottom_, &main_stack_size_);
    pthread_attr_destroy(&attr);
#endif
  }

  void prepare(Job& job) {
    job_ = &job;
    const size_t bytes = job.launch->dynamic_smem_bytes;
    // Exactly the requested size, so that the address sanitizer sees overruns.
    smem_.reset(static_cast<unsigned char*>(::operator new(bytes, std::align_val_t(16))));
    smem_bytes_ = bytes;
    while (fibers_.size() < job.threads_per_block) {
      fibers_.push_back(std::make_unique<Fiber>());
      getcontext(&fibers_.back()->context);
    }
  }

  void run_block(uint64_t block) {
    const KernelLaunch& L = *job_->launch;
    const uint64_t gx = L.grid.x, gy = L.grid.y;
    block_index_ = {static_cast<unsigned>(block % gx), static_cast<unsigned>(block / gx % gy),
                    static_cast<unsigned>(block / (gx * gy))};
    builtins.block_idx = block_index_;
    builtins.block_dim = L.block;
    builtins.grid_dim = L.grid;
    threads_ = job_->threads_per_block;
    fiber_error_ = nullptr;
    // Uninitialised dynamic shared memory reads as NaN / -1.
    std::memset(smem_.get(), 0xff, smem_bytes_);
    for (unsigned i = 0; i < threads_; ++i) {
      Fiber& f = *fibers_[i];
      f.linear = i;
      f.index = {i % L.block.x, i / L.block.x % L.block.y, i / (L.block.x * L.block.y)};
      f.state = State::ready;
      f.copies.clear();
      f.commits = 0;
      f.context.uc_stack.ss_sp = f.stack.bottom();
      f.context.uc_stack.ss_size = f.stack.size();
      f.context.uc_link = nullptr;
      makecontext(&f.context, fiber_main, 0);
    }
    std::mt19937_64 rng(job_->schedule.seed * 0x9e3779b97f4a7c15ull + block);

    for (;;) {
      round_.clear();
      for (unsigned i = 0; i < threads_; ++i)
        if (fibers_[i]->state == State::ready) round_.push_back(fibers_[i].get());
      if (job_->schedule.order == Order::reverse) std::reverse(round_.begin(), round_.end());
      if (job_->schedule.order == Order::shuffle) shuffle_round(rng);
      if (!round_.empty()) {
        cursor_ = 1;
        enter(round_[0]);
      }
      if (fiber_error_) std::rethrow_exception(fiber_error_);
      if (resolve_warp_ops()) continue;
      if (!release_barrier()) break;
    }
  }

  // ---- called from fibers ----
  Fiber& current() { return *current_; }
  Job& job() { return *job_; }
  void* dynamic_smem() { return smem_.get(); }

  // The current fiber has set its state (waiting or exited): run the next
  // fiber of the round, or return to the scheduler when the round is over.
  void suspend() {
    Fiber* self = current_;
    Fiber* next = nullptr;
    while (!fiber_error_ && cursor_ < round_.size()) {
      Fiber* f = round_[cursor_++];
      if (f->state == State::ready) {
        next = f;
        break;
      }
    }
    switch_from(self, next);
  }

  void fiber_failed(std::exception_ptr e) {
    const Fiber& f = *current_;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      fiber_error_ = std::make_exception_ptr(
          Error(concat(context(), ", thread ", describe_dim(f.index), ": ", ex.what())));
    } catch (...) {
      fiber_error_ = std::make_exception_ptr(
          Error(concat(context(), ", thread ", describe_dim(f.index), ": unknown exception")));
    }
  }

#if defined(DLKERN_EMU_ASAN)
  void finish_switch(Fiber* self) { __sanitizer_finish_switch_fiber(self->fake_stack, nullptr, nullptr); }
  void finish_first_switch() { __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr); }
#else
  void finish_switch(Fiber*) {}
  void finish_first_switch() {}
#endif

  std::string context() const {
    return concat("emulated kernel '", job_->launch->name, "', block ", describe_dim(block_index_));
  }

 private:
  // Scheduler -> first fiber of a round; returns when the round is over.
  void enter(Fiber* f) {
    current_ = f;
    builtins.thread_idx = f->index;
#if defined(DLKERN_EMU_ASAN)
    __sanitizer_start_switch_fiber(&main_fake_stack_, f->stack.bottom(), f->stack.size());
#endif
    swapcontext(&main_, &f->context);
#if defined(DLKERN_EMU_ASAN)
    __sanitizer_finish_switch_fiber(main_fake_stack_, nullptr, nullptr);
#endif
  }

  // Fiber `self` -> fiber `next`, or back to the scheduler when null.
  void switch_from(Fiber* self, Fiber* next) {
    current_ = next;
    if (next) builtins.thread_idx = next->index;
#if defined(DLKERN_EMU_ASAN)
    // An exited fiber never resumes: let the sanitizer drop its fake stack.
    void** save = self->state == State::exited ? nullptr : &self->fake_stack;
    if (next)
      __sanitizer_start_switch_fiber(save, next->stack.bottom(), next->stack.size());
    else
      __sanitizer_start_switch_fiber(save, main_stack_bottom_, main_stack_size_);
#endif
    swapcontext(&self->context, next ? &next->context : &main_);
    finish_switch(self);
  }

  // Fisher-Yates spelled out: std::shuffle's results differ between standard
  // libraries, and a seed should name the same interleaving everywhere.
  void shuffle_round(std::mt19937_64& rng) {
    for (size_t i = round_.size(); i > 1; --i) std::swap(round_[i - 1], round_[rng() % i]);
  }

  Fiber& lane(unsigned warp, unsigned l) { return *fibers_[warp * 32 + l]; }

  // Completes every warp collective whose lanes have all arrived.
  bool resolve_warp_ops() {
    bool progress = false;
    for (unsigned warp = 0; warp * 32 < threads_; ++warp) {
      const unsigned lanes = std::min(32u, threads_ - warp * 32);
      for (unsigned l = 0; l < lanes; ++l) {
        Fiber& f = lane(warp, l);
        if (f.state != State::at_warp_op) continue;
        void* payloads[32] = {};
        unsigned members = 0;
        bool complete = true;
        for (unsigned j = 0; j < 32 && complete; ++j) {
          if (!(f.mask >> j & 1u)) continue;
          if (j >= lanes || lane(warp, j).state == State::exited) {
            // Lanes that exited (or do not exist) take no part, as on the
            // GPU; instructions marked .aligned need the whole warp.
            if (f.op->aligned)
              throw Error(concat(context(), ": ", f.op->name, describe_site(f.site),
                                 " needs all 32 lanes of warp ", warp, ", but lane ", j,
                                 j >= lanes ? " does not exist (the block has "
                                            : " has exited (the block has ",
                                 threads_, " threads)"));
            continue;
          }
          const Fiber& g = lane(warp, j);
          if (g.state != State::at_warp_op || g.op != f.op || g.mask != f.mask) {
            complete = false;
          } else {
            payloads[j] = g.payload;
            members |= 1u << j;
          }
        }
        if (!complete) continue;
        try {
          f.op->resolve(payloads);
        } catch (const std::exception& e) {
          throw Error(concat(context(), ", warp ", warp, ": ", e.what()));
        }
        for (unsigned j = 0; j < lanes; ++j)
          if (members >> j & 1u) lane(warp, j).state = State::ready;
        progress = true;
      }
    }
    return progress;
  }

  // Releases __syncthreads if every thread waits there; false when all
  // threads have exited. Throws on a deadlock.
  bool release_barrier() {
    unsigned exited = 0, at_barrier = 0;
    for (unsigned i = 0; i < threads_; ++i) {
      exited += fibers_[i]->state == State::exited;
      at_barrier += fibers_[i]->state == State::at_barrier;
    }
    if (exited == threads_) return false;
    if (at_barrier + exited < threads_)
      throw Error(concat(context(), ": deadlock, no thread can continue (on a GPU this kernel "
                                    "would hang or be undefined): ",
                         describe_threads()));
    if (exited > 0)
      throw Error(concat(context(), ": some threads exited while others wait at __syncthreads() "
                                    "(every thread of a block must reach each __syncthreads()): ",
                         describe_threads()));
    const Site& first = fibers_[0]->site;
    for (unsigned i = 1; i < threads_; ++i) {
      const Site& s = fibers_[i]->site;
      if (s.line != first.line || std::strcmp(s.file, first.file) != 0)
        throw Error(concat(context(), ": threads wait at different __syncthreads() (a barrier in "
                                      "divergent code): ",
                           describe_threads()));
    }
    for (unsigned i = 0; i < threads_; ++i) fibers_[i]->state = State::ready;
    return true;
  }

  std::string describe(const Fiber& f) const {
    switch (f.state) {
      case State::ready: return "runnable";
      case State::exited: return "exited";
      case State::at_barrier: return "wait at __syncthreads()" + describe_site(f.site);
      case State::at_warp_op: {
        std::ostringstream mask;
        mask << std::hex << f.mask;
        return concat("wait at ", f.op->name, "(mask 0x", mask.str(), ")", describe_site(f.site));
      }
    }
    return "";
  }

  // "threads 0-31: <state>; threads 32-63: <state>", grouping the threads
  // (numbered x + y * blockDim.x + z * blockDim.x * blockDim.y) by state.
  std::string describe_threads() const {
    std::vector<std::pair<std::string, std::vector<std::pair<unsigned, unsigned>>>> groups;
    for (unsigned i = 0; i < threads_; ++i) {
      std::string what = describe(*fibers_[i]);
      auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& e) { return e.first == what; });
      if (g == groups.end()) g = groups.insert(groups.end(), {std::move(what), {}});
      auto& ranges = g->second;
      if (!ranges.empty() && ranges.back().second + 1 == i)
        ranges.back().second = i;
      else
        ranges.push_back({i, i});
    }
    std::string out;
    for (const auto& [what, ranges] : groups) {
      constexpr size_t kShown = 4;
      unsigned count = 0;
      std::string ids;
      for (size_t r = 0; r < ranges.size(); ++r) {
        count += ranges[r].second - ranges[r].first + 1;
        if (r < kShown)
          ids += concat(r ? ", " : "", ranges[r].first,
                        ranges[r].second > ranges[r].first ? concat("-", ranges[r].second) : "");
      }
      if (ranges.size() > kShown) ids += concat(", ... (", count, " threads)");
      if (!out.empty()) out += "; ";
      out += concat(count > 1 ? "threads " : "thread ", ids, ": ", what);
    }
    return out;
  }

  Job* job_ = nullptr;
  std::vector<std::unique_ptr<Fiber>> fibers_;
  struct AlignedDelete {
    void operator()(unsigned char* p) const { ::operator delete(p, std::align_val_t(16)); }
  };
  std::unique_ptr<unsigned char, AlignedDelete> smem_;
  size_t smem_bytes_ = 0;
  unsigned threads_ = 0;
  uint3 block_index_{};
  ucontext_t main_;
  std::vector<Fiber*> round_;
  size_t cursor_ = 0;
  Fiber* current_ = nullptr;
  std::exception_ptr fiber_error_;
#if defined(DLKERN_EMU_ASAN)
  void* main_fake_stack_ = nullptr;
  void* main_stack_bottom_ = nullptr;
  size_t main_stack_size_ = 0;
#endif
};

void fiber_main() {
  Executor& ex = *tls_executor;
  ex.finish_first_switch();
  Fiber& f = ex.current();
  try {
    ex.job().launch->body(ex.job().launch->context);
    ++f.commits;  // outstanding cp.async, committed or not, still land when a thread exits
    f.land_copies(0);
  } catch (...) {
    ex.fiber_failed(std::current_exception());
  }
  f.state = State::exited;
  ex.suspend();  // never resumes: the next block re-creates the context
}

// Persistent worker threads, one executor each. One launch runs at a time.
class Pool {
 public:
  static Pool& get() {
    // Recreated in a forked child, which inherits the object but not the threads.
    static Pool* pool = nullptr;
    static pid_t owner = 0;
    if (!pool || owner != getpid()) {
      pool = new Pool();  // never destroyed: workers may outlive static destructors
      owner = getpid();
    }
    return *pool;
  }

  void run(Job& job, unsigned workers) {
    std::unique_lock<std::mutex> lock(mutex_);
    for (; started_ < workers; ++started_) std::thread([this, index = started_] { work(index); }).detach();
    job_ = &job;
    wanted_ = workers;
    busy_ = workers;
    ++generation_;
    wake_.notify_all();
    done_.wait(lock, [this] { return busy_ == 0; });
    job_ = nullptr;
  }

 private:
  void work(unsigned index) {
    Executor executor;
    tls_executor = &executor;
    uint64_t seen = 0;
    for (;;) {
      Job* job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen && index < wanted_; });
        seen = generation_;
        job = job_;
      }
      try {
        executor.prepare(*job);
        for (uint64_t b; !job->failed && (b = job->next_block++) < job->blocks;)
          executor.run_block(b);
      } catch (...) {
        job->fail(std::current_exception());
      }
      std::lock_guard<std::mutex> lock(mutex_);
      if (--busy_ == 0) done_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  unsigned started_ = 0;
  Job* job_ = nullptr;
  unsigned wanted_ = 0;
  unsigned busy_ = 0;
  uint64_t generation_ = 0;
};

// The exception takes the place of the cudaGetLastError() check that follows
// a launch under nvcc, so the error is not left pending.
[[noreturn]] void launch_error(cudaError_t error, const KernelLaunch& L, const std::string& why) {
  throw Error(concat("CUDA error ", cudaGetErrorName(error), " (", cudaGetErrorString(error),
                     ") launching emulated kernel '", L.name, "' with grid ",
                     describe_dim(L.grid), ", block ", describe_dim(L.block), ", ",
                     L.dynamic_smem_bytes, " bytes of dynamic shared memory: ", why));
}

// The launch checks of the CUDA runtime for a compute capability 9.0 device.
void check_configuration(const KernelLaunch& L) {
  const dim3 b = L.block, g = L.grid;
  if (b.x == 0 || b.y == 0 || b.z == 0 || g.x == 0 || g.y == 0 || g.z == 0)
    launch_error(cudaErrorInvalidConfiguration, L, "every grid and block dimension must be >= 1");
  if (b.x > 1024 || b.y > 1024 || b.z > 64)
    launch_error(cudaErrorInvalidConfiguration, L, "block dimensions are limited to (1024, 1024, 64)");
  if (static_cast<uint64_t>(b.x) * b.y * b.z > kMaxThreadsPerBlock)
    launch_error(cudaErrorInvalidConfiguration, L,
                 concat("a block has at most ", kMaxThreadsPerBlock, " threads"));
  if (g.x > 2147483647u || g.y > 65535 || g.z > 65535)
    launch_error(cudaErrorInvalidConfiguration, L, "grid dimensions are limited to (2^31-1, 65535, 65535)");
  const int limit = max_dynamic_smem(L.kernel);
  if (L.dynamic_smem_bytes > static_cast<size_t>(limit))
    launch_error(cudaErrorInvalidValue, L,
                 concat("the kernel may use at most ", limit,
                        " bytes of dynamic shared memory; above ", kDefaultDynamicSmemBytes,
                        " call cudaFuncSetAttribute(kernel, "
                        "cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) first (at most ",
                        kMaxDynamicSmemOptinBytes, ")"));
}

// Blocks of `threads` threads and the launch's dynamic shared memory that the
// emulated device holds at once: compute capability 9.0's per-multiprocessor
// limits on threads, blocks and shared memory (registers and static shared
// memory are not known here).
uint64_t co_resident_blocks(const KernelLaunch& L, unsigned threads) {
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  uint64_t per_sm = std::min<uint64_t>(prop.maxBlocksPerMultiProcessor,
                                       prop.maxThreadsPerMultiProcessor / threads);
  if (L.dynamic_smem_bytes > 0)
    per_sm = std::min<uint64_t>(per_sm, prop.sharedMemPerMultiprocessor / L.dynamic_smem_bytes);
  return per_sm * prop.multiProcessorCount;
}

std::mutex launch_mutex;

}  // namespace

void run(const KernelLaunch& launch) {
  if (tls_executor)
    throw Error(concat("emulated kernel '", launch.name,
                       "' was launched from device code; the emulator has no dynamic parallelism"));
  check_configuration(launch);
  Job job;
  job.launch = &launch;
  job.schedule = tls_schedule;
  job.blocks = static_cast<uint64_t>(launch.grid.x) * launch.grid.y * launch.grid.z;
  job.threads_per_block = launch.block.x * launch.block.y * launch.block.z;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  unsigned workers = static_cast<unsigned>(std::min<uint64_t>(job.blocks, cores));
  if (launch.cooperative) {
    // As CUDA does, refuse a grid that could not be resident all at once; the
    // rest run one worker per block, since a block may wait for any other.
    const uint64_t limit = co_resident_blocks(launch, job.threads_per_block);
    if (job.blocks > limit)
      launch_error(cudaErrorCooperativeLaunchTooLarge, launch,
                   concat("a cooperative launch must fit on the device at once: at most ", limit,
                          " blocks of this size (", kEmulatedMultiprocessors,
                          " multiprocessors), got ", job.blocks));
    workers = static_cast<unsigned>(job.blocks);
  }
  {
    std::lock_guard<std::mutex> lock(launch_mutex);
    Pool::get().run(job, workers);
  }
  if (job.error) std::rethrow_exception(job.error);
}

void* dynamic_smem() { return executor("DLKERN_DYNAMIC_SMEM").dynamic_smem(); }

void sync_block(const Site& site) {
  Executor& ex = executor("__syncthreads");
  Fiber& f = ex.current();
  f.site = site;
  f.state = State::at_barrier;
  ex.suspend();
}

void warp_collective(const WarpOp& op, unsigned mask, void* payload, const Site& site) {
  Executor& ex = executor(op.name);
  Fiber& f = ex.current();
  const unsigned lane = f.linear % 32;
  if (!(mask >> lane & 1u)) {
    std::ostringstream hex;
    hex << std::hex << mask;
    throw Error(concat(op.name, describe_site(site), " with mask 0x", hex.str(),
                       ", which does not include the calling lane ", lane));
  }
  f.op = &op;
  f.mask = mask;
  f.payload = payload;
  f.site = site;
  f.state = State::at_warp_op;
  ex.suspend();
}

void cp_async_issue(void* smem_dst, const void* gmem_src, bool valid) {
  Fiber& f = executor("cp_async_16").current();
  if (reinterpret_cast<uintptr_t>(smem_dst) % 16 || (valid && reinterpret_cast<uintptr_t>(gmem_src) % 16))
    throw Error(concat("cp_async_16 needs 16-byte aligned addresses, got destination ", smem_dst,
                       " and source ", gmem_src));
  PendingCopy c{smem_dst, {}, valid, f.commits};
  if (valid) std::memcpy(c.bytes, gmem_src, 16);  // the source is read at issue
  f.copies.push_back(c);
}

void cp_async_commit() { ++executor("cp_async_commit").current().commits; }

void cp_async_wait(int pending) {
  executor("cp_async_wait").current().land_copies(static_cast<uint64_t>(pending));
}

}  // namespace detail
}  // namespace dlkern::emu
