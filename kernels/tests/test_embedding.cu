// Self-checking GPU test of the 'embedding' kernels (include/jetmoe/embedding.h) against the CPU
// reference kernels/tests/reference/embedding.hpp (proven by tests/kernel_reference/test_embedding.cpp).
//
// Tolerances: the forward is a copy and must be bit-exact (zero rows for out-of-range ids). The
// backward must be bit-exact against the CPU fp32 re-summation in ascending token order
// (jkref::embedding_bwd_f32_ordered), and within 1e-5 * sum|dx| + 1e-30 of the double sum. The grouping
// (offsets, sorted tokens) must equal the CPU counting sort exactly. Every case also checks the guard
// zones, the invalid-id count, that a second run gives identical bits, and that the auto (vectorised)
// and simple paths agree bit for bit.
#include "harness.cuh"
#include "reference/embedding.hpp"

#include <climits>

namespace {

using jkt::Case;
using jkt::CaseResult;
using jkt::format;

enum class IdKind { uniform, same, zipf, invalid, permutation };

const char* kind_name(IdKind k) {
  switch (k) {
    case IdKind::uniform: return "uniform";
    case IdKind::same: return "same";
    case IdKind::zipf: return "zipf";
    case IdKind::invalid: return "invalid";
    case IdKind::permutation: return "perm";
  }
  return "?";
}

std::vector<std::int32_t> make_ids(std::int64_t N, std::int64_t V, IdKind kind, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(N));
  for (std::int64_t t = 0; t < N; ++t) {
    std::int32_t id = static_cast<std::int32_t>(gen() % static_cast<std::uint64_t>(std::max<std::int64_t>(V, 1)));
    if (kind == IdKind::same) id = static_cast<std::int32_t>(V - 1);
    if (kind == IdKind::zipf) id = static_cast<std::int32_t>(std::min<double>(static_cast<double>(V - 1), std::floor(static_cast<double>(V) * std::pow(u(gen), 4.0))));
    if (kind == IdKind::permutation) id = static_cast<std::int32_t>(t % V);
    if (kind == IdKind::invalid && gen() % 8 == 0) {
      static const std::int32_t bad[] = {-1, INT_MIN, INT_MAX, 0};
      id = bad[gen() % 4];
      if (id == 0) id = static_cast<std::int32_t>(V);  // exactly V: one past the end
    }
    ids[static_cast<std::size_t>(t)] = id;
  }
  if (kind == IdKind::permutation) std::shuffle(ids.begin(), ids.end(), gen);
  return ids;
}

std::int64_t count_invalid(const std::vector<std::int32_t>& ids, std::int64_t V) {
  std::int64_t n = 0;
  for (auto id : ids) n += (id < 0 || id >= V) ? 1 : 0;
  return n;
}

struct DeviceBytes {
  void* p = nullptr;
  explicit DeviceBytes(std::size_t n) { CHECK_CUDA(cudaMalloc(&p, std::max<std::size_t>(n, 1))); }
  ~DeviceBytes() { cudaFree(p); }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
};

std::int32_t read_count(jkt::GuardedBuffer<std::int32_t>& count) { return count.download()[0]; }

// ---- forward ---------------------------------------------------------------------------------------

