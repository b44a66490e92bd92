// Self-checking GPU test of the 'layer' composition (jetmoe/layer.h): one JetMoE block forward, backward
// and decode on the device against the composed double-precision reference kernels/tests/reference/
// layer.hpp (proven on the CPU by tests/kernel_reference/test_layer.cpp against HF JetMoeDecoderLayer).
//
// Every case: fresh random non-zero inputs and weights, outputs poisoned (NaN guard zones), every CUDA
// call checked, guard zones verified, one PASS/FAIL line. Tolerances (why):
//  - Forward `out` (and decode): the reference applies HF's bf16 roundings (LayerNumerics::hf_bf16) with
//    the device's expert choices; remaining differences are fp32 summation order and the attention
//    path's rounding of P to bf16 (a few bf16 ulps on the attention output, attention.h), which the
//    following linears carry through. Per token row: relative RMS error <= 3e-2 and max |err| <=
//    0.25 * row RMS. Scale: on the CPU (B2 T64 D256 E8, the weights of this test) the whole HF bf16
//    sequence differs from the exact maths by 1.6e-2 relative RMS (worst row) and 5e-2 max; the device
//    emulates the same roundings, so it should sit well inside; a layout or indexing bug gives O(1).
//  - Backward: the reference is exact maths at the reference's saved forward values; the device runs a
//    chain of ~20 bf16 roundings (each 2^-9 relative), bf16 P and dS in attention: per tensor relative
//    RMS error <= 5e-2 and max |err| <= 0.5 * RMS (dx per token row, the same bounds). CPU scale: the
//    bf16 forward alone moves the exact gradients by <= 2.2e-2 RMS and 0.15 max (moe_in).
//  - Aux losses: fp32 reductions of the same bf16 logits: 1e-3 relative.
//  - Expert choices: the device's top-k may differ from the reference's only at near ties of the
//    reference's bf16 logits (gap <= 5e-2 of the row's logit RMS, from the few-ulp difference of u2).
//  - Determinism: a second run gives bit-identical out, dx and weight gradients.
//  - Tuned vs simple path: each within the bounds above of the reference (and counted side by side).
#include "layer_testing.cuh"

#include <cinttypes>
#include <memory>

