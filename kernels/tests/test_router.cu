// Self-checking GPU test of the 'router' kernels (include/jetmoe/router.h) against the CPU reference
// kernels/tests/reference/router.hpp (proven on the CPU by tests/kernel_reference/test_router.cpp).
// Every case: fresh random non-zero inputs, outputs poisoned (NaN / 0xFF) inside guard zones, every
// CUDA call checked, guard zones checked, one PASS/FAIL line. Tolerances are stated per case:
//  - ids, counts, offsets, sorted_token, sorted_slot, position, host offsets, gathers, dy: exact;
//  - bf16 combine: bit-exact (every step is one correctly rounded fp32 -> bf16 operation);
//  - bf16 logits: bit-exact except where the exact dot lies within kAccum * sum|u w| of a bf16 rounding
//    boundary (fp32 accumulation), where either neighbour is accepted; fp32 logits within kAccum * sum|u w|;
//  - top-k / gates / plan are compared with the reference applied to the DEVICE logits (so a logit
//    that legitimately rounded the other way cannot make a false failure);
//  - fp32 sums: |err| <= rtol * (sum of |terms|), rtol 2e-6 (gather_bwd, combine fp32, dgate, dlogits, du),
//    1e-5 (aux losses, dbias), 3e-5 (dW: 1024-token sequential partials); gates_f32 relative
//    (6 + k + |v - top|) * 2^-23 (fp32 softmax error bound, about 2x); gates_bf16 = bf16(device gates_f32) exactly;
//  - NaN logits (variant "nan"): only the header's promise (k distinct in-range ids per token, exact plan).
#include "harness.cuh"
#include "reference/router.hpp"

namespace {

using jkt::CaseResult;
using jkt::format;
using jkt::GuardedBuffer;

constexpr double kAccum = 2e-6;  // fp32 accumulation: relative to the sum of absolute terms
constexpr double kRtol = 1e-5;
constexpr double kDwRtol = 3e-5;

// The harness poisons (cudaMemset: asynchronous to the host) and uploads (pageable cudaMemcpy: may return
// before its DMA has landed) on the legacy default stream, which a cudaStreamNonBlocking stream such as
// ctx.stream does not wait for. Call this after buffer setup and before the first launch on ctx.stream.
void device_ready() { CHECK_CUDA(cudaDeviceSynchronize()); }

// Bitwise equality of two downloads (operator== on floats would call NaN outputs different).
template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

std::vector<double> widen(const std::vector<std::uint16_t>& b) {
  std::vector<double> v(b.size());
  for (std::size_t i = 0; i < b.size(); ++i) v[i] = jkt::bf16_value(b[i]);
  return v;
}
std::vector<double> widen(const std::vector<float>& f) { return std::vector<double>(f.begin(), f.end()); }
std::vector<int> widen(const std::vector<std::int32_t>& x) { return std::vector<int>(x.begin(), x.end()); }

template <typename T>
std::vector<T> dl(const GuardedBuffer<T>& b) { return b.download(); }

// Counts mismatches of an int array against the reference over the first n entries.
std::size_t int_mismatch(const std::vector<std::int32_t>& got, const std::vector<int>& want, std::size_t n) {
  std::size_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) bad += got[i] != want[i] ? 1 : 0;
  return bad;
}

// |got - want| <= rtol * scale[i] (+ tiny) for every i; returns the number of violations.
std::size_t close_count(const std::vector<double>& got, const std::vector<double>& want, const std::vector<double>& scale,
                        double rtol, double* worst = nullptr) {
  std::size_t bad = 0;
  double w = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]);
    const double tol = rtol * scale[i] + 1e-30;
    w = std::max(w, err / (scale[i] + 1e-30));
    if (!(err <= tol)) ++bad;
  }
  if (worst) *worst = w;
  return bad;
}

struct Rng {
  std::mt19937_64 gen;
  explicit Rng(std::uint64_t s) : gen(s) {}
  float nonzero(float lo, float hi) {
    std::uniform_real_distribution<float> m(lo, hi);
    return (gen() & 1u) ? m(gen) : -m(gen);
  }
  std::vector<float> vec(std::size_t n, float lo, float hi) {
    std::vector<float> v(n);
    for (auto& x : v) x = nonzero(lo, hi);
    return v;
  }
};

// Bf16-representable copy of a float vector (so that bf16 and fp32 runs see the same values).
std::vector<float> bf16_exact(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(jkt::bf16_value(jkt::expected_f32_to_bf16(v[i])));
  return out;
}

// ---- forward -----------------------------------------------------------------------------------------

enum class Variant { Plain, Ties, OneExpert, Unaligned, NaNs };
const char* variant_name(Variant v) {
  switch (v) {
    case Variant::Plain: return "random";
    case Variant::Ties: return "ties";
    case Variant::OneExpert: return "one-expert";
    case Variant::Unaligned: return "unaligned";
    case Variant::NaNs: return "nan";
  }
  return "?";
}

