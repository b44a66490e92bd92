#include "train/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "core/build_info.hpp"
#include "core/deck.hpp"
#include "core/error.hpp"
#include "core/kokkos_compat.hpp"
#include "core/log.hpp"
#include "core/profiling.hpp"
#include "data/chat.hpp"
#include "data/sampler.hpp"
#include "data/shards.hpp"
#include "infer/generate.hpp"
#include "io/atomic_file.hpp"
#include "io/checkpoint.hpp"
#include "io/output_directory.hpp"
#include "model/hf_checkpoint.hpp"
#include "model/load.hpp"
#include "model/model.hpp"
#include "parallel/comm.hpp"
#include "parallel/watchdog.hpp"
#include "train/config.hpp"
#include "train/device_network.hpp"
#include "train/dpo.hpp"
#include "train/losses.hpp"
#include "train/network.hpp"
#include "train/optimizer.hpp"
#include "train/pipeline.hpp"

namespace jetmoe {

namespace fs = std::filesystem;

// ---- stop requests (SIGTERM from Slurm before the time limit or on preemption, Ctrl-C) ---------------

namespace {
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal != 0 && sig == SIGINT) std::_Exit(130);  // a second Ctrl-C: leave now
  g_stop_signal = sig;
}
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) sigaction(sig, &sa, nullptr);
}
bool stop_requested() { return g_stop_signal != 0; }
void request_stop() { g_stop_signal = SIGTERM; }
void clear_stop_request() { g_stop_signal = 0; }

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The best of a few 1024^3 SGEMMs: the reference "peak" of MFU on a CPU, where no data sheet is at hand.
double measure_gemm_gflops() {
  const std::int64_t n = 1024;
  View2 a("peak_a", n, n), b("peak_b", n, n), c("peak_c", n, n);
  Kokkos::deep_copy(a, 0.5f);
  Kokkos::deep_copy(b, 0.25f);
  linear(a, b, c);
  fence("peak");
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = Clock::now();
    linear(a, b, c);
    fence("peak");
    best = std::min(best, seconds_since(t0));
  }
  return 2.0 * double(n) * double(n) * double(n) / best / 1e9;
}

std::string format_duration(double s) {
  char buf[32];
  if (!std::isfinite(s) || s < 0) return "?";
  const long long t = (long long)(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, t / 60 % 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%llds", t);
  return buf;
}

std::string resolve(const std::string& base, const std::string& path) {
  return fs::path(path).is_absolute() ? path : (fs::path(base) / path).string();
}

// A flat [B, T+1] host token buffer as inputs [B, T] and shifted targets [B*T].
void split_sequences(const std::vector<std::int32_t>& tokens, std::int64_t B, std::int64_t T, const IntView2& ids,
                     const IntView1& targets) {
  auto hi = Kokkos::create_mirror_view(ids);
  auto ht = Kokkos::create_mirror_view(targets);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t) {
      hi(b, t) = tokens[std::size_t(b * (T + 1) + t)];
      ht(b * T + t) = tokens[std::size_t(b * (T + 1) + t + 1)];
    }
  Kokkos::deep_copy(ids, hi);
  Kokkos::deep_copy(targets, ht);
}

// train/precision = bf16 needs the CUDA kernels on a GPU, and parallel/communication = nccl an NCCL build.
void check_devices(const Deck& deck, const TrainConfig& run) {
  if (run.precision != "bf16") return;
  const std::string why = device_training_unavailable();
  if (!why.empty()) deck.fail_value("train", "precision", "bf16 needs the CUDA kernels on a GPU: " + why + "; use fp32");
  const std::string no_nccl = gpu_comms_unavailable();
  if (deck.get_string("parallel", "communication") == "nccl" && !no_nccl.empty())
    deck.fail_value("parallel", "communication", "nccl: " + no_nccl + "; use mpi or auto");
}

std::string fmt_g(double v, int digits = 6) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}
// A number of metrics.jsonl: JSON has no NaN or infinity, so a non-finite value (a skipped step's
// gradient norm) is null.
std::string json_number(double v, int digits) { return std::isfinite(v) ? fmt_g(v, digits) : "null"; }

// A <data> mixture key: the deck's list, or empty (every source by its token count) when unset.
WeightList deck_weights(const Deck& deck, const std::string& key) {
  return deck.is_set("data", key) ? deck.get_weights("data", key) : WeightList{};
}

// What one optimizer step measured, summed over its micro-batches.
struct StepStats {
  double ce_sum = 0, switch_loss = 0, z_loss = 0;  // router losses: mean over micro-batches
  std::int64_t count = 0;                          // counted targets
  DpoStats dpo;                                    // DPO: sums over the step's pairs
  double ce() const { return count > 0 ? ce_sum / double(count) : 0.0; }
};

class Trainer {
 public:
  Trainer(Deck& deck, const Comm& comm, const std::optional<std::string>& restart);
  TrainOutcome run();

 private:
  void restore(const std::string& path);
  // `whole_params`: the parameters already gathered by gather_whole (rank 0) for something else, to
  // save gathering twice when rank 0 writes alone (serial HDF5: only then does the checkpoint gather).
  std::string save_checkpoint(const ModelWeights* whole_params = nullptr);
  std::string describe_run_setup() const;
  StepStats accumulate(int phase);
  double validation_loss();
  void log_progress(const StepStats& st, double lr, double grad_norm, double window_s, std::int64_t window_steps);
  void append_metrics(const std::string& line);
  // The last checkpoint, the Hugging Face export (each stage writes its shard) and the sample.
  void finish();
  // The whole model on rank 0 from the stages of replica 0 (tensor by tensor); every rank calls it.
  // Without pipeline stages every rank holds the whole model already and gets `part` back.
  // `sharded`: part holds this rank's ZeRO-1 share (AdamW moments), so tensor i comes from replica i % dp.
  ModelWeights gather_whole(const ModelWeights& part, bool sharded = false);
  double grad_norm();

  Deck& deck_;
  const Comm& comm_;
  ModelConfig config_;
  TrainConfig run_;
  RankLayout layout_;
  Comm pipe_comm_, dp_comm_, embed_comm_;  // a replica's stages; a stage's replicas; first + last stage (tied)
  std::optional<WatchdogScope> watchdog_;  // parallel/timeout over the waits on other ranks (more than one rank)
  bool sum_embedding_ = false;             // tied embeddings split over the first and last stage
  std::string name_, output_dir_, checkpoint_dir_, metrics_path_;
  std::string matrix_products_;  // what computes them, on each rank (describe_per_rank)
  std::string run_setup_;        // describe_run_setup(): written into each checkpoint, compared on restart
  std::uint64_t seed_;
  std::int64_t progress_interval_, eval_interval_, eval_batches_, checkpoint_interval_, keep_last_;
  bool skip_nonfinite_;
  ModelWeights params_, grads_;
  AdamW adam_;
  LrSchedule schedule_;
  std::shared_ptr<GpuComms> gpu_comms_;  // bf16 with NCCL: the GPU communicators of pipe/dp/embed_comm_
  // train/recompute and train/logits_chunk_tokens (either precision); bf16: also job/gpu_kernels and
  // parallel/overlap_allreduce.
  DeviceNetworkOptions device_options_;
  std::unique_ptr<StageNetwork> net_;     // this rank's stage: fp32 Kokkos network, or the bf16 device network
  std::unique_ptr<DataSampler> train_data_;                       // pretrain
  std::vector<data::ChatExample> sft_, sft_validation_;           // sft
  std::vector<data::PreferenceExample> pairs_, pairs_validation_;  // dpo
  std::unique_ptr<data::ExampleOrder> order_;                     // sft, dpo
  ModelWeights ref_params_;                                       // dpo: the frozen reference
  std::unique_ptr<StageNetwork> ref_net_;
  std::unique_ptr<Pipeline> pipeline_, ref_pipeline_;  // ref: DPO's frozen reference
  double window_idle_ = 0, window_busy_ = 0;  // pipeline seconds over the steps since the last progress line
  std::size_t bucket_floats_ = 0;             // parallel/bucket_mb in floats
  bool zero1_ = false;                        // AdamW moments sharded over the replicas: tensor i on replica i % dp
  bool overlap_allreduce_ = true;             // gradient buckets start during the last backward pass
  double dpo_beta_ = 0.1, dpo_smoothing_ = 0;
  std::int64_t rows_ = 0;  // sequences per micro-batch (2 x micro_batch_size for DPO: chosen, then rejected)
  IntView2 ids_;
  IntView1 targets_;
  std::vector<std::int32_t> tokens_;
  std::int64_t step_ = 0, tokens_seen_ = 0, skipped_steps_ = 0;
  double flops_per_token_ = 0, peak_gflops_ = 0;
  std::string last_checkpoint_;
  std::int64_t last_checkpoint_step_ = -1;
  std::optional<io::Tokenizer> tokenizer_;
  std::string model_source_;
};