namespace {

using jkref::IVec;
using jkref::LayerNumerics;
using jkref::LayerShape;
using jkref::LayerWeights;
using jkref::Vec;
using jkt::CaseResult;
using jkt::GuardedBuffer;
using jkl::Compare;
using jkl::compare;
using jkl::DeviceLayer;
using jkl::DeviceMem;
using jkl::near_tie;
using jkl::RopeTable;
using jkl::routing_ok;
using jkl::to_bits;
using jkl::widen;

// Tolerances (see the header comment).
constexpr double kFwdRms = 3e-2, kFwdMax = 0.25, kBwdRms = 5e-2, kBwdMax = 0.5;

struct Sizes {
  std::int64_t B, T, D, E, k, Hkv, d, F;
};

LayerShape shape_of(const Sizes& z) {
  LayerShape s;
  s.B = z.B, s.T = z.T, s.D = z.D, s.E = z.E, s.k = z.k, s.Hkv = z.Hkv, s.d = z.d, s.F = z.F;
  s.eps = 1e-6;
  s.theta = 10000.0f;
  return s;
}

std::string describe(const Sizes& z) {
  return jkt::format("B%" PRId64 " T%" PRId64 " D%" PRId64 " E%" PRId64 " k%" PRId64 " Hkv%" PRId64 " d%" PRId64
                     " F%" PRId64,
                     z.B, z.T, z.D, z.E, z.k, z.Hkv, z.d, z.F);
}

jk_layer_config_t make_config(const Sizes& z, const RopeTable& rope, jk_layer_path_t path, float cs, float cz) {
  return jkl::layer_config(shape_of(z), rope, path, cs, cz);
}

struct RunOutputs {
  std::vector<std::uint16_t> out, dx;
  std::vector<float> losses;
  std::vector<std::vector<float>> grads;
  IVec moa_ids, moe_ids;
};

// One forward + backward on the device (grad_beta 0), with poisoned outputs; checks guards.
RunOutputs run_device(const Sizes& z, const jk_layer_config_t& cfg, DeviceLayer& dl, GuardedBuffer<std::uint16_t>& x,
                      GuardedBuffer<std::uint16_t>& dout, cudaStream_t stream, bool* guards) {
  const std::int64_t N = z.B * z.T;
  GuardedBuffer<std::uint16_t> out(static_cast<std::size_t>(N * z.D)), dx(static_cast<std::size_t>(N * z.D));
  GuardedBuffer<float> losses(4);
  for (auto& g : dl.g) g->poison();
  std::size_t saved_bytes = 0, scratch_bytes = 0;
  CHECK_CUDA(jk_layer_train_bytes(&cfg, z.B, z.T, &saved_bytes, &scratch_bytes));
  DeviceMem saved(saved_bytes), scratch(scratch_bytes);
  CHECK_CUDA(cudaMemset(saved.p, 0xff, saved_bytes));
  CHECK_CUDA(cudaMemset(scratch.p, 0xff, scratch_bytes));
  CHECK_CUDA(cudaDeviceSynchronize());
  jkt::finish(jk_layer_fwd(&dl.wt, &cfg, x.data(), z.B, z.T, out.data(), losses.data(), saved.p, saved_bytes, scratch.p,
                           scratch_bytes, nullptr, stream),
              stream, "jk_layer_fwd");
  jkt::finish(jk_layer_bwd(&dl.wt, &cfg, x.data(), dout.data(), z.B, z.T, dx.data(), &dl.gt, 0.0f, saved.p, saved_bytes,
                           scratch.p, scratch_bytes, nullptr, stream),
              stream, "jk_layer_bwd");
  RunOutputs r;
  r.out = out.download();
  r.dx = dx.download();
  r.losses = losses.download();
  for (auto& g : dl.g) r.grads.push_back(g->download());
  const std::int32_t *moa = nullptr, *moe = nullptr;
  CHECK_CUDA(jk_layer_saved_expert_ids(&cfg, z.B, z.T, saved.p, &moa, &moe));
  std::vector<std::int32_t> a(static_cast<std::size_t>(N * z.k)), b(a.size());
  CHECK_CUDA(cudaMemcpy(a.data(), moa, a.size() * 4, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(b.data(), moe, b.size() * 4, cudaMemcpyDeviceToHost));
  r.moa_ids.assign(a.begin(), a.end());
  r.moe_ids.assign(b.begin(), b.end());
  *guards = out.guards_intact() && dx.guards_intact() && losses.guards_intact() && dl.guards_intact();
  return r;
}

// Compares one device run with the reference; appends to detail. Returns pass.
// The reference for one set of expert choices (reused when the tuned and simple paths choose alike: at
// JetMoE sizes a reference forward + backward is ~70 GMAC in double).
struct ReferenceCache {
  IVec moa_ids, moe_ids;
  std::unique_ptr<jkref::LayerForward> f;
  std::unique_ptr<jkref::LayerGrads> g;
};

bool check_against_reference(const Sizes& z, const LayerShape& s, const LayerWeights& hw, const Vec& xv,
                             const Vec& doutv, float cs, float cz, const RunOutputs& r, const char* label,
                             ReferenceCache* cache, std::string* detail) {
  const std::int64_t N = s.N();
  const int E = static_cast<int>(s.E), k = static_cast<int>(s.k);
  // Reference with the device's expert choices; those are then checked to be legitimate: the MoA logits
  // do not depend on any choice, and the MoE logits are computed after the device's MoA choices.
  // The device's ids must be a valid choice (k distinct experts in [0, E) per token) before the reference
  // can use them.
  for (const IVec* ids : {&r.moa_ids, &r.moe_ids})
    for (std::int64_t t = 0; t < N; ++t)
      for (int j = 0; j < k; ++j) {
        const int e = (*ids)[t * k + j];
        bool ok = e >= 0 && e < E;
        for (int m = 0; m < j && ok; ++m) ok = (*ids)[t * k + m] != e;
        if (!ok) {
          *detail += jkt::format("%s invalid expert id %d at token %" PRId64 " slot %d", label, e, t, j);
          return false;
        }
      }
  if (!cache->f || cache->moa_ids != r.moa_ids || cache->moe_ids != r.moe_ids) {
    cache->g.reset();
    cache->f.reset(
        new jkref::LayerForward(jkref::layer_forward(s, hw, xv, LayerNumerics::hf_bf16, &r.moa_ids, &r.moe_ids)));
    cache->moa_ids = r.moa_ids;
    cache->moe_ids = r.moe_ids;
  }
  const jkref::LayerForward& ff = *cache->f;
  int flips = 0;
  std::string why;
  if (!routing_ok(r.moa_ids, ff.moa.logits, N, E, k, &flips, &why)) {
    *detail += std::string(label) + " MoA " + why + ". ";
    return false;
  }
  if (!routing_ok(r.moe_ids, ff.moe.logits, N, E, k, &flips, &why)) {
    *detail += std::string(label) + " MoE " + why + ". ";
    return false;
  }
  if (!cache->g)
    cache->g.reset(new jkref::LayerGrads(jkref::layer_backward(s, hw, xv, ff, doutv, cs, cz, LayerNumerics::hf_bf16)));
  const jkref::LayerGrads& g = *cache->g;
  bool pass = true;
  const Compare co = compare(widen(r.out), ff.out, N, z.D);
  pass = pass && co.finite && co.rel_rms <= kFwdRms && co.max_rel <= kFwdMax;
  const Compare cd = compare(widen(r.dx), g.dx, N, z.D);
  pass = pass && cd.finite && cd.rel_rms <= kBwdRms && cd.max_rel <= kBwdMax;
  double worst_rms = 0, worst_max = 0;
  const char* worst_name = "";
  const auto gall = g.dw.all();
  for (int i = 0; i < 11; ++i) {
    const Compare cg = compare(widen(r.grads[i]), *gall[i], 0, 0);
    pass = pass && cg.finite && cg.rel_rms <= kBwdRms && cg.max_rel <= kBwdMax;
    if (cg.rel_rms > worst_rms) worst_rms = cg.rel_rms, worst_name = jkref::layer_weight_names()[i];
    worst_max = std::max(worst_max, cg.max_rel);
  }
  const double ref_losses[4] = {ff.moa.aux.switch_loss, ff.moa.aux.z_loss, ff.moe.aux.switch_loss, ff.moe.aux.z_loss};
  double loss_err = 0;
  for (int i = 0; i < 4; ++i)
    loss_err = std::max(loss_err, std::fabs(r.losses[i] - ref_losses[i]) / (std::fabs(ref_losses[i]) + 1e-30));
  pass = pass && loss_err <= 1e-3;
  *detail += jkt::format(
      "%s out rms %.2e max %.2e; dx rms %.2e max %.2e; dW worst rms %.2e (%s) max %.2e; "
      "losses %.1e; flips %d. ",
      label, co.rel_rms, co.max_rel, cd.rel_rms, cd.max_rel, worst_rms, worst_name, worst_max, loss_err, flips);
  return pass;
}

CaseResult train_case(jkt::Context& ctx, const Sizes& z, std::uint64_t seed, bool both_paths) {
  jkt::Inputs in(seed);
  const LayerShape s = shape_of(z);
  const std::int64_t N = s.N();
  const LayerWeights hw = jkl::random_layer_weights(s, in);
  DeviceLayer dl(s, hw);
  const std::vector<float> xf = in.activations(N, z.D);
  std::vector<float> gf(static_cast<std::size_t>(N * z.D));
  for (auto& v : gf) v = in.nonzero(0.01f, 1.0f);
  GuardedBuffer<std::uint16_t> x(xf.size()), dout(gf.size());
  x.upload(jkt::to_bf16(xf));
  dout.upload(jkt::to_bf16(gf));
  const Vec xv = widen(jkt::to_bf16(xf)), doutv = widen(jkt::to_bf16(gf));
  RopeTable rope(std::max<std::int64_t>(z.T, 16), z.d);
  const float cs = 0.01f, cz = 0.001f;
  std::string detail;
  bool pass = true, guards = true;
  ReferenceCache cache;

  const jk_layer_config_t tuned = make_config(z, rope, JK_LAYER_TUNED, cs, cz);
  const RunOutputs a = run_device(z, tuned, dl, x, dout, ctx.stream, &guards);
  pass = pass && guards;
  pass = check_against_reference(z, s, hw, xv, doutv, cs, cz, a, "tuned:", &cache, &detail) && pass;
  // Determinism: a second run is bit-identical.
  const RunOutputs b = run_device(z, tuned, dl, x, dout, ctx.stream, &guards);
  bool same = guards && a.out == b.out && a.dx == b.dx && a.losses.size() == b.losses.size();
  for (int i = 0; i < 11 && same; ++i)
    same = std::memcmp(a.grads[i].data(), b.grads[i].data(), a.grads[i].size() * sizeof(float)) == 0;
  detail += same ? "rerun bit-identical. " : "RERUN DIFFERS. ";
  pass = pass && same;
  // The sm_90a kernels (grouped GEMM where n, k % 8 == 0; the attention forward where d is 64 or 128).
  const jk_layer_config_t wgmma = make_config(z, rope, JK_LAYER_WGMMA, cs, cz);
  const RunOutputs w = run_device(z, wgmma, dl, x, dout, ctx.stream, &guards);
  pass = pass && guards;
  pass = check_against_reference(z, s, hw, xv, doutv, cs, cz, w, "wgmma:", &cache, &detail) && pass;
  if (both_paths) {
    const jk_layer_config_t simple = make_config(z, rope, JK_LAYER_SIMPLE, cs, cz);
    const RunOutputs c = run_device(z, simple, dl, x, dout, ctx.stream, &guards);
    pass = pass && guards;
    pass = check_against_reference(z, s, hw, xv, doutv, cs, cz, c, "simple:", &cache, &detail) && pass;
    if (a.moa_ids == c.moa_ids && a.moe_ids == c.moe_ids) {
      const Compare ts = compare(widen(a.out), widen(c.out), N, z.D);
      detail += jkt::format("tuned vs simple out rms %.2e. ", ts.rel_rms);
    }
  }
  if (!guards) detail += "GUARD ZONE WRITTEN. ";
  return {pass, describe(z) + ": " + detail};
}

// grad_beta = 1 adds to the old gradients: run with beta 0, then again with beta 1 on the result.
CaseResult accumulate_case(jkt::Context& ctx, const Sizes& z, std::uint64_t seed) {
  jkt::Inputs in(seed);
  const LayerShape s = shape_of(z);
  const std::int64_t N = s.N();
  const LayerWeights hw = jkl::random_layer_weights(s, in);
  DeviceLayer dl(s, hw);
  const std::vector<float> xf = in.activations(N, z.D);
  std::vector<float> gf(static_cast<std::size_t>(N * z.D));
  for (auto& v : gf) v = in.nonzero(0.01f, 1.0f);
  GuardedBuffer<std::uint16_t> x(xf.size()), dout(gf.size()), out(xf.size()), dx(xf.size());
  x.upload(jkt::to_bf16(xf));
  dout.upload(jkt::to_bf16(gf));
  RopeTable rope(16, z.d);
  const jk_layer_config_t cfg = make_config(z, rope, JK_LAYER_TUNED, 0.01f, 0.001f);
  std::size_t sb = 0, cb = 0;
  CHECK_CUDA(jk_layer_train_bytes(&cfg, z.B, z.T, &sb, &cb));
  DeviceMem saved(sb), scratch(cb);
  jkt::finish(jk_layer_fwd(&dl.wt, &cfg, x.data(), z.B, z.T, out.data(), nullptr, saved.p, sb, scratch.p, cb, nullptr,
                           ctx.stream),
              ctx.stream, "jk_layer_fwd");
  jkt::finish(jk_layer_bwd(&dl.wt, &cfg, x.data(), dout.data(), z.B, z.T, dx.data(), &dl.gt, 0.0f, saved.p, sb,
                           scratch.p, cb, nullptr, ctx.stream),
              ctx.stream, "jk_layer_bwd beta 0");
  std::vector<std::vector<float>> first;
  for (auto& g : dl.g) first.push_back(g->download());
  jkt::finish(jk_layer_bwd(&dl.wt, &cfg, x.data(), dout.data(), z.B, z.T, dx.data(), &dl.gt, 1.0f, saved.p, sb,
                           scratch.p, cb, nullptr, ctx.stream),
              ctx.stream, "jk_layer_bwd beta 1");
  bool pass = dl.guards_intact() && out.guards_intact() && dx.guards_intact();
  for (int i = 0; i < 11; ++i) {
    const std::vector<float> second = dl.g[i]->download();
    for (std::size_t j = 0; j < second.size(); ++j)
      pass = pass && second[j] == first[i][j] + first[i][j];  // x + x is exact
  }
  return {pass, describe(z) + (pass ? ": beta 1 doubles every gradient exactly" : ": beta 1 accumulation wrong")};
}

// Decode: step through positions 0..T-1 from an empty cache; each step's output is compared with the
// reference forward of the whole sequence (the row of that position), and the final cache with the
// reference K (after RoPE) and V.
CaseResult decode_case(jkt::Context& ctx, const Sizes& z, std::uint64_t seed) {
  jkt::Inputs in(seed);
  const LayerShape s = shape_of(z);
  const std::int64_t B = z.B, T = z.T, D = z.D, A = z.Hkv * z.d, N = B * T;
  const LayerWeights hw = jkl::random_layer_weights(s, in);
  DeviceLayer dl(s, hw);
  const std::vector<float> xf = in.activations(N, D);
  const Vec xv = widen(jkt::to_bf16(xf));
  const std::vector<std::uint16_t> xb = jkt::to_bf16(xf);
  RopeTable rope(std::max<std::int64_t>(T, 16), z.d);
  const jk_layer_config_t cfg = make_config(z, rope, JK_LAYER_TUNED, 0.0f, 0.0f);
  const std::int64_t Tmax = T + 3;
  GuardedBuffer<std::uint16_t> kc(static_cast<std::size_t>(B * Tmax * A)), vc(kc.size());
  GuardedBuffer<std::uint16_t> xstep(static_cast<std::size_t>(B * D)), ostep(static_cast<std::size_t>(B * D));
  GuardedBuffer<std::int32_t> len(static_cast<std::size_t>(B));
  const std::size_t bytes = jk_layer_decode_bytes(&cfg, B, Tmax);
  DeviceMem scratch(bytes);
  std::vector<std::uint16_t> got(static_cast<std::size_t>(N * D));
  for (std::int64_t p = 0; p < T; ++p) {
    std::vector<std::uint16_t> xs(static_cast<std::size_t>(B * D));
    for (std::int64_t b = 0; b < B; ++b)
      std::copy(xb.begin() + (b * T + p) * D, xb.begin() + (b * T + p + 1) * D, xs.begin() + b * D);
    xstep.upload(xs);
    len.upload(std::vector<std::int32_t>(static_cast<std::size_t>(B), static_cast<std::int32_t>(p)));
    ostep.poison();
    jkt::finish(jk_layer_decode(&dl.wt, &cfg, xstep.data(), B, kc.data(), vc.data(), len.data(), Tmax, ostep.data(),
                                scratch.p, bytes, nullptr, ctx.stream),
                ctx.stream, "jk_layer_decode");
    const std::vector<std::uint16_t> o = ostep.download();
    for (std::int64_t b = 0; b < B; ++b)
      std::copy(o.begin() + b * D, o.begin() + (b + 1) * D, got.begin() + (b * T + p) * D);
  }
  const jkref::LayerForward f = jkref::layer_forward(s, hw, xv, LayerNumerics::hf_bf16);
  // Rows whose routing is a near tie in either router may legitimately differ: skipped and counted.
  std::vector<bool> skip(static_cast<std::size_t>(N), false);
  int skipped = 0;
  for (std::int64_t t = 0; t < N; ++t) {
    skip[t] = near_tie(f.moa.logits, t, static_cast<int>(z.E), static_cast<int>(z.k)) ||
              near_tie(f.moe.logits, t, static_cast<int>(z.E), static_cast<int>(z.k));
    skipped += skip[t] ? 1 : 0;
  }
  const Compare co = compare(widen(got), f.out, N, D, &skip);
  // Cache rows 0..T-1 against the reference K (after RoPE) and V; rows >= T untouched (poison).
  const std::vector<std::uint16_t> kh = kc.download(), vh = vc.download();
  Vec kg(static_cast<std::size_t>(N * A)), vg(kg.size());
  bool untouched = true;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t u = 0; u < Tmax; ++u)
      for (std::int64_t c = 0; c < A; ++c) {
        const std::size_t src = static_cast<std::size_t>((b * Tmax + u) * A + c);
        if (u < T) {
          kg[(b * T + u) * A + c] = jkt::bf16_value(kh[src]);
          vg[(b * T + u) * A + c] = jkt::bf16_value(vh[src]);
        } else {
          untouched = untouched && kh[src] == 0xffff && vh[src] == 0xffff;
        }
      }
  const Compare ck = compare(kg, f.k, N, A), cv = compare(vg, f.v, N, A);
  const bool guards =
      kc.guards_intact() && vc.guards_intact() && xstep.guards_intact() && ostep.guards_intact() && dl.guards_intact();
  const bool pass = co.finite && co.rel_rms <= kFwdRms && co.max_rel <= kFwdMax && ck.rel_rms <= kFwdRms &&
                    ck.max_rel <= kFwdMax && cv.rel_rms <= kFwdRms && cv.max_rel <= kFwdMax && untouched && guards &&
                    skipped < N;
  return {pass, describe(z) + jkt::format(": out rms %.2e max %.2e (%d near-tie rows skipped); cache K rms %.2e "
                                          "V rms %.2e; rows past T untouched %d; guards %d",
                                          co.rel_rms, co.max_rel, skipped, ck.rel_rms, cv.rel_rms, int(untouched),
                                          int(guards))};
}

CaseResult argument_case(jkt::Context& ctx) {
  const Sizes z{1, 4, 16, 4, 2, 2, 8, 24};
  jkt::Inputs in(5);
  const LayerShape s = shape_of(z);
  const LayerWeights hw = jkl::random_layer_weights(s, in);
  DeviceLayer dl(s, hw);
  RopeTable rope(16, z.d);
  const jk_layer_config_t good = make_config(z, rope, JK_LAYER_TUNED, 0.01f, 0.001f);
  std::size_t sb = 0, cb = 0;
  CHECK_CUDA(jk_layer_train_bytes(&good, z.B, z.T, &sb, &cb));
  DeviceMem saved(sb), scratch(cb);
  GuardedBuffer<std::uint16_t> x(64), out(64), dx(64), dout(64);
  x.upload(std::vector<std::uint16_t>(64, 0x3f80));
  dout.upload(std::vector<std::uint16_t>(64, 0x3f80));
  int bad = 0;
  auto expect_invalid = [&](cudaError_t e) { bad += e == cudaErrorInvalidValue ? 0 : 1; };
  auto fwd = [&](const jk_layer_config_t* c, const jk_layer_weights_t* w, std::int64_t B, std::int64_t T,
                 std::size_t sbytes, std::size_t cbytes) {
    return jk_layer_fwd(w, c, x.data(), B, T, out.data(), nullptr, saved.p, sbytes, scratch.p, cbytes, nullptr,
                        ctx.stream);
  };
  jk_layer_config_t c = good;
  c.num_experts = 0;
  expect_invalid(fwd(&c, &dl.wt, 1, 4, sb, cb));
  c = good, c.top_k = 5;
  expect_invalid(fwd(&c, &dl.wt, 1, 4, sb, cb));
  c = good, c.head_dim = 7;
  expect_invalid(fwd(&c, &dl.wt, 1, 4, sb, cb));
  c = good, c.eps = -1.0f;
  expect_invalid(fwd(&c, &dl.wt, 1, 4, sb, cb));
  c = good, c.rope_table = nullptr;
  expect_invalid(fwd(&c, &dl.wt, 1, 4, sb, cb));
  c = good, c.path = static_cast<jk_layer_path_t>(7);
  expect_invalid(fwd(&c, &dl.wt, 1, 4, sb, cb));
  expect_invalid(fwd(nullptr, &dl.wt, 1, 4, sb, cb));
  jk_layer_weights_t w = dl.wt;
  w.moe_out = nullptr;
  expect_invalid(fwd(&good, &w, 1, 4, sb, cb));
  expect_invalid(fwd(&good, &dl.wt, -1, 4, sb, cb));
  expect_invalid(fwd(&good, &dl.wt, 1, 17, sb, cb));  // T beyond the RoPE table
  expect_invalid(fwd(&good, &dl.wt, 1, 4, sb - 1, cb));
  expect_invalid(fwd(&good, &dl.wt, 1, 4, sb, cb - 1));
  expect_invalid(jk_layer_bwd(&dl.wt, &good, x.data(), dout.data(), 1, 4, dx.data(), &dl.gt, 0.5f, saved.p, sb,
                              scratch.p, cb, nullptr, ctx.stream));
  expect_invalid(jk_layer_bwd(&dl.wt, &good, x.data(), dout.data(), 1, 4, dout.data(), &dl.gt, 0.0f, saved.p, sb,
                              scratch.p, cb, nullptr, ctx.stream));
  jk_layer_grads_t g = dl.gt;
  g.kv_proj = nullptr;
  expect_invalid(jk_layer_bwd(&dl.wt, &good, x.data(), dout.data(), 1, 4, dx.data(), &g, 0.0f, saved.p, sb, scratch.p,
                              cb, nullptr, ctx.stream));
  expect_invalid(jk_layer_train_bytes(&good, 1, 4, nullptr, &cb));
  expect_invalid(jk_layer_decode(&dl.wt, &good, x.data(), 1, nullptr, nullptr, nullptr, 8, out.data(), scratch.p, cb,
                                 nullptr, ctx.stream));
  // Zero sizes: no-ops that touch nothing.
  const bool zero_ok = fwd(&good, &dl.wt, 0, 4, 0, 0) == cudaSuccess && fwd(&good, &dl.wt, 1, 0, 0, 0) == cudaSuccess &&
                       jk_layer_decode(&dl.wt, &good, x.data(), 0, nullptr, nullptr, nullptr, 8, out.data(), nullptr, 0,
                                       nullptr, ctx.stream) == cudaSuccess;
  CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
  const std::vector<std::uint16_t> o = out.download();
  bool untouched = true;
  for (auto v : o) untouched = untouched && v == 0xffff;
  const bool no_error_left = cudaGetLastError() == cudaSuccess;
  const bool pass = bad == 0 && zero_ok && untouched && no_error_left && out.guards_intact() && dx.guards_intact();
  return {pass, jkt::format("%d invalid calls not rejected; zero sizes no-op %d; output untouched %d", bad,
                            int(zero_ok), int(untouched))};
}

std::vector<jkt::Case> make_cases(jkt::Context& ctx) {
  std::vector<jkt::Case> cases;
  cases.push_back({"layer.arguments", [&ctx] { return argument_case(ctx); }});
  const Sizes train_shapes[] = {
      {1, 5, 16, 4, 2, 2, 8, 24},           // tiny (the HF fixture's layout)
      {2, 7, 24, 8, 2, 2, 16, 40},          // odd T, two sequences
      {3, 9, 36, 3, 2, 3, 8, 20},           // D, F not multiples of 8 (unaligned / scalar paths), E = 3
      {2, 64, 256, 8, 2, 4, 64, 384},       // mid-size, tuned tiles
      {1, 256, 2048, 8, 2, 16, 128, 5632},  // JetMoE-8B sizes, short sequence
  };
  for (const Sizes& z : train_shapes) {
    const std::uint64_t seed = ctx.next_seed();
    cases.push_back({"layer.train " + describe(z), [&ctx, z, seed] { return train_case(ctx, z, seed, true); }});
  }
  {
    const Sizes z{2, 6, 32, 4, 2, 2, 8, 24};
    const std::uint64_t seed = ctx.next_seed();
    cases.push_back(
        {"layer.grad_accumulate " + describe(z), [&ctx, z, seed] { return accumulate_case(ctx, z, seed); }});
  }
  const Sizes decode_shapes[] = {
      {1, 6, 16, 4, 2, 2, 8, 24}, {3, 5, 64, 8, 2, 4, 16, 96}, {2, 8, 2048, 8, 2, 16, 128, 5632},  // JetMoE-8B sizes
  };
  for (const Sizes& z : decode_shapes) {
    const std::uint64_t seed = ctx.next_seed();
    cases.push_back({"layer.decode " + describe(z), [&ctx, z, seed] { return decode_case(ctx, z, seed); }});
  }
  return cases;
}

}  // namespace

int main(int argc, char** argv) { return jkt::run_main(argc, argv, "jetmoe-layer-test", make_cases); }
