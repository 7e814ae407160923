// Host side of lstm and gru over whole sequences on CUDA, in the packed order
// of rnn::Schedule (computed on the host, uploaded once per call) as on the
// CPU (docs/rnn-cpu.md, docs/rnn-cuda.md).
//
// Forward: one matmul_cuda projects the input of every packed row; then
// either the persistent kernel runs the whole time loop in one cooperative
// launch (small batches whose w_hh slices fit in shared memory, plan.h), or
// per step one matmul_cuda for h_{t-1} @ w_hh^T of the running rows and one
// fused pointwise kernel. Backward: per step from the last, one fused
// pointwise kernel for the gate gradients and one matmul_cuda for the
// gradient of h_{t-1}; then grad_input, grad_w_ih and grad_w_hh as single
// products over all packed rows and the bias gradients as column sums.
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "common/rnn.h"
#include "cuda/rnn/host.h"
#include "cuda/rnn/persistent.cuh"
#include "cuda/rnn/plan.h"
#include "dlkern/rnn.h"

namespace dlkern {
namespace {

using namespace cuda::rnn;
using cuda::Accumulator;
using cuda::grid_stride_blocks;
using cuda::Scratch;

// rnn::Schedule and its arrays on the device: order (batch), running and
// offset (seq_len each), and per packed row the (step, entry) element
// t * batch + entry it holds, for gathers and scatters.
class DeviceSchedule {
 public:
  DeviceSchedule(const RnnParams& p, const int64_t* lengths, cudaStream_t stream)
      : s(dlkern::rnn::schedule(p, lengths)),
        buf_(sizeof(int64_t) * (p.batch + 2 * p.seq_len + s.rows()), stream) {
    std::vector<int64_t> host(s.order);
    host.insert(host.end(), s.running.begin(), s.running.end());
    host.insert(host.end(), s.offset.begin(), s.offset.end() - 1);
    for (int64_t t = 0; t < p.seq_len; ++t)
      for (int64_t r = 0; r < s.running[t]; ++r) host.push_back(t * p.batch + s.order[r]);
    // From pageable memory: the call returns once `host` has been copied out.
    DLKERN_CUDA_CHECK(cudaMemcpyAsync(buf_.get<int64_t>(), host.data(),
                                      sizeof(int64_t) * host.size(), cudaMemcpyHostToDevice,
                                      stream));
    order = buf_.get<const int64_t>();
    running = order + p.batch;
    offset = running + p.seq_len;
    entry = offset + p.seq_len;
  }

  const dlkern::rnn::Schedule s;
  const int64_t *order, *running, *offset, *entry;

 private:
  Scratch buf_;
};

// The input's rows in packed order as a (rows, I) matrix: the input itself
// when it is one, else gathered into `copy`.
template <typename T>
MatrixView<const void> packed_input(const RnnParams& p, const DeviceSchedule& d,
                                    SequenceView<const T> x, std::optional<Scratch>& copy,
                                    cudaStream_t stream) {
  const int64_t B = p.batch, I = p.input_size, R = d.s.rows();
  if (d.s.identity && (p.seq_len == 1 || B == 1 || x.t_stride == B * x.b_stride))
    return {x.data, B == 1 ? x.t_stride : x.b_stride, x.col_stride};
  copy.emplace(sizeof(T) * R * I, stream);
  if (R * I > 0) {
    auto kernel = gather_rows_kernel<T>;
    DLKERN_LAUNCH(kernel, grid_stride_blocks(R * I, kThreads), kThreads, 0, stream, R, I, B,
                  d.entry, x, copy->get<T>());
  }
  return {copy->get<T>(), I, 1};
}

template <typename Out, typename T>
void pack_state(int64_t batch, int64_t H, const int64_t* order, MatrixView<const T> src, Out* dst,
                cudaStream_t stream) {
  auto kernel = pack_state_kernel<Out, T>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(batch * H, kThreads), kThreads, 0, stream, batch, H,
                order, src, dst);
}

template <typename T>
void unpack_state(int64_t batch, int64_t H, const int64_t* order, const T* a,
                  const Accumulator<T>* b, T* out, cudaStream_t stream) {
  if (!out) return;
  auto kernel = unpack_state_kernel<T>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(batch * H, kThreads), kThreads, 0, stream, batch, H,
                order, a, b, out);
}

