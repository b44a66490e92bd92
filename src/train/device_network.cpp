// The bf16 device stage (train/device_network.hpp): host orchestration of jetmoe/model.h.
#include "train/device_network.hpp"

#include "jetmoe/build_config.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/bf16.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "model/device_model.hpp"
#include "parallel/watchdog.hpp"
#include "train/losses.hpp"

#if JETMOE_HAVE_CUDA_KERNELS
#include <cuda_runtime_api.h>

#include "jetmoe/kernels.h"
#endif
#if JETMOE_HAVE_NCCL
#include "parallel/nccl.hpp"
#endif

namespace jetmoe {

#if JETMOE_HAVE_NCCL
struct GpuComms {
  GpuComms(const Comm& p, const Comm& r, const Comm& e) : pipe(p), replicas(r), embedding(e) {}
  NcclComm pipe, replicas, embedding;
};

std::string gpu_comms_unavailable() { return ""; }

std::shared_ptr<GpuComms> make_gpu_comms(const Comm& pipe, const Comm& replicas, const Comm& embedding) {
  return std::make_shared<GpuComms>(pipe, replicas, embedding);
}

void broadcast_from_owners(GpuComms& comms, const std::vector<std::pair<float*, std::size_t>>& parts,
                           const std::vector<int>& owners) {
  JETMOE_ASSERT(parts.size() == owners.size(), "broadcast_from_owners: one owner per part");
  if (comms.replicas.size() == 1) return;
  const device::CudaErrors errors{"ZeRO-1's parameter broadcast (NCCL)",
                                  "NCCL needs some free GPU memory next to the training's"};
  const device::Stream stream(errors);
  NcclComm::begin_group();
  for (std::size_t i = 0; i < parts.size(); ++i)
    if (parts[i].second > 0)
      comms.replicas.broadcast(parts[i].first, parts[i].second * sizeof(float), owners[i], stream.s);
  NcclComm::end_group();
  WatchdogSection wait("the parameter broadcast over the replicas (NCCL)");
  errors.check(cudaStreamSynchronize(stream.s), "cudaStreamSynchronize");
}
#else
struct GpuComms {};

std::string gpu_comms_unavailable() {
  return "this build has no NCCL (JETMOE_ENABLE_NCCL needs the CUDA kernels, MPI and NCCL when configuring)";
}

std::shared_ptr<GpuComms> make_gpu_comms(const Comm&, const Comm&, const Comm&) {
  fail(ErrorKind::Deck, "parallel/communication = nccl: " + gpu_comms_unavailable());
}

void broadcast_from_owners(GpuComms&, const std::vector<std::pair<float*, std::size_t>>&, const std::vector<int>&) {
  fail(ErrorKind::Internal, "broadcast_from_owners: " + gpu_comms_unavailable());
}
#endif

#if !JETMOE_HAVE_CUDA_KERNELS

std::string device_training_unavailable() {
  return "this build has no CUDA kernels (configure on a machine with the CUDA toolkit, JETMOE_ENABLE_CUDA=ON)";
}
std::string device_training_description() { return "none"; }
std::unique_ptr<StageNetwork> make_device_network(const ModelConfig&, double, double, const StageSpan&,
                                                  std::shared_ptr<GpuComms>, const DeviceNetworkOptions&) {
  fail(ErrorKind::Deck, "train/precision = bf16: " + device_training_unavailable());
}

#else

namespace {

const device::CudaErrors kErrors{"bf16 training",
                                 "set train/recompute = true or train/logits_chunk_tokens (e.g. 1024), reduce "
                                 "train/micro_batch_size or train/seq_len, or use more pipeline stages"};

void check(cudaError_t e, const char* what) { kErrors.check(e, what); }

void ensure(device::Buffer& b, std::size_t bytes, const char* what) { check(b.ensure(bytes), what); }

std::uint16_t to_bf16_bits(float f) { return bf16::from_float(f).bits; }

// Where the trainer's fp32 masters and gradients live. On a Kokkos::Cuda build (Kokkos' memory space
// is GPU memory) the kernels read the masters and the gradients are added in place, on the GPU; on a
// host-memory Kokkos build (Serial, OpenMP) they travel through host copies.
constexpr bool kKokkosOnGpu = !host_memory;

// g += src over g's extent, in Kokkos' execution space (src: memory that space reads).
void add_into(const Vec<float>& g, const float* src) {
  const Kokkos::View<const float*, Kokkos::LayoutRight, MemSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> from(
      src, g.extent(0));
  Kokkos::parallel_for("device_network_add_gradient", Range(0, std::int64_t(g.extent(0))),
                       KOKKOS_LAMBDA(std::int64_t i) { g(i) += from(i); });
}

// Every copy goes through the network's (non-blocking) stream, so it is ordered with the kernels: a
// plain cudaMemcpy runs on the legacy stream, which a non-blocking stream does not wait for, and returns
// from a pageable upload before the data has landed.
void upload(void* to, const void* from, std::size_t bytes, cudaStream_t stream, const char* what) {
  check(device::copy_and_wait(to, from, bytes, cudaMemcpyHostToDevice, stream), what);
}
void download(void* to, const void* from, std::size_t bytes, cudaStream_t stream, const char* what) {
  check(device::copy_and_wait(to, from, bytes, cudaMemcpyDeviceToHost, stream), what);
}

class DeviceNetwork final : public StageNetwork, public StageLink {
 public:
  DeviceNetwork(const ModelConfig& c, double coef_switch, double coef_z, const StageSpan& span,
                std::shared_ptr<GpuComms> comms, const DeviceNetworkOptions& options)
      : c_(c), cs_(coef_switch), cz_(coef_z), span_(span), comms_(std::move(comms)) {
    first_ = span.first_layer;
    layers_ = span.end(c) - span.first_layer;
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
#if JETMOE_HAVE_NCCL
    // The replicas' sums overlapped with the last backward pass: their own stream, which waits for the
    // backward's events (one per part of the gradients: the head, each block, the embedding).
    if (options.overlap_sums && comms_ && comms_->replicas.size() > 1) {
      check(cudaStreamCreateWithFlags(&sum_stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
      ready_.assign(static_cast<std::size_t>(layers_ + 2), nullptr);
      for (cudaEvent_t& e : ready_) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    }
#endif
    check(device::make_rope_table(rope_, c), "the RoPE table");
    cfg_ = device::model_config(c, span, rope_, coef_switch, coef_z, options.kernels);
    cfg_.recompute = options.recompute ? 1 : 0;
    cfg_.head_chunk = options.logits_chunk;
    layer_w_.assign(static_cast<std::size_t>(layers_), jk_layer_weights_t{});
    layer_g_.assign(static_cast<std::size_t>(layers_), jk_layer_grads_t{});
    slots_.resize(1);
  }
  ~DeviceNetwork() override {
    for (cudaEvent_t e : ready_) cudaEventDestroy(e);
    if (sum_stream_) cudaStreamDestroy(sum_stream_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  void begin_pass(const ModelWeights& w) override {
    const std::vector<NamedTensor> named = w.named(c_);
    if (tensors_.empty()) allocate_tensors(named);
    JETMOE_ASSERT(named.size() == tensors_.size(), "DeviceNetwork: the stage's tensors changed");
    std::vector<std::uint16_t*> to;
    for (std::size_t i = 0; i < named.size(); ++i) {
      JETMOE_ASSERT(named[i].name == tensors_[i].name && std::int64_t(named[i].flat.extent(0)) == tensors_[i].numel,
                    "DeviceNetwork: tensor " + tensors_[i].name + " changed");
      to.push_back(tensors_[i].bf16.as<std::uint16_t>());
    }
    // The masters as the kernels' bf16 weights (staging_ stays empty on a Kokkos::Cuda build).
    device::round_to_bf16(named, to, staging_, stream_, kErrors);
  }

  void set_slots(int n) override {
    JETMOE_ASSERT(n >= 1, "DeviceNetwork::set_slots: at least one slot");
    if (std::size_t(n) == slots_.size()) return;
    slots_.resize(std::size_t(n));
    if (B_ > 0) allocate(B_, T_);
  }

  void prepare(std::int64_t B, std::int64_t T) override {
    if (B == B_ && T == T_) return;
    allocate(B, T);
  }

  std::string memory_summary(std::int64_t B, std::int64_t T) const override {
    std::size_t saved = 0, scratch = 0;
    check(jk_model_train_bytes(&cfg_, B, T, &saved, &scratch), "jk_model_train_bytes");
    const std::int64_t N = B * T;
    const bool chunked = span_.head && cfg_.head_chunk > 0 && cfg_.head_chunk < N;
    char buf[320];
    std::snprintf(buf, sizeof buf,
                  "GPU activations: %.1f MB saved per micro-batch in flight, %.1f MB scratch (%s; LM head %s)",
                  double(saved) / 1e6, double(scratch) / 1e6,
                  cfg_.recompute ? "blocks computed again in the backward: train/recompute" : "every block's kept",
                  !span_.head ? "on another stage"
                  : chunked   ? ("in chunks of " + std::to_string(cfg_.head_chunk) + " of the " + std::to_string(N) +
                               " tokens: train/logits_chunk_tokens").c_str()
                              : "whole");
    return buf;
  }

  const Mat<float>& stage_input(int slot) const override { return slots_.at(std::size_t(slot)).x_in; }
  const Mat<float>& stage_output(int slot) const override { return slots_.at(std::size_t(slot)).x_out; }
  const Mat<float>& boundary_grad() const override { return dx_; }

  LossTerms stage_forward(const ModelWeights&, const IntView2& ids, const IntView1& targets, bool with_grads,
                          double ce_scale, int slot, const RowWeights* weigh) override {
    Slot& s = slots_.at(std::size_t(slot));
    const std::int64_t N = B_ * T_, D = c_.hidden_size;
    jk_model_batch_t batch{B_, T_, nullptr, nullptr, nullptr};
    if (span_.embedding) {
      auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), ids);
      upload(ids_dev_.p, h.data(), std::size_t(N) * sizeof(std::int32_t), stream_, "uploading token ids");
      batch.ids = ids_dev_.as<std::int32_t>();
    } else {
      if (!comms_) upload_bf16(s.x_in, x_dev_, "uploading the stage input");  // else: received there
      batch.x_in = x_dev_.as<std::uint16_t>();
    }
    std::vector<std::int32_t> labels;
    if (span_.head) {
      auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), targets);
      labels.assign(h.data(), h.data() + N);
      for (std::int64_t t = 0; t < N; ++t)
        if (labels[t] != ignore_index && (labels[t] < 0 || labels[t] >= c_.vocab_size))
          fail(ErrorKind::Input, "target " + std::to_string(labels[t]) + " at row " + std::to_string(t) +
                                     " is outside the vocabulary [0, " + std::to_string(c_.vocab_size) + ")");
      upload(labels_dev_.p, labels.data(), std::size_t(N) * sizeof(std::int32_t), stream_, "uploading targets");
      batch.labels = labels_dev_.as<std::int32_t>();
    }
    check(jk_model_fwd(&weights_, &cfg_, &batch, out_dev_.as<std::uint16_t>(), loss_dev_.as<float>(),
                       aux_dev_.as<float>(), invalid_dev_.as<std::int32_t>(), s.saved.p, s.saved.bytes, scratch_.p,
                       scratch_.bytes, stream_),
          "jk_model_fwd");
    check(cudaStreamSynchronize(stream_), "the forward pass");
    if (span_.embedding) {
      std::int32_t invalid = 0;
      download(&invalid, invalid_dev_.p, sizeof invalid, stream_, "reading the id check");
      if (invalid != 0)
        fail(ErrorKind::Input, std::to_string(invalid) + " token id(s) outside the vocabulary [0, " +
                                   std::to_string(c_.vocab_size) + ") in a micro-batch");
    }
    LossTerms terms;
    s.switch_loss = s.z_loss = 0;
    if (layers_ > 0) {
      std::vector<float> aux(static_cast<std::size_t>(4 * layers_));
      download(aux.data(), aux_dev_.p, aux.size() * sizeof(float), stream_, "reading aux losses");
      for (std::int64_t l = 0; l < layers_; ++l) {
        s.switch_loss += double(aux[4 * l]) + double(aux[4 * l + 2]);
        s.z_loss += double(aux[4 * l + 1]) + double(aux[4 * l + 3]);
      }
      if (!with_grads) terms.switch_loss = s.switch_loss, terms.z_loss = s.z_loss;  // no backward reports them
    }
    if (span_.head) {
      std::vector<float> rows(static_cast<std::size_t>(N));
      download(rows.data(), loss_dev_.p, rows.size() * sizeof(float), stream_, "reading the losses");
      std::vector<double> row_loss(rows.begin(), rows.end());
      for (std::int64_t t = 0; t < N; ++t)
        if (labels[t] != ignore_index) terms.ce_sum += row_loss[t], ++terms.count;
      s.weighted = weigh && *weigh;
      if (s.weighted) {  // per-token weights from the row losses (DPO): the backward's in place of ce_scale
        std::vector<double> weights(row_loss.size(), 0.0);
        (*weigh)(row_loss, weights);
        s.row_weights.assign(weights.begin(), weights.end());
      }
      s.ce_scale = ce_scale;
    } else if (!comms_) {
      download_bf16(out_dev_, s.x_out, "reading the stage output");  // else: sent from there
    }
    (void)D;
    return terms;
  }