CaseResult forward_case(jkt::Context& ctx, std::uint64_t seed, std::int64_t N, std::int64_t D, int E, int k, bool bf16,
                        Variant variant) {
  Rng rng(seed);
  std::vector<float> u = bf16_exact(rng.vec(static_cast<std::size_t>(N * D), 1.0f / 64, 1.0f));
  std::vector<float> w = bf16_exact(rng.vec(static_cast<std::size_t>(E * D), 1.0f / 64, 0.5f));
  if (variant == Variant::Ties) {
    if (E > 5) std::copy(w.begin() + 2 * D, w.begin() + 3 * D, w.begin() + 5 * D);  // experts 2 and 5 always tie
    for (std::int64_t t = 0; t < N; t += 7) std::fill(u.begin() + t * D, u.begin() + (t + 1) * D, 0.0f);  // all-0 logits
  } else if (variant == Variant::OneExpert) {
    for (auto& x : u) x = std::fabs(x);
    for (int e = 0; e < E; ++e)
      for (std::int64_t d = 0; d < D; ++d) w[e * D + d] = (e == E / 2) ? 0.5f : -0.25f;  // the rest tie
  } else if (variant == Variant::NaNs) {
    // Header promise: with NaN logits the choices are unspecified, but every token still gets k distinct
    // experts and the plan stays a permutation. Every 5th token: all logits NaN; expert E-1: NaN everywhere.
    for (std::int64_t t = 1; t < N; t += 5) u[t * D + t % D] = NAN;
    if (E > 1) w[(E - 1) * D] = NAN;
  }
  const std::size_t off = variant == Variant::Unaligned ? 1 : 0;
  const std::size_t nk = static_cast<std::size_t>(N * k);

  GuardedBuffer<std::uint16_t> u16(bf16 ? u.size() : 0, off), w16(bf16 ? w.size() : 0, off);
  GuardedBuffer<float> u32(bf16 ? 0 : u.size(), off), w32(bf16 ? 0 : w.size(), off);
  if (bf16) {
    u16.upload(jkt::to_bf16(u));
    w16.upload(jkt::to_bf16(w));
  } else {
    u32.upload(u);
    w32.upload(w);
  }
  GuardedBuffer<float> logits(static_cast<std::size_t>(N * E)), gates(nk);
  GuardedBuffer<std::uint16_t> gates16(nk);
  GuardedBuffer<std::int32_t> ids(nk), counts(E), offsets(E + 1), stok(nk), sslot(nk), pos(nk);
  const std::size_t ws_bytes = jk_router_fwd_workspace_bytes(N, E, k);
  GuardedBuffer<unsigned char> ws(ws_bytes);
  std::int32_t* host_offsets = nullptr;
  CHECK_CUDA(cudaMallocHost(&host_offsets, sizeof(std::int32_t) * (E + 1)));
  std::fill(host_offsets, host_offsets + E + 1, -7);
  device_ready();
  jk_router_outputs_t out{logits.data(), ids.data(), gates.data(), gates16.data(), counts.data(), offsets.data(),
                          stok.data(),   sslot.data(), pos.data(), host_offsets};
  // simple = false: the tuned path (the public functions); true: the simple reference path.
  auto run = [&](bool simple) {
    for (auto* b : {&logits, &gates}) b->poison();
    for (auto* b : {&ids, &counts, &offsets, &stok, &sslot, &pos}) b->poison();
    gates16.poison();
    cudaError_t st;
    if (bf16)
      st = (simple ? jk_router_fwd_bf16_simple : jk_router_fwd_bf16)(u16.data(), w16.data(), N, D, E, k, &out, ws.data(),
                                                                    ws_bytes, ctx.stream);
    else
      st = (simple ? jk_router_fwd_f32_simple : jk_router_fwd_f32)(u32.data(), w32.data(), N, D, E, k, &out, ws.data(),
                                                                  ws_bytes, ctx.stream);
    jkt::finish(st, ctx.stream, simple ? "jk_router_fwd_*_simple" : "jk_router_fwd");
  };
  run(false);
  const auto g_logits = dl(logits);
  const auto g_ids = dl(ids);
  const auto g_gates = dl(gates);
  const auto g_gates16 = dl(gates16);
  const auto g_counts = dl(counts), g_offsets = dl(offsets), g_stok = dl(stok), g_sslot = dl(sslot), g_pos = dl(pos);
  const std::vector<std::int32_t> g_host(host_offsets, host_offsets + E + 1);
  // Determinism: a second run gives the same bits; so does the simple path (same order of every sum).
  const auto same_as_first = [&] {
    return same_bits(dl(logits), g_logits) && dl(ids) == g_ids && same_bits(dl(gates), g_gates) &&
           dl(gates16) == g_gates16 && dl(stok) == g_stok && dl(sslot) == g_sslot && dl(pos) == g_pos &&
           dl(counts) == g_counts && dl(offsets) == g_offsets;
  };
  run(false);
  const bool same = same_as_first();
  run(true);
  const bool same_simple = same_as_first();
  const bool nans = variant == Variant::NaNs;
  CHECK_CUDA(cudaFreeHost(host_offsets));

  // Logits against the exact dot.
  const std::vector<double> ud(u.begin(), u.end()), wd(w.begin(), w.end());
  const auto exact = jkref::router_logits(ud, wd, N, D, E, false);
  std::vector<double> absu(ud), absw(wd);
  for (auto& x : absu) x = std::fabs(x);
  for (auto& x : absw) x = std::fabs(x);
  const auto scale = jkref::router_logits(absu, absw, N, D, E, false);
  std::size_t bad_logits = 0, ambiguous = 0;
  for (std::size_t i = 0; i < (nans ? 0 : exact.size()); ++i) {
    const double got = g_logits[i];
    if (bf16) {
      const double want = jkref::round_bf16(exact[i]);
      if (got == want) continue;
      // Either neighbour is fine when the exact value is within the accumulation error of a boundary.
      const double lo = jkref::round_bf16(exact[i] - kAccum * scale[i]), hi = jkref::round_bf16(exact[i] + kAccum * scale[i]);
      if (lo != hi && got >= lo && got <= hi) ++ambiguous;
      else ++bad_logits;
    } else {
      if (!(std::fabs(got - exact[i]) <= kAccum * scale[i] + 1e-30)) ++bad_logits;
    }
  }
  // Top-k, gates, plan: the reference applied to the device logits.
  // NaN variant: only the promised invariants (ids in range and distinct per token; the plan below).
  std::size_t bad_ids = 0, bad_gates = 0, bad_gates16 = 0;
  if (nans) {
    for (std::int64_t t = 0; t < N; ++t)
      for (int j = 0; j < k; ++j) {
        const int e = g_ids[t * k + j];
        bool ok = e >= 0 && e < E;
        for (int m = 0; m < j; ++m) ok = ok && g_ids[t * k + m] != e;
        bad_ids += ok ? 0 : 1;
      }
  } else {
    const auto ref = jkref::topk_gates(widen(g_logits), N, E, k);
    bad_ids = int_mismatch(g_ids, ref.ids, nk);
    for (std::size_t i = 0; i < nk; ++i) {
      // fp32 softmax of k values: rounding of (v - top) (abs. error <= 2^-24 |v - top|, which is the relative
      // error of its exp), expf (<= 2 ulp), k - 1 fp32 adds and the division; allow about twice that.
      const std::size_t t = i / static_cast<std::size_t>(k);
      const double delta = std::fabs(g_logits[t * E + ref.ids[i]] - g_logits[t * E + ref.ids[t * k]]);
      const double tol = (6.0 + k + delta) * 0x1p-23 * ref.gates[i];
      if (!(std::fabs(g_gates[i] - ref.gates[i]) <= tol + 1e-30)) ++bad_gates;
    }
  }
  // gates_bf16 = bf16(gates_f32) exactly (the device fp32 gate, checked against the reference above).
  for (std::size_t i = 0; i < nk; ++i) bad_gates16 += g_gates16[i] != jkt::expected_f32_to_bf16(g_gates[i]) ? 1 : 0;
  const auto plan = jkref::make_plan(widen(g_ids), N, E, k);
  std::size_t bad_plan = int_mismatch(g_counts, plan.counts, E) + int_mismatch(g_offsets, plan.offsets, E + 1) +
                         int_mismatch(g_host, plan.offsets, E + 1) + int_mismatch(g_stok, plan.sorted_token, nk) +
                         int_mismatch(g_sslot, plan.sorted_slot, nk) + int_mismatch(g_pos, plan.position, nk);
  int empty = 0;
  for (int c : plan.counts) empty += c == 0 ? 1 : 0;
  const bool guards = logits.guards_intact() && gates.guards_intact() && gates16.guards_intact() && ids.guards_intact() &&
                      counts.guards_intact() && offsets.guards_intact() && stok.guards_intact() &&
                      sslot.guards_intact() && pos.guards_intact() && ws.guards_intact();
  const bool pass = bad_logits == 0 && bad_ids == 0 && bad_gates == 0 && bad_gates16 == 0 && bad_plan == 0 && guards &&
                    same && same_simple && (variant != Variant::OneExpert || plan.counts[E / 2] == N);
  return {pass, format("logits %zu wrong (%zu near a boundary took the other side), ids %zu, gates %zu, gates_bf16 %zu, "
                       "plan %zu wrong; %d empty experts; guards %s; rerun %s; simple path %s",
                       bad_logits, ambiguous, bad_ids, bad_gates, bad_gates16, bad_plan, empty,
                       guards ? "intact" : "WRITTEN", same ? "bit-identical" : "DIFFERS",
                       same_simple ? "bit-identical" : "DIFFERS")};
}

