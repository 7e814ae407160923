// Runtime choices made compile-time parameters, in one place: a DType becomes
// an element type, an int among a few values an integral constant, and the
// body, a generic lambda, is instantiated once per choice in the list.
//
//   dispatch_dtype<Types<float, double>>(dtype, "max_pool2d on CUDA", [&](auto tag) {
//     using T = decltype(tag);  // tag is a value-initialised T
//     ...
//   });
//   dispatch_int<Ints<64, 128, 256>>(head_dim, "attention head_dim", [&](auto d) {
//     constexpr int D = decltype(d)::value;  // d is std::integral_constant<int, D>
//     ...
//   });
//
// A dtype outside the list throws TypeError and a value outside the list
// ValueError, each naming the operation, what it supports and what it got.
// An element type names its DType through DTypeOf<T>: float and double here;
// the CUDA side (cuda/numeric.cuh) adds __half and __nv_bfloat16, those of
// CUDA or of the emulator, so that this header needs no CUDA include. The
// helpers are host code (they throw); .cu files and plain C++ both use them.
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "dlkern/error.h"
#include "dlkern/types.h"

namespace dlkern {

// The choices of a dispatch: element types, or int values.
template <typename... Ts>
struct Types {};
template <int... Vs>
struct Ints {};

// The DType of element type T, as `value`.
template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> : std::integral_constant<DType, DType::float32> {};
template <>
struct DTypeOf<double> : std::integral_constant<DType, DType::float64> {};

namespace detail {

// "a", "a <last> b", "a, b <last> c".
inline std::string word_list(std::initializer_list<std::string> words, const char* last) {
  std::string out;
  size_t i = 0;
  for (const std::string& w : words) {
    if (i > 0) out += i + 1 == words.size() ? concat(" ", last, " ") : ", ";
    out += w;
    ++i;
  }
  return out;
}

inline std::string dtype_words(DType d) {
  const char* name = dtype_name(d);
  return std::strcmp(name, "unknown") != 0 ? name : concat("dtype code ", static_cast<int>(d));
}

template <typename... Ts, typename Body>
void dispatch_dtype(Types<Ts...>, DType dtype, const char* op, Body& body) {
  const bool done =
      ((DTypeOf<Ts>::value == dtype ? (static_cast<void>(body(Ts{})), true) : false) || ...);
  if (!done)
    throw TypeError(concat(op, " supports ", word_list({dtype_name(DTypeOf<Ts>::value)...}, "and"),
                           ", got ", dtype_words(dtype)));
}

template <int... Vs, typename Body>
void dispatch_int(Ints<Vs...>, int64_t value, const char* what, Body& body) {
  const bool done =
      ((Vs == value ? (static_cast<void>(body(std::integral_constant<int, Vs>{})), true)
                    : false) ||
       ...);
  if (!done)
    throw ValueError(
        concat(what, " must be ", word_list({std::to_string(Vs)...}, "or"), ", got ", value));
}

}  // namespace detail

// body(T{}) for the T of `List` (Types<...>) whose DType is `dtype`.
template <typename List, typename Body>
void dispatch_dtype(DType dtype, const char* op, Body&& body) {
  detail::dispatch_dtype(List{}, dtype, op, body);
}

// body(std::integral_constant<int, V>{}) for the V of `List` (Ints<...>)
// equal to `value`.
template <typename List, typename Body>
void dispatch_int(int64_t value, const char* what, Body&& body) {
  detail::dispatch_int(List{}, value, what, body);
}

}  // namespace dlkern
