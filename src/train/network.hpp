#pragma once
// The model as the trainer sees it: a forward pass over full sequences that keeps what the backward
// pass needs, and the hand-written backward pass of every op (jetmoe-spec.md sections 3 and 4), with
// the cross-entropy and the original JetMoE router losses. Instantiated for R = float (training) and
// R = double (finite-difference gradient checks).
//
// Activation memory: per block the input and the mid-block residual [N, D], both routings, q/k/v after
// RoPE, the attention output and its log-sum-exp, the experts' outputs before the gates and the SwiGLU
// input z; everything else (norm outputs, gathered rows, the SwiGLU output) is recomputed in the
// backward pass. With `recompute`, only each block's input is kept and the block's forward runs again
// during the backward pass (one block's activations live at a time).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "model/config.hpp"
#include "model/weights.hpp"
#include "moe/routing.hpp"

namespace jetmoe {

struct LossTerms {
  double ce_sum = 0;          // sum of the token cross-entropies over counted targets
  std::int64_t count = 0;     // targets that are not ignore_index
  double switch_loss = 0;     // switch load-balancing loss, summed over the 2L routers
  double z_loss = 0;          // router z-loss, summed over the 2L routers
  double ce() const { return count > 0 ? ce_sum / double(count) : 0.0; }
};

// Model FLOPs per trained token (forward + backward = 3 x forward): 6 x the active parameters that
// multiply (the embedding gather excluded, the LM head included) + 6 L Hq d (T + 1) for causal
// attention over sequences of T tokens. The numerator of MFU.
double training_flops_per_token(const ModelConfig& config, std::int64_t seq_len);

// How a pipeline stage's boundary tensors travel between neighbouring stages (train/pipeline.hpp). An
// exchange sends at most one tensor and receives at most one, as one operation (Megatron's
// send_forward_recv_backward): the neighbours post matching exchanges in the same order, so even a
// transport whose sends block until the peer receives (NCCL) cannot deadlock on the 1F1B schedule.
class StageLink {
 public:
  enum class Kind { Activation, Gradient };  // a stage output going forward; an input's gradient going back
  struct Message {
    Kind kind;
    int slot;  // activations: the micro-batch's activation slot (unused for gradients)
    int peer;  // the neighbour's rank in the pipeline communicator
  };
  virtual ~StageLink() = default;
  // Returns when `in` has arrived (its tensor filled); `out` may still be in flight, its tensor must
  // not change until the next exchange or drain. Either may be null.
  virtual void exchange(const Message* out, const Message* in) = 0;
  // Every message sent has been taken.
  virtual void drain() = 0;
};

// What a pipeline stage runs (train/pipeline.hpp): the CPU network below (any Kokkos backend, fp32) or
// the device network of train/device_network.hpp (bf16 on the CUDA kernels, fp32 master weights). One
// micro-batch per activation slot; boundary tensors are fp32 arrays of [B*T, D] in the model's memory
// space.
template <class R>
class StageNetworkT {
 public:
  using RowWeights = std::function<void(const std::vector<double>& row_loss, std::vector<double>& weights)>;
  virtual ~StageNetworkT() = default;

  // Called during the backward pass each time a further part of the span has its gradients complete
  // for this pass, with the global number of the lowest layer done: num_layers after the final norm
  // and head, each layer from the last to the first, -1 after the embedding. The gradients of every
  // tensor of those layers (and after them) are then final for the pass. Unset: not called.
  std::function<void(std::int64_t first_done_layer)> backward_progress;
  // Set by the Pipeline around the step's last backward pass (after it, this pass's gradients are
  // complete): a network that sums them elsewhere may start during that pass.
  bool last_of_step = false;

  // A pass over micro-batches with the weights `w` begins (a training step or an evaluation): a network
  // that keeps its own copy of the weights refreshes it here. Default: nothing.
  virtual void begin_pass(const ModelWeightsT<R>& /*w*/) {}
  // The step's backward passes and boundary traffic are done: a network that accumulates gradients
  // elsewhere adds them to `grads` now (and then reports backward_progress(-1)). Default: nothing (they
  // are already there).
  virtual void flush_gradients(ModelWeightsT<R>& /*grads*/) {}
  // A network that moves its own boundary tensors (the device network with NCCL, GPU to GPU) returns
  // its link; the Pipeline then uses it instead of sending the host tensors below over MPI.
  virtual StageLink* own_link() { return nullptr; }
  // True when flush_gradients has also summed the gradients over the stage's data-parallel replicas
  // and the tied embedding's two copies (on the GPU): the trainer then skips its own sums.
  virtual bool sums_gradients() const { return false; }