Trainer::Trainer(Deck& deck, const Comm& comm, const std::optional<std::string>& restart)
    : deck_(deck),
      comm_(comm),
      config_(ModelConfig::from_deck(deck)),
      run_(TrainConfig::from_deck(deck, config_, comm.size())),
      layout_(make_layout(config_, int(run_.pipeline_stages), int(run_.data_parallel), comm.rank(), run_.stage_layers)),
      adam_(config_, AdamWSettings{run_.beta1, run_.beta2, run_.eps, run_.weight_decay}, layout_.span()),
      schedule_(LrSchedule::from(run_)) {
  if (comm_.size() > 1) {
    char where[160];
    std::snprintf(where, sizeof where, "rank %d (pipeline stage %d, data-parallel replica %d)", comm_.rank(),
                  layout_.stage, layout_.replica);
    watchdog_.emplace(deck.get_real("parallel", "timeout"), where);
  }
  // Every rank of the job calls each split, in the same order.
  pipe_comm_ = comm_.split(layout_.replica, layout_.stage);
  dp_comm_ = comm_.split(layout_.stage, layout_.replica);
  sum_embedding_ = layout_.stages > 1 && config_.tie_word_embeddings;
  embed_comm_ = comm_.split(sum_embedding_ && (layout_.first() || layout_.last()) ? layout_.replica
                                                                                   : layout_.replicas + comm_.rank(),
                            layout_.stage);
  const std::string communication = deck.get_string("parallel", "communication");
  overlap_allreduce_ = deck.get_bool("parallel", "overlap_allreduce");
  device_options_.recompute = deck.get_bool("train", "recompute");
  device_options_.logits_chunk = deck.get_int("train", "logits_chunk_tokens");
  if (run_.precision == "bf16") {
    check_devices(deck, run_);
    const std::string no_nccl = gpu_comms_unavailable();
    // auto: NCCL when the build has it and there is traffic (more than one rank).
    if (comm_.size() > 1 && (communication == "nccl" || (communication == "auto" && no_nccl.empty())))
      gpu_comms_ = make_gpu_comms(pipe_comm_, dp_comm_, embed_comm_);
    device_options_.kernels = gpu_kernels_from(deck.get_string("job", "gpu_kernels"));
    device_options_.overlap_sums = overlap_allreduce_;
    net_ = make_device_network(config_, run_.load_balance_coef, run_.z_loss_coef, layout_.span(), gpu_comms_,
                               device_options_);
    log::info("bf16 training on %s (%s kernels); stage boundaries and gradient sums %s",
              device_training_description().c_str(), deck.get_string("job", "gpu_kernels").c_str(),
              comm_.size() == 1 ? "local (one rank)" : gpu_comms_ ? "GPU to GPU (NCCL)" : "through host memory (MPI)");
  } else {  // (train/precision = fp32 with parallel/communication = nccl is refused by TrainConfig)
    net_ = std::make_unique<Network<float>>(config_, run_.load_balance_coef, run_.z_loss_coef,
                                            device_options_.recompute, layout_.span(), device_options_.logits_chunk);
  }
  pipeline_ = std::make_unique<Pipeline>(pipe_comm_, *net_, layout_.stage, layout_.stages);
  zero1_ = deck.get_bool("parallel", "zero1") && layout_.replicas > 1;
  if (zero1_) {
    const std::size_t dp = std::size_t(layout_.replicas), mine = std::size_t(layout_.replica);
    adam_.shard([dp, mine](std::size_t i, const std::string&) { return i % dp == mine; });
  }
  bucket_floats_ = std::max<std::size_t>(1, std::size_t(deck.get_real("parallel", "bucket_mb") * 1e6 / sizeof(float)));
  name_ = deck.get_string("job", "name");
  seed_ = std::uint64_t(deck.get_int("job", "seed"));
  output_dir_ = deck.get_string("job", "output_dir");
  checkpoint_dir_ = resolve(output_dir_, deck.get_string("checkpoint", "dir"));
  metrics_path_ = (fs::path(output_dir_) / "metrics.jsonl").string();
  progress_interval_ = deck.get_int("job", "progress_interval");
  eval_interval_ = deck.get_int("train", "eval_interval");
  eval_batches_ = deck.get_int("train", "eval_batches");
  checkpoint_interval_ = deck.get_int("checkpoint", "interval");
  keep_last_ = deck.get_int("checkpoint", "keep_last");
  skip_nonfinite_ = deck.get_string("train", "nonfinite_loss") == "skip";

  const bool chat = run_.mode != "pretrain";
  tokenizer_ = load_tokenizer(deck, config_, /*required=*/chat);
  // Data first: the cheapest thing to get wrong (missing prepare step, vocabulary mismatch, bad lines).
  rows_ = run_.mode == "dpo" ? 2 * run_.micro_batch_size : run_.micro_batch_size;
  if (!chat) {
    train_data_ = std::make_unique<DataSampler>(deck.get_string("data", "dir"), Split::Train, run_.seq_len + 1,
                                                config_.vocab_size, deck_weights(deck, "phase1_mixture"),
                                                deck_weights(deck, "phase2_mixture"), seed_);
  } else {
    const auto file = deck.find_string("data", "chat_train");
    if (!file) deck.fail_value("data", "chat_train", "train/mode = " + run_.mode + " needs a jsonl file of " +
                                                         (run_.mode == "sft" ? "conversations" : "preference pairs"));
    const auto validation = deck.find_string("data", "chat_validation");
    data::ChatReadReport report;
    std::int64_t examples = 0;
    if (run_.mode == "sft") {
      sft_ = data::read_sft_jsonl(*file, *tokenizer_, run_.seq_len, &report);
      if (validation) sft_validation_ = data::read_sft_jsonl(*validation, *tokenizer_, run_.seq_len);
      examples = std::int64_t(sft_.size());
    } else {
      pairs_ = data::read_preference_jsonl(*file, *tokenizer_, run_.seq_len, &report);
      if (validation) pairs_validation_ = data::read_preference_jsonl(*validation, *tokenizer_, run_.seq_len);
      examples = std::int64_t(pairs_.size());
      dpo_beta_ = deck.get_real("dpo", "beta");
      dpo_smoothing_ = deck.get_real("dpo", "label_smoothing");
    }
    order_ = std::make_unique<data::ExampleOrder>(examples, seed_);
    const double per_step = double(run_.micro_batch_size * run_.grad_accum_steps);
    log::info("data: %s: %lld %s (%lld lines, %lld cut at %lld tokens, %lld dropped without a response token); "
              "%lld steps = %.2f epochs",
              file->c_str(), (long long)examples, run_.mode == "sft" ? "conversations" : "preference pairs",
              (long long)report.lines, (long long)report.truncated, (long long)run_.seq_len,
              (long long)report.dropped, (long long)run_.total_steps,
              double(run_.total_steps) * per_step / double(examples));
  }

  {
    LoadedModel initial = load_model(deck);
    if (layout_.span().whole(config_)) {
      params_ = std::move(initial.weights);
    } else {  // this stage's part; the rest is freed here
      params_ = ModelWeights(config_, false, layout_.span());
      copy_span(config_, initial.weights, params_);
    }
    model_source_ = initial.source;
  }
  grads_ = ModelWeights(config_, /*zeros=*/true, layout_.span());
  if (run_.mode == "dpo") {
    // The reference is the starting model (model/weights), frozen: a copy that restarts reload the same way.
    ref_params_ = ModelWeights(config_, false, layout_.span());
    copy_weights(config_, params_, ref_params_);
    // The frozen reference runs as the policy does (bf16 on the GPU, or the fp32 network).
    if (run_.precision == "bf16")
      ref_net_ = make_device_network(config_, 0.0, 0.0, layout_.span(), gpu_comms_, forward_only(device_options_));
    else
      ref_net_ = std::make_unique<Network<float>>(config_, 0.0, 0.0, false, layout_.span(), device_options_.logits_chunk);
    ref_pipeline_ = std::make_unique<Pipeline>(pipe_comm_, *ref_net_, layout_.stage, layout_.stages);
  }
  ids_ = IntView2("ids", rows_, run_.seq_len);
  targets_ = IntView1("targets", rows_ * run_.seq_len);

  // Until the checks below and the restore pass, a failure takes away the directories made here.
  io::OutputDirectory made_output, made_checkpoints;
  if (comm_.is_root()) {  // rank 0 writes every file of the run
    made_output = io::OutputDirectory(output_dir_, deck.describe_key("job", "output_dir"));
    made_checkpoints = io::OutputDirectory(checkpoint_dir_, deck.describe_key("checkpoint", "dir"));
    // A fresh run does not mix its checkpoints with an earlier run's: an error before anything is
    // written, or with checkpoint/overwrite those are deleted first.
    const std::vector<std::string> earlier = restart ? std::vector<std::string>() : checkpoints_in(checkpoint_dir_);
    if (!earlier.empty() && !deck.get_bool("checkpoint", "overwrite"))
      fail(ErrorKind::Input, checkpoint_dir_ + " already holds " + std::to_string(earlier.size()) +
                                 " checkpoint(s) of an earlier run (the latest " + earlier.back() +
                                 "): continue it with -r, give another job/output_dir or checkpoint/dir, or set "
                                 "checkpoint/overwrite = true to delete them");
    for (const std::string& c : earlier) {
      std::error_code ec;
      fs::remove(c, ec);
      if (ec) fail(ErrorKind::Input, c + ": cannot delete an earlier run's checkpoint: " + ec.message());
      log::info("checkpoint/overwrite: deleted the earlier run's %s", c.c_str());
    }
  }
  // What computes the matrix products, on every rank (a job may span nodes of different kinds).
  matrix_products_ = describe_per_rank(comm_.all_gather(run_.precision == "bf16"
                                                            ? cuda_kernels_description(deck.get_string("job", "gpu_kernels"))
                                                            : matrix_products_description()));
  run_setup_ = describe_run_setup();
  if (restart) restore(*restart);
  else if (comm_.is_root()) io::write_text_atomically(metrics_path_, "");
  made_checkpoints.keep();
  made_output.keep();
  if (comm_.is_root())
    io::write_text_atomically((fs::path(output_dir_) / (name_ + ".deck")).string(),
                              deck.effective_text("effective deck of run '" + name_ + "'"));

  flops_per_token_ = training_flops_per_token(config_, run_.seq_len);
  const double peak = deck.get_real("job", "peak_gflops");
  peak_gflops_ = peak > 0 ? peak : comm_.sum(measure_gemm_gflops()) / double(comm_.size());
  log::info("weights: %s", model_source_.c_str());
  if (comm_.size() > 1) {
    const double p = double(layout_.stages), m = double(run_.grad_accum_steps);
    log::info("parallel: %d rank(s) = %d pipeline stage(s) x %d data-parallel replica(s)", comm_.size(), layout_.stages,
              layout_.replicas);
    if (layout_.stages > 1)
      log::info("pipeline: %s; 1F1B over %lld micro-batches per step (ideal bubble (p-1)/(m+p-1) = %.1f%%)",
                layout_.describe().c_str(), (long long)run_.grad_accum_steps, 100.0 * (p - 1) / (m + p - 1));
  }
  if (train_data_) {
    log::info("data:");
    log::text(train_data_->describe());
  }
  log::info("run: %lld steps of %lld tokens (%lld sequences x %lld tokens x %lld accumulation), %s schedule in %s, "
            "peak lr %g",
            (long long)run_.total_steps, (long long)run_.global_batch_tokens, (long long)run_.micro_batch_size,
            (long long)run_.seq_len, (long long)run_.grad_accum_steps, run_.schedule.c_str(),
            run_.schedule_unit.c_str(), run_.lr);
  if (run_.precision != "bf16") log::info("matrix products: %s", matrix_products_.c_str());
  log::info("MFU reference: %.1f GFLOP/s (%s); %.3f GFLOP per trained token", peak_gflops_,
            peak > 0 ? "job/peak_gflops" : "measured 1024^3 SGEMM, mean over ranks", flops_per_token_ / 1e9);
  // Each stage's activation memory as its own network arranged it (rank 0 prints every stage's line).
  for (int p = 0; p < layout_.stages; ++p) {
    std::string line = layout_.stage == p ? net_->memory_summary(rows_, run_.seq_len) : std::string();
    if (layout_.stages > 1) pipe_comm_.broadcast(line, p);
    log::info("memory%s: %s", layout_.stages > 1 ? (" of stage " + std::to_string(p)).c_str() : "", line.c_str());
  }
}

