#include "train/network.hpp"

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "core/profiling.hpp"
#include "model/layers.hpp"
#include "train/losses.hpp"

namespace jetmoe {

using Policy2 = Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>;
using Policy3 = Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<3>>;

namespace {
// A [B, T, heads, d] tensor as the matrix [B*T, heads*d] it is in memory: row n = b*T + t, column
// i*d + c. Query head i = j*H + h (slot j, K/V head h) is then columns [j*A, (j+1)*A) with A = H*d, so
// moving one token's slot between the expert-grouped rows and the per-token tensors is a row copy.
template <class R>
Mat<R> token_rows(const Ten4<R>& x) {
  return Mat<R>(x.data(), x.extent(0) * x.extent(1), x.extent(2) * x.extent(3));
}
// dst[n, j*C + i] = src[position(n, j), i]      src [N*k, C] (expert-grouped rows), dst [N, k*C]
template <class R>
void scatter_to_tokens(const char* label, const Mat<R>& src, const IntView2& position, const Mat<R>& dst) {
  const std::int64_t N = std::int64_t(dst.extent(0)), k = std::int64_t(position.extent(1)), C = std::int64_t(src.extent(1));
  Kokkos::parallel_for(
      label, Policy3({0, 0, 0}, {N, k, C}),
      KOKKOS_LAMBDA(std::int64_t n, std::int64_t j, std::int64_t i) { dst(n, j * C + i) = src(position(n, j), i); });
}
// dst[r, i] = src[token(r), slot(r)*C + i]       src [N, k*C], dst [N*k, C]: the inverse row copy
template <class R>
void gather_from_tokens(const char* label, const Mat<R>& src, const IntView1& token, const IntView1& slot,
                        const Mat<R>& dst) {
  const std::int64_t rows_n = std::int64_t(dst.extent(0)), C = std::int64_t(dst.extent(1));
  Kokkos::parallel_for(
      label, Policy2({0, 0}, {rows_n, C}),
      KOKKOS_LAMBDA(std::int64_t r, std::int64_t i) { dst(r, i) = src(token(r), slot(r) * C + i); });
}
}  // namespace

double training_flops_per_token(const ModelConfig& c, std::int64_t seq_len) {
  const double embedding_gather = c.tie_word_embeddings ? 0.0 : double(c.vocab_size) * double(c.hidden_size);
  const double matmul_params = double(c.active_parameter_count()) - embedding_gather;
  return 6.0 * matmul_params +
         6.0 * double(c.num_layers) * double(c.num_attention_heads()) * double(c.head_dim) * double(seq_len + 1);
}

template <class R>
Network<R>::Network(const ModelConfig& config, double coef_switch, double coef_z, bool recompute, const StageSpan& span,
                    std::int64_t logits_chunk)
    : config_(config), coef_switch_(coef_switch), coef_z_(coef_z), recompute_(recompute), span_(span),
      logits_chunk_(logits_chunk) {
  config_.validate("model");
  JETMOE_ASSERT(logits_chunk >= 0, "Network: logits_chunk >= 0");
  first_ = span_.first_layer;
  layers_ = span_.end(config_) - first_;
  JETMOE_ASSERT(first_ >= 0 && layers_ >= 0 && first_ + layers_ <= config_.num_layers, "Network: stage span");
}

template <class R>
void Network<R>::set_slots(int n) {
  JETMOE_ASSERT(n >= 1, "Network::set_slots: at least one slot");
  if (n == slots()) return;
  slots_.resize(std::size_t(n));
  if (B_ > 0)
    for (Slot& s : slots_)
      if (s.x.empty()) allocate_slot(s);
}

template <class R>
void Network<R>::prepare(std::int64_t B, std::int64_t T) {
  if (T > config_.max_position_embeddings)
    fail(ErrorKind::Input, "sequence length " + std::to_string(T) + " exceeds the model's context (" +
                               std::to_string(config_.max_position_embeddings) + " positions)");
  allocate(B, T);
}

template <class R>
void Network<R>::allocate_slot(Slot& a) {
  const ModelConfig& c = config_;
  const std::int64_t B = B_, T = T_, N = B * T, D = c.hidden_size, H = c.num_kv_heads, d = c.head_dim,
                     k = c.top_k, F = c.ffn_hidden_size, V = c.vocab_size, NK = N * k, Hq = H * k;
  a.flat_ids = IntView1("flat_ids", std::size_t(N));
  a.x.assign(std::size_t(layers_ + 1), Mat<R>());
  for (auto& x : a.x) x = Mat<R>("block_input", N, D);
  a.blocks.assign(recompute_ ? 0 : std::size_t(layers_), Block());
  auto make = [&](Block& blk) {
    blk.rstd1 = Vec<R>("rstd_attention", N);
    blk.rstd2 = Vec<R>("rstd_mlp", N);
    blk.q = Ten4<R>("q", B, T, Hq, d);
    blk.k = Ten4<R>("k", B, T, H, d);
    blk.v = Ten4<R>("v", B, T, H, d);
    blk.attn = Ten4<R>("attention", B, T, Hq, d);
    blk.lse = Ten3<R>("attention_lse", B, Hq, T);
    blk.y_attn = Mat<R>("moa_expert_out", NK, D);
    blk.x_mid = Mat<R>("mid_block", N, D);
    blk.z = Mat<R>("swiglu_in", NK, 2 * F);
    blk.y_mlp = Mat<R>("moe_expert_out", NK, D);
  };
  for (Block& blk : a.blocks) make(blk);
  if (recompute_ && scratch_.q.data() == nullptr) make(scratch_);
  if (span_.head) {
    a.rstd_final = Vec<R>("rstd_final", N);
    if (chunked_head()) {
      a.targets = IntView1("targets_kept", N);
    } else {
      a.logits = Mat<R>("logits", N, V);
      a.dlogits = Mat<R>("dlogits", N, V);
    }
  }
}

template <class R>
void Network<R>::allocate(std::int64_t B, std::int64_t T) {
  if (B == B_ && T == T_) return;
  const ModelConfig& c = config_;
  const std::size_t N = std::size_t(B * T), D = std::size_t(c.hidden_size), H = std::size_t(c.num_kv_heads),
                    d = std::size_t(c.head_dim), A = std::size_t(c.attention_width()), k = std::size_t(c.top_k),
                    F = std::size_t(c.ffn_hidden_size), E = std::size_t(c.num_experts);
  const std::size_t NK = N * k, Hq = H * k;
  B_ = B, T_ = T;
  head_rows_ = head_rows_for(B * T);
  chunk_logits_ = chunk_dlogits_ = Mat<R>();
  if (chunked_head()) {
    chunk_logits_ = Mat<R>("logits_chunk", head_rows_, c.vocab_size);
    chunk_dlogits_ = Mat<R>("dlogits_chunk", head_rows_, c.vocab_size);
  }
  rope_cos_ = Ten3<R>("rope_cos", B, T, d / 2);
  rope_sin_ = Ten3<R>("rope_sin", B, T, d / 2);
  rope_tables(sequence_positions(B, T), c.rope_theta, c.head_dim, rope_cos_, rope_sin_);
  scratch_ = Block();
  for (Slot& a : slots_) allocate_slot(a);
  u_ = Mat<R>("normed", N, D);
  tmp_ = Mat<R>("block_out", N, D);
  gathered_ = Mat<R>("gathered", NK, D);
  q_sorted_ = Mat<R>("q_sorted", NK, A);
  o_sorted_ = Mat<R>("o_sorted", NK, A);
  h_ = Mat<R>("swiglu_out", NK, F);
  dx_ = Mat<R>("d_hidden", N, D);
  du_ = Mat<R>("d_normed", N, D);
  dgathered_ = Mat<R>("d_gathered", NK, D);
  dy_sorted_ = Mat<R>("d_expert_out", NK, D);
  drouter_ = Mat<R>("d_router_logits", N, E);
  dq_sorted_ = Mat<R>("d_q_sorted", NK, A);
  do_sorted_ = Mat<R>("d_o_sorted", NK, A);
  dh_ = Mat<R>("d_swiglu_out", NK, F);
  dz_ = Mat<R>("d_swiglu_in", NK, 2 * F);
  dattn_ = Ten4<R>("d_attention", B, T, Hq, d);
  dq_ = Ten4<R>("d_q", B, T, Hq, d);
  dk_ = Ten4<R>("d_k", B, T, H, d);
  dv_ = Ten4<R>("d_v", B, T, H, d);
}

template <class R>
void Network<R>::block_forward(const LayerWeightsT<R>& w, const Mat<R>& x_in, Block& a, const Mat<R>& x_out) {
  const ModelConfig& c = config_;
  const std::int64_t A = c.attention_width(), k = c.top_k;
  const Mat<R> u = u_;
  // ---- Mixture of attention heads ------------------------------------------------------------------
  rmsnorm_forward(x_in, w.input_norm, c.block_norm_eps, u, a.rstd1);
  route(u, w.moa_router, int(k), a.moa);
  gather_rows(u, a.moa.sorted_token, gathered_);
  expert_linear(gathered_, w.moa_q, a.moa.offsets, q_sorted_);
  // Query head i = slot j * H + h (slot j: the j-th ranked expert).
  scatter_to_tokens("scatter_queries", q_sorted_, a.moa.position, token_rows(a.q));
  // K and V straight into their tensors: kv_proj's K rows, then its V rows.
  linear(u, rows(w.kv_proj, 0, A), token_rows(a.k));
  linear(u, rows(w.kv_proj, A, 2 * A), token_rows(a.v));
  rope_forward(a.q, rope_cos_, rope_sin_);
  rope_forward(a.k, rope_cos_, rope_sin_);
  attention_forward(a.q, a.k, a.v, 0, IntView1(), a.attn, a.lse);
  gather_from_tokens("gather_attention", token_rows(a.attn), a.moa.sorted_token, a.moa.sorted_slot, o_sorted_);
  expert_linear(o_sorted_, w.moa_o, a.moa.offsets, a.y_attn);
  combine_experts(a.y_attn, a.moa, w.moa_bias, tmp_);
  Kokkos::deep_copy(a.x_mid, x_in);
  add_inplace(a.x_mid, tmp_);

  // ---- Mixture of experts MLP -----------------------------------------------------------------------
  rmsnorm_forward(a.x_mid, w.post_norm, c.block_norm_eps, u, a.rstd2);
  route(u, w.moe_router, int(k), a.moe);
  gather_rows(u, a.moe.sorted_token, gathered_);
  expert_linear(gathered_, w.moe_in, a.moe.offsets, a.z);
  swiglu_forward(a.z, h_);
  expert_linear(h_, w.moe_out, a.moe.offsets, a.y_mlp);
  if (x_out.data() == nullptr) return;  // recomputation for the backward pass: the output is not needed
  combine_experts(a.y_mlp, a.moe, w.moe_bias, tmp_);
  Kokkos::deep_copy(x_out, a.x_mid);
  add_inplace(x_out, tmp_);
}

template <class R>
void Network<R>::block_backward(const LayerWeightsT<R>& w, const Mat<R>& x_in, const Block& a, const Mat<R>& dx,
                                LayerWeightsT<R>& g, double aux_scale, LossTerms& terms) {
  const ModelConfig& c = config_;
  const std::int64_t A = c.attention_width();
  const Mat<R> u = u_, du = du_;
  const double cs = coef_switch_ * aux_scale, cz = coef_z_ * aux_scale;

  // ---- MoE MLP: x_out = x_mid + combine(y_mlp) + bias ------------------------------------------------
  combine_experts_backward(a.y_mlp, a.moe, dx, dy_sorted_, drouter_, g.moe_bias);
  {
    const RouterAux aux = router_aux_loss(a.moe.logits, a.moe.experts, cs, cz, drouter_);
    terms.switch_loss += aux.switch_loss, terms.z_loss += aux.z_loss;
  }
  rmsnorm_forward(a.x_mid, w.post_norm, c.block_norm_eps, u);  // recomputed
  gather_rows(u, a.moe.sorted_token, gathered_);
  swiglu_forward(a.z, h_);
  expert_linear_backward(h_, w.moe_out, a.moe.offsets, dy_sorted_, dh_, g.moe_out);
  swiglu_backward(a.z, dh_, dz_);
  expert_linear_backward(gathered_, w.moe_in, a.moe.offsets, dz_, dgathered_, g.moe_in);
  Kokkos::deep_copy(du, R(0));
  gather_rows_backward(dgathered_, a.moe, du);
  matmul_nn(drouter_, w.moe_router, du, 1.0);
  matmul_tn(drouter_, u, g.moe_router, 1.0);
  rmsnorm_backward(a.x_mid, w.post_norm, a.rstd2, du, dx, g.post_norm);  // dx: now d x_mid

  // ---- MoA: x_mid = x_in + combine(y_attn) + bias ----------------------------------------------------
  combine_experts_backward(a.y_attn, a.moa, dx, dy_sorted_, drouter_, g.moa_bias);
  {
    const RouterAux aux = router_aux_loss(a.moa.logits, a.moa.experts, cs, cz, drouter_);
    terms.switch_loss += aux.switch_loss, terms.z_loss += aux.z_loss;
  }
  gather_from_tokens("gather_attention", token_rows(a.attn), a.moa.sorted_token, a.moa.sorted_slot, o_sorted_);
  expert_linear_backward(o_sorted_, w.moa_o, a.moa.offsets, dy_sorted_, do_sorted_, g.moa_o);
  // Every (token, query head) comes from exactly one grouped row: a scatter, no sums.
  scatter_to_tokens("scatter_d_attention", do_sorted_, a.moa.position, token_rows(dattn_));
  attention_backward(a.q, a.k, a.v, a.attn, a.lse, dattn_, dq_, dk_, dv_);
  rope_backward(dq_, rope_cos_, rope_sin_);
  rope_backward(dk_, rope_cos_, rope_sin_);
  gather_from_tokens("gather_d_queries", token_rows(dq_), a.moa.sorted_token, a.moa.sorted_slot, dq_sorted_);
  rmsnorm_forward(x_in, w.input_norm, c.block_norm_eps, u);  // recomputed
  gather_rows(u, a.moa.sorted_token, gathered_);
  expert_linear_backward(gathered_, w.moa_q, a.moa.offsets, dq_sorted_, dgathered_, g.moa_q);
  Kokkos::deep_copy(du, R(0));
  gather_rows_backward(dgathered_, a.moa, du);
  // kv_proj: its K rows, then its V rows.
  const Mat<R> dk = token_rows(dk_), dv = token_rows(dv_);
  matmul_nn(dk, rows(w.kv_proj, 0, A), du, 1.0);
  matmul_nn(dv, rows(w.kv_proj, A, 2 * A), du, 1.0);
  matmul_tn(dk, u, rows(g.kv_proj, 0, A), 1.0);
  matmul_tn(dv, u, rows(g.kv_proj, A, 2 * A), 1.0);
  matmul_nn(drouter_, w.moa_router, du, 1.0);
  matmul_tn(drouter_, u, g.moa_router, 1.0);
  rmsnorm_backward(x_in, w.input_norm, a.rstd1, du, dx, g.input_norm);  // dx: now d x_in
}

template <class R>
LossTerms Network<R>::forward(const ModelWeightsT<R>& w, const IntView2& ids, bool with_grads, int slot) {
  const ModelConfig& c = config_;
  Slot& s = slots_.at(std::size_t(slot));
  JETMOE_ASSERT(std::int64_t(w.layers.size()) == c.num_layers, "Network: weights do not match the configuration");
  JETMOE_ASSERT(B_ > 0, "Network: prepare() before a forward pass");
  const std::int64_t B = B_, T = T_, V = c.vocab_size;
  if (span_.embedding) {
    JETMOE_ASSERT(std::int64_t(ids.extent(0)) == B && std::int64_t(ids.extent(1)) == T, "Network: ids shape");
    if (const std::int64_t bad = flatten_ids(ids, V, s.flat_ids))
      fail(ErrorKind::Input, std::to_string(bad) + " token id(s) outside the model's vocabulary [0, " +
                                        std::to_string(V) + ")");
  }
  LossTerms terms;
  Region region("forward");
  if (span_.embedding) embedding_forward(s.flat_ids, w.embed, s.x[0]);
  for (std::int64_t i = 0; i < layers_; ++i) {
    Block& a = block_of(s, i);
    block_forward(w.layers[std::size_t(first_ + i)], s.x[std::size_t(i)], a, s.x[std::size_t(i) + 1]);
    if (!with_grads) {  // no backward pass: the router losses are reported from here
      for (const RoutingT<R>* r : {&a.moa, &a.moe}) {
        const RouterAux aux = router_aux_loss(r->logits, r->experts, 0.0, 0.0);
        terms.switch_loss += aux.switch_loss, terms.z_loss += aux.z_loss;
      }
    }
  }
  if (span_.head) {
    rmsnorm_forward(s.x.back(), w.final_norm, c.rms_norm_eps, u_, s.rstd_final);
    Region head("lm_head");
    if (!chunked_head()) linear(u_, w.lm_head, s.logits);  // in chunks: by the loss, from u_
  }
  return terms;
}

namespace {
// Rows [r0, r0 + n) of a row-major matrix, or of a vector, as an unmanaged view of the same memory.
template <class R>
Mat<R> rows_of(const Mat<R>& m, std::int64_t r0, std::int64_t n) {
  return Mat<R>(m.data() + r0 * std::int64_t(m.extent(1)), n, m.extent(1));
}
IntView1 rows_of(const IntView1& v, std::int64_t r0, std::int64_t n) { return IntView1(v.data() + r0, n); }
}  // namespace

template <class R>
std::vector<double> Network<R>::chunked_rows(const ModelWeightsT<R>& w, const IntView1& targets) {
  const std::int64_t N = B_ * T_;
  check_targets(targets, config_.vocab_size);  // all of them at once, as the unchunked loss does
  std::vector<double> rows(static_cast<std::size_t>(N));
  for (std::int64_t r0 = 0; r0 < N; r0 += head_rows_) {
    const std::int64_t n = std::min(head_rows_, N - r0);
    const Mat<R> logits = rows_of(chunk_logits_, 0, n);
    {
      Region head("lm_head");
      linear(rows_of(u_, r0, n), w.lm_head, logits);
    }
    const std::vector<double> part = cross_entropy_rows(logits, rows_of(targets, r0, n));
    std::copy(part.begin(), part.end(), rows.begin() + r0);
  }
  return rows;
}

template <class R>
void Network<R>::keep_for_backward(Slot& s, const IntView1& targets, std::vector<double> row_weights) {
  Kokkos::deep_copy(s.targets, targets);
  s.row_weights = std::move(row_weights);
}

template <class R>
void Network<R>::chunked_head_backward(const ModelWeightsT<R>& w, ModelWeightsT<R>& g, const Slot& s) {
  const std::int64_t N = B_ * T_;
  for (std::int64_t r0 = 0; r0 < N; r0 += head_rows_) {
    const std::int64_t n = std::min(head_rows_, N - r0);
    const Mat<R> logits = rows_of(chunk_logits_, 0, n), dlogits = rows_of(chunk_dlogits_, 0, n);
    const Mat<R> u = rows_of(u_, r0, n);
    linear(u, w.lm_head, logits);  // the loss's logits of these rows again
    cross_entropy_backward(logits, rows_of(s.targets, r0, n),
                           std::vector<double>(s.row_weights.begin() + r0, s.row_weights.begin() + r0 + n), dlogits);
    matmul_tn(dlogits, u, g.lm_head, 1.0);
    matmul_nn(dlogits, w.lm_head, rows_of(du_, r0, n));
  }
}

template <class R>
double Network<R>::loss(const ModelWeightsT<R>& w, const IntView1& targets, bool with_grads, double ce_scale, int slot,
                        LossTerms& terms) {
  Region region("loss");
  Slot& s = slots_.at(std::size_t(slot));
  const std::int64_t N = std::int64_t(targets.extent(0));
  JETMOE_ASSERT(N == B_ * T_, "Network: targets shape");
  const std::int64_t count = count_targets(targets);
  if (chunked_head()) {
    // cross_entropy's mean and per-row gradient scale, from the rows' losses a chunk at a time.
    const std::vector<double> rows = chunked_rows(w, targets);
    double total = 0;
    for (const double r : rows) total += r;
    const double loss = count > 0 ? total / double(count) : 0.0;
    terms.ce_sum = loss * double(count);
    terms.count = count;
    if (with_grads) {
      const double row_scale = count > 0 ? ce_scale * double(count) / double(count) : 0.0;
      auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), targets);
      std::vector<double> weights(std::size_t(N), 0.0);
      for (std::int64_t t = 0; t < N; ++t) weights[std::size_t(t)] = h(t) == ignore_index ? 0.0 : row_scale;
      keep_for_backward(s, targets, std::move(weights));
    }
    return loss;
  }
  const CrossEntropy ce = cross_entropy(s.logits, targets, with_grads ? s.dlogits : Mat<R>(), ce_scale * double(count));
  terms.ce_sum = ce.loss * double(ce.count);
  terms.count = ce.count;
  return ce.loss;
}

