// The E-step kernels built for avx512 (see estep_impl.h).
#define DLKERN_GMM_ISA kernels_avx512
#include "cpu/gmm/estep_impl.h"
