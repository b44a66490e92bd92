// Self-checking GPU test of the 'model' family (jetmoe/model.h): a JetMoE pipeline stage (embedding,
// blocks, final norm, LM head, cross-entropy) forward and backward on the device against the composed
// double-precision reference kernels/tests/reference/model.hpp (proven on the CPU by
// tests/kernel_reference/test_model.cpp against HF JetMoeForCausalLM and finite differences).
//
// Every case: fresh random non-zero inputs and weights, outputs poisoned (NaN guard zones), every CUDA
// call checked, guard zones verified, one PASS/FAIL line. Tolerances (why):
//  - The blocks' bounds are test_layer.cu's (the same roundings; see there): forward per token row
//    relative RMS <= 3e-2 and max <= 0.25 row RMS; backward per tensor relative RMS <= 5e-2, max <= 0.5
//    RMS. The reference follows the device's expert choices in every block (each checked to differ from
//    the reference's own top-k only at near ties), so the blocks' differences do not compound through
//    a flipped expert. The logits (bf16(h W^T)) get the forward bounds per row, the per-token losses
//    the same bounds over the [N] vector, the aux losses 1e-3 relative.
//  - Exact properties, no tolerance: ignored labels give loss 0; rows of the embedding gradient whose id
//    does not occur are 0 (untied); the out-of-range id is counted; a rerun is bit-identical; splitting
//    the model into two stages at any block boundary gives bit-identical losses and gradients (the
//    tied embedding gradient of the whole model equals fp32(first stage's + last stage's head part));
//    grad_beta 1 doubles every gradient exactly (untied); jk_model_eval's logits and loss rows are
//    jk_model_fwd's bit for bit; the LM head in chunks (head_chunk) gives the unchunked stage's
//    losses and every gradient below the head bit for bit (the head's weight gradient, summed chunk
//    by chunk, within 1e-5 relative RMS).
#include "layer_testing.cuh"
#include "reference/model.hpp"

#include <cinttypes>
#include <memory>

namespace {

using jkl::Compare;
using jkl::DeviceLayer;
using jkl::DeviceMem;
using jkl::RopeTable;
using jkref::IVec;
using jkref::LayerNumerics;
using jkref::ModelShape;
using jkref::ModelWeights;
using jkref::Vec;
using jkt::CaseResult;
using jkt::GuardedBuffer;

constexpr double kFwdRms = 3e-2, kFwdMax = 0.25, kBwdRms = 5e-2, kBwdMax = 0.5;

struct Sizes {
  std::int64_t B, T, D, E, k, Hkv, d, F, V, L;
};

std::string describe(const Sizes& z, bool tied) {
  return jkt::format("B%" PRId64 " T%" PRId64 " D%" PRId64 " E%" PRId64 " k%" PRId64 " Hkv%" PRId64 " d%" PRId64
                     " F%" PRId64 " V%" PRId64 " L%" PRId64 " %s",
                     z.B, z.T, z.D, z.E, z.k, z.Hkv, z.d, z.F, z.V, z.L, tied ? "tied" : "untied");
}

ModelShape shape_of(const Sizes& z, bool tied) {
  ModelShape s;
  s.layer.B = z.B, s.layer.T = z.T, s.layer.D = z.D, s.layer.E = z.E, s.layer.k = z.k, s.layer.Hkv = z.Hkv;
  s.layer.d = z.d, s.layer.F = z.F;
  s.layer.eps = 1e-6;
  s.layer.theta = 10000.0f;
  s.V = z.V, s.L = z.L;
  s.tied = tied;
  s.final_eps = 1e-5;
  return s;
}

double bf16v(float x) { return jkt::bf16_value(jkt::expected_f32_to_bf16(x)); }

// Embedding (and untied head) U(0.25, 1.75) / D^(1/4) with random signs: logits of order D^(1/4), so the
// softmax is neither flat nor one-hot; final norm U(0.5, 1.5); blocks as test_layer.cu.
ModelWeights random_model_weights(const ModelShape& s, jkt::Inputs& in) {
  ModelWeights w;
  const std::int64_t D = s.layer.D;
  const float scale = 1.0f / std::pow(static_cast<float>(D), 0.25f);
  w.embedding.resize(static_cast<std::size_t>(s.V * D));
  for (auto& v : w.embedding) v = bf16v(in.nonzero(0.25f, 1.75f) * scale);
  for (std::int64_t l = 0; l < s.L; ++l) w.layers.push_back(jkl::random_layer_weights(s.layer, in));
  w.final_norm.resize(static_cast<std::size_t>(D));
  for (auto& v : w.final_norm) v = bf16v(1.0f + in.nonzero(0.01f, 0.5f));
  if (!s.tied) {
    w.lm_head.resize(static_cast<std::size_t>(s.V * D));
    for (auto& v : w.lm_head) v = bf16v(in.nonzero(0.25f, 1.75f) * scale);
  }
  return w;
}

// Device weights and gradients of the whole model. The gradient buffers: g_emb [V, D] (the embedding's,
// and the tied head's when the whole model runs as one stage), g_head [V, D] (the untied head's, or the
// tied head's part on a last stage), g_norm [D], and the blocks'.
struct DeviceModel {
  ModelShape s;
  std::vector<std::unique_ptr<DeviceLayer>> layers;
  std::unique_ptr<GuardedBuffer<std::uint16_t>> emb, norm, head;
  std::unique_ptr<GuardedBuffer<float>> g_emb, g_norm, g_head;
  std::vector<jk_layer_weights_t> lw;
  std::vector<jk_layer_grads_t> lg;