template <typename T, int Gates>
void forward(const RnnParams& p, const int64_t* lengths, SequenceView<const T> x,
             MatrixView<const T> h0, MatrixView<const T> c0, const T* w_ih, const T* w_hh,
             const T* b_ih, const T* b_hh, T* output, T* h_n, T* c_n, Accumulator<T>* saved,
             cudaStream_t stream) {
  using Acc = Accumulator<T>;
  const int64_t B = p.batch, I = p.input_size, H = p.hidden_size, G = Gates * H;
  if (B * H == 0) return;  // nothing to write: every output is empty
  const DeviceSchedule d(p, lengths, stream);
  const int64_t R = d.s.rows();
  std::optional<Scratch> x_copy;
  Scratch xproj(sizeof(T) * R * G, stream);
  gemm<T>({R, G, I}, packed_input(p, d, x, x_copy, stream), {w_ih, 1, I},
          {xproj.get<T>(), G, 1}, stream);
  // h: two (B, H) halves (the persistent kernel alternates; the generic path
  // updates the first in place); c (LSTM) in the accumulator type.
  Scratch state(sizeof(T) * 2 * B * H + sizeof(Acc) * B * H, stream);
  T* h = state.get<T>();
  Acc* c = Gates == 4 ? reinterpret_cast<Acc*>(h + 2 * B * H) : nullptr;
  pack_state(B, H, d.order, h0, h, stream);
  if (c) pack_state(B, H, d.order, c0, c, stream);
  const SequenceArgs<T> a{B, H, d.order, xproj.get<const T>(), b_ih, b_hh, c,
                          output, h_n, c_n, saved};
  const PersistentPlan plan = persistent_plan(DTypeOf<T>::value, B, H, Gates);
  if (plan.blocks > 0) {
    Scratch arrived(sizeof(unsigned), stream);
    DLKERN_CUDA_CHECK(cudaMemsetAsync(arrived.get<unsigned>(), 0, sizeof(unsigned), stream));
    auto kernel = persistent_sequence_kernel<T, Gates>;
    DLKERN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(plan.smem_bytes)));
    DLKERN_LAUNCH_COOPERATIVE(kernel, plan.blocks, kThreads, plan.smem_bytes, stream, a,
                              p.seq_len, d.running, d.offset, plan.units, w_hh, h,
                              arrived.get<unsigned>());
    return;
  }
  Scratch hproj(sizeof(T) * B * G, stream);
  for (int64_t t = 0; t < p.seq_len; ++t) {
    const int64_t n = d.s.running[t];
    gemm<T>({n, G, H}, {h, H, 1}, {w_hh, 1, H}, {hproj.get<T>(), G, 1}, stream);
    const StepArgs s{t, d.s.offset[t], n, t + 1 < p.seq_len ? d.s.running[t + 1] : 0};
    auto kernel = sequence_step_kernel<T, Gates>;
    DLKERN_LAUNCH(kernel, grid_stride_blocks(B * H, kThreads), kThreads, 0, stream, a, s,
                  hproj.get<const T>(), h);
  }
}

