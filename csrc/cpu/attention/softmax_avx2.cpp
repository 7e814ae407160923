// The attention softmax kernels built for avx2 (see softmax_impl.h).
#define DLKERN_ATTENTION_ISA kernels_avx2
#include "cpu/attention/softmax_impl.h"
