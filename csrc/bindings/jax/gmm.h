// The mixture E-step from XLA (see call.h).
#pragma once

#include "bindings/gmm.h"
#include "bindings/jax/call.h"

namespace dlkern::bindings::jax {

// Operands X (N, D), weights, means, precisions_cholesky; results log_resp
// (N, K) and log_prob_norm (N,); attribute covariance_type.
template <class Backend>
void gmm_estep_call(const Call& c) {
  const Buffer x = c.arg(0);
  const GmmParams p = gmm_params(x.shape(), c.arg(1).shape(), c.arg(2).shape(),
                                 c.arg(3).shape(), c.text("covariance_type"));
  gmm_estep<Backend>(c.dtype(), p, x.address(), x.dim(1), 1, c.arg(1).address(),
                     c.arg(2).address(), c.arg(3).address(), c.ret(0).address(),
                     c.ret(1).address(), c.device, c.stream);
}

}  // namespace dlkern::bindings::jax
