#pragma once
// CPU reference of the 'embedding' kernels (include/jetmoe/embedding.h), plain C++17, header-only.
// Used by the GPU test (kernels/tests/test_embedding.cu) and proven by
// tests/kernel_reference/test_embedding.cpp (closed forms, finite differences, PyTorch fixtures).
//
// Shapes (row-major): emb / demb [V, D], ids [N], x / dx [N, D]. Out-of-range ids (< 0 or >= V): the
// forward zero-fills the row, the backward skips the token; both return how many there were.
//   embedding_fwd                 x[t] = emb[ids[t]]                      (a copy: exact in any dtype)
//   embedding_bwd                 demb[v] (+)= sum_{t: ids[t] = v} dx[t]  in double (the mathematical value)
//   embedding_bwd_f32_ordered     the same sum in fp32, in ascending token order starting from 0, then
//                                 demb[v] = acc or demb[v] + acc: the order the GPU kernel and
//                                 src/model/layers.cpp embedding_backward use (bit-exact target)
//   embedding_group_tokens        counting sort: offsets [V + 1], tokens ascending within an id
#include "rounding.hpp"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace jkref {

inline bool embedding_id_valid(std::int64_t id, std::int64_t V) { return id >= 0 && id < V; }

// x[t, :] = emb[ids[t], :]; rows of out-of-range ids are zero. Returns the number of such tokens.
inline std::int64_t embedding_fwd(const std::vector<double>& emb, const std::vector<std::int32_t>& ids,
                                  std::int64_t V, std::int64_t D, std::vector<double>& x) {
  const std::int64_t N = static_cast<std::int64_t>(ids.size());
  x.assign(static_cast<std::size_t>(N * D), 0.0);
  std::int64_t invalid = 0;
  for (std::int64_t t = 0; t < N; ++t) {
    const std::int64_t id = ids[static_cast<std::size_t>(t)];
    if (!embedding_id_valid(id, V)) {
      ++invalid;
      continue;
    }
    for (std::int64_t c = 0; c < D; ++c) x[static_cast<std::size_t>(t * D + c)] = emb[static_cast<std::size_t>(id * D + c)];
  }
  return invalid;
}

// Counting sort of the tokens by id: offsets[v] = number of in-range tokens with id < v (offsets[V] =
// in-range tokens), sorted_token[offsets[v] ..] = the tokens of id v ascending; the remaining
// N - offsets[V] entries are -1. Returns the number of out-of-range tokens.
inline std::int64_t embedding_group_tokens(const std::vector<std::int32_t>& ids, std::int64_t V,
                                           std::vector<std::int32_t>& offsets, std::vector<std::int32_t>& sorted_token) {
  const std::int64_t N = static_cast<std::int64_t>(ids.size());
  offsets.assign(static_cast<std::size_t>(V + 1), 0);
  std::int64_t invalid = 0;
  for (const std::int32_t id : ids) {
    if (embedding_id_valid(id, V)) ++offsets[static_cast<std::size_t>(id) + 1];
    else ++invalid;
  }
  for (std::int64_t v = 0; v < V; ++v) offsets[static_cast<std::size_t>(v + 1)] += offsets[static_cast<std::size_t>(v)];
  sorted_token.assign(static_cast<std::size_t>(N), -1);
  std::vector<std::int32_t> next(offsets.begin(), offsets.end() - 1);
  for (std::int64_t t = 0; t < N; ++t) {
    const std::int32_t id = ids[static_cast<std::size_t>(t)];
    if (embedding_id_valid(id, V)) sorted_token[static_cast<std::size_t>(next[static_cast<std::size_t>(id)]++)] = static_cast<std::int32_t>(t);
  }
  return invalid;
}

// demb[v, :] = beta * demb[v, :] + sum over in-range tokens t with ids[t] == v of dx[t, :], in double.
// beta is 0 or 1. With beta 0, rows of ids that do not occur are zeroed when zero_untouched, else left.
// Returns the number of out-of-range tokens (skipped).
inline std::int64_t embedding_bwd(const std::vector<double>& dx, const std::vector<std::int32_t>& ids, std::int64_t V,
                                  std::int64_t D, double beta, bool zero_untouched, std::vector<double>& demb) {
  const std::int64_t N = static_cast<std::int64_t>(ids.size());
  std::vector<double> sum(static_cast<std::size_t>(V * D), 0.0);
  std::vector<char> touched(static_cast<std::size_t>(V), 0);
  std::int64_t invalid = 0;
  for (std::int64_t t = 0; t < N; ++t) {
    const std::int64_t id = ids[static_cast<std::size_t>(t)];
    if (!embedding_id_valid(id, V)) {
      ++invalid;
      continue;
    }
    touched[static_cast<std::size_t>(id)] = 1;
    for (std::int64_t c = 0; c < D; ++c) sum[static_cast<std::size_t>(id * D + c)] += dx[static_cast<std::size_t>(t * D + c)];
  }
  for (std::int64_t v = 0; v < V; ++v) {
    if (!touched[static_cast<std::size_t>(v)] && (beta != 0.0 || !zero_untouched)) continue;
    for (std::int64_t c = 0; c < D; ++c) {
      double& d = demb[static_cast<std::size_t>(v * D + c)];
      d = (beta != 0.0 ? d : 0.0) + sum[static_cast<std::size_t>(v * D + c)];
    }
  }
  return invalid;
}

// As embedding_bwd, with fp32 arithmetic in the kernel's order: per touched id v and column c,
// acc = 0; for each token t with ids[t] == v, ascending: acc = f32(acc + dx[t, c]); then
// demb[v, c] = acc (beta 0) or f32(demb[v, c] + acc) (beta 1). dx and demb hold fp32 values.
// (f32_round of the double sum of two floats is the correctly rounded fp32 sum: double has more than
// 2 * 24 + 2 bits, so rounding twice is harmless.)
inline std::int64_t embedding_bwd_f32_ordered(const std::vector<double>& dx, const std::vector<std::int32_t>& ids,
                                              std::int64_t V, std::int64_t D, double beta, bool zero_untouched,
                                              std::vector<double>& demb) {
  std::vector<std::int32_t> offsets, order;
  const std::int64_t invalid = embedding_group_tokens(ids, V, offsets, order);
  for (std::int64_t v = 0; v < V; ++v) {
    const std::int32_t begin = offsets[static_cast<std::size_t>(v)], end = offsets[static_cast<std::size_t>(v + 1)];
    if (begin == end && (beta != 0.0 || !zero_untouched)) continue;
    for (std::int64_t c = 0; c < D; ++c) {
      double acc = 0.0;
      for (std::int32_t i = begin; i < end; ++i) {
        const std::int64_t t = order[static_cast<std::size_t>(i)];
        acc = f32_round(acc + dx[static_cast<std::size_t>(t * D + c)]);
      }
      double& d = demb[static_cast<std::size_t>(v * D + c)];
      d = beta != 0.0 ? f32_round(d + acc) : acc;
    }
  }
  return invalid;
}

}  // namespace jkref