  void stage_backward(const ModelWeights&, ModelWeights&, double aux_scale, LossTerms& terms, int slot) override {
    Slot& s = slots_.at(std::size_t(slot));
    jk_model_batch_t batch{B_, T_, span_.embedding ? ids_dev_.as<std::int32_t>() : nullptr,
                           span_.embedding ? nullptr : x_dev_.as<std::uint16_t>(),
                           span_.head ? labels_dev_.as<std::int32_t>() : nullptr};
    if (!span_.head && !comms_) upload_bf16(dx_, dout_dev_, "uploading the output gradient");
    const bool weighted = span_.head && s.weighted;
    if (weighted)
      upload(row_w_dev_.p, s.row_weights.data(), s.row_weights.size() * sizeof(float), stream_, "uploading loss weights");
    cfg_.layer.aux_switch_coef = static_cast<float>(cs_ * aux_scale);
    cfg_.layer.aux_z_coef = static_cast<float>(cz_ * aux_scale);
    // The step's last backward pass completes the gradients: each part's sum over the replicas starts
    // on sum_stream_ as soon as the backward has written it.
    const bool overlap = sum_stream_ != nullptr && last_of_step;
    jk_model_grads_t grads = grads_;
    grads.ready = overlap ? ready_.data() : nullptr;
    check(jk_model_bwd(&weights_, &cfg_, &batch, span_.head ? nullptr : dout_dev_.as<std::uint16_t>(),
                       static_cast<float>(s.ce_scale), weighted ? row_w_dev_.as<float>() : nullptr,
                       span_.embedding ? nullptr : dx_dev_.as<std::uint16_t>(), &grads,
                       pending_ ? 1.0f : 0.0f, s.saved.p, s.saved.bytes, scratch_.p, scratch_.bytes, stream_),
          "jk_model_bwd");
    if (overlap) start_sums();
    check(cudaStreamSynchronize(stream_), "the backward pass");
    pending_ = true;
    terms.switch_loss += s.switch_loss, terms.z_loss += s.z_loss;
    if (!span_.embedding && !comms_) download_bf16(dx_dev_, dx_, "reading the input gradient");
  }

