// dk.matmul's binding: the GEMM core, defined once for both backends (see
// backend.h).
#pragma once

#include <string>

#include "bindings/backend.h"
#include "bindings/common.h"
#include "dlkern/matmul.h"

namespace dlkern::bindings {

template <class Backend>
void def_matmul(py::module_& m) {
  // matmul(dtype, m, n, k, batch, a, a_batch_stride, a_row_stride, a_col_stride, b, ..., c, ...,
  //        device, stream): C[i] = A[i] @ B[i] for i < batch.
  m.def(
      "matmul",
      [](const std::string& dtype, int64_t m, int64_t n, int64_t k, int64_t batch, Address a,
         int64_t a_bs, int64_t a_rs, int64_t a_cs, Address b, int64_t b_bs, int64_t b_rs,
         int64_t b_cs, Address c, int64_t c_bs, int64_t c_rs, int64_t c_cs, int device,
         Address stream) {
        [[maybe_unused]] typename Backend::DeviceGuard guard(device);
        const MatmulShape shape{m, n, k};
        const MatmulBatch batches{batch, a_bs, b_bs, c_bs};
        if constexpr (Backend::cuda)
          matmul_cuda(parse_dtype(dtype), shape, batches, view<const void>(a, a_rs, a_cs),
                      view<const void>(b, b_rs, b_cs), view<void>(c, c_rs, c_cs), stream);
        else
          dispatch_float(dtype, "matmul", [&](auto t) {
            using T = decltype(t);
            matmul_batched_cpu<T>(shape, batches, view<const T>(a, a_rs, a_cs),
                                  view<const T>(b, b_rs, b_cs), view<T>(c, c_rs, c_cs));
          });
      },
      py::call_guard<py::gil_scoped_release>());
}

}  // namespace dlkern::bindings