template <class R>
void Network<R>::backward(const ModelWeightsT<R>& w, ModelWeightsT<R>& g, double aux_scale, LossTerms& terms, int slot) {
  Region region("backward");
  Slot& s = slots_.at(std::size_t(slot));
  if (span_.head) {
    {
      Region head("lm_head");
      // The final norm's output again (u_ is a workspace other slots' forward passes overwrite).
      rmsnorm_forward(s.x.back(), w.final_norm, config_.rms_norm_eps, u_);
      if (chunked_head()) {
        chunked_head_backward(w, g, s);
      } else {
        matmul_tn(s.dlogits, u_, g.lm_head, 1.0);
        matmul_nn(s.dlogits, w.lm_head, du_);
      }
    }
    Kokkos::deep_copy(dx_, R(0));
    rmsnorm_backward(s.x.back(), w.final_norm, s.rstd_final, du_, dx_, g.final_norm);
    if (backward_progress) backward_progress(config_.num_layers);
  }
  for (std::int64_t i = layers_ - 1; i >= 0; --i) {
    Block& a = block_of(s, i);
    const LayerWeightsT<R>& wl = w.layers[std::size_t(first_ + i)];
    if (recompute_) block_forward(wl, s.x[std::size_t(i)], a, Mat<R>());
    block_backward(wl, s.x[std::size_t(i)], a, dx_, g.layers[std::size_t(first_ + i)], aux_scale, terms);
    if (backward_progress) backward_progress(first_ + i);
  }
  if (span_.embedding) embedding_backward(s.flat_ids, dx_, g.embed);
  if (backward_progress) backward_progress(-1);
}

