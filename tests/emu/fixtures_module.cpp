// _emu_fixtures: runs the kernels of fixtures.cuh on the emulator for
// tests/test_emu.py. NumPy arrays in and out (host memory is the emulated
// device's memory); every runner takes the fiber order and seed.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <tuple>
#include <vector>

#include "bindings/common.h"
#include "fixtures.cuh"

namespace py = pybind11;
using namespace dlkern;

namespace {

template <typename T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;

using Dims = std::tuple<unsigned, unsigned, unsigned>;

dim3 as_dim3(const Dims& d) { return dim3(std::get<0>(d), std::get<1>(d), std::get<2>(d)); }

// Sets the schedule of this thread's launches for one call; releases the GIL.
class Emulated {
 public:
  Emulated(const std::string& order, uint64_t seed) : previous_(emu::schedule()) {
    emu::set_schedule({emu::parse_order(order), seed});
  }
  ~Emulated() { emu::set_schedule(previous_); }
  Emulated(const Emulated&) = delete;
  Emulated& operator=(const Emulated&) = delete;

 private:
  emu::Schedule previous_;
  py::gil_scoped_release release_;
};

template <typename T>
Array<T> empty(std::vector<py::ssize_t> shape) {
  return Array<T>(shape);
}

Array<float> shift(const Array<float>& in, bool missing_sync, const std::string& order, uint64_t seed) {
  const auto n = static_cast<unsigned>(in.size());
  DLKERN_CHECK(n >= 1 && n <= fixtures::kShiftMaxThreads, "shift: 1 to ",
               fixtures::kShiftMaxThreads, " elements, got ", n);
  Array<float> out = empty<float>({in.size()});
  const float* x = in.data();
  float* y = out.mutable_data();
  {
    Emulated emulated(order, seed);
    if (missing_sync) {
      auto kernel = fixtures::shift_missing_sync_kernel;
      DLKERN_LAUNCH(kernel, 1, n, 0, nullptr, x, y);
    } else {
      auto kernel = fixtures::shift_kernel;
      DLKERN_LAUNCH(kernel, 1, n, 0, nullptr, x, y);
    }
  }
  return out;
}

py::tuple block_reduce(const Array<float>& in, const Dims& grid, const Dims& block,
                       const std::string& order, uint64_t seed) {
  const dim3 g = as_dim3(grid), b = as_dim3(block);
  const py::ssize_t blocks = g.x * g.y * g.z, threads = b.x * b.y * b.z;
  DLKERN_CHECK(in.ndim() == 2 && in.shape(0) == blocks, "block_reduce: in must be (blocks, n)");
  DLKERN_CHECK(threads >= 32 && threads <= fixtures::kReduceMaxThreads,
               "block_reduce: 32 to 1024 threads per block");
  Array<float> sums = empty<float>({blocks});
  Array<int> ids = empty<int>({blocks, threads, 6});
  const float* x = in.data();
  const int n = static_cast<int>(in.shape(1));
  float* s = sums.mutable_data();
  int* id = ids.mutable_data();
  {
    Emulated emulated(order, seed);
    auto kernel = fixtures::block_reduce_kernel;
    DLKERN_LAUNCH(kernel, g, b, 0, nullptr, x, n, s, id);
  }
  return py::make_tuple(sums, ids);
}

py::dict atomics(unsigned blocks, unsigned threads, const std::string& order, uint64_t seed) {
  fixtures::AtomicCounters c{};
  c.max = -1;
  c.min = 1;
  c.dec = 0;
  c.exch = -1;
  c.bits_and = ~0u;
  Array<int> exch_seen = empty<int>({static_cast<py::ssize_t>(blocks) * threads});
  int* seen = exch_seen.mutable_data();
  {
    Emulated emulated(order, seed);
    auto kernel = fixtures::atomics_kernel;
    DLKERN_LAUNCH(kernel, blocks, threads, 0, nullptr, &c, seen);
  }
  py::dict d;
  d["add"] = c.add;
  d["add_u"] = c.add_u;
  d["add_ull"] = c.add_ull;
  d["add_f"] = c.add_f;
  d["add_d"] = c.add_d;
  d["add_h"] = __half2float(c.add_h);
  d["add_bf"] = __bfloat162float(c.add_bf);
  d["max"] = c.max;
  d["min"] = c.min;
  d["inc"] = c.inc;
  d["dec"] = c.dec;
  d["cas"] = c.cas;
  d["exch"] = c.exch;
  d["exch_seen"] = exch_seen;
  d["bits_or"] = c.bits_or;
  d["bits_and"] = c.bits_and;
  d["bits_xor"] = c.bits_xor;
  d["sub"] = c.sub;
  return d;
}

Array<int> exited_lane_shuffle(const Array<int>& in, const std::string& order, uint64_t seed) {
  DLKERN_CHECK(in.size() == 32, "exited_lane_shuffle: 32 values");
  Array<int> out = empty<int>({32});
  const int* x = in.data();
  int* y = out.mutable_data();
  for (int i = 0; i < 32; ++i) y[i] = 12345;
  {
    Emulated emulated(order, seed);
    auto kernel = fixtures::exited_lane_shuffle_kernel;
    DLKERN_LAUNCH(kernel, 1, 32, 0, nullptr, x, y);
  }
  return out;
}

Array<float> cp_async_early_read(const Array<float>& in, const std::string& order, uint64_t seed) {
  DLKERN_CHECK(in.ndim() == 3 && in.shape(0) == 2 && in.shape(2) == 4 && in.shape(1) <= 1024,
               "cp_async_early_read: in must be (2, threads, 4)");
  const auto n = static_cast<unsigned>(in.shape(1));
  Array<float> out = empty<float>({3, 2, n, 4});
  const float* x = in.data();
  float* y = out.mutable_data();
  {
    Emulated emulated(order, seed);
    auto kernel = fixtures::cp_async_early_read_kernel;
    DLKERN_LAUNCH(kernel, 1, n, 2 * n * 4 * sizeof(float), nullptr, x, y);
  }
  return out;
}

Array<float> cp_async_missing_barrier(const Array<float>& in, const std::string& order, uint64_t seed) {
  DLKERN_CHECK(in.ndim() == 2 && in.shape(1) == 4 && in.shape(0) <= 1024,
               "cp_async_missing_barrier: in must be (threads, 4)");
  const auto n = static_cast<unsigned>(in.shape(0));
  Array<float> out = empty<float>({n, 4});
  const float* x = in.data();
  float* y = out.mutable_data();
  {
    Emulated emulated(order, seed);
    auto kernel = fixtures::cp_async_missing_barrier_kernel;
    DLKERN_LAUNCH(kernel, 1, n, n * 4 * sizeof(float), nullptr, x, y);
  }
  return out;
}

// Sets the kernel's dynamic shared memory limit, then reverses `in` through
// in.size() floats of dynamic shared memory.
Array<float> reverse(const Array<float>& in, int max_dynamic_smem) {
  const int n = static_cast<int>(in.size());
  Array<float> out = empty<float>({n});
  const float* x = in.data();
  float* y = out.mutable_data();
  {
    py::gil_scoped_release release;
    auto kernel = fixtures::reverse_kernel;
    DLKERN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           max_dynamic_smem));
    DLKERN_LAUNCH(kernel, 1, 128, n * sizeof(float), nullptr, x, n, y);
  }
  return out;
}

