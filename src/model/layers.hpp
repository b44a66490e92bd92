#pragma once
// The JetMoE layers as Kokkos kernels (jetmoe-spec.md section 3). Shapes in each comment; N = B*T
// token rows, D hidden, H_kv shared K/V heads, Hq = H_kv*k query heads, d head dim.
#include <cstdint>

#include "core/tensor.hpp"

namespace jetmoe {

// x[t, :] = emb[ids[t], :]                      ids [N], emb [V, D], x [N, D]
void embedding_forward(const IntView1& ids, const View2& emb, const View2& x);

// y = w * (x * rsqrt(mean(x^2) + eps))           x, y [N, D], w [D]; rstd [N] (optional, for backward)
void rmsnorm_forward(const View2& x, const View1& w, float eps, const View2& y, const View1& rstd = View1());

// RoPE angles for positions pos [B, T]: cos, sin [B, T, d/2] with angle = pos * theta^(-2i/d), in
// fp32 as HF computes them (inv_freq in fp32, then the product). Computed once per forward pass and
// shared by every layer and head.
void rope_tables(const IntView2& pos, double theta, std::int64_t head_dim, const View3& cos, const View3& sin);

// Half-split (NeoX) rotary embedding in place on x [B, T, heads, d]:
// for i < d/2: (x_i, x_{i+d/2}) <- (x_i c - x_{i+d/2} s, x_{i+d/2} c + x_i s).
void rope_forward(const View4& x, const View3& cos, const View3& sin);

// Causal attention with shared K/V: query head i uses K/V head i mod H_kv (tiled, not interleaved).
//   q [B, Tq, Hq, d]; k, v [B, Tk, H_kv, d] (a KV cache: rows [0, past + Tq) valid);
//   query t sits at key position past + t and sees keys s <= past + t with s >= key_start[b]
//   (left padding; empty view = 0). out [B, Tq, Hq, d]; lse [B, Hq, Tq] (optional): log-sum-exp of
//   the scaled scores, for the backward pass. Online softmax: no Tq x Tk matrix.
void attention_forward(const View4& q, const View4& k, const View4& v, std::int64_t past, const IntView1& key_start,
                       const View4& out, const View3& lse = View3());

// h = silu(z[:, :F]) * z[:, F:]                  z [M, 2F], h [M, F]   (gate half first)
void swiglu_forward(const View2& z, const View2& h);

// x += y                                         x, y [N, D]
void add_inplace(const View2& x, const View2& y);

}  // namespace jetmoe
