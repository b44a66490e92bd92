#include "train/pipeline.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <cstdio>

#include "core/error.hpp"
#include "core/kokkos_compat.hpp"
#include "core/profiling.hpp"
#include "parallel/watchdog.hpp"

namespace jetmoe {

namespace {
constexpr int kForwardTag = 1, kBackwardTag = 2;
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
using HostMat = Kokkos::View<float**, Kokkos::LayoutRight, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
}  // namespace

std::vector<std::int64_t> split_layers(std::int64_t num_layers, int stages, const std::vector<std::int64_t>& explicit_layers) {
  // TrainConfig::from_deck has checked both against the deck (errors naming parallel/stage_layers and
  // parallel/pipeline_stages); here they are invariants.
  JETMOE_ASSERT(stages >= 1 && stages <= num_layers, "split_layers: more stages than layers");
  if (!explicit_layers.empty()) {
    std::int64_t sum = 0;
    for (std::int64_t n : explicit_layers) {
      JETMOE_ASSERT(n >= 1, "split_layers: a stage without layers");
      sum += n;
    }
    JETMOE_ASSERT(std::int64_t(explicit_layers.size()) == stages && sum == num_layers,
                  "split_layers: the explicit split does not cover the model");
    return explicit_layers;
  }
  std::vector<std::int64_t> out(std::size_t(stages), num_layers / stages);
  for (std::int64_t i = 0; i < num_layers % stages; ++i) ++out[std::size_t(i)];
  return out;
}

RankLayout make_layout(const ModelConfig& config, int stages, int replicas, int world_rank,
                       const std::vector<std::int64_t>& explicit_layers) {
  RankLayout l;
  l.stages = stages, l.replicas = replicas;
  l.stage = world_rank / replicas, l.replica = world_rank % replicas;
  l.layers = split_layers(config.num_layers, stages, explicit_layers);
  std::int64_t first = 0;
  for (int s = 0; s < stages; ++s) {
    StageSpan span;
    span.first_layer = first;
    span.end_layer = first + l.layers[std::size_t(s)];
    span.embedding = s == 0;
    span.head = s == stages - 1;
    l.spans.push_back(span);
    first = span.end_layer;
  }
  return l;
}

int RankLayout::owner_stage(const ModelConfig& config, const std::string& tensor) const {
  const std::string prefix = "model.layers.";
  if (tensor.compare(0, prefix.size(), prefix) == 0) {
    const std::int64_t layer = std::stoll(tensor.substr(prefix.size()));
    for (int s = 0; s < stages; ++s)
      if (spans[std::size_t(s)].owns_layer(config, layer)) return s;
    fail(ErrorKind::Internal, "owner_stage: no stage holds " + tensor);
  }
  return tensor == "model.embed_tokens.weight" ? 0 : stages - 1;
}

std::string RankLayout::describe() const {
  std::string out;
  for (int s = 0; s < stages; ++s) {
    const StageSpan& sp = spans[std::size_t(s)];
    char buf[96];
    std::snprintf(buf, sizeof buf, "%sstage %d: %slayers %lld-%lld%s", s ? "; " : "", s, sp.embedding ? "embedding + " : "",
                  (long long)sp.first_layer, (long long)sp.end_layer - 1, sp.head ? " + head" : "");
    out += buf;
  }
  return out;
}

namespace {
using HostVec = Kokkos::View<float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

// -1 for the embedding, N for model.layers.N.*, num_layers for the final norm and the head.
std::int64_t layer_key(const ModelConfig& config, const std::string& name) {
  static const std::string prefix = "model.layers.";
  if (name == "model.embed_tokens.weight") return -1;
  if (name.compare(0, prefix.size(), prefix) == 0) return std::stoll(name.substr(prefix.size()));
  return config.num_layers;
}
}  // namespace

void sum_gradients(const Comm& comm, const std::vector<NamedTensor>& grads, std::size_t bucket_floats) {
  if (comm.size() == 1) return;
  ModelConfig any;  // the layer keys only order readiness, which finish() does not need
  GradientReducer reducer(comm, any, grads, bucket_floats);
  reducer.finish();
}

GradientReducer::GradientReducer(const Comm& comm, const ModelConfig& config, std::vector<NamedTensor> grads,
                                 std::size_t bucket_floats)
    : comm_(comm), grads_(std::move(grads)) {
  JETMOE_ASSERT(bucket_floats >= 1, "GradientReducer: empty buckets");
  for (const NamedTensor& t : grads_) layer_of_.push_back(layer_key(config, t.name));
  // Buckets from the last tensor to the first: a tensor of bucket_floats or more goes alone (summed in
  // its own host copy), the others are packed until the next would overflow the bucket.
  Bucket open;
  std::size_t open_size = 0;
  auto close = [&]() {
    if (open.members.empty()) return;
    buckets_.push_back(std::move(open));
    open = Bucket();
    open_size = 0;
  };
  for (std::size_t k = grads_.size(); k-- > 0;) {
    const std::size_t n = grads_[k].flat.size();
    if (n >= bucket_floats) {
      Bucket alone;
      alone.members.push_back(k);
      close();  // the open bucket holds later tensors, which the backward pass finishes first
      buckets_.push_back(std::move(alone));
      continue;
    }
    if (open_size + n > bucket_floats) close();
    open.members.push_back(k);
    open_size += n;
  }
  close();
}

GradientReducer::~GradientReducer() {
  for (Bucket& b : buckets_) b.request.wait();
}

void GradientReducer::start(Bucket& b) {
  std::size_t total = 0;
  for (std::size_t i : b.members) total += grads_[i].flat.size();
  b.data.resize(total);
  std::size_t at = 0;
  for (std::size_t i : b.members) {
    const Vec<float>& g = grads_[i].flat;
    Kokkos::deep_copy(HostVec(b.data.data() + at, g.size()), g);
    at += g.size();
  }
  b.request = comm_.isum_in_place(b.data.data(), b.data.size());
  b.started = true;
}

void GradientReducer::progress() {
  for (std::size_t i = 0; i < next_; ++i) buckets_[i].request.test();
}

void GradientReducer::ready(std::int64_t first_done_layer) {
  if (comm_.size() == 1) return;
  // Buckets start in order; one is ready when all its tensors belong to finished layers.
  while (next_ < buckets_.size()) {
    Bucket& b = buckets_[next_];
    bool done = true;
    for (std::size_t i : b.members) done = done && layer_of_[i] >= first_done_layer;
    if (!done) break;
    start(b);
    ++next_;
    if (!finished_) ++started_early_;
  }
  progress();
}

void GradientReducer::finish() {
  if (comm_.size() == 1) return;
  finished_ = true;
  ready(std::numeric_limits<std::int64_t>::min());
  for (Bucket& b : buckets_) {
    b.request.wait();
    std::size_t at = 0;
    for (std::size_t i : b.members) {
      const Vec<float>& g = grads_[i].flat;
      Kokkos::deep_copy(g, HostVec(b.data.data() + at, g.size()));
      at += g.size();
    }
    std::vector<float>().swap(b.data);
  }
}

// The boundary tensors as host copies over MPI: a send copies its tensor into the next buffer of a
// per-direction ring (one buffer per activation slot, waiting first for the send that used it before)
// and starts a non-blocking send; a receive blocks.
class Pipeline::MpiLink final : public StageLink {
 public:
  MpiLink(const Comm& pipe, StageNetwork& net) : pipe_(pipe), net_(net) {}
  ~MpiLink() override { drain(); }

