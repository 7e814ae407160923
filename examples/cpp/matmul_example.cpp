// Multiplies two small matrices with dlkern's CPU GEMM and checks the result.
#include <dlkern/dlkern.h>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  const int64_t m = 3, n = 2, k = 4;
  std::vector<float> a(m * k), b(k * n), c(m * n);
  for (int64_t i = 0; i < m * k; ++i) a[i] = 0.5f * static_cast<float>(i) - 1.0f;
  for (int64_t i = 0; i < k * n; ++i) b[i] = 1.0f - 0.25f * static_cast<float>(i);

  // Row-major: row stride = columns, column stride = 1.
  dlkern::matmul_cpu<float>({m, n, k}, {a.data(), k, 1}, {b.data(), n, 1}, {c.data(), n, 1});

  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float expected = 0;
      for (int64_t p = 0; p < k; ++p) expected += a[i * k + p] * b[p * n + j];
      if (std::fabs(c[i * n + j] - expected) > 1e-5f * (1 + std::fabs(expected))) {
        std::printf("wrong: C[%ld][%ld] = %g, expected %g\n", static_cast<long>(i),
                    static_cast<long>(j), c[i * n + j], expected);
        return 1;
      }
    }
  std::printf("dlkern %s kernels: ok\n", dlkern::cpu_isa_name(dlkern::cpu_isa()));
  return 0;
}