  void flush_gradients(ModelWeights& grads) override {
    if (!pending_) return;
    const std::vector<NamedTensor> named = grads.named(c_);
    JETMOE_ASSERT(named.size() == tensors_.size(), "DeviceNetwork: gradient tensors");
#if JETMOE_HAVE_NCCL
    if (comms_) {  // the sums over the replicas (one buffer, unless started by start_sums), then the tied
                   // embedding's two copies, on the stream of the replicas' sums
      cudaStream_t sums = summing_ ? sum_stream_ : stream_;
      if (!summing_)
        comms_->replicas.sum_in_place(grad_arena_.as<float>(), grad_arena_.bytes / sizeof(float), stream_);
      for (const Tensor& t : tensors_)
        if (t.name == "model.embed_tokens.weight") comms_->embedding.sum_in_place(t.grad, std::size_t(t.numel), sums);
      WatchdogSection wait("the gradient sums over the replicas (NCCL)");
      check(cudaStreamSynchronize(sums), "summing the gradients (NCCL)");
      summing_ = false;
    }
#endif
    check(cudaStreamSynchronize(stream_), "the gradients");
    std::vector<float> buf;
    for (std::size_t i = 0; i < named.size(); ++i) {
      const Tensor& t = tensors_[i];
      if (kKokkosOnGpu) {
        add_into(named[i].flat, t.grad);
        continue;
      }
      buf.resize(std::size_t(t.numel));
      download(buf.data(), t.grad, buf.size() * sizeof(float), stream_, "reading gradients");
      auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), named[i].flat);
      for (std::size_t j = 0; j < buf.size(); ++j) h(j) += buf[j];
      Kokkos::deep_copy(named[i].flat, h);
    }
    Kokkos::fence();
    pending_ = false;
    if (backward_progress) backward_progress(-1);
  }