  virtual void set_slots(int n) = 0;
  virtual void prepare(std::int64_t B, std::int64_t T) = 0;
  virtual const Mat<R>& stage_input(int slot) const = 0;
  virtual LossTerms stage_forward(const ModelWeightsT<R>& w, const IntView2& ids, const IntView1& targets,
                                  bool with_grads, double ce_scale, int slot, const RowWeights* weigh = nullptr) = 0;
  virtual const Mat<R>& stage_output(int slot) const = 0;
  virtual const Mat<R>& boundary_grad() const = 0;
  virtual void stage_backward(const ModelWeightsT<R>& w, ModelWeightsT<R>& grads, double aux_scale, LossTerms& terms,
                              int slot) = 0;
  // One line for the run's start: the activation memory of micro-batches of [B, T] as train/recompute
  // and train/logits_chunk_tokens arranged it (what is kept per micro-batch in flight, what is shared).
  virtual std::string memory_summary(std::int64_t B, std::int64_t T) const = 0;
};
using StageNetwork = StageNetworkT<float>;

template <class R>
class Network : public StageNetworkT<R> {
 public:
  using typename StageNetworkT<R>::RowWeights;
  using StageNetworkT<R>::backward_progress;
  using StageNetworkT<R>::last_of_step;
  // coef_switch, coef_z: weights of each router's switch and z losses (0.01 and 0.001 in the paper).
  // `span`: the part of the model this network runs (a pipeline stage; default the whole model).
  // `logits_chunk` (train/logits_chunk_tokens; 0: off): the LM head and the cross-entropy of at most
  // this many tokens at a time. A micro-batch of more tokens keeps no logits [N, V] (nor their
  // gradient): the loss computes each chunk's logits into one shared [chunk, V] buffer, and the backward
  // computes them again, chunk by chunk, for the head's gradients (one more head GEMM per micro-batch).
  Network(const ModelConfig& config, double coef_switch, double coef_z, bool recompute = false,
          const StageSpan& span = StageSpan(), std::int64_t logits_chunk = 0);

  // ids [B, T] token ids; targets [B*T] (row b*T + t: the label predicted at (b, t), or ignore_index).
  // Runs the forward pass and returns the loss terms. With `grads`, also runs the backward pass and
  // ADDS to *grads the gradient of
  //     ce_scale * ce_sum + aux_scale * sum over routers (coef_switch * switch + coef_z * z)
  // (ce_scale = 1/count gives HF's mean loss; accumulation over micro-batches divides by the global
  // count). Tokens attend causally within each row of `ids`, from position 0.
  LossTerms run(const ModelWeightsT<R>& weights, const IntView2& ids, const IntView1& targets,
                ModelWeightsT<R>* grads = nullptr, double ce_scale = 1.0, double aux_scale = 1.0);

  // The same with per-token weights chosen after the forward pass: `weigh(row_loss, weights)` gets the
  // per-row cross-entropies loss_t = -log p(target_t) (0 for ignore_index) and sets weights[t]; the
  // backward pass then differentiates sum_t weights[t] loss_t + aux_scale * (router losses). Used by
  // SFT and DPO (whose weights depend on whole sequences). Without grads, only the forward pass runs.
  LossTerms run_weighted(const ModelWeightsT<R>& weights, const IntView2& ids, const IntView1& targets,
                         ModelWeightsT<R>* grads, const RowWeights& weigh, double aux_scale = 1.0);
  // The per-row cross-entropies of the last run_weighted.
  const std::vector<double>& row_losses() const { return row_losses_; }

  // The logits of the last run ([B*T, V]; empty when the head ran in chunks).
  const Mat<R>& logits() const { return slots_.at(0).logits; }
  const ModelConfig& config() const { return config_; }
  const StageSpan& span() const { return span_; }

  // ---- Pipeline stages ------------------------------------------------------------------------------
  // A stage keeps the activations of several micro-batches in flight (1F1B: up to stages - stage), one
  // activation slot each; the workspaces are shared. run() and run_weighted() use slot 0.
  void set_slots(int n) override;
  int slots() const { return int(slots_.size()); }
  // Sizes everything for micro-batches of [B, T].
  void prepare(std::int64_t B, std::int64_t T) override;
  // The stage's input activation [B*T, D] of a slot: the caller fills it before stage_forward on a
  // stage without the embedding.
  const Mat<R>& stage_input(int slot) const override { return slots_.at(std::size_t(slot)).x.front(); }
  // Forward of one micro-batch through the stage; on the last stage also the cross-entropy (scaled as
  // in run()) and, with_grads, its gradient. ids are read on the first stage, targets on the last.
  // With `weigh` the last stage differentiates per-token weights as run_weighted does; `weigh` is
  // called on the last stage with or without grads (without, its weights are not used).
  LossTerms stage_forward(const ModelWeightsT<R>& w, const IntView2& ids, const IntView1& targets, bool with_grads,
                          double ce_scale, int slot, const RowWeights* weigh = nullptr) override;
  // The stage's output activation [B*T, D] of a slot (what the next stage receives).
  const Mat<R>& stage_output(int slot) const override { return slots_.at(std::size_t(slot)).x.back(); }
  // The gradient of the stage output: the caller fills it before stage_backward on a stage without the
  // head; after stage_backward it holds the gradient of the stage input (what the previous stage gets).
  const Mat<R>& boundary_grad() const override { return dx_; }
  // Backward of the micro-batch in `slot` (after its stage_forward with_grads); adds to grads.
  void stage_backward(const ModelWeightsT<R>& w, ModelWeightsT<R>& grads, double aux_scale, LossTerms& terms,
                      int slot) override;
  std::string memory_summary(std::int64_t B, std::int64_t T) const override;

