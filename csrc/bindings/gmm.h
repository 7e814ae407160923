// Gaussian-mixture bindings: GmmParams and the shape rules that build it
// (_cpu only), and the E-step, the M-step and (CUDA only: the CPU's runs
// through LAPACK in Python) the precisions' factorisation as
// def_gmm<Backend> (see backend.h).
#pragma once

#include <cstdint>
#include <string>

#include "bindings/backend.h"
#include "bindings/common.h"
#include "dlkern/gmm.h"

namespace dlkern::bindings {

inline void def_gmm_params(py::module_& m) {
  py::class_<GmmParams>(m, "GmmParams", "A checked mixture E-step; made by gmm_params")
      .def_readonly("n_samples", &GmmParams::n_samples)
      .def_readonly("n_features", &GmmParams::n_features)
      .def_readonly("n_components", &GmmParams::n_components);
  m.def("gmm_params", &gmm_params);
  m.def("gmm_mstep_params", &gmm_mstep_params);
  m.def("gmm_cholesky_params", &gmm_cholesky_params);
}

// The E-step, named so that the XLA FFI handler (jax/gmm.h) shares it.
template <class Backend>
void gmm_estep(DType dtype, const GmmParams& p, Address x, int64_t x_row_stride,
               int64_t x_col_stride, Address weights, Address means, Address prec,
               Address log_resp, Address log_prob_norm, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    gmm_estep_cuda(dtype, p, view<const void>(x, x_row_stride, x_col_stride), weights, means,
                   prec, log_resp, log_prob_norm, stream);
  else
    dispatch_float(dtype, "gmm_estep", [&](auto t) {
      using T = decltype(t);
      gmm_estep_cpu<T>(p, view<const T>(x, x_row_stride, x_col_stride), weights, means, prec,
                       log_resp, log_prob_norm);
    });
}

template <class Backend>
void def_gmm(py::module_& m) {
  m.def(
      "gmm_estep",
      [](const std::string& dtype, const GmmParams& p, Address x, int64_t x_row_stride,
         int64_t x_col_stride, Address weights, Address means, Address prec, Address log_resp,
         Address log_prob_norm, int device, Address stream) {
        gmm_estep<Backend>(parse_dtype(dtype), p, x, x_row_stride, x_col_stride, weights, means,
                           prec, log_resp, log_prob_norm, device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "gmm_mstep",
      [](const std::string& dtype, const GmmParams& p, Address x, int64_t x_row_stride,
         int64_t x_col_stride, Address resp, int64_t resp_row_stride, int64_t resp_col_stride,
         double reg_covar, Address nk, Address means, Address covariances, int device,
         Address stream) {
        [[maybe_unused]] typename Backend::DeviceGuard guard(device);
        if constexpr (Backend::cuda)
          gmm_mstep_cuda(parse_dtype(dtype), p, view<const void>(x, x_row_stride, x_col_stride),
                         view<const void>(resp, resp_row_stride, resp_col_stride), reg_covar, nk,
                         means, covariances, stream);
        else
          dispatch_float(dtype, "gmm_mstep", [&](auto t) {
            using T = decltype(t);
            gmm_mstep_cpu<T>(p, view<const T>(x, x_row_stride, x_col_stride),
                             view<const T>(resp, resp_row_stride, resp_col_stride), reg_covar, nk,
                             means, covariances);
          });
      },
      py::call_guard<py::gil_scoped_release>());
  if constexpr (Backend::cuda) {
    m.def(
        "gmm_precisions_cholesky",
        [](const std::string& dtype, const GmmParams& p, Address covariances, Address prec,
           Address failed, int device, Address stream) {
          [[maybe_unused]] typename Backend::DeviceGuard guard(device);
          gmm_precisions_cholesky_cuda(parse_dtype(dtype), p, covariances, prec, failed, stream);
        },
        py::call_guard<py::gil_scoped_release>());
  }
}

}  // namespace dlkern::bindings