// ---- plan from given ids --------------------------------------------------------------------------------

CaseResult plan_case(jkt::Context& ctx, std::uint64_t seed, std::int64_t N, int E, int k, const char* pattern) {
  Rng rng(seed);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(N * k));
  for (std::int64_t t = 0; t < N; ++t) {
    if (std::string(pattern) == "one-expert") {
      for (int j = 0; j < k; ++j) ids[t * k + j] = (E - 1 + j) % E;  // every token: the same k experts
    } else {  // random distinct experts, skewed towards the low ones (some experts stay rare / empty)
      std::vector<int> perm(E);
      for (int e = 0; e < E; ++e) perm[e] = e;
      for (int j = 0; j < k; ++j) {
        const int pick = j + static_cast<int>(rng.gen() % static_cast<std::uint64_t>(std::max(1, std::min(E - j, 3))));
        std::swap(perm[j], perm[pick]);
        ids[t * k + j] = perm[j];
      }
    }
  }
  const std::size_t nk = ids.size();
  GuardedBuffer<std::int32_t> d_ids(nk), counts(E), offsets(E + 1), stok(nk), sslot(nk), pos(nk);
  d_ids.upload(ids);
  const std::size_t ws_bytes = jk_router_fwd_workspace_bytes(N, E, k);
  GuardedBuffer<unsigned char> ws(ws_bytes);
  device_ready();
  jkt::finish(jk_router_plan(d_ids.data(), N, E, k, counts.data(), offsets.data(), stok.data(), sslot.data(), pos.data(),
                             nullptr, ws.data(), ws_bytes, ctx.stream),
              ctx.stream, "jk_router_plan");
  const auto plan = jkref::make_plan(widen(ids), N, E, k);
  const std::size_t bad = int_mismatch(dl(counts), plan.counts, E) + int_mismatch(dl(offsets), plan.offsets, E + 1) +
                          int_mismatch(dl(stok), plan.sorted_token, nk) + int_mismatch(dl(sslot), plan.sorted_slot, nk) +
                          int_mismatch(dl(pos), plan.position, nk);
  const bool guards = counts.guards_intact() && offsets.guards_intact() && stok.guards_intact() && sslot.guards_intact() &&
                      pos.guards_intact();
  return {bad == 0 && guards, format("%zu wrong of %zu plan entries; guards %s", bad, 5 * nk, guards ? "intact" : "WRITTEN")};
}

// ---- aux losses -----------------------------------------------------------------------------------------------

CaseResult aux_case(jkt::Context& ctx, std::uint64_t seed, std::int64_t N, int E, int k, float scale) {
  Rng rng(seed);
  const auto x = rng.vec(static_cast<std::size_t>(N * E), 0.01f, scale);
  const auto top = jkref::topk_gates(widen(x), N, E, k);
  std::vector<std::int32_t> ids(top.ids.begin(), top.ids.end());
  const auto init = rng.vec(x.size(), 0.1f, 1.0f);  // dlogits is accumulated into
  GuardedBuffer<float> d_x(x.size()), losses(2), dlog(x.size());
  GuardedBuffer<std::int32_t> d_ids(ids.size());
  d_x.upload(x);
  d_ids.upload(ids);
  dlog.upload(init);
  const std::size_t ws_bytes = jk_router_aux_workspace_bytes(N, E);
  GuardedBuffer<unsigned char> ws(ws_bytes);
  const float alpha = 0.01f, beta = 0.001f;
  device_ready();
  jkt::finish(jk_router_aux_loss(d_x.data(), d_ids.data(), N, E, k, alpha, beta, losses.data(), dlog.data(), ws.data(),
                                 ws_bytes, ctx.stream),
              ctx.stream, "jk_router_aux_loss");
  const auto l = dl(losses);
  const auto g = dl(dlog);
  const auto ref = jkref::aux_loss(widen(x), top.ids, N, E, k);
  const auto ref_g = jkref::aux_loss_grad(widen(x), top.ids, N, E, k, alpha, beta);
  // Scale of each gradient entry: the magnitude of its terms (the result may cancel to ~0).
  double gmax = 0;
  for (double v : ref_g) gmax = std::max(gmax, std::fabs(v));
  std::vector<double> want(g.size()), sc(g.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    want[i] = init[i] + ref_g[i];
    sc[i] = std::fabs(init[i]) * 1e-2 + gmax;  // fp32 add of init (1 ulp) + fp32 gradient error
  }
  double worst = 0;
  const std::size_t bad_g = close_count(widen(g), want, sc, kRtol, &worst);
  const bool ok_l = std::fabs(l[0] - ref.switch_loss) <= kRtol * ref.switch_loss &&
                    std::fabs(l[1] - ref.z_loss) <= kRtol * ref.z_loss;
  const bool guards = losses.guards_intact() && dlog.guards_intact() && ws.guards_intact();
  return {ok_l && bad_g == 0 && guards,
          format("switch %.7g (ref %.7g), z %.7g (ref %.7g), dlogits %zu outside rtol %g (worst %.2g); guards %s",
                 l[0], ref.switch_loss, l[1], ref.z_loss, bad_g, kRtol, worst, guards ? "intact" : "WRITTEN")};
}

