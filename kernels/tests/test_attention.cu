// Self-checking GPU test of the 'attention' kernels (jetmoe/attention.h) against the CPU double
// reference kernels/tests/reference/attention.hpp (itself proven by tests/kernel_reference/test_attention.cpp).
//
// Every case: fresh random non-zero bf16 inputs from the case seed, outputs poisoned with NaN inside
// guard zones before each run, every CUDA call checked, guard zones checked afterwards, a second run
// compared bit for bit (determinism). One PASS/FAIL line per case. Large shapes check a sample of rows
// (first/last rows, tile boundaries, random rows) against the reference, which is exact per row.
//
// Tolerances (got: the kernel's result, ref: double precision on the same bf16 inputs):
// (bf16 has 8 significant bits: one rounding is off by at most 2^-8 relative.)
//  forward out, SIMPLE:  |got - ref| <= 2^-7 |ref| + 1e-4 max|V|
//      fp32 softmax and accumulation (sequential sums of up to 4096 terms: ~1e-6 typical, the absolute
//      term covers outputs that cancel to near zero), then one bf16 rounding (<= 2^-8 |ref|).
//  forward out, TUNED:   |got - ref| <= 2^-7 |ref| + 2^-8 max|V|
//      as above, plus the unnormalised probabilities rounded to bf16 before P.V (each term off by
//      <= 2^-8 relative, so the sum by <= 2^-8 sum_u p_u |v_u| <= 2^-8 max|V|). An exact emulation of
//      these numerics in tests/kernel_reference/test_attention.cpp reaches 0.27 (0.32 for a sharp
//      softmax) of this tolerance, the emulated tuned kernel 0.33.
//  lse (both):           |got - ref| <= 1e-4 + 1e-5 |ref|     (fp32 sums of <= 4096 terms)
//  dq, dk, dv SIMPLE, bf16 out:  |got - ref| <= 2^-7 |ref| + 2^-7 max|ref of that tensor|
//  dq, dk, dv SIMPLE, fp32 out:  |got - ref| <= 2^-8 |ref| + 2^-7 max|ref of that tensor|
//      the device takes D = rowsum(dout * out) from the bf16 forward output (rounded <= 2^-8 relative;
//      the reference uses the exact D = sum_u P dP), and accumulates in fp32; bf16 outputs add one
//      rounding. The absolute term is a fraction of the tensor's largest gradient.
//  dq, dk, dv TUNED (bf16 and fp32 out): |got - ref| <= 2^-7 |ref| + 2^-7 max|ref of that tensor|
//      P and dS are also rounded to bf16 for the tensor-core products (as FA2 does); dS cancels within
//      each row, so its rounding is the largest term. The exact emulation of these numerics in
//      tests/kernel_reference/test_attention.cpp reaches 0.23 (0.66 for a sharp softmax) of this.
//  decode out:           |got - ref| <= 2^-7 |ref| + 1e-4 max|V|, lse as above (fp32 split-K).
#include "harness.cuh"
#include "reference/attention.hpp"

#include <cinttypes>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

using namespace jkt;
using jkref::AttentionShape;

constexpr double kInf = std::numeric_limits<double>::infinity();

// Random non-zero bf16 values: bits for the device, exact values for the reference.
struct Bf16Tensor {
  std::vector<std::uint16_t> bits;
  std::vector<double> value;
};

Bf16Tensor random_bf16(Inputs& in, std::size_t n, float lo, float hi) {
  Bf16Tensor t;
  t.bits.resize(n);
  t.value.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    t.bits[i] = round_to_bf16(in.nonzero(lo, hi));
    t.value[i] = bf16_value(t.bits[i]);
  }
  return t;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// Per-row exact reference with memoisation (lse and D of every row of a head are computed once when a
// dk/dv row needs them). Rows are (b, i, t) for queries and (b, u, h) for keys.
class Oracle {
 public:
  Oracle(const AttentionShape& s, const std::vector<std::int32_t>& len, const std::vector<double>& q,
         const std::vector<double>& k, const std::vector<double>& v, const std::vector<double>* dout)
      : s_(s), len_(len), q_(q), k_(k), v_(v), dout_(dout) {}

  std::int64_t length(std::int64_t b) const { return jkref::attention_length(len_, b, s_.T); }

  // out row and lse of query row (b, i, t) (zeros / -inf on a padded row)
  double row(std::int64_t b, std::int64_t i, std::int64_t t, std::vector<double>& out) {
    out.assign(static_cast<std::size_t>(s_.d), 0.0);
    if (t >= length(b)) return -kInf;
    std::vector<double> p;
    const double lse = jkref::attention_row_probs(q_, k_, s_, b, i, t, t + 1, p);
    const std::int64_t h = jkref::attention_kv_head(i, s_.Hkv);
    for (std::int64_t u = 0; u <= t; ++u)
      for (std::int64_t c = 0; c < s_.d; ++c) out[c] += p[u] * v_[s_.kv_index(b, u, h, c)];
    return lse;
  }

  // dq row of (b, i, t)
  void dq_row(std::int64_t b, std::int64_t i, std::int64_t t, std::vector<double>& dq) {
    dq.assign(static_cast<std::size_t>(s_.d), 0.0);
    if (t >= length(b)) return;
    const std::int64_t h = jkref::attention_kv_head(i, s_.Hkv);
    std::vector<double> p;
    jkref::attention_row_probs(q_, k_, s_, b, i, t, t + 1, p);
    std::vector<double> dp(p.size());
    double delta = 0;
    for (std::int64_t u = 0; u <= t; ++u) {
      double x = 0;
      for (std::int64_t c = 0; c < s_.d; ++c) x += (*dout_)[s_.q_index(b, t, i, c)] * v_[s_.kv_index(b, u, h, c)];
      dp[u] = x;
      delta += p[u] * x;
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(s_.d));
    for (std::int64_t u = 0; u <= t; ++u)
      for (std::int64_t c = 0; c < s_.d; ++c) dq[c] += p[u] * (dp[u] - delta) * scale * k_[s_.kv_index(b, u, h, c)];
  }

