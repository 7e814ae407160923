// Every op's XLA FFI handler of one backend, by target name, for
// python/dlkern/jax to register (see call.h).
#pragma once

#include "bindings/jax/attention.h"
#include "bindings/jax/call.h"
#include "bindings/jax/conv.h"
#include "bindings/jax/gmm.h"
#include "bindings/jax/rnn.h"
#include "bindings/jax/tree.h"

namespace dlkern::bindings::jax {

// The targets as {name: capsule}; `Handler<body>` adapts a body to the
// platform the module's kernels run on.
template <class Backend, template <Body> class Handler>
py::dict targets() {
  py::dict t;
  t["conv2d_forward"] = capsule(Handler<conv2d_forward_call<Backend>>::fn);
  t["conv2d_backward"] = capsule(Handler<conv2d_backward_call<Backend>>::fn);
  t["max_pool2d_forward"] = capsule(Handler<max_pool2d_forward_call<Backend>>::fn);
  t["max_pool2d_backward"] = capsule(Handler<max_pool2d_backward_call<Backend>>::fn);
  t["avg_pool2d_forward"] = capsule(Handler<avg_pool2d_forward_call<Backend>>::fn);
  t["avg_pool2d_backward"] = capsule(Handler<avg_pool2d_backward_call<Backend>>::fn);
  t["attention_forward"] = capsule(Handler<attention_forward_call<Backend>>::fn);
  t["attention_backward"] = capsule(Handler<attention_backward_call<Backend>>::fn);
  t["attention_varlen_forward"] = capsule(Handler<attention_varlen_forward_call<Backend>>::fn);
  t["attention_varlen_backward"] = capsule(Handler<attention_varlen_backward_call<Backend>>::fn);
  t["gmm_estep"] = capsule(Handler<gmm_estep_call<Backend>>::fn);
  t["lstm_cell_forward"] = capsule(Handler<lstm_cell_forward_call<Backend>>::fn);
  t["lstm_cell_backward"] = capsule(Handler<lstm_cell_backward_call<Backend>>::fn);
  t["gru_cell_forward"] = capsule(Handler<gru_cell_forward_call<Backend>>::fn);
  t["gru_cell_backward"] = capsule(Handler<gru_cell_backward_call<Backend>>::fn);
  t["lstm_forward"] = capsule(Handler<lstm_forward_call<Backend>>::fn);
  t["lstm_backward"] = capsule(Handler<lstm_backward_call<Backend>>::fn);
  t["gru_forward"] = capsule(Handler<gru_forward_call<Backend>>::fn);
  t["gru_backward"] = capsule(Handler<gru_backward_call<Backend>>::fn);
  t["tree_compose_forward"] = capsule(Handler<tree_compose_forward_call<Backend>>::fn);
  t["tree_compose_backward"] = capsule(Handler<tree_compose_backward_call<Backend>>::fn);
  t["tree_lstm_forward"] = capsule(Handler<tree_lstm_forward_call<Backend>>::fn);
  t["tree_lstm_backward"] = capsule(Handler<tree_lstm_backward_call<Backend>>::fn);
  return t;
}

}  // namespace dlkern::bindings::jax
