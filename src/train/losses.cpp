#include "train/losses.hpp"

#include <string>

#include "core/error.hpp"
#include "core/fast_exp.hpp"
#include "core/kokkos_compat.hpp"

namespace jetmoe {

using Policy2 = Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>;

namespace {

// One row of logits x[0, V): its maximum and the sum of exp(x - max) in double; with `e`, also
// e[v] = exp(x[v] - max) (the softmax before normalisation). The maximum and the sum run over 8
// interleaved lanes combined in a fixed order (independent chains the compiler vectorises), the
// exponentials in the logits' precision.
template <class R>
struct RowSoftmax {
  R max;
  double sum;
};

template <class R>
KOKKOS_INLINE_FUNCTION RowSoftmax<R> row_softmax(const R* x, std::int64_t V, R* e) {
  constexpr int lanes = 8;
  R mx[lanes];
  for (int l = 0; l < lanes; ++l) mx[l] = x[0];
  std::int64_t v = 0;
  for (; v + lanes <= V; v += lanes)
    for (int l = 0; l < lanes; ++l) mx[l] = x[v + l] > mx[l] ? x[v + l] : mx[l];
  for (int l = 0; v < V; ++v, ++l) mx[l] = x[v] > mx[l] ? x[v] : mx[l];
  R m = mx[0];
  for (int l = 1; l < lanes; ++l) m = mx[l] > m ? mx[l] : m;
  double acc[lanes] = {};
  constexpr std::int64_t chunk = 256;
  R buffer[chunk];
  for (std::int64_t v0 = 0; v0 < V; v0 += chunk) {
    const std::int64_t n = V - v0 < chunk ? V - v0 : chunk;
    R* const out = e ? e + v0 : buffer;
    for (std::int64_t i = 0; i < n; ++i) out[i] = fast_exp(x[v0 + i] - m);
    std::int64_t i = 0;
    for (; i + lanes <= n; i += lanes)
      for (int l = 0; l < lanes; ++l) acc[l] += double(out[i + l]);
    for (int l = 0; i < n; ++i, ++l) acc[l] += double(out[i]);
  }
  return RowSoftmax<R>{m, ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))};
}

}  // namespace

void shift_labels(const IntView2& labels, const IntView1& targets) {
  const std::int64_t B = std::int64_t(labels.extent(0)), T = std::int64_t(labels.extent(1));
  JETMOE_ASSERT(targets.extent(0) == std::size_t(B * T), "shift_labels: shapes");
  Kokkos::parallel_for(
      "shift_labels", Policy2({0, 0}, {B, T}), KOKKOS_LAMBDA(std::int64_t b, std::int64_t t) {
        targets(b * T + t) = t + 1 < T ? labels(b, t + 1) : ignore_index;
      });
}

template <class R>
CrossEntropy cross_entropy(const Mat<R>& logits, const IntView1& targets, const Mat<R>& dlogits, double grad_scale) {
  const std::int64_t N = std::int64_t(logits.extent(0)), V = std::int64_t(logits.extent(1));
  JETMOE_ASSERT(targets.extent(0) == logits.extent(0), "cross_entropy: shapes");
  const bool grad = dlogits.extent(0) == logits.extent(0);
  JETMOE_ASSERT(!grad || dlogits.extent(1) == logits.extent(1), "cross_entropy: gradient shape");

  std::int64_t count = 0, bad = 0;
  Kokkos::parallel_reduce(
      "ce_count", Range(0, N),
      KOKKOS_LAMBDA(std::int64_t t, std::int64_t & c, std::int64_t & b) {
        const std::int32_t y = targets(t);
        if (y == ignore_index) return;
        if (y < 0 || y >= V) ++b;
        else ++c;
      },
      count, bad);
  if (bad) fail(ErrorKind::Input, std::to_string(bad) + " target token id(s) outside [0, " + std::to_string(V) + ")");

  // Per row: lse = max + log sum exp(x - max); loss_t = lse - x[y]; grad = (softmax - onehot) * scale / count,
  // the softmax from one pass of exponentials: exp(x - max) * (1 / sum).
  const double row_scale = count > 0 ? grad_scale / double(count) : 0.0;
  Kokkos::View<double*, MemSpace> row_loss(Kokkos::view_alloc("ce_row_loss", Kokkos::WithoutInitializing), N);
  Kokkos::parallel_for(
      "cross_entropy", Range(0, N), KOKKOS_LAMBDA(std::int64_t t) {
        const std::int32_t y = targets(t);
        R* const d = grad ? &dlogits(t, 0) : nullptr;
        if (y == ignore_index) {
          if (grad)
            for (std::int64_t v = 0; v < V; ++v) d[v] = 0;
          row_loss(t) = 0;
          return;
        }
        const RowSoftmax<R> s = row_softmax(&logits(t, 0), V, d);
        row_loss(t) = double(s.max) + kmath::log(s.sum) - double(logits(t, y));
        if (grad) {
          const R f = R(row_scale / s.sum);
          for (std::int64_t v = 0; v < V; ++v) d[v] *= f;
          d[y] -= R(row_scale);
        }
      });
  // Rows summed in order on the host: the same result on every backend and thread count.
  const auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), row_loss);
  double total = 0;
  for (std::int64_t t = 0; t < N; ++t) total += h(t);
  return CrossEntropy{count > 0 ? total / double(count) : 0.0, count};
}