  DeviceModel(const ModelShape& shape, const ModelWeights& w) : s(shape) {
    const std::size_t VD = static_cast<std::size_t>(s.V * s.layer.D), D = static_cast<std::size_t>(s.layer.D);
    emb.reset(new GuardedBuffer<std::uint16_t>(VD));
    emb->upload(jkl::to_bits(w.embedding));
    norm.reset(new GuardedBuffer<std::uint16_t>(D));
    norm->upload(jkl::to_bits(w.final_norm));
    if (!s.tied) {
      head.reset(new GuardedBuffer<std::uint16_t>(VD));
      head->upload(jkl::to_bits(w.lm_head));
    }
    g_emb.reset(new GuardedBuffer<float>(VD));
    g_head.reset(new GuardedBuffer<float>(VD));
    g_norm.reset(new GuardedBuffer<float>(D));
    for (const auto& l : w.layers) {
      layers.emplace_back(new DeviceLayer(s.layer, l));
      lw.push_back(layers.back()->wt);
      lg.push_back(layers.back()->gt);
    }
  }
  const std::uint16_t* head_weights() { return s.tied ? emb->data() : head->data(); }
  void poison_grads() {
    g_emb->poison();
    g_head->poison();
    g_norm->poison();
    for (auto& l : layers)
      for (auto& g : l->g) g->poison();
  }
  bool guards_intact() const {
    bool ok = emb->guards_intact() && norm->guards_intact() && g_emb->guards_intact() && g_head->guards_intact() &&
              g_norm->guards_intact() && (!head || head->guards_intact());
    for (const auto& l : layers) ok = ok && l->guards_intact();
    return ok;
  }
};

// A stage of the device model: blocks [first, last), optionally the embedding and the head.
struct Stage {
  jk_model_config_t cfg{};
  jk_model_weights_t w{};
  jk_model_grads_t g{};
};

Stage make_stage(DeviceModel& m, const RopeTable& rope, jk_layer_path_t path, std::int64_t first, std::int64_t last,
                 bool has_embedding, bool has_head, bool whole_tied) {
  Stage st;
  st.cfg.layer = jkl::layer_config(m.s.layer, rope, path, 0.01f, 0.001f);
  st.cfg.vocab = m.s.V;
  st.cfg.num_layers = last - first;
  st.cfg.has_embedding = has_embedding ? 1 : 0;
  st.cfg.has_head = has_head ? 1 : 0;
  st.cfg.final_eps = 1e-5f;
  st.w.embedding = has_embedding ? m.emb->data() : nullptr;
  st.w.layers = m.lw.data() + first;
  st.w.final_norm = has_head ? m.norm->data() : nullptr;
  st.w.lm_head = has_head ? m.head_weights() : nullptr;
  st.g.embedding = has_embedding ? m.g_emb->data() : nullptr;
  st.g.layers = m.lg.data() + first;
  st.g.final_norm = has_head ? m.g_norm->data() : nullptr;
  // The whole tied model sums the head's gradient into the embedding's; otherwise separate tensors.
  st.g.lm_head = has_head ? (whole_tied ? m.g_emb->data() : m.g_head->data()) : nullptr;
  return st;
}

struct Batch {
  std::vector<std::int32_t> ids, labels;
  std::int64_t n_valid = 0, invalid_ids = 0;
};

// Random ids in [0, V) (one out of range when `bad_id`), labels = the next id of the sequence, -100 at
// each sequence's end and at every 5th position.
Batch random_batch(const Sizes& z, jkt::Inputs& in, bool bad_id) {
  Batch b;
  const std::int64_t N = z.B * z.T;
  b.ids.resize(static_cast<std::size_t>(N));
  for (auto& id : b.ids) id = static_cast<std::int32_t>(in.bits32() % static_cast<std::uint32_t>(z.V));
  if (bad_id && N > 3) {
    b.ids[2] = static_cast<std::int32_t>(z.V + 3);
    b.invalid_ids = 1;
  }
  b.labels.resize(b.ids.size());
  for (std::int64_t t = 0; t < N; ++t) {
    const bool end = t % z.T == z.T - 1;
    const std::int32_t next = end ? -100 : b.ids[t + 1];
    b.labels[t] = (end || t % 5 == 4 || next < 0 || next >= z.V) ? -100 : next;
    b.n_valid += b.labels[t] == -100 ? 0 : 1;
  }
  return b;
}

struct DeviceBatch {
  GuardedBuffer<std::int32_t> ids, labels;
  explicit DeviceBatch(const Batch& b) : ids(b.ids.size()), labels(b.labels.size()) {
    ids.upload(b.ids);
    labels.upload(b.labels);
  }
};

// The training-style cases' fixture: a random model of shape z on the device, a batch of ids and labels
// (one out-of-range id with bad_id), the RoPE table and ce_scale = 1 / the counted labels (0 for none).
// A case unpacks it: auto& [in, s, hw, dm, batch, db, rope, ce_scale] = fx;
struct ModelFixture {
  jkt::Inputs in;
  ModelShape s;
  ModelWeights hw;
  DeviceModel dm;
  Batch batch;
  DeviceBatch db;
  RopeTable rope;
  float ce_scale;
  ModelFixture(const Sizes& z, bool tied, std::uint64_t seed, bool bad_id = false)
      : in(seed), s(shape_of(z, tied)), hw(random_model_weights(s, in)), dm(s, hw), batch(random_batch(z, in, bad_id)),
        db(batch), rope(std::max<std::int64_t>(z.T, 16), z.d),
        ce_scale(batch.n_valid > 0 ? 1.0f / static_cast<float>(batch.n_valid) : 0.0f) {}
};

struct StageRun {
  std::vector<std::uint16_t> out, dx_in, logits;
  std::vector<float> loss_rows, aux;
  std::int32_t invalid = -1;
  std::vector<std::pair<IVec, IVec>> ids;  // per block of the stage
};

// Forward (+ backward when `backward`) of one stage; x_in / dout are device bf16 [N, D] where needed.
StageRun run_stage(jkt::Context& ctx, const Sizes& z, Stage& st, DeviceBatch& db, const std::uint16_t* x_in,
                   const std::uint16_t* dout, float ce_scale, float beta, bool backward, bool* guards,
                   const float* row_weights = nullptr) {
  const std::int64_t N = z.B * z.T;
  const std::size_t ND = static_cast<std::size_t>(N * z.D);
  jk_model_batch_t batch{z.B, z.T, db.ids.data(), x_in, db.labels.data()};
  std::size_t sb = 0, cb = 0;
  CHECK_CUDA(jk_model_train_bytes(&st.cfg, z.B, z.T, &sb, &cb));
  DeviceMem saved(sb), scratch(cb);
  CHECK_CUDA(cudaMemset(saved.p, 0xff, sb));
  CHECK_CUDA(cudaMemset(scratch.p, 0xff, cb));
  CHECK_CUDA(cudaDeviceSynchronize());
  GuardedBuffer<std::uint16_t> out(ND), dx(ND);
  GuardedBuffer<float> loss(static_cast<std::size_t>(N)), aux(static_cast<std::size_t>(std::max<std::int64_t>(4 * st.cfg.num_layers, 1)));
  GuardedBuffer<std::int32_t> invalid(1);
  jkt::finish(jk_model_fwd(&st.w, &st.cfg, &batch, out.data(), loss.data(), aux.data(), invalid.data(), saved.p, sb,
                           scratch.p, cb, ctx.stream),
              ctx.stream, "jk_model_fwd");
  StageRun r;
  if (st.cfg.has_head) {
    if (st.cfg.head_chunk == 0 || st.cfg.head_chunk >= N) {  // a chunked head keeps no logits
      const std::uint16_t* logits = nullptr;
      CHECK_CUDA(jk_model_saved_logits(&st.cfg, z.B, z.T, saved.p, &logits));
      r.logits.resize(static_cast<std::size_t>(N * z.V));
      CHECK_CUDA(cudaMemcpy(r.logits.data(), logits, r.logits.size() * 2, cudaMemcpyDeviceToHost));
    }
    r.loss_rows = loss.download();
  } else {
    r.out = out.download();
  }
  r.aux = aux.download();
  r.aux.resize(static_cast<std::size_t>(4 * st.cfg.num_layers));
  r.invalid = invalid.download()[0];
  for (std::int64_t l = 0; l < (st.cfg.recompute ? 0 : st.cfg.num_layers); ++l) {  // recompute keeps none
    const void* ls = nullptr;
    CHECK_CUDA(jk_model_saved_layer(&st.cfg, z.B, z.T, saved.p, l, &ls));
    const std::int32_t *moa = nullptr, *moe = nullptr;
    CHECK_CUDA(jk_layer_saved_expert_ids(&st.cfg.layer, z.B, z.T, ls, &moa, &moe));
    std::vector<std::int32_t> a(static_cast<std::size_t>(N * z.k)), b(a.size());
    CHECK_CUDA(cudaMemcpy(a.data(), moa, a.size() * 4, cudaMemcpyDeviceToHost));
    CHECK_CUDA(cudaMemcpy(b.data(), moe, b.size() * 4, cudaMemcpyDeviceToHost));
    r.ids.emplace_back(IVec(a.begin(), a.end()), IVec(b.begin(), b.end()));
  }
  if (backward) {
    jkt::finish(jk_model_bwd(&st.w, &st.cfg, &batch, dout, ce_scale, row_weights, st.cfg.has_embedding ? nullptr : dx.data(), &st.g,
                             beta, saved.p, sb, scratch.p, cb, ctx.stream),
                ctx.stream, "jk_model_bwd");
    if (!st.cfg.has_embedding) r.dx_in = dx.download();
  }
  *guards = out.guards_intact() && dx.guards_intact() && loss.guards_intact() && aux.guards_intact() &&
            invalid.guards_intact();
  return r;
}

struct Grads {
  std::vector<float> emb, head, norm;
  std::vector<std::vector<std::vector<float>>> layers;  // [L][11]
};

Grads download_grads(DeviceModel& m) {
  Grads g;
  g.emb = m.g_emb->download();
  g.head = m.g_head->download();
  g.norm = m.g_norm->download();
  for (auto& l : m.layers) {
    g.layers.emplace_back();
    for (auto& t : l->g) g.layers.back().push_back(t->download());
  }
  return g;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool within(const Compare& c, double rms, double mx) { return c.finite && c.rel_rms <= rms && c.max_rel <= mx; }

// Every block's expert choices on the device are valid (k distinct experts in [0, E) per token).
bool ids_all_valid(const StageRun& r, const Sizes& z) {
  const std::int64_t N = z.B * z.T;
  const int E = static_cast<int>(z.E), k = static_cast<int>(z.k);
  for (const auto& p : r.ids)
    if (!jkl::ids_valid(p.first, N, E, k) || !jkl::ids_valid(p.second, N, E, k)) return false;
  return true;
}

// The device's choices differ from the reference's top-k (computed with the device's choices in the
// blocks before) only at near ties, in every block and both routers.
bool routing_matches(const StageRun& r, const jkref::ModelForward& f, const Sizes& z, int* flips, std::string* why) {
  const std::int64_t N = z.B * z.T;
  const int E = static_cast<int>(z.E), k = static_cast<int>(z.k);
  for (std::int64_t l = 0; l < z.L; ++l) {
    const auto& lf = f.layers[static_cast<std::size_t>(l)];
    if (!jkl::routing_ok(r.ids[l].first, lf.moa.logits, N, E, k, flips, why) ||
        !jkl::routing_ok(r.ids[l].second, lf.moe.logits, N, E, k, flips, why))
      return false;
  }
  return true;
}

// Every gradient tensor of the whole model against the reference, within the backward bounds.
struct GradCheck {
  bool pass = true;
  double worst = 0, worst_max = 0;  // worst relative RMS (INFINITY for a non-finite tensor) and max
  std::string worst_name;
};
GradCheck check_grads(const Grads& g, const jkref::ModelGrads& rg, const Sizes& z, bool tied) {
  GradCheck gc;
  auto check = [&](const std::vector<float>& got, const Vec& ref, const std::string& name) {
    const Compare c = jkl::compare(jkl::widen(got), ref, 0, 0);
    gc.pass = gc.pass && within(c, kBwdRms, kBwdMax);
    if (c.rel_rms > gc.worst || !c.finite) gc.worst = c.finite ? c.rel_rms : INFINITY, gc.worst_name = name;
    gc.worst_max = std::max(gc.worst_max, c.max_rel);
  };
  check(g.emb, rg.embedding, "embedding");
  if (!tied) check(g.head, rg.lm_head, "lm_head");
  check(g.norm, rg.final_norm, "final_norm");
  for (std::int64_t l = 0; l < z.L; ++l) {
    const auto refs = rg.layers[static_cast<std::size_t>(l)].all();
    for (int i = 0; i < 11; ++i)
      check(g.layers[l][i], *refs[i], jkt::format("layer%" PRId64 ".", l) + jkref::layer_weight_names()[i]);
  }
  return gc;
}

// Whole model, one stage: device vs reference (with the device's expert choices), rerun bit-identical.
CaseResult train_case(jkt::Context& ctx, const Sizes& z, bool tied, std::uint64_t seed, bool both_paths) {
  ModelFixture fx(z, tied, seed, true);
  auto& [in, s, hw, dm, batch, db, rope, ce_scale] = fx;
  const std::int64_t N = z.B * z.T;
  std::string detail;
  bool pass = true;
  std::vector<jk_layer_path_t> paths = {JK_LAYER_TUNED};
  if (both_paths) paths.push_back(JK_LAYER_SIMPLE);
  for (const jk_layer_path_t path : paths) {
    const char* label = path == JK_LAYER_TUNED ? "tuned:" : "simple:";
    Stage st = make_stage(dm, rope, path, 0, z.L, true, true, tied);
    bool guards = true;
    dm.poison_grads();
    const StageRun r = run_stage(ctx, z, st, db, nullptr, nullptr, ce_scale, 0.0f, true, &guards);
    const Grads g = download_grads(dm);
    guards = guards && dm.guards_intact();
    pass = pass && guards;
    if (r.invalid != batch.invalid_ids || !ids_all_valid(r, z)) {
      detail += jkt::format("%s invalid expert ids or invalid-id count %d. ", label, r.invalid);
      pass = false;
      continue;
    }
    const jkref::ModelForward f = jkref::model_forward(s, hw, batch.ids, {}, batch.labels, LayerNumerics::hf_bf16, &r.ids);
    int flips = 0;
    std::string why;
    if (!routing_matches(r, f, z, &flips, &why)) {
      detail += std::string(label) + " " + why + ". ";
      pass = false;
      continue;
    }
    const jkref::ModelGrads rg =
        jkref::model_backward(s, hw, f, batch.ids, batch.labels, {}, ce_scale, 0.01, 0.001, LayerNumerics::hf_bf16);
    // Forward: logits per row, losses over [N], aux per block.
    const Compare cl = jkl::compare(jkl::widen(r.logits), f.logits, N, z.V);
    const Compare closs = jkl::compare(jkl::widen(r.loss_rows), f.ce.loss_rows, 0, 0);
    bool ignored_zero = true;
    for (std::int64_t t = 0; t < N; ++t)
      if (batch.labels[t] == -100) ignored_zero = ignored_zero && r.loss_rows[t] == 0.0f;
    double aux_err = 0;
    for (std::int64_t l = 0; l < z.L; ++l) {
      const auto& lf = f.layers[static_cast<std::size_t>(l)];
      const double ref[4] = {lf.moa.aux.switch_loss, lf.moa.aux.z_loss, lf.moe.aux.switch_loss, lf.moe.aux.z_loss};
      for (int i = 0; i < 4; ++i)
        aux_err = std::max(aux_err, std::fabs(r.aux[4 * l + i] - ref[i]) / (std::fabs(ref[i]) + 1e-30));
    }
    pass = pass && within(cl, kFwdRms, kFwdMax) && within(closs, kFwdRms, kFwdMax) && ignored_zero && aux_err <= 1e-3;
    // Backward: every tensor.
    const GradCheck gc = check_grads(g, rg, z, tied);
    pass = pass && gc.pass;
    // Untied: embedding rows of ids that do not occur are exactly zero.
    bool zero_rows = true;
    if (!tied) {
      std::vector<char> seen(static_cast<std::size_t>(z.V), 0);
      for (auto id : batch.ids)
        if (id >= 0 && id < z.V) seen[id] = 1;
      for (std::int64_t v = 0; v < z.V; ++v)
        if (!seen[v])
          for (std::int64_t c = 0; c < z.D; ++c) zero_rows = zero_rows && g.emb[v * z.D + c] == 0.0f;
    }
    pass = pass && zero_rows;
    detail += jkt::format(
        "%s logits rms %.2e max %.2e; loss rms %.2e; aux %.1e; grads worst rms %.2e (%s) max %.2e; flips %d%s%s. ",
        label, cl.rel_rms, cl.max_rel, closs.rel_rms, aux_err, gc.worst, gc.worst_name.c_str(), gc.worst_max, flips,
        ignored_zero ? "" : "; IGNORED LABEL LOSS NOT 0", zero_rows ? "" : "; UNUSED EMBEDDING ROW NOT 0");
    if (path == JK_LAYER_TUNED) {
      // Determinism: a second run is bit-identical.
      dm.poison_grads();
      bool guards2 = true;
      const StageRun r2 = run_stage(ctx, z, st, db, nullptr, nullptr, ce_scale, 0.0f, true, &guards2);
      const Grads g2 = download_grads(dm);
      bool same = guards2 && r2.logits == r.logits && same_bits(r2.loss_rows, r.loss_rows) && same_bits(r2.aux, r.aux) &&
                  same_bits(g2.emb, g.emb) && same_bits(g2.norm, g.norm) && (tied || same_bits(g2.head, g.head));
      for (std::int64_t l = 0; l < z.L && same; ++l)
        for (int i = 0; i < 11 && same; ++i) same = same_bits(g2.layers[l][i], g.layers[l][i]);
      detail += same ? "rerun bit-identical. " : "RERUN DIFFERS. ";
      pass = pass && same;
    }
  }
  return {pass, describe(z, tied) + ": " + detail};
}

// Two stages [embedding, blocks 0..split) and [blocks split..L, head], chained through device buffers,
// against the whole model as one stage: bit-identical.
CaseResult stages_case(jkt::Context& ctx, const Sizes& z, bool tied, std::int64_t split, std::uint64_t seed) {
  ModelFixture fx(z, tied, seed);
  auto& [in, s, hw, dm, batch, db, rope, ce_scale] = fx;
  const std::size_t ND = static_cast<std::size_t>(z.B * z.T * z.D);
  bool guards = true, g1 = true, g2 = true, g3 = true;

  Stage whole = make_stage(dm, rope, JK_LAYER_TUNED, 0, z.L, true, true, tied);
  dm.poison_grads();
  const StageRun rw = run_stage(ctx, z, whole, db, nullptr, nullptr, ce_scale, 0.0f, true, &g1);
  const Grads gw = download_grads(dm);

  Stage first = make_stage(dm, rope, JK_LAYER_TUNED, 0, split, true, false, false);
  Stage last = make_stage(dm, rope, JK_LAYER_TUNED, split, z.L, false, true, false);
  dm.poison_grads();
  // First stage forward; its output feeds the last stage, whose dx_in feeds the first stage's backward.
  jk_model_batch_t b0{z.B, z.T, db.ids.data(), nullptr, db.labels.data()};
  std::size_t sb0 = 0, cb0 = 0;
  CHECK_CUDA(jk_model_train_bytes(&first.cfg, z.B, z.T, &sb0, &cb0));
  DeviceMem saved0(sb0), scratch0(cb0);
  GuardedBuffer<std::uint16_t> boundary(ND), dboundary(ND);
  jkt::finish(jk_model_fwd(&first.w, &first.cfg, &b0, boundary.data(), nullptr, nullptr, nullptr, saved0.p, sb0,
                           scratch0.p, cb0, ctx.stream),
              ctx.stream, "jk_model_fwd first");
  const StageRun rl = run_stage(ctx, z, last, db, boundary.data(), nullptr, ce_scale, 0.0f, true, &g2);
  dboundary.upload(rl.dx_in);
  jkt::finish(jk_model_bwd(&first.w, &first.cfg, &b0, dboundary.data(), 0.0f, nullptr, nullptr, &first.g, 0.0f, saved0.p, sb0,
                           scratch0.p, cb0, ctx.stream),
              ctx.stream, "jk_model_bwd first");
  const Grads gs = download_grads(dm);
  g3 = boundary.guards_intact() && dboundary.guards_intact() && dm.guards_intact();
  guards = g1 && g2 && g3;

  bool same = same_bits(rw.loss_rows, rl.loss_rows) && rw.logits == rl.logits && same_bits(gw.norm, gs.norm);
  const bool loss_same = same;
  bool emb_same = true;
  if (tied) {
    // whole: head part first, then the embedding's scatter-add (fp32 add per element, rows that occur).
    std::vector<char> seen(static_cast<std::size_t>(z.V), 0);
    for (auto id : batch.ids) seen[id] = 1;
    for (std::int64_t v = 0; v < z.V && emb_same; ++v)
      for (std::int64_t c = 0; c < z.D; ++c) {
        const std::size_t i = static_cast<std::size_t>(v * z.D + c);
        const float expect = seen[v] ? gs.head[i] + gs.emb[i] : gs.head[i];
        if (std::memcmp(&expect, &gw.emb[i], sizeof(float)) != 0) emb_same = false;
      }
  } else {
    emb_same = same_bits(gw.emb, gs.emb) && same_bits(gw.head, gs.head);
  }
  same = same && emb_same;
  bool layers_same = true;
  for (std::int64_t l = 0; l < z.L; ++l)
    for (int i = 0; i < 11; ++i) layers_same = layers_same && same_bits(gw.layers[l][i], gs.layers[l][i]);
  same = same && layers_same;
  const bool pass = same && guards;
  return {pass, describe(z, tied) + jkt::format(" split at %" PRId64 ": losses/logits %s, embedding/head %s, blocks %s, "
                                                "guards %d",
                                                split, loss_same ? "bit-identical" : "DIFFER",
                                                emb_same ? "bit-identical" : "DIFFER",
                                                layers_same ? "bit-identical" : "DIFFER", int(guards))};
}

// Activation recomputation (cfg.recompute = 1) against the same stage without it, same batch: losses,
// logits, aux, the stage output, dx_in and every weight gradient bit for bit; saved holds L fewer block
// buffers and scratch one more; jk_model_saved_layer refuses the recompute stage and recompute = 2 is
// cudaErrorInvalidValue. The whole model, or (middle) its blocks alone with random x_in and dout.
CaseResult recompute_case(jkt::Context& ctx, const Sizes& z, bool tied, bool middle, std::uint64_t seed) {
  ModelFixture fx(z, tied, seed);
  auto& [in, s, hw, dm, batch, db, rope, ce_scale] = fx;
  const std::int64_t N = z.B * z.T;
  GuardedBuffer<std::uint16_t> x_in(static_cast<std::size_t>(N * z.D)), dout(x_in.size());
  std::vector<float> xs(x_in.size()), ds(x_in.size());
  for (auto& v : xs) v = in.nonzero(0.05f, 1.5f);
  for (auto& v : ds) v = in.nonzero(1e-3f, 2e-2f);
  x_in.upload(jkt::to_bf16(xs));
  dout.upload(jkt::to_bf16(ds));
  Stage st = make_stage(dm, rope, JK_LAYER_TUNED, 0, z.L, !middle, !middle, tied);
  StageRun run[2];
  Grads grads[2];
  std::size_t sb[2] = {0, 0}, cb[2] = {0, 0};
  bool guards = true;
  for (int r = 0; r < 2; ++r) {
    st.cfg.recompute = r;
    CHECK_CUDA(jk_model_train_bytes(&st.cfg, z.B, z.T, &sb[r], &cb[r]));
    dm.poison_grads();
    bool g = true;
    run[r] = run_stage(ctx, z, st, db, middle ? x_in.data() : nullptr, middle ? dout.data() : nullptr, ce_scale, 0.0f,
                       true, &g);
    grads[r] = download_grads(dm);
    guards = guards && g && dm.guards_intact() && x_in.guards_intact() && dout.guards_intact();
  }
  const StageRun &a = run[0], &b = run[1];
  bool layers_same = true;
  for (std::int64_t l = 0; l < z.L; ++l)
    for (int i = 0; i < 11; ++i) layers_same = layers_same && same_bits(grads[0].layers[l][i], grads[1].layers[l][i]);
  const bool ends_same = same_bits(grads[0].emb, grads[1].emb) && same_bits(grads[0].head, grads[1].head) &&
                         same_bits(grads[0].norm, grads[1].norm);
  const bool fwd_same = a.logits == b.logits && same_bits(a.loss_rows, b.loss_rows) && same_bits(a.aux, b.aux) &&
                        a.out == b.out && a.dx_in == b.dx_in && a.invalid == b.invalid;
  // Memory: L block buffers fewer in saved, one more in scratch (each between its size and its size
  // rounded up to the Carver's 256 bytes: a buffer at the end of a region is not padded).
  std::size_t ls = 0, lc = 0;
  CHECK_CUDA(jk_layer_train_bytes(&st.cfg.layer, z.B, z.T, &ls, &lc));
  const std::size_t block = (ls + 255) / 256 * 256, L = static_cast<std::size_t>(z.L);
  const bool bytes_ok = sb[1] + L * ls <= sb[0] && sb[0] <= sb[1] + L * block && cb[0] + ls <= cb[1] &&
                        cb[1] <= cb[0] + block;
  int bad = 0;
  const void* layer_saved = nullptr;
  DeviceMem saved(sb[0]);
  st.cfg.recompute = 1;
  bad += jk_model_saved_layer(&st.cfg, z.B, z.T, saved.p, 0, &layer_saved) == cudaErrorInvalidValue ? 0 : 1;
  st.cfg.recompute = 2;
  std::size_t x = 0, y = 0;
  bad += jk_model_train_bytes(&st.cfg, z.B, z.T, &x, &y) == cudaErrorInvalidValue ? 0 : 1;
  const bool pass = fwd_same && layers_same && ends_same && bytes_ok && bad == 0 && guards;
  return {pass, describe(z, tied) + jkt::format("%s: forward %s, block gradients %s, embedding/norm/head %s; saved "
                                                "%zu -> %zu bytes, scratch %zu -> %zu (block %zu) %s; bad-argument "
                                                "results %d; guards %d",
                                                middle ? " blocks only" : "", fwd_same ? "bit-identical" : "DIFFER",
                                                layers_same ? "bit-identical" : "DIFFER",
                                                ends_same ? "bit-identical" : "DIFFER", sb[0], sb[1], cb[0], cb[1],
                                                block, bytes_ok ? "as expected" : "WRONG", bad, int(guards))};
}

// Per-row loss weights (DPO-style objectives): random weights of both signs vs the reference; uniform
// weights equal to ce_scale give the scalar path's gradients bit for bit.
CaseResult weighted_case(jkt::Context& ctx, const Sizes& z, std::uint64_t seed) {
  ModelFixture fx(z, true, seed);
  auto& [in, s, hw, dm, batch, db, rope, ce_scale] = fx;
  const std::int64_t N = z.B * z.T;
  std::vector<float> weights(static_cast<std::size_t>(N));
  for (auto& v : weights) v = in.nonzero(0.01f, 0.5f);
  GuardedBuffer<float> d_w(weights.size()), d_u(weights.size());
  d_w.upload(weights);
  d_u.upload(std::vector<float>(weights.size(), ce_scale));
  Stage st = make_stage(dm, rope, JK_LAYER_TUNED, 0, z.L, true, true, true);
  bool g1 = true, g2 = true, g3 = true;
  dm.poison_grads();
  const StageRun r = run_stage(ctx, z, st, db, nullptr, nullptr, ce_scale, 0.0f, true, &g1, d_w.data());
  const Grads g = download_grads(dm);
  std::string detail;
  bool pass = g1 && d_w.guards_intact();
  bool routing = ids_all_valid(r, z);
  if (routing) {
    const jkref::ModelForward f = jkref::model_forward(s, hw, batch.ids, {}, batch.labels, LayerNumerics::hf_bf16, &r.ids);
    int flips = 0;
    std::string why;
    routing = routing_matches(r, f, z, &flips, &why);
    if (routing) {
      const Vec wv(weights.begin(), weights.end());
      const jkref::ModelGrads rg = jkref::model_backward(s, hw, f, batch.ids, batch.labels, {}, ce_scale, 0.01, 0.001,
                                                         LayerNumerics::hf_bf16, &wv);
      const GradCheck gc = check_grads(g, rg, z, true);
      pass = pass && gc.pass;
      detail += jkt::format("weighted: grads worst rms %.2e (%s); ", gc.worst, gc.worst_name.c_str());
    } else {
      detail += why + "; ";
    }
  }
  pass = pass && routing;
  dm.poison_grads();
  run_stage(ctx, z, st, db, nullptr, nullptr, ce_scale, 0.0f, true, &g2, d_u.data());
  const Grads gu = download_grads(dm);
  dm.poison_grads();
  run_stage(ctx, z, st, db, nullptr, nullptr, ce_scale, 0.0f, true, &g3);
  const Grads gs = download_grads(dm);
  bool same = g2 && g3 && same_bits(gu.emb, gs.emb) && same_bits(gu.norm, gs.norm);
  for (std::int64_t l = 0; l < z.L && same; ++l)
    for (int i = 0; i < 11 && same; ++i) same = same_bits(gu.layers[l][i], gs.layers[l][i]);
  detail += same ? "uniform weights = scalar scale bit for bit" : "UNIFORM WEIGHTS DIFFER FROM THE SCALAR SCALE";
  return {pass && same, describe(z, true) + ": " + detail};
}

// The LM head in chunks (cfg.head_chunk) against the same stage unchunked, same batch: loss rows, aux,
// every block gradient, the final norm's gradient and (untied) the embedding's bit for bit; the head's
// weight gradient (tied: the embedding's, which contains it), an fp32 sum over the rows rounded once per
// chunk, within 1e-5 relative RMS; saved loses the logits [N, V], scratch gains one chunk's [C, V];
// jk_model_saved_logits refuses a chunked stage; jk_model_eval with the same chunks gives the unchunked
// logits and loss rows bit for bit; head_chunk < 0 is cudaErrorInvalidValue. Chunks of 1 row, an uneven
// split (the last chunk shorter), N - 1 (a last chunk of 1 row) and N (no chunking); with per-row loss weights (the
// DPO path: each chunk reads its rows' weights) when `weighted`. grad_beta 0 over poisoned gradients:
// a chunk after the first that overwrote the head's gradient, or a first one that added, would show.
CaseResult head_chunk_case(jkt::Context& ctx, const Sizes& z, bool tied, bool weighted, std::uint64_t seed) {
  ModelFixture fx(z, tied, seed);
  auto& [in, s, hw, dm, batch, db, rope, ce_scale] = fx;
  const std::int64_t N = z.B * z.T, V = z.V;
  std::vector<float> weights(static_cast<std::size_t>(N));
  for (auto& v : weights) v = in.nonzero(0.01f, 0.5f);
  GuardedBuffer<float> d_w(weights.size());
  d_w.upload(weights);
  Stage st = make_stage(dm, rope, JK_LAYER_TUNED, 0, z.L, true, true, tied);
  const std::int64_t chunks[] = {0, 1, N / 2 + 1, N - 1, N};
  constexpr int kRuns = 5;
  StageRun run[kRuns];
  Grads grads[kRuns];
  std::size_t sb[kRuns], cb[kRuns];
  bool guards = true;
  for (int r = 0; r < kRuns; ++r) {
    st.cfg.head_chunk = chunks[r];
    CHECK_CUDA(jk_model_train_bytes(&st.cfg, z.B, z.T, &sb[r], &cb[r]));
    dm.poison_grads();
    bool g = true;
    run[r] = run_stage(ctx, z, st, db, nullptr, nullptr, ce_scale, 0.0f, true, &g, weighted ? d_w.data() : nullptr);
    grads[r] = download_grads(dm);
    guards = guards && g && dm.guards_intact() && d_w.guards_intact();
  }
  // The reference run (head_chunk 0) against each other.
  auto rel = [](const std::vector<float>& got, const std::vector<float>& ref) {
    return jkl::compare(Vec(got.begin(), got.end()), Vec(ref.begin(), ref.end()), 0, 0);
  };
  const std::size_t chunk_pad = 256;
  bool exact = true, head_ok = true, bytes_ok = true;
  double worst = 0;
  std::string differ;
  for (int r = 1; r < kRuns; ++r) {
    const bool chunked = chunks[r] < N;
    const StageRun &a = run[0], &b = run[r];
    bool same = same_bits(a.loss_rows, b.loss_rows) && same_bits(a.aux, b.aux) && a.invalid == b.invalid &&
                same_bits(grads[0].norm, grads[r].norm) && (chunked || a.logits == b.logits);
    for (std::int64_t l = 0; l < z.L; ++l)
      for (int i = 0; i < 11; ++i) same = same && same_bits(grads[0].layers[l][i], grads[r].layers[l][i]);
    // The head's gradient: in g_emb when tied (with the scatter-add), in g_head when untied.
    const std::vector<float>& h0 = tied ? grads[0].emb : grads[0].head;
    const std::vector<float>& hr = tied ? grads[r].emb : grads[r].head;
    if (!tied) same = same && same_bits(grads[0].emb, grads[r].emb);
    if (!chunked) same = same && same_bits(h0, hr);
    const Compare c = rel(hr, h0);
    worst = std::max(worst, c.rel_rms);
    head_ok = head_ok && c.finite && c.rel_rms <= 1e-5;
    if (!same) differ += jkt::format(" %" PRId64, chunks[r]);
    exact = exact && same;
    // saved: N V bf16 fewer when chunked; scratch: C V more (each buffer padded to 256 bytes at most).
    const std::size_t logits_bytes = static_cast<std::size_t>(N * V) * 2;
    const std::size_t chunk_bytes = static_cast<std::size_t>(chunks[r] * V) * 2;
    bytes_ok = bytes_ok && (chunked ? sb[r] + logits_bytes <= sb[0] && sb[0] <= sb[r] + logits_bytes + chunk_pad &&
                                          cb[0] + chunk_bytes <= cb[r] && cb[r] <= cb[0] + chunk_bytes + chunk_pad
                                    : sb[r] == sb[0] && cb[r] == cb[0]);
  }
  // The chunked stage keeps no logits to show; a negative chunk is refused.
  int bad = 0;
  {
    DeviceMem saved(sb[0]);
    const std::uint16_t* lp = nullptr;
    st.cfg.head_chunk = chunks[2];
    bad += jk_model_saved_logits(&st.cfg, z.B, z.T, saved.p, &lp) == cudaErrorInvalidValue ? 0 : 1;
    st.cfg.head_chunk = -1;
    std::size_t x = 0, y = 0;
    bad += jk_model_train_bytes(&st.cfg, z.B, z.T, &x, &y) == cudaErrorInvalidValue ? 0 : 1;
    bad += jk_model_eval_bytes(&st.cfg, z.B, z.T) == 0 ? 0 : 1;
  }
  // Eval chunked = eval unchunked, bit for bit (logits and loss rows in one call).
  bool eval_same = true;
  std::vector<float> eval_logits[2], eval_rows[2];
  std::size_t eval_bytes[2];
  GuardedBuffer<float> logits(static_cast<std::size_t>(N * V)), loss(static_cast<std::size_t>(N));
  for (int e = 0; e < 2; ++e) {
    st.cfg.head_chunk = e == 0 ? 0 : chunks[2];
    eval_bytes[e] = jk_model_eval_bytes(&st.cfg, z.B, z.T);
    DeviceMem scratch(eval_bytes[e]);
    CHECK_CUDA(cudaMemset(scratch.p, 0xff, eval_bytes[e]));
    logits.poison();
    loss.poison();
    jkt::finish(jk_model_eval(&st.w, &st.cfg, db.ids.data(), z.B, z.T, db.labels.data(), loss.data(), logits.data(),
                              nullptr, scratch.p, eval_bytes[e], ctx.stream),
                ctx.stream, "jk_model_eval");
    eval_logits[e] = logits.download();
    eval_rows[e] = loss.download();
  }
  eval_same = same_bits(eval_logits[0], eval_logits[1]) && same_bits(eval_rows[0], eval_rows[1]) &&
              same_bits(eval_rows[0], run[0].loss_rows) && eval_bytes[1] < eval_bytes[0];
  guards = guards && logits.guards_intact() && loss.guards_intact() && dm.guards_intact();
  const bool pass = exact && head_ok && bytes_ok && eval_same && bad == 0 && guards;
  return {pass, describe(z, tied) +
                    jkt::format("%s, chunks 1, %" PRId64 ", %" PRId64 ", %" PRId64
                                ": loss rows, aux, blocks, norm%s %s%s; head gradient rel RMS %.2e (<= 1e-5); saved "
                                "%zu -> %zu bytes, scratch %zu -> %zu at chunk %" PRId64 " %s; eval %s (%zu -> %zu "
                                "bytes); bad-argument results %d; guards %d",
                                weighted ? " row weights" : "", chunks[2], chunks[3], chunks[4],
                                tied ? "" : ", embedding", exact ? "bit-identical" : "DIFFER at chunk", differ.c_str(),
                                worst, sb[0], sb[2], cb[0], cb[2], chunks[2], bytes_ok ? "as expected" : "WRONG",
                                eval_same ? "bit-identical" : "DIFFERS", eval_bytes[0], eval_bytes[1], bad,
                                int(guards))};
}

// grad_beta = 1 adds to the old gradients: run with beta 0, then the backward again with beta 1.
CaseResult accumulate_case(jkt::Context& ctx, const Sizes& z, std::uint64_t seed) {
  ModelFixture fx(z, false, seed);
  auto& [in, s, hw, dm, batch, db, rope, ce_scale] = fx;
  Stage st = make_stage(dm, rope, JK_LAYER_TUNED, 0, z.L, true, true, false);
  jk_model_batch_t b{z.B, z.T, db.ids.data(), nullptr, db.labels.data()};
  std::size_t sb = 0, cb = 0;
  CHECK_CUDA(jk_model_train_bytes(&st.cfg, z.B, z.T, &sb, &cb));
  DeviceMem saved(sb), scratch(cb);
  GuardedBuffer<float> loss(static_cast<std::size_t>(z.B * z.T));
  const float scale = 0.125f;  // any ce_scale: the case compares beta 0 and 1
  jkt::finish(jk_model_fwd(&st.w, &st.cfg, &b, nullptr, loss.data(), nullptr, nullptr, saved.p, sb, scratch.p, cb,
                           ctx.stream),
              ctx.stream, "jk_model_fwd");
  jkt::finish(jk_model_bwd(&st.w, &st.cfg, &b, nullptr, scale, nullptr, nullptr, &st.g, 0.0f, saved.p, sb, scratch.p, cb,
                           ctx.stream),
              ctx.stream, "jk_model_bwd beta 0");
  const Grads first = download_grads(dm);
  // The backward consumed the saved logits: run the forward again, then accumulate.
  jkt::finish(jk_model_fwd(&st.w, &st.cfg, &b, nullptr, loss.data(), nullptr, nullptr, saved.p, sb, scratch.p, cb,
                           ctx.stream),
              ctx.stream, "jk_model_fwd again");
  jkt::finish(jk_model_bwd(&st.w, &st.cfg, &b, nullptr, scale, nullptr, nullptr, &st.g, 1.0f, saved.p, sb, scratch.p, cb,
                           ctx.stream),
              ctx.stream, "jk_model_bwd beta 1");
  const Grads second = download_grads(dm);
  auto doubled = [](const std::vector<float>& once, const std::vector<float>& twice) {
    for (std::size_t i = 0; i < once.size(); ++i)
      if (!(twice[i] == once[i] + once[i])) return false;  // x + x is exact
    return true;
  };
  bool pass = dm.guards_intact() && loss.guards_intact() && doubled(first.emb, second.emb) &&
              doubled(first.head, second.head) && doubled(first.norm, second.norm);
  for (std::int64_t l = 0; l < z.L; ++l)
    for (int i = 0; i < 11; ++i) pass = pass && doubled(first.layers[l][i], second.layers[l][i]);
  return {pass, describe(z, false) + (pass ? ": beta 1 doubles every gradient exactly" : ": beta 1 accumulation wrong")};
}

// jk_model_grads_t::ready: a second stream waits for each event and copies the part it stands for
// while the backward goes on (as the data-parallel sums do); every copy must equal the final gradients.
// The backward accumulates (grad_beta 1 over a first backward), so a copy taken too early differs. On a
// GPU the second stream really runs concurrently; on the emulated one EMU_STREAMS=lazy runs each copy
// right after its event's record, before the rest of the backward (kernels.emu.model.lazy), and
// EMU_STREAMS=eager only checks that the calls are accepted.
CaseResult ready_case(jkt::Context& ctx, const Sizes& z, bool tied, bool recompute, std::uint64_t seed) {
  ModelFixture fx(z, tied, seed);
  auto& [in, s, hw, dm, batch, db, rope, ce_scale] = fx;
  Stage st = make_stage(dm, rope, JK_LAYER_TUNED, 0, z.L, true, true, tied);
  st.cfg.recompute = recompute ? 1 : 0;
  jk_model_batch_t b{z.B, z.T, db.ids.data(), nullptr, db.labels.data()};
  std::size_t sb = 0, cb = 0;
  CHECK_CUDA(jk_model_train_bytes(&st.cfg, z.B, z.T, &sb, &cb));
  DeviceMem saved(sb), scratch(cb);
  GuardedBuffer<float> loss(static_cast<std::size_t>(z.B * z.T));
  auto forward = [&] {
    jkt::finish(jk_model_fwd(&st.w, &st.cfg, &b, nullptr, loss.data(), nullptr, nullptr, saved.p, sb, scratch.p, cb,
                             ctx.stream),
                ctx.stream, "jk_model_fwd");
  };
  forward();
  jkt::finish(jk_model_bwd(&st.w, &st.cfg, &b, nullptr, ce_scale, nullptr, nullptr, &st.g, 0.0f, saved.p, sb, scratch.p,
                           cb, ctx.stream),
              ctx.stream, "jk_model_bwd beta 0");
  forward();
  // The parts in the order of their events: head (index L), blocks L-1 .. 0, embedding (index L + 1).
  struct Part {
    std::int64_t event;
    float* grad;
    std::size_t n;
  };
  std::vector<Part> parts;
  if (!tied) parts.push_back({z.L, dm.g_head->data(), dm.g_head->size()});
  parts.push_back({z.L, dm.g_norm->data(), dm.g_norm->size()});
  for (std::int64_t l = z.L - 1; l >= 0; --l)
    for (auto& g : dm.layers[static_cast<std::size_t>(l)]->g) parts.push_back({l, g->data(), g->size()});
  parts.push_back({z.L + 1, dm.g_emb->data(), dm.g_emb->size()});  // with the tied head's part
  std::vector<cudaEvent_t> ready(static_cast<std::size_t>(z.L + 2));
  for (auto& e : ready) CHECK_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  cudaStream_t side = nullptr;
  CHECK_CUDA(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  std::vector<std::unique_ptr<GuardedBuffer<float>>> copies;
  for (const Part& p : parts) {
    copies.emplace_back(new GuardedBuffer<float>(p.n));
    copies.back()->poison();
  }
  st.g.ready = ready.data();
  const cudaError_t launched = jk_model_bwd(&st.w, &st.cfg, &b, nullptr, ce_scale, nullptr, nullptr, &st.g, 1.0f, saved.p,
                                            sb, scratch.p, cb, ctx.stream);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    CHECK_CUDA(cudaStreamWaitEvent(side, ready[static_cast<std::size_t>(parts[i].event)], 0));
    CHECK_CUDA(cudaMemcpyAsync(copies[i]->data(), parts[i].grad, parts[i].n * sizeof(float), cudaMemcpyDeviceToDevice,
                               side));
  }
  jkt::finish(launched, ctx.stream, "jk_model_bwd beta 1 with ready events");
  CHECK_CUDA(cudaStreamSynchronize(side));
  int early = 0;
  std::int64_t first_early = -2;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    std::vector<float> final_grad(parts[i].n);
    CHECK_CUDA(cudaMemcpy(final_grad.data(), parts[i].grad, parts[i].n * sizeof(float), cudaMemcpyDeviceToHost));
    if (!same_bits(copies[i]->download(), final_grad)) {
      if (early++ == 0) first_early = parts[i].event;
    }
  }
  bool guards = dm.guards_intact() && loss.guards_intact();
  for (auto& c : copies) guards = guards && c->guards_intact();
  CHECK_CUDA(cudaStreamDestroy(side));
  for (auto& e : ready) CHECK_CUDA(cudaEventDestroy(e));
  const bool pass = early == 0 && guards;
  return {pass, describe(z, tied) + (recompute ? " recompute" : "") +
                    (pass ? jkt::format(": %zu parts copied behind their events equal the final gradients", parts.size())
                          : jkt::format(": %d of %zu parts copied behind their events differ from the final gradients "
                                        "(first: event %" PRId64 "); guards %d",
                                        early, parts.size(), first_early, int(guards)))};
}

// One K and one V cache [B, Tmax, A] bf16 per block (guarded, poisoned), and the host pointer arrays
// jk_model_decode / jk_model_prefill take.
struct Caches {
  std::vector<std::unique_ptr<GuardedBuffer<std::uint16_t>>> k, v;
  std::vector<std::uint16_t*> kp, vp;
  std::int64_t B, Tmax, A;
  Caches(std::int64_t layers, std::int64_t batch, std::int64_t tmax, std::int64_t a) : B(batch), Tmax(tmax), A(a) {
    for (std::int64_t l = 0; l < layers; ++l) {
      k.emplace_back(new GuardedBuffer<std::uint16_t>(static_cast<std::size_t>(B * Tmax * A)));
      v.emplace_back(new GuardedBuffer<std::uint16_t>(static_cast<std::size_t>(B * Tmax * A)));
      kp.push_back(k.back()->data());
      vp.push_back(v.back()->data());
    }
  }
  bool guards_intact() const {
    bool ok = true;
    for (std::size_t l = 0; l < k.size(); ++l) ok = ok && k[l]->guards_intact() && v[l]->guards_intact();
    return ok;
  }
  // Rows T.. of every sequence in every cache still hold the poison.
  bool untouched_from(std::int64_t T) const {
    bool ok = true;
    for (std::size_t l = 0; l < k.size(); ++l) {
      const std::vector<std::uint16_t> kh = k[l]->download(), vh = v[l]->download();
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t i = (b * Tmax + T) * A; i < (b + 1) * Tmax * A; ++i)
          ok = ok && kh[i] == 0xffff && vh[i] == 0xffff;
    }
    return ok;
  }
};

