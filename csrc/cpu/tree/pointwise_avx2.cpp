// The tree pointwise kernels built for avx2 (see pointwise_impl.h).
#define DLKERN_TREE_ISA kernels_avx2
#include "cpu/tree/pointwise_impl.h"