StepStats Trainer::accumulate(int phase) {
  // Every rank draws the whole step of all data-parallel ranks (the same stream everywhere, so the data
  // position in a checkpoint does not depend on the layout) and trains on its own slice: micro-batches
  // rank * accum ... (rank + 1) * accum - 1 of the step.
  const std::int64_t B = run_.micro_batch_size, T = run_.seq_len, accum = run_.grad_accum_steps;
  const std::int64_t dp = run_.data_parallel, first = std::int64_t(layout_.replica) * accum, all = accum * dp;
  StepStats st;
  // The sums over the stage's replicas start during the last micro-batch's backward pass.
  std::optional<GradientReducer> reducer;
  if (dp > 1 && !net_->sums_gradients()) reducer.emplace(dp_comm_, config_, grads_.named(config_), bucket_floats_);
  GradientReducer* const overlap = reducer && overlap_allreduce_ ? &*reducer : nullptr;
  auto upload = [&](const std::vector<std::int32_t>& ids, const std::vector<std::int32_t>& targets) {
    auto hi = Kokkos::create_mirror_view(ids_);
    auto ht = Kokkos::create_mirror_view(targets_);
    for (std::size_t i = 0; i < ids.size(); ++i) hi.data()[i] = ids[i], ht(i) = targets[i];
    Kokkos::deep_copy(ids_, hi);
    Kokkos::deep_copy(targets_, ht);
  };
  if (run_.mode == "pretrain") {
    tokens_.clear();
    {
      Region data("data");
      train_data_->next(B * all, phase, tokens_);
    }
    std::vector<std::int32_t> slice;
    const MicroBatchSource load = [&](std::int64_t m) {
      const auto begin = tokens_.begin() + std::ptrdiff_t((first + m) * B * (T + 1));
      slice.assign(begin, begin + std::ptrdiff_t(B * (T + 1)));
      split_sequences(slice, B, T, ids_, targets_);
      // Every target counts in pretraining: the global mean over B*T*accum*dp tokens.
      return MicroBatch{ids_, targets_, 1.0 / double(B * T * all), {}};
    };
    const LossTerms t = pipeline_->train(params_, grads_, accum, load, 1.0 / double(all), overlap);
    st.ce_sum += t.ce_sum, st.count += t.count, st.switch_loss += t.switch_loss, st.z_loss += t.z_loss;
  } else if (run_.mode == "sft") {
    // Draw the whole step first: the loss is the mean over every assistant token of the global batch.
    std::vector<std::vector<std::int32_t>> ids(static_cast<std::size_t>(all)), targets(static_cast<std::size_t>(all));
    std::int64_t total = 0;
    for (std::int64_t m = 0; m < all; ++m) {
      std::vector<const data::ChatExample*> batch;
      for (std::int64_t b = 0; b < B; ++b) batch.push_back(&sft_[std::size_t(order_->next())]);
      data::pad_batch(batch, T, tokenizer_->pad_id(), ids[std::size_t(m)], targets[std::size_t(m)]);
      for (std::int32_t y : targets[std::size_t(m)]) total += y != ignore_index;
    }
    const MicroBatchSource load = [&](std::int64_t m) {
      upload(ids[std::size_t(first + m)], targets[std::size_t(first + m)]);
      return MicroBatch{ids_, targets_, 1.0 / double(std::max<std::int64_t>(1, total)), {}};
    };
    const LossTerms t = pipeline_->train(params_, grads_, accum, load, 1.0 / double(all), overlap);
    st.ce_sum += t.ce_sum, st.count += t.count, st.switch_loss += t.switch_loss, st.z_loss += t.z_loss;
  } else {  // dpo
    const double pairs = double(B * all);
    std::vector<std::int64_t> picks;
    for (std::int64_t i = 0; i < B * all; ++i) picks.push_back(order_->next());
    // This replica's micro-batches: B chosen then B rejected sequences each.
    std::vector<std::vector<std::int32_t>> ids(static_cast<std::size_t>(accum)), targets(static_cast<std::size_t>(accum));
    for (std::int64_t m = 0; m < accum; ++m) {
      std::vector<const data::ChatExample*> batch(std::size_t(2 * B));
      for (std::int64_t b = 0; b < B; ++b) {
        const data::PreferenceExample& p = pairs_[std::size_t(picks[std::size_t((first + m) * B + b)])];
        batch[std::size_t(b)] = &p.chosen;
        batch[std::size_t(B + b)] = &p.rejected;
      }
      data::pad_batch(batch, T, tokenizer_->pad_id(), ids[std::size_t(m)], targets[std::size_t(m)]);
    }
    // Sequence log-probabilities: minus the summed token cross-entropies over the response.
    auto sequence_logp = [&](const std::vector<double>& rows) {
      std::vector<double> lp(std::size_t(2 * B), 0.0);
      for (std::size_t i = 0; i < rows.size(); ++i) lp[i / std::size_t(T)] -= rows[i];
      return lp;
    };
    // The frozen reference first (its log-probabilities, on the last stage), then the policy.
    std::vector<std::vector<double>> ref(static_cast<std::size_t>(accum));
    {
      Region region("reference");
      ref_pipeline_->evaluate(ref_params_, accum, [&](std::int64_t m) {
        upload(ids[std::size_t(m)], targets[std::size_t(m)]);
        MicroBatch mb{ids_, targets_, 1.0, {}};
        mb.weigh = [&ref, &sequence_logp, m](const std::vector<double>& rows, std::vector<double>&) {
          ref[std::size_t(m)] = sequence_logp(rows);
        };
        return mb;
      });
    }
    const LossTerms t = pipeline_->train(
        params_, grads_, accum,
        [&](std::int64_t m) {
          upload(ids[std::size_t(m)], targets[std::size_t(m)]);
          MicroBatch mb{ids_, targets_, 1.0, {}};
          mb.weigh = [&, m](const std::vector<double>& rows, std::vector<double>& w) {
            const std::vector<double> pol = sequence_logp(rows);
            const std::vector<double>& r = ref[std::size_t(m)];
            for (std::int64_t b = 0; b < B; ++b) {
              const DpoPair pair = dpo_pair(pol[std::size_t(b)], pol[std::size_t(B + b)], r[std::size_t(b)],
                                            r[std::size_t(B + b)], dpo_beta_, dpo_smoothing_);
              st.dpo.add(pair);
              // d loss / d row_loss = -(d loss / d logp) on the response tokens of each sequence.
              for (std::int64_t pos = 0; pos < T; ++pos) {
                w[std::size_t(b * T + pos)] = -pair.d_chosen / pairs;
                w[std::size_t((B + b) * T + pos)] = -pair.d_rejected / pairs;
              }
            }
          };
          return mb;
        },
        1.0 / double(all), overlap);
    st.ce_sum += t.ce_sum, st.count += t.count, st.switch_loss += t.switch_loss, st.z_loss += t.z_loss;
  }
  if (reducer) {
    Region region("allreduce");
    WatchdogSection wait("the gradient sums over the replicas (MPI)");
    reducer->finish();
  }
  if (sum_embedding_ && (layout_.first() || layout_.last()) && !net_->sums_gradients()) {
    // The tied embedding's two copies: the gradient of the embedding (first stage) plus that of the head
    // (last stage), on both, so both copies take the same update.
    Region region("allreduce");
    WatchdogSection wait("the tied embedding's gradient sum between the first and last stage (MPI)");
    std::vector<NamedTensor> embedding = grads_.named(config_);
    embedding.resize(1);  // model.embed_tokens.weight comes first
    sum_gradients(embed_comm_, embedding, bucket_floats_);
  }
  if (comm_.size() > 1) {  // the loss terms live on the ranks that computed them: sums over the job
    double sums[8] = {st.ce_sum, st.switch_loss, st.z_loss, st.dpo.loss, st.dpo.accuracy, st.dpo.margin,
                      st.dpo.chosen_reward, st.dpo.rejected_reward};
    comm_.sum_in_place(sums, 8);
    st.ce_sum = sums[0], st.switch_loss = sums[1], st.z_loss = sums[2], st.dpo.loss = sums[3];
    st.dpo.accuracy = sums[4], st.dpo.margin = sums[5], st.dpo.chosen_reward = sums[6], st.dpo.rejected_reward = sums[7];
    st.count = comm_.sum(st.count);
    st.dpo.pairs = comm_.sum(st.dpo.pairs);
  }
  st.switch_loss /= double(all), st.z_loss /= double(all);
  return st;
}

