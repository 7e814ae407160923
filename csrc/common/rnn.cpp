// Validation of recurrent arguments (what torch rejects, rejected, in words
// that name the argument, what was expected and what was given), and the
// step schedule of variable-length batches.
#include "common/rnn.h"

#include <algorithm>
#include <numeric>

#include "dlkern/error.h"

namespace dlkern {
namespace {

// Sizes are -1 where the argument is absent (hx=None, a bias None).
RnnCellParams make_params(const char* op, int64_t gates, int64_t batch, int64_t input_size,
                          int64_t w_ih_rows, int64_t w_ih_cols, int64_t w_hh_rows,
                          int64_t w_hh_cols, int64_t h_batch, int64_t h_size, int64_t c_batch,
                          int64_t c_size, int64_t b_ih_size, int64_t b_hh_size,
                          const char* h_name = "h", const char* c_name = "c") {
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
  const char* state[] = {h_name, c_name};
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

RnnParams lstm_params(int64_t seq_len, int64_t batch, int64_t input_size, int64_t w_ih_rows,
                      int64_t w_ih_cols, int64_t w_hh_rows, int64_t w_hh_cols, int64_t h_batch,
                      int64_t h_size, int64_t c_batch, int64_t c_size, int64_t b_ih_size,
                      int64_t b_hh_size) {
  DLKERN_CHECK((h_batch < 0) == (c_batch < 0), "lstm: h0 and c0 must both be given or both be "
               "absent (hx=None)");
  DLKERN_CHECK(seq_len >= 1, "lstm: input must have at least one time step, got seq_len ",
               seq_len);
  const RnnCellParams c = make_params("lstm", 4, batch, input_size, w_ih_rows, w_ih_cols,
                                      w_hh_rows, w_hh_cols, h_batch, h_size, c_batch, c_size,
                                      b_ih_size, b_hh_size, "h0", "c0");
  return {seq_len, c.batch, c.input_size, c.hidden_size, c.gates};
}

RnnParams gru_params(int64_t seq_len, int64_t batch, int64_t input_size, int64_t w_ih_rows,
                     int64_t w_ih_cols, int64_t w_hh_rows, int64_t w_hh_cols, int64_t h_batch,
                     int64_t h_size, int64_t b_ih_size, int64_t b_hh_size) {
  DLKERN_CHECK(seq_len >= 1, "gru: input must have at least one time step, got seq_len ",
               seq_len);
  const RnnCellParams c = make_params("gru", 3, batch, input_size, w_ih_rows, w_ih_cols,
                                      w_hh_rows, w_hh_cols, h_batch, h_size, -1, -1, b_ih_size,
                                      b_hh_size, "h0");
  return {seq_len, c.batch, c.input_size, c.hidden_size, c.gates};
}

namespace rnn {

Schedule schedule(const RnnParams& p, const int64_t* lengths) {
  const int64_t T = p.seq_len, B = p.batch;
  Schedule s;
  s.order.resize(B);
  std::iota(s.order.begin(), s.order.end(), int64_t(0));
  s.identity = true;
  if (lengths) {
    for (int64_t b = 0; b < B; ++b) {
      DLKERN_CHECK(lengths[b] >= 1 && lengths[b] <= T, "lengths[", b, "] is ", lengths[b],
                   ": every length must be in 1..", T, " (the input's seq_len)");
      s.identity = s.identity && lengths[b] == T;
    }
    std::stable_sort(s.order.begin(), s.order.end(),
                     [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  }
  s.running.assign(T, B);
  s.offset.assign(T + 1, 0);
  // Rows still running at step t: those whose length exceeds t, a prefix of order.
  int64_t running = B;
  for (int64_t t = 0; t < T; ++t) {
    if (lengths)
      while (running > 0 && lengths[s.order[running - 1]] <= t) --running;
    s.running[t] = running;
    s.offset[t + 1] = s.offset[t] + running;
  }
  return s;
}

}  // namespace rnn

int64_t rnn_packed_rows(const RnnParams& p, const int64_t* lengths) {
  return rnn::schedule(p, lengths).rows();
}

}  // namespace dlkern