template <typename T>
CaseResult forward_case(jkt::Context& ctx, std::int64_t N, std::int64_t V, std::int64_t D, IdKind kind,
                        jk_embedding_path_t path, std::size_t offset, std::uint64_t seed) {
  jkt::Inputs in(seed);
  std::vector<float> table(static_cast<std::size_t>(V * D));
  for (auto& v : table) v = in.nonzero(1.0f / 64, 2.0f);
  std::vector<T> host_table(table.size());
  if constexpr (std::is_same_v<T, std::uint16_t>) host_table = jkt::to_bf16(table);
  else host_table = table;
  const auto ids = make_ids(N, V, kind, seed + 1);

  jkt::GuardedBuffer<T> emb(table.size(), offset), out(static_cast<std::size_t>(N * D), offset);
  jkt::GuardedBuffer<std::int32_t> d_ids(ids.size()), count(1);
  emb.upload(host_table);
  d_ids.upload(ids);
  const auto launch = [&]() {
    if constexpr (std::is_same_v<T, std::uint16_t>)
      return jk_embedding_fwd_bf16(emb.data(), d_ids.data(), out.data(), N, V, D, count.data(), path, ctx.stream);
    else
      return jk_embedding_fwd_f32(emb.data(), d_ids.data(), out.data(), N, V, D, count.data(), path, ctx.stream);
  };
  jkt::finish(launch(), ctx.stream, "embedding fwd");
  const auto got = out.download();
  const std::int32_t invalid = read_count(count);
  std::size_t bad = 0;
  for (std::int64_t t = 0; t < N; ++t) {
    const std::int32_t id = ids[static_cast<std::size_t>(t)];
    for (std::int64_t c = 0; c < D; ++c) {
      const T want = (id >= 0 && id < V) ? host_table[static_cast<std::size_t>(id * D + c)] : T(0);
      if (std::memcmp(&want, &got[static_cast<std::size_t>(t * D + c)], sizeof(T)) != 0) ++bad;
    }
  }
  // Second run (fresh poison): identical bits.
  out.poison();
  jkt::finish(launch(), ctx.stream, "embedding fwd (repeat)");
  const bool same = out.download() == got;
  const bool guards = out.guards_intact() && emb.guards_intact() && d_ids.guards_intact() && count.guards_intact();
  const std::int64_t want_invalid = count_invalid(ids, V);
  const bool pass = bad == 0 && invalid == want_invalid && same && guards;
  return {pass, format("%zu wrong elements (bit-exact copy), invalid %d (want %lld), repeat %s, guards %s", bad, invalid,
                       static_cast<long long>(want_invalid), same ? "identical" : "DIFFER", guards ? "ok" : "WRITTEN")};
}

// ---- backward --------------------------------------------------------------------------------------

struct BwdConfig {
  std::int64_t N, V, D;
  IdKind kind;
  bool bf16;
  float beta;
  int zero_untouched;
  std::size_t offset;  // element offset of dx / dEmb (non-zero: unaligned, scalar path)
};

std::string describe(const BwdConfig& c) {
  return format("N=%lld V=%lld D=%lld ids=%s dx=%s beta=%g zero_untouched=%d%s", static_cast<long long>(c.N),
                static_cast<long long>(c.V), static_cast<long long>(c.D), kind_name(c.kind), c.bf16 ? "bf16" : "f32",
                static_cast<double>(c.beta), c.zero_untouched, c.offset ? " unaligned" : "");
}

template <typename T>
cudaError_t launch_bwd(const T* dx, const std::int32_t* ids, float* demb, const BwdConfig& c, std::int32_t* count,
                       void* ws, std::size_t ws_bytes, jk_embedding_path_t path, cudaStream_t s) {
  if constexpr (std::is_same_v<T, std::uint16_t>)
    return jk_embedding_bwd_bf16(dx, ids, demb, c.N, c.V, c.D, c.beta, c.zero_untouched, count, ws, ws_bytes, path, s);
  else
    return jk_embedding_bwd_f32(dx, ids, demb, c.N, c.V, c.D, c.beta, c.zero_untouched, count, ws, ws_bytes, path, s);
}