TrainOutcome Trainer::run() {
  const std::int64_t step_tokens = rows_ * run_.seq_len * run_.grad_accum_steps * run_.data_parallel;
  const std::int64_t first_step = step_;
  if (first_step >= run_.total_steps) {
    log::info("the checkpoint is already at step %lld of %lld: nothing to train", (long long)step_,
              (long long)run_.total_steps);
    finish();
    return TrainOutcome::Finished;
  }
  const bool evaluate = eval_interval_ > 0 && (run_.mode == "pretrain" || !sft_validation_.empty() || !pairs_validation_.empty());
  log::info("training from step %lld to %lld", (long long)first_step, (long long)run_.total_steps);
  if (evaluate && first_step == 0) {
    const double v = validation_loss();
    log::info("step 0: validation loss %.4f", v);
    append_metrics("{\"type\": \"eval\", \"step\": 0, \"tokens\": 0, \"val_loss\": " + json_number(v, 9) + "}");
  }
  auto window_start = Clock::now();
  std::int64_t window_steps = 0;
  const auto run_start = Clock::now();
  while (step_ < run_.total_steps) {
    const std::int64_t position = run_.schedule_unit == "tokens" ? tokens_seen_ : step_;
    const double lr = schedule_.lr(position);
    const int phase = schedule_.phase(position);
    zero_gradients(config_, grads_);
    StepStats st;
    pipeline_->reset_times();
    {
      Region region("step");
      st = accumulate(phase);
    }
    double pipeline_idle = 0;  // the step's measured bubble: waiting time / (waiting + computing), all stages
    if (layout_.stages > 1) {
      const double idle = comm_.sum(pipeline_->times().idle), busy = comm_.sum(pipeline_->times().busy);
      pipeline_idle = idle / std::max(idle + busy, 1e-12);
      window_idle_ += idle, window_busy_ += busy;
    }
    const DpoStats dpo = st.dpo.mean();
    const double loss = run_.mode == "dpo" ? dpo.loss : st.ce();
    const double grad_norm = this->grad_norm();
    const bool finite = std::isfinite(loss) && std::isfinite(st.switch_loss) && std::isfinite(st.z_loss) &&
                        std::isfinite(grad_norm);
    if (!finite) {
      const std::string what = "non-finite " + std::string(std::isfinite(loss) ? "gradient norm" : "loss") + " (loss " +
                               fmt_g(loss) + ", grad norm " + fmt_g(grad_norm) + ") at step " + std::to_string(step_ + 1);
      if (!skip_nonfinite_)
        fail(ErrorKind::Numerics, what + "; stopping (train/nonfinite_loss = skip skips such steps)" +
                                      (last_checkpoint_.empty() ? "" : "; the last checkpoint is " + last_checkpoint_));
      ++skipped_steps_;
      log::warn("%s: step skipped, parameters unchanged (%lld skipped so far)", what.c_str(), (long long)skipped_steps_);
    } else {
      const double factor = clip_factor(grad_norm, run_.grad_clip);
      if (factor < 1.0) scale_gradients(config_, grads_, factor);
      adam_.step(params_, grads_, lr);
      if (zero1_) {  // each replica updated its share: the others get it from there
        Region region("zero1_broadcast");
        const auto tensors = params_.named_all(config_);
        const auto owner = [&](std::size_t i) { return int(i % std::size_t(layout_.replicas)); };
        if (gpu_comms_ && !host_memory) {  // Kokkos' views are GPU memory: GPU to GPU by NCCL, one group
          std::vector<std::pair<float*, std::size_t>> parts;
          std::vector<int> owners;
          for (std::size_t i = 0; i < tensors.size(); ++i) {
            if (tensors[i].flat.data() == nullptr) continue;
            parts.emplace_back(tensors[i].flat.data(), tensors[i].flat.size());
            owners.push_back(owner(i));
          }
          Kokkos::fence();  // the optimizer's kernels wrote them
          broadcast_from_owners(*gpu_comms_, parts, owners);
        } else {
          for (std::size_t i = 0; i < tensors.size(); ++i) {
            if (tensors[i].flat.data() == nullptr) continue;
            auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), tensors[i].flat);
            dp_comm_.broadcast(h.data(), h.size(), owner(i));
            Kokkos::deep_copy(tensors[i].flat, h);
          }
        }
      }
    }
    ++step_;
    tokens_seen_ += step_tokens;
    ++window_steps;
    {
      const auto num = [](double v) { return json_number(v, 9); };
      std::ostringstream line;
      line << "{\"type\": \"train\", \"step\": " << step_ << ", \"tokens\": " << tokens_seen_
           << ", \"loss\": " << num(loss + run_.load_balance_coef * st.switch_loss + run_.z_loss_coef * st.z_loss)
           << ", \"ce\": " << num(st.ce()) << ", \"switch\": " << num(st.switch_loss) << ", \"z\": " << num(st.z_loss);
      if (run_.mode == "dpo")
        line << ", \"dpo_loss\": " << num(dpo.loss) << ", \"reward_accuracy\": " << num(dpo.accuracy)
             << ", \"reward_margin\": " << num(dpo.margin) << ", \"chosen_reward\": " << num(dpo.chosen_reward)
             << ", \"rejected_reward\": " << num(dpo.rejected_reward);
      line << ", \"lr\": " << num(lr) << ", \"grad_norm\": " << num(grad_norm) << ", \"phase\": " << phase
           << ", \"skipped\": " << (finite ? "false" : "true");
      if (layout_.stages > 1) line << ", \"pipeline_idle\": " << json_number(pipeline_idle, 6);
      line << ", \"elapsed_s\": " << json_number(seconds_since(run_start), 6) << "}";
      append_metrics(line.str());
    }
    if (step_ % progress_interval_ == 0 || step_ == run_.total_steps || step_ == first_step + 1) {
      log_progress(st, lr, grad_norm, seconds_since(window_start), window_steps);
      window_start = Clock::now();
      window_steps = 0;
    }
    if (evaluate && (step_ % eval_interval_ == 0 || step_ == run_.total_steps)) {
      const double v = validation_loss();
      log::info("step %lld: validation loss %.4f", (long long)step_, v);
      append_metrics("{\"type\": \"eval\", \"step\": " + std::to_string(step_) + ", \"tokens\": " +
                     std::to_string(tokens_seen_) + ", \"val_loss\": " + json_number(v, 9) + "}");
      window_start = Clock::now();  // keep evaluation out of the training throughput
      window_steps = 0;
    }
    if (checkpoint_interval_ > 0 && step_ % checkpoint_interval_ == 0 && step_ < run_.total_steps) save_checkpoint();
    // A signal may reach the ranks at different steps: they stop together after the first rank saw one.
    if (comm_.max(stop_requested() ? 1 : 0) != 0) {
      const std::string path = save_checkpoint();
      log::info("stop requested (signal): checkpoint %s written at step %lld of %lld; continue with -r %s",
                path.c_str(), (long long)step_, (long long)run_.total_steps, path.c_str());
      return TrainOutcome::Stopped;
    }
  }
  finish();
  return TrainOutcome::Finished;
}

