// XLA FFI handlers for dlkern.jax. A jitted JAX program calls an op's handler
// with its operands and results (XLA buffers: contiguous, row-major) and the
// op's arguments as named attributes; the handler rebuilds the op's params
// with the same shape rule Python uses (so a bad call fails the same way)
// and runs the same kernel function as the op's Python binding.
//
// The handlers are compiled into _cpu, _cuda and _cuda_emu (DLKERN_HAVE_JAX),
// next to the kernels they call; each module's jax_targets() hands them to
// python/dlkern/jax as capsules. _cuda_emu's run the CUDA code on the
// emulator, on host buffers, so they register for XLA's CPU platform.
#pragma once

#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "bindings/common.h"
#include "xla/ffi/api/ffi.h"

namespace dlkern::bindings::jax {

namespace ffi = xla::ffi;

// One operand or result.
struct Buffer {
  void* data = nullptr;
  ffi::Span<const int64_t> dims;
  ffi::DataType type = ffi::DataType::INVALID;

  int64_t rank() const { return static_cast<int64_t>(dims.size()); }
  int64_t dim(int64_t i) const { return dims[static_cast<size_t>(i)]; }
  std::vector<int64_t> shape() const { return {dims.begin(), dims.end()}; }
  Address address() const { return {reinterpret_cast<std::uintptr_t>(data)}; }
  // Element strides of a contiguous row-major array of this shape.
  std::vector<int64_t> strides() const {
    std::vector<int64_t> s(dims.size(), 1);
    for (int64_t i = rank() - 2; i >= 0; --i) s[i] = s[i + 1] * dim(i + 1);
    return s;
  }
};

inline DType dtype_of(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::F16: return DType::float16;
    case ffi::DataType::BF16: return DType::bfloat16;
    case ffi::DataType::F32: return DType::float32;
    case ffi::DataType::F64: return DType::float64;
    default: throw TypeError("dlkern.jax: operands must be float16, bfloat16, float32 or float64");
  }
}

// What a handler gets: operands, results, attributes, and where to run.
class Call {
 public:
  Call(ffi::RemainingArgs args, ffi::RemainingRets rets, ffi::Dictionary attrs, int device,
       void* stream)
      : device(device),
        stream{reinterpret_cast<std::uintptr_t>(stream)},
        args_(args),
        rets_(rets),
        attrs_(attrs) {}

  size_t num_args() const { return args_.size(); }
  Buffer arg(size_t i) const { return buffer(args_.get<ffi::AnyBuffer>(i), "operand", i); }
  Buffer ret(size_t i) const {
    auto r = rets_.get<ffi::AnyBuffer>(i);
    if (!r.has_value()) throw Error(detail::concat("dlkern.jax: result ", i, " is not a buffer"));
    ffi::Result<ffi::AnyBuffer> result = *r;
    return buffer(*result);
  }
  // The op's dtype: its first operand's.
  DType dtype() const { return dtype_of(arg(0).type); }

  int64_t integer(std::string_view name) const { return attr<int64_t>(name); }
  bool flag(std::string_view name) const { return attr<int64_t>(name) != 0; }
  double real(std::string_view name) const { return attr<double>(name); }
  std::string text(std::string_view name) const {
    return std::string(attr<std::string_view>(name));
  }

  const int device;
  const Address stream;

 private:
  template <typename T>
  T attr(std::string_view name) const {
    auto value = attrs_.get<T>(name);
    if (!value.has_value())
      throw ValueError(detail::concat("dlkern.jax: attribute '", std::string(name),
                              "' is missing or of the wrong type"));
    return *value;
  }
  static Buffer buffer(const ffi::AnyBuffer& b) {
    return {b.untyped_data(), b.dimensions(), b.element_type()};
  }
  static Buffer buffer(const ffi::ErrorOr<ffi::AnyBuffer>& b, const char* what, size_t i) {
    if (!b.has_value())
      throw Error(detail::concat("dlkern.jax: ", what, " ", i, " is not a buffer"));
    return buffer(*b);
  }

  ffi::RemainingArgs args_;
  ffi::RemainingRets rets_;
  ffi::Dictionary attrs_;
};

using Body = void (*)(const Call&);

// dlkern's exceptions as XLA errors (raised in Python as XLA runtime errors
// carrying the message).
template <Body body>
ffi::Error run(const Call& call) {
  try {
    body(call);
    return ffi::Error::Success();
  } catch (const TypeError& e) {
    return ffi::Error::InvalidArgument(e.what());
  } catch (const ValueError& e) {
    return ffi::Error::InvalidArgument(e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(e.what());
  }
}

// The handler of `body` for XLA's CPU platform (no stream).
template <Body body>
struct CpuHandler {
  static XLA_FFI_Error* fn(XLA_FFI_CallFrame* frame) {
    static auto* handler =
        ffi::Ffi::Bind()
            .RemainingArgs()
            .RemainingRets()
            .Attrs()
            .To([](ffi::RemainingArgs args, ffi::RemainingRets rets, ffi::Dictionary attrs) {
              return run<body>(Call(args, rets, attrs, 0, nullptr));
            })
            .release();
    return handler->Call(frame);
  }
};

// The handler of `body` for XLA's CUDA platform: XLA's stream and device.
template <Body body>
struct CudaHandler {
  static XLA_FFI_Error* fn(XLA_FFI_CallFrame* frame) {
    static auto* handler =
        ffi::Ffi::Bind()
            .Ctx<ffi::PlatformStream<cudaStream_t>>()
            .Ctx<ffi::DeviceOrdinal>()
            .RemainingArgs()
            .RemainingRets()
            .Attrs()
            .To([](cudaStream_t stream, int32_t device, ffi::RemainingArgs args,
                   ffi::RemainingRets rets, ffi::Dictionary attrs) {
              return run<body>(Call(args, rets, attrs, device, stream));
            })
            .release();
    return handler->Call(frame);
  }
};

// A handler as the capsule jax.ffi.register_ffi_target takes.
inline py::capsule capsule(XLA_FFI_Error* (*handler)(XLA_FFI_CallFrame*)) {
  return py::capsule(reinterpret_cast<void*>(handler));
}

}  // namespace dlkern::bindings::jax