 private:
  struct Block {  // what one block keeps for its backward pass
    Vec<R> rstd1, rstd2;
    RoutingT<R> moa, moe;
    Ten4<R> q, k, v, attn;  // q, k after RoPE
    Ten3<R> lse;
    Mat<R> y_attn, x_mid, z, y_mlp;
  };
  struct Slot {  // one micro-batch's activations
    IntView1 flat_ids;
    std::vector<Mat<R>> x;      // block inputs of the stage's layers, then the stage output
    std::vector<Block> blocks;  // one per layer of the stage (none with `recompute`)
    Vec<R> rstd_final;
    Mat<R> logits, dlogits;     // last stage (none when the head runs in chunks)
    IntView1 targets;           // last stage, head in chunks: the targets and each row's weight in the
    std::vector<double> row_weights;  // loss the backward differentiates (kept from the forward)
  };
  void allocate(std::int64_t B, std::int64_t T);
  void allocate_slot(Slot& s);
  Block& block_of(Slot& s, std::int64_t i) { return recompute_ ? scratch_ : s.blocks[std::size_t(i)]; }
  LossTerms forward(const ModelWeightsT<R>& w, const IntView2& ids, bool with_grads, int slot);
  double loss(const ModelWeightsT<R>& w, const IntView1& targets, bool with_grads, double ce_scale, int slot,
              LossTerms& terms);
  // run_weighted's loss: the per-row cross-entropies, then (with grads) weights from `weigh`.
  void weighted_loss(const ModelWeightsT<R>& w, const IntView1& targets, bool with_grads, const RowWeights& weigh,
                     int slot, LossTerms& terms);
  // Rows of one head chunk for micro-batches of N tokens (N when the head does not chunk).
  std::int64_t head_rows_for(std::int64_t N) const { return logits_chunk_ > 0 && logits_chunk_ < N ? logits_chunk_ : N; }
  // The head in chunks: rows of at most head_rows_ tokens (B_ T_ when it does not chunk).
  bool chunked_head() const { return span_.head && head_rows_ < B_ * T_; }
  // Chunked: each row's cross-entropy (0 for ignore_index) from the final norm's output in u_.
  std::vector<double> chunked_rows(const ModelWeightsT<R>& w, const IntView1& targets);
  // Chunked: keeps the targets and the rows' weights for the backward.
  void keep_for_backward(Slot& s, const IntView1& targets, std::vector<double> row_weights);
  // Chunked backward of the head: g.lm_head += dlogits^T u and du_ = dlogits W, a chunk at a time.
  void chunked_head_backward(const ModelWeightsT<R>& w, ModelWeightsT<R>& g, const Slot& s);
  void backward(const ModelWeightsT<R>& w, ModelWeightsT<R>& g, double aux_scale, LossTerms& terms, int slot);
  void block_forward(const LayerWeightsT<R>& w, const Mat<R>& x_in, Block& a, const Mat<R>& x_out);
  // dx: gradient of the block output in, of the block input out.
  void block_backward(const LayerWeightsT<R>& w, const Mat<R>& x_in, const Block& a, const Mat<R>& dx,
                      LayerWeightsT<R>& g, double aux_scale, LossTerms& terms);

  ModelConfig config_;
  double coef_switch_, coef_z_;
  bool recompute_;
  StageSpan span_;
  std::int64_t logits_chunk_ = 0;  // train/logits_chunk_tokens (0: off)
  std::int64_t head_rows_ = 0;     // rows of one head chunk for the prepared [B_, T_]
  Mat<R> chunk_logits_, chunk_dlogits_;  // [head_rows_, V], chunked
  std::int64_t first_ = 0, layers_ = 0;  // the stage's first layer and layer count
  std::int64_t B_ = 0, T_ = 0;
  Ten3<R> rope_cos_, rope_sin_;
  std::vector<Slot> slots_{1};
  Block scratch_;  // with `recompute`: the one block whose activations live at a time
  std::vector<double> row_losses_;
  // Workspaces shared by the blocks.
  Mat<R> u_, tmp_, gathered_, q_sorted_, o_sorted_, h_;
  Mat<R> dx_, du_, dgathered_, dy_sorted_, drouter_, dq_sorted_, do_sorted_, dh_, dz_;
  Ten4<R> dattn_, dq_, dk_, dv_;
};

}  // namespace jetmoe
