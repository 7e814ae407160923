// dlkern from C++ with no Python: matmul, conv2d, an LSTM sequence and
// attention through the C++ API, in float and double, on pseudo-random data
// laid out with strides (a transposed matrix, an NHWC image, a batch-first
// sequence, a (batch, L, heads, E) query). Each result is checked against a
// plain double-precision loop written here, within a bound on the rounding
// errors of both; prints one line per op and type and exits 1 on a mismatch.
// Usage: dlkern_example [seed] (the data's seed, a fixed one by default).
#include <dlkern/dlkern.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

#include "checks.h"

namespace {

using checks::Random;
using checks::report;
using checks::roundoff;
using checks::sum_bound;

// C (37 x 23) = A (37 x 29) @ B, B given as its transpose: element (p, j) of B
// at bt[j * k + p], i.e. row stride 1 and column stride k.
template <typename T>
bool check_matmul(Random& rng) {
  const int64_t m = 37, n = 23, k = 29;
  const auto a = rng.uniform<T>(m * k, -1, 1), bt = rng.uniform<T>(n * k, -1, 1);
  std::vector<T> c(m * n);
  dlkern::matmul_cpu<T>({m, n, k}, {a.data(), k, 1}, {bt.data(), 1, k}, {c.data(), n, 1});

  std::vector<double> expected(m * n), bound(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0, magnitude = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double term = double(a[i * k + p]) * double(bt[j * k + p]);
        sum += term;
        magnitude += std::fabs(term);
      }
      expected[i * n + j] = sum;
      bound[i * n + j] = sum_bound(k, roundoff<T>(), magnitude);
    }
  return report("matmul", c, expected, bound);
}

// conv2d of a (2, 6, 13, 11) input stored NHWC (the strides say so) with 8
// filters of 3 x 5 in 2 groups, stride (2, 1), padding (1, 2), dilation (1, 2)
// and a bias; the output is contiguous NCHW. This shape takes a direct path;
// float 3x3 stride-1 convolutions may take Winograd, whose rounding bound is
// larger (csrc/cpu/conv/winograd.cpp).
template <typename T>
bool check_conv2d(Random& rng) {
  const int64_t N = 2, C = 6, H = 13, W = 11, O = 8, G = 2, KH = 3, KW = 5;
  const dlkern::Conv2dParams p = dlkern::conv2d_params(
      N, C, H, W, O, C / G, KH, KW, /*stride*/ 2, 1, dlkern::Padding::explicit_, /*pad*/ 1, 2,
      /*dilation*/ 1, 2, G);
  const auto input = rng.uniform<T>(N * H * W * C, -1, 1);
  const auto weight = rng.uniform<T>(O * (C / G) * KH * KW, -1, 1);
  const auto bias = rng.uniform<T>(O, -1, 1);
  const dlkern::Nchw nhwc{H * W * C, 1, W * C, C};
  std::vector<T> out(N * O * p.out_h * p.out_w);
  dlkern::conv2d_forward_cpu<T>(p, input.data(), nhwc, weight.data(), bias.data(), out.data());

  const int64_t per_group = C / G, terms = per_group * KH * KW + 1;
  std::vector<double> expected(out.size()), bound(out.size());
  size_t at = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t y = 0; y < p.out_h; ++y)
        for (int64_t x = 0; x < p.out_w; ++x, ++at) {
          double sum = bias[o], magnitude = std::fabs(double(bias[o]));
          for (int64_t c = 0; c < per_group; ++c)
            for (int64_t i = 0; i < KH; ++i)
              for (int64_t j = 0; j < KW; ++j) {
                const int64_t iy = y * p.stride_h - p.pad_top + i * p.dilation_h;
                const int64_t ix = x * p.stride_w - p.pad_left + j * p.dilation_w;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;  // zero padding
                const int64_t ic = o / (O / G) * per_group + c;
                const double term = double(input[n * nhwc.n + ic * nhwc.c + iy * nhwc.h +
                                                 ix * nhwc.w]) *
                                    double(weight[((o * per_group + c) * KH + i) * KW + j]);
                sum += term;
                magnitude += std::fabs(term);
              }
          expected[at] = sum;
          bound[at] = sum_bound(terms, roundoff<T>(), magnitude);
        }
  return report("conv2d", out, expected, bound);
}

double sigmoid(double z) { return 1 / (1 + std::exp(-z)); }

