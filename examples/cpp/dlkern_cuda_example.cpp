// The CUDA kernels from C++ (a package built with CUDA): matmul in float on
// the current device, queued on a stream of the program's own, checked
// against a double-precision loop as dlkern_example checks the CPU kernels.
// Built by the host compiler: it calls the CUDA runtime API and dlkern, and has
// no kernels of its own. Where there is no CUDA device it says so and exits 0.
// Usage: dlkern_cuda_example [seed]
#include <cuda_runtime.h>
#include <dlkern/dlkern.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "checks.h"

namespace {

// Stops the program on a failed CUDA runtime call (dlkern's own calls throw
// dlkern::Error instead).
void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::printf("%s: %s\n", what, cudaGetErrorString(err));
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: nothing to run\n");
    return 0;
  }
  const uint64_t seed = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20240607;
  checks::Random rng(seed);
  // C (37 x 23) = A (37 x 29) @ B (29 x 23), row-major.
  const int64_t m = 37, n = 23, k = 29;
  const auto a = rng.uniform<float>(m * k, -1, 1), b = rng.uniform<float>(k * n, -1, 1);
  std::vector<float> c(m * n);

  cudaStream_t stream;
  float *a_dev, *b_dev, *c_dev;
  check_cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
  check_cuda(cudaMalloc(&a_dev, a.size() * sizeof(float)), "cudaMalloc");
  check_cuda(cudaMalloc(&b_dev, b.size() * sizeof(float)), "cudaMalloc");
  check_cuda(cudaMalloc(&c_dev, c.size() * sizeof(float)), "cudaMalloc");
  check_cuda(cudaMemcpyAsync(a_dev, a.data(), a.size() * sizeof(float), cudaMemcpyHostToDevice,
                             stream), "cudaMemcpyAsync");
  check_cuda(cudaMemcpyAsync(b_dev, b.data(), b.size() * sizeof(float), cudaMemcpyHostToDevice,
                             stream), "cudaMemcpyAsync");
  // Queued after the copies on the same stream; the copy back waits for it.
  try {
    dlkern::matmul_cuda(dlkern::DType::float32, {m, n, k}, {}, {a_dev, k, 1}, {b_dev, n, 1},
                        {c_dev, n, 1}, stream);
  } catch (const dlkern::Error& e) {  // a CUDA error while launching
    std::printf("matmul_cuda: %s\n", e.what());
    return 1;
  }
  check_cuda(cudaMemcpyAsync(c.data(), c_dev, c.size() * sizeof(float), cudaMemcpyDeviceToHost,
                             stream), "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  cudaFree(a_dev), cudaFree(b_dev), cudaFree(c_dev), cudaStreamDestroy(stream);

  // float32 runs on the SIMT path in float (dlkern/matmul.h): the sum bound.
  std::vector<double> expected(m * n), bound(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0, magnitude = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double term = double(a[i * k + p]) * double(b[p * n + j]);
        sum += term;
        magnitude += std::fabs(term);
      }
      expected[i * n + j] = sum;
      bound[i * n + j] = checks::sum_bound(k, checks::roundoff<float>(), magnitude);
    }
  const bool ok = checks::report("matmul", c, expected, bound);
  std::printf(ok ? "all ok\n" : "MISMATCH\n");
  return ok ? 0 : 1;
}
