#pragma once
// Pipeline and data parallelism over a grid of ranks (docs/user-guide.md, "Under MPI"):
//
//   world rank = stage x data_parallel + replica
//
// so the data-parallel replicas of a stage are neighbours (their all-reduce is the heavy traffic) and a
// replica's stages are data_parallel ranks apart. Stage s holds layers [first, end) of the model; the
// first stage also the embedding, the last the final norm and the LM head (with tied embeddings its own
// copy of the embedding, whose gradient is summed with the first stage's before every update).
//
// One optimizer step runs the replica's micro-batches through its stages on the 1F1B schedule (after a
// warm-up of stages - stage - 1 forward passes every stage alternates one forward and one backward
// pass), so a stage keeps at most stages - stage micro-batches of activations. Activations travel
// forward and their gradients backward as point-to-point messages between neighbouring stages: in the
// steady state each send is paired with the receive that follows it (forward output with the next
// backward's gradient, backward's input gradient with the next forward's input) in one exchange
// (StageLink). Over MPI the sends do not block (per-slot host buffers); NCCL pairs them in a group.
// Idle time of the pipeline (the bubble, (p - 1) / (m + p - 1) of the step for p stages and m
// micro-batches of equal cost) is measured as the time spent in exchanges: waiting and moving data.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "model/config.hpp"
#include "model/weights.hpp"
#include "parallel/comm.hpp"
#include "train/network.hpp"

namespace jetmoe {

struct RankLayout {
  int stages = 1, replicas = 1;  // pipeline_stages x data_parallel
  int stage = 0, replica = 0;    // this rank's place
  std::vector<std::int64_t> layers;  // layers per stage
  std::vector<StageSpan> spans;      // every stage's part of the model

  const StageSpan& span() const { return spans[std::size_t(stage)]; }
  bool first() const { return stage == 0; }
  bool last() const { return stage == stages - 1; }
  int world_rank(int s, int r) const { return s * replicas + r; }
  // The stage that holds a parameter (by checkpoint name); the embedding: the first stage.
  int owner_stage(const ModelConfig& config, const std::string& tensor) const;
  // "stage 0: embedding + layers 0-11; stage 1: layers 12-23 + head"
  std::string describe() const;
};

// Layers per stage: `explicit_layers` when given (one positive entry per stage adding up to num_layers,
// as TrainConfig::from_deck checks), else as even as possible, the first stages taking one more when
// the layers do not divide.
std::vector<std::int64_t> split_layers(std::int64_t num_layers, int stages, const std::vector<std::int64_t>& explicit_layers);
RankLayout make_layout(const ModelConfig& config, int stages, int replicas, int world_rank,
                       const std::vector<std::int64_t>& explicit_layers = {});

// Micro-batch i of a step or evaluation: the first stage reads ids, the last targets (every stage gets
// the same micro-batch). ce_scale as in Network::run.
struct MicroBatch {
  IntView2 ids;
  IntView1 targets;
  double ce_scale = 1.0;
  // Optional: per-token loss weights from the row losses (SFT/DPO-style, Network::run_weighted); on
  // the last stage, also in evaluate() (where only the row losses matter).
  StageNetwork::RowWeights weigh;
};
using MicroBatchSource = std::function<MicroBatch(std::int64_t i)>;

struct PipelineTimes {
  double busy = 0;  // seconds in this stage's forward and backward passes
  double idle = 0;  // seconds waiting for a neighbour's activation or gradient
};

// Sums the gradients over the ranks of `comm` (a stage's data-parallel replicas), in buckets of at most
// `bucket_floats` values: the tensors, from the last layer to the first (the order a backward pass
// finishes them), are packed into one host buffer per bucket and each bucket is one MPI_Allreduce; a
// tensor larger than a bucket goes alone, in place. Every replica gets the same sums.
void sum_gradients(const Comm& comm, const std::vector<NamedTensor>& grads, std::size_t bucket_floats);

// The same sums, overlapped with the backward pass: the buckets of sum_gradients (same packing, same
// order) start as non-blocking all-reduces (MPI_Iallreduce) as soon as the backward pass has finished
// their tensors, while it goes on with the layers before them. `grads` is a stage's gradient list in
// checkpoint order (embedding, layers ascending, final norm, head), which the backward pass finishes
// from the end: ready(l) says that layer l and everything after it are final (Network's
// backward_progress), finish() starts what is left, waits for every bucket and writes the sums back.
// Every replica of the stage must make the same calls. The sums are those of sum_gradients' buckets
// (MPI may order a non-blocking reduction differently from a blocking one over more than 2 ranks).
class GradientReducer {
 public:
  GradientReducer(const Comm& comm, const ModelConfig& config, std::vector<NamedTensor> grads, std::size_t bucket_floats);
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;
  ~GradientReducer();  // waits for any sum still in flight (finish() was not reached: an error)

  void ready(std::int64_t first_done_layer);
  void finish();
  // Buckets started before finish() (overlapped with the backward pass), and in all.
  std::size_t started_early() const { return started_early_; }
  std::size_t buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<std::size_t> members;  // indices into grads_, in packing order
    std::vector<float> data;           // packed host copy, summed in place
    Request request;
    bool started = false;
  };
  void start(Bucket& b);
  void progress();

  Comm comm_;
  std::vector<NamedTensor> grads_;
  std::vector<std::int64_t> layer_of_;  // per tensor: -1 embedding, its layer, num_layers norm/head
  std::vector<Bucket> buckets_;         // in the order they become ready (last tensors first)
  std::size_t next_ = 0;                // first bucket not started
  std::size_t started_early_ = 0;
  bool finished_ = false;
};

class Pipeline {
 public:
  // `pipe`: the ranks of this replica's pipeline, ranked by stage. `net` runs this stage's span. The
  // boundary tensors travel by the network's own link when it has one (NCCL between GPUs), else as
  // host copies over MPI on `pipe`.
  Pipeline(const Comm& pipe, StageNetwork& net, int stage, int stages);
  ~Pipeline();

  // One step: micro-batches 0 .. m-1 forward and backward (1F1B), gradients added to `grads`. Returns
  // this stage's loss terms: the cross-entropy on the last stage, the router losses of its layers.
  // `reducer`: sums the gradients over the stage's replicas while the last micro-batch's backward pass
  // runs (the caller calls finish() after train returns); null: the caller sums them afterwards.
  LossTerms train(const ModelWeights& w, ModelWeights& grads, std::int64_t m, const MicroBatchSource& load,
                  double aux_scale, GradientReducer* reducer = nullptr);
  // Forward passes only (validation): the cross-entropy on the last stage.
  LossTerms evaluate(const ModelWeights& w, std::int64_t m, const MicroBatchSource& load);

  // Accumulated since construction (or the last reset).
  const PipelineTimes& times() const { return times_; }
  void reset_times() { times_ = PipelineTimes(); }

 private:
  using Message = StageLink::Message;
  class MpiLink;  // the host tensors over MPI (pipeline.cpp)
  // One exchange with the neighbours (either side may be absent), timed as idle.
  void exchange(const Message* out, const Message* in);
  void drain();

  Comm pipe_;
  StageNetwork& net_;
  int stage_, stages_;
  std::unique_ptr<MpiLink> mpi_link_;  // when the network has no link of its own
  StageLink* link_ = nullptr;
  PipelineTimes times_;
};

}  // namespace jetmoe
