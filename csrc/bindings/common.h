// Shared by every binding module (the test modules too): exception
// translation, the dtype parse, addresses, and the small argument forms
// Python passes as tuples. Bindings take raw addresses (Python ints) and
// shapes from python/dlkern, which has already checked them.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <tuple>

#include "dlkern/conv.h"
#include "dlkern/error.h"
#include "dlkern/pool.h"
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

// A host or device address (a Python int; 0 is null) that converts to
// whatever pointer the C++ API takes, streams included, so that no binding
// spells out a cast.
struct Address {
  std::uintptr_t value = 0;

  template <typename T>
  operator T*() const {
    return reinterpret_cast<T*>(value);
  }
};

template <typename T>
MatrixView<T> view(Address address, int64_t row_stride, int64_t col_stride) {
  return {address, row_stride, col_stride};
}

// Element strides of an NCHW input: Python has them as a tuple already, and
// a tuple converts faster than building an object would.
using Strides = std::tuple<int64_t, int64_t, int64_t, int64_t>;

inline Nchw nchw(const Strides& s) {
  return {std::get<0>(s), std::get<1>(s), std::get<2>(s), std::get<3>(s)};
}

// conv2d_backward's output_mask: (input, weight, bias).
using GradMask = std::tuple<bool, bool, bool>;

inline Conv2dGrads conv_grads(const GradMask& m) {
  return {std::get<0>(m), std::get<1>(m), std::get<2>(m)};
}

}  // namespace dlkern::bindings

namespace pybind11::detail {

// Address from a Python int, as std::uintptr_t converts (arguments only).
template <>
struct type_caster<dlkern::bindings::Address> {
  PYBIND11_TYPE_CASTER(dlkern::bindings::Address, const_name("int"));

  bool load(handle src, bool convert) {
    make_caster<std::uintptr_t> address;
    if (!address.load(src, convert)) return false;
    value.value = cast_op<std::uintptr_t>(address);
    return true;
  }
};

}  // namespace pybind11::detail