// The decode and prefill cases' fixture: a random whole model on the device as one stage, a batch of
// ids (no invalid one) and empty caches of Tmax = T + 2 rows.
struct Generation {
  jkt::Inputs in;
  ModelShape s;
  ModelWeights hw;
  DeviceModel dm;
  Batch batch;
  RopeTable rope;
  Stage st;
  Caches caches;
  std::int64_t Tmax;
  Generation(const Sizes& z, bool tied, std::uint64_t seed)
      : in(seed), s(shape_of(z, tied)), hw(random_model_weights(s, in)), dm(s, hw), batch(random_batch(z, in, false)),
        rope(std::max<std::int64_t>(z.T + 2, 16), z.d), st(make_stage(dm, rope, JK_LAYER_TUNED, 0, z.L, true, true, tied)),
        caches(z.L, z.B, z.T + 2, z.Hkv * z.d), Tmax(z.T + 2) {}
};

// Decode: the whole model stepped through positions 0..T-1 from empty caches (jk_model_decode); each
// step's fp32 logits against the reference forward of the whole sequence (hf_bf16: the logits are bf16
// values), rows with a near-tie routing in any block skipped and counted; a rerun is bit-identical;
// guards intact, cache rows past T untouched. Arguments: a stage without head or embedding, short or
// misaligned scratch, a missing cache are cudaErrorInvalidValue; B = 0 is a no-op.
CaseResult decode_case(jkt::Context& ctx, const Sizes& z, bool tied, std::uint64_t seed) {
  Generation g(z, tied, seed);
  const ModelShape& s = g.s;
  const ModelWeights& hw = g.hw;
  const Batch& batch = g.batch;
  DeviceModel& dm = g.dm;
  Stage& st = g.st;
  Caches& caches = g.caches;
  const std::int64_t B = z.B, T = z.T, N = B * T, Tmax = g.Tmax;
  auto &kc = caches.k, &vc = caches.v;
  auto &kp = caches.kp, &vp = caches.vp;
  GuardedBuffer<std::int32_t> ids(static_cast<std::size_t>(B)), len(static_cast<std::size_t>(B)), invalid(1);
  GuardedBuffer<float> logits(static_cast<std::size_t>(B * z.V));
  const std::size_t bytes = jk_model_decode_bytes(&st.cfg, B, Tmax);
  DeviceMem scratch(bytes);
  // Steps through the sequences; returns the logits [N, V] in sequence order.
  auto run = [&](std::int32_t* invalid_total) {
    for (auto& c : kc) c->poison();
    for (auto& c : vc) c->poison();
    std::vector<float> got(static_cast<std::size_t>(N * z.V));
    *invalid_total = 0;
    for (std::int64_t p = 0; p < T; ++p) {
      std::vector<std::int32_t> step(static_cast<std::size_t>(B));
      for (std::int64_t b = 0; b < B; ++b) step[b] = batch.ids[b * T + p];
      ids.upload(step);
      len.upload(std::vector<std::int32_t>(static_cast<std::size_t>(B), static_cast<std::int32_t>(p)));
      logits.poison();
      invalid.poison();
      jkt::finish(jk_model_decode(&st.w, &st.cfg, ids.data(), B, kp.data(), vp.data(), len.data(), Tmax, logits.data(),
                                  invalid.data(), scratch.p, bytes, ctx.stream),
                  ctx.stream, "jk_model_decode");
      *invalid_total += invalid.download()[0];
      const std::vector<float> o = logits.download();
      for (std::int64_t b = 0; b < B; ++b)
        std::copy(o.begin() + b * z.V, o.begin() + (b + 1) * z.V, got.begin() + (b * T + p) * z.V);
    }
    return got;
  };
  std::int32_t invalid_count = -1, invalid_again = -1;
  const std::vector<float> got = run(&invalid_count);
  const std::vector<float> again = run(&invalid_again);
  const jkref::ModelForward f = jkref::model_forward(s, hw, batch.ids, {}, batch.labels, LayerNumerics::hf_bf16);
  std::vector<bool> skip(static_cast<std::size_t>(N), false);
  int skipped = 0;
  for (std::int64_t t = 0; t < N; ++t) {
    for (const auto& lf : f.layers)
      skip[t] = skip[t] || jkl::near_tie(lf.moa.logits, t, static_cast<int>(z.E), static_cast<int>(z.k)) ||
                jkl::near_tie(lf.moe.logits, t, static_cast<int>(z.E), static_cast<int>(z.k));
    skipped += skip[t] ? 1 : 0;
  }
  const Compare cl = jkl::compare(jkl::widen(got), f.logits, N, z.V, &skip);
  bool bf16_values = true;  // the widened logits are bf16 values
  for (float v : got) bf16_values = bf16_values && jkt::bf16_value(jkt::expected_f32_to_bf16(v)) == v;
  const bool untouched = caches.untouched_from(T);  // cache rows T.. were never written
  const bool guards = dm.guards_intact() && ids.guards_intact() && len.guards_intact() && invalid.guards_intact() &&
                      logits.guards_intact() && caches.guards_intact();
  // Arguments.
  int bad = 0;
  auto expect_invalid = [&](cudaError_t e) { bad += e == cudaErrorInvalidValue ? 0 : 1; };
  auto decode = [&](const Stage& x, std::int64_t batch_size, uint16_t* const* k, std::size_t nbytes, void* scr) {
    return jk_model_decode(&x.w, &x.cfg, ids.data(), batch_size, k, vp.data(), len.data(), Tmax, logits.data(), nullptr,
                           scr, nbytes, ctx.stream);
  };
  Stage no_head = make_stage(dm, g.rope, JK_LAYER_TUNED, 0, z.L, true, false, tied);
  Stage no_embedding = make_stage(dm, g.rope, JK_LAYER_TUNED, 0, z.L, false, true, tied);
  expect_invalid(decode(no_head, B, kp.data(), bytes, scratch.p));
  expect_invalid(decode(no_embedding, B, kp.data(), bytes, scratch.p));
  expect_invalid(decode(st, B, kp.data(), bytes - 1, scratch.p));
  expect_invalid(decode(st, B, kp.data(), bytes, static_cast<char*>(scratch.p) + 16));
  expect_invalid(decode(st, B, nullptr, bytes, scratch.p));
  expect_invalid(jk_model_decode_bytes(&no_head.cfg, B, Tmax) == 0 ? cudaErrorInvalidValue : cudaSuccess);
  bad += decode(st, 0, kp.data(), 0, nullptr) == cudaSuccess ? 0 : 1;
  const bool pass = within(cl, kFwdRms, kFwdMax) && bf16_values && invalid_count == 0 && same_bits(again, got) &&
                    untouched && guards && bad == 0 && skipped < N;
  return {pass, describe(z, tied) + jkt::format(": logits rms %.2e max %.2e (%d near-tie rows of %" PRId64
                                                " skipped); bf16 values %d; rerun bit-identical %d; cache rows past T "
                                                "untouched %d; guards %d; bad-argument results %d",
                                                cl.rel_rms, cl.max_rel, skipped, N, int(bf16_values),
                                                int(same_bits(again, got)), int(untouched), int(guards), bad)};
}