  // dk and dv rows of key (b, u, h): sum over the query heads on h and the queries t >= u
  void dkdv_row(std::int64_t b, std::int64_t u, std::int64_t h, std::vector<double>& dk, std::vector<double>& dv) {
    dk.assign(static_cast<std::size_t>(s_.d), 0.0);
    dv.assign(static_cast<std::size_t>(s_.d), 0.0);
    const std::int64_t len = length(b);
    if (u >= len) return;
    const double scale = 1.0 / std::sqrt(static_cast<double>(s_.d));
    for (std::int64_t i = h; i < s_.Hq; i += s_.Hkv) {
      const auto& st = stats(b, i);
      for (std::int64_t t = u; t < len; ++t) {
        double sc = 0, dp = 0;
        for (std::int64_t c = 0; c < s_.d; ++c) {
          sc += q_[s_.q_index(b, t, i, c)] * k_[s_.kv_index(b, u, h, c)];
          dp += (*dout_)[s_.q_index(b, t, i, c)] * v_[s_.kv_index(b, u, h, c)];
        }
        const double p = std::exp(sc * scale - st.lse[t]);
        const double ds = p * (dp - st.delta[t]) * scale;
        for (std::int64_t c = 0; c < s_.d; ++c) {
          dk[c] += ds * q_[s_.q_index(b, t, i, c)];
          dv[c] += p * (*dout_)[s_.q_index(b, t, i, c)];
        }
      }
    }
  }

 private:
  struct HeadStats {
    std::vector<double> lse, delta;
  };
  const HeadStats& stats(std::int64_t b, std::int64_t i) {
    const auto key = std::make_pair(b, i);
    auto it = memo_.find(key);
    if (it != memo_.end()) return it->second;
    HeadStats st;
    const std::int64_t len = length(b);
    st.lse.assign(static_cast<std::size_t>(s_.T), -kInf);
    st.delta.assign(static_cast<std::size_t>(s_.T), 0.0);
    std::vector<double> out;
    for (std::int64_t t = 0; t < len; ++t) {
      st.lse[t] = row(b, i, t, out);
      double dl = 0;
      for (std::int64_t c = 0; c < s_.d; ++c) dl += (*dout_)[s_.q_index(b, t, i, c)] * out[c];
      st.delta[t] = dl;
    }
    return memo_.emplace(key, std::move(st)).first->second;
  }

  AttentionShape s_;
  std::vector<std::int32_t> len_;
  const std::vector<double>& q_;
  const std::vector<double>& k_;
  const std::vector<double>& v_;
  const std::vector<double>* dout_;
  std::map<std::pair<std::int64_t, std::int64_t>, HeadStats> memo_;
};

// Positions to check: all when T <= full_limit, else the edges, tile boundaries and a few random ones.
std::vector<std::int64_t> sample_positions(std::int64_t T, std::int64_t full_limit, Inputs& in) {
  std::vector<std::int64_t> pos;
  if (T <= full_limit) {
    for (std::int64_t t = 0; t < T; ++t) pos.push_back(t);
    return pos;
  }
  std::set<std::int64_t> set{0, 1, 2, 15, 16, 63, 64, 65, 127, 128, 129, T / 2, T - 65, T - 64, T - 2, T - 1};
  for (int r = 0; r < 8; ++r) set.insert(static_cast<std::int64_t>(in.bits32() % static_cast<std::uint32_t>(T)));
  for (auto t : set)
    if (t >= 0 && t < T) pos.push_back(t);
  return pos;
}

struct ErrorTally {
  double worst_ratio = 0;  // max |got - ref| / tolerance
  std::int64_t bad = 0, checked = 0;
  std::string first_bad;
  void add(double got, double ref, double tol, const char* what, std::int64_t a, std::int64_t b, std::int64_t c,
           std::int64_t col) {
    ++checked;
    const double err = std::fabs(got - ref);
    const bool ok = std::isfinite(got) && err <= tol;
    if (std::isfinite(got)) worst_ratio = std::max(worst_ratio, err / tol);
    if (!ok) {
      if (bad == 0)
        first_bad = format("%s[%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64 "] got %.6g ref %.6g", what, a, b, c, col,
                           got, ref);
      ++bad;
    }
  }
  void add_lse(double got, double ref, std::int64_t b, std::int64_t i, std::int64_t t) {
    ++checked;
    if (std::isinf(ref)) {
      if (!(std::isinf(got) && got < 0)) {
        if (bad == 0) first_bad = format("lse[%" PRId64 ",%" PRId64 ",%" PRId64 "] got %.6g, want -inf", b, i, t, got);
        ++bad;
      }
      return;
    }
    add(got, ref, 1e-4 + 1e-5 * std::fabs(ref), "lse", b, i, t, 0);
  }
  std::string summary() const {
    return format("%" PRId64 " values, worst err/tol %.3f", checked, worst_ratio) +
           (bad ? format(", %" PRId64 " BAD, first: %s", bad, first_bad.c_str()) : std::string());
  }
};

std::string shape_name(const AttentionShape& s, const std::vector<std::int32_t>& len) {
  std::string n =
      format("B=%" PRId64 " T=%" PRId64 " Hq=%" PRId64 " Hkv=%" PRId64 " d=%" PRId64, s.B, s.T, s.Hq, s.Hkv, s.d);
  if (!len.empty()) {
    n += " len={";
    for (std::size_t i = 0; i < len.size(); ++i) n += (i ? "," : "") + std::to_string(len[i]);
    n += "}";
  }
  return n;
}

