// Tensor-core GEMM for float16/bfloat16 with float32 accumulation:
// mma.sync m16n8k16 fed by ldmatrix from a multi-stage shared-memory pipeline.
//
// A block computes a 128x128 tile of C with 8 warps (2 along M x 4 along N,
// 64x32 each); K advances 32 at a time through kStages shared-memory stages.
// Shared tiles keep the operand's contiguous dimension contiguous, so any
// layout loads with 16-byte copies, and ldmatrix (.trans where needed) turns
// either orientation into mma fragments. Rows are padded by 16 bytes, which
// puts the 8 rows one ldmatrix reads in 8 distinct bank groups.
//
// kVector: the operands are unit-stride along one dimension, 16-byte aligned,
// and that dimension is a multiple of 8, so tiles arrive by cp.async (zero
// filled past the edges). Otherwise every element is loaded on its own with
// bounds checks, for any strides.
#pragma once

#include "cuda/gemm_operands.cuh"
#include "cuda/mma.cuh"

namespace dlkern::cuda {

namespace gemm_tc {
constexpr int kBlockM = 128, kBlockN = 128, kBlockK = 32;
constexpr int kWarpM = 64, kWarpN = 32;
constexpr int kWarpsM = kBlockM / kWarpM, kWarpsN = kBlockN / kWarpN;
constexpr int kThreads = 32 * kWarpsM * kWarpsN;
constexpr int kStages = 4;
constexpr int kPad = 8;  // elements of padding per shared row (16 bytes)
constexpr int kChunk = 8;  // 16-bit elements per 16-byte copy

// A shared tile of `rows` x `cols` elements, `cols` contiguous.
template <int rows, int cols>
struct SmemTile {
  static constexpr int kStride = cols + kPad;
  static constexpr int kElems = rows * kStride;
};

// A stage holds a kBlockM x kBlockK tile of A and a kBlockK x kBlockN tile of
// B, each stored with its global unit-stride dimension contiguous.
template <bool kAKMajor>
using ATile = std::conditional_t<kAKMajor, SmemTile<kBlockM, kBlockK>, SmemTile<kBlockK, kBlockM>>;
template <bool kBNMajor>
using BTile = std::conditional_t<kBNMajor, SmemTile<kBlockK, kBlockN>, SmemTile<kBlockN, kBlockK>>;

template <bool kAKMajor, bool kBNMajor>
constexpr int smem_bytes() {
  return kStages * (ATile<kAKMajor>::kElems + BTile<kBNMajor>::kElems) * 2;
}
}  // namespace gemm_tc

// Loads the tile of a matrix whose shared copy is `rows` x `cols` (cols
// contiguous in shared memory). Element (r, c) of the tile is global element
// base[(r0 + r) * stride_r + (c0 + c) * stride_c], valid while r0 + r < limit_r
// and c0 + c < limit_c.
template <typename T, bool kVector, int rows, int cols>
__device__ __forceinline__ void gemm_tc_load_tile(T* smem, const T* base, int64_t r0, int64_t c0,
                                                  int64_t limit_r, int64_t limit_c,
                                                  int64_t stride_r, int64_t stride_c) {
  using namespace gemm_tc;
  constexpr int kStride = SmemTile<rows, cols>::kStride;
  if constexpr (kVector) {
    constexpr int kChunksPerRow = cols / kChunk;
    for (int e = threadIdx.x; e < rows * kChunksPerRow; e += kThreads) {
      const int r = e / kChunksPerRow, c = (e % kChunksPerRow) * kChunk;
      const int64_t gr = r0 + r, gc = c0 + c;
      const bool valid = gr < limit_r && gc < limit_c;  // limit_c % kChunk == 0 here
      const T* src = valid ? base + gr * stride_r + gc : base;
      cp_async_16(smem + r * kStride + c, src, valid);
    }
  } else {
    for (int e = threadIdx.x; e < rows * cols; e += kThreads) {
      const int r = e / cols, c = e % cols;
      const int64_t gr = r0 + r, gc = c0 + c;
      smem[r * kStride + c] =
          (gr < limit_r && gc < limit_c) ? base[gr * stride_r + gc * stride_c] : convert<T>(0.0f);
    }
  }
}

template <typename T>
__device__ __forceinline__ void gemm_tc_mma(float (&d)[4], const uint32_t (&a)[4],
                                            const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __half>)
    mma_m16n8k16_f16(d, a, b, d);
  else
    mma_m16n8k16_bf16(d, a, b, d);
}