// ---- gather, combine and backward --------------------------------------------------------------------------------

// Routing for the row-level cases: random logits -> reference ids and plan (device kernels tested above).
struct HostRouting {
  jkref::TopK top;
  jkref::Plan plan;
};
HostRouting host_routing(Rng& rng, std::int64_t N, int E, int k) {
  HostRouting r;
  const auto x = rng.vec(static_cast<std::size_t>(N * E), 0.01f, 2.0f);
  r.top = jkref::topk_gates(widen(bf16_exact(x)), N, E, k);
  r.plan = jkref::make_plan(r.top.ids, N, E, k);
  return r;
}
std::vector<std::int32_t> i32(const std::vector<int>& v) { return std::vector<std::int32_t>(v.begin(), v.end()); }

CaseResult rows_case(jkt::Context& ctx, std::uint64_t seed, std::int64_t N, int E, int k, std::int64_t C, bool bf16,
                     std::size_t off) {
  Rng rng(seed);
  const auto r = host_routing(rng, N, E, k);
  const std::size_t nk = static_cast<std::size_t>(N * k);
  const auto x = bf16_exact(rng.vec(static_cast<std::size_t>(N * C), 1.0f / 64, 2.0f));
  const auto y = bf16_exact(rng.vec(nk * C, 1.0f / 64, 2.0f));
  const auto bias = bf16_exact(rng.vec(static_cast<std::size_t>(C), 1.0f / 64, 1.0f));
  const auto dout = bf16_exact(rng.vec(static_cast<std::size_t>(N * C), 1.0f / 64, 2.0f));
  const auto init = bf16_exact(rng.vec(static_cast<std::size_t>(N * C), 1.0f / 64, 1.0f));
  std::vector<float> gates_f(nk), gates_bf(nk);
  for (std::size_t i = 0; i < nk; ++i) {
    gates_f[i] = static_cast<float>(r.top.gates[i]);
    gates_bf[i] = static_cast<float>(jkref::round_bf16(gates_f[i]));
  }
  GuardedBuffer<std::int32_t> stok(nk), pos(nk), ids(nk);
  stok.upload(i32(r.plan.sorted_token));
  pos.upload(i32(r.plan.position));
  ids.upload(i32(r.top.ids));
  GuardedBuffer<float> gf(nk), dgate(nk), dlog(static_cast<std::size_t>(N * E)), dbias(static_cast<std::size_t>(C));
  gf.upload(gates_f);
  const std::size_t ws_bytes = jk_router_combine_bwd_workspace_bytes(N, C);
  GuardedBuffer<unsigned char> ws(ws_bytes);

  std::vector<double> xp_got, dx_got, dx_acc_got, out_got, dy_got;
  std::size_t guards_bad = 0;
  if (bf16) {
    GuardedBuffer<std::uint16_t> dx(x.size(), off), dxp(nk * C, off), dy_in(nk * C, off), out(N * C, off),
        dy(nk * C, off), dyo(static_cast<std::size_t>(N * C), off), yb(nk * C, off), gb(nk), bb(C, off),
        dacc(static_cast<std::size_t>(N * C), off);
    GuardedBuffer<float> dx32(static_cast<std::size_t>(N * C), off);
    dx.upload(jkt::to_bf16(x));
    yb.upload(jkt::to_bf16(y));
    gb.upload(jkt::to_bf16(gates_bf));
    bb.upload(jkt::to_bf16(bias));
    dyo.upload(jkt::to_bf16(dout));
    dacc.upload(jkt::to_bf16(init));
    device_ready();
    jkt::finish(jk_router_gather_bf16(dx.data(), stok.data(), N * k, C, dxp.data(), ctx.stream), ctx.stream, "gather");
    xp_got = widen(dl(dxp));
    // gather backward of y (plays dxp): written fp32, and accumulated into bf16
    jkt::finish(jk_router_gather_bwd_bf16_f32(yb.data(), pos.data(), N, k, C, dx32.data(), 0, ctx.stream), ctx.stream,
                "gather_bwd_bf16_f32");
    dx_got = widen(dl(dx32));
    jkt::finish(jk_router_gather_bwd_bf16(yb.data(), pos.data(), N, k, C, dacc.data(), 1, ctx.stream), ctx.stream,
                "gather_bwd_bf16");
    dx_acc_got = widen(dl(dacc));
    jkt::finish(jk_router_combine_bf16(yb.data(), gb.data(), pos.data(), bb.data(), N, k, C, out.data(), ctx.stream),
                ctx.stream, "combine_bf16");
    out_got = widen(dl(out));
    jkt::finish(jk_router_combine_bwd_bf16(dyo.data(), yb.data(), gb.data(), gf.data(), ids.data(), pos.data(), N, E, k,
                                           C, dy.data(), dgate.data(), dlog.data(), dbias.data(), ws.data(), ws_bytes,
                                           ctx.stream),
                ctx.stream, "combine_bwd_bf16");
    dy_got = widen(dl(dy));
    guards_bad += !dxp.guards_intact() + !dx32.guards_intact() + !dacc.guards_intact() + !out.guards_intact() +
                  !dy.guards_intact();
  } else {
    GuardedBuffer<float> dx(x.size(), off), dxp(nk * C, off), out(N * C, off), dy(nk * C, off),
        dyo(static_cast<std::size_t>(N * C), off), yb(nk * C, off), bb(C, off), dacc(static_cast<std::size_t>(N * C), off),
        dx32(static_cast<std::size_t>(N * C), off);
    dx.upload(x);
    yb.upload(y);
    bb.upload(bias);
    dyo.upload(dout);
    dacc.upload(init);
    device_ready();
    jkt::finish(jk_router_gather_f32(dx.data(), stok.data(), N * k, C, dxp.data(), ctx.stream), ctx.stream, "gather");
    xp_got = widen(dl(dxp));
    jkt::finish(jk_router_gather_bwd_f32(yb.data(), pos.data(), N, k, C, dx32.data(), 0, ctx.stream), ctx.stream,
                "gather_bwd_f32");
    dx_got = widen(dl(dx32));
    jkt::finish(jk_router_gather_bwd_f32(yb.data(), pos.data(), N, k, C, dacc.data(), 1, ctx.stream), ctx.stream,
                "gather_bwd_f32 accumulate");
    dx_acc_got = widen(dl(dacc));
    jkt::finish(jk_router_combine_f32(yb.data(), gf.data(), pos.data(), bb.data(), N, k, C, out.data(), ctx.stream),
                ctx.stream, "combine_f32");
    out_got = widen(dl(out));
    jkt::finish(jk_router_combine_bwd_f32(dyo.data(), yb.data(), gf.data(), ids.data(), pos.data(), N, E, k, C, dy.data(),
                                          dgate.data(), dlog.data(), dbias.data(), ws.data(), ws_bytes, ctx.stream),
                ctx.stream, "combine_bwd_f32");
    dy_got = widen(dl(dy));
    guards_bad += !dxp.guards_intact() + !dx32.guards_intact() + !dacc.guards_intact() + !out.guards_intact() +
                  !dy.guards_intact();
  }
  guards_bad += !dgate.guards_intact() + !dlog.guards_intact() + !dbias.guards_intact() + !ws.guards_intact();

  const std::vector<double> xd(x.begin(), x.end()), yd(y.begin(), y.end()), bd(bias.begin(), bias.end()),
      dod(dout.begin(), dout.end());
  std::vector<double> absy(yd), absd(dod);
  for (auto& v : absy) v = std::fabs(v);
  for (auto& v : absd) v = std::fabs(v);
  std::size_t bad = 0;
  // gather: exact
  bad += xp_got != jkref::gather(xd, r.plan.sorted_token, N * k, C) ? 1 : 0;
  // gather backward
  const auto gsum = jkref::gather_backward(yd, r.plan.position, N, k, C);
  const auto gscale = jkref::gather_backward(absy, r.plan.position, N, k, C);
  std::size_t bad_gb = close_count(dx_got, gsum, gscale, kAccum);
  std::size_t bad_gacc = 0;
  for (std::size_t i = 0; i < gsum.size(); ++i) {
    const double exact = init[i] + gsum[i];
    const double sc = std::fabs(init[i]) + gscale[i];
    if (bf16) {
      const double lo = jkref::round_bf16(exact - kAccum * sc), hi = jkref::round_bf16(exact + kAccum * sc);
      if (!(dx_acc_got[i] >= lo && dx_acc_got[i] <= hi)) ++bad_gacc;
    } else if (!(std::fabs(dx_acc_got[i] - exact) <= kAccum * sc)) {
      ++bad_gacc;
    }
  }
  // combine
  std::size_t bad_out = 0;
  if (bf16) {
    const auto want = jkref::combine_bf16(yd, std::vector<double>(gates_bf.begin(), gates_bf.end()), r.plan.position, bd, N,
                                          k, C);
    for (std::size_t i = 0; i < want.size(); ++i) bad_out += out_got[i] != want[i] ? 1 : 0;  // bit-exact
  } else {
    const auto want = jkref::combine_exact(yd, std::vector<double>(gates_f.begin(), gates_f.end()), r.plan.position, bd, N,
                                           k, C);
    std::vector<double> ones(bd.size());
    for (std::size_t c = 0; c < ones.size(); ++c) ones[c] = std::fabs(bd[c]);
    const auto sc = jkref::combine_exact(absy, std::vector<double>(gates_f.begin(), gates_f.end()), r.plan.position, ones,
                                         N, k, C);
    bad_out = close_count(out_got, want, sc, kAccum);
  }
  // combine backward
  const std::vector<double> gfd(gates_f.begin(), gates_f.end());
  const std::vector<double> gdy = bf16 ? std::vector<double>(gates_bf.begin(), gates_bf.end()) : gfd;
  const auto ref = jkref::combine_backward(dod, yd, gfd, gdy, r.top.ids, r.plan.position, N, E, k, C, bf16);
  const auto refabs = jkref::combine_backward(absd, absy, gfd, gdy, r.top.ids, r.plan.position, N, E, k, C, false);
  std::size_t bad_dy = 0;
  for (std::size_t i = 0; i < dy_got.size(); ++i) {
    if (bf16) bad_dy += dy_got[i] != ref.dy[i] ? 1 : 0;  // one correctly rounded multiply
    else bad_dy += std::fabs(dy_got[i] - ref.dy[i]) <= 1e-7 * std::fabs(ref.dy[i]) ? 0 : 1;
  }
  const std::size_t bad_dgate = close_count(widen(dl(dgate)), ref.dgate, refabs.dgate, kAccum);
  // dlogits: scale = sum_j g_j |dgate_j| terms.
  std::vector<double> dlsc(static_cast<std::size_t>(N * E), 0.0);
  for (std::int64_t t = 0; t < N; ++t) {
    double s = 0;
    for (int j = 0; j < k; ++j) s += refabs.dgate[t * k + j];
    for (int e = 0; e < E; ++e) dlsc[t * E + e] = s;
  }
  const std::size_t bad_dlog = close_count(widen(dl(dlog)), ref.dlogits, dlsc, kAccum);
  const std::size_t bad_dbias = close_count(widen(dl(dbias)), ref.dbias, refabs.dbias, kRtol);  // 256-row sequential chunks
  const bool pass = bad == 0 && bad_gb == 0 && bad_gacc == 0 && bad_out == 0 && bad_dy == 0 && bad_dgate == 0 &&
                    bad_dlog == 0 && bad_dbias == 0 && guards_bad == 0;
  return {pass, format("gather %s; gather_bwd %zu, accumulate %zu; combine %zu%s; dy %zu; dgate %zu; dlogits %zu; "
                       "dbias %zu wrong; %zu guard zones written",
                       bad ? "WRONG" : "exact", bad_gb, bad_gacc, bad_out, bf16 ? " (bit-exact)" : "", bad_dy, bad_dgate,
                       bad_dlog, bad_dbias, guards_bad)};
}

