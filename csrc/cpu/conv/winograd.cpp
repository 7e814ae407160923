// Winograd F(4x4, 3x3) for 3x3, stride-1, dilation-1 float32 convolutions:
// 36 multiplications per 4 x 4 output tile and channel pair instead of 144.
//
// The filters are transformed once per call (U = G g G^T, straight into GEMM
// A micro-panels, one matrix per xi of the 36). The output tiles, numbered
// over (image, tile row, tile column), are cut into blocks of a few GEMM
// micro-panels' width; a thread takes a block at a time and
//   1. transforms the block's input tiles (V = B^T d B) into B micro-panels,
//   2. multiplies, per xi, M_xi (K_g x tiles) = U_xi (K_g x C_g) @ V_xi with
//      the GEMM core's micro-kernels,
//   3. transforms M back into output tiles (Y = A^T M A + bias),
// so a block's V and M stay in its core's caches. The transforms are in
// kernels_winograd.h.
//
// Accuracy: every output is a sum of the same products as the direct sum,
// but formed through the transforms, whose entries reach 5 (B) and 8 (A):
// the rounding error is bounded by (C_g + 14) u times the same computation
// on absolute values with absolute matrices, which on random data averages
// 70 to 90 times the direct sum's magnitude (up to ~600 at a tile's last row
// and column). Observed float32 errors stay below 12% of the direct-sum
// bound the tests use elsewhere (0.3% of the Winograd bound), falling as C_g
// grows. tests/test_conv.py derives the bound and checks against it.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "cpu/conv/kernels.h"
#include "cpu/conv/paths.h"
#include "cpu/gemm/driver.h"

namespace dlkern::cpu::conv {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The runs of tiles [t0, t0 + count), numbered over (n, ty, tx), at block
// columns 0 .. count.
int tile_runs(int64_t t0, int64_t count, int64_t tiles_h, int64_t tiles_w, TileRun* runs) {
  int nruns = 0;
  for (int64_t t = t0; t < t0 + count;) {
    const int64_t row = t / tiles_w, tx = t % tiles_w;
    const int64_t len = std::min(t0 + count - t, tiles_w - tx);
    runs[nruns++] = {row / tiles_h, row % tiles_h, tx, tx + len, t - t0};
    t += len;
  }
  return nruns;
}

// Elements between the 36 matrices of V or M (rows x cols each): the
// transforms touch all 36 at once, and at a power-of-two distance they would
// all fall into one set of the L1 cache.
int64_t xi_stride(int64_t rows, int64_t cols) { return rows * cols + 16; }

// The outputs of a block's tiles by direct sums, for blocks with an inf or
// NaN among their inputs: the transforms would smear it over whole tiles.
void direct_tiles(const Conv2dParams& p, const float* in, Nchw st, const float* w,
                  const float* bias, const TileRun* runs, int nruns, float* out) {
  const int64_t cin = p.in_channels / p.groups, kout = p.out_channels / p.groups;
  const int64_t plane = p.out_h * p.out_w;
  for (int r = 0; r < nruns; ++r) {
    const TileRun& run = runs[r];
    const int64_t oh_end = std::min(p.out_h, (run.ty + 1) * kWinoOut);
    const int64_t ow_end = std::min(p.out_w, run.tx1 * kWinoOut);
    for (int64_t k = 0; k < kout; ++k)
      for (int64_t oh = run.ty * kWinoOut; oh < oh_end; ++oh)
        for (int64_t ow = run.tx0 * kWinoOut; ow < ow_end; ++ow) {
          float acc = bias ? bias[k] : 0.0f;
          for (int64_t c = 0; c < cin; ++c)
            for (int64_t i = 0; i < 3; ++i) {
              const int64_t ih = oh - p.pad_top + i;
              if (ih < 0 || ih >= p.in_h) continue;
              for (int64_t j = 0; j < 3; ++j) {
                const int64_t iw = ow - p.pad_left + j;
                if (iw < 0 || iw >= p.in_w) continue;
                acc += w[(k * cin + c) * 9 + i * 3 + j] *
                       in[run.n * st.n + c * st.c + ih * st.h + iw * st.w];
              }
            }
          out[(run.n * p.out_channels + k) * plane + oh * p.out_w + ow] = acc;
        }
  }
}

}  // namespace

bool winograd_applies(const Conv2dParams& p) {
  return p.kernel_h == 3 && p.kernel_w == 3 && p.stride_h == 1 && p.stride_w == 1 &&
         p.dilation_h == 1 && p.dilation_w == 1 &&
         gemm::kernels<float>().nr % kernels<float>().lanes == 0;
}