template <typename T>
CaseResult backward_case(jkt::Context& ctx, const BwdConfig& c, std::uint64_t seed) {
  jkt::Inputs in(seed);
  const std::size_t nx = static_cast<std::size_t>(c.N * c.D), ne = static_cast<std::size_t>(c.V * c.D);
  std::vector<float> dxf(nx);
  for (auto& v : dxf) v = in.nonzero(1.0f / 64, 2.0f);
  std::vector<T> host_dx(nx);
  std::vector<double> dx_values(nx);
  if constexpr (std::is_same_v<T, std::uint16_t>) {
    host_dx = jkt::to_bf16(dxf);
    for (std::size_t i = 0; i < nx; ++i) dx_values[i] = jkt::bf16_value(host_dx[i]);
  } else {
    host_dx = dxf;
    for (std::size_t i = 0; i < nx; ++i) dx_values[i] = dxf[i];
  }
  std::vector<float> init(ne);
  for (auto& v : init) v = in.nonzero(0.5f, 4.0f);
  const auto ids = make_ids(c.N, c.V, c.kind, seed + 1);

  jkt::GuardedBuffer<T> dx(nx, c.offset);
  jkt::GuardedBuffer<float> demb(ne, c.offset);
  jkt::GuardedBuffer<std::int32_t> d_ids(ids.size()), count(1);
  const std::size_t ws_bytes = jk_embedding_bwd_workspace_bytes(c.N, c.V);
  DeviceBytes ws(ws_bytes);
  dx.upload(host_dx);
  d_ids.upload(ids);
  // beta 0 with zero_untouched: dEmb stays poisoned (every row must be written); otherwise it starts
  // from `init` (beta 1 adds to it; beta 0 without zeroing must leave untouched rows as they are).
  const bool poisoned_start = c.beta == 0.0f && c.zero_untouched;
  const auto reset = [&]() {
    demb.poison();
    if (!poisoned_start) demb.upload(init);
  };

  std::vector<std::vector<float>> results;
  for (const jk_embedding_path_t path : {jk_embedding_path_auto, jk_embedding_path_auto, jk_embedding_path_simple}) {
    reset();
    jkt::finish(launch_bwd<T>(dx.data(), d_ids.data(), demb.data(), c, count.data(), ws.p, ws_bytes, path, ctx.stream),
                ctx.stream, "embedding bwd");
    results.push_back(demb.download());
  }
  const std::int32_t invalid = read_count(count);

  // CPU: fp32 re-summation in ascending token order (bit-exact target) and the double sum.
  std::vector<double> want(ne), exact(ne);
  for (std::size_t i = 0; i < ne; ++i) want[i] = exact[i] = poisoned_start ? 0.0 : static_cast<double>(init[i]);
  const std::int64_t want_invalid = jkref::embedding_bwd_f32_ordered(dx_values, ids, c.V, c.D, c.beta, c.zero_untouched != 0, want);
  jkref::embedding_bwd(dx_values, ids, c.V, c.D, c.beta, c.zero_untouched != 0, exact);
  std::vector<double> sum_abs(ne, 0.0);
  for (std::int64_t t = 0; t < c.N; ++t) {
    const std::int32_t id = ids[static_cast<std::size_t>(t)];
    if (id < 0 || id >= c.V) continue;
    for (std::int64_t k = 0; k < c.D; ++k)
      sum_abs[static_cast<std::size_t>(id * c.D + k)] += std::fabs(dx_values[static_cast<std::size_t>(t * c.D + k)]);
  }
  const auto& got = results[0];
  std::size_t not_exact = 0, off_exact = 0;
  double worst = 0;
  for (std::size_t i = 0; i < ne; ++i) {
    const float w = static_cast<float>(want[i]);
    if (jkt::bits_of(w) != jkt::bits_of(got[i])) ++not_exact;
    const double err = std::fabs(static_cast<double>(got[i]) - exact[i]);
    const double tol = 1e-5 * (sum_abs[i] + (c.beta == 1.0f ? std::fabs(static_cast<double>(init[i])) : 0.0)) + 1e-30;
    if (!(err <= tol)) ++off_exact;
    worst = std::max(worst, err);
  }
  const bool repeat_same = results[1] == results[0];
  std::size_t path_diff = 0;
  for (std::size_t i = 0; i < ne; ++i) path_diff += jkt::bits_of(results[2][i]) != jkt::bits_of(got[i]) ? 1 : 0;
  const bool guards = dx.guards_intact() && demb.guards_intact() && d_ids.guards_intact() && count.guards_intact();
  const bool pass = not_exact == 0 && off_exact == 0 && repeat_same && path_diff == 0 && guards && invalid == want_invalid;
  return {pass, format("%zu not bit-exact vs CPU ordered fp32, %zu outside 1e-5*sum|dx| of the double sum (max err %.3g), "
                       "repeat %s, simple path %zu differ, invalid %d (want %lld), guards %s",
                       not_exact, off_exact, worst, repeat_same ? "identical" : "DIFFER", path_diff, invalid,
                       static_cast<long long>(want_invalid), guards ? "ok" : "WRITTEN")};
}

// ---- grouping --------------------------------------------------------------------------------------

CaseResult group_case(jkt::Context& ctx, std::int64_t N, std::int64_t V, IdKind kind, std::uint64_t seed) {
  const auto ids = make_ids(N, V, kind, seed);
  jkt::GuardedBuffer<std::int32_t> d_ids(ids.size()), offsets(static_cast<std::size_t>(V + 1)),
      sorted(static_cast<std::size_t>(N)), count(1);
  d_ids.upload(ids);
  const std::size_t ws_bytes = jk_embedding_bwd_workspace_bytes(N, V);
  DeviceBytes ws(ws_bytes);
  jkt::finish(jk_embedding_group_tokens(d_ids.data(), N, V, offsets.data(), sorted.data(), count.data(), ws.p, ws_bytes,
                                        ctx.stream),
              ctx.stream, "jk_embedding_group_tokens");
  std::vector<std::int32_t> want_offsets, want_sorted;
  const std::int64_t want_invalid = jkref::embedding_group_tokens(ids, V, want_offsets, want_sorted);
  const bool ok_offsets = offsets.download() == want_offsets;
  const bool ok_sorted = sorted.download() == want_sorted;
  const std::int32_t invalid = read_count(count);
  const bool guards = d_ids.guards_intact() && offsets.guards_intact() && sorted.guards_intact() && count.guards_intact();
  return {ok_offsets && ok_sorted && guards && invalid == want_invalid,
          format("offsets %s, sorted tokens %s, invalid %d (want %lld), guards %s", ok_offsets ? "equal" : "DIFFER",
                 ok_sorted ? "equal" : "DIFFER", invalid, static_cast<long long>(want_invalid), guards ? "ok" : "WRITTEN")};
}