CaseResult router_bwd_case(jkt::Context& ctx, std::uint64_t seed, std::int64_t N, std::int64_t D, int E, bool bf16,
                           bool du_bf16, int accumulate_dw) {
  Rng rng(seed);
  const auto u = bf16_exact(rng.vec(static_cast<std::size_t>(N * D), 1.0f / 64, 1.0f));
  const auto w = bf16_exact(rng.vec(static_cast<std::size_t>(E * D), 1.0f / 64, 0.5f));
  const auto dlg = rng.vec(static_cast<std::size_t>(N * E), 1e-3f, 0.1f);
  const auto dw0 = rng.vec(static_cast<std::size_t>(E * D), 0.1f, 1.0f);
  const auto du0 = bf16_exact(rng.vec(static_cast<std::size_t>(N * D), 0.1f, 1.0f));
  GuardedBuffer<std::uint16_t> u16(bf16 ? u.size() : 0), w16(bf16 ? w.size() : 0), du16(du_bf16 ? du0.size() : 0);
  GuardedBuffer<float> u32(bf16 ? 0 : u.size()), w32(bf16 ? 0 : w.size()), du32(du_bf16 ? 0 : du0.size()),
      dl_d(dlg.size()), dw(dw0.size());
  if (bf16) {
    u16.upload(jkt::to_bf16(u));
    w16.upload(jkt::to_bf16(w));
  } else {
    u32.upload(u);
    w32.upload(w);
  }
  if (du_bf16) du16.upload(jkt::to_bf16(du0));
  else du32.upload(du0);
  dl_d.upload(dlg);
  dw.upload(dw0);
  const std::size_t ws_bytes = jk_router_bwd_workspace_bytes(N, D, E);
  GuardedBuffer<unsigned char> ws(ws_bytes);
  device_ready();
  // simple = false: the tuned path (the public functions); true: the simple reference path.
  const auto run = [&](bool simple) {
    const cudaError_t st =
        bf16 ? (simple ? jk_router_bwd_bf16_simple : jk_router_bwd_bf16)(
                   u16.data(), w16.data(), dl_d.data(), N, D, E, dw.data(), accumulate_dw,
                   du_bf16 ? nullptr : du32.data(), du_bf16 ? du16.data() : nullptr, ws.data(), ws_bytes, ctx.stream)
             : (simple ? jk_router_bwd_f32_simple : jk_router_bwd_f32)(u32.data(), w32.data(), dl_d.data(), N, D, E,
                                                                      dw.data(), accumulate_dw, du32.data(), ws.data(),
                                                                      ws_bytes, ctx.stream);
    jkt::finish(st, ctx.stream, simple ? "jk_router_bwd_*_simple" : "jk_router_bwd");
  };
  // The simple path first (from the same dw0 / du0), then the tuned one, whose outputs are checked.
  run(true);
  const auto simple_dw = dl(dw);
  const auto simple_du16 = dl(du16);
  const auto simple_du32 = dl(du32);
  dw.upload(dw0);
  if (du_bf16) du16.upload(jkt::to_bf16(du0));
  else du32.upload(du0);
  run(false);
  const bool same_simple = same_bits(dl(dw), simple_dw) && same_bits(dl(du16), simple_du16) &&
                           same_bits(dl(du32), simple_du32);
  const std::vector<double> ud(u.begin(), u.end()), wd(w.begin(), w.end()), dld(dlg.begin(), dlg.end());
  std::vector<double> au(ud), aw(wd), adl(dld);
  for (auto& v : au) v = std::fabs(v);
  for (auto& v : aw) v = std::fabs(v);
  for (auto& v : adl) v = std::fabs(v);
  auto dw_ref = jkref::router_dw(ud, dld, N, D, E);
  auto dw_sc = jkref::router_dw(au, adl, N, D, E);
  if (accumulate_dw)
    for (std::size_t i = 0; i < dw_ref.size(); ++i) dw_ref[i] += dw0[i], dw_sc[i] += std::fabs(dw0[i]);
  double worst_dw = 0, worst_du = 0;
  // dW sums 1024 tokens sequentially per partial: allow 3e-5 of the absolute sum.
  const std::size_t bad_dw = close_count(widen(dl(dw)), dw_ref, dw_sc, kDwRtol, &worst_dw);
  const auto du_ref = jkref::router_du(wd, dld, N, D, E);
  const auto du_sc = jkref::router_du(aw, adl, N, D, E);
  std::size_t bad_du = 0;
  const std::vector<double> du_got = du_bf16 ? widen(dl(du16)) : widen(dl(du32));
  for (std::size_t i = 0; i < du_got.size(); ++i) {
    const double exact = du0[i] + du_ref[i];
    const double sc = std::fabs(du0[i]) + du_sc[i];
    if (du_bf16) {
      const double lo = jkref::round_bf16(exact - kAccum * sc), hi = jkref::round_bf16(exact + kAccum * sc);
      if (!(du_got[i] >= lo && du_got[i] <= hi)) ++bad_du;
    } else {
      const double err = std::fabs(du_got[i] - exact);
      worst_du = std::max(worst_du, err / sc);
      if (!(err <= kAccum * sc)) ++bad_du;
    }
  }
  const bool guards = dw.guards_intact() && du16.guards_intact() && du32.guards_intact() && ws.guards_intact();
  return {bad_dw == 0 && bad_du == 0 && guards && same_simple,
          format("dW %zu outside rtol %g (worst %.2g), du %zu wrong (worst %.2g); guards %s; simple path %s", bad_dw,
                 kDwRtol, worst_dw, bad_du, worst_du, guards ? "intact" : "WRITTEN",
                 same_simple ? "bit-identical" : "DIFFERS")};
}

