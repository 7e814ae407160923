// The E-step kernels built for avx2 (see estep_impl.h).
#define DLKERN_GMM_ISA kernels_avx2
#include "cpu/gmm/estep_impl.h"