Array<unsigned> read_uninitialised(unsigned threads) {
  Array<unsigned> out = empty<unsigned>({threads});
  unsigned* y = out.mutable_data();
  {
    py::gil_scoped_release release;
    auto kernel = fixtures::read_uninitialised_kernel;
    DLKERN_LAUNCH(kernel, 1, threads, threads * sizeof(unsigned), nullptr, y);
  }
  return out;
}

unsigned long long count_blocks(const Dims& grid, const Dims& block, size_t smem_bytes) {
  unsigned long long blocks = 0;
  py::gil_scoped_release release;
  auto kernel = fixtures::count_kernel;
  DLKERN_LAUNCH(kernel, as_dim3(grid), as_dim3(block), smem_bytes, nullptr, &blocks);
  return blocks;
}

// grid_rounds_kernel as a cooperative launch of `blocks` blocks.
std::vector<long long> grid_rounds(unsigned blocks, unsigned threads, int rounds,
                                   const std::string& order, uint64_t seed) {
  std::vector<int> slots(2 * blocks, -1);
  std::vector<long long> sums(blocks, -1);
  unsigned arrived = 0;
  Emulated emulated(order, seed);
  auto kernel = fixtures::grid_rounds_kernel;
  DLKERN_LAUNCH_COOPERATIVE(kernel, blocks, threads, 0, nullptr, rounds, &arrived, slots.data(),
                            sums.data());
  return sums;
}