jk_attention_shape_t to_api(const AttentionShape& s) { return {s.B, s.T, s.Hq, s.Hkv, s.d}; }

const char* path_name(jk_attention_path_t p) {
  return p == JK_ATTENTION_SIMPLE ? "simple" : p == JK_ATTENTION_TUNED ? "tuned" : p == JK_ATTENTION_WGMMA ? "wgmma" : "auto";
}

struct FwdSpec {
  AttentionShape s;
  std::vector<std::int32_t> len;
  float scale_hi;  // input magnitude (larger: sharper softmax)
};

// Forward against the reference; determinism by a second run.
CaseResult check_forward(Context& ctx, const FwdSpec& spec, jk_attention_path_t path) {
  const AttentionShape& s = spec.s;
  Inputs in(ctx.next_seed());
  const auto q = random_bf16(in, s.q_size(), 1.0f / 64, spec.scale_hi);
  const auto k = random_bf16(in, s.kv_size(), 1.0f / 64, spec.scale_hi);
  const auto v = random_bf16(in, s.kv_size(), 1.0f / 64, 2.0f);
  GuardedBuffer<std::uint16_t> dq(s.q_size()), dk(s.kv_size()), dv(s.kv_size()), dout(s.q_size());
  GuardedBuffer<float> dlse(s.lse_size());
  GuardedBuffer<std::int32_t> dlen(spec.len.empty() ? 1 : spec.len.size());
  dq.upload(q.bits);
  dk.upload(k.bits);
  dv.upload(v.bits);
  if (!spec.len.empty()) dlen.upload(spec.len);
  const std::int32_t* len_ptr = spec.len.empty() ? nullptr : dlen.data();

  finish(jk_attention_fwd_bf16(dq.data(), dk.data(), dv.data(), len_ptr, dout.data(), dlse.data(), to_api(s), path,
                               ctx.stream),
         ctx.stream, "jk_attention_fwd_bf16");
  const auto out1 = dout.download();
  const auto lse1 = dlse.download();
  const bool guards =
      dout.guards_intact() && dlse.guards_intact() && dq.guards_intact() && dk.guards_intact() && dv.guards_intact();
  dout.poison();
  dlse.poison();
  finish(jk_attention_fwd_bf16(dq.data(), dk.data(), dv.data(), len_ptr, dout.data(), dlse.data(), to_api(s), path,
                               ctx.stream),
         ctx.stream, "jk_attention_fwd_bf16 (second run)");
  const bool same =
      dout.download() == out1 && std::memcmp(dlse.download().data(), lse1.data(), lse1.size() * sizeof(float)) == 0;

  Oracle oracle(s, spec.len, q.value, k.value, v.value, nullptr);
  const double vmax = max_abs(v.value);
  const bool tuned = path != JK_ATTENTION_SIMPLE;
  const double rel = std::ldexp(1.0, -7);
  const double abs_tol = tuned ? std::ldexp(vmax, -8) : 1e-4 * vmax;
  ErrorTally tally;
  std::vector<double> ref;
  for (std::int64_t b = 0; b < s.B; ++b)
    for (std::int64_t t : sample_positions(s.T, 200, in))
      for (std::int64_t i = 0; i < s.Hq; ++i) {
        if (s.T > 200 && s.Hq > 4 && (i % 7) != (t % 7) && i != 0 && i != s.Hq - 1) continue;  // sample heads too
        const double lse_ref = oracle.row(b, i, t, ref);
        tally.add_lse(lse1[s.lse_index(b, i, t)], lse_ref, b, i, t);
        for (std::int64_t c = 0; c < s.d; ++c)
          tally.add(bf16_value(out1[s.q_index(b, t, i, c)]), ref[c], rel * std::fabs(ref[c]) + abs_tol, "out", b, t, i,
                    c);
      }
  std::string detail = tally.summary();
  if (!same) detail += "; NOT DETERMINISTIC";
  if (!guards) detail += "; WROTE OUTSIDE A BUFFER";
  return {tally.bad == 0 && same && guards, detail};
}