  StageLink* own_link() override { return comms_ ? this : nullptr; }

#if JETMOE_HAVE_NCCL
  // After jk_model_bwd (with `ready`) is enqueued on stream_: on sum_stream_, each part of the gradient
  // arena (the head, the blocks from the last, the embedding: the order of their events, the same on
  // every replica) waits for its event and is summed over the replicas in place. Each part is one
  // contiguous range of the arena: its tensors are neighbours in the stage's tensor order.
  void start_sums() {
    struct Part {
      std::int64_t event;
      std::size_t begin, end;  // floats of the arena
    };
    std::vector<Part> parts;
    const float* base = grad_arena_.as<float>();
    for (const Tensor& t : tensors_) {
      std::int64_t event = layers_;  // final norm, head, the last stage's copy of a tied embedding
      if (t.name.rfind("model.layers.", 0) == 0)
        event = std::stoll(t.name.substr(13)) - first_;
      else if (t.name == "model.embed_tokens.weight" && span_.embedding)
        event = layers_ + 1;  // with a head tied on this stage, final only after the embedding's part
      const std::size_t begin = std::size_t(t.grad - base), end = begin + std::size_t(t.numel);
      if (!parts.empty() && parts.back().event == event && parts.back().end <= begin)
        parts.back().end = end;
      else
        parts.push_back({event, begin, end});
    }
    auto order = [this](std::int64_t event) { return event == layers_ ? -1 : event == layers_ + 1 ? layers_ : layers_ - 1 - event; };
    std::stable_sort(parts.begin(), parts.end(), [&](const Part& a, const Part& b) { return order(a.event) < order(b.event); });
    for (const Part& p : parts) {
      check(cudaStreamWaitEvent(sum_stream_, ready_[std::size_t(p.event)], 0), "cudaStreamWaitEvent (gradient sums)");
      comms_->replicas.sum_in_place(grad_arena_.as<float>() + p.begin, p.end - p.begin, sum_stream_);
    }
    summing_ = true;
  }
#else
  void start_sums() {}
#endif
  bool sums_gradients() const override { return comms_ != nullptr; }