void Trainer::log_progress(const StepStats& st, double lr, double grad_norm, double window_s,
                           std::int64_t window_steps) {
  const double step_tokens = double(rows_ * run_.seq_len * run_.grad_accum_steps * run_.data_parallel);
  const double tokens_per_s = double(window_steps) * step_tokens / std::max(window_s, 1e-9);
  const double mfu = tokens_per_s * flops_per_token_ / (peak_gflops_ * 1e9 * double(comm_.size()));
  const double eta = double(run_.total_steps - step_) * window_s / double(std::max<std::int64_t>(1, window_steps));
  const double aux = run_.load_balance_coef * st.switch_loss + run_.z_loss_coef * st.z_loss;
  char head[160];
  if (run_.mode == "dpo") {
    const DpoStats d = st.dpo.mean();
    std::snprintf(head, sizeof head, "dpo loss %.4f | reward acc %.3f margin %.4f (chosen %.4f, rejected %.4f)", d.loss,
                  d.accuracy, d.margin, d.chosen_reward, d.rejected_reward);
  } else {
    std::snprintf(head, sizeof head, "loss %.4f", st.ce());
  }
  std::string bubble;
  if (layout_.stages > 1) {  // measured: the share of the stages' time spent waiting for a neighbour
    char buf[48];
    std::snprintf(buf, sizeof buf, " | bubble %.1f%%", 100.0 * window_idle_ / std::max(window_idle_ + window_busy_, 1e-12));
    bubble = buf;
    window_idle_ = window_busy_ = 0;
  }
  log::info("step %*lld/%lld | %s | aux %.4f (switch %.3f, z %.3f) | lr %.3e | grad norm %.3f | %.0f tok/s | "
            "MFU %.1f%%%s | ETA %s",
            int(std::to_string(run_.total_steps).size()), (long long)step_, (long long)run_.total_steps, head, aux,
            st.switch_loss, st.z_loss, lr, grad_norm, tokens_per_s, 100.0 * mfu, bubble.c_str(),
            format_duration(eta).c_str());
}

void Trainer::append_metrics(const std::string& line) {
  if (!comm_.is_root()) return;
  std::ofstream out(metrics_path_, std::ios::app);
  out << line << "\n";
  if (!out) fail(ErrorKind::Input, metrics_path_ + ": cannot append to the metrics file");
}