template <typename T, int Gates>
void backward(const RnnParams& p, const int64_t* lengths, const T* grad_output,
              const T* grad_h_n, const T* grad_c_n, SequenceView<const T> x, const T* w_ih,
              const T* w_hh, const Accumulator<T>* saved, T* grad_input, T* grad_h0,
              T* grad_c0, T* grad_w_ih, T* grad_w_hh, T* grad_b_ih, T* grad_b_hh,
              cudaStream_t stream) {
  using Acc = Accumulator<T>;
  const int64_t B = p.batch, I = p.input_size, H = p.hidden_size, G = Gates * H;
  const int64_t ld = Gates == 4 ? lstm_saved_width(H) : gru_saved_width(H);
  const int64_t h_col = ld - H;  // h_{t-1}, the last columns of both layouts
  const DeviceSchedule d(p, lengths, stream);
  const int64_t R = d.s.rows();
  // The gate gradients per packed row: the LSTM's dg serves both sides; the
  // GRU's input side di = [r z xn] and hidden side dg = [r z hn] differ.
  Scratch grads(sizeof(T) * R * G * (Gates == 3 ? 2 : 1), stream);
  T* dg = grads.get<T>();
  T* di = Gates == 3 ? dg + R * G : dg;
  // carry: LSTM dc, GRU the z blend's share of the gradient of h.
  Scratch carry(sizeof(Acc) * B * H, stream), dh(sizeof(T) * B * H, stream);
  if (B * H > 0) {
    if (Gates == 4)
      pack_state(B, H, d.order, MatrixView<const T>{grad_c_n, H, 1}, carry.get<Acc>(), stream);
    for (int64_t t = p.seq_len - 1; t >= 0; --t) {
      const StepArgs s{t, d.s.offset[t], d.s.running[t],
                       t + 1 < p.seq_len ? d.s.running[t + 1] : 0};
      if (s.next > 0)
        gemm<T>({s.next, H, G}, {dg + d.s.offset[t + 1] * G, G, 1}, {w_hh, H, 1},
                {dh.get<T>(), H, 1}, stream);
      auto kernel = sequence_step_backward_kernel<T, Gates>;
      DLKERN_LAUNCH(kernel, grid_stride_blocks(s.running * H, kThreads), kThreads, 0, stream, B,
                    H, d.order, s, grad_output, grad_h_n, dh.get<const T>(), saved,
                    carry.get<Acc>(), di, dg);
    }
    if (grad_h0) {
      // Every entry runs step 0: its rows are the first B.
      gemm<T>({B, H, G}, {dg, G, 1}, {w_hh, H, 1}, {dh.get<T>(), H, 1}, stream);
      unpack_state<T>(B, H, d.order, dh.get<const T>(), Gates == 3 ? carry.get<Acc>() : nullptr,
                      grad_h0, stream);
    }
    if (Gates == 4) unpack_state<T>(B, H, d.order, nullptr, carry.get<Acc>(), grad_c0, stream);
  }
  if (grad_input) {
    if (d.s.identity) {
      gemm<T>({R, I, G}, {di, G, 1}, {w_ih, I, 1}, {grad_input, I, 1}, stream);
    } else {
      Scratch packed(sizeof(T) * R * I, stream);
      gemm<T>({R, I, G}, {di, G, 1}, {w_ih, I, 1}, {packed.get<T>(), I, 1}, stream);
      DLKERN_CUDA_CHECK(cudaMemsetAsync(grad_input, 0, sizeof(T) * p.seq_len * B * I, stream));
      if (R * I > 0) {
        auto kernel = scatter_rows_kernel<T>;
        DLKERN_LAUNCH(kernel, grid_stride_blocks(R * I, kThreads), kThreads, 0, stream, R, I,
                      d.entry, packed.get<const T>(), grad_input);
      }
    }
  }
  if (grad_w_ih) {
    std::optional<Scratch> x_copy;
    gemm<T>({G, I, R}, {di, 1, G}, packed_input(p, d, x, x_copy, stream), {grad_w_ih, I, 1},
            stream);
  }
  if (grad_w_hh) {
    // The h_{t-1} columns of saved as a GEMM operand in T.
    std::optional<Scratch> narrow;
    MatrixView<const void> h_prev{saved + h_col, ld, 1};
    if constexpr (!std::is_same_v<T, Acc>) {
      narrow.emplace(sizeof(T) * R * H, stream);
      if (R * H > 0) {
        auto kernel = narrow_kernel<T>;
        DLKERN_LAUNCH(kernel, grid_stride_blocks(R * H, kThreads), kThreads, 0, stream, R, H,
                      saved + h_col, ld, narrow->get<T>());
      }
      h_prev = {narrow->get<T>(), H, 1};
    }
    gemm<T>({G, H, R}, {dg, 1, G}, h_prev, {grad_w_hh, H, 1}, stream);
  }
  bias_grads<T>(R, G, di, dg, grad_b_ih, grad_b_hh, stream);
}

void check_gates(const RnnParams& p, int64_t gates, const char* op) {
  DLKERN_CHECK(p.gates == gates, op, ": params are not ", gates == 4 ? "an LSTM" : "a GRU",
               "'s (gates = ", p.gates, ", expected ", gates, ")");
}

template <typename T>
SequenceView<const T> typed(SequenceView<const void> v) {
  return {static_cast<const T*>(v.data), v.t_stride, v.b_stride, v.col_stride};
}

}  // namespace

