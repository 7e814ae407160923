// The emulator and its fixtures under AddressSanitizer and -fsanitize=bounds
// (see cmake/emu.cmake); tests/test_emu.py runs it in a subprocess.
//
//   sanitizer_check clean          correct kernels: must exit 0 (no false
//                                  positives from fiber stacks or switching)
//   sanitizer_check dynamic-smem   writes past dynamic shared memory:
//                                  AddressSanitizer heap-buffer-overflow
//   sanitizer_check static-smem    indexes past a static __shared__ array:
//                                  the bounds sanitizer's out-of-bounds error
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "../cuda/selftest.cu"
#include "fixtures.cuh"

namespace dlkern::fixtures {

constexpr int kOobThreads = 64;

// Each thread writes element threadIdx.x + 1 of blockDim.x floats of dynamic
// shared memory: the last thread writes one float past the end.
__global__ void oob_dynamic_smem_kernel(float* out) {
  DLKERN_DYNAMIC_SMEM(float, buf);
  buf[threadIdx.x + 1] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = buf[threadIdx.x];
}

// The same past a static __shared__ array of kOobThreads floats.
__global__ void oob_static_smem_kernel(float* out) {
  __shared__ float tile[kOobThreads];
  tile[threadIdx.x + 1] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = tile[threadIdx.x];
}

}  // namespace dlkern::fixtures

namespace {

using namespace dlkern;

int fail(const char* what) {
  std::fprintf(stderr, "sanitizer_check: %s\n", what);
  return 1;
}

// A few correct kernels touching every part of the emulator, in every order.
int clean() {
  for (emu::Order order : {emu::Order::forward, emu::Order::reverse, emu::Order::shuffle}) {
    emu::set_schedule({order, 7});

    const dim3 grid(3, 2, 1), block(7, 5, 3);
    const int n = 301, blocks = 6, threads = 105;
    std::vector<float> x(blocks * n), sums(blocks);
    std::vector<int> ids(blocks * threads * 6);
    for (int i = 0; i < blocks * n; ++i) x[i] = static_cast<float>(i % 17) - 8.0f;
    auto reduce = fixtures::block_reduce_kernel;
    DLKERN_LAUNCH(reduce, grid, block, 0, nullptr, x.data(), n, sums.data(), ids.data());
    for (int b = 0; b < blocks; ++b) {
      double expected = 0;
      for (int i = 0; i < n; ++i) expected += x[b * n + i];
      if (std::fabs(sums[b] - expected) > 1e-3) return fail("block_reduce_kernel gave a wrong sum");
    }

    std::vector<float> in(20000), out(20000);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i);
    auto reverse = fixtures::reverse_kernel;
    DLKERN_CUDA_CHECK(cudaFuncSetAttribute(reverse, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(in.size() * sizeof(float))));
    DLKERN_LAUNCH(reverse, 1, 128, in.size() * sizeof(float), nullptr, in.data(),
                  static_cast<int>(in.size()), out.data());
    if (out.front() != in.back() || out.back() != in.front()) return fail("reverse_kernel is wrong");

    constexpr int cp = selftest::kCpAsyncThreads;
    std::vector<float> chunks(2 * cp * 4, 1.5f), staged(2 * cp * 4);
    std::vector<unsigned char> valid(2 * cp, 1);
    selftest::cp_async(chunks.data(), valid.data(), staged.data(), nullptr);
    if (staged != chunks) return fail("the cp.async pipeline is wrong");

    std::vector<uint16_t> a(16 * 16, 0x3c00), b(16 * 8, 0x3c00);  // float16 ones
    std::vector<float> c(16 * 8, 0.5f), d(16 * 8);
    selftest::mma(selftest::MmaShape::m16n8k16_f16, a.data(), b.data(), c.data(), d.data(), nullptr);
    for (float v : d)
      if (v != 16.5f) return fail("mma_m16n8k16_f16 is wrong");

    std::vector<uint16_t> m(4 * 64);
    std::vector<uint32_t> r(32 * 4);
    for (int i = 0; i < 4 * 64; ++i) m[i] = static_cast<uint16_t>(i);
    selftest::ldmatrix(4, true, m.data(), r.data(), nullptr);
    if ((r[0] & 0xffffu) != 0 || r[0] >> 16 != 8) return fail("ldmatrix_x4_trans is wrong");
  }
  std::puts("ok");
  return 0;
}

int out_of_bounds(bool dynamic) {
  std::vector<float> out(fixtures::kOobThreads);
  if (dynamic) {
    auto kernel = fixtures::oob_dynamic_smem_kernel;
    DLKERN_LAUNCH(kernel, 1, fixtures::kOobThreads, fixtures::kOobThreads * sizeof(float), nullptr,
                  out.data());
  } else {
    auto kernel = fixtures::oob_static_smem_kernel;
    DLKERN_LAUNCH(kernel, 1, fixtures::kOobThreads, 0, nullptr, out.data());
  }
  return fail("the out-of-bounds write was not caught");
}

}  // namespace

int main(int argc, char** argv) {
  const char* mode = argc == 2 ? argv[1] : "";
  try {
    if (!std::strcmp(mode, "clean")) return clean();
    if (!std::strcmp(mode, "dynamic-smem")) return out_of_bounds(true);
    if (!std::strcmp(mode, "static-smem")) return out_of_bounds(false);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return fail("usage: sanitizer_check clean|dynamic-smem|static-smem");
}