// Backward (forward first, on `fwd_path`) against the reference.
template <typename TOut>
CaseResult check_backward(Context& ctx, const FwdSpec& spec, jk_attention_path_t fwd_path,
                          jk_attention_path_t bwd_path) {
  const AttentionShape& s = spec.s;
  Inputs in(ctx.next_seed());
  const auto q = random_bf16(in, s.q_size(), 1.0f / 64, spec.scale_hi);
  const auto k = random_bf16(in, s.kv_size(), 1.0f / 64, spec.scale_hi);
  const auto v = random_bf16(in, s.kv_size(), 1.0f / 64, 2.0f);
  const auto go = random_bf16(in, s.q_size(), 1.0f / 64, 2.0f);
  GuardedBuffer<std::uint16_t> dq_in(s.q_size()), dk_in(s.kv_size()), dv_in(s.kv_size()), dgo(s.q_size()),
      dout(s.q_size());
  GuardedBuffer<float> dlse(s.lse_size()), ddelta(s.lse_size());
  GuardedBuffer<TOut> gq(s.q_size()), gk(s.kv_size()), gv(s.kv_size());
  GuardedBuffer<std::int32_t> dlen(spec.len.empty() ? 1 : spec.len.size());
  dq_in.upload(q.bits);
  dk_in.upload(k.bits);
  dv_in.upload(v.bits);
  dgo.upload(go.bits);
  if (!spec.len.empty()) dlen.upload(spec.len);
  const std::int32_t* len_ptr = spec.len.empty() ? nullptr : dlen.data();
  finish(jk_attention_fwd_bf16(dq_in.data(), dk_in.data(), dv_in.data(), len_ptr, dout.data(), dlse.data(), to_api(s),
                               fwd_path, ctx.stream),
         ctx.stream, "jk_attention_fwd_bf16");
  const auto run = [&] {
    gq.poison();
    gk.poison();
    gv.poison();
    ddelta.poison();
    if constexpr (std::is_same_v<TOut, float>) {
      finish(jk_attention_bwd_f32out(dq_in.data(), dk_in.data(), dv_in.data(), dout.data(), dlse.data(), dgo.data(),
                                     len_ptr, ddelta.data(), gq.data(), gk.data(), gv.data(), to_api(s), bwd_path,
                                     ctx.stream),
             ctx.stream, "jk_attention_bwd_f32out");
    } else {
      finish(
          jk_attention_bwd_bf16(dq_in.data(), dk_in.data(), dv_in.data(), dout.data(), dlse.data(), dgo.data(), len_ptr,
                                ddelta.data(), gq.data(), gk.data(), gv.data(), to_api(s), bwd_path, ctx.stream),
          ctx.stream, "jk_attention_bwd_bf16");
    }
  };
  run();
  const auto rq = gq.download();
  const auto rk = gk.download();
  const auto rv = gv.download();
  const bool guards = gq.guards_intact() && gk.guards_intact() && gv.guards_intact() && ddelta.guards_intact() &&
                      dout.guards_intact() && dlse.guards_intact();
  run();
  const auto bits_equal = [](const std::vector<TOut>& a, const std::vector<TOut>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(TOut)) == 0;
  };
  const bool same = bits_equal(gq.download(), rq) && bits_equal(gk.download(), rk) && bits_equal(gv.download(), rv);

  const auto value = [](TOut x) -> double {
    if constexpr (std::is_same_v<TOut, float>) {
      return x;
    } else {
      return bf16_value(x);
    }
  };
  const bool f32 = std::is_same_v<TOut, float>;
  const bool tuned = bwd_path != JK_ATTENTION_SIMPLE;
  const double rel = tuned ? std::ldexp(1.0, -7) : f32 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -7);
  // 2^-7 for both paths: D = rowsum(dout * out) from the bf16 forward output is off by up to 2^-8 relative
  // per query row, and dk sums those errors over every query row of a key; with a sharp softmax (dS small,
  // cancelling) this reaches ~1.7 x 2^-8 max|dk| on the simple path too (emulated, kernels/tests/emu).
  const double abs_frac = std::ldexp(1.0, -7);

  Oracle oracle(s, spec.len, q.value, k.value, v.value, &go.value);
  // Reference rows first (to know each tensor's max |ref|), then the comparison.
  struct RowRef {
    std::int64_t b, x, head;
    std::vector<double> a, c;
  };
  std::vector<RowRef> qrows, krows;
  double qmax = 0, kmax = 0, vmax = 0;
  const bool full = s.T <= 200;
  for (std::int64_t b = 0; b < s.B; ++b) {
    for (std::int64_t t : sample_positions(s.T, 200, in))
      for (std::int64_t i = 0; i < s.Hq; ++i) {
        if (!full && s.Hq > 4 && i != 0 && i != s.Hq - 1 && i != s.Hkv && (i % 5) != (t % 5)) continue;
        RowRef r{b, t, i, {}, {}};
        oracle.dq_row(b, i, t, r.a);
        qmax = std::max(qmax, max_abs(r.a));
        qrows.push_back(std::move(r));
      }
    // key rows: all heads when small; else K/V heads 0 and H_kv-1 (each costs a full pass over its query heads)
    for (std::int64_t u : sample_positions(s.T, 200, in))
      for (std::int64_t h = 0; h < s.Hkv; ++h) {
        if (!full && h != 0 && h != s.Hkv - 1) continue;
        RowRef r{b, u, h, {}, {}};
        oracle.dkdv_row(b, u, h, r.a, r.c);
        kmax = std::max(kmax, max_abs(r.a));
        vmax = std::max(vmax, max_abs(r.c));
        krows.push_back(std::move(r));
      }
    if (!full) break;  // large shapes: batch 0 only (the reference is the cost)
  }
  // Absolute floor for dq and dk: where they are 0 in exact arithmetic everywhere (T = 1: dS = P (dP - D)
  // with dP = D), the device's dP (a tensor-core or fp32 dot product) and D (an fp32 rowsum of the bf16 out,
  // summed in another order) differ by fp32 rounding, so dq and dk are rounding noise (~1e-7), not 0, and a
  // tolerance of abs_frac * 0 = 0 would fail a correct kernel. The floor bounds that noise with headroom:
  // |dP - D| <~ 2^-20 d max|dout| max|v| per score, times max|k| (dq) or max|q| (dk) and 1/sqrt(d).
  const double noise = std::ldexp(1.0, -20) * std::sqrt(static_cast<double>(s.d)) * max_abs(go.value) * max_abs(v.value);
  const double qfloor = std::max(abs_frac * qmax, noise * max_abs(k.value));
  const double kfloor = std::max(abs_frac * kmax, noise * max_abs(q.value));
  ErrorTally tally;
  for (const auto& r : qrows)
    for (std::int64_t c = 0; c < s.d; ++c)
      tally.add(value(rq[s.q_index(r.b, r.x, r.head, c)]), r.a[c], rel * std::fabs(r.a[c]) + qfloor, "dq", r.b, r.x,
                r.head, c);
  for (const auto& r : krows)
    for (std::int64_t c = 0; c < s.d; ++c) {
      tally.add(value(rk[s.kv_index(r.b, r.x, r.head, c)]), r.a[c], rel * std::fabs(r.a[c]) + kfloor, "dk",
                r.b, r.x, r.head, c);
      tally.add(value(rv[s.kv_index(r.b, r.x, r.head, c)]), r.c[c], rel * std::fabs(r.c[c]) + abs_frac * vmax, "dv",
                r.b, r.x, r.head, c);
    }
  std::string detail = tally.summary();
  if (!same) detail += "; NOT DETERMINISTIC";
  if (!guards) detail += "; WROTE OUTSIDE THE OUTPUT";
  return {tally.bad == 0 && same && guards, detail};
}