// Prefill: B prompts of T - 1 tokens through jk_model_prefill, then one decode step at position T - 1:
// the prefill's logits (last prompt position) and the step's against the reference forward of the
// whole sequences, every block's cache rows 0..T-2 against the reference K (after RoPE) and V, rows
// past T untouched; near-tie rows skipped as in decode_case. Arguments: T > max_seq, no embedding,
// short scratch are cudaErrorInvalidValue.
CaseResult prefill_case(jkt::Context& ctx, const Sizes& z, bool tied, std::uint64_t seed) {
  Generation g(z, tied, seed);
  const ModelShape& s = g.s;
  const ModelWeights& hw = g.hw;
  const Batch& batch = g.batch;
  DeviceModel& dm = g.dm;
  Stage& st = g.st;
  Caches& caches = g.caches;
  const std::int64_t B = z.B, T = z.T, P = T - 1, N = B * T, A = z.Hkv * z.d, Tmax = g.Tmax, V = z.V;
  auto &kc = caches.k, &vc = caches.v;
  auto &kp = caches.kp, &vp = caches.vp;
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(B * P)), last(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) {
    std::copy(batch.ids.begin() + b * T, batch.ids.begin() + b * T + P, prompt.begin() + b * P);
    last[b] = batch.ids[b * T + P];
  }
  GuardedBuffer<std::int32_t> ids(prompt.size()), step(static_cast<std::size_t>(B)), len(static_cast<std::size_t>(B));
  GuardedBuffer<std::int32_t> invalid(1);
  GuardedBuffer<float> logits(static_cast<std::size_t>(B * V));
  ids.upload(prompt);
  step.upload(last);
  len.upload(std::vector<std::int32_t>(static_cast<std::size_t>(B), static_cast<std::int32_t>(P)));
  const std::size_t pbytes = jk_model_prefill_bytes(&st.cfg, B, P), dbytes = jk_model_decode_bytes(&st.cfg, B, Tmax);
  DeviceMem pscratch(pbytes), dscratch(dbytes);
  invalid.poison();
  jkt::finish(jk_model_prefill(&st.w, &st.cfg, ids.data(), B, P, nullptr, kp.data(), vp.data(), Tmax, logits.data(),
                               invalid.data(), pscratch.p, pbytes, ctx.stream),
              ctx.stream, "jk_model_prefill");
  const std::vector<float> after_prefill = logits.download();
  const std::int32_t invalid_count = invalid.download()[0];
  jkt::finish(jk_model_decode(&st.w, &st.cfg, step.data(), B, kp.data(), vp.data(), len.data(), Tmax, logits.data(),
                              nullptr, dscratch.p, dbytes, ctx.stream),
              ctx.stream, "jk_model_decode");
  const std::vector<float> after_step = logits.download();
  // The reference rows: position P - 1 (prefill) and P (the step) of every sequence.
  const jkref::ModelForward f = jkref::model_forward(s, hw, batch.ids, {}, batch.labels, LayerNumerics::hf_bf16);
  Vec ref(static_cast<std::size_t>(2 * B * V)), got(ref.size());
  std::vector<bool> skip(static_cast<std::size_t>(2 * B), false);
  int skipped = 0;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < 2; ++j) {
      const std::int64_t t = b * T + P - 1 + j, r = 2 * b + j;
      std::copy(f.logits.begin() + t * V, f.logits.begin() + (t + 1) * V, ref.begin() + r * V);
      const std::vector<float>& src = j == 0 ? after_prefill : after_step;
      for (std::int64_t v = 0; v < V; ++v) got[r * V + v] = src[b * V + v];
      for (const auto& lf : f.layers)  // the row's own routing (as decode_case)
        skip[r] = skip[r] || jkl::near_tie(lf.moa.logits, t, static_cast<int>(z.E), static_cast<int>(z.k)) ||
                  jkl::near_tie(lf.moe.logits, t, static_cast<int>(z.E), static_cast<int>(z.k));
      skipped += skip[r] ? 1 : 0;
    }
  const Compare cl = jkl::compare(got, ref, 2 * B, V, &skip);
  // Caches: rows 0..P (prefill's P rows and the step's) against the reference; later rows untouched.
  double worst_cache = 0;
  const bool untouched = caches.untouched_from(T);
  for (std::int64_t l = 0; l < z.L; ++l) {
    const std::vector<std::uint16_t> k = kc[l]->download(), v = vc[l]->download();
    Vec kg(static_cast<std::size_t>(N * A)), vg(kg.size());
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < T * A; ++i) {
        kg[b * T * A + i] = jkt::bf16_value(k[b * Tmax * A + i]);
        vg[b * T * A + i] = jkt::bf16_value(v[b * Tmax * A + i]);
      }
    const Compare ck = jkl::compare(kg, f.layers[l].k, N, A), cv = jkl::compare(vg, f.layers[l].v, N, A);
    worst_cache = std::max({worst_cache, ck.finite ? ck.rel_rms : 1e9, cv.finite ? cv.rel_rms : 1e9});
  }
  int bad = 0;
  auto expect_invalid = [&](cudaError_t e) { bad += e == cudaErrorInvalidValue ? 0 : 1; };
  Stage no_embedding = make_stage(dm, g.rope, JK_LAYER_TUNED, 0, z.L, false, true, tied);
  auto prefill = [&](const Stage& x, std::int64_t T_, std::int64_t max_seq, std::size_t nbytes) {
    return jk_model_prefill(&x.w, &x.cfg, ids.data(), B, T_, nullptr, kp.data(), vp.data(), max_seq, logits.data(),
                            nullptr, pscratch.p, nbytes, ctx.stream);
  };
  expect_invalid(prefill(st, P, P - 1, pbytes));
  expect_invalid(prefill(no_embedding, P, Tmax, pbytes));
  expect_invalid(prefill(st, P, Tmax, pbytes - 1));
  expect_invalid(prefill(st, 0, Tmax, pbytes));
  const bool guards = dm.guards_intact() && ids.guards_intact() && step.guards_intact() && len.guards_intact() &&
                      invalid.guards_intact() && logits.guards_intact() && caches.guards_intact();
  const bool pass = within(cl, kFwdRms, kFwdMax) && worst_cache <= kFwdRms && untouched && invalid_count == 0 &&
                    guards && bad == 0 && skipped < 2 * B;
  return {pass, describe(z, tied) + jkt::format(": prefill + one step logits rms %.2e max %.2e (%d near-tie rows of %"
                                                PRId64 " skipped); caches worst rms %.2e; rows past T untouched %d; "
                                                "guards %d; bad-argument results %d",
                                                cl.rel_rms, cl.max_rel, skipped, 2 * B, worst_cache, int(untouched),
                                                int(guards), bad)};
}

