#include "moe/routing.hpp"

#include "core/error.hpp"
#include "core/kokkos_compat.hpp"
#include "core/profiling.hpp"

namespace jetmoe {

namespace {
template <class V>
void ensure(V& v, const char* label, std::size_t n0, std::size_t n1 = 0) {
  if constexpr (int(V::rank) == 1) {
    if (v.extent(0) != n0) v = V(Kokkos::view_alloc(std::string(label), Kokkos::WithoutInitializing), n0);
  } else {
    if (v.extent(0) != n0 || v.extent(1) != n1)
      v = V(Kokkos::view_alloc(std::string(label), Kokkos::WithoutInitializing), n0, n1);
  }
}
}  // namespace

void route(const View2& x, const View2& router_weight, int top_k, Routing& r) {
  const std::int64_t N = std::int64_t(x.extent(0));
  const int E = int(router_weight.extent(0));
  JETMOE_ASSERT(top_k >= 1 && top_k <= E, "route: top_k out of range");
  Region region("router");
  ensure(r.logits, "router_logits", N, E);
  ensure(r.experts, "router_experts", N, top_k);
  ensure(r.gates, "router_gates", N, top_k);
  linear(x, router_weight, r.logits);

  const View2 logits = r.logits, gates = r.gates;
  const IntView2 experts = r.experts;
  Kokkos::parallel_for(
      "router_topk", Range(0, N), KOKKOS_LAMBDA(std::int64_t t) {
        // Selection by repeated arg-max: E is small (8), k smaller.
        float chosen_max = 0.0f;
        for (int j = 0; j < top_k; ++j) {
          int best = -1;
          float best_v = 0.0f;
          for (int e = 0; e < E; ++e) {
            bool taken = false;
            for (int m = 0; m < j; ++m) taken = taken || experts(t, m) == e;
            if (taken) continue;
            const float v = logits(t, e);
            if (best < 0 || v > best_v) best = e, best_v = v;  // '>' keeps the lower index on ties
          }
          experts(t, j) = best;
          gates(t, j) = best_v;
          if (j == 0) chosen_max = best_v;
        }
        float sum = 0.0f;
        for (int j = 0; j < top_k; ++j) {
          const float g = kmath::exp(gates(t, j) - chosen_max);
          gates(t, j) = g;
          sum += g;
        }
        for (int j = 0; j < top_k; ++j) gates(t, j) /= sum;
      });

  // Dispatch plan: per expert, an exclusive scan over the N*k assignments in (token, slot) order.
  const std::int64_t NK = N * top_k;
  ensure(r.sorted_token, "sorted_token", NK);
  ensure(r.sorted_slot, "sorted_slot", NK);
  ensure(r.position, "routing_position", N, top_k);
  const IntView1 sorted_token = r.sorted_token, sorted_slot = r.sorted_slot;
  const IntView2 position = r.position;
  r.offsets.assign(E + 1, 0);
  std::int64_t offset = 0;
  for (int e = 0; e < E; ++e) {
    r.offsets[e] = offset;
    std::int64_t count = 0;
    const std::int64_t base = offset;
    Kokkos::parallel_scan(
        "routing_plan", Range(0, NK),
        KOKKOS_LAMBDA(std::int64_t i, std::int64_t & running, bool final) {
          const std::int64_t t = i / top_k;
          const int j = int(i % top_k);
          if (experts(t, j) != e) return;
          if (final) {
            const std::int64_t row = base + running;
            sorted_token(row) = std::int32_t(t);
            sorted_slot(row) = j;
            position(t, j) = std::int32_t(row);
          }
          running += 1;
        },
        count);
    offset += count;
  }
  r.offsets[E] = offset;
  JETMOE_ASSERT(offset == NK, "route: every assignment is dispatched");
}

void gather_rows(const View2& src, const IntView1& sorted_token, const View2& dst) {
  const std::int64_t rows_out = std::int64_t(dst.extent(0)), C = std::int64_t(dst.extent(1));
  JETMOE_ASSERT(src.extent(1) == dst.extent(1) && sorted_token.extent(0) == dst.extent(0), "gather_rows: shapes");
  Kokkos::parallel_for(
      "gather_rows", Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>({0, 0}, {rows_out, C}),
      KOKKOS_LAMBDA(std::int64_t row, std::int64_t c) { dst(row, c) = src(sorted_token(row), c); });
}

void combine_experts(const View2& expert_out, const Routing& r, const View1& bias, const View2& out) {
  const std::int64_t N = std::int64_t(out.extent(0)), C = std::int64_t(out.extent(1));
  const int k = int(r.gates.extent(1));
  const IntView2 position = r.position;
  const View2 gates = r.gates;
  Kokkos::parallel_for(
      "combine_experts", Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>({0, 0}, {N, C}),
      KOKKOS_LAMBDA(std::int64_t t, std::int64_t c) {
        float acc = 0.0f;
        for (int j = 0; j < k; ++j) acc += gates(t, j) * expert_out(position(t, j), c);
        out(t, c) = acc + bias(c);
      });
}

}  // namespace jetmoe