void check_targets(const IntView1& targets, std::int64_t V) {
  std::int64_t bad = 0;
  Kokkos::parallel_reduce(
      "ce_check", Range(0, std::int64_t(targets.extent(0))),
      KOKKOS_LAMBDA(std::int64_t t, std::int64_t & b) {
        const std::int32_t y = targets(t);
        b += (y != ignore_index && (y < 0 || y >= V));
      },
      bad);
  if (bad) fail(ErrorKind::Input, std::to_string(bad) + " target token id(s) outside [0, " + std::to_string(V) + ")");
}

std::int64_t count_targets(const IntView1& targets) {
  std::int64_t count = 0;
  Kokkos::parallel_reduce(
      "count_targets", Range(0, std::int64_t(targets.extent(0))),
      KOKKOS_LAMBDA(std::int64_t t, std::int64_t & n) { n += targets(t) != ignore_index; }, count);
  return count;
}

template <class R>
std::vector<double> cross_entropy_rows(const Mat<R>& logits, const IntView1& targets) {
  const std::int64_t N = std::int64_t(logits.extent(0)), V = std::int64_t(logits.extent(1));
  JETMOE_ASSERT(targets.extent(0) == logits.extent(0), "cross_entropy_rows: shapes");
  check_targets(targets, V);
  Kokkos::View<double*, MemSpace> rows("ce_rows", N);
  Kokkos::parallel_for(
      "cross_entropy_rows", Range(0, N), KOKKOS_LAMBDA(std::int64_t t) {
        const std::int32_t y = targets(t);
        if (y == ignore_index) {
          rows(t) = 0;
          return;
        }
        const RowSoftmax<R> s = row_softmax(&logits(t, 0), V, static_cast<R*>(nullptr));
        rows(t) = double(s.max) + kmath::log(s.sum) - double(logits(t, y));
      });
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), rows);
  return std::vector<double>(h.data(), h.data() + N);
}

template <class R>
void cross_entropy_backward(const Mat<R>& logits, const IntView1& targets, const std::vector<double>& weights,
                            const Mat<R>& dlogits) {
  const std::int64_t N = std::int64_t(logits.extent(0)), V = std::int64_t(logits.extent(1));
  JETMOE_ASSERT(targets.extent(0) == logits.extent(0) && weights.size() == logits.extent(0) &&
                    dlogits.extent(0) == logits.extent(0) && dlogits.extent(1) == logits.extent(1),
                "cross_entropy_backward: shapes");
  Kokkos::View<double*, MemSpace> w("ce_weights", N);
  {
    auto h = Kokkos::create_mirror_view(w);
    for (std::int64_t t = 0; t < N; ++t) h(t) = weights[std::size_t(t)];
    Kokkos::deep_copy(w, h);
  }
  Kokkos::parallel_for(
      "cross_entropy_backward", Range(0, N), KOKKOS_LAMBDA(std::int64_t t) {
        const std::int32_t y = targets(t);
        if (y == ignore_index || w(t) == 0.0) {
          for (std::int64_t v = 0; v < V; ++v) dlogits(t, v) = 0;
          return;
        }
        R* const d = &dlogits(t, 0);
        const RowSoftmax<R> s = row_softmax(&logits(t, 0), V, d);
        const R f = R(w(t) / s.sum);
        for (std::int64_t v = 0; v < V; ++v) d[v] *= f;
        d[y] -= R(w(t));
      });
}