  void set_slots(int slots) {
    for (Ring& r : rings_) {
      r.buffers.resize(std::size_t(slots));
      r.sends.resize(std::size_t(slots));
    }
  }

  void exchange(const Message* out, const Message* in) override {
    if (out) {
      Ring& r = rings_[int(out->kind)];
      const std::size_t k = r.next++ % r.buffers.size();
      r.sends[k].wait();  // the receiver took the previous message from this buffer
      const Mat<float>& from = tensor(*out, false);
      r.buffers[k].resize(from.size());
      Kokkos::deep_copy(HostMat(r.buffers[k].data(), from.extent(0), from.extent(1)), from);
      r.sends[k] = pipe_.isend(r.buffers[k].data(), r.buffers[k].size(), out->peer, tag(out->kind));
    }
    if (in) {
      const Mat<float>& into = tensor(*in, true);
      receive_buffer_.resize(into.size());
      pipe_.recv(receive_buffer_.data(), receive_buffer_.size(), in->peer, tag(in->kind));
      Kokkos::deep_copy(into, HostMat(receive_buffer_.data(), into.extent(0), into.extent(1)));
    }
  }

  void drain() override {
    for (Ring& r : rings_)
      for (Request& q : r.sends) q.wait();
  }

 private:
  struct Ring {
    std::vector<std::vector<float>> buffers{1};
    std::vector<Request> sends{1};
    std::size_t next = 0;
  };
  static int tag(Kind kind) { return kind == Kind::Activation ? kForwardTag : kBackwardTag; }
  // An activation leaves from the slot's stage output and arrives in its stage input; a gradient
  // leaves from and arrives in the boundary gradient.
  const Mat<float>& tensor(const Message& m, bool incoming) const {
    if (m.kind == Kind::Gradient) return net_.boundary_grad();
    return incoming ? net_.stage_input(m.slot) : net_.stage_output(m.slot);
  }

