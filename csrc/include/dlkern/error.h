// Errors thrown by dlkern. Library code never exits or aborts: it throws, and
// the Python bindings turn ValueError/TypeError/Error into the Python
// exceptions of the same names (Error -> RuntimeError).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace dlkern {

// A bad argument value or shape.
class ValueError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// An argument of the wrong type (dtype, device).
class TypeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// A failure while running a kernel (a CUDA error, an allocation failure).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}
}  // namespace detail

}  // namespace dlkern

// DLKERN_CHECK(cond, parts...): throw ValueError(parts...) unless cond holds.
// The message says what was expected and what was given.
#define DLKERN_CHECK(cond, ...)                                          \
  do {                                                                   \
    if (!(cond)) throw ::dlkern::ValueError(::dlkern::detail::concat(__VA_ARGS__)); \
  } while (0)

#define DLKERN_CHECK_TYPE(cond, ...)                                     \
  do {                                                                   \
    if (!(cond)) throw ::dlkern::TypeError(::dlkern::detail::concat(__VA_ARGS__)); \
  } while (0)