template <class R>
RouterAux router_aux_loss(const Mat<R>& logits, const IntView2& experts, double coef_switch, double coef_z,
                          const Mat<R>& dlogits) {
  const std::int64_t N = std::int64_t(logits.extent(0)), E = std::int64_t(logits.extent(1)),
                     k = std::int64_t(experts.extent(1));
  JETMOE_ASSERT(experts.extent(0) == logits.extent(0), "router_aux_loss: shapes");
  const bool grad = dlogits.extent(0) == logits.extent(0);
  if (N == 0) return RouterAux{};

  // f_e: share of the N*k choices (constant). P_e = mean_t p_te. Both small [E] host arrays, reduced
  // in a fixed order for determinism.
  Kokkos::View<double*, Kokkos::HostSpace> f("aux_f", E), P("aux_P", E);
  {
    Mat<R> probs("aux_probs", N, E);
    Vec<R> lse("aux_lse", N);
    Kokkos::parallel_for(
        "aux_softmax", Range(0, N), KOKKOS_LAMBDA(std::int64_t t) {
          double m = logits(t, 0);
          for (std::int64_t e = 1; e < E; ++e) m = logits(t, e) > m ? double(logits(t, e)) : m;
          double z = 0;
          for (std::int64_t e = 0; e < E; ++e) z += kmath::exp(double(logits(t, e)) - m);
          const double l = m + kmath::log(z);
          lse(t) = R(l);
          for (std::int64_t e = 0; e < E; ++e) probs(t, e) = R(kmath::exp(double(logits(t, e)) - l));
        });
    auto hp = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), probs);
    auto hl = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), lse);
    auto he = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), experts);
    double z_sum = 0;
    for (std::int64_t t = 0; t < N; ++t) {
      for (std::int64_t e = 0; e < E; ++e) P(e) += hp(t, e);
      for (std::int64_t j = 0; j < k; ++j) f(he(t, j)) += 1.0;
      z_sum += double(hl(t)) * double(hl(t));
    }
    RouterAux out;
    for (std::int64_t e = 0; e < E; ++e) {
      P(e) /= double(N);
      f(e) /= double(N * k);
      out.switch_loss += double(E) * P(e) * f(e);
    }
    out.z_loss = z_sum / double(N);
    if (!grad) return out;

    // d switch / dX_te = (E/N) * p_te * (f_e - sum_m p_tm f_m);   d z / dX_te = (2/N) * lse_t * p_te.
    Kokkos::View<double*, MemSpace> fd("aux_f_device", E);
    Kokkos::deep_copy(fd, f);
    const double a = coef_switch * double(E) / double(N), b = coef_z * 2.0 / double(N);
    Kokkos::parallel_for(
        "aux_backward", Range(0, N), KOKKOS_LAMBDA(std::int64_t t) {
          double pf = 0;
          for (std::int64_t e = 0; e < E; ++e) pf += double(probs(t, e)) * fd(e);
          for (std::int64_t e = 0; e < E; ++e) {
            const double p = probs(t, e);
            dlogits(t, e) += R(a * p * (fd(e) - pf) + b * double(lse(t)) * p);
          }
        });
    return out;
  }
}

template CrossEntropy cross_entropy<float>(const Mat<float>&, const IntView1&, const Mat<float>&, double);
template CrossEntropy cross_entropy<double>(const Mat<double>&, const IntView1&, const Mat<double>&, double);
template std::vector<double> cross_entropy_rows<float>(const Mat<float>&, const IntView1&);
template std::vector<double> cross_entropy_rows<double>(const Mat<double>&, const IntView1&);
template void cross_entropy_backward<float>(const Mat<float>&, const IntView1&, const std::vector<double>&, const Mat<float>&);
template void cross_entropy_backward<double>(const Mat<double>&, const IntView1&, const std::vector<double>&,
                                             const Mat<double>&);
template RouterAux router_aux_loss<float>(const Mat<float>&, const IntView2&, double, double, const Mat<float>&);
template RouterAux router_aux_loss<double>(const Mat<double>&, const IntView2&, double, double, const Mat<double>&);

}  // namespace jetmoe