// A ragged prefill: B prompts of different lengths len[b] in 1..P (P = T - 1; prompt 0 has P tokens,
// prompt 1 one token),
// right-padded to P with ids that differ from the sequences' own, through one jk_model_prefill with
// lens. Each prompt's logits and its cache rows 0..len[b]-1 are those of the prompt prefilled alone
// (B = 1, T = len[b], no lens) bit for bit; the logits also against the reference. Then one decode step
// per sequence at its own position len[b], over caches whose rows len[b].. hold the padding's K/V,
// against the reference row len[b] of the whole sequence (the step overwrites the padding's row before
// reading it). Rows past P untouched. Arguments: a length of 0 or above T is cudaErrorInvalidValue.
CaseResult prefill_ragged_case(jkt::Context& ctx, const Sizes& z, bool tied, std::uint64_t seed) {
  Generation g(z, tied, seed);
  const Batch& batch = g.batch;
  Stage& st = g.st;
  Caches& caches = g.caches;
  const std::int64_t B = z.B, T = z.T, P = T - 1, A = z.Hkv * z.d, Tmax = g.Tmax, V = z.V;
  std::vector<std::int64_t> lens(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) lens[b] = b == 0 ? P : b == 1 ? 1 : b == B - 1 ? P - 1 : 1 + (b * 37 + 5) % P;
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(B * P)), next(static_cast<std::size_t>(B)),
      cache_len(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t t = 0; t < P; ++t) {
      const std::int32_t own = batch.ids[b * T + t];
      prompt[b * P + t] = t < lens[b] ? own : static_cast<std::int32_t>((own + 1) % V);
    }
    next[b] = batch.ids[b * T + lens[b]];
    cache_len[b] = static_cast<std::int32_t>(lens[b]);
  }
  GuardedBuffer<std::int32_t> ids(prompt.size()), step(static_cast<std::size_t>(B)), len(static_cast<std::size_t>(B));
  GuardedBuffer<std::int32_t> invalid(1);
  GuardedBuffer<float> logits(static_cast<std::size_t>(B * V));
  ids.upload(prompt);
  step.upload(next);
  len.upload(cache_len);
  const std::size_t pbytes = jk_model_prefill_bytes(&st.cfg, B, P), dbytes = jk_model_decode_bytes(&st.cfg, B, Tmax);
  DeviceMem pscratch(pbytes), dscratch(dbytes);
  invalid.poison();
  logits.poison();
  jkt::finish(jk_model_prefill(&st.w, &st.cfg, ids.data(), B, P, lens.data(), caches.kp.data(), caches.vp.data(), Tmax,
                               logits.data(), invalid.data(), pscratch.p, pbytes, ctx.stream),
              ctx.stream, "jk_model_prefill (ragged)");
  const std::vector<float> after_prefill = logits.download();
  const std::int32_t invalid_count = invalid.download()[0];
  const bool untouched = caches.untouched_from(P);
  std::vector<std::vector<std::uint16_t>> kb, vb;  // the batch's caches after the prefill
  for (std::int64_t l = 0; l < z.L; ++l) {
    kb.push_back(caches.k[l]->download());
    vb.push_back(caches.v[l]->download());
  }
  // Each prompt alone.
  int alone_differ = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t n = lens[b];
    Caches one(z.L, 1, Tmax, A);
    GuardedBuffer<std::int32_t> one_ids(static_cast<std::size_t>(n));
    GuardedBuffer<float> one_logits(static_cast<std::size_t>(V));
    one_ids.upload(std::vector<std::int32_t>(prompt.begin() + b * P, prompt.begin() + b * P + n));
    const std::size_t obytes = jk_model_prefill_bytes(&st.cfg, 1, n);
    DeviceMem oscratch(obytes);
    jkt::finish(jk_model_prefill(&st.w, &st.cfg, one_ids.data(), 1, n, nullptr, one.kp.data(), one.vp.data(), Tmax,
                                 one_logits.data(), nullptr, oscratch.p, obytes, ctx.stream),
                ctx.stream, "jk_model_prefill (alone)");
    const std::vector<float> o = one_logits.download();
    bool same = same_bits(o, std::vector<float>(after_prefill.begin() + b * V, after_prefill.begin() + (b + 1) * V)) &&
                one.guards_intact();
    for (std::int64_t l = 0; l < z.L; ++l) {
      const std::vector<std::uint16_t> k1 = one.k[l]->download(), v1 = one.v[l]->download();
      same = same && std::equal(k1.begin(), k1.begin() + n * A, kb[l].begin() + b * Tmax * A) &&
             std::equal(v1.begin(), v1.begin() + n * A, vb[l].begin() + b * Tmax * A);
    }
    alone_differ += same ? 0 : 1;
  }
  jkt::finish(jk_model_decode(&st.w, &st.cfg, step.data(), B, caches.kp.data(), caches.vp.data(), len.data(), Tmax,
                              logits.data(), nullptr, dscratch.p, dbytes, ctx.stream),
              ctx.stream, "jk_model_decode");
  const std::vector<float> after_step = logits.download();
  // The reference rows: position len[b] - 1 (prefill) and len[b] (the step) of every sequence.
  const jkref::ModelForward f = jkref::model_forward(g.s, g.hw, batch.ids, {}, batch.labels, LayerNumerics::hf_bf16);
  Vec ref(static_cast<std::size_t>(2 * B * V)), got(ref.size());
  std::vector<bool> skip(static_cast<std::size_t>(2 * B), false);
  int skipped = 0;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < 2; ++j) {
      const std::int64_t t = b * T + lens[b] - 1 + j, r = 2 * b + j;
      std::copy(f.logits.begin() + t * V, f.logits.begin() + (t + 1) * V, ref.begin() + r * V);
      const std::vector<float>& src = j == 0 ? after_prefill : after_step;
      for (std::int64_t v = 0; v < V; ++v) got[r * V + v] = src[b * V + v];
      for (const auto& lf : f.layers)
        skip[r] = skip[r] || jkl::near_tie(lf.moa.logits, t, static_cast<int>(z.E), static_cast<int>(z.k)) ||
                  jkl::near_tie(lf.moe.logits, t, static_cast<int>(z.E), static_cast<int>(z.k));
      skipped += skip[r] ? 1 : 0;
    }
  const Compare cl = jkl::compare(got, ref, 2 * B, V, &skip);
  int bad = 0;
  for (const std::int64_t wrong : {std::int64_t(0), P + 1}) {
    std::vector<std::int64_t> l2 = lens;
    l2[static_cast<std::size_t>(B - 1)] = wrong;
    bad += jk_model_prefill(&st.w, &st.cfg, ids.data(), B, P, l2.data(), caches.kp.data(), caches.vp.data(), Tmax,
                            logits.data(), nullptr, pscratch.p, pbytes, ctx.stream) == cudaErrorInvalidValue
               ? 0
               : 1;
  }
  const bool guards = g.dm.guards_intact() && ids.guards_intact() && step.guards_intact() && len.guards_intact() &&
                      invalid.guards_intact() && logits.guards_intact() && caches.guards_intact();
  const bool pass = alone_differ == 0 && within(cl, kFwdRms, kFwdMax) && untouched && invalid_count == 0 && guards &&
                    bad == 0 && skipped < 2 * B;
  std::string shown;
  for (const std::int64_t n : lens) shown += jkt::format("%s%" PRId64, shown.empty() ? "" : ",", n);
  return {pass, describe(z, tied) + jkt::format(" lens {%s}: prompts that differ from alone %d; prefill + one step "
                                                "logits rms %.2e max %.2e (%d near-tie rows of %" PRId64 " skipped); "
                                                "rows past P untouched %d; guards %d; bad-argument results %d",
                                                shown.c_str(), alone_differ, cl.rel_rms, cl.max_rel, skipped, 2 * B,
                                                int(untouched), int(guards), bad)};
}