template <class R>
void Network<R>::weighted_loss(const ModelWeightsT<R>& w, const IntView1& targets, bool with_grads,
                               const RowWeights& weigh, int slot, LossTerms& terms) {
  Region region("loss");
  Slot& s = slots_.at(std::size_t(slot));
  row_losses_ = chunked_head() ? chunked_rows(w, targets) : cross_entropy_rows(s.logits, targets);
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), targets);
  for (std::size_t t = 0; t < row_losses_.size(); ++t)
    if (h(t) != ignore_index) terms.ce_sum += row_losses_[t], ++terms.count;
  std::vector<double> weights(row_losses_.size(), 0.0);
  weigh(row_losses_, weights);
  if (with_grads && chunked_head()) keep_for_backward(s, targets, std::move(weights));
  else if (with_grads) cross_entropy_backward(s.logits, targets, weights, s.dlogits);
}

template <class R>
LossTerms Network<R>::stage_forward(const ModelWeightsT<R>& w, const IntView2& ids, const IntView1& targets,
                                    bool with_grads, double ce_scale, int slot, const RowWeights* weigh) {
  LossTerms terms = forward(w, ids, with_grads, slot);
  if (span_.head) {
    if (weigh && *weigh) weighted_loss(w, targets, with_grads, *weigh, slot, terms);
    else loss(w, targets, with_grads, ce_scale, slot, terms);
  }
  return terms;
}