  Comm pipe_;
  StageNetwork& net_;
  Ring rings_[2];  // by Kind
  std::vector<float> receive_buffer_;
};

Pipeline::Pipeline(const Comm& pipe, StageNetwork& net, int stage, int stages)
    : pipe_(pipe), net_(net), stage_(stage), stages_(stages) {
  JETMOE_ASSERT(pipe_.size() == stages && pipe_.rank() == stage, "Pipeline: communicator does not match the stages");
  link_ = net_.own_link();
  if (!link_) {
    mpi_link_ = std::make_unique<MpiLink>(pipe_, net_);
    link_ = mpi_link_.get();
  }
}

Pipeline::~Pipeline() = default;

void Pipeline::exchange(const Message* out, const Message* in) {
  if (!out && !in) return;
  Region region("pipeline_wait");
  WatchdogSection wait(in && out && in->peer != out->peer
                           ? "a pipeline exchange with stages " + std::to_string(out->peer) + " and " +
                                 std::to_string(in->peer)
                           : "a pipeline exchange with stage " + std::to_string(in ? in->peer : out->peer));
  const auto t0 = Clock::now();
  link_->exchange(out, in);
  times_.idle += seconds_since(t0);
}

void Pipeline::drain() {
  WatchdogSection wait("the pipeline's last sends");
  const auto t0 = Clock::now();
  link_->drain();
  times_.idle += seconds_since(t0);
}

LossTerms Pipeline::train(const ModelWeights& w, ModelWeights& grads, std::int64_t m, const MicroBatchSource& load,
                          double aux_scale, GradientReducer* reducer) {
  using Kind = StageLink::Kind;
  const int p = stages_, s = stage_;
  const bool has_prev = s > 0, has_next = s < p - 1;
  const std::int64_t warmup = std::min<std::int64_t>(p - s - 1, m);
  const int slots = int(std::max<std::int64_t>(1, std::min<std::int64_t>(p - s, m)));
  net_.set_slots(slots);
  if (mpi_link_) mpi_link_->set_slots(slots);
  net_.begin_pass(w);
  LossTerms total;
  auto slot_of = [slots](std::int64_t i) { return int(i % slots); };
  // What a stage receives before forward(i) and backward(i), and sends after them.
  auto input = [&](std::int64_t i) { return Message{Kind::Activation, slot_of(i), s - 1}; };
  auto output = [&](std::int64_t i) { return Message{Kind::Activation, slot_of(i), s + 1}; };
  const Message grad_in{Kind::Gradient, 0, s + 1}, grad_out{Kind::Gradient, 0, s - 1};
  // A micro-batch is loaded once, before its input is received (which needs the network sized for
  // it) or, on the first stage, before its forward pass; nothing loads in between.
  std::int64_t loaded = -1;
  MicroBatch mb;
  auto load_once = [&](std::int64_t i) {
    if (loaded == i) return;
    mb = load(i);
    loaded = i;
    net_.prepare(std::int64_t(mb.ids.extent(0)), std::int64_t(mb.ids.extent(1)));
  };
  auto forward = [&](std::int64_t i) {
    load_once(i);
    const auto t0 = Clock::now();
    const LossTerms t = net_.stage_forward(w, mb.ids, mb.targets, true, mb.ce_scale, slot_of(i), &mb.weigh);
    fence("pipeline_forward");
    times_.busy += seconds_since(t0);
    total.ce_sum += t.ce_sum, total.count += t.count;
  };
  auto backward = [&](std::int64_t i) {
    const auto t0 = Clock::now();
    // The last micro-batch completes the gradients: their sums over the replicas start layer by layer.
    if (reducer && i == m - 1) net_.backward_progress = [reducer](std::int64_t layer) { reducer->ready(layer); };
    net_.last_of_step = i == m - 1;
    net_.stage_backward(w, grads, aux_scale, total, slot_of(i));
    net_.backward_progress = nullptr;
    net_.last_of_step = false;
    fence("pipeline_backward");
    times_.busy += seconds_since(t0);
  };
  auto receive_input = [&](std::int64_t i) {
    if (!has_prev) return;
    load_once(i);
    const Message in = input(i);
    exchange(nullptr, &in);
  };
  // Warm-up: forward passes only.
  for (std::int64_t i = 0; i < warmup; ++i) {
    receive_input(i);
    forward(i);
    if (has_next) {
      const Message out = output(i);
      exchange(&out, nullptr);
    }
  }
  // Steady state: one forward, one backward; each send paired with the receive after it.
  const std::int64_t steady = m - warmup;
  if (steady > 0) receive_input(warmup);
  for (std::int64_t k = 0; k < steady; ++k) {
    const std::int64_t f = warmup + k;
    forward(f);
    {
      const Message out = output(f);
      exchange(has_next ? &out : nullptr, has_next ? &grad_in : nullptr);
    }
    backward(k);
    const bool more = k + 1 < steady;
    if (more && has_prev) load_once(f + 1);
    const Message in = input(f + 1);
    exchange(has_prev ? &grad_out : nullptr, more && has_prev ? &in : nullptr);
  }
  // Cool-down: the backward passes left.
  for (std::int64_t i = steady; i < m; ++i) {
    exchange(nullptr, has_next ? &grad_in : nullptr);
    backward(i);
    exchange(has_prev ? &grad_out : nullptr, nullptr);
  }
  drain();
  // A network that accumulates its gradients elsewhere hands them over once the stage's traffic of
  // the step is done (so sums it makes there, e.g. over NCCL, wait for no neighbour).
  {
    const auto t0 = Clock::now();
    if (reducer) net_.backward_progress = [reducer](std::int64_t layer) { reducer->ready(layer); };
    net_.flush_gradients(grads);
    net_.backward_progress = nullptr;
    times_.busy += seconds_since(t0);
  }
  return total;
}

LossTerms Pipeline::evaluate(const ModelWeights& w, std::int64_t m, const MicroBatchSource& load) {
  using Kind = StageLink::Kind;
  const int p = stages_, s = stage_;
  net_.begin_pass(w);  // slot 0 (which always exists) and whatever send buffers the link has
  LossTerms total;
  const Message in{Kind::Activation, 0, s - 1}, out{Kind::Activation, 0, s + 1};
  for (std::int64_t i = 0; i < m; ++i) {
    const MicroBatch mb = load(i);
    net_.prepare(std::int64_t(mb.ids.extent(0)), std::int64_t(mb.ids.extent(1)));
    exchange(nullptr, s > 0 ? &in : nullptr);
    const LossTerms t = net_.stage_forward(w, mb.ids, mb.targets, false, mb.ce_scale, 0, &mb.weigh);
    total.ce_sum += t.ce_sum, total.count += t.count;
    exchange(s < p - 1 ? &out : nullptr, nullptr);
  }
  drain();
  return total;
}

}  // namespace jetmoe