// Eval: jk_model_eval of a batch (one id out of range) against jk_model_fwd of the same batch: the fp32
// logits are the forward's bf16 logits widened and the loss rows its loss rows, bit for bit, the bad id
// counted; logits alone and loss rows alone give the same bits; guards intact. Arguments: no embedding,
// no head, labels without loss rows, T = 0, short or misaligned scratch are cudaErrorInvalidValue; B = 0
// is a no-op.
CaseResult eval_case(jkt::Context& ctx, const Sizes& z, bool tied, std::uint64_t seed) {
  ModelFixture fx(z, tied, seed, true);
  auto& [in, s, hw, dm, batch, db, rope, ce_scale] = fx;
  const std::int64_t N = z.B * z.T, V = z.V;
  Stage st = make_stage(dm, rope, JK_LAYER_TUNED, 0, z.L, true, true, tied);
  bool guards = true;
  const StageRun r = run_stage(ctx, z, st, db, nullptr, nullptr, 1.0f, 0.0f, false, &guards);
  const std::size_t bytes = jk_model_eval_bytes(&st.cfg, z.B, z.T);
  DeviceMem scratch(bytes);
  GuardedBuffer<float> logits(static_cast<std::size_t>(N * V)), loss(static_cast<std::size_t>(N));
  GuardedBuffer<std::int32_t> invalid(1);
  auto eval = [&](const Stage& x, std::int64_t B, std::int64_t T, const std::int32_t* labels, float* rows, float* out,
                  std::size_t nbytes, void* scr) {
    return jk_model_eval(&x.w, &x.cfg, fx.db.ids.data(), B, T, labels, rows, out, invalid.data(), scr, nbytes, ctx.stream);
  };
  jkt::finish(eval(st, z.B, z.T, db.labels.data(), loss.data(), logits.data(), bytes, scratch.p), ctx.stream,
              "jk_model_eval");
  const std::vector<float> got = logits.download(), rows = loss.download();
  const std::int32_t invalid_count = invalid.download()[0];
  bool widened = got.size() == r.logits.size();
  for (std::size_t i = 0; widened && i < got.size(); ++i) widened = jkt::bf16_value(r.logits[i]) == got[i];
  const bool same_loss = same_bits(rows, r.loss_rows);
  logits.poison();
  loss.poison();
  jkt::finish(eval(st, z.B, z.T, nullptr, nullptr, logits.data(), bytes, scratch.p), ctx.stream, "logits alone");
  jkt::finish(eval(st, z.B, z.T, db.labels.data(), loss.data(), nullptr, bytes, scratch.p), ctx.stream, "loss alone");
  const bool alone = same_bits(logits.download(), got) && same_bits(loss.download(), rows);
  int bad = 0;
  auto expect_invalid = [&](cudaError_t e) { bad += e == cudaErrorInvalidValue ? 0 : 1; };
  Stage no_head = make_stage(dm, rope, JK_LAYER_TUNED, 0, z.L, true, false, tied);
  Stage no_embedding = make_stage(dm, rope, JK_LAYER_TUNED, 0, z.L, false, true, tied);
  expect_invalid(eval(no_head, z.B, z.T, nullptr, nullptr, logits.data(), bytes, scratch.p));
  expect_invalid(eval(no_embedding, z.B, z.T, nullptr, nullptr, logits.data(), bytes, scratch.p));
  expect_invalid(eval(st, z.B, z.T, db.labels.data(), nullptr, logits.data(), bytes, scratch.p));
  expect_invalid(eval(st, z.B, 0, nullptr, nullptr, logits.data(), bytes, scratch.p));
  expect_invalid(eval(st, z.B, z.T, nullptr, nullptr, logits.data(), bytes - 1, scratch.p));
  expect_invalid(eval(st, z.B, z.T, nullptr, nullptr, logits.data(), bytes, static_cast<char*>(scratch.p) + 16));
  expect_invalid(jk_model_eval_bytes(&no_head.cfg, z.B, z.T) == 0 ? cudaErrorInvalidValue : cudaSuccess);
  bad += eval(st, 0, z.T, nullptr, nullptr, logits.data(), 0, nullptr) == cudaSuccess ? 0 : 1;
  CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
  guards = guards && dm.guards_intact() && logits.guards_intact() && loss.guards_intact() && invalid.guards_intact();
  const bool pass = widened && same_loss && alone && invalid_count == batch.invalid_ids && guards && bad == 0;
  return {pass, describe(z, tied) + jkt::format(": logits = jk_model_fwd's widened %d, loss rows bit-identical %d, "
                                                "alone %d; invalid ids %d; guards %d; bad-argument results %d",
                                                int(widened), int(same_loss), int(alone), invalid_count, int(guards),
                                                bad)};
}