void lstm_forward_cuda(DType dtype, const RnnParams& p, const int64_t* lengths,
                       SequenceView<const void> input, MatrixView<const void> h0,
                       MatrixView<const void> c0, const void* w_ih, const void* w_hh,
                       const void* b_ih, const void* b_hh, void* output, void* h_n, void* c_n,
                       void* saved, cudaStream_t stream) {
  check_gates(p, 4, "lstm_forward_cuda");
  dispatch_dtype<RnnTypes>(dtype, "lstm on CUDA", [&](auto tag) {
    using T = decltype(tag);
    forward<T, 4>(p, lengths, typed<T>(input), typed<T>(h0), typed<T>(c0),
                  static_cast<const T*>(w_ih), static_cast<const T*>(w_hh),
                  static_cast<const T*>(b_ih), static_cast<const T*>(b_hh),
                  static_cast<T*>(output), static_cast<T*>(h_n), static_cast<T*>(c_n),
                  static_cast<Accumulator<T>*>(saved), stream);
  });
}

void gru_forward_cuda(DType dtype, const RnnParams& p, const int64_t* lengths,
                      SequenceView<const void> input, MatrixView<const void> h0,
                      const void* w_ih, const void* w_hh, const void* b_ih, const void* b_hh,
                      void* output, void* h_n, void* saved, cudaStream_t stream) {
  check_gates(p, 3, "gru_forward_cuda");
  dispatch_dtype<RnnTypes>(dtype, "gru on CUDA", [&](auto tag) {
    using T = decltype(tag);
    forward<T, 3>(p, lengths, typed<T>(input), typed<T>(h0), MatrixView<const T>{},
                  static_cast<const T*>(w_ih), static_cast<const T*>(w_hh),
                  static_cast<const T*>(b_ih), static_cast<const T*>(b_hh),
                  static_cast<T*>(output), static_cast<T*>(h_n), nullptr,
                  static_cast<Accumulator<T>*>(saved), stream);
  });
}

void lstm_backward_cuda(DType dtype, const RnnParams& p, const int64_t* lengths,
                        const void* grad_output, const void* grad_h_n, const void* grad_c_n,
                        SequenceView<const void> input, const void* w_ih, const void* w_hh,
                        const void* saved, void* grad_input, void* grad_h0, void* grad_c0,
                        void* grad_w_ih, void* grad_w_hh, void* grad_b_ih, void* grad_b_hh,
                        cudaStream_t stream) {
  check_gates(p, 4, "lstm_backward_cuda");
  dispatch_dtype<RnnTypes>(dtype, "lstm_backward on CUDA", [&](auto tag) {
    using T = decltype(tag);
    backward<T, 4>(p, lengths, static_cast<const T*>(grad_output),
                   static_cast<const T*>(grad_h_n), static_cast<const T*>(grad_c_n),
                   typed<T>(input), static_cast<const T*>(w_ih), static_cast<const T*>(w_hh),
                   static_cast<const Accumulator<T>*>(saved), static_cast<T*>(grad_input),
                   static_cast<T*>(grad_h0), static_cast<T*>(grad_c0),
                   static_cast<T*>(grad_w_ih), static_cast<T*>(grad_w_hh),
                   static_cast<T*>(grad_b_ih), static_cast<T*>(grad_b_hh), stream);
  });
}

void gru_backward_cuda(DType dtype, const RnnParams& p, const int64_t* lengths,
                       const void* grad_output, const void* grad_h_n,
                       SequenceView<const void> input, const void* w_ih, const void* w_hh,
                       const void* saved, void* grad_input, void* grad_h0, void* grad_w_ih,
                       void* grad_w_hh, void* grad_b_ih, void* grad_b_hh, cudaStream_t stream) {
  check_gates(p, 3, "gru_backward_cuda");
  dispatch_dtype<RnnTypes>(dtype, "gru_backward on CUDA", [&](auto tag) {
    using T = decltype(tag);
    backward<T, 3>(p, lengths, static_cast<const T*>(grad_output),
                   static_cast<const T*>(grad_h_n), nullptr, typed<T>(input),
                   static_cast<const T*>(w_ih), static_cast<const T*>(w_hh),
                   static_cast<const Accumulator<T>*>(saved), static_cast<T*>(grad_input),
                   static_cast<T*>(grad_h0), nullptr, static_cast<T*>(grad_w_ih),
                   static_cast<T*>(grad_w_hh), static_cast<T*>(grad_b_ih),
                   static_cast<T*>(grad_b_hh), stream);
  });
}

}  // namespace dlkern
