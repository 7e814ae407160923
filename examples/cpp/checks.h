// What the examples share: pseudo-random data, unit roundoffs, the bound on a
// sum's rounding error, and the line each check prints.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <vector>

namespace checks {

// Deterministic pseudo-random numbers: a 64-bit linear congruential generator.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}

  template <typename T>
  std::vector<T> uniform(size_t n, double lo, double hi) {
    std::vector<T> v(n);
    for (T& x : v) {
      state_ = state_ * 6364136223846793005ULL + 1442695040888963407ULL;
      x = static_cast<T>(lo + (hi - lo) * static_cast<double>(state_ >> 11) * 0x1.0p-53);
    }
    return v;
  }

 private:
  uint64_t state_;
};

// Unit roundoff: a rounding to T changes x by at most u |x|. The bounds below
// use u of T plus u of double, so that they also cover the reference's own
// rounding (the same analysis with double's u).
template <typename T>
constexpr double roundoff() {
  return std::numeric_limits<T>::epsilon() / 2 + std::numeric_limits<double>::epsilon() / 2;
}

template <typename T>
const char* type_name() {
  return sizeof(T) == sizeof(float) ? "float" : "double";
}

// Prints one line for `op` and says whether every |got - expected| is within
// its bound.
template <typename T>
bool report(const char* op, const std::vector<T>& got, const std::vector<double>& expected,
            const std::vector<double>& bound) {
  double worst_error = 0, worst_ratio = 0;
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double error = std::fabs(static_cast<double>(got[i]) - expected[i]);
    // NaN fails too: the comparison is false.
    if (!(error <= bound[i])) ++bad;
    worst_error = std::max(worst_error, error);
    if (bound[i] > 0) worst_ratio = std::max(worst_ratio, error / bound[i]);
  }
  std::printf("%-10s %-6s %s: %zu values, max error %.2e, %.3f of the bound\n", op,
              type_name<T>(), bad ? "WRONG" : "ok", got.size(), worst_error, worst_ratio);
  if (bad) std::printf("  %zu values off by more than their bound\n", bad);
  return bad == 0;
}

// A sum of n terms (products, or plain values), formed in any order in a type
// of unit roundoff u, is off by at most n u / (1 - n u) times the sum of the
// terms' magnitudes; (n + 1) u bounds that while n (n + 1) u <= 1, which
// holds in the examples (n < 100).
inline double sum_bound(int64_t n, double u, double magnitude) {
  return double(n + 1) * u * magnitude;
}

}  // namespace checks