CaseResult argument_case(jkt::Context& ctx) {
  const Sizes z{1, 4, 16, 4, 2, 2, 8, 24, 20, 1};
  jkt::Inputs in(5);
  const ModelShape s = shape_of(z, true);
  const ModelWeights hw = random_model_weights(s, in);
  DeviceModel dm(s, hw);
  RopeTable rope(16, z.d);
  Batch batch = random_batch(z, in, false);
  DeviceBatch db(batch);
  Stage good = make_stage(dm, rope, JK_LAYER_TUNED, 0, 1, true, true, true);
  std::size_t sb = 0, cb = 0;
  CHECK_CUDA(jk_model_train_bytes(&good.cfg, z.B, z.T, &sb, &cb));
  DeviceMem saved(sb), scratch(cb);
  GuardedBuffer<float> loss(4);
  GuardedBuffer<std::uint16_t> x(64), out(64);
  int bad = 0;
  auto expect_invalid = [&](cudaError_t e) { bad += e == cudaErrorInvalidValue ? 0 : 1; };
  const jk_model_batch_t b{z.B, z.T, db.ids.data(), nullptr, db.labels.data()};
  auto fwd = [&](const Stage& st, const jk_model_batch_t& bb, std::size_t sbytes, std::size_t cbytes) {
    return jk_model_fwd(&st.w, &st.cfg, &bb, out.data(), loss.data(), nullptr, nullptr, saved.p, sbytes, scratch.p,
                        cbytes, ctx.stream);
  };
  Stage st = good;
  st.cfg.vocab = 0;
  expect_invalid(fwd(st, b, sb, cb));
  st = good, st.cfg.num_layers = -1;
  expect_invalid(fwd(st, b, sb, cb));
  st = good, st.cfg.num_layers = 0, st.cfg.has_embedding = 0, st.cfg.has_head = 0;  // empty stage
  expect_invalid(fwd(st, b, sb, cb));
  st = good, st.cfg.has_head = 2;
  expect_invalid(fwd(st, b, sb, cb));
  st = good, st.cfg.final_eps = -1.0f;
  expect_invalid(fwd(st, b, sb, cb));
  st = good, st.cfg.layer.top_k = 9;
  expect_invalid(fwd(st, b, sb, cb));
  st = good, st.w.embedding = nullptr;
  expect_invalid(fwd(st, b, sb, cb));
  st = good, st.w.lm_head = nullptr;
  expect_invalid(fwd(st, b, sb, cb));
  st = good, st.w.layers = nullptr;
  expect_invalid(fwd(st, b, sb, cb));
  jk_model_batch_t bb = b;
  bb.ids = nullptr;
  expect_invalid(fwd(good, bb, sb, cb));
  bb = b, bb.labels = nullptr;
  expect_invalid(fwd(good, bb, sb, cb));
  bb = b, bb.seq = 17;  // beyond the RoPE table
  expect_invalid(fwd(good, bb, sb, cb));
  expect_invalid(fwd(good, b, sb - 1, cb));
  expect_invalid(fwd(good, b, sb, cb - 1));
  expect_invalid(jk_model_fwd(&good.w, &good.cfg, &b, out.data(), nullptr, nullptr, nullptr, saved.p, sb, scratch.p,
                              cb, ctx.stream));  // a head stage without loss_rows
  st = good, st.cfg.has_head = 0;
  expect_invalid(jk_model_fwd(&st.w, &st.cfg, &b, nullptr, loss.data(), nullptr, nullptr, saved.p, sb, scratch.p, cb,
                              ctx.stream));  // a stage without head and without out
  st = good, st.cfg.has_embedding = 0;
  expect_invalid(fwd(st, b, sb, cb));  // no x_in
  expect_invalid(jk_model_bwd(&good.w, &good.cfg, &b, nullptr, 1.0f, nullptr, nullptr, &good.g, 0.5f, saved.p, sb, scratch.p,
                              cb, ctx.stream));
  expect_invalid(jk_model_bwd(&good.w, &good.cfg, &b, nullptr, NAN, nullptr, nullptr, &good.g, 0.0f, saved.p, sb, scratch.p,
                              cb, ctx.stream));
  st = good, st.g.final_norm = nullptr;
  expect_invalid(jk_model_bwd(&st.w, &st.cfg, &b, nullptr, 1.0f, nullptr, nullptr, &st.g, 0.0f, saved.p, sb, scratch.p, cb,
                              ctx.stream));
  st = good, st.cfg.has_head = 0;
  expect_invalid(jk_model_bwd(&st.w, &st.cfg, &b, nullptr, 1.0f, nullptr, nullptr, &st.g, 0.0f, saved.p, sb, scratch.p, cb,
                              ctx.stream));  // no dout
  expect_invalid(jk_model_train_bytes(&good.cfg, 1, 4, nullptr, &cb));
  expect_invalid(jk_model_train_bytes(&good.cfg, -1, 4, &sb, &cb));
  const void* ls = nullptr;
  expect_invalid(jk_model_saved_layer(&good.cfg, z.B, z.T, saved.p, 1, &ls));
  // Zero sizes: no-ops that touch nothing.
  jk_model_batch_t zero = b;
  zero.batch = 0;
  const bool zero_ok = fwd(good, zero, 0, 0) == cudaSuccess &&
                       jk_model_bwd(&good.w, &good.cfg, &zero, nullptr, 1.0f, nullptr, nullptr, &good.g, 0.0f, nullptr, 0,
                                    nullptr, 0, ctx.stream) == cudaSuccess;
  CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
  bool untouched = true;
  for (auto v : loss.download()) untouched = untouched && jkt::bits_of(v) == 0xffffffffu;
  for (auto v : out.download()) untouched = untouched && v == 0xffff;
  const bool no_error_left = cudaGetLastError() == cudaSuccess;
  const bool pass = bad == 0 && zero_ok && untouched && no_error_left && loss.guards_intact() && out.guards_intact() &&
                    dm.guards_intact();
  return {pass, jkt::format("%d invalid calls not rejected; zero sizes no-op %d; outputs untouched %d", bad,
                            int(zero_ok), int(untouched))};
}