struct DecodeSpec {
  std::int64_t B, Tmax, Hq, Hkv, d;
  std::vector<std::int32_t> len;
};

// Tuned vs simple on the same inputs, every element (the reference cases sample rows at large T):
// forward out and lse, then the backward (bf16) of each from its own forward. Tolerance: the two paths'
// tolerances against the reference added, with the simple result standing in for the reference.
CaseResult check_tuned_vs_simple(Context& ctx, const FwdSpec& spec) {
  const AttentionShape& s = spec.s;
  Inputs in(ctx.next_seed());
  const auto q = random_bf16(in, s.q_size(), 1.0f / 64, spec.scale_hi);
  const auto k = random_bf16(in, s.kv_size(), 1.0f / 64, spec.scale_hi);
  const auto v = random_bf16(in, s.kv_size(), 1.0f / 64, 2.0f);
  const auto go = random_bf16(in, s.q_size(), 1.0f / 64, 2.0f);
  GuardedBuffer<std::uint16_t> dq_in(s.q_size()), dk_in(s.kv_size()), dv_in(s.kv_size()), dgo(s.q_size());
  dq_in.upload(q.bits);
  dk_in.upload(k.bits);
  dv_in.upload(v.bits);
  dgo.upload(go.bits);
  GuardedBuffer<std::int32_t> dlen(spec.len.empty() ? 1 : spec.len.size());
  if (!spec.len.empty()) dlen.upload(spec.len);
  const std::int32_t* len_ptr = spec.len.empty() ? nullptr : dlen.data();
  struct Result {
    std::vector<std::uint16_t> out, gq, gk, gv;
    std::vector<float> lse;
  };
  const auto run = [&](jk_attention_path_t path) {
    GuardedBuffer<std::uint16_t> out(s.q_size()), gq(s.q_size()), gk(s.kv_size()), gv(s.kv_size());
    GuardedBuffer<float> lse(s.lse_size()), delta(s.lse_size());
    finish(jk_attention_fwd_bf16(dq_in.data(), dk_in.data(), dv_in.data(), len_ptr, out.data(), lse.data(), to_api(s),
                                 path, ctx.stream),
           ctx.stream, "jk_attention_fwd_bf16");
    finish(jk_attention_bwd_bf16(dq_in.data(), dk_in.data(), dv_in.data(), out.data(), lse.data(), dgo.data(), len_ptr,
                                 delta.data(), gq.data(), gk.data(), gv.data(), to_api(s), path, ctx.stream),
           ctx.stream, "jk_attention_bwd_bf16");
    if (!(out.guards_intact() && lse.guards_intact() && gq.guards_intact() && gk.guards_intact() && gv.guards_intact()))
      throw std::runtime_error("wrote outside an output");
    return Result{out.download(), gq.download(), gk.download(), gv.download(), lse.download()};
  };
  const Result a = run(JK_ATTENTION_SIMPLE), t = run(JK_ATTENTION_TUNED);
  const double vmax = max_abs(v.value);
  ErrorTally tally;
  for (std::size_t x = 0; x < a.out.size(); ++x) {
    const double ref = bf16_value(a.out[x]);
    tally.add(bf16_value(t.out[x]), ref, std::ldexp(std::fabs(ref), -6) + std::ldexp(vmax, -8) + 1e-4 * vmax, "out",
              static_cast<std::int64_t>(x), 0, 0, 0);
  }
  for (std::size_t x = 0; x < a.lse.size(); ++x) {
    if (std::isinf(a.lse[x])) {
      tally.add_lse(t.lse[x], -kInf, static_cast<std::int64_t>(x), 0, 0);
    } else {
      tally.add(t.lse[x], a.lse[x], 2e-4 + 2e-5 * std::fabs(a.lse[x]), "lse", static_cast<std::int64_t>(x), 0, 0, 0);
    }
  }
  const auto grads = [&](const std::vector<std::uint16_t>& ga, const std::vector<std::uint16_t>& gt, const char* what) {
    double mx = 0;
    for (auto b : ga) mx = std::max(mx, std::fabs(bf16_value(b)));
    for (std::size_t x = 0; x < ga.size(); ++x) {
      const double ref = bf16_value(ga[x]);
      tally.add(bf16_value(gt[x]), ref,
                std::ldexp(std::fabs(ref), -6) + (std::ldexp(1.0, -7) + std::ldexp(1.0, -8)) * mx, what,
                static_cast<std::int64_t>(x), 0, 0, 0);
    }
  };
  grads(a.gq, t.gq, "dq");
  grads(a.gk, t.gk, "dk");
  grads(a.gv, t.gv, "dv");
  std::size_t differ = 0;
  for (std::size_t x = 0; x < a.out.size(); ++x) differ += a.out[x] != t.out[x];
  return {tally.bad == 0, tally.summary() + format("; %zu of %zu outputs differ in bits", differ, a.out.size())};
}

