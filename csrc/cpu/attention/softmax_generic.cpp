// The attention softmax kernels built for the baseline instruction set (see softmax_impl.h).
#define DLKERN_ATTENTION_ISA kernels_generic
#include "cpu/attention/softmax_impl.h"