double Trainer::validation_loss() {
  Region region("validation");
  const std::int64_t B = run_.micro_batch_size, T = run_.seq_len;
  double ce_sum = 0;
  std::int64_t count = 0;
  std::vector<std::int32_t> ids, targets;
  auto upload = [&]() {
    auto hi = Kokkos::create_mirror_view(ids_);
    auto ht = Kokkos::create_mirror_view(targets_);
    for (std::size_t i = 0; i < ids.size(); ++i) hi.data()[i] = ids[i], ht(i) = targets[i];
    Kokkos::deep_copy(ids_, hi);
    Kokkos::deep_copy(targets_, ht);
  };
  if (run_.mode == "pretrain") {
    // A fresh sampler each time: the same validation sequences at every evaluation.
    DataSampler data(deck_.get_string("data", "dir"), Split::Validation, T + 1, config_.vocab_size,
                     deck_weights(deck_, "phase1_mixture"), deck_weights(deck_, "phase2_mixture"), seed_);
    std::vector<std::vector<std::int32_t>> mine;  // micro-batches shared out over the replicas
    for (std::int64_t i = 0; i < eval_batches_; ++i) {
      tokens_.clear();
      data.next(B, 1, tokens_);
      if (i % layout_.replicas == layout_.replica) mine.push_back(tokens_);
    }
    const LossTerms terms = pipeline_->evaluate(params_, std::int64_t(mine.size()), [&](std::int64_t i) {
      split_sequences(mine[std::size_t(i)], B, T, ids_, targets_);
      return MicroBatch{ids_, targets_, 1.0, {}};
    });
    ce_sum += terms.ce_sum, count += terms.count;
    return comm_.sum(ce_sum) / double(std::max<std::int64_t>(1, comm_.sum(count)));
  }
  if (run_.mode == "sft") {  // the first eval_batches micro-batches of the validation file, in order
    const std::size_t n = std::min(sft_validation_.size(), std::size_t(eval_batches_ * B));
    std::vector<std::size_t> mine;  // first examples of this replica's micro-batches
    for (std::size_t i = 0; i < n; i += std::size_t(B))
      if ((i / std::size_t(B)) % std::size_t(layout_.replicas) == std::size_t(layout_.replica)) mine.push_back(i);
    const LossTerms terms = pipeline_->evaluate(params_, std::int64_t(mine.size()), [&](std::int64_t k) {
      std::vector<const data::ChatExample*> batch;
      for (std::size_t j = 0; j < std::size_t(B); ++j)
        batch.push_back(&sft_validation_[(mine[std::size_t(k)] + j) % sft_validation_.size()]);
      data::pad_batch(batch, T, tokenizer_->pad_id(), ids, targets);
      upload();
      return MicroBatch{ids_, targets_, 1.0, {}};
    });
    ce_sum += terms.ce_sum, count += terms.count;
    return comm_.sum(ce_sum) / double(std::max<std::int64_t>(1, comm_.sum(count)));
  }
  // dpo: the DPO loss over the first eval_batches micro-batches of validation pairs
  DpoStats stats;
  const std::size_t n = std::min(pairs_validation_.size(), std::size_t(eval_batches_ * B));
  std::vector<std::size_t> mine;  // first pairs of this replica's micro-batches
  for (std::size_t i = 0; i < n; i += std::size_t(B))
    if ((i / std::size_t(B)) % std::size_t(layout_.replicas) == std::size_t(layout_.replica)) mine.push_back(i);
  // Reference, then policy sequence log-probabilities per micro-batch (on the last stage).
  std::vector<std::vector<double>> lp[2];
  for (int which = 0; which < 2; ++which) {
    lp[which].assign(mine.size(), std::vector<double>(std::size_t(2 * B), 0.0));
    Pipeline& pipe = which == 0 ? *ref_pipeline_ : *pipeline_;
    pipe.evaluate(which == 0 ? ref_params_ : params_, std::int64_t(mine.size()), [&, which](std::int64_t k) {
      std::vector<const data::ChatExample*> batch(std::size_t(2 * B));
      for (std::size_t j = 0; j < std::size_t(B); ++j) {
        const auto& p = pairs_validation_[(mine[std::size_t(k)] + j) % pairs_validation_.size()];
        batch[j] = &p.chosen;
        batch[std::size_t(B) + j] = &p.rejected;
      }
      data::pad_batch(batch, T, tokenizer_->pad_id(), ids, targets);
      upload();
      MicroBatch mb{ids_, targets_, 1.0, {}};
      mb.weigh = [&lp, which, k, T](const std::vector<double>& rows, std::vector<double>&) {
        std::vector<double>& out = lp[which][std::size_t(k)];
        for (std::size_t r = 0; r < rows.size(); ++r) out[r / std::size_t(T)] -= rows[r];
      };
      return mb;
    });
  }
  if (layout_.last())
    for (std::size_t k = 0; k < mine.size(); ++k)
      for (std::size_t j = 0; j < std::size_t(B); ++j)
        stats.add(dpo_pair(lp[1][k][j], lp[1][k][std::size_t(B) + j], lp[0][k][j], lp[0][k][std::size_t(B) + j],
                           dpo_beta_, dpo_smoothing_));
  double sums[5] = {stats.loss, stats.accuracy, stats.margin, stats.chosen_reward, stats.rejected_reward};
  comm_.sum_in_place(sums, 5);
  stats.loss = sums[0], stats.accuracy = sums[1], stats.margin = sums[2], stats.chosen_reward = sums[3];
  stats.rejected_reward = sums[4], stats.pairs = comm_.sum(stats.pairs);
  const DpoStats m = stats.mean();
  log::info("validation: reward accuracy %.3f, margin %.4f over %lld pairs", m.accuracy, m.margin, (long long)m.pairs);
  return m.loss;
}

