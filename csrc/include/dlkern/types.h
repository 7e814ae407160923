// Plain types shared by the C++ API of every family: no framework types.
#pragma once

#include <cstdint>

// cudaStream_t exactly as the CUDA runtime declares it, so that the API can
// name it without pulling in CUDA headers.
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace dlkern {

enum class DType : int { float16 = 0, bfloat16 = 1, float32 = 2, float64 = 3 };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::float16: return "float16";
    case DType::bfloat16: return "bfloat16";
    case DType::float32: return "float32";
    case DType::float64: return "float64";
  }
  return "unknown";
}

inline int dtype_size(DType d) {
  switch (d) {
    case DType::float16:
    case DType::bfloat16: return 2;
    case DType::float32: return 4;
    case DType::float64: return 8;
  }
  return 0;
}

// Element strides of an NCHW tensor (any values, including 0 and negative).
struct Nchw {
  int64_t n, c, h, w;
};

// A strided 2-D view: element (i, j) is data[i * row_stride + j * col_stride].
// Strides are in elements and may be zero or negative.
template <typename T>
struct MatrixView {
  T* data;
  int64_t row_stride;
  int64_t col_stride;
};

}  // namespace dlkern