std::vector<jkt::Case> make_cases(jkt::Context& ctx) {
  std::vector<jkt::Case> cases;
  cases.push_back({"model.arguments", [&ctx] { return argument_case(ctx); }});
  const Sizes tiny{2, 6, 32, 4, 2, 2, 8, 24, 40, 2};
  const Sizes train_shapes[] = {
      tiny,
      {2, 9, 36, 3, 2, 3, 8, 20, 50, 3},           // D, F, V not multiples of 8 (scalar paths), E = 3, 3 blocks
      {2, 64, 256, 8, 2, 4, 64, 384, 1000, 2},     // mid-size, tuned tiles
      {1, 256, 2048, 8, 2, 16, 128, 5632, 32000, 2},  // JetMoE-8B sizes (two blocks), short sequence
  };
  for (const Sizes& z : train_shapes)
    for (const bool tied : {true, false}) {
      const std::uint64_t seed = ctx.next_seed();
      const bool both = z.D <= 256;
      cases.push_back(
          {"model.train " + describe(z, tied), [&ctx, z, tied, seed, both] { return train_case(ctx, z, tied, seed, both); }});
    }
  for (const bool tied : {true, false})
    for (const std::int64_t split : {std::int64_t(0), std::int64_t(1), std::int64_t(2)}) {
      const std::uint64_t seed = ctx.next_seed();
      cases.push_back({"model.stages " + describe(tiny, tied) + jkt::format(" split %" PRId64, split),
                       [&ctx, tiny, tied, split, seed] { return stages_case(ctx, tiny, tied, split, seed); }});
    }
  {
    const std::uint64_t seed = ctx.next_seed();
    cases.push_back({"model.weighted " + describe(tiny, true), [&ctx, tiny, seed] { return weighted_case(ctx, tiny, seed); }});
  }
  for (const Sizes& z : {tiny, Sizes{2, 64, 256, 8, 2, 4, 64, 384, 1000, 2}})
    for (const int variant : {0, 1, 2}) {  // tied, untied, blocks only
      const std::uint64_t seed = ctx.next_seed();
      const bool tied = variant == 0, middle = variant == 2;
      cases.push_back({"model.recompute " + describe(z, tied) + (middle ? " blocks" : ""),
                       [&ctx, z, tied, middle, seed] { return recompute_case(ctx, z, tied, middle, seed); }});
    }
  const Sizes decode_shapes[] = {
      tiny,
      {3, 9, 36, 3, 2, 3, 8, 20, 50, 3},          // odd sizes, 3 blocks
      {1, 40, 2048, 8, 2, 16, 128, 5632, 32000, 2},  // JetMoE-8B sizes (two blocks)
  };
  const Sizes ragged_shapes[] = {
      {5, 12, 32, 4, 2, 2, 8, 24, 40, 2},    // the simple attention (d 8)
      {4, 71, 64, 4, 2, 2, 64, 48, 40, 2},   // the tuned attention (d 64), prompts across 64-row tiles
  };
  for (const Sizes& z : ragged_shapes) {
    const std::uint64_t seed = ctx.next_seed();
    cases.push_back({"model.prefill_ragged " + describe(z, z.T < 20),
                     [&ctx, z, seed] { return prefill_ragged_case(ctx, z, z.T < 20, seed); }});
  }
  for (const Sizes& z : decode_shapes)
    for (const bool tied : {true, false}) {
      const std::uint64_t seed = ctx.next_seed();
      cases.push_back(
          {"model.decode " + describe(z, tied), [&ctx, z, tied, seed] { return decode_case(ctx, z, tied, seed); }});
      const std::uint64_t seed2 = ctx.next_seed();
      cases.push_back({"model.prefill " + describe(z, tied),
                       [&ctx, z, tied, seed2] { return prefill_case(ctx, z, tied, seed2); }});
    }
  {
    const std::uint64_t seed = ctx.next_seed();
    cases.push_back({"model.grad_accumulate " + describe(tiny, false),
                     [&ctx, tiny, seed] { return accumulate_case(ctx, tiny, seed); }});
  }
  for (const Sizes& z : {tiny, Sizes{3, 9, 36, 3, 2, 3, 8, 20, 50, 3}})
    for (const bool tied : {true, false}) {
      const std::uint64_t seed = ctx.next_seed();
      cases.push_back(
          {"model.eval " + describe(z, tied), [&ctx, z, tied, seed] { return eval_case(ctx, z, tied, seed); }});
    }
  // tiny: the tuned head GEMM; D36 V50: the simple one (k, n not multiples of 8); D256: tiles of 128
  // rows cut by the chunks (a GPU's case: skipped under emulation).
  for (const Sizes& z : {tiny, Sizes{2, 9, 36, 3, 2, 3, 8, 20, 50, 3}, Sizes{2, 64, 256, 8, 2, 4, 64, 384, 1000, 2}})
    for (const int variant : {0, 1, 2}) {  // tied, untied, tied with per-row weights
      const bool tied = variant != 1, weighted = variant == 2;
      if (z.D == 36 && variant != 1) continue;
      const std::uint64_t seed = ctx.next_seed();
      cases.push_back({"model.head_chunks " + describe(z, tied) + (weighted ? " weighted" : ""),
                       [&ctx, z, tied, weighted, seed] { return head_chunk_case(ctx, z, tied, weighted, seed); }});
    }
  for (const bool tied : {true, false})
    for (const bool recompute : {false, true}) {
      const Sizes z{2, 9, 36, 3, 2, 3, 8, 20, 50, 3};
      const std::uint64_t seed = ctx.next_seed();
      cases.push_back({"model.ready_events " + describe(z, tied) + (recompute ? " recompute" : ""),
                       [&ctx, z, tied, recompute, seed] { return ready_case(ctx, z, tied, recompute, seed); }});
    }
  return cases;
}

}  // namespace

int main(int argc, char** argv) { return jkt::run_main(argc, argv, "jetmoe-model-test", make_cases); }