std::string Trainer::save_checkpoint(const ModelWeights* whole_params) {
  if (last_checkpoint_step_ == step_) return last_checkpoint_;
  Region region("checkpoint");
  WatchdogExempt io("writing a checkpoint");  // one rank may write while the others wait
  const auto t0 = Clock::now();
  // Tensors in GPU memory reach the host one at a time, as the writer gets to them (checkpoint_tensor).
  auto group = [&](const ModelWeights& w) { return checkpoint_tensors(config_, w); };
  CheckpointMeta meta;
  meta.step = step_;
  meta.tokens_seen = tokens_seen_;
  meta.rng_state = {seed_};
  meta.data_state = train_data_ ? train_data_->state() : std::vector<std::uint64_t>{order_->position()};
  meta.deck_text = deck_.effective_text("deck of run '" + name_ + "'");
  meta.model_config_json = hf_config_json(config_, "float32");
  meta.run_name = name_;
  meta.run_setup = run_setup_;
  meta.scalars["adam_steps"] = double(adam_.steps());
  meta.scalars["skipped_steps"] = double(skipped_steps_);
  meta.scalars["seq_len"] = double(run_.seq_len);
  meta.scalars["mode"] = run_.mode == "pretrain" ? 0.0 : run_.mode == "sft" ? 1.0 : 2.0;
  meta.scalars["global_batch_tokens"] = double(run_.global_batch_tokens);
  const std::string path = (fs::path(checkpoint_dir_) / checkpoint_name(step_)).string();
  meta.scalars["pipeline_stages"] = double(layout_.stages);  // informative: any layout restarts from it
  meta.scalars["data_parallel"] = double(layout_.replicas);
  if (checkpoint_writes_collectively() && comm_.size() > 1) {
    // Parallel HDF5: every rank writes the tensors it owns into the one file (a stage its layers,
    // replica 0 the parameters, each ZeRO-1 shard its moments); nothing is gathered.
    const auto owner_of = [&](std::size_t i, const std::string& name, bool sharded) {
      return layout_.world_rank(layout_.owner_stage(config_, name),
                                sharded && zero1_ ? int(i % std::size_t(layout_.replicas)) : 0);
    };
    // Every rank declares every tensor with its whole-model shape; a rank holds only its stage's
    // (others are empty views), so the shapes come from the parameters' owners.
    const auto params_all = params_.named_all(config_);
    std::vector<std::size_t> first_dim(params_all.size() + 1, 0);
    for (std::size_t i = 0; i < params_all.size(); ++i) first_dim[i + 1] = first_dim[i] + params_all[i].shape.size();
    std::vector<double> dims(first_dim.back(), 0.0);
    for (std::size_t i = 0; i < params_all.size(); ++i)
      if (owner_of(i, params_all[i].name, false) == comm_.rank())
        for (std::size_t d = 0; d < params_all[i].shape.size(); ++d) dims[first_dim[i] + d] = double(params_all[i].shape[d]);
    comm_.sum_in_place(dims.data(), dims.size());
    auto owned = [&](const ModelWeights& w, bool sharded) {
      std::vector<CheckpointTensor> out;
      const auto all = w.named_all(config_);
      JETMOE_ASSERT(all.size() == params_all.size(), "save_checkpoint: the moments list other tensors than the parameters");
      for (std::size_t i = 0; i < all.size(); ++i) {
        std::vector<std::int64_t> shape(params_all[i].shape.size());
        for (std::size_t d = 0; d < shape.size(); ++d) shape[d] = std::int64_t(dims[first_dim[i] + d]);
        if (owner_of(i, all[i].name, sharded) == comm_.rank()) {
          JETMOE_ASSERT(all[i].shape == shape, "save_checkpoint: " + all[i].name + " is not held by its owner");
          out.push_back(checkpoint_tensor(all[i]));
        } else {
          out.push_back(CheckpointTensor{all[i].name, shape, nullptr});
        }
      }
      return out;
    };
    write_checkpoint(comm_, path, meta,
                     {{"params", owned(params_, false)}, {"adam_m", owned(adam_.exp_avg(), true)},
                      {"adam_v", owned(adam_.exp_avg_sq(), true)}});
    if (comm_.is_root()) prune_checkpoints(checkpoint_dir_, int(keep_last_), step_);
  } else {
    // Serial HDF5: the stages (and ZeRO-1 shards) send rank 0 theirs and rank 0 writes, the others
    // wait. An error on rank 0 ends the job (the app frame aborts every rank).
    const ModelWeights params = whole_params ? ModelWeights() : gather_whole(params_),
                       m = gather_whole(adam_.exp_avg(), true), v = gather_whole(adam_.exp_avg_sq(), true);
    if (comm_.is_root()) {
      write_checkpoint(path, meta,
                       {{"params", group(whole_params ? *whole_params : params)}, {"adam_m", group(m)}, {"adam_v", group(v)}});
      prune_checkpoints(checkpoint_dir_, int(keep_last_), step_);
    }
  }
  comm_.barrier();
  if (comm_.is_root()) log::info("checkpoint %s (step %lld, %.1f MB, %.2f s)", path.c_str(), (long long)step_,
            double(fs::file_size(path)) / 1e6, seconds_since(t0));
  last_checkpoint_ = path;
  last_checkpoint_step_ = step_;
  return path;
}

// What this run's arithmetic depends on besides the model, the data and the keys a restart must keep
// (train/seq_len, train/global_batch_tokens): the same setup continues a run bit for bit, another one
// continues it with differences at the level of rounding. Kept out: what gives the same bits either way
// (train/recompute, parallel/zero1, parallel/overlap_allreduce, the Kokkos host backend and its threads;
// parallel/bucket_mb: Open MPI 4.1's sums over 3 and 4 replicas gave the same bits with buckets of
// 10 kB and of 25 MB, blocking or overlapped). The gradient sums over replicas are recorded: NCCL adds in its own order.
std::string Trainer::describe_run_setup() const {
  std::ostringstream s;
  s << "precision = " << run_.precision << "\n"
    << "layout = " << layout_.stages << " x " << layout_.replicas << " (pipeline stages x data-parallel replicas)\n"
    << "micro_batch_size = " << run_.micro_batch_size << "\n"
    << "logits_chunk_tokens = " << device_options_.logits_chunk << "\n"
    << "matrix products = " << matrix_products_ << "\n";
  if (layout_.replicas > 1) s << "gradient sums = " << (gpu_comms_ ? "NCCL" : "MPI") << "\n";
  return s.str();
}

void Trainer::restore(const std::string& path) {
  Region region("restore");
  WatchdogExempt io("reading a checkpoint");
  CheckpointReader reader(path);
  const CheckpointMeta& meta = reader.meta();
  auto expect_same = [&](const char* key, double ours) {
    const auto it = meta.scalars.find(key);
    if (it == meta.scalars.end() || it->second != ours)
      fail(ErrorKind::Input, path + ": the checkpoint was written with " + key + " = " +
                                 (it == meta.scalars.end() ? std::string("(missing)") : fmt_g(it->second, 12)) +
                                 ", this deck has " + fmt_g(ours, 12) +
                                 "; an exact restart needs the same value");
  };
  {
    const char* modes[] = {"pretrain", "sft", "dpo"};
    const auto it = meta.scalars.find("mode");
    const std::string theirs = it == meta.scalars.end() ? "pretrain" : modes[int(it->second) % 3];
    if (theirs != run_.mode)
      fail(ErrorKind::Input, path + ": a checkpoint of a " + theirs + " run cannot continue as train/mode = " +
                                 run_.mode + "; to start " + run_.mode + " from its weights, set model/weights = " +
                                 path + " instead of -r");
  }
  expect_same("seq_len", double(run_.seq_len));
  expect_same("global_batch_tokens", double(run_.global_batch_tokens));
  auto load = [&](const char* group, const ModelWeights& w) {
    for (const NamedTensor& t : w.named(config_)) {
      auto h = Kokkos::create_mirror_view(t.flat);
      reader.read(group, t.name, t.shape, h.data());
      Kokkos::deep_copy(t.flat, h);
    }
  };
  load("params", params_);
  load("adam_m", adam_.exp_avg());
  load("adam_v", adam_.exp_avg_sq());
  if (train_data_) {
    train_data_->restore(meta.data_state);
  } else {
    if (meta.data_state.size() != 1)
      fail(ErrorKind::Input, path + ": the checkpoint's data position is not one of " + run_.mode +
                                 " data (it holds " + std::to_string(meta.data_state.size()) + " values)");
    order_->set_position(meta.data_state[0]);
  }
  step_ = meta.step;
  tokens_seen_ = meta.tokens_seen;
  adam_.set_steps(std::int64_t(meta.scalars.count("adam_steps") ? meta.scalars.at("adam_steps") : double(meta.step)));
  skipped_steps_ = std::int64_t(meta.scalars.count("skipped_steps") ? meta.scalars.at("skipped_steps") : 0.0);
  last_checkpoint_ = path;
  last_checkpoint_step_ = step_;
  model_source_ = "checkpoint " + path;
  // The metrics file continues from the checkpoint: lines of later steps (a run that went further
  // before it stopped) are dropped, so the file reads as one uninterrupted run.
  std::string kept;
  {
    std::ifstream in(metrics_path_);
    std::string line;
    while (std::getline(in, line)) {
      const auto at = line.find("\"step\": ");
      if (at == std::string::npos) continue;
      if (std::stoll(line.substr(at + 8)) <= step_) kept += line + "\n";
    }
  }
  if (comm_.is_root()) io::write_text_atomically(metrics_path_, kept);
  log::info("restarted from %s: step %lld, %lld tokens seen", path.c_str(), (long long)step_, (long long)tokens_seen_);
  if (const std::string note = restart_setup_note(meta.run_setup, run_setup_); !note.empty()) log::info("%s", note.c_str());
}

ModelWeights Trainer::gather_whole(const ModelWeights& part, bool sharded) {
  sharded = sharded && zero1_;
  if (layout_.stages == 1 && !sharded) return part;
  Region region("gather");
  ModelWeights whole;
  if (comm_.is_root()) whole = ModelWeights(config_, /*zeros=*/true);
  const auto mine = part.named_all(config_);
  const auto all = whole.named_all(config_);
  std::vector<float> buffer;
  for (std::size_t i = 0; i < mine.size(); ++i) {
    const int owner = layout_.world_rank(layout_.owner_stage(config_, mine[i].name),
                                         sharded ? int(i % std::size_t(layout_.replicas)) : 0);
    if (comm_.rank() == owner && comm_.is_root()) {
      Kokkos::deep_copy(all[i].flat, mine[i].flat);
    } else if (comm_.rank() == owner) {
      auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), mine[i].flat);
      comm_.send(h.data(), h.size(), 0, 3);
    } else if (comm_.is_root()) {
      buffer.resize(all[i].flat.size());
      comm_.recv(buffer.data(), buffer.size(), owner, 3);
      Kokkos::deep_copy(all[i].flat, Kokkos::View<const float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(
                                         buffer.data(), buffer.size()));
    }
  }
  return whole;
}

