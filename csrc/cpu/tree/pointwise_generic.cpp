// The tree pointwise kernels built for the baseline instruction set (see pointwise_impl.h).
#define DLKERN_TREE_ISA kernels_generic
#include "cpu/tree/pointwise_impl.h"