  // StageLink (with NCCL): the bf16 boundaries straight from and into the kernels' buffers; one NCCL
  // group per exchange, complete when it returns.
  void exchange(const Message* out, const Message* in) override {
#if JETMOE_HAVE_NCCL
    const std::size_t bytes = std::size_t(B_ * T_ * c_.hidden_size) * sizeof(std::uint16_t);
    NcclComm::begin_group();
    if (out) comms_->pipe.send(out->kind == Kind::Activation ? out_dev_.p : dx_dev_.p, bytes, out->peer, stream_);
    if (in) comms_->pipe.recv(in->kind == Kind::Activation ? x_dev_.p : dout_dev_.p, bytes, in->peer, stream_);
    NcclComm::end_group();
    check(cudaStreamSynchronize(stream_), "a pipeline exchange (NCCL)");
#else
    (void)out, (void)in;
    JETMOE_ASSERT(false, "DeviceNetwork: a link without NCCL");
#endif
  }
  void drain() override {}

 private:
  struct Tensor {
    std::string name;
    std::int64_t numel = 0;
    device::Buffer bf16;
    float* grad = nullptr;  // in grad_arena_
  };
  struct Slot {
    device::Buffer saved;
    Mat<float> x_in, x_out;
    double ce_scale = 1.0, switch_loss = 0, z_loss = 0;
    bool weighted = false;
    std::vector<float> row_weights;  // per-token loss weights (when weighted)
  };

  void allocate_tensors(const std::vector<NamedTensor>& named) {
    tensors_ = std::vector<Tensor>(named.size());
    // The fp32 gradients: one zeroed buffer (one all-reduce for all of them), each tensor at a
    // 256-byte boundary.
    std::vector<std::size_t> offset(named.size());
    std::size_t floats = 0;
    for (std::size_t i = 0; i < named.size(); ++i) {
      offset[i] = floats;
      floats += (std::size_t(named[i].flat.extent(0)) + 63) / 64 * 64;
    }
    ensure(grad_arena_, floats * sizeof(float), "the gradients");
    check(cudaMemsetAsync(grad_arena_.p, 0, floats * sizeof(float), stream_), "clearing the gradients");
    for (std::size_t i = 0; i < named.size(); ++i) {
      Tensor& t = tensors_[i];
      t.name = named[i].name;
      t.numel = std::int64_t(named[i].flat.extent(0));
      ensure(t.bf16, std::size_t(t.numel) * 2, "the bf16 weights");
      t.grad = grad_arena_.as<float>() + offset[i];
      const bool tied_head = span_.head && c_.tie_word_embeddings;
      device::bind(t.name, static_cast<const std::uint16_t*>(t.bf16.as<std::uint16_t>()), first_, layer_w_,
                   span_.embedding, tied_head, weights_);
      device::bind(t.name, t.grad, first_, layer_g_, span_.embedding, tied_head, grads_);
    }
    weights_.layers = layer_w_.data();
    grads_.layers = layer_g_.data();
  }