bool winograd_pays(const Conv2dParams& p) {
  const double cin = p.in_channels / p.groups, kout = p.out_channels / p.groups;
  const double tiles = static_cast<double>(p.batch) * ceil_div(p.out_h, kWinoOut) *
                       ceil_div(p.out_w, kWinoOut);
  const double positions = static_cast<double>(p.batch) * p.out_h * p.out_w;
  // Estimated nanoseconds on one core, per group, from measurements on the
  // AVX-512 machine of bench/results/conv-cpu.md: the implicit GEMM runs at
  // ~113 multiply-adds per ns; Winograd's products at ~125 (no packing),
  // plus ~10 ns per tile and input channel (input transform), ~5 per tile
  // and output channel (output transform) and ~10 per filter (its
  // transform). Partial tiles at the edges count whole.
  const double gemm = 9 * kout * cin * positions / 113;
  const double winograd = kWinoXi * kout * cin * tiles / 125 + 10 * cin * tiles +
                          5 * kout * tiles + 10 * kout * cin;
  return winograd < gemm;
}

void forward_winograd(const Conv2dParams& p, const float* in, Nchw st, const float* w,
                      const float* bias, float* out) {
  const gemm::GemmKernel<float>& K = gemm::kernels<float>();
  const ConvKernels<float>& ck = kernels<float>();
  const int64_t cin = p.in_channels / p.groups, kout = p.out_channels / p.groups;
  const int64_t tiles_h = ceil_div(p.out_h, kWinoOut), tiles_w = ceil_div(p.out_w, kWinoOut);
  const int64_t tiles = p.batch * tiles_h * tiles_w, plane = p.out_h * p.out_w;
  const int mr = K.mr, nr = K.nr;
  const int64_t panels = ceil_div(kout, mr), u_stride = panels * mr * cin;  // per xi
  const int nt = threads_for(static_cast<double>(tiles) * kWinoXi * cin * p.out_channels);
  // Tiles per block: two micro-panels' width keeps V and M in L2 for the
  // channel counts Winograd is used for, and U, which every block streams
  // through, is read half as often as with one (narrower blocks would share
  // out more evenly between threads, but U's traffic costs more).
  const int64_t block = std::min<int64_t>(2 * nr, ceil_div(tiles, nr) * nr);
  const int64_t blocks = ceil_div(tiles, block);
  float* u = static_cast<float*>(
      scratch(Scratch::filters, sizeof(float) * p.groups * kWinoXi * u_stride));

#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(static)
    for (int64_t gq = 0; gq < p.groups * panels; ++gq) {
      const int64_t g = gq / panels, q = gq % panels;
      ck.winograd_filters(w + (g * kout + q * mr) * cin * 9, std::min<int64_t>(mr, kout - q * mr),
                          cin, mr, u_stride, u + g * kWinoXi * u_stride + q * mr * cin);
    }
    const int64_t cols_max = ceil_div(block, nr) * nr;
    float* v = static_cast<float*>(
        scratch(Scratch::tiles, sizeof(float) * kWinoXi * xi_stride(cin, cols_max)));
    float* m = static_cast<float*>(
        scratch(Scratch::products, sizeof(float) * kWinoXi * xi_stride(kout, cols_max)));
    float* z = static_cast<float*>(scratch(Scratch::transform, sizeof(float) * winograd_scratch(block, nr)));
    std::vector<TileRun> runs(block + 2);

#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < p.groups * blocks; ++item) {
      const int64_t g = item / blocks, t0 = item % blocks * block;
      const int64_t count = std::min(block, tiles - t0), cols = ceil_div(count, nr) * nr;
      const int nruns = tile_runs(t0, count, tiles_h, tiles_w, runs.data());
      const float* x = in + g * cin * st.c;
      const float* bg = bias ? bias + g * kout : nullptr;
      float* og = out + g * kout * plane;
      const int64_t v_stride = xi_stride(cin, cols), m_stride = xi_stride(kout, cols);
      if (!ck.winograd_input(p, x, st, cin, runs.data(), nruns, count, nr, v_stride, v, z)) {
        direct_tiles(p, x, st, w + g * kout * cin * 9, bg, runs.data(), nruns, og);
        continue;
      }
      const float* ug = u + g * kWinoXi * u_stride;
      for (int xi = 0; xi < kWinoXi; ++xi)
        for (int64_t q = 0; q < panels; ++q) {
          const int rows = static_cast<int>(std::min<int64_t>(mr, kout - q * mr));
          const float* a = ug + xi * u_stride + q * mr * cin;
          gemm::TileStore<float> ts{};
          ts.rs = cols;
          ts.cs = 1;
          ts.m = rows;
          ts.n = nr;
          ts.bias_stride = 1;
          for (int64_t c0 = 0; c0 < cin; c0 += K.kc) {
            const int64_t kc = std::min(K.kc, cin - c0);
            ts.load_c = c0 > 0;
            for (int64_t j = 0; j < cols; j += nr) {
              ts.c = m + xi * m_stride + q * mr * cols + j;
              K.micro_kernels[rows - 1](kc, a + c0 * mr, v + xi * v_stride + j * cin + c0 * nr,
                                        ts);
            }
          }
        }
      ck.winograd_output(p, m, m_stride, cols, kout, runs.data(), nruns, count, bg, og,
                         p.out_channels * plane, z);
    }
  }
}

}  // namespace dlkern::cpu::conv