// ---- argument validation --------------------------------------------------------------------------------

CaseResult args_case(jkt::Context& ctx) {
  GuardedBuffer<std::uint16_t> u(64), w(64);
  GuardedBuffer<float> f(64);
  GuardedBuffer<std::int32_t> i(64), counts(8), offsets(9);
  GuardedBuffer<unsigned char> ws(1 << 16);
  device_ready();
  jk_router_outputs_t out{f.data(), i.data(), f.data(), nullptr, counts.data(), offsets.data(), i.data(), i.data(), i.data(),
                          nullptr};
  const auto ws_n = [](std::int64_t n, int e, int k) { return jk_router_fwd_workspace_bytes(n, e, k); };
  int wrong = 0;
  std::string which;
  const auto expect = [&](cudaError_t got, cudaError_t want, const char* what) {
    if (got != want) {
      ++wrong;
      which += std::string(" ") + what;
    }
  };
  const cudaError_t inv = cudaErrorInvalidValue;
  const auto s = ctx.stream;
  expect(jk_router_fwd_bf16(u.data(), w.data(), 4, 16, 0, 1, &out, ws.data(), ws.size(), s), inv, "E=0");
  expect(jk_router_fwd_bf16(u.data(), w.data(), 4, 16, 65, 1, &out, ws.data(), ws.size(), s), inv, "E=65");
  expect(jk_router_fwd_bf16(u.data(), w.data(), 4, 16, 4, 0, &out, ws.data(), ws.size(), s), inv, "k=0");
  expect(jk_router_fwd_bf16(u.data(), w.data(), 4, 16, 4, 5, &out, ws.data(), ws.size(), s), inv, "k>E");
  expect(jk_router_fwd_bf16(u.data(), w.data(), -1, 16, 4, 2, &out, ws.data(), ws.size(), s), inv, "N<0");
  expect(jk_router_fwd_bf16(u.data(), w.data(), 4, 0, 4, 2, &out, ws.data(), ws.size(), s), inv, "D=0");
  expect(jk_router_fwd_bf16(nullptr, w.data(), 4, 16, 4, 2, &out, ws.data(), ws.size(), s), inv, "u=null");
  expect(jk_router_fwd_bf16(u.data(), w.data(), 4, 16, 4, 2, nullptr, ws.data(), ws.size(), s), inv, "out=null");
  expect(jk_router_fwd_bf16(u.data(), w.data(), 4, 16, 4, 2, &out, nullptr, ws_n(4, 4, 2), s), inv, "ws=null");
  expect(jk_router_fwd_bf16(u.data(), w.data(), 4, 16, 4, 2, &out, ws.data(), ws_n(4, 4, 2) - 1, s), inv, "ws small");
  expect(jk_router_fwd_bf16(u.data(), w.data(), 0x40000000LL, 16, 4, 2, &out, ws.data(), ws.size(), s), inv, "N*k>int32");
  expect(jk_router_aux_loss(f.data(), i.data(), 4, 4, 2, NAN, 0.f, f.data(), nullptr, ws.data(), ws.size(), s), inv,
         "alpha=NaN");
  expect(jk_router_aux_loss(f.data(), i.data(), 4, 4, 2, 0.f, 0.f, nullptr, nullptr, ws.data(), ws.size(), s), inv,
         "losses=null");
  expect(jk_router_gather_bf16(nullptr, i.data(), 4, 8, u.data(), s), inv, "gather x=null");
  expect(jk_router_gather_bf16(u.data(), i.data(), -1, 8, u.data(), s), inv, "gather rows<0");
  expect(jk_router_gather_bwd_f32(f.data(), i.data(), 4, 0, 8, f.data(), 0, s), inv, "gather_bwd k=0");
  expect(jk_router_combine_bf16(u.data(), u.data(), i.data(), nullptr, 4, 2, 8, nullptr, s), inv, "combine out=null");
  expect(jk_router_combine_bwd_bf16(u.data(), u.data(), u.data(), f.data(), i.data(), i.data(), 4, 4, 5, 8, u.data(),
                                    nullptr, f.data(), nullptr, nullptr, 0, s),
         inv, "combine_bwd k>E");
  expect(jk_router_bwd_f32(f.data(), f.data(), f.data(), 4, 8, 2, f.data(), 0, nullptr, nullptr, 0, s), inv,
         "bwd ws small");
  expect(jk_router_bwd_bf16(u.data(), w.data(), f.data(), 4, 8, 2, nullptr, 0, f.data(), u.data(), nullptr, 0, s), inv,
         "bwd two du");
  // Zero sizes: no-ops, except that the forward / plan still write counts = 0 and offsets = 0.
  expect(jk_router_gather_bf16(nullptr, nullptr, 0, 8, nullptr, s), cudaSuccess, "gather rows=0");
  expect(jk_router_combine_f32(nullptr, nullptr, nullptr, nullptr, 0, 2, 8, nullptr, s), cudaSuccess, "combine N=0");
  expect(jk_router_gather_bwd_bf16(nullptr, nullptr, 0, 2, 8, nullptr, 0, s), cudaSuccess, "gather_bwd N=0");
  expect(jk_router_bwd_bf16(nullptr, nullptr, nullptr, 0, 8, 2, nullptr, 0, nullptr, nullptr, nullptr, 0, s), cudaSuccess,
         "bwd N=0");
  jk_router_outputs_t empty{nullptr, nullptr, nullptr, nullptr, counts.data(), offsets.data(), nullptr, nullptr, nullptr,
                            nullptr};
  expect(jk_router_fwd_bf16(nullptr, nullptr, 0, 16, 8, 2, &empty, nullptr, 0, s), cudaSuccess, "fwd N=0");
  CHECK_CUDA(cudaStreamSynchronize(s));
  const auto c = counts.download();
  const auto o = offsets.download();
  bool zeros = true;
  for (auto v : c) zeros = zeros && v == 0;
  for (auto v : o) zeros = zeros && v == 0;
  const cudaError_t sticky = cudaGetLastError();
  return {wrong == 0 && zeros && sticky == cudaSuccess && f.guards_intact() && i.guards_intact(),
          format("%d wrong statuses%s; N=0 counts/offsets %s; pending error %s", wrong, which.c_str(),
                 zeros ? "zero" : "NOT ZERO", cudaGetErrorName(sticky))};
}

