// The evaluation forward on the GPU (eval/device_forward.hpp): host orchestration of jk_model_eval.
#include "eval/device_forward.hpp"

#include "jetmoe/build_config.hpp"

#include "core/build_info.hpp"
#include "core/error.hpp"
#include "core/profiling.hpp"
#include "model/device_model.hpp"
#include "model/model.hpp"
#include "train/device_network.hpp"

namespace jetmoe::eval {

std::string device_evaluation_unavailable() { return device_training_unavailable(); }

std::string DeviceForward::matrix_products() const {
  return cuda_kernels_description(gpu_kernels_name(kernels_));
}

#if !JETMOE_HAVE_CUDA_KERNELS

struct DeviceForward::State {};

DeviceForward::DeviceForward(const Model& model, GpuKernels kernels, std::int64_t)
    : config_(model.config()), kernels_(kernels) {
  fail(ErrorKind::Deck, "eval/precision = bf16: " + device_evaluation_unavailable());
}
DeviceForward::~DeviceForward() = default;
// Unreachable: no DeviceForward is ever constructed.
void DeviceForward::logits(const TokenBatch&, float*) {}
std::vector<double> DeviceForward::target_logprobs(const TokenBatch&, const std::vector<std::int32_t>&) { return {}; }

#else

namespace {
// How a failed CUDA call of evaluation reads: the batches' buffers, and the weights (which fit or not).
const device::CudaErrors cuda{"evaluation on the GPU",
                              "a smaller eval/batch_size, or for perplexity a smaller eval/context"};
const device::CudaErrors cuda_weights{"evaluation on the GPU",
                                      "the bf16 weights need 2 bytes per parameter: a larger GPU, or eval/precision = "
                                      "fp32 on the CPU"};
}  // namespace

struct DeviceForward::State {
  device::Stream stream{cuda};
  device::InferenceModel model;
  device::Buffer scratch, ids, labels, loss_rows, logits, invalid;
  State(const Model& m, GpuKernels kernels, std::int64_t logits_chunk)
      : model(m.config(), m.weights(), stream.s, cuda_weights, kernels, logits_chunk) {}

  // One jk_model_eval of `batch`: the logits into `out` (host [N, V], or null), the loss rows of
  // `targets` (or null; < 0: not scored) returned.
  std::vector<float> run(const ModelConfig& c, const TokenBatch& batch, const std::vector<std::int32_t>* targets,
                         float* out) {
    const std::size_t N = batch.ids.size(), V = std::size_t(c.vocab_size);
    cuda.ensure(ids, N * 4, "token ids");
    cuda.ensure(invalid, 4, "the id check");
    cuda.ensure(scratch, jk_model_eval_bytes(model.config(), batch.n, batch.T), "the forward's activations");
    cuda.copy(ids.p, batch.ids.data(), N * 4, cudaMemcpyHostToDevice, stream.s, "uploading token ids");
    if (targets) {
      std::vector<std::int32_t> host(N);
      for (std::size_t i = 0; i < N; ++i) host[i] = (*targets)[i] < 0 ? -100 : (*targets)[i];  // the kernels' ignore
      cuda.ensure(labels, N * 4, "the targets");
      cuda.ensure(loss_rows, N * 4, "the log-likelihoods");
      cuda.copy(labels.p, host.data(), N * 4, cudaMemcpyHostToDevice, stream.s, "uploading the targets");
    }
    if (out) cuda.ensure(logits, N * V * 4, "the logits");
    cuda.check(jk_model_eval(model.weights(), model.config(), ids.as<std::int32_t>(), batch.n, batch.T,
                             targets ? labels.as<std::int32_t>() : nullptr, targets ? loss_rows.as<float>() : nullptr,
                             out ? logits.as<float>() : nullptr, invalid.as<std::int32_t>(), scratch.p, scratch.bytes,
                             stream.s),
               "jk_model_eval");
    std::int32_t bad_ids = 0;
    cuda.copy(&bad_ids, invalid.p, 4, cudaMemcpyDeviceToHost, stream.s, "reading the id check");
    if (bad_ids != 0)
      fail(ErrorKind::Input, "evaluation on the GPU: " + std::to_string(bad_ids) +
                                 " token ids outside the vocabulary [0, " + std::to_string(V) + ")");
    if (out) cuda.copy(out, logits.p, N * V * 4, cudaMemcpyDeviceToHost, stream.s, "reading the logits");
    std::vector<float> rows(targets ? N : 0);
    if (targets)
      cuda.copy(rows.data(), loss_rows.p, N * 4, cudaMemcpyDeviceToHost, stream.s, "reading the log-likelihoods");
    return rows;
  }
};

DeviceForward::DeviceForward(const Model& model, GpuKernels kernels, std::int64_t logits_chunk)
    : config_(model.config()), kernels_(kernels) {
  Region region("upload_weights");
  const std::string why = device_evaluation_unavailable();
  if (!why.empty()) fail(ErrorKind::Deck, "eval/precision = bf16: " + why);
  state_ = std::make_unique<State>(model, kernels, logits_chunk);
}

DeviceForward::~DeviceForward() = default;

void DeviceForward::logits(const TokenBatch& batch, float* out) {
  check_batch(config_, batch, nullptr);
  state_->run(config_, batch, nullptr, out);
}

std::vector<double> DeviceForward::target_logprobs(const TokenBatch& batch, const std::vector<std::int32_t>& targets) {
  check_batch(config_, batch, &targets);
  const std::vector<float> loss = state_->run(config_, batch, &targets, nullptr);
  std::vector<double> logp(loss.size());
  for (std::size_t i = 0; i < loss.size(); ++i) logp[i] = targets[i] < 0 ? 0.0 : -double(loss[i]);
  return logp;
}

#endif

}  // namespace jetmoe::eval