double Trainer::grad_norm() {
  std::vector<NamedTensor> tensors = grads_.named(config_);
  if (sum_embedding_ && layout_.last())  // the head's copy of the embedding counts once, on the first stage
    tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                                 [](const NamedTensor& t) { return t.name == "model.embed_tokens.weight"; }),
                  tensors.end());
  double squares = grad_sum_of_squares(tensors);
  if (layout_.stages > 1) squares = pipe_comm_.sum(squares);
  return std::sqrt(squares);
}

void Trainer::finish() {
  const std::int64_t sample_tokens = deck_.get_int("train", "sample_tokens");
  const bool sample = sample_tokens > 0 && tokenizer_;
  // The whole model on one rank only for the sample (every rank holds the same deck and tokenizer, so
  // all call the gather or none). The checkpoint gathers by itself where rank 0 writes it alone.
  ModelWeights whole;
  if (sample) {
    if (layout_.stages > 1)
      log::info("gathering the whole model on rank 0 for the sample (train/sample_tokens = %lld)",
                (long long)sample_tokens);
    whole = gather_whole(params_);
  }
  const std::string path = save_checkpoint(sample ? &whole : nullptr);
  // Replica 0 of each stage writes the stage's shard (the tied head's copy of the embedding stays out:
  // owner_stage puts it on the first stage); one stage: rank 0 writes model.safetensors.
  const std::string final_dir = (fs::path(output_dir_) / "final").string();
  WatchdogExempt io("writing the final model");
  save_hf_checkpoint(comm_, final_dir, config_, params_, layout_.replica == 0 ? layout_.stage : -1, layout_.stages,
                     [&](const std::string& name) { return layout_.owner_stage(config_, name); }, "fp32");
  log::info("final model: %s (Hugging Face format%s; checkpoint %s)", final_dir.c_str(),
            layout_.stages > 1 ? ", one shard per pipeline stage" : "", path.c_str());
  if (sample_tokens > 0 && !tokenizer_) log::info("no tokenizer (<tokenizer>/model): no sample generation");
  if (!sample || !comm_.is_root()) return;
  Region region("sample");
  const std::string prompt = deck_.get_string("train", "sample_prompt");
  Model model(config_, whole);
  GenerationParams gp;
  gp.max_new_tokens = sample_tokens;
  gp.eos_id = tokenizer_->eos_id();
  gp.pad_id = tokenizer_->pad_id();
  gp.sampling.temperature = 0.8;
  gp.sampling.top_k = 40;
  gp.sampling.seed = seed_;
  const std::vector<std::int32_t> ids = tokenizer_->encode(prompt, true, false);
  const GenerationResult r = generate(model, {ids}, gp);
  // The continuation as the whole sequence decodes (it keeps the space its first word begins with).
  log::info("sample (temperature 0.8, top-k 40):\n%s%s\n", prompt.c_str(),
            io::decode_continuation(*tokenizer_, ids, r.tokens[0]).c_str());
}

}  // namespace

std::string describe_per_rank(const std::vector<std::string>& per_rank) {
  if (per_rank.empty()) return "";
  if (std::all_of(per_rank.begin(), per_rank.end(), [&](const std::string& v) { return v == per_rank.front(); }))
    return per_rank.front();
  // Each distinct value once, in the order of its first rank, with its ranks as ranges.
  std::vector<std::pair<std::string, std::vector<int>>> groups;
  for (int r = 0; r < int(per_rank.size()); ++r) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == per_rank[std::size_t(r)]; });
    if (it == groups.end()) groups.push_back({per_rank[std::size_t(r)], {r}});
    else it->second.push_back(r);
  }
  std::string out;
  for (const auto& [value, ranks] : groups) {
    std::string list;
    for (std::size_t i = 0; i < ranks.size();) {
      std::size_t j = i;
      while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
      list += (list.empty() ? "" : ", ") + std::to_string(ranks[i]) + (j > i ? "-" + std::to_string(ranks[j]) : "");
      i = j + 1;
    }
    out += (out.empty() ? "" : "; ") + std::string(ranks.size() > 1 ? "ranks " : "rank ") + list + ": " + value;
  }
  return out;
}

std::string restart_setup_note(const std::string& theirs, const std::string& ours) {
  const auto lines = [](const std::string& text) {
    std::vector<std::pair<std::string, std::string>> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      const auto eq = line.find(" = ");
      if (eq != std::string::npos) out.emplace_back(line.substr(0, eq), line.substr(eq + 3));
    }
    return out;
  };
  const auto then = lines(theirs);
  std::string changes;
  for (const auto& now : lines(ours)) {
    const auto it = std::find_if(then.begin(), then.end(), [&](const auto& kv) { return kv.first == now.first; });
    if (it == then.end() || it->second == now.second) continue;
    changes += (changes.empty() ? "" : "; ") + now.first + ": " + it->second + " then, " + now.second + " now";
  }
  if (changes.empty()) return "";
  return "note: the checkpoint was written with another setup (" + changes +
         "): the run continues from it, but not bit for bit as it would on the setup it was written with";
}

void check_training_inputs(const Deck& deck, const TrainConfig& run, const std::optional<std::string>& restart) {
  if (restart) {
    std::error_code ec;
    if (fs::is_directory(*restart, ec)) {
      const auto latest = latest_checkpoint(*restart);
      fail(ErrorKind::Usage, "restart checkpoint '" + *restart + "' is a directory; -r takes a checkpoint file" +
                                 (latest ? " (the latest there: " + *latest + ")" : " (it holds no step-*.h5 checkpoint)"));
    }
    if (const std::string why = io::absence_reason(*restart); !why.empty())
      fail(ErrorKind::Usage, "restart checkpoint '" + *restart + "' " + why);
  }
  check_devices(deck, run);
  deck.find_existing("model", "weights", Deck::PathKind::Any);
  deck.find_existing("tokenizer", "model", Deck::PathKind::File);
  if (run.mode == "pretrain") {
    const std::string dir = deck.get_string("data", "dir");
    const std::string prepare_first = "; prepare the corpora first (jetmoe-prepare, e.g. -i inputs/prepare-tiny.deck)";
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      deck.fail_value("data", "dir", "'" + dir + (fs::exists(dir, ec) ? "' is not a directory" : "' does not exist") + prepare_first);
    const std::vector<std::string> names = data::list_prepared_sources(dir);
    if (names.empty())
      deck.fail_value("data", "dir", "'" + dir + "' holds no prepared sources (subdirectories with a manifest.json)" + prepare_first);
    for (const char* key : {"phase1_mixture", "phase2_mixture"})
      for (const auto& [name, weight] : deck_weights(deck, key))
        if (const std::string missing = unprepared_source(dir, names, name); !missing.empty())
          deck.fail_value("data", key, missing);
  } else {
    if (!deck.find_string("data", "chat_train"))
      deck.fail_value("data", "chat_train", "train/mode = " + run.mode + " needs a jsonl file of " +
                                                (run.mode == "sft" ? "conversations" : "preference pairs"));
    deck.find_existing("data", "chat_train", Deck::PathKind::File);
    deck.find_existing("data", "chat_validation", Deck::PathKind::File);
  }
}

TrainOutcome run_training(Deck& deck, const Comm& comm, const std::optional<std::string>& restart) {
  Trainer trainer(deck, comm, restart);
  return trainer.run();
}

}  // namespace jetmoe