// Runs a kernel that must fail; the emulator's error becomes RuntimeError.
void fail(const std::string& kind, const std::string& order, uint64_t seed) {
  std::vector<int> ints(64);
  std::vector<float> floats(64);
  std::vector<uint32_t> words(64);
  int* i = ints.data();
  float* f = floats.data();
  uint32_t* w = words.data();
  Emulated emulated(order, seed);
  using namespace fixtures;
  if (kind == "divergent_barrier") {
    auto kernel = divergent_barrier_kernel;
    DLKERN_LAUNCH(kernel, 1, 64, 0, nullptr, i);
  } else if (kind == "exit_before_barrier") {
    auto kernel = exit_before_barrier_kernel;
    DLKERN_LAUNCH(kernel, 1, 64, 0, nullptr, 40, i);
  } else if (kind == "warp_vs_barrier") {
    auto kernel = warp_vs_barrier_kernel;
    DLKERN_LAUNCH(kernel, 1, 32, 0, nullptr, i);
  } else if (kind == "mismatched_votes") {
    auto kernel = mismatched_votes_kernel;
    DLKERN_LAUNCH(kernel, 1, 32, 0, nullptr, i);
  } else if (kind == "mask_without_self") {
    auto kernel = mask_without_self_kernel;
    DLKERN_LAUNCH(kernel, 1, 32, 0, nullptr, i);
  } else if (kind == "bad_width") {
    auto kernel = bad_width_kernel;
    DLKERN_LAUNCH(kernel, 1, 32, 0, nullptr, i);
  } else if (kind == "partial_warp_mma") {
    auto kernel = partial_warp_mma_kernel;
    DLKERN_LAUNCH(kernel, 1, 16, 0, nullptr, f);
  } else if (kind == "misaligned_ldmatrix") {
    auto kernel = misaligned_ldmatrix_kernel;
    DLKERN_LAUNCH(kernel, 1, 32, 0, nullptr, w);
  } else {
    throw ValueError("unknown failing fixture '" + kind + "'");
  }
}

template <typename In, typename Convert>
auto convert_all(const Array<In>& in, Convert convert) {
  using Out = decltype(convert(In{}));
  Array<Out> out = empty<Out>({in.size()});
  for (py::ssize_t k = 0; k < in.size(); ++k) out.mutable_data()[k] = convert(in.data()[k]);
  return out;
}

}  // namespace

PYBIND11_MODULE(_emu_fixtures, m) {
  bindings::register_exceptions();
  m.doc() = "Kernels for the CUDA emulator's own tests (tests/emu/fixtures.cuh)";
  const auto order = py::arg("order") = "forward";
  const auto seed = py::arg("seed") = 0;

  m.def("shift", &shift, py::arg("x"), py::arg("missing_sync"), order, seed);
  m.def("block_reduce", &block_reduce, py::arg("x"), py::arg("grid"), py::arg("block"), order, seed);
  m.def("atomics", &atomics, py::arg("blocks"), py::arg("threads"), order, seed);
  m.def("exited_lane_shuffle", &exited_lane_shuffle, py::arg("x"), order, seed);
  m.def("cp_async_early_read", &cp_async_early_read, py::arg("x"), order, seed);
  m.def("cp_async_missing_barrier", &cp_async_missing_barrier, py::arg("x"), order, seed);
  m.def("reverse", &reverse, py::arg("x"), py::arg("max_dynamic_smem"));
  m.def("read_uninitialised", &read_uninitialised, py::arg("threads"));
  m.def("grid_rounds", &grid_rounds, py::arg("blocks"), py::arg("threads"), py::arg("rounds"),
        order, seed);
  m.def("count_blocks", &count_blocks, py::arg("grid"), py::arg("block"), py::arg("smem_bytes") = 0);
  m.def("fail", &fail, py::arg("kind"), order, seed);
  m.def("last_error", []() { return std::string(cudaGetErrorName(cudaGetLastError())); });

  m.def("float_to_half", [](const Array<float>& x) {
    return convert_all(x, [](float v) { return __half_as_ushort(__float2half_rn(v)); });
  });
  m.def("half_to_float", [](const Array<uint16_t>& x) {
    return convert_all(x, [](uint16_t v) { return __half2float(__ushort_as_half(v)); });
  });
  m.def("float_to_bfloat16", [](const Array<float>& x) {
    return convert_all(x, [](float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); });
  });
  m.def("bfloat16_to_float", [](const Array<uint16_t>& x) {
    return convert_all(x, [](uint16_t v) { return __bfloat162float(__ushort_as_bfloat16(v)); });
  });

  // File name of the AddressSanitizer build of the emulator and fixtures,
  // installed beside this module ("" if the compiler cannot build one):
  // tests/emu/sanitizer_check.cpp.
  m.attr("sanitizer_check") = DLKERN_EMU_SANITIZER_CHECK;
}
