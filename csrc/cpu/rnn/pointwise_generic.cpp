// The recurrent pointwise kernels built for the baseline instruction set (see
// pointwise_impl.h).
#define DLKERN_RNN_ISA kernels_generic
#include "cpu/rnn/pointwise_impl.h"