template <class R>
void Network<R>::stage_backward(const ModelWeightsT<R>& w, ModelWeightsT<R>& grads, double aux_scale, LossTerms& terms,
                                int slot) {
  backward(w, grads, aux_scale, terms, slot);
}

template <class R>
LossTerms Network<R>::run(const ModelWeightsT<R>& w, const IntView2& ids, const IntView1& targets,
                          ModelWeightsT<R>* grads, double ce_scale, double aux_scale) {
  JETMOE_ASSERT(span_.whole(config_), "Network::run: the whole model (a stage runs stage_forward/stage_backward)");
  JETMOE_ASSERT(targets.extent(0) == ids.extent(0) * ids.extent(1), "Network::run: targets shape");
  prepare(std::int64_t(ids.extent(0)), std::int64_t(ids.extent(1)));
  LossTerms terms = forward(w, ids, grads != nullptr, 0);
  loss(w, targets, grads != nullptr, ce_scale, 0, terms);
  if (grads) backward(w, *grads, aux_scale, terms, 0);
  return terms;
}

template <class R>
LossTerms Network<R>::run_weighted(const ModelWeightsT<R>& w, const IntView2& ids, const IntView1& targets,
                                   ModelWeightsT<R>* grads, const RowWeights& weigh, double aux_scale) {
  JETMOE_ASSERT(span_.whole(config_), "Network::run_weighted: the whole model");
  JETMOE_ASSERT(targets.extent(0) == ids.extent(0) * ids.extent(1), "Network::run_weighted: targets shape");
  prepare(std::int64_t(ids.extent(0)), std::int64_t(ids.extent(1)));
  LossTerms terms = forward(w, ids, grads != nullptr, 0);
  if (!grads) {  // the row losses only
    weighted_loss(w, targets, false, [](const std::vector<double>&, std::vector<double>&) {}, 0, terms);
    return terms;
  }
  weighted_loss(w, targets, true, weigh, 0, terms);
  backward(w, *grads, aux_scale, terms, 0);
  return terms;
}