// An LSTM over a batch-first (3, 7, 5) input (the strides make it the
// (seq_len, batch, input) view the API takes) with hidden size 9, an initial
// state, both biases and lengths 7, 4 and 6 (torch's packed sequences:
// outputs are zero past each length, h_n and c_n are each entry's last state).
// Weights are uniform in +-1/sqrt(hidden), as torch initialises them.
template <typename T>
bool check_lstm(Random& rng) {
  const int64_t steps = 7, B = 3, I = 5, H = 9, G = 4 * H;
  const int64_t lengths[B] = {7, 4, 6};
  const double scale = 1 / std::sqrt(double(H));
  const auto x = rng.uniform<T>(B * steps * I, -1, 1);
  const auto h0 = rng.uniform<T>(B * H, -1, 1), c0 = rng.uniform<T>(B * H, -1, 1);
  const auto w_ih = rng.uniform<T>(G * I, -scale, scale);
  const auto w_hh = rng.uniform<T>(G * H, -scale, scale);
  const auto b_ih = rng.uniform<T>(G, -scale, scale), b_hh = rng.uniform<T>(G, -scale, scale);
  const dlkern::RnnParams p =
      dlkern::lstm_params(steps, B, I, G, I, G, H, B, H, B, H, G, G);
  std::vector<T> out(steps * B * H), h_n(B * H), c_n(B * H);
  dlkern::lstm_forward_cpu<T>(p, lengths, {x.data(), I, steps * I, 1}, {h0.data(), H, 1},
                              {c0.data(), H, 1}, w_ih.data(), w_hh.data(), b_ih.data(),
                              b_hh.data(), out.data(), h_n.data(), c_n.data(), /*saved*/ nullptr);

  // The reference carries, beside each h and c, a bound on the error of the
  // kernel's value (first-order forward error analysis, with u of T plus u of
  // double for the reference's own rounding):
  //   a pre-activation, a sum of I + H + 2 terms, is off by sum_bound of their
  //   magnitudes, plus |w_hh| times the error already in h;
  //   sigmoid is 1/4-Lipschitz and tanh 1-Lipschitz, and each evaluation adds
  //   at most 5 u (dlkern's are within 2.3 ulps, values at most 1);
  //   c' = f c + i g and h' = o tanh(c') add the products' errors and three
  //   roundings (u of their magnitudes).
  // The bound is doubled to cover the second-order terms left out.
  const double u = roundoff<T>();
  std::vector<double> expected_out(out.size(), 0.0), bound_out(out.size(), 0.0);
  std::vector<double> expected_h(B * H), bound_h(B * H), expected_c(B * H), bound_c(B * H);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> h(h0.begin() + b * H, h0.begin() + (b + 1) * H);
    std::vector<double> c(c0.begin() + b * H, c0.begin() + (b + 1) * H);
    std::vector<double> eh(H, 0.0), ec(H, 0.0), act(G), eact(G);
    for (int64_t t = 0; t < lengths[b]; ++t) {
      const T* xt = &x[(b * steps + t) * I];
      for (int64_t r = 0; r < G; ++r) {
        double z = double(b_ih[r]) + double(b_hh[r]);
        double magnitude = std::fabs(double(b_ih[r])) + std::fabs(double(b_hh[r]));
        double carried = 0;
        for (int64_t j = 0; j < I; ++j) {
          z += double(w_ih[r * I + j]) * xt[j];
          magnitude += std::fabs(double(w_ih[r * I + j]) * xt[j]);
        }
        for (int64_t j = 0; j < H; ++j) {
          z += double(w_hh[r * H + j]) * h[j];
          magnitude += std::fabs(double(w_hh[r * H + j]) * h[j]);
          carried += std::fabs(double(w_hh[r * H + j])) * eh[j];
        }
        const double ez = sum_bound(I + H + 2, u, magnitude) + carried;
        const bool is_g = r / H == 2;  // gate order i, f, g, o
        act[r] = is_g ? std::tanh(z) : sigmoid(z);
        eact[r] = (is_g ? ez : ez / 4) + 5 * u;
      }
      for (int64_t j = 0; j < H; ++j) {
        const double i = act[j], f = act[H + j], g = act[2 * H + j], o = act[3 * H + j];
        const double ei = eact[j], ef = eact[H + j], eg = eact[2 * H + j], eo = eact[3 * H + j];
        const double c_next = f * c[j] + i * g;
        ec[j] = std::fabs(c[j]) * ef + f * ec[j] + std::fabs(g) * ei + i * eg +
                3 * u * (std::fabs(f * c[j]) + std::fabs(i * g));
        c[j] = c_next;
        const double tc = std::tanh(c[j]), e_tanh = ec[j] + 5 * u;
        h[j] = o * tc;
        eh[j] = std::fabs(tc) * eo + o * e_tanh + u * std::fabs(h[j]);
        expected_out[(t * B + b) * H + j] = h[j];
        bound_out[(t * B + b) * H + j] = 2 * eh[j];
      }
    }
    for (int64_t j = 0; j < H; ++j) {
      expected_h[b * H + j] = h[j], bound_h[b * H + j] = 2 * eh[j];
      expected_c[b * H + j] = c[j], bound_c[b * H + j] = 2 * ec[j];
    }
  }
  return report("lstm", out, expected_out, bound_out) &
         report("lstm h_n", h_n, expected_h, bound_h) &
         report("lstm c_n", c_n, expected_c, bound_c);
}

