#include "moe/routing.hpp"

#include "core/error.hpp"
#include "core/kokkos_compat.hpp"
#include "core/profiling.hpp"
#include "model/layers.hpp"

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

template <class R>
void route(const Mat<R>& x, const Mat<R>& router_weight, int top_k, RoutingT<R>& r) {
  const std::int64_t N = std::int64_t(x.extent(0));
  const int E = int(router_weight.extent(0));
  JETMOE_ASSERT(top_k >= 1 && top_k <= E, "route: top_k out of range");
  Region region("router");
  ensure(r.logits, "router_logits", N, E);
  ensure(r.experts, "router_experts", N, top_k);
  ensure(r.gates, "router_gates", N, top_k);
  linear(x, router_weight, r.logits);

  const Mat<R> logits = r.logits, gates = r.gates;
  const IntView2 experts = r.experts;
  Kokkos::parallel_for(
      "router_topk", Range(0, N), KOKKOS_LAMBDA(std::int64_t t) {
        // Selection by repeated arg-max: E is small (8), k smaller.
        R chosen_max = 0;
        for (int j = 0; j < top_k; ++j) {
          int best = -1;
          R best_v = 0;
          for (int e = 0; e < E; ++e) {
            bool taken = false;
            for (int m = 0; m < j; ++m) taken = taken || experts(t, m) == e;
            if (taken) continue;
            const R v = logits(t, e);
            if (best < 0 || v > best_v) best = e, best_v = v;  // '>' keeps the lower index on ties
          }
          experts(t, j) = best;
          gates(t, j) = best_v;
          if (j == 0) chosen_max = best_v;
        }
        R sum = 0;
        for (int j = 0; j < top_k; ++j) {
          const R g = kmath::exp(gates(t, j) - chosen_max);
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

template <class R>
void gather_rows(const Mat<R>& src, const IntView1& sorted_token, const Mat<R>& dst) {
  const std::int64_t rows_out = std::int64_t(dst.extent(0)), C = std::int64_t(dst.extent(1));
  JETMOE_ASSERT(src.extent(1) == dst.extent(1) && sorted_token.extent(0) == dst.extent(0), "gather_rows: shapes");
  Kokkos::parallel_for(
      "gather_rows", Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>({0, 0}, {rows_out, C}),
      KOKKOS_LAMBDA(std::int64_t row, std::int64_t c) { dst(row, c) = src(sorted_token(row), c); });
}

template <class R>
void gather_rows_backward(const Mat<R>& ddst, const RoutingT<R>& r, const Mat<R>& dsrc) {
  const std::int64_t N = std::int64_t(dsrc.extent(0)), C = std::int64_t(dsrc.extent(1));
  const int k = int(r.position.extent(1));
  JETMOE_ASSERT(ddst.extent(1) == dsrc.extent(1) && r.position.extent(0) == dsrc.extent(0) &&
                    ddst.extent(0) == dsrc.extent(0) * std::size_t(k),
                "gather_rows_backward: shapes");
  const IntView2 position = r.position;
  Kokkos::parallel_for(
      "gather_rows_backward", Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>({0, 0}, {N, C}),
      KOKKOS_LAMBDA(std::int64_t t, std::int64_t c) {
        R acc = 0;
        for (int j = 0; j < k; ++j) acc += ddst(position(t, j), c);
        dsrc(t, c) += acc;
      });
}

template <class R>
void expert_linear(const Mat<R>& in, const Ten3<R>& w, const std::vector<std::int64_t>& offsets, const Mat<R>& out) {
  for (std::size_t e = 0; e + 1 < offsets.size(); ++e) {
    if (offsets[e + 1] == offsets[e]) continue;
    linear(rows(in, offsets[e], offsets[e + 1]), expert(w, std::int64_t(e)), rows(out, offsets[e], offsets[e + 1]));
  }
}

template <class R>
void expert_linear_backward(const Mat<R>& in, const Ten3<R>& w, const std::vector<std::int64_t>& offsets,
                            const Mat<R>& dout, const Mat<R>& din, const Ten3<R>& dw) {
  for (std::size_t e = 0; e + 1 < offsets.size(); ++e) {
    if (offsets[e + 1] == offsets[e]) continue;
    const Mat<R> g = rows(dout, offsets[e], offsets[e + 1]);
    matmul_nn(g, expert(w, std::int64_t(e)), rows(din, offsets[e], offsets[e + 1]));
    matmul_tn(g, rows(in, offsets[e], offsets[e + 1]), expert(dw, std::int64_t(e)), 1.0);
  }
}

template <class R>
void combine_experts(const Mat<R>& expert_out, const RoutingT<R>& r, const Vec<R>& bias, const Mat<R>& out) {
  const std::int64_t N = std::int64_t(out.extent(0)), C = std::int64_t(out.extent(1));
  const int k = int(r.gates.extent(1));
  const IntView2 position = r.position;
  const Mat<R> gates = r.gates;
  Kokkos::parallel_for(
      "combine_experts", Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>({0, 0}, {N, C}),
      KOKKOS_LAMBDA(std::int64_t t, std::int64_t c) {
        R acc = 0;
        for (int j = 0; j < k; ++j) acc += gates(t, j) * expert_out(position(t, j), c);
        out(t, c) = acc + bias(c);
      });
}

template <class R>
void combine_experts_backward(const Mat<R>& expert_out, const RoutingT<R>& r, const Mat<R>& dout,
                              const Mat<R>& dexpert_out, const Mat<R>& dlogits, const Vec<R>& dbias) {
  const std::int64_t N = std::int64_t(dout.extent(0)), C = std::int64_t(dout.extent(1)),
                     E = std::int64_t(r.logits.extent(1));
  const int k = int(r.gates.extent(1));
  JETMOE_ASSERT(expert_out.extent(0) == dout.extent(0) * std::size_t(k) && expert_out.extent(1) == dout.extent(1) &&
                    dexpert_out.extent(0) == expert_out.extent(0) && dexpert_out.extent(1) == expert_out.extent(1) &&
                    dlogits.extent(0) == dout.extent(0) && std::int64_t(dlogits.extent(1)) == E &&
                    dbias.extent(0) == dout.extent(1),
                "combine_experts_backward: shapes");
  const IntView2 position = r.position, experts = r.experts;
  const IntView1 sorted_token = r.sorted_token, sorted_slot = r.sorted_slot;
  const Mat<R> gates = r.gates;
  Kokkos::parallel_for(
      "combine_backward_rows", Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>({0, 0}, {N * k, C}),
      KOKKOS_LAMBDA(std::int64_t row, std::int64_t c) {
        const std::int64_t t = sorted_token(row);
        dexpert_out(row, c) = gates(t, sorted_slot(row)) * dout(t, c);
      });
  Kokkos::parallel_for(
      "combine_backward_gates", Range(0, N), KOKKOS_LAMBDA(std::int64_t t) {
        // dgate_j is parked in dlogits(t, experts(t, j)) (the chosen experts are distinct) until the
        // weighted sum over the slots is known.
        for (std::int64_t e = 0; e < E; ++e) dlogits(t, e) = 0;
        R weighted = 0;
        const R* const g = &dout(t, 0);
        for (int j = 0; j < k; ++j) {
          const R* const y = &expert_out(position(t, j), 0);
          R acc = 0;
          for (std::int64_t c = 0; c < C; ++c) acc += g[c] * y[c];
          dlogits(t, experts(t, j)) = acc;
          weighted += gates(t, j) * acc;
        }
        for (int j = 0; j < k; ++j) {
          R& d = dlogits(t, experts(t, j));
          d = gates(t, j) * (d - weighted);
        }
      });
  bias_backward(dout, dbias);
}

#define JETMOE_INSTANTIATE(R)                                                                                    \
  template void route<R>(const Mat<R>&, const Mat<R>&, int, RoutingT<R>&);                                     \
  template void gather_rows<R>(const Mat<R>&, const IntView1&, const Mat<R>&);                                  \
  template void gather_rows_backward<R>(const Mat<R>&, const RoutingT<R>&, const Mat<R>&);                      \
  template void expert_linear<R>(const Mat<R>&, const Ten3<R>&, const std::vector<std::int64_t>&, const Mat<R>&);    \
  template void expert_linear_backward<R>(const Mat<R>&, const Ten3<R>&, const std::vector<std::int64_t>&,         \
                                          const Mat<R>&, const Mat<R>&, const Ten3<R>&);                          \
  template void combine_experts<R>(const Mat<R>&, const RoutingT<R>&, const Vec<R>&, const Mat<R>&);            \
  template void combine_experts_backward<R>(const Mat<R>&, const RoutingT<R>&, const Mat<R>&, const Mat<R>&,    \
                                            const Mat<R>&, const Vec<R>&);
JETMOE_INSTANTIATE(float)
JETMOE_INSTANTIATE(double)
#undef JETMOE_INSTANTIATE

}  // namespace jetmoe
