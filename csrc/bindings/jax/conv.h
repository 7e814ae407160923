// conv2d and pooling from XLA (see call.h). Python passes 4-D operands (an
// unbatched input gets its batch dimension there) and torch's arguments as
// attributes; outputs and gradients are contiguous NCHW as the kernels write them.
#pragma once

#include "bindings/conv.h"
#include "bindings/jax/call.h"
#include "bindings/pool.h"

namespace dlkern::bindings::jax {

inline Nchw nchw_of(const Buffer& b) {
  const auto s = b.strides();
  return {s[0], s[1], s[2], s[3]};
}

inline Conv2dParams conv_params(const Call& c, const Buffer& x, const Buffer& w) {
  return conv2d_params(x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(1), w.dim(2),
                       w.dim(3), c.integer("stride_h"), c.integer("stride_w"),
                       static_cast<Padding>(c.integer("padding")), c.integer("pad_h"),
                       c.integer("pad_w"), c.integer("dilation_h"), c.integer("dilation_w"),
                       c.integer("groups"));
}

// Operands input, weight[, bias]; result out.
template <class Backend>
void conv2d_forward_call(const Call& c) {
  const Buffer x = c.arg(0), w = c.arg(1);
  const Address bias = c.num_args() > 2 ? c.arg(2).address() : Address{};
  conv2d_forward<Backend>(c.dtype(), conv_params(c, x, w), x.address(), nchw_of(x), w.address(),
                          bias, c.ret(0).address(), c.device, c.stream);
}

// Operands grad_out, input, weight; results grad_input, grad_weight and,
// with the attribute bias set, grad_bias.
template <class Backend>
void conv2d_backward_call(const Call& c) {
  const Buffer g = c.arg(0), x = c.arg(1), w = c.arg(2);
  const bool bias = c.flag("bias");
  conv2d_backward<Backend>(c.dtype(), conv_params(c, x, w), Conv2dGrads{true, true, bias},
                           g.address(), x.address(), nchw_of(x), w.address(),
                           c.ret(0).address(), c.ret(1).address(),
                           bias ? c.ret(2).address() : Address{}, c.device, c.stream);
}

inline Pool2dParams pool_params(const Call& c, const Buffer& x, bool max) {
  const int64_t kh = c.integer("kernel_h"), kw = c.integer("kernel_w");
  const int64_t sh = c.integer("stride_h"), sw = c.integer("stride_w");
  const int64_t ph = c.integer("pad_h"), pw = c.integer("pad_w");
  const bool ceil = c.flag("ceil_mode");
  if (max)
    return max_pool2d_params(x.dim(0), x.dim(1), x.dim(2), x.dim(3), kh, kw, sh, sw, ph, pw,
                             c.integer("dilation_h"), c.integer("dilation_w"), ceil);
  return avg_pool2d_params(x.dim(0), x.dim(1), x.dim(2), x.dim(3), kh, kw, sh, sw, ph, pw, ceil);
}

inline AvgPoolDivisor divisor_of(const Call& c) {
  return {c.flag("count_include_pad"), c.integer("divisor_override")};
}

// Operand input; results out and indices (int64 elements).
template <class Backend>
void max_pool2d_forward_call(const Call& c) {
  const Buffer x = c.arg(0);
  max_pool2d_forward<Backend>(c.dtype(), pool_params(c, x, true), x.address(), nchw_of(x),
                              c.ret(0).address(), c.ret(1).address(), c.device, c.stream);
}

// Operands grad_out, indices, input (for its shape); result grad_input.
template <class Backend>
void max_pool2d_backward_call(const Call& c) {
  const Buffer x = c.arg(2);
  max_pool2d_backward<Backend>(c.dtype(), pool_params(c, x, true), c.arg(0).address(),
                               c.arg(1).address(), c.ret(0).address(), c.device, c.stream);
}

// Operand input; result out.
template <class Backend>
void avg_pool2d_forward_call(const Call& c) {
  const Buffer x = c.arg(0);
  avg_pool2d_forward<Backend>(c.dtype(), pool_params(c, x, false), divisor_of(c), x.address(),
                              nchw_of(x), c.ret(0).address(), c.device, c.stream);
}

// Operands grad_out, input (for its shape); result grad_input.
template <class Backend>
void avg_pool2d_backward_call(const Call& c) {
  avg_pool2d_backward<Backend>(c.dtype(), pool_params(c, c.arg(1), false), divisor_of(c),
                               c.arg(0).address(), c.ret(0).address(), c.device, c.stream);
}

}  // namespace dlkern::bindings::jax