// ---- argument validation and zero sizes ----------------------------------------------------------------

CaseResult arguments_case(jkt::Context& ctx) {
  jkt::GuardedBuffer<std::uint16_t> e16(16), x16(16);
  jkt::GuardedBuffer<float> e32(16), x32(16), demb(16);
  jkt::GuardedBuffer<std::int32_t> ids(4), count(1), offsets(5), sorted(4);
  CHECK_CUDA(cudaMemset(ids.data(), 0, 4 * sizeof(std::int32_t)));
  CHECK_CUDA(cudaDeviceSynchronize());
  const std::size_t ws_bytes = jk_embedding_bwd_workspace_bytes(4, 4);
  DeviceBytes ws(ws_bytes);
  const auto P = jk_embedding_path_auto;
  cudaStream_t s = ctx.stream;
  struct Check { const char* what; cudaError_t got; cudaError_t want; };
  const auto bad_path = static_cast<jk_embedding_path_t>(7);
  std::vector<Check> checks = {
      {"fwd null ids", jk_embedding_fwd_bf16(e16.data(), nullptr, x16.data(), 4, 4, 4, nullptr, P, s), cudaErrorInvalidValue},
      {"fwd null out", jk_embedding_fwd_f32(e32.data(), ids.data(), nullptr, 4, 4, 4, nullptr, P, s), cudaErrorInvalidValue},
      {"fwd null emb", jk_embedding_fwd_f32(nullptr, ids.data(), x32.data(), 4, 4, 4, nullptr, P, s), cudaErrorInvalidValue},
      {"fwd negative N", jk_embedding_fwd_f32(e32.data(), ids.data(), x32.data(), -1, 4, 4, nullptr, P, s), cudaErrorInvalidValue},
      {"fwd negative D", jk_embedding_fwd_bf16(e16.data(), ids.data(), x16.data(), 4, 4, -4, nullptr, P, s), cudaErrorInvalidValue},
      {"fwd N > INT_MAX", jk_embedding_fwd_f32(e32.data(), ids.data(), x32.data(), 1LL << 31, 4, 4, nullptr, P, s), cudaErrorInvalidValue},
      {"fwd bad path", jk_embedding_fwd_f32(e32.data(), ids.data(), x32.data(), 4, 4, 4, nullptr, bad_path, s), cudaErrorInvalidValue},
      {"fwd N = 0 no-op", jk_embedding_fwd_f32(nullptr, nullptr, nullptr, 0, 4, 4, nullptr, P, s), cudaSuccess},
      {"bwd beta 0.5", jk_embedding_bwd_f32(x32.data(), ids.data(), demb.data(), 4, 4, 4, 0.5f, 1, nullptr, ws.p, ws_bytes, P, s), cudaErrorInvalidValue},
      {"bwd null workspace", jk_embedding_bwd_f32(x32.data(), ids.data(), demb.data(), 4, 4, 4, 0.0f, 1, nullptr, nullptr, ws_bytes, P, s), cudaErrorInvalidValue},
      {"bwd small workspace", jk_embedding_bwd_bf16(x16.data(), ids.data(), demb.data(), 4, 4, 4, 0.0f, 1, nullptr, ws.p, ws_bytes - 1, P, s), cudaErrorInvalidValue},
      {"bwd null dx", jk_embedding_bwd_bf16(nullptr, ids.data(), demb.data(), 4, 4, 4, 1.0f, 0, nullptr, ws.p, ws_bytes, P, s), cudaErrorInvalidValue},
      {"bwd null dEmb", jk_embedding_bwd_f32(x32.data(), ids.data(), nullptr, 4, 4, 4, 1.0f, 0, nullptr, ws.p, ws_bytes, P, s), cudaErrorInvalidValue},
      {"bwd null ids", jk_embedding_bwd_f32(x32.data(), nullptr, demb.data(), 4, 4, 4, 1.0f, 0, nullptr, ws.p, ws_bytes, P, s), cudaErrorInvalidValue},
      {"bwd negative V", jk_embedding_bwd_f32(x32.data(), ids.data(), demb.data(), 4, -4, 4, 1.0f, 0, nullptr, ws.p, ws_bytes, P, s), cudaErrorInvalidValue},
      {"bwd bad path", jk_embedding_bwd_f32(x32.data(), ids.data(), demb.data(), 4, 4, 4, 1.0f, 0, nullptr, ws.p, ws_bytes, bad_path, s), cudaErrorInvalidValue},
      {"bwd D = 0 no-op", jk_embedding_bwd_f32(nullptr, ids.data(), nullptr, 4, 4, 0, 1.0f, 0, nullptr, ws.p, ws_bytes, P, s), cudaSuccess},
      {"group null offsets", jk_embedding_group_tokens(ids.data(), 4, 4, nullptr, sorted.data(), nullptr, ws.p, ws_bytes, s), cudaErrorInvalidValue},
      {"group small workspace", jk_embedding_group_tokens(ids.data(), 4, 4, offsets.data(), sorted.data(), nullptr, ws.p, 0, s), cudaErrorInvalidValue},
  };
  CHECK_CUDA(cudaStreamSynchronize(s));
  std::string failed;
  for (const auto& c : checks)
    if (c.got != c.want) failed += format(" [%s: got %s]", c.what, cudaGetErrorName(c.got));
  // Nothing may have been written by the rejected calls or the no-ops.
  const std::vector<float> poison32 = x32.download();
  bool untouched = e16.guards_intact() && x16.guards_intact() && e32.guards_intact() && x32.guards_intact() &&
                   demb.guards_intact() && ids.guards_intact() && offsets.guards_intact() && sorted.guards_intact();
  for (float v : demb.download()) untouched = untouched && std::isnan(v);
  for (float v : poison32) untouched = untouched && std::isnan(v);
  return {failed.empty() && untouched,
          format("%zu argument checks%s; buffers %s", checks.size(), failed.empty() ? " all as expected" : failed.c_str(),
                 untouched ? "untouched" : "WRITTEN")};
}