template <class R>
std::string Network<R>::memory_summary(std::int64_t B, std::int64_t T) const {
  const std::int64_t N = B * T, V = config_.vocab_size;
  const char* type = sizeof(R) == 4 ? "fp32" : "fp64";
  std::string s = recompute_ ? "one block's activations at a time, computed again in the backward (train/recompute)"
                             : "the activations of all " + std::to_string(layers_) +
                                   " block(s) kept for the backward, per micro-batch in flight";
  if (span_.head) {
    const std::int64_t rows = head_rows_for(N);
    char buf[256];
    const double mb = 2.0 * double(rows) * double(V) * double(sizeof(R)) / 1e6;
    if (rows < N)
      std::snprintf(buf, sizeof buf,
                    "; LM head in chunks of %lld of the %lld tokens (train/logits_chunk_tokens): logits and their gradient "
                    "2 x [%lld, %lld] %s = %.1f MB, shared",
                    (long long)rows, (long long)N, (long long)rows, (long long)V, type, mb);
    else
      std::snprintf(buf, sizeof buf,
                    "; LM head whole: logits and their gradient 2 x [%lld, %lld] %s = %.1f MB per micro-batch in flight",
                    (long long)N, (long long)V, type, mb);
    s += buf;
  }
  return s;
}

template class Network<float>;
template class Network<double>;

}  // namespace jetmoe