std::vector<jkt::Case> make_cases(jkt::Context& ctx) {
  std::vector<jkt::Case> cases;
  cases.push_back({"router.args", [&ctx] { return args_case(ctx); }});
  struct F {
    std::int64_t N, D;
    int E, k;
    Variant v;
  };
  const F fwd[] = {{1, 2048, 8, 2, Variant::Plain},     {7, 2048, 8, 2, Variant::Ties},
                   {1000, 2048, 8, 2, Variant::Plain},  {4096, 2048, 8, 2, Variant::Ties},
                   {16384, 2048, 8, 2, Variant::Plain}, {16384, 2048, 8, 2, Variant::OneExpert},
                   {1000, 33, 8, 2, Variant::Plain},    {999, 40, 8, 2, Variant::Unaligned},
                   {513, 64, 64, 5, Variant::Ties},     {300, 16, 3, 3, Variant::Plain},
                   {70, 24, 1, 1, Variant::Plain},      {2000, 128, 40, 40, Variant::Plain},
                   {5000, 96, 16, 4, Variant::OneExpert}, {257, 64, 8, 2, Variant::NaNs},
                   {300, 40, 64, 6, Variant::NaNs},     {1000, 1024, 64, 2, Variant::Plain}};
  for (bool bf16 : {true, false}) {
    for (const F& c : fwd) {
      const std::uint64_t seed = ctx.next_seed();
      cases.push_back({format("router.fwd_%s N=%lld D=%lld E=%d k=%d %s", bf16 ? "bf16" : "f32", (long long)c.N,
                              (long long)c.D, c.E, c.k, variant_name(c.v)),
                       [&ctx, seed, c, bf16] { return forward_case(ctx, seed, c.N, c.D, c.E, c.k, bf16, c.v); }});
    }
  }
  struct P {
    std::int64_t N;
    int E, k;
    const char* pattern;
  };
  const P plans[] = {{1, 8, 2, "random"}, {5000, 8, 2, "random"}, {16384, 8, 2, "one-expert"}, {20000, 64, 7, "random"},
                     {33333, 8, 1, "one-expert"}, {100000, 8, 2, "random"}};
  for (const P& p : plans) {
    const std::uint64_t seed = ctx.next_seed();
    cases.push_back({format("router.plan N=%lld E=%d k=%d %s", (long long)p.N, p.E, p.k, p.pattern),
                     [&ctx, seed, p] { return plan_case(ctx, seed, p.N, p.E, p.k, p.pattern); }});
  }
  struct A {
    std::int64_t N;
    int E, k;
    float scale;
  };
  const A auxes[] = {{1, 8, 2, 1.0f}, {7, 8, 2, 3.0f}, {4096, 8, 2, 2.0f}, {16384, 8, 2, 8.0f}, {1000, 64, 6, 2.0f},
                     {300, 3, 1, 50.0f}};
  for (const A& a : auxes) {
    const std::uint64_t seed = ctx.next_seed();
    cases.push_back({format("router.aux N=%lld E=%d k=%d scale=%g", (long long)a.N, a.E, a.k, a.scale),
                     [&ctx, seed, a] { return aux_case(ctx, seed, a.N, a.E, a.k, a.scale); }});
  }
  struct R {
    std::int64_t N;
    int E, k;
    std::int64_t C;
    std::size_t off;
  };
  const R rows[] = {{1, 8, 2, 2048, 0},  {7, 8, 2, 40, 0},      {1000, 8, 2, 2048, 0}, {4096, 8, 2, 2048, 0},
                    {333, 8, 2, 33, 0},  {500, 8, 2, 2048, 1},  {200, 16, 5, 72, 0},   {16384, 8, 2, 2048, 0}};
  for (bool bf16 : {true, false}) {
    for (const R& r : rows) {
      const std::uint64_t seed = ctx.next_seed();
      cases.push_back({format("router.rows_%s N=%lld E=%d k=%d C=%lld%s", bf16 ? "bf16" : "f32", (long long)r.N, r.E, r.k,
                              (long long)r.C, r.off ? " unaligned" : ""),
                       [&ctx, seed, r, bf16] { return rows_case(ctx, seed, r.N, r.E, r.k, r.C, bf16, r.off); }});
    }
  }
  struct B {
    std::int64_t N, D;
    int E;
    bool bf16, du_bf16;
    int acc;
  };
  const B bwds[] = {{1, 2048, 8, true, false, 0},     {7, 33, 8, true, true, 1},        {1000, 2048, 8, true, false, 1},
                    {4096, 2048, 8, true, true, 0},   {16384, 2048, 8, true, false, 0}, {3000, 100, 64, true, false, 0},
                    {1000, 2048, 8, false, false, 1}, {2500, 40, 3, false, false, 0}, {1000, 264, 64, true, true, 1}};
  for (const B& b : bwds) {
    const std::uint64_t seed = ctx.next_seed();
    cases.push_back({format("router.bwd_%s N=%lld D=%lld E=%d du=%s%s", b.bf16 ? "bf16" : "f32", (long long)b.N,
                            (long long)b.D, b.E, b.du_bf16 ? "bf16" : "f32", b.acc ? " accumulate" : ""),
                     [&ctx, seed, b] { return router_bwd_case(ctx, seed, b.N, b.D, b.E, b.bf16, b.du_bf16, b.acc); }});
  }
  return cases;
}

}  // namespace

int main(int argc, char** argv) { return jkt::run_main(argc, argv, "jetmoe-router-test", make_cases); }
