// Shared by the binding modules: exception translation and pointer handling.
// Bindings take raw addresses (Python ints) and shapes from python/dlkern,
// which has already checked them, and release the GIL around every kernel.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "dlkern/error.h"
#include "dlkern/types.h"

namespace dlkern::bindings {

namespace py = pybind11;

// dlkern::TypeError -> TypeError, ValueError -> ValueError, Error -> RuntimeError.
inline void register_exceptions() {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const dlkern::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const dlkern::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const dlkern::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });
}

inline DType parse_dtype(const std::string& name) {
  for (DType d : {DType::float16, DType::bfloat16, DType::float32, DType::float64})
    if (name == dtype_name(d)) return d;
  throw dlkern::TypeError("unsupported dtype '" + name + "'");
}

template <typename T>
MatrixView<T> view(std::uintptr_t address, int64_t row_stride, int64_t col_stride) {
  return {reinterpret_cast<T*>(address), row_stride, col_stride};
}

}  // namespace dlkern::bindings