  void allocate(std::int64_t B, std::int64_t T) {
    if (T > c_.max_position_embeddings)
      fail(ErrorKind::Deck, "train/seq_len " + std::to_string(T) + " exceeds the model's max_position_embeddings " +
                                std::to_string(c_.max_position_embeddings));
    B_ = B, T_ = T;
    const std::int64_t N = B * T, D = c_.hidden_size;
    std::size_t saved = 0, scratch = 0;
    check(jk_model_train_bytes(&cfg_, B, T, &saved, &scratch), "jk_model_train_bytes");
    for (Slot& s : slots_) {
      ensure(s.saved, saved, "the saved activations");
      s.x_in = Mat<float>("device_stage_input", N, D);
      s.x_out = Mat<float>("device_stage_output", N, D);
    }
    ensure(scratch_, scratch, "the scratch buffer");
    const std::size_t rows = std::size_t(N) * std::size_t(D) * 2;
    ensure(x_dev_, rows, "the stage input");
    ensure(out_dev_, rows, "the stage output");
    ensure(dout_dev_, rows, "the output gradient");
    ensure(dx_dev_, rows, "the input gradient");
    ensure(ids_dev_, std::size_t(N) * 4, "token ids");
    ensure(labels_dev_, std::size_t(N) * 4, "targets");
    ensure(loss_dev_, std::size_t(N) * 4, "the losses");
    ensure(row_w_dev_, std::size_t(N) * 4, "the loss weights");
    ensure(aux_dev_, std::size_t(std::max<std::int64_t>(4 * layers_, 1)) * 4, "the aux losses");
    ensure(invalid_dev_, 4, "the id check");
    dx_ = Mat<float>("device_stage_dx", N, D);
  }

  // A stage boundary between an fp32 Kokkos view (holding bf16 values, MPI's side) and a bf16 buffer
  // of the kernels: converted on the GPU when the view is GPU memory (Kokkos::Cuda), else on the host.
  void upload_bf16(const Mat<float>& from, device::Buffer& to, const char* what) {
    if (kKokkosOnGpu) {
      Kokkos::fence();  // `from` was written on Kokkos' stream
      check(jk_f32_to_bf16(from.data(), to.as<std::uint16_t>(), std::int64_t(from.size()), stream_), what);
      check(cudaStreamSynchronize(stream_), what);  // `from` may be received into again once this returns
      return;
    }
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), from);
    std::vector<std::uint16_t> bits(h.size());
    for (std::size_t i = 0; i < bits.size(); ++i) bits[i] = to_bf16_bits(h.data()[i]);
    upload(to.p, bits.data(), bits.size() * 2, stream_, what);
  }
  void download_bf16(const device::Buffer& from, const Mat<float>& to, const char* what) {
    if (kKokkosOnGpu) {
      check(jk_bf16_to_f32(from.as<std::uint16_t>(), to.data(), std::int64_t(to.size()), stream_), what);
      check(cudaStreamSynchronize(stream_), what);  // before Kokkos (its own stream) or MPI reads `to`
      return;
    }
    auto h = Kokkos::create_mirror_view(Kokkos::HostSpace(), to);
    std::vector<std::uint16_t> bits(h.size());
    download(bits.data(), from.p, bits.size() * 2, stream_, what);
    for (std::size_t i = 0; i < bits.size(); ++i) h.data()[i] = bf16::from_bits(bits[i]).to_float();
    Kokkos::deep_copy(to, h);
  }

  ModelConfig c_;
  double cs_, cz_;
  StageSpan span_;
  std::int64_t first_ = 0, layers_ = 0, B_ = 0, T_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaStream_t sum_stream_ = nullptr;  // the replicas' sums overlapped with the last backward (with NCCL)
  std::vector<cudaEvent_t> ready_;     // [layers + 2]: jk_model_grads_t::ready
  bool summing_ = false;               // start_sums has enqueued this step's sums on sum_stream_
  std::shared_ptr<GpuComms> comms_;  // null: boundaries and sums over MPI (Pipeline, trainer)
  device::Buffer rope_, staging_, scratch_, grad_arena_;
  device::Buffer x_dev_, out_dev_, dout_dev_, dx_dev_, ids_dev_, labels_dev_, loss_dev_, row_w_dev_, aux_dev_, invalid_dev_;
  jk_model_config_t cfg_{};
  jk_model_weights_t weights_{};
  jk_model_grads_t grads_{};
  std::vector<jk_layer_weights_t> layer_w_;
  std::vector<jk_layer_grads_t> layer_g_;
  std::vector<Tensor> tensors_;
  std::vector<Slot> slots_;
  Mat<float> dx_;
  bool pending_ = false;  // the device gradients hold sums not yet added to the trainer's
};