CaseResult check_decode(Context& ctx, const DecodeSpec& spec) {
  Inputs in(ctx.next_seed());
  const std::size_t qn = static_cast<std::size_t>(spec.B * spec.Hq * spec.d);
  const std::size_t kvn = static_cast<std::size_t>(spec.B * spec.Tmax * spec.Hkv * spec.d);
  const auto q = random_bf16(in, qn, 1.0f / 64, 1.5f);
  const auto k = random_bf16(in, kvn, 1.0f / 64, 1.5f);
  const auto v = random_bf16(in, kvn, 1.0f / 64, 2.0f);
  GuardedBuffer<std::uint16_t> dq(qn), dk(kvn), dv(kvn), dout(qn);
  GuardedBuffer<float> dlse(static_cast<std::size_t>(spec.B * spec.Hq));
  GuardedBuffer<std::int32_t> dlen(spec.len.size());
  const std::size_t ws_bytes = jk_attention_decode_workspace_bytes(spec.B, spec.Hq, spec.Tmax, spec.d);
  GuardedBuffer<float> ws(std::max<std::size_t>(1, ws_bytes / sizeof(float)));
  dq.upload(q.bits);
  dk.upload(k.bits);
  dv.upload(v.bits);
  dlen.upload(spec.len);
  const auto run = [&] {
    dout.poison();
    dlse.poison();
    finish(jk_attention_decode_bf16(dq.data(), dk.data(), dv.data(), dlen.data(), dout.data(), dlse.data(), spec.B,
                                    spec.Tmax, spec.Hq, spec.Hkv, spec.d, ws.data(), ws_bytes, ctx.stream),
           ctx.stream, "jk_attention_decode_bf16");
  };
  run();
  const auto out1 = dout.download();
  const auto lse1 = dlse.download();
  const bool guards = dout.guards_intact() && dlse.guards_intact() && ws.guards_intact();
  run();
  const bool same =
      dout.download() == out1 && std::memcmp(dlse.download().data(), lse1.data(), lse1.size() * sizeof(float)) == 0;
  std::vector<double> ref, ref_lse;
  jkref::attention_decode(q.value, k.value, v.value, spec.len, spec.B, spec.Tmax, spec.Hq, spec.Hkv, spec.d, ref,
                          ref_lse);
  const double vmax = max_abs(v.value);
  ErrorTally tally;
  for (std::int64_t b = 0; b < spec.B; ++b)
    for (std::int64_t i = 0; i < spec.Hq; ++i) {
      tally.add_lse(lse1[b * spec.Hq + i], ref_lse[b * spec.Hq + i], b, i, 0);
      for (std::int64_t c = 0; c < spec.d; ++c) {
        const std::size_t x = static_cast<std::size_t>((b * spec.Hq + i) * spec.d + c);
        tally.add(bf16_value(out1[x]), ref[x], std::ldexp(std::fabs(ref[x]), -7) + 1e-4 * vmax, "out", b, i, c, 0);
      }
    }
  std::string detail = tally.summary();
  if (!same) detail += "; NOT DETERMINISTIC";
  if (!guards) detail += "; WROTE OUTSIDE THE OUTPUT";
  return {tally.bad == 0 && same && guards, detail};
}

