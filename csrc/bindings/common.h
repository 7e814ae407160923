// Shared by the binding modules: exception translation and pointer handling.
// Bindings take raw addresses (Python ints) and shapes from python/dlkern,
// which has already checked them, and release the GIL around every kernel.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
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

template <typename T>
MatrixView<T> view(std::uintptr_t address, int64_t row_stride, int64_t col_stride) {
  return {reinterpret_cast<T*>(address), row_stride, col_stride};
}

// Pool2dParams travels through Python as a plain tuple, so that one made by
// _cpu can be handed to _cuda or _cuda_emu.
using PoolTuple = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                             int64_t, int64_t, int64_t, int64_t, int64_t, bool, int64_t, int64_t>;

inline PoolTuple to_tuple(const Pool2dParams& p) {
  return {p.batch,  p.channels,   p.in_h,       p.in_w,      p.kernel_h, p.kernel_w, p.stride_h,
          p.stride_w, p.pad_h,    p.pad_w,      p.dilation_h, p.dilation_w, p.ceil_mode, p.out_h,
          p.out_w};
}

inline Pool2dParams pool_params(const PoolTuple& t) {
  const auto& [n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ceil, oh, ow] = t;
  return {n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ceil, oh, ow};
}

inline Nchw nchw(const std::tuple<int64_t, int64_t, int64_t, int64_t>& s) {
  return {std::get<0>(s), std::get<1>(s), std::get<2>(s), std::get<3>(s)};
}

// Conv2dParams likewise.
using ConvTuple = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                             int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                             int64_t, int64_t, int64_t, int64_t>;

inline ConvTuple to_tuple(const Conv2dParams& p) {
  return {p.batch,      p.in_channels, p.in_h,     p.in_w,      p.out_channels, p.kernel_h,
          p.kernel_w,   p.stride_h,    p.stride_w, p.pad_top,   p.pad_bottom,   p.pad_left,
          p.pad_right,  p.dilation_h,  p.dilation_w, p.groups,  p.out_h,        p.out_w};
}

inline Conv2dParams conv_params(const ConvTuple& t) {
  const auto& [n, c, h, w, k, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, g, oh, ow] = t;
  return {n, c, h, w, k, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, g, oh, ow};
}

using GradMask = std::tuple<bool, bool, bool>;

inline Conv2dGrads conv_grads(const GradMask& m) {
  return {std::get<0>(m), std::get<1>(m), std::get<2>(m)};
}

}  // namespace dlkern::bindings
