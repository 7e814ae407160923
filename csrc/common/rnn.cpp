// Validation of recurrent cell arguments: what torch rejects, rejected, in
// words that name the argument, what was expected and what was given.
#include "common/rnn.h"

#include "dlkern/error.h"

namespace dlkern {
namespace {

// Sizes are -1 where the argument is absent (hx=None, a bias None).
RnnCellParams make_params(const char* op, int64_t gates, int64_t batch, int64_t input_size,
                          int64_t w_ih_rows, int64_t w_ih_cols, int64_t w_hh_rows,
                          int64_t w_hh_cols, int64_t h_batch, int64_t h_size, int64_t c_batch,
                          int64_t c_size, int64_t b_ih_size, int64_t b_hh_size) {
  DLKERN_CHECK(batch >= 0 && input_size >= 0 && w_ih_rows >= 0 && w_ih_cols >= 0 &&
                   w_hh_rows >= 0 && w_hh_cols >= 0,
               op, ": sizes must be non-negative");
  const int64_t hidden = w_hh_cols;
  DLKERN_CHECK(w_hh_rows == gates * hidden, op, ": w_hh must be (", gates,
               " * hidden_size, hidden_size); got shape (", w_hh_rows, ", ", w_hh_cols,
               "), whose first dimension is not ", gates, " * ", hidden, " = ", gates * hidden);
  DLKERN_CHECK(w_ih_rows == gates * hidden, op, ": w_ih must have ", gates,
               " * hidden_size = ", gates * hidden, " rows (hidden_size ", hidden,
               " from w_hh), got shape (", w_ih_rows, ", ", w_ih_cols, ")");
  DLKERN_CHECK(input_size == w_ih_cols, op, ": input has inconsistent input_size: got ",
               input_size, ", expected ", w_ih_cols, " (w_ih's second dimension)");
  const char* state[] = {"h", "c"};
  const int64_t state_batch[] = {h_batch, c_batch}, state_size[] = {h_size, c_size};
  for (int s = 0; s < 2; ++s) {
    if (state_batch[s] < 0 && state_size[s] < 0) continue;  // absent
    DLKERN_CHECK(state_size[s] == hidden, op, ": ", state[s],
                 " has inconsistent hidden_size: got ", state_size[s], ", expected ", hidden);
    DLKERN_CHECK(state_batch[s] == batch, op, ": input batch size ", batch, " doesn't match ",
                 state[s], " batch size ", state_batch[s]);
  }
  const char* bias[] = {"b_ih", "b_hh"};
  const int64_t bias_size[] = {b_ih_size, b_hh_size};
  for (int b = 0; b < 2; ++b)
    DLKERN_CHECK(bias_size[b] < 0 || bias_size[b] == gates * hidden, op, ": ", bias[b],
                 " must have ", gates, " * hidden_size = ", gates * hidden,
                 " elements, got ", bias_size[b]);
  return {batch, input_size, hidden, gates};
}

}  // namespace

RnnCellParams lstm_cell_params(int64_t batch, int64_t input_size, int64_t w_ih_rows,
                               int64_t w_ih_cols, int64_t w_hh_rows, int64_t w_hh_cols,
                               int64_t h_batch, int64_t h_size, int64_t c_batch, int64_t c_size,
                               int64_t b_ih_size, int64_t b_hh_size) {
  DLKERN_CHECK((h_batch < 0) == (c_batch < 0), "lstm_cell: h and c must both be given or both be "
               "absent (hx=None)");
  return make_params("lstm_cell", 4, batch, input_size, w_ih_rows, w_ih_cols, w_hh_rows,
                     w_hh_cols, h_batch, h_size, c_batch, c_size, b_ih_size, b_hh_size);
}

RnnCellParams gru_cell_params(int64_t batch, int64_t input_size, int64_t w_ih_rows,
                              int64_t w_ih_cols, int64_t w_hh_rows, int64_t w_hh_cols,
                              int64_t h_batch, int64_t h_size, int64_t b_ih_size,
                              int64_t b_hh_size) {
  return make_params("gru_cell", 3, batch, input_size, w_ih_rows, w_ih_cols, w_hh_rows,
                     w_hh_cols, h_batch, h_size, -1, -1, b_ih_size, b_hh_size);
}

}  // namespace dlkern