// Invalid arguments give cudaErrorInvalidValue and write nothing; zero sizes are no-ops.
CaseResult check_arguments(Context& ctx) {
  GuardedBuffer<std::uint16_t> a(4096), o(4096);
  GuardedBuffer<float> l(256), ws(4096);
  GuardedBuffer<std::int32_t> len(4);
  std::vector<std::string> failures;
  const auto expect = [&](cudaError_t got, cudaError_t want, const char* what) {
    if (got != want)
      failures.push_back(format("%s: got %s, want %s", what, cudaGetErrorName(got), cudaGetErrorName(want)));
  };
  const auto* p = a.data();
  auto* out = o.data();
  const jk_attention_shape_t ok{1, 8, 4, 2, 64};
  const auto S = JK_ATTENTION_SIMPLE;
  expect(jk_attention_fwd_bf16(p, p, p, nullptr, out, l.data(), {1, 8, 3, 2, 64}, S, ctx.stream), cudaErrorInvalidValue,
         "fwd Hq % Hkv != 0");
  expect(jk_attention_fwd_bf16(p, p, p, nullptr, out, l.data(), {1, 8, 4, 2, 0}, S, ctx.stream), cudaErrorInvalidValue,
         "fwd d = 0");
  expect(jk_attention_fwd_bf16(p, p, p, nullptr, out, l.data(), {1, 8, 4, 2, 257}, S, ctx.stream),
         cudaErrorInvalidValue, "fwd d = 257");
  expect(jk_attention_fwd_bf16(p, p, p, nullptr, out, l.data(), {-1, 8, 4, 2, 64}, S, ctx.stream),
         cudaErrorInvalidValue, "fwd B < 0");
  expect(jk_attention_fwd_bf16(p, p, p, nullptr, out, l.data(), {1, -8, 4, 2, 64}, S, ctx.stream),
         cudaErrorInvalidValue, "fwd T < 0");
  expect(jk_attention_fwd_bf16(p, p, p, nullptr, out, l.data(), {1, 8, 0, 1, 64}, S, ctx.stream), cudaErrorInvalidValue,
         "fwd Hq = 0");
  expect(jk_attention_fwd_bf16(nullptr, p, p, nullptr, out, l.data(), ok, S, ctx.stream), cudaErrorInvalidValue,
         "fwd null q");
  expect(jk_attention_fwd_bf16(p, p, p, nullptr, nullptr, l.data(), ok, S, ctx.stream), cudaErrorInvalidValue,
         "fwd null out");
  expect(jk_attention_fwd_bf16(p, p, p, nullptr, out, l.data(), ok, static_cast<jk_attention_path_t>(7), ctx.stream),
         cudaErrorInvalidValue, "fwd bad path");
  expect(jk_attention_fwd_bf16(p, p, p, nullptr, out, l.data(), {1, 8, 4, 2, 80}, JK_ATTENTION_TUNED, ctx.stream),
         cudaErrorInvalidValue, "fwd tuned d = 80");
  expect(jk_attention_fwd_bf16(p + 1, p, p, nullptr, out, l.data(), ok, JK_ATTENTION_TUNED, ctx.stream),
         cudaErrorInvalidValue, "fwd tuned unaligned q");
  expect(jk_attention_fwd_bf16(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, {0, 8, 4, 2, 64}, S, ctx.stream),
         cudaSuccess, "fwd B = 0 no-op");
  expect(jk_attention_fwd_bf16(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, {2, 0, 4, 2, 64},
                               JK_ATTENTION_AUTO, ctx.stream),
         cudaSuccess, "fwd T = 0 no-op");
  float* f = l.data();
  auto* g = o.data();
  expect(jk_attention_bwd_bf16(p, p, p, p, f, p, nullptr, nullptr, g, g, g, ok, S, ctx.stream), cudaErrorInvalidValue,
         "bwd null delta");
  expect(jk_attention_bwd_bf16(p, p, p, p, nullptr, p, nullptr, f, g, g, g, ok, S, ctx.stream), cudaErrorInvalidValue,
         "bwd null lse");
  expect(jk_attention_bwd_bf16(p, p, p, p, f, p, nullptr, f, g, g, g, {1, 8, 4, 3, 64}, S, ctx.stream),
         cudaErrorInvalidValue, "bwd Hq % Hkv != 0");
  expect(jk_attention_bwd_bf16(p, p, p, p, f, p, nullptr, f, g, g, g, {1, 8, 4, 2, 80}, JK_ATTENTION_TUNED, ctx.stream),
         cudaErrorInvalidValue, "bwd tuned d = 80");
  expect(jk_attention_bwd_f32out(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                 nullptr, nullptr, {0, 8, 4, 2, 64}, S, ctx.stream),
         cudaSuccess, "bwd B = 0 no-op");
  const std::size_t need = jk_attention_decode_workspace_bytes(1, 4, 300, 64);
  if (need != 1 * 4 * 2 * 66 * sizeof(float)) failures.push_back(format("decode workspace bytes %zu", need));
  if (jk_attention_decode_chunk() != 256) failures.push_back("decode chunk != 256");
  expect(jk_attention_decode_bf16(p, p, p, len.data(), out, f, 1, 300, 4, 2, 64, ws.data(), need - 4, ctx.stream),
         cudaErrorInvalidValue, "decode workspace too small");
  expect(jk_attention_decode_bf16(p, p, p, len.data(), out, f, 1, 300, 4, 2, 64, ws.data() + 1, need, ctx.stream),
         cudaErrorInvalidValue, "decode workspace unaligned");
  expect(jk_attention_decode_bf16(p, p, p, nullptr, out, f, 1, 300, 4, 2, 64, ws.data(), need, ctx.stream),
         cudaErrorInvalidValue, "decode null lengths");
  expect(jk_attention_decode_bf16(p, p, p, len.data(), out, f, 1, 300, 4, 3, 64, ws.data(), need, ctx.stream),
         cudaErrorInvalidValue, "decode Hq % Hkv != 0");
  expect(jk_attention_decode_bf16(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 300, 4, 2, 64, nullptr, 0,
                                  ctx.stream),
         cudaSuccess, "decode B = 0 no-op");
  CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
  expect(cudaGetLastError(), cudaSuccess, "no error left behind");
  // nothing was written by any of these calls
  bool untouched = o.guards_intact() && l.guards_intact();
  for (auto x : o.download()) untouched = untouched && x == 0xffffu;
  if (!untouched) failures.push_back("an output was written");
  std::string detail = failures.empty() ? "all argument checks as documented" : failures.front();
  if (failures.size() > 1) detail += format(" (+%zu more)", failures.size() - 1);
  return {failures.empty(), detail};
}

