#pragma once
// The JetMoE layers as Kokkos kernels (jetmoe-spec.md section 3), each forward next to its backward.
// Shapes in each comment; N = B*T token rows, D hidden, H_kv shared K/V heads, Hq = H_kv*k query
// heads, d head dim. Every function is instantiated for R = float (the model) and R = double (the
// finite-difference gradient checks). Backward functions marked "+=" accumulate into their outputs;
// every reduction runs in a fixed order, so results do not depend on scheduling.
#include <cstdint>

#include "core/tensor.hpp"

namespace jetmoe {

// flat[b*T + t] = ids[b, t]                      ids [B, T], flat [B*T]; returns how many ids lie
// outside the vocabulary [0, vocab) (the caller's error: an embedding row that does not exist).
std::int64_t flatten_ids(const IntView2& ids, std::int64_t vocab, const IntView1& flat);
// The positions past, ..., past + T - 1 of each of B sequences: [B, T] (RoPE without padding).
IntView2 sequence_positions(std::int64_t B, std::int64_t T, std::int64_t past = 0);

// x[t, :] = emb[ids[t], :]                      ids [N], emb [V, D], x [N, D]
template <class R>
void embedding_forward(const IntView1& ids, const Mat<R>& emb, const Mat<R>& x);
// demb[v, :] += sum over t with ids[t] == v of dx[t, :], summed in token order.
template <class R>
void embedding_backward(const IntView1& ids, const Mat<R>& dx, const Mat<R>& demb);

// y = w * (x * rsqrt(mean(x^2) + eps))           x, y [N, D], w [D]; rstd [N] (optional, for backward)
template <class R>
void rmsnorm_forward(const Mat<R>& x, const Vec<R>& w, double eps, const Mat<R>& y, const Vec<R>& rstd = Vec<R>());
// dx += r * (w dy) - x r^3 / D * sum_c (w dy x)_c;   dw += sum_t dy x r      (r = rstd from the forward)
template <class R>
void rmsnorm_backward(const Mat<R>& x, const Vec<R>& w, const Vec<R>& rstd, const Mat<R>& dy, const Mat<R>& dx,
                      const Vec<R>& dw);

// RoPE angles for positions pos [B, T]: cos, sin [B, T, d/2] with angle = pos * theta^(-2i/d), in
// fp32 as HF computes them (inv_freq in fp32, then the product). Computed once per forward pass and
// shared by every layer and head.
template <class R>
void rope_tables(const IntView2& pos, double theta, std::int64_t head_dim, const Ten3<R>& cos, const Ten3<R>& sin);

// Half-split (NeoX) rotary embedding in place on x [B, T, heads, d]:
// for i < d/2: (x_i, x_{i+d/2}) <- (x_i c - x_{i+d/2} s, x_{i+d/2} c + x_i s).
// With a row offset o, x may be longer (a KV cache [B, capacity, heads, d]): rows o..o+T-1 of each
// sequence are rotated by the angles of cos, sin [B, T, d/2].
template <class R>
void rope_forward(const Ten4<R>& x, const Ten3<R>& cos, const Ten3<R>& sin, std::int64_t offset = 0);
// Its transpose (the inverse rotation), in place on the gradient dx [B, T, heads, d].
template <class R>
void rope_backward(const Ten4<R>& dx, const Ten3<R>& cos, const Ten3<R>& sin);

// Causal attention with shared K/V: query head i uses K/V head i mod H_kv (tiled, not interleaved).
//   q [B, Tq, Hq, d]; k, v [B, Tk, H_kv, d] (a KV cache: rows [0, past + Tq) valid);
//   query t sits at key position past + t and sees keys s <= past + t with s >= key_start[b]
//   (left padding; empty view = 0). out [B, Tq, Hq, d]; lse [B, Hq, Tq] (optional): log-sum-exp of
//   the scaled scores, for the backward pass. No Tq x Tk matrix: a prompt goes a block of queries at a
//   time (at most ~16M scores), a few queries (Tq < 8, decoding) keep one row of Tk scores each.
template <class R>
void attention_forward(const Ten4<R>& q, const Ten4<R>& k, const Ten4<R>& v, std::int64_t past,
                       const IntView1& key_start, const Ten4<R>& out, const Ten3<R>& lse = Ten3<R>());
// Backward of attention_forward over full sequences (past = 0, no padding): from q, k, v, out, lse and
// dout, writes dq [B, T, Hq, d] and dk, dv [B, T, H_kv, d] (the gradients of the k query heads that
// share a K/V head are summed). Scores are recomputed from lse a block of query rows at a time, as
// flash attention does: no T x T matrix is kept between forward and backward.
template <class R>
void attention_backward(const Ten4<R>& q, const Ten4<R>& k, const Ten4<R>& v, const Ten4<R>& out,
                        const Ten3<R>& lse, const Ten4<R>& dout, const Ten4<R>& dq, const Ten4<R>& dk,
                        const Ten4<R>& dv);

// h = silu(z[:, :F]) * z[:, F:]                  z [M, 2F], h [M, F]   (gate half first)
template <class R>
void swiglu_forward(const Mat<R>& z, const Mat<R>& h);
// dz[:, :F] = dh b silu'(a), dz[:, F:] = dh silu(a)     (a, b the two halves of z); dz written.
template <class R>
void swiglu_backward(const Mat<R>& z, const Mat<R>& dh, const Mat<R>& dz);

// x += y                                         x, y [N, D]
template <class R>
void add_inplace(const Mat<R>& x, const Mat<R>& y);

// db[c] += sum_t dy[t, c] (a bias gradient; tokens summed in order)
template <class R>
void bias_backward(const Mat<R>& dy, const Vec<R>& db);

}  // namespace jetmoe
