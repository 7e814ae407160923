// The recurrent pointwise kernels built for avx2 (see pointwise_impl.h).
#define DLKERN_RNN_ISA kernels_avx2
#include "cpu/rnn/pointwise_impl.h"
