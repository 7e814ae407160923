// The E-step kernels built for generic (see estep_impl.h).
#define DLKERN_GMM_ISA kernels_generic
#include "cpu/gmm/estep_impl.h"
