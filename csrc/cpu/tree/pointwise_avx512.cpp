// The tree pointwise kernels built for avx512 (see pointwise_impl.h).
#define DLKERN_TREE_ISA kernels_avx512
#include "cpu/tree/pointwise_impl.h"
