// The attention softmax kernels built for avx512 (see softmax_impl.h).
#define DLKERN_ATTENTION_ISA kernels_avx512
#include "cpu/attention/softmax_impl.h"