#if !defined(KOKKOS_ENABLE_CUDA)
// The launcher's node-local rank (Open MPI, Slurm, MPICH/Hydra, PMI, MVAPICH), or -1.
int node_local_rank() {
  for (const char* name :
       {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK"})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return -1;
}
#endif

// One GPU per rank: with several visible GPUs, rank r of a node takes GPU r mod count (with one visible
// GPU per task, as `srun --gpus-per-task=1` binds them, there is nothing to choose). Once per process.
// On a Kokkos::Cuda build, Kokkos chose the GPU when it started (--kokkos-device-id,
// KOKKOS_VISIBLE_DEVICES, else its own node-local rank rule, which reads the launchers' variables in
// another order): the kernels use that one, where Kokkos' views (the masters, the gradients) live.
void select_device(const jk_runtime_info_t& info) {
  static bool done = false;
  if (done) return;
#if defined(KOKKOS_ENABLE_CUDA)
  done = true;
  (void)info;
  check(cudaSetDevice(Kokkos::Cuda().cuda_device()), "cudaSetDevice (the GPU Kokkos::Cuda runs on)");
#else
  if (info.device_count <= 1) return;
  done = true;
  const int local = node_local_rank();
  if (local < 0) {
    log::warn("%d GPUs visible and no node-local rank in the environment: every rank uses GPU %d", info.device_count,
              info.device_index);
    return;
  }
  check(cudaSetDevice(local % info.device_count), "cudaSetDevice (one GPU per node-local rank)");
#endif
}

}  // namespace

std::string device_training_unavailable() {
  jk_runtime_info_t info{};
  if (jk_runtime_info(&info) != cudaSuccess) return "the CUDA runtime could not be queried";
  select_device(info);
  if (info.device_count > 1 && jk_runtime_info(&info) != cudaSuccess) return "the CUDA runtime could not be queried";
  if (info.device_count == 0)
    return std::string("no CUDA GPU is available (") + cudaGetErrorName(info.device_status) + ": " +
           cudaGetErrorString(info.device_status) + ")";
  if (!info.kernel_image_ok)
    return std::string("the kernels were built for ") + jk_compiled_architectures() + ", which cannot run on " +
           info.device_name + " (sm_" + std::to_string(info.sm_major) + std::to_string(info.sm_minor) + ")";
  return "";
}

std::string device_training_description() {
  jk_runtime_info_t info{};
  if (jk_runtime_info(&info) != cudaSuccess || info.device_count == 0) return "none";
  char buf[600];
  std::snprintf(buf, sizeof buf, "GPU %d of %d: %s (sm_%d%d, %d SMs, %.1f GiB), kernels for %s", info.device_index,
                info.device_count, info.device_name, info.sm_major, info.sm_minor, info.multiprocessor_count,
                double(info.total_global_mem) / (1024.0 * 1024 * 1024), jk_compiled_architectures());
  return buf;
}

std::unique_ptr<StageNetwork> make_device_network(const ModelConfig& config, double coef_switch, double coef_z,
                                                  const StageSpan& span, std::shared_ptr<GpuComms> comms,
                                                  const DeviceNetworkOptions& options) {
  const std::string why = device_training_unavailable();
  if (!why.empty()) fail(ErrorKind::Deck, "train/precision = bf16: " + why + "; use fp32");
  return std::make_unique<DeviceNetwork>(config, coef_switch, coef_z, span, std::move(comms), options);
}

#endif

}  // namespace jetmoe