std::vector<Case> make_cases(Context& ctx) {
  std::vector<Case> cases;
  cases.push_back({"arguments", [&ctx] { return check_arguments(ctx); }});

  // Forward shapes: tiny/odd to JetMoE-8B; right padding (including an empty sequence); 3 slots.
  const std::vector<FwdSpec> fwd = {
      {{1, 1, 2, 1, 64}, {}, 1.5f},
      {{2, 7, 4, 2, 128}, {7, 3}, 1.5f},
      {{3, 63, 4, 2, 64}, {63, 1, 0}, 1.5f},
      {{1, 64, 32, 16, 128}, {}, 1.5f},
      {{2, 65, 6, 2, 128}, {65, 64}, 1.5f},
      {{3, 129, 4, 2, 64}, {129, 100, 65}, 1.5f},
      {{2, 100, 8, 2, 64}, {100, 37}, 1.5f},  // 4 slots: two 2-head CTAs per K/V head
      {{2, 129, 4, 2, 128}, {}, 6.0f},        // sharp softmax (scaled scores with a spread of ~12)
      {{1, 1000, 4, 2, 128}, {}, 1.5f},
      {{2, 1000, 2, 1, 64}, {1000, 517}, 1.5f},
      {{1, 4096, 32, 16, 128}, {}, 1.5f},  // JetMoE-8B, one sequence
      {{4, 2048, 32, 16, 128}, {2048, 2048, 1500, 77}, 1.5f},
  };
  // Odd head dims: the simple path only.
  const std::vector<FwdSpec> odd = {
      {{2, 50, 4, 2, 33}, {50, 20}, 1.5f},
      {{1, 300, 2, 1, 80}, {}, 1.5f},
      {{1, 40, 2, 2, 256}, {}, 1.5f},
      {{1, 9, 3, 1, 1}, {}, 1.5f},
  };
  // WGMMA: the sm_90a kernels where they can run (an sm_90 device; d 64 / 128 here), else TUNED's path.
  for (const auto& spec : fwd) {
    for (auto path : {JK_ATTENTION_SIMPLE, JK_ATTENTION_TUNED, JK_ATTENTION_WGMMA}) {
      cases.push_back({format("fwd.%s %s", path_name(path), shape_name(spec.s, spec.len).c_str()),
                       [&ctx, spec, path] { return check_forward(ctx, spec, path); }});
    }
  }
  for (const auto& spec : odd)
    cases.push_back({format("fwd.simple %s", shape_name(spec.s, spec.len).c_str()),
                     [&ctx, spec] { return check_forward(ctx, spec, JK_ATTENTION_SIMPLE); }});
  {
    const FwdSpec spec{{2, 65, 4, 2, 128}, {}, 1.5f};
    cases.push_back({format("fwd.auto %s", shape_name(spec.s, spec.len).c_str()),
                     [&ctx, spec] { return check_forward(ctx, spec, JK_ATTENTION_AUTO); }});
  }

  // Backward: bf16 and fp32 outputs; forward statistics from both forward paths.
  const std::vector<FwdSpec> bwd = {
      // clang-format off
      {{1, 1, 2, 1, 64}, {}, 1.5f},
      {{2, 7, 4, 2, 128}, {7, 3}, 1.5f},
      {{3, 65, 6, 2, 64}, {65, 64, 0}, 1.5f},
      {{1, 129, 4, 2, 128}, {}, 1.5f},
      {{2, 129, 4, 2, 64}, {129, 90}, 6.0f},     // sharp softmax
      {{2, 150, 2, 1, 80}, {150, 31}, 1.5f},     // odd d: simple path only
      {{2, 300, 6, 2, 128}, {300, 200}, 1.5f},   // 3 slots (G = 1 kernels)
      {{1, 100, 8, 2, 64}, {}, 1.5f},            // 4 slots
      {{1, 1000, 4, 2, 128}, {}, 1.5f},
      {{1, 4096, 32, 16, 128}, {}, 1.5f},        // JetMoE-8B
      // clang-format on
  };
  for (const auto& spec : bwd) {
    const bool tuned_ok = spec.s.d == 64 || spec.s.d == 128;
    const std::string name = shape_name(spec.s, spec.len) + (spec.scale_hi > 2 ? " sharp" : "");
    cases.push_back({format("bwd.simple.bf16 (fwd simple) %s", name.c_str()), [&ctx, spec] {
                       return check_backward<std::uint16_t>(ctx, spec, JK_ATTENTION_SIMPLE, JK_ATTENTION_SIMPLE);
                     }});
    if (tuned_ok) {
      cases.push_back({format("bwd.tuned.bf16 (fwd tuned) %s", name.c_str()), [&ctx, spec] {
                         return check_backward<std::uint16_t>(ctx, spec, JK_ATTENTION_TUNED, JK_ATTENTION_TUNED);
                       }});
      cases.push_back({format("bwd.wgmma.bf16 (fwd wgmma) %s", name.c_str()), [&ctx, spec] {
                         return check_backward<std::uint16_t>(ctx, spec, JK_ATTENTION_WGMMA, JK_ATTENTION_WGMMA);
                       }});
    }
    if (spec.s.T <= 1000) {
      cases.push_back({format("bwd.simple.f32out (fwd simple) %s", name.c_str()), [&ctx, spec] {
                         return check_backward<float>(ctx, spec, JK_ATTENTION_SIMPLE, JK_ATTENTION_SIMPLE);
                       }});
      if (tuned_ok) {
        cases.push_back({format("bwd.tuned.f32out (fwd simple) %s", name.c_str()), [&ctx, spec] {
                           return check_backward<float>(ctx, spec, JK_ATTENTION_SIMPLE, JK_ATTENTION_TUNED);
                         }});
        cases.push_back({format("bwd.wgmma.f32out (fwd simple) %s", name.c_str()), [&ctx, spec] {
                           return check_backward<float>(ctx, spec, JK_ATTENTION_SIMPLE, JK_ATTENTION_WGMMA);
                         }});
      }
    }
  }
  for (const FwdSpec& spec :
       {FwdSpec{{1, 4096, 32, 16, 128}, {}, 1.5f}, FwdSpec{{3, 777, 6, 2, 64}, {777, 500, 64}, 1.5f}})
    cases.push_back({format("tuned-vs-simple (every element) %s", shape_name(spec.s, spec.len).c_str()),
                     [&ctx, spec] { return check_tuned_vs_simple(ctx, spec); }});
  {
    const FwdSpec spec{{2, 100, 4, 2, 64}, {100, 70}, 1.5f};
    cases.push_back({format("bwd.auto.bf16 (fwd auto) %s", shape_name(spec.s, spec.len).c_str()), [&ctx, spec] {
                       return check_backward<std::uint16_t>(ctx, spec, JK_ATTENTION_AUTO, JK_ATTENTION_AUTO);
                     }});
  }


  // Decode at several lengths (chunk boundaries 256, empty caches, JetMoE-8B at 4096).
  const std::vector<DecodeSpec> dec = {
      {1, 1, 2, 1, 64, {1}},           {3, 300, 4, 2, 128, {300, 0, 1}},
      {2, 1000, 4, 2, 64, {256, 257}}, {3, 513, 6, 3, 80, {255, 512, 513}},
      {1, 4096, 32, 16, 128, {4096}},  {4, 4096, 32, 16, 128, {4096, 1, 2049, 3000}},
      {1, 0, 2, 1, 64, {0}},
  };
  for (const auto& spec : dec) {
    std::string lens;
    for (std::size_t i = 0; i < spec.len.size(); ++i) lens += (i ? "," : "") + std::to_string(spec.len[i]);
    cases.push_back(
        {format("decode B=%" PRId64 " Tmax=%" PRId64 " Hq=%" PRId64 " Hkv=%" PRId64 " d=%" PRId64 " len={%s}", spec.B,
                spec.Tmax, spec.Hq, spec.Hkv, spec.d, lens.c_str()),
         [&ctx, spec] { return check_decode(ctx, spec); }});
  }
  return cases;
}

}  // namespace

int main(int argc, char** argv) { return jkt::run_main(argc, argv, "jetmoe-attention-test", make_cases); }