// N = 0 with beta 0 and zero_untouched: every row zeroed; the count set to 0.
CaseResult empty_batch_case(jkt::Context& ctx) {
  const std::int64_t V = 5, D = 33;
  jkt::GuardedBuffer<float> demb(static_cast<std::size_t>(V * D));
  jkt::GuardedBuffer<std::int32_t> count(1);
  const std::size_t ws_bytes = jk_embedding_bwd_workspace_bytes(0, V);
  DeviceBytes ws(ws_bytes);
  jkt::finish(jk_embedding_bwd_f32(nullptr, nullptr, demb.data(), 0, V, D, 0.0f, 1, count.data(), ws.p, ws_bytes,
                                   jk_embedding_path_auto, ctx.stream),
              ctx.stream, "bwd N = 0");
  bool zero = true;
  for (float v : demb.download()) zero = zero && jkt::bits_of(v) == 0u;
  const std::int32_t invalid = read_count(count);
  const bool guards = demb.guards_intact() && count.guards_intact();
  return {zero && invalid == 0 && guards,
          format("dEmb %s, invalid %d, guards %s", zero ? "all +0" : "NOT ZERO", invalid, guards ? "ok" : "WRITTEN")};
}

std::vector<Case> make_cases(jkt::Context& ctx) {
  std::vector<Case> cases;
  cases.push_back({"embedding.arguments", [&ctx]() { return arguments_case(ctx); }});
  cases.push_back({"embedding.bwd empty batch", [&ctx]() { return empty_batch_case(ctx); }});

  // Grouping (the device counting sort) against the CPU one.
  struct G { std::int64_t N, V; IdKind kind; };
  for (const G g : {G{1, 1, IdKind::uniform}, G{7, 5, IdKind::invalid}, G{4096, 32000, IdKind::zipf},
                    G{16384, 32000, IdKind::uniform}, G{16384, 5, IdKind::same}, G{16384, 32000, IdKind::invalid},
                    G{5000, 3000, IdKind::permutation}, G{1000, 37, IdKind::zipf}, G{777, 300, IdKind::invalid}}) {
    const std::uint64_t seed = ctx.next_seed();
    cases.push_back({format("embedding.group N=%lld V=%lld ids=%s", static_cast<long long>(g.N), static_cast<long long>(g.V), kind_name(g.kind)),
                     [&ctx, g, seed]() { return group_case(ctx, g.N, g.V, g.kind, seed); }});
  }

  // Forward.
  struct F { std::int64_t N, V, D; IdKind kind; bool bf16; jk_embedding_path_t path; std::size_t offset; };
  const auto A = jk_embedding_path_auto;
  const auto S = jk_embedding_path_simple;
  for (const F f : {F{1, 1, 1, IdKind::uniform, true, A, 0}, F{7, 5, 33, IdKind::invalid, true, A, 0},
                    F{7, 5, 33, IdKind::invalid, false, A, 0}, F{7, 5, 32, IdKind::uniform, true, A, 1},
                    F{7, 5, 32, IdKind::uniform, false, A, 0}, F{4096, 32000, 2048, IdKind::invalid, true, A, 0},
                    F{4096, 32000, 2048, IdKind::uniform, true, S, 0}, F{4096, 32000, 2048, IdKind::zipf, false, A, 0},
                    F{16384, 32000, 2048, IdKind::uniform, true, A, 0}, F{16384, 32000, 2048, IdKind::same, true, A, 0},
                    F{33, 0, 8, IdKind::invalid, true, A, 0}, F{300, 50, 24, IdKind::invalid, false, A, 0},
                    F{300, 50, 24, IdKind::zipf, true, S, 0}}) {
    const std::uint64_t seed = ctx.next_seed();
    const std::string name = format("embedding.fwd %s N=%lld V=%lld D=%lld ids=%s%s%s", f.bf16 ? "bf16" : "f32",
                                    static_cast<long long>(f.N), static_cast<long long>(f.V), static_cast<long long>(f.D),
                                    kind_name(f.kind), f.path == S ? " simple" : "", f.offset ? " unaligned" : "");
    cases.push_back({name, [&ctx, f, seed]() {
                       return f.bf16 ? forward_case<std::uint16_t>(ctx, f.N, f.V, f.D, f.kind, f.path, f.offset, seed)
                                     : forward_case<float>(ctx, f.N, f.V, f.D, f.kind, f.path, f.offset, seed);
                     }});
  }

  // Backward: tiny and odd shapes across the options, then JetMoE-8B sizes.
  std::vector<BwdConfig> configs;
  for (const bool bf16 : {true, false})
    for (const float beta : {0.0f, 1.0f})
      for (const int zero : {0, 1}) {
        configs.push_back({1, 1, 1, IdKind::uniform, bf16, beta, zero, 0});
        configs.push_back({7, 5, 33, IdKind::invalid, bf16, beta, zero, 0});
        configs.push_back({7, 5, 33, IdKind::same, bf16, beta, zero, 0});
      }
  configs.push_back({7, 5, 32, IdKind::uniform, true, 1.0f, 0, 1});
  configs.push_back({7, 5, 32, IdKind::uniform, false, 0.0f, 1, 3});
  configs.push_back({600, 50, 24, IdKind::zipf, true, 1.0f, 0, 0});
  configs.push_back({600, 50, 24, IdKind::same, false, 0.0f, 1, 0});
  configs.push_back({700, 300, 40, IdKind::invalid, false, 1.0f, 0, 0});
  configs.push_back({4096, 5, 1, IdKind::uniform, false, 1.0f, 0, 0});
  configs.push_back({4096, 32000, 33, IdKind::zipf, true, 0.0f, 1, 0});
  configs.push_back({4096, 32000, 2048, IdKind::uniform, true, 1.0f, 0, 0});
  configs.push_back({4096, 1, 2048, IdKind::same, false, 1.0f, 0, 0});
  configs.push_back({16384, 32000, 2048, IdKind::uniform, true, 0.0f, 1, 0});
  configs.push_back({16384, 32000, 2048, IdKind::zipf, true, 1.0f, 0, 0});
  configs.push_back({16384, 32000, 2048, IdKind::same, false, 1.0f, 0, 0});
  configs.push_back({16384, 32000, 2048, IdKind::invalid, false, 0.0f, 0, 0});
  for (const BwdConfig& c : configs) {
    const std::uint64_t seed = ctx.next_seed();
    cases.push_back({"embedding.bwd " + describe(c), [&ctx, c, seed]() {
                       return c.bf16 ? backward_case<std::uint16_t>(ctx, c, seed) : backward_case<float>(ctx, c, seed);
                     }});
  }
  return cases;
}

}  // namespace

int main(int argc, char** argv) { return jkt::run_main(argc, argv, "jetmoe-embedding-test", make_cases); }