// Causal attention (top-left aligned, as torch's is_causal) with 2 batches of
// 3 heads, 7 queries, 11 keys, E = 5 and Ev = 6. The query is stored
// (batch, L, heads, E), as a packed QKV projection leaves it, and given to the
// API as the (batch, heads, L, E) it indexes; key and value are contiguous.
template <typename T>
bool check_attention(Random& rng) {
  const int64_t B = 2, NH = 3, L = 7, S = 11, E = 5, Ev = 6;
  const auto q = rng.uniform<T>(B * L * NH * E, -1, 1);
  const auto k = rng.uniform<T>(B * NH * S * E, -1, 1);
  const auto v = rng.uniform<T>(B * NH * S * Ev, -1, 1);
  const dlkern::AttentionParams p = dlkern::attention_params(
      {B, NH, L, E}, {B, NH, S, E}, {B, NH, S, Ev}, /*mask_shape*/ {}, dlkern::AttentionMask::none,
      /*is_causal*/ true, /*scale: 1/sqrt(E)*/ NAN, /*enable_gqa*/ false, -1, -1);
  std::vector<T> out(B * NH * L * Ev), lse(B * NH * L);
  // Leading dimensions are right-aligned to four: (1, 1, batch, heads).
  const dlkern::AttentionOperand<const T> query{q.data(), {0, 0, L * NH * E, E}, NH * E, 1};
  const dlkern::AttentionOperand<const T> key{k.data(), {0, 0, NH * S * E, S * E}, E, 1};
  const dlkern::AttentionOperand<const T> value{v.data(), {0, 0, NH * S * Ev, S * Ev}, Ev, 1};
  const dlkern::AttentionOperand<const void> no_mask{nullptr, {0, 0, 0, 0}, 0, 0};
  dlkern::attention_forward_cpu<T>(p, query, key, value, no_mask,
                                   {out.data(), {0, 0, NH * L * Ev, L * Ev}, Ev, 1},
                                   {lse.data(), {0, 0, NH * L, L}, 1, 0});

  // With mag the largest sum of |q_e k_e| scale over a row's keys, each
  // probability is off by at most eps times itself:
  //   eps = 2 ((E + 4) u mag + 4 u) + (S + 4) u,
  // from the scores' dot products, the subtraction of the row's max and the
  // exp (a few ulps), and the row sum over S that normalises every term; the
  // output adds one more rounding (u) per term and exp's underflow to 0 below
  // T's smallest subnormal. So out is off by sum_j ((eps + u) p_j + tiny) |v_j|.
  const double u = roundoff<T>(), tiny = std::numeric_limits<T>::denorm_min();
  const double scale = 1 / std::sqrt(double(E));
  std::vector<double> expected(out.size()), bound(out.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t i = 0; i < L; ++i) {
        const T* qi = &q[((b * L + i) * NH + h) * E];
        const T* kb = &k[(b * NH + h) * S * E];
        const T* vb = &v[(b * NH + h) * S * Ev];
        const int64_t keys = std::min(S, i + 1);  // causal: keys 0..i
        std::vector<double> prob(keys);
        double max_score = -INFINITY, mag = 0, total = 0;
        for (int64_t j = 0; j < keys; ++j) {
          double s = 0, m = 0;
          for (int64_t e = 0; e < E; ++e) {
            s += double(qi[e]) * kb[j * E + e];
            m += std::fabs(double(qi[e]) * kb[j * E + e]);
          }
          prob[j] = s * scale;
          max_score = std::max(max_score, prob[j]);
          mag = std::max(mag, m * scale);
        }
        for (double& s : prob) total += (s = std::exp(s - max_score));
        const double eps = 2 * ((E + 4) * u * mag + 4 * u) + (S + 4) * u;
        for (int64_t c = 0; c < Ev; ++c) {
          double sum = 0, err = 0;
          for (int64_t j = 0; j < keys; ++j) {
            sum += prob[j] / total * vb[j * Ev + c];
            err += ((eps + u) * prob[j] / total + tiny) * std::fabs(double(vb[j * Ev + c]));
          }
          const size_t at = ((b * NH + h) * L + i) * Ev + c;
          expected[at] = sum, bound[at] = err;
        }
      }
  return report("attention", out, expected, bound);
}

template <typename T>
bool check_all(Random& rng) {
  // & rather than &&: every check runs and prints its line.
  return check_matmul<T>(rng) & check_conv2d<T>(rng) & check_lstm<T>(rng) &
         check_attention<T>(rng);
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t seed = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20240607;
  std::printf("dlkern CPU kernels: %s, %d threads, seed %llu\n",
              dlkern::cpu_isa_name(dlkern::cpu_isa()), dlkern::get_num_threads(),
              static_cast<unsigned long long>(seed));
  Random rng(seed);
  bool ok = check_all<float>(rng) & check_all<double>(rng);

  // Bad arguments throw dlkern::ValueError (or TypeError), whose message
  // names the argument: here a stride of 0.
  try {
    dlkern::conv2d_params(1, 6, 8, 8, 4, 6, 3, 3, /*stride*/ 0, 1, dlkern::Padding::valid, 0, 0,
                          1, 1, 1);
    std::printf("conv2d with stride 0: no error\n");
    ok = false;
  } catch (const dlkern::ValueError& e) {
    std::printf("bad arguments throw dlkern::ValueError: %s\n", e.what());
  }
  std::printf(ok ? "all ok\n" : "MISMATCH\n");
  return ok ? 0 : 1;
}
