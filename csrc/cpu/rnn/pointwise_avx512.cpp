// The recurrent pointwise kernels built for avx512 (see pointwise_impl.h).
#define DLKERN_RNN_ISA kernels_avx512
#include "cpu/rnn/pointwise_impl.h"
