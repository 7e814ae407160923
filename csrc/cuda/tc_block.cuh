// A block's tile product on tensor cores, shared by the GEMM and the
// implicit-GEMM convolutions: float16/bfloat16 operands, float32 accumulators,
// mma.sync m16n8k16 fed by ldmatrix from a multi-stage shared-memory pipeline.
//
// A block of kWarpsM x kWarpsN warps computes a kBlockM x kBlockN tile of C,
// each warp 64x32; K advances kBlockK = 32 at a time through kStages stages
// that the caller's loader fills (normally with cp.async). Shared tiles keep
// the operand's contiguous dimension contiguous, so any global layout loads
// with 16-byte copies, and ldmatrix (.trans where needed) turns either
// orientation into mma fragments:
//   A "K-major": A[m][k] with k contiguous, else A[k][m];
//   B "N-major": B[k][n] with n contiguous, else B[n][k].
// Rows are padded by 16 bytes, which puts the 8 rows one ldmatrix reads in 8
// distinct bank groups.
#pragma once

#include <type_traits>

#include "cuda/mma.cuh"
#include "cuda/numeric.cuh"

namespace dlkern::cuda::tc {

constexpr int kBlockK = 32;
constexpr int kStages = 4;
constexpr int kPad = 8;    // elements of padding per shared row (16 bytes)
constexpr int kChunk = 8;  // 16-bit elements per 16-byte copy
constexpr int kWarpM = 64, kWarpN = 32;
constexpr int kTilesM = kWarpM / 16, kTilesN = kWarpN / 8;  // mma tiles per warp

// kMinBlocks: blocks per multiprocessor a kernel should fit in registers
// (__launch_bounds__), the most its shared memory allows on sm_80/sm_90.
template <int kBlockM_, int kBlockN_, int kMinBlocks_ = 1>
struct Shape {
  static constexpr int kBlockM = kBlockM_, kBlockN = kBlockN_;
  static constexpr int kWarpsM = kBlockM / kWarpM, kWarpsN = kBlockN / kWarpN;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kMinBlocks = kMinBlocks_;
};

// A shared tile of `rows` x `cols` elements, `cols` contiguous.
template <int rows, int cols>
struct SmemTile {
  static constexpr int kStride = cols + kPad;
  static constexpr int kElems = rows * kStride;
};

template <class S, bool kAKMajor>
using ATile =
    std::conditional_t<kAKMajor, SmemTile<S::kBlockM, kBlockK>, SmemTile<kBlockK, S::kBlockM>>;
template <class S, bool kBNMajor>
using BTile =
    std::conditional_t<kBNMajor, SmemTile<kBlockK, S::kBlockN>, SmemTile<S::kBlockN, kBlockK>>;

// Dynamic shared memory of the pipeline: kStages A tiles, then kStages B tiles.
template <class S, bool kAKMajor, bool kBNMajor>
constexpr int smem_bytes() {
  return kStages * (ATile<S, kAKMajor>::kElems + BTile<S, kBNMajor>::kElems) * 2;
}

// One thread's accumulators: [m tile][n tile][4] in mma's C layout.
using Accumulators = float[kTilesM][kTilesN][4];

template <typename T>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
                "tensor-core tiles take float16 or bfloat16");
  if constexpr (std::is_same_v<T, __half>)
    mma_m16n8k16_f16(d, a, b, d);
  else
    mma_m16n8k16_bf16(d, a, b, d);
}

// acc += A (block rows) x B (block columns) over k_tiles tiles of kBlockK.
// `smem` is the kernel's dynamic shared memory (smem_bytes()). The loader is
// called as load_stage(a_stage, b_stage) exactly once for each k tile, in
// order 0, 1, ..., k_tiles - 1, so it may keep its position as state; it
// issues cp.async copies into the stage's tiles (or stores them directly) and
// must not commit. Ends with every copy retired but without a barrier: call
// __syncthreads() before reusing shared memory.
template <typename T, class S, bool kAKMajor, bool kBNMajor, typename LoadStage>
__device__ __forceinline__ void block_product(Accumulators& acc, T* smem, int64_t k_tiles,
                                              LoadStage& load_stage) {
  using ATileT = ATile<S, kAKMajor>;
  using BTileT = BTile<S, kBNMajor>;
  T* a_smem = smem;
  T* b_smem = smem + kStages * ATileT::kElems;

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = (warp / S::kWarpsN) * kWarpM, wn = (warp % S::kWarpsN) * kWarpN;
  // ldmatrix.x4: lanes 8i..8i+7 address the 8 rows of matrix i.
  const int mat = lane / 8, row_in_mat = lane % 8;

  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(a_smem + s * ATileT::kElems, b_smem + s * BTileT::kElems);
    cp_async_commit();
  }

  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage kt is in; everyone is done with stage kt - 1
    const int64_t next = kt + kStages - 1;
    if (next < k_tiles) {
      const int s = static_cast<int>(next % kStages);
      load_stage(a_smem + s * ATileT::kElems, b_smem + s * BTileT::kElems);
    }
    cp_async_commit();

    const int stage = static_cast<int>(kt % kStages);
    const T* as = a_smem + stage * ATileT::kElems;
    const T* bs = b_smem + stage * BTileT::kElems;
#pragma unroll
    for (int kk = 0; kk < kBlockK; kk += 16) {
      uint32_t af[kTilesM][4], bf[kTilesN][2];
#pragma unroll
      for (int i = 0; i < kTilesM; ++i) {
        // Matrix `mat` covers rows (mat % 2) * 8 and columns (mat / 2) * 8 of the 16x16 A tile.
        const int r = wm + i * 16 + (mat % 2) * 8, kc = kk + (mat / 2) * 8;
        if constexpr (kAKMajor)
          ldmatrix_x4(af[i], as + (r + row_in_mat) * ATileT::kStride + kc);
        else
          ldmatrix_x4_trans(af[i], as + (kc + row_in_mat) * ATileT::kStride + r);
      }
#pragma unroll
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
#pragma unroll
      for (int i = 0; i < kTilesM; ++i)
#pragma unroll
        for (int j = 0; j < kTilesN; ++j) mma<T>(acc[i][j], af[i], bf[j]);
    }
  }
  cp_async_wait<0>();
}

// Calls f(row, col, v0, v1) for each pair of this thread's accumulators:
// v0 = C[row][col], v1 = C[row][col + 1], row and col within the block tile
// (mma's layout: acc[..][0, 1] = C[g][2t, 2t + 1], acc[..][2, 3] = C[g + 8][...]).
template <class S, typename F>
__device__ __forceinline__ void for_each_pair(const Accumulators& acc, F f) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = (warp / S::kWarpsN) * kWarpM, wn = (warp % S::kWarpsN) * kWarpN;
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < kTilesM; ++i)
#pragma unroll
    for (int j = 0; j < kTilesN; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        f(wm + i * 16 + g + h * 8, wn + j * 8 + 2 * t, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
}

}  // namespace dlkern::cuda::tc
