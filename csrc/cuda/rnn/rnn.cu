// Host side of the CUDA recurrent cells. Forward: the two gate projections
// on matmul_cuda into one stream-ordered scratch buffer, then one fused
// pointwise kernel that adds the biases, sums the projections, applies the
// gate math and writes h', c' and the saved row. Backward: one fused
// pointwise kernel for the gradients of the pre-activations (and of c, or
// the GRU blend's share of grad h), then matmul_cuda for grad_input, grad_h
// and the weight gradients, and column sums for the bias gradients.
#include <cstdint>

#include "cuda/rnn/host.h"
#include "dlkern/rnn.h"

namespace dlkern {
namespace {

using namespace cuda::rnn;
using cuda::Accumulator;
using cuda::grid_stride_blocks;
using cuda::Scratch;

// proj (batch, 2 * G) = [x @ w_ih^T | h @ w_hh^T], the second half skipped
// when there is no state (the kernels then read zeros).
template <typename T>
void project(const RnnCellParams& p, MatrixView<const void> x, MatrixView<const void> h,
             const void* w_ih, const void* w_hh, T* proj, cudaStream_t stream) {
  const int64_t B = p.batch, I = p.input_size, H = p.hidden_size, G = p.gates * H;
  gemm<T>({B, G, I}, x, {w_ih, 1, I}, {proj, 2 * G, 1}, stream);
  if (h.data) gemm<T>({B, G, H}, h, {w_hh, 1, H}, {proj + G, 2 * G, 1}, stream);
}

// grad_input (B, I) = d @ w_ih, grad_h (B, H) = dh @ w_hh, grad_w_ih (G, I) =
// d^T @ x, grad_w_hh (G, H) = dh^T @ h (zeros without a state), each skipped
// when null; d and dh are (B, G) contiguous.
template <typename T>
void gemm_grads(const RnnCellParams& p, const T* d, const T* dh, MatrixView<const void> x,
                MatrixView<const void> h, const void* w_ih, const void* w_hh, T* grad_input,
                T* grad_h, T* grad_w_ih, T* grad_w_hh, cudaStream_t stream) {
  const int64_t B = p.batch, I = p.input_size, H = p.hidden_size, G = p.gates * H;
  if (grad_input) gemm<T>({B, I, G}, {d, G, 1}, {w_ih, I, 1}, {grad_input, I, 1}, stream);
  if (grad_h) gemm<T>({B, H, G}, {dh, G, 1}, {w_hh, H, 1}, {grad_h, H, 1}, stream);
  if (grad_w_ih) gemm<T>({G, I, B}, {d, 1, G}, x, {grad_w_ih, I, 1}, stream);
  if (grad_w_hh) {
    if (h.data)
      gemm<T>({G, H, B}, {dh, 1, G}, h, {grad_w_hh, H, 1}, stream);
    else
      DLKERN_CUDA_CHECK(cudaMemsetAsync(grad_w_hh, 0, sizeof(T) * G * H, stream));
  }
}

void check_gates(const RnnCellParams& p, int64_t gates, const char* op) {
  DLKERN_CHECK(p.gates == gates, op, ": params are not ", gates == 4 ? "an LSTM" : "a GRU",
               " cell's (gates = ", p.gates, ", expected ", gates, ")");
}

}  // namespace

void lstm_cell_forward_cuda(DType dtype, const RnnCellParams& p, MatrixView<const void> input,
                            MatrixView<const void> h, MatrixView<const void> c, const void* w_ih,
                            const void* w_hh, const void* b_ih, const void* b_hh, void* h_out,
                            void* c_out, void* saved, cudaStream_t stream) {
  check_gates(p, 4, "lstm_cell_forward_cuda");
  dispatch_dtype<RnnTypes>(dtype, "lstm_cell on CUDA", [&](auto tag) {
    using T = decltype(tag);
    const int64_t units = p.batch * p.hidden_size;
    if (units == 0) return;
    Scratch proj(sizeof(T) * p.batch * 2 * p.gates * p.hidden_size, stream);
    project<T>(p, input, h, w_ih, w_hh, proj.get<T>(), stream);
    auto kernel = lstm_cell_forward_kernel<T>;
    DLKERN_LAUNCH(kernel, grid_stride_blocks(units, kThreads), kThreads, 0, stream, p.batch,
                  p.hidden_size, proj.get<const T>(), h.data != nullptr, typed<T>(c),
                  static_cast<const T*>(b_ih), static_cast<const T*>(b_hh),
                  static_cast<T*>(h_out), static_cast<T*>(c_out),
                  static_cast<Accumulator<T>*>(saved));
  });
}

void gru_cell_forward_cuda(DType dtype, const RnnCellParams& p, MatrixView<const void> input,
                           MatrixView<const void> h, const void* w_ih, const void* w_hh,
                           const void* b_ih, const void* b_hh, void* h_out, void* saved,
                           cudaStream_t stream) {
  check_gates(p, 3, "gru_cell_forward_cuda");
  dispatch_dtype<RnnTypes>(dtype, "gru_cell on CUDA", [&](auto tag) {
    using T = decltype(tag);
    const int64_t units = p.batch * p.hidden_size;
    if (units == 0) return;
    Scratch proj(sizeof(T) * p.batch * 2 * p.gates * p.hidden_size, stream);
    project<T>(p, input, h, w_ih, w_hh, proj.get<T>(), stream);
    auto kernel = gru_cell_forward_kernel<T>;
    DLKERN_LAUNCH(kernel, grid_stride_blocks(units, kThreads), kThreads, 0, stream, p.batch,
                  p.hidden_size, proj.get<const T>(), h.data != nullptr, typed<T>(h),
                  static_cast<const T*>(b_ih), static_cast<const T*>(b_hh),
                  static_cast<T*>(h_out), static_cast<Accumulator<T>*>(saved));
  });
}

void lstm_cell_backward_cuda(DType dtype, const RnnCellParams& p, const void* grad_h_out,
                             const void* grad_c_out, MatrixView<const void> input,
                             MatrixView<const void> h, MatrixView<const void> c, const void* w_ih,
                             const void* w_hh, const void* saved, void* grad_input, void* grad_h,
                             void* grad_c, void* grad_w_ih, void* grad_w_hh, void* grad_b_ih,
                             void* grad_b_hh, cudaStream_t stream) {
  check_gates(p, 4, "lstm_cell_backward_cuda");
  dispatch_dtype<RnnTypes>(dtype, "lstm_cell_backward on CUDA", [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = p.batch, H = p.hidden_size, G = 4 * H;
    Scratch d(sizeof(T) * B * G, stream);  // gradients of the pre-activations
    if (B * H > 0) {
      auto kernel = lstm_cell_backward_kernel<T>;
      DLKERN_LAUNCH(kernel, grid_stride_blocks(B * H, kThreads), kThreads, 0, stream, B, H,
                    static_cast<const T*>(grad_h_out), static_cast<const T*>(grad_c_out),
                    typed<T>(c), static_cast<const Accumulator<T>*>(saved), d.get<T>(),
                    static_cast<T*>(grad_c));
    }
    gemm_grads<T>(p, d.get<T>(), d.get<T>(), input, h, w_ih, w_hh, static_cast<T*>(grad_input),
                  static_cast<T*>(grad_h), static_cast<T*>(grad_w_ih),
                  static_cast<T*>(grad_w_hh), stream);
    bias_grads<T>(B, G, d.get<T>(), d.get<T>(), static_cast<T*>(grad_b_ih),
                  static_cast<T*>(grad_b_hh), stream);
  });
}

void gru_cell_backward_cuda(DType dtype, const RnnCellParams& p, const void* grad_h_out,
                            MatrixView<const void> input, MatrixView<const void> h,
                            const void* w_ih, const void* w_hh, const void* saved,
                            void* grad_input, void* grad_h, void* grad_w_ih, void* grad_w_hh,
                            void* grad_b_ih, void* grad_b_hh, cudaStream_t stream) {
  check_gates(p, 3, "gru_cell_backward_cuda");
  dispatch_dtype<RnnTypes>(dtype, "gru_cell_backward on CUDA", [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = p.batch, H = p.hidden_size, G = 3 * H;
    // [di | dh | the GEMM's share of grad_h]: the pre-activation gradients on
    // the input and hidden sides, then dh @ w_hh before the blend's share is added.
    Scratch buf(sizeof(T) * B * (2 * G + H), stream);
    T* di = buf.get<T>();
    T* dh = di + B * G;
    T* gh = static_cast<T*>(grad_h);
    if (B * H > 0) {
      auto kernel = gru_cell_backward_kernel<T>;
      DLKERN_LAUNCH(kernel, grid_stride_blocks(B * H, kThreads), kThreads, 0, stream, B, H,
                    static_cast<const T*>(grad_h_out), typed<T>(h),
                    static_cast<const Accumulator<T>*>(saved), di, dh, gh);
    }
    T* gemm_h = dh + B * G;
    gemm_grads<T>(p, di, dh, input, h, w_ih, w_hh, static_cast<T*>(grad_input),
                  gh ? gemm_h : nullptr, static_cast<T*>(grad_w_ih), static_cast<T*>(grad_w_hh),
                  stream);
    if (gh && B * H > 0) {
      auto kernel = add_kernel<T>;
      DLKERN_LAUNCH(kernel, grid_stride_blocks(B * H, kThreads), kThreads, 0, stream, B * H,
                    static_cast<const T*>(gemm_h), gh);
    }
    bias_grads<T>(B, G, di, dh, static_cast<T*>(grad_b_ih), static_cast<T*>(grad_b_hh),
                  stream);
  });
}

}  // namespace dlkern
