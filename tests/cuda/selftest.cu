// Host side of the wrapper self-tests (tests/cuda/selftest.h).
#include "selftest.cuh"

namespace dlkern::selftest {

void mma(MmaShape shape, const void* a, const void* b, const float* c, float* d,
         cudaStream_t stream) {
  auto kernel = cuda::selftest_mma_kernel;
  DLKERN_LAUNCH(kernel, 1, 32, 0, stream, static_cast<int>(shape), a, b, c, d);
}

void ldmatrix(int matrices, bool trans, const uint16_t* src, uint32_t* out, cudaStream_t stream) {
  DLKERN_CHECK(matrices == 1 || matrices == 2 || matrices == 4,
               "ldmatrix self-test: matrices must be 1, 2 or 4, got ", matrices);
  auto kernel = cuda::selftest_ldmatrix_kernel;
  DLKERN_LAUNCH(kernel, 1, 32, 0, stream, matrices, trans, src, out);
}

void warp_op(int op, unsigned mask, int arg, int width, const int* in, int* out,
             cudaStream_t stream) {
  DLKERN_CHECK(op >= 0 && op < kWarpOps, "warp self-test: op must be in [0, ", kWarpOps, "), got ", op);
  auto kernel = cuda::selftest_warp_kernel;
  DLKERN_LAUNCH(kernel, 1, 32, 0, stream, op, mask, arg, width, in, out);
}

void cp_async(const float* in, const unsigned char* valid, float* out, cudaStream_t stream) {
  auto kernel = cuda::selftest_cp_async_kernel;
  DLKERN_LAUNCH(kernel, 1, kCpAsyncThreads, 0, stream, in, valid, out);
}

}  // namespace dlkern::selftest