template <typename T, bool kVector, bool kAKMajor, bool kBNMajor>
__global__ void __launch_bounds__(gemm_tc::kThreads) gemm_tensor_core_kernel(GemmOperands<T> op) {
  using namespace gemm_tc;
  using ATileT = ATile<kAKMajor>;
  using BTileT = BTile<kBNMajor>;
  DLKERN_DYNAMIC_SMEM(T, smem);
  T* a_smem = smem;                                // kStages A tiles
  T* b_smem = smem + kStages * ATileT::kElems;     // then kStages B tiles

  const int64_t z = blockIdx.z;
  const T* a = op.a + z * op.a_batch;
  const T* b = op.b + z * op.b_batch;
  T* c = op.c + z * op.c_batch;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kBlockM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kBlockN;

  auto load_stage = [&](int stage, int64_t k0) {
    T* as = a_smem + stage * ATileT::kElems;
    T* bs = b_smem + stage * BTileT::kElems;
    if constexpr (kAKMajor)  // shared A[m][k]
      gemm_tc_load_tile<T, kVector, kBlockM, kBlockK>(as, a, m0, k0, op.m, op.k, op.a_row, op.a_col);
    else  // shared A[k][m]
      gemm_tc_load_tile<T, kVector, kBlockK, kBlockM>(as, a, k0, m0, op.k, op.m, op.a_col, op.a_row);
    if constexpr (kBNMajor)  // shared B[k][n]
      gemm_tc_load_tile<T, kVector, kBlockK, kBlockN>(bs, b, k0, n0, op.k, op.n, op.b_row, op.b_col);
    else  // shared B[n][k]
      gemm_tc_load_tile<T, kVector, kBlockN, kBlockK>(bs, b, n0, k0, op.n, op.k, op.b_col, op.b_row);
  };

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = (warp / kWarpsN) * kWarpM, wn = (warp % kWarpsN) * kWarpN;
  constexpr int kTilesM = kWarpM / 16, kTilesN = kWarpN / 8;
  float acc[kTilesM][kTilesN][4] = {};

  // ldmatrix.x4: lanes 8i..8i+7 address the 8 rows of matrix i.
  const int mat = lane / 8, row_in_mat = lane % 8;

  const int64_t k_tiles = (op.k + kBlockK - 1) / kBlockK;
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s * kBlockK);
    cp_async_commit();
  }

  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage kt is in; everyone is done with stage kt - 1
    const int64_t next = kt + kStages - 1;
    if (next < k_tiles) load_stage(static_cast<int>(next % kStages), next * kBlockK);
    cp_async_commit();

    const int stage = static_cast<int>(kt % kStages);
    const T* as = a_smem + stage * ATileT::kElems;
    const T* bs = b_smem + stage * BTileT::kElems;
    for (int kk = 0; kk < kBlockK; kk += 16) {
      uint32_t af[kTilesM][4], bf[kTilesN][2];
      for (int i = 0; i < kTilesM; ++i) {
        // Matrix `mat` covers rows (mat % 2) * 8 and columns (mat / 2) * 8 of the 16x16 A tile.
        const int r = wm + i * 16 + (mat % 2) * 8, kc = kk + (mat / 2) * 8;
        if constexpr (kAKMajor)
          ldmatrix_x4(af[i], as + (r + row_in_mat) * ATileT::kStride + kc);
        else
          ldmatrix_x4_trans(af[i], as + (kc + row_in_mat) * ATileT::kStride + r);
      }
      for (int j = 0; j < kTilesN; j += 2) {
        // Matrices 0, 1: k halves of n-tile j; matrices 2, 3: of n-tile j + 1.
        const int n = wn + (j + mat / 2) * 8, kc = kk + (mat % 2) * 8;
        uint32_t r[4];
        if constexpr (kBNMajor)
          ldmatrix_x4_trans(r, bs + (kc + row_in_mat) * BTileT::kStride + n);
        else
          ldmatrix_x4(r, bs + (n + row_in_mat) * BTileT::kStride + kc);
        bf[j][0] = r[0], bf[j][1] = r[1], bf[j + 1][0] = r[2], bf[j + 1][1] = r[3];
      }
      for (int i = 0; i < kTilesM; ++i)
        for (int j = 0; j < kTilesN; ++j) gemm_tc_mma<T>(acc[i][j], af[i], bf[j]);
    }
  }
  cp_async_wait<0>();

  // Accumulator layout: acc[..][0, 1] = C[g][2t, 2t + 1], acc[..][2, 3] = C[g + 8][...].
  const int g = lane / 4, t = lane % 4;
  for (int i = 0; i < kTilesM; ++i)
    for (int j = 0; j < kTilesN; ++j)
      for (int h = 0; h < 2; ++h) {
        const int64_t row = m0 + wm + i * 16 + g + h * 8;
        const int64_t col = n0 + wn + j * 8 + 2 * t;
        if (row >= op.m) continue;
        for (int e = 0; e < 2; ++e)
          if (col + e < op.n) c[row * op.c_row + (col + e) * op.c_col] = convert<T>(acc[i][j][2 * h + e]);
      }
}

}  // namespace dlkern::cuda
