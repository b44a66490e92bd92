// One JetMoE block on the device: host orchestration of the family kernels (router, grouped_gemm,
// attention, fused) plus small glue kernels. See include/jetmoe/layer.h and kernels/notes/layer.md.
// Mirrors src/train/network.cpp (block_forward / block_backward) step for step.
#include "common.cuh"
#include "jetmoe/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace jk::detail {
namespace {

// ---- glue kernels -----------------------------------------------------------------------------------

constexpr int kGlueThreads = 256;

inline unsigned glue_blocks(std::int64_t n) {
  const std::int64_t b = (n + kGlueThreads - 1) / kGlueThreads;
  return static_cast<unsigned>(std::min<std::int64_t>(std::max<std::int64_t>(b, 1), 65535 * 8));
}

#define JK_GRID_STRIDE(i, n)                                                          \
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += std::int64_t(gridDim.x) * blockDim.x)

// offsets {0, rows} of the one-expert grouped GEMM (the shared K/V projection).
__global__ void set_single_expert_offsets(std::int32_t* offsets, std::int32_t rows) {
  if (threadIdx.x == 0 && blockIdx.x == 0) {
    offsets[0] = 0;
    offsets[1] = rows;
  }
}

// positions[n] = n mod T (every sequence starts at 0).
__global__ void sequence_positions(std::int32_t* positions, std::int64_t n, std::int64_t T) {
  JK_GRID_STRIDE(i, n) positions[i] = static_cast<std::int32_t>(i % T);
}

// flat[r] = sorted_token[r] * k + sorted_slot[r]: the row of (token, slot) in a token tensor viewed
// as [N k, C] (src/train/network.cpp gather_from_tokens).
__global__ void token_slot_rows(const std::int32_t* sorted_token, const std::int32_t* sorted_slot, std::int64_t rows,
                                int k, std::int32_t* flat) {
  JK_GRID_STRIDE(r, rows) flat[r] = sorted_token[r] * k + sorted_slot[r];
}

// out = bf16(a + b) (PyTorch's bf16 add: fp32 sum, one rounding).
__global__ void add_bf16(const std::uint16_t* a, const std::uint16_t* b, std::uint16_t* out, std::int64_t n) {
  JK_GRID_STRIDE(i, n) out[i] = float_to_bf16_bits(bf16_bits_to_float(a[i]) + bf16_bits_to_float(b[i]));
}

// acc += b (bf16 widened exactly).
__global__ void accumulate_bf16_into_f32(float* acc, const std::uint16_t* b, std::int64_t n) {
  JK_GRID_STRIDE(i, n) acc[i] += bf16_bits_to_float(b[i]);
}

// dst = src (beta 0, old dst never read) or dst + src (beta 1).
__global__ void accumulate_f32(float* dst, const float* src, std::int64_t n, int accumulate) {
  JK_GRID_STRIDE(i, n) dst[i] = accumulate ? dst[i] + src[i] : src[i];
}

// dkv[t, 0:A] = dk[t], dkv[t, A:2A] = dv[t]: the gradient of kv_proj's output [N, 2A].
__global__ void pack_kv(const std::uint16_t* dk, const std::uint16_t* dv, std::uint16_t* dkv, std::int64_t N,
                        std::int64_t A) {
  JK_GRID_STRIDE(i, N * 2 * A) {
    const std::int64_t t = i / (2 * A), c = i % (2 * A);
    dkv[i] = c < A ? dk[t * A + c] : dv[t * A + c - A];
  }
}

// Decode: position p = cache_len[b]; len_after = p + 1 (the new row included).
__global__ void decode_positions(const std::int32_t* cache_len, std::int32_t* positions, std::int32_t* len_after,
                                 std::int64_t B) {
  JK_GRID_STRIDE(b, B) {
    positions[b] = cache_len[b];
    len_after[b] = cache_len[b] + 1;
  }
}

// k_cache[b, p, :] = k_new[b, :] (A values per row), same for V; skipped when p is outside [0, Tmax).
__global__ void append_kv(const std::uint16_t* k_new, const std::uint16_t* v_new, const std::int32_t* positions,
                          std::uint16_t* k_cache, std::uint16_t* v_cache, std::int64_t B, std::int64_t Tmax,
                          std::int64_t A) {
  JK_GRID_STRIDE(i, B * A) {
    const std::int64_t b = i / A, c = i % A;
    const std::int64_t p = positions[b];
    if (p < 0 || p >= Tmax) continue;
    k_cache[(b * Tmax + p) * A + c] = k_new[i];
    v_cache[(b * Tmax + p) * A + c] = v_new[i];
  }
}

// ---- buffer carving -----------------------------------------------------------------------------------

struct Routing {
  float* logits;               // [N, E]
  std::int32_t* ids;           // [N, k]
  float* gates_f32;            // [N, k]
  std::uint16_t* gates_bf16;   // [N, k]
  std::int32_t* counts;        // [E]
  std::int32_t* offsets;       // [E + 1]
  std::int32_t* sorted_token;  // [N k]
  std::int32_t* sorted_slot;   // [N k]
  std::int32_t* position;      // [N, k]
  std::int32_t* flat;          // [N k] sorted_token * k + sorted_slot
};

Routing carve_routing(Carver& c, std::int64_t N, std::int64_t E, std::int64_t k) {
  Routing r;
  r.logits = c.take<float>(N * E);
  r.ids = c.take<std::int32_t>(N * k);
  r.gates_f32 = c.take<float>(N * k);
  r.gates_bf16 = c.take<std::uint16_t>(N * k);
  r.counts = c.take<std::int32_t>(E);
  r.offsets = c.take<std::int32_t>(E + 1);
  r.sorted_token = c.take<std::int32_t>(N * k);
  r.sorted_slot = c.take<std::int32_t>(N * k);
  r.position = c.take<std::int32_t>(N * k);
  r.flat = c.take<std::int32_t>(N * k);
  return r;
}

struct Dims {
  std::int64_t B, T, N, NK, D, E, k, Hkv, d, A, Hq, F;
};

Dims dims_of(const jk_layer_config_t& c, std::int64_t B, std::int64_t T) {
  Dims s;
  s.B = B, s.T = T, s.N = B * T, s.D = c.hidden, s.E = c.num_experts, s.k = c.top_k, s.Hkv = c.kv_heads;
  s.d = c.head_dim, s.A = c.kv_heads * c.head_dim, s.Hq = c.top_k * c.kv_heads, s.F = c.ffn;
  s.NK = s.N * s.k;
  return s;
}

// What the forward keeps for the backward.
struct Saved {
  std::uint16_t* u1;  // [N, D]
  float* rstd1;       // [N]
  Routing moa;
  std::uint16_t* q;       // [N, Hq, d] after RoPE
  std::uint16_t* k;       // [N, H_kv, d] after RoPE
  std::uint16_t* v;       // [N, H_kv, d]
  std::uint16_t* attn;    // [N, Hq, d]
  float* lse;             // [B, Hq, T]
  std::uint16_t* y_attn;  // [N k, D]
  std::uint16_t* x_mid;   // [N, D]
  std::uint16_t* u2;      // [N, D]
  float* rstd2;           // [N]
  Routing moe;
  std::uint16_t* z;          // [N k, 2F]
  std::uint16_t* h;          // [N k, F]  SwiGLU output (fc2 input; kept: no recomputation in the backward)
  std::uint16_t* y_mlp;      // [N k, D]
  std::uint16_t* g1;         // [N k, D]  u1 gathered by the MoA plan (W_q input)
  std::uint16_t* g2;         // [N k, D]  u2 gathered by the MoE plan (fc1 input)
  std::int32_t* positions;   // [N]
  std::int32_t* kv_offsets;  // [2] = {0, N}
};

Saved carve_saved(Carver& c, const Dims& s) {
  Saved v;
  v.u1 = c.take<std::uint16_t>(s.N * s.D);
  v.rstd1 = c.take<float>(s.N);
  v.moa = carve_routing(c, s.N, s.E, s.k);
  v.q = c.take<std::uint16_t>(s.N * s.Hq * s.d);
  v.k = c.take<std::uint16_t>(s.N * s.A);
  v.v = c.take<std::uint16_t>(s.N * s.A);
  v.attn = c.take<std::uint16_t>(s.N * s.Hq * s.d);
  v.lse = c.take<float>(s.B * s.Hq * s.T);
  v.y_attn = c.take<std::uint16_t>(s.NK * s.D);
  v.x_mid = c.take<std::uint16_t>(s.N * s.D);
  v.u2 = c.take<std::uint16_t>(s.N * s.D);
  v.rstd2 = c.take<float>(s.N);
  v.moe = carve_routing(c, s.N, s.E, s.k);
  v.z = c.take<std::uint16_t>(s.NK * 2 * s.F);
  v.h = c.take<std::uint16_t>(s.NK * s.F);
  v.y_mlp = c.take<std::uint16_t>(s.NK * s.D);
  v.g1 = c.take<std::uint16_t>(s.NK * s.D);
  v.g2 = c.take<std::uint16_t>(s.NK * s.D);
  v.positions = c.take<std::int32_t>(s.N);
  v.kv_offsets = c.take<std::int32_t>(2);
  return v;
}

// Family workspaces, one region shared by every call (the calls on one stream are serialised).
std::size_t family_workspace_bytes(const Dims& s) {
  const int E = static_cast<int>(s.E), k = static_cast<int>(s.k);
  std::size_t b = jk_router_fwd_workspace_bytes(s.N, E, k);
  b = std::max(b, jk_router_aux_workspace_bytes(s.N, E));
  b = std::max(b, jk_router_combine_bwd_workspace_bytes(s.N, s.D));
  b = std::max(b, jk_router_bwd_workspace_bytes(s.N, s.D, E));
  b = std::max(b, static_cast<std::size_t>(std::max<std::int64_t>(jk_fused_rmsnorm_bwd_workspace_elems(s.N, s.D), 0)) *
                      sizeof(float));
  return b;
}

struct Scratch {
  void* ws;  // family workspace
  std::size_t ws_bytes;
  std::uint16_t* rows_in;    // [N k, max(D, A)]   o_sorted
  std::uint16_t* rows_mid;   // [N k, max(A, F)]   q_sorted / dh / do_sorted / dq_sorted
  std::uint16_t* rows_wide;  // [N k, 2F]          dz
  std::uint16_t* rows_d;     // [N k, D]           dy (combine backward) / d gathered
  std::uint16_t* rows_d2;    // [N k, D]
  std::uint16_t* tok_a;      // [N, max(D, Hq d)]  combine out / d attention
  std::uint16_t* tok_b;      // [N, D]
  std::uint16_t* dq;         // [N, Hq d]
  std::uint16_t* dk;         // [N, A]
  std::uint16_t* dv;         // [N, A]
  std::uint16_t* dkv;        // [N, 2A]
  float* du;                 // [N, D]
  std::uint16_t* du_bf16;    // [N, D]
  std::uint16_t* dxmid;      // [N, D]
  float* delta;              // [B, Hq, T]
  float* dlogits;            // [N, E]
  float* dbias;              // [D]
  float* losses;             // [4]
};

Scratch carve_scratch(Carver& c, const Dims& s) {
  Scratch v;
  v.ws_bytes = family_workspace_bytes(s);
  v.ws = c.take<char>(static_cast<std::int64_t>(v.ws_bytes));
  v.rows_in = c.take<std::uint16_t>(s.NK * std::max(s.D, s.A));
  v.rows_mid = c.take<std::uint16_t>(s.NK * std::max(s.A, s.F));
  v.rows_wide = c.take<std::uint16_t>(s.NK * 2 * s.F);
  v.rows_d = c.take<std::uint16_t>(s.NK * s.D);
  v.rows_d2 = c.take<std::uint16_t>(s.NK * s.D);
  v.tok_a = c.take<std::uint16_t>(s.N * std::max(s.D, s.Hq * s.d));
  v.tok_b = c.take<std::uint16_t>(s.N * s.D);
  v.dq = c.take<std::uint16_t>(s.N * s.Hq * s.d);
  v.dk = c.take<std::uint16_t>(s.N * s.A);
  v.dv = c.take<std::uint16_t>(s.N * s.A);
  v.dkv = c.take<std::uint16_t>(s.N * 2 * s.A);
  v.du = c.take<float>(s.N * s.D);
  v.du_bf16 = c.take<std::uint16_t>(s.N * s.D);
  v.dxmid = c.take<std::uint16_t>(s.N * s.D);
  v.delta = c.take<float>(s.B * s.Hq * s.T);
  v.dlogits = c.take<float>(s.N * s.E);
  v.dbias = c.take<float>(s.D);
  v.losses = c.take<float>(4);
  return v;
}

// ---- validation -----------------------------------------------------------------------------------

bool finite_nonneg(float v) { return std::isfinite(v) && v >= 0.0f; }

bool valid_config(const jk_layer_config_t* c) {
  if (c == nullptr) return false;
  if (c->hidden < 1 || c->num_experts < 1 || c->num_experts > jk_router_max_experts) return false;
  if (c->top_k < 1 || c->top_k > c->num_experts || c->kv_heads < 1) return false;
  if (c->head_dim < 2 || c->head_dim > 256 || c->head_dim % 2 != 0 || c->ffn < 1) return false;
  if (!finite_nonneg(c->eps) || !finite_nonneg(c->aux_switch_coef) || !finite_nonneg(c->aux_z_coef)) return false;
  if (c->rope_table == nullptr || c->rope_max_positions < 1) return false;
  if (c->path != JK_LAYER_TUNED && c->path != JK_LAYER_SIMPLE && c->path != JK_LAYER_WGMMA) return false;
  return true;
}

bool valid_weights(const jk_layer_weights_t* w) {
  return w != nullptr && w->input_norm && w->moa_router && w->moa_q && w->kv_proj && w->moa_o && w->moa_bias &&
         w->post_norm && w->moe_router && w->moe_in && w->moe_out && w->moe_bias;
}

bool valid_grads(const jk_layer_grads_t* g) {
  return g != nullptr && g->input_norm && g->moa_router && g->moa_q && g->kv_proj && g->moa_o && g->moa_bias &&
         g->post_norm && g->moe_router && g->moe_in && g->moe_out && g->moe_bias;
}

// Sizes the families can index: N k in int32, and every tensor's element count well inside int64.
bool valid_tokens(const jk_layer_config_t& c, std::int64_t B, std::int64_t T) {
  if (B < 0 || T < 0) return false;
  if (B == 0 || T == 0) return true;
  if (T > c.rope_max_positions) return false;
  if (B > INT32_MAX / T) return false;
  const std::int64_t NK = B * T * c.top_k;
  return NK <= INT32_MAX;
}

jk_grouped_gemm_algo_t gemm_algo(const jk_layer_config_t& c) {
  return c.path == JK_LAYER_SIMPLE ? JK_GROUPED_GEMM_SIMPLE
         : c.path == JK_LAYER_WGMMA ? JK_GROUPED_GEMM_WGMMA
                                    : JK_GROUPED_GEMM_AUTO;
}
jk_attention_path_t attention_path(const jk_layer_config_t& c) {
  return c.path == JK_LAYER_SIMPLE ? JK_ATTENTION_SIMPLE : c.path == JK_LAYER_WGMMA ? JK_ATTENTION_WGMMA : JK_ATTENTION_AUTO;
}
// The router's forward and backward: JK_LAYER_SIMPLE takes its simple path (bit-identical results).
using RouterFwd = decltype(&jk_router_fwd_bf16);
using RouterBwd = decltype(&jk_router_bwd_bf16);
RouterFwd router_fwd(const jk_layer_config_t& c) {
  return c.path == JK_LAYER_SIMPLE ? jk_router_fwd_bf16_simple : jk_router_fwd_bf16;
}
RouterBwd router_bwd(const jk_layer_config_t& c) {
  return c.path == JK_LAYER_SIMPLE ? jk_router_bwd_bf16_simple : jk_router_bwd_bf16;
}

struct Stages {
  jk_layer_profile_t* profile;
  cudaStream_t stream;
  cudaError_t mark(const char* name) {
    if (profile == nullptr || profile->count < 0 || profile->count >= JK_LAYER_MAX_STAGES) return cudaSuccess;
    profile->names[profile->count] = name;
    return cudaEventRecord(profile->events[profile->count++], stream);
  }
};

#define JK_LAUNCH(kernel, n, ...)                                     \
  do {                                                                \
    kernel<<<glue_blocks(n), kGlueThreads, 0, stream>>>(__VA_ARGS__); \
    JK_RETURN_IF_ERROR(cudaGetLastError());                           \
  } while (0)

// ---- shared pieces of the forward (training and decode) -------------------------------------------

// Router forward + the (token, slot) row map.
cudaError_t route(const jk_layer_config_t& c, const std::uint16_t* u, const std::uint16_t* w_router, std::int64_t N,
                  const Dims& s, const Routing& r, void* ws, std::size_t ws_bytes, cudaStream_t stream) {
  jk_router_outputs_t out{};
  out.logits = r.logits;
  out.expert_ids = r.ids;
  out.gates_f32 = r.gates_f32;
  out.gates_bf16 = r.gates_bf16;
  out.counts = r.counts;
  out.offsets = r.offsets;
  out.sorted_token = r.sorted_token;
  out.sorted_slot = r.sorted_slot;
  out.position = r.position;
  out.host_offsets = nullptr;
  JK_RETURN_IF_ERROR(router_fwd(c)(u, w_router, N, s.D, static_cast<int>(s.E), static_cast<int>(s.k), &out, ws,
                                   ws_bytes, stream));
  JK_LAUNCH(token_slot_rows, N * s.k, r.sorted_token, r.sorted_slot, N * s.k, static_cast<int>(s.k), r.flat);
  return cudaSuccess;
}

// MoE half of the block for N tokens: x_out = bf16(x_mid + combine(fc2(swiglu(fc1(gather(u2))))) + b).
// z receives bf16 fc1 output [N k, 2F] (kept for the backward in training), h, y_mlp, comb: outputs/scratch.
cudaError_t moe_forward(const jk_layer_weights_t& w, const jk_layer_config_t& c, const Dims& s, std::int64_t N,
                        const std::uint16_t* u2, const Routing& r, std::uint16_t* gathered, std::uint16_t* z,
                        std::uint16_t* h, std::uint16_t* y_mlp, std::uint16_t* comb, const std::uint16_t* x_mid,
                        std::uint16_t* x_out, Stages& st, cudaStream_t stream) {
  const std::int64_t NK = N * s.k;
  const jk_grouped_gemm_algo_t algo = gemm_algo(c);
  JK_RETURN_IF_ERROR(jk_router_gather_bf16(u2, r.sorted_token, NK, s.D, gathered, stream));
  JK_RETURN_IF_ERROR(st.mark("moe.gather"));
  JK_RETURN_IF_ERROR(
      jk_grouped_gemm_fc1_swiglu_bf16(gathered, w.moe_in, h, z, r.offsets, nullptr, NK, s.E, s.F, s.D, algo, stream));
  JK_RETURN_IF_ERROR(st.mark("moe.fc1_swiglu"));
  JK_RETURN_IF_ERROR(
      jk_grouped_gemm_fwd_bf16(h, w.moe_out, y_mlp, r.offsets, nullptr, NK, s.E, s.D, s.F, algo, stream));
  JK_RETURN_IF_ERROR(st.mark("moe.fc2"));
  JK_RETURN_IF_ERROR(
      jk_router_combine_bf16(y_mlp, r.gates_bf16, r.position, w.moe_bias, N, static_cast<int>(s.k), s.D, comb, stream));
  JK_LAUNCH(add_bf16, N * s.D, x_mid, comb, x_out, N * s.D);
  JK_RETURN_IF_ERROR(st.mark("moe.combine_residual"));
  return cudaSuccess;
}

// MoA output half: o_sorted = attn rows by (token, slot); y_attn = o_sorted W_o[e]^T; x_mid = x + combine.
cudaError_t moa_output(const jk_layer_weights_t& w, const jk_layer_config_t& c, const Dims& s, std::int64_t N,
                       const std::uint16_t* attn, const Routing& r, std::uint16_t* o_sorted, std::uint16_t* y_attn,
                       std::uint16_t* comb, const std::uint16_t* x, std::uint16_t* x_mid, Stages& st,
                       cudaStream_t stream) {
  const std::int64_t NK = N * s.k;
  // attn [N, Hq d] viewed as [N k, A]: row t k + j holds the heads of slot j.
  JK_RETURN_IF_ERROR(jk_router_gather_bf16(attn, r.flat, NK, s.A, o_sorted, stream));
  JK_RETURN_IF_ERROR(
      jk_grouped_gemm_fwd_bf16(o_sorted, w.moa_o, y_attn, r.offsets, nullptr, NK, s.E, s.D, s.A, gemm_algo(c), stream));
  JK_RETURN_IF_ERROR(st.mark("moa.o_proj"));
  JK_RETURN_IF_ERROR(jk_router_combine_bf16(y_attn, r.gates_bf16, r.position, w.moa_bias, N, static_cast<int>(s.k), s.D,
                                            comb, stream));
  JK_LAUNCH(add_bf16, N * s.D, x, comb, x_mid, N * s.D);
  JK_RETURN_IF_ERROR(st.mark("moa.combine_residual"));
  return cudaSuccess;
}

// Queries and K/V of N tokens: q [N, Hq d] (token rows), k, v [N, A]; before RoPE.
cudaError_t moa_qkv(const jk_layer_weights_t& w, const jk_layer_config_t& c, const Dims& s, std::int64_t N,
                    const std::uint16_t* u1, const Routing& r, const std::int32_t* kv_offsets, std::uint16_t* gathered,
                    std::uint16_t* q_sorted, std::uint16_t* q, std::uint16_t* k, std::uint16_t* v, Stages& st,
                    cudaStream_t stream) {
  const std::int64_t NK = N * s.k;
  const jk_grouped_gemm_algo_t algo = gemm_algo(c);
  JK_RETURN_IF_ERROR(jk_router_gather_bf16(u1, r.sorted_token, NK, s.D, gathered, stream));
  JK_RETURN_IF_ERROR(
      jk_grouped_gemm_fwd_bf16(gathered, w.moa_q, q_sorted, r.offsets, nullptr, NK, s.E, s.A, s.D, algo, stream));
  // q viewed as [N k, A]: row t k + j = q_sorted[position[t, j]] (query heads j H_kv .. (j+1) H_kv - 1).
  JK_RETURN_IF_ERROR(jk_router_gather_bf16(q_sorted, r.position, NK, s.A, q, stream));
  JK_RETURN_IF_ERROR(st.mark("moa.q_proj"));
  JK_RETURN_IF_ERROR(jk_grouped_gemm_fwd_bf16(u1, w.kv_proj, k, kv_offsets, nullptr, N, 1, s.A, s.D, algo, stream));
  JK_RETURN_IF_ERROR(
      jk_grouped_gemm_fwd_bf16(u1, w.kv_proj + s.A * s.D, v, kv_offsets, nullptr, N, 1, s.A, s.D, algo, stream));
  JK_RETURN_IF_ERROR(st.mark("moa.kv_proj"));
  return cudaSuccess;
}

}  // namespace
}  // namespace jk::detail

using namespace jk::detail;

double jk_layer_flops_per_token(const jk_layer_config_t* cfg, int64_t seq) {
  if (cfg == nullptr) return 0.0;
  const double D = double(cfg->hidden), k = double(cfg->top_k), A = double(cfg->kv_heads * cfg->head_dim);
  const double F = double(cfg->ffn), E = double(cfg->num_experts);
  const double params = 2 * E * D        // two routers
                        + k * A * D      // active W_q
                        + 2 * A * D      // shared K/V
                        + k * D * A      // active W_o
                        + k * 2 * F * D  // active fc1
                        + k * D * F;     // active fc2
  const double Hq = k * double(cfg->kv_heads);
  const double attention = 2.0 * 2.0 * (double(seq) / 2.0) * Hq * double(cfg->head_dim);  // QK^T and PV, causal
  return 2.0 * params + attention;
}

cudaError_t jk_layer_train_bytes(const jk_layer_config_t* cfg, int64_t batch, int64_t seq, size_t* saved_bytes,
                                 size_t* scratch_bytes) {
  if (!valid_config(cfg) || !valid_tokens(*cfg, batch, seq) || saved_bytes == nullptr || scratch_bytes == nullptr)
    return cudaErrorInvalidValue;
  const Dims s = dims_of(*cfg, batch, seq);
  Carver a{nullptr};
  carve_saved(a, s);
  Carver b{nullptr};
  carve_scratch(b, s);
  *saved_bytes = a.used;
  *scratch_bytes = b.used;
  return cudaSuccess;
}

cudaError_t jk_layer_saved_expert_ids(const jk_layer_config_t* cfg, int64_t batch, int64_t seq, const void* saved,
                                      const int32_t** moa_ids, const int32_t** moe_ids) {
  if (!valid_config(cfg) || !valid_tokens(*cfg, batch, seq) || saved == nullptr || moa_ids == nullptr ||
      moe_ids == nullptr)
    return cudaErrorInvalidValue;
  Carver c{static_cast<char*>(const_cast<void*>(saved))};
  const Saved sv = carve_saved(c, dims_of(*cfg, batch, seq));
  *moa_ids = sv.moa.ids;
  *moe_ids = sv.moe.ids;
  return cudaSuccess;
}

cudaError_t jk_layer_saved_kv(const jk_layer_config_t* cfg, int64_t batch, int64_t seq, const void* saved,
                              const uint16_t** k, const uint16_t** v) {
  if (!valid_config(cfg) || !valid_tokens(*cfg, batch, seq) || saved == nullptr || k == nullptr || v == nullptr)
    return cudaErrorInvalidValue;
  Carver c{static_cast<char*>(const_cast<void*>(saved))};
  const Saved sv = carve_saved(c, dims_of(*cfg, batch, seq));
  *k = sv.k;
  *v = sv.v;
  return cudaSuccess;
}

cudaError_t jk_layer_fwd(const jk_layer_weights_t* w, const jk_layer_config_t* cfg, const uint16_t* x, int64_t batch,
                         int64_t seq, uint16_t* out, float* losses, void* saved, size_t saved_bytes, void* scratch,
                         size_t scratch_bytes, jk_layer_profile_t* profile, cudaStream_t stream) {
  if (!valid_config(cfg) || !valid_weights(w) || !valid_tokens(*cfg, batch, seq)) return cudaErrorInvalidValue;
  if (batch == 0 || seq == 0) return cudaSuccess;
  size_t need_saved = 0, need_scratch = 0;
  JK_RETURN_IF_ERROR(jk_layer_train_bytes(cfg, batch, seq, &need_saved, &need_scratch));
  if (x == nullptr || out == nullptr || saved == nullptr || scratch == nullptr) return cudaErrorInvalidValue;
  if (saved_bytes < need_saved || scratch_bytes < need_scratch) return cudaErrorInvalidValue;
  if (!is_aligned(saved, 256) || !is_aligned(scratch, 256)) return cudaErrorInvalidValue;

  const jk_layer_config_t& c = *cfg;
  const Dims s = dims_of(c, batch, seq);
  Carver ca{static_cast<char*>(saved)};
  const Saved sv = carve_saved(ca, s);
  Carver cb{static_cast<char*>(scratch)};
  const Scratch sc = carve_scratch(cb, s);
  Stages st{profile, stream};
  const std::int64_t N = s.N;

  JK_LAUNCH(set_single_expert_offsets, 1, sv.kv_offsets, static_cast<std::int32_t>(N));
  JK_LAUNCH(sequence_positions, N, sv.positions, N, s.T);

  // ---- mixture of attention heads ----
  JK_RETURN_IF_ERROR(jk_rmsnorm_fwd_bf16(x, w->input_norm, sv.u1, sv.rstd1, N, s.D, c.eps, stream));
  JK_RETURN_IF_ERROR(st.mark("moa.rmsnorm"));
  JK_RETURN_IF_ERROR(route(c, sv.u1, w->moa_router, N, s, sv.moa, sc.ws, sc.ws_bytes, stream));
  JK_RETURN_IF_ERROR(st.mark("moa.router"));
  JK_RETURN_IF_ERROR(
      moa_qkv(*w, c, s, N, sv.u1, sv.moa, sv.kv_offsets, sv.g1, sc.rows_mid, sv.q, sv.k, sv.v, st, stream));
  JK_RETURN_IF_ERROR(jk_fused_rope_fwd_bf16(sv.q, sv.k, sv.positions, c.rope_table, c.rope_max_positions, N, s.Hq,
                                            s.Hkv, s.d, stream));
  JK_RETURN_IF_ERROR(st.mark("moa.rope"));
  const jk_attention_shape_t ashape{s.B, s.T, s.Hq, s.Hkv, s.d};
  JK_RETURN_IF_ERROR(
      jk_attention_fwd_bf16(sv.q, sv.k, sv.v, nullptr, sv.attn, sv.lse, ashape, attention_path(c), stream));
  JK_RETURN_IF_ERROR(st.mark("moa.attention"));
  JK_RETURN_IF_ERROR(
      moa_output(*w, c, s, N, sv.attn, sv.moa, sc.rows_in, sv.y_attn, sc.tok_a, x, sv.x_mid, st, stream));

  // ---- mixture of experts ----
  JK_RETURN_IF_ERROR(jk_rmsnorm_fwd_bf16(sv.x_mid, w->post_norm, sv.u2, sv.rstd2, N, s.D, c.eps, stream));
  JK_RETURN_IF_ERROR(st.mark("moe.rmsnorm"));
  JK_RETURN_IF_ERROR(route(c, sv.u2, w->moe_router, N, s, sv.moe, sc.ws, sc.ws_bytes, stream));
  JK_RETURN_IF_ERROR(st.mark("moe.router"));
  JK_RETURN_IF_ERROR(
      moe_forward(*w, c, s, N, sv.u2, sv.moe, sv.g2, sv.z, sv.h, sv.y_mlp, sc.tok_a, sv.x_mid, out, st, stream));

  if (losses != nullptr) {
    const int E = static_cast<int>(s.E), k = static_cast<int>(s.k);
    JK_RETURN_IF_ERROR(jk_router_aux_loss(sv.moa.logits, sv.moa.ids, N, E, k, 1.0f, 1.0f, losses, nullptr, sc.ws,
                                          sc.ws_bytes, stream));
    JK_RETURN_IF_ERROR(jk_router_aux_loss(sv.moe.logits, sv.moe.ids, N, E, k, 1.0f, 1.0f, losses + 2, nullptr, sc.ws,
                                          sc.ws_bytes, stream));
    JK_RETURN_IF_ERROR(st.mark("aux_losses"));
  }
  return cudaSuccess;
}

cudaError_t jk_layer_bwd(const jk_layer_weights_t* w, const jk_layer_config_t* cfg, const uint16_t* x,
                         const uint16_t* dout, int64_t batch, int64_t seq, uint16_t* dx, const jk_layer_grads_t* grads,
                         float grad_beta, const void* saved, size_t saved_bytes, void* scratch, size_t scratch_bytes,
                         jk_layer_profile_t* profile, cudaStream_t stream) {
  if (!valid_config(cfg) || !valid_weights(w) || !valid_grads(grads) || !valid_tokens(*cfg, batch, seq))
    return cudaErrorInvalidValue;
  if (grad_beta != 0.0f && grad_beta != 1.0f) return cudaErrorInvalidValue;
  if (batch == 0 || seq == 0) return cudaSuccess;
  size_t need_saved = 0, need_scratch = 0;
  JK_RETURN_IF_ERROR(jk_layer_train_bytes(cfg, batch, seq, &need_saved, &need_scratch));
  if (x == nullptr || dout == nullptr || dx == nullptr || saved == nullptr || scratch == nullptr)
    return cudaErrorInvalidValue;
  if (dx == dout || dx == x) return cudaErrorInvalidValue;
  if (saved_bytes < need_saved || scratch_bytes < need_scratch) return cudaErrorInvalidValue;
  if (!is_aligned(saved, 256) || !is_aligned(scratch, 256)) return cudaErrorInvalidValue;

  const jk_layer_config_t& c = *cfg;
  const Dims s = dims_of(c, batch, seq);
  Carver ca{static_cast<char*>(const_cast<void*>(saved))};
  const Saved sv = carve_saved(ca, s);
  Carver cb{static_cast<char*>(scratch)};
  const Scratch sc = carve_scratch(cb, s);
  Stages st{profile, stream};
  const std::int64_t N = s.N, NK = s.NK, D = s.D;
  const int E = static_cast<int>(s.E), k = static_cast<int>(s.k);
  const int acc = grad_beta == 1.0f ? 1 : 0;
  const jk_grouped_gemm_algo_t algo = gemm_algo(c);
  const bool aux = c.aux_switch_coef != 0.0f || c.aux_z_coef != 0.0f;

  // ---- MoE: out = x_mid + combine(y_mlp) + b_mlp ----
  // dy_mlp = bf16(g' dout) [N k, D], dlogits (gate softmax backward), dbias.
  JK_RETURN_IF_ERROR(jk_router_combine_bwd_bf16(dout, sv.y_mlp, sv.moe.gates_bf16, sv.moe.gates_f32, sv.moe.ids,
                                                sv.moe.position, N, E, k, D, sc.rows_d, nullptr, sc.dlogits, sc.dbias,
                                                sc.ws, sc.ws_bytes, stream));
  JK_LAUNCH(accumulate_f32, D, grads->moe_bias, sc.dbias, D, acc);
  if (aux)
    JK_RETURN_IF_ERROR(jk_router_aux_loss(sv.moe.logits, sv.moe.ids, N, E, k, c.aux_switch_coef, c.aux_z_coef,
                                          sc.losses, sc.dlogits, sc.ws, sc.ws_bytes, stream));
  JK_RETURN_IF_ERROR(st.mark("moe.combine_bwd"));
  // dW_out (h kept by the forward), dh.
  JK_RETURN_IF_ERROR(jk_grouped_gemm_bwd_weight_f32(sc.rows_d, sv.h, grads->moe_out, grad_beta, sv.moe.offsets, nullptr,
                                                    NK, E, D, s.F, algo, stream));
  JK_RETURN_IF_ERROR(jk_grouped_gemm_bwd_data_bf16(sc.rows_d, w->moe_out, sc.rows_mid, sv.moe.offsets, nullptr, NK, E,
                                                   D, s.F, algo, stream));
  JK_RETURN_IF_ERROR(st.mark("moe.fc2_bwd"));
  JK_RETURN_IF_ERROR(jk_swiglu_bwd_bf16(sv.z, sc.rows_mid, sc.rows_wide, NK, s.F, stream));
  JK_RETURN_IF_ERROR(st.mark("moe.swiglu_bwd"));
  JK_RETURN_IF_ERROR(jk_grouped_gemm_bwd_weight_f32(sc.rows_wide, sv.g2, grads->moe_in, grad_beta, sv.moe.offsets,
                                                    nullptr, NK, E, 2 * s.F, D, algo, stream));
  JK_RETURN_IF_ERROR(jk_grouped_gemm_bwd_data_bf16(sc.rows_wide, w->moe_in, sc.rows_d2, sv.moe.offsets, nullptr, NK, E,
                                                   2 * s.F, D, algo, stream));
  JK_RETURN_IF_ERROR(st.mark("moe.fc1_bwd"));
  // du2 = sum over slots (fp32) + router part, rounded once to bf16.
  JK_RETURN_IF_ERROR(jk_router_gather_bwd_bf16_f32(sc.rows_d2, sv.moe.position, N, k, D, sc.du, 0, stream));
  JK_RETURN_IF_ERROR(router_bwd(c)(sv.u2, w->moe_router, sc.dlogits, N, D, E, grads->moe_router, acc, sc.du, nullptr,
                                   sc.ws, sc.ws_bytes, stream));
  JK_RETURN_IF_ERROR(jk_f32_to_bf16(sc.du, sc.du_bf16, N * D, stream));
  JK_RETURN_IF_ERROR(jk_fused_rmsnorm_bwd_bf16(sv.x_mid, w->post_norm, sv.rstd2, sc.du_bf16, sc.tok_b, grads->post_norm,
                                               grad_beta, static_cast<float*>(sc.ws), N, D, stream));
  JK_LAUNCH(add_bf16, N * D, dout, sc.tok_b, sc.dxmid, N * D);  // residual: d x_mid = dout + norm path
  JK_RETURN_IF_ERROR(st.mark("moe.router_norm_bwd"));

  // ---- MoA: x_mid = x + combine(y_attn) + b_attn ----
  JK_RETURN_IF_ERROR(jk_router_combine_bwd_bf16(sc.dxmid, sv.y_attn, sv.moa.gates_bf16, sv.moa.gates_f32, sv.moa.ids,
                                                sv.moa.position, N, E, k, D, sc.rows_d, nullptr, sc.dlogits, sc.dbias,
                                                sc.ws, sc.ws_bytes, stream));
  JK_LAUNCH(accumulate_f32, D, grads->moa_bias, sc.dbias, D, acc);
  if (aux)
    JK_RETURN_IF_ERROR(jk_router_aux_loss(sv.moa.logits, sv.moa.ids, N, E, k, c.aux_switch_coef, c.aux_z_coef,
                                          sc.losses, sc.dlogits, sc.ws, sc.ws_bytes, stream));
  JK_RETURN_IF_ERROR(st.mark("moa.combine_bwd"));
  // W_o: o_sorted recomputed from attn; dW_o, d o_sorted.
  JK_RETURN_IF_ERROR(jk_router_gather_bf16(sv.attn, sv.moa.flat, NK, s.A, sc.rows_in, stream));
  JK_RETURN_IF_ERROR(jk_grouped_gemm_bwd_weight_f32(sc.rows_d, sc.rows_in, grads->moa_o, grad_beta, sv.moa.offsets,
                                                    nullptr, NK, E, D, s.A, algo, stream));
  JK_RETURN_IF_ERROR(jk_grouped_gemm_bwd_data_bf16(sc.rows_d, w->moa_o, sc.rows_mid, sv.moa.offsets, nullptr, NK, E, D,
                                                   s.A, algo, stream));
  // d attn [N, Hq d] viewed [N k, A]: row t k + j = d o_sorted[position[t, j]] (a permutation).
  JK_RETURN_IF_ERROR(jk_router_gather_bf16(sc.rows_mid, sv.moa.position, NK, s.A, sc.tok_a, stream));
  JK_RETURN_IF_ERROR(st.mark("moa.o_proj_bwd"));
  const jk_attention_shape_t ashape{s.B, s.T, s.Hq, s.Hkv, s.d};
  JK_RETURN_IF_ERROR(jk_attention_bwd_bf16(sv.q, sv.k, sv.v, sv.attn, sv.lse, sc.tok_a, nullptr, sc.delta, sc.dq, sc.dk,
                                           sc.dv, ashape, attention_path(c), stream));
  JK_RETURN_IF_ERROR(st.mark("moa.attention_bwd"));
  JK_RETURN_IF_ERROR(jk_fused_rope_bwd_bf16(sc.dq, sc.dk, sv.positions, c.rope_table, c.rope_max_positions, N, s.Hq,
                                            s.Hkv, s.d, stream));
  JK_RETURN_IF_ERROR(st.mark("moa.rope_bwd"));
  // W_q: dq_sorted = dq rows by (token, slot); dW_q, d gathered u1.
  JK_RETURN_IF_ERROR(jk_router_gather_bf16(sc.dq, sv.moa.flat, NK, s.A, sc.rows_mid, stream));
  JK_RETURN_IF_ERROR(jk_grouped_gemm_bwd_weight_f32(sc.rows_mid, sv.g1, grads->moa_q, grad_beta, sv.moa.offsets,
                                                    nullptr, NK, E, s.A, D, algo, stream));
  JK_RETURN_IF_ERROR(jk_grouped_gemm_bwd_data_bf16(sc.rows_mid, w->moa_q, sc.rows_d2, sv.moa.offsets, nullptr, NK, E,
                                                   s.A, D, algo, stream));
  JK_RETURN_IF_ERROR(st.mark("moa.q_proj_bwd"));
  // Shared K/V projection as one [2A, D] linear: d kv = [dk | dv].
  JK_LAUNCH(pack_kv, N * 2 * s.A, sc.dk, sc.dv, sc.dkv, N, s.A);
  JK_RETURN_IF_ERROR(jk_grouped_gemm_bwd_weight_f32(sc.dkv, sv.u1, grads->kv_proj, grad_beta, sv.kv_offsets, nullptr, N,
                                                    1, 2 * s.A, D, algo, stream));
  JK_RETURN_IF_ERROR(jk_grouped_gemm_bwd_data_bf16(sc.dkv, w->kv_proj, sc.tok_b, sv.kv_offsets, nullptr, N, 1, 2 * s.A,
                                                   D, algo, stream));
  JK_RETURN_IF_ERROR(st.mark("moa.kv_proj_bwd"));
  // du1 = gathered-rows part + K/V part + router part (fp32), rounded once.
  JK_RETURN_IF_ERROR(jk_router_gather_bwd_bf16_f32(sc.rows_d2, sv.moa.position, N, k, D, sc.du, 0, stream));
  JK_LAUNCH(accumulate_bf16_into_f32, N * D, sc.du, sc.tok_b, N * D);
  JK_RETURN_IF_ERROR(router_bwd(c)(sv.u1, w->moa_router, sc.dlogits, N, D, E, grads->moa_router, acc, sc.du, nullptr,
                                   sc.ws, sc.ws_bytes, stream));
  JK_RETURN_IF_ERROR(jk_f32_to_bf16(sc.du, sc.du_bf16, N * D, stream));
  JK_RETURN_IF_ERROR(jk_fused_rmsnorm_bwd_bf16(x, w->input_norm, sv.rstd1, sc.du_bf16, sc.tok_b, grads->input_norm,
                                               grad_beta, static_cast<float*>(sc.ws), N, D, stream));
  JK_LAUNCH(add_bf16, N * D, sc.dxmid, sc.tok_b, dx, N * D);
  JK_RETURN_IF_ERROR(st.mark("moa.router_norm_bwd"));
  return cudaSuccess;
}

// ---- decode ---------------------------------------------------------------------------------------

namespace jk::detail {
namespace {

struct DecodeScratch {
  void* ws;
  std::size_t ws_bytes;
  std::uint16_t* u1;  // [B, D]
  Routing moa;
  std::uint16_t* rows_in;    // [B k, max(D, A)]
  std::uint16_t* rows_mid;   // [B k, max(A, F)]
  std::uint16_t* q;          // [B, Hq d]
  std::uint16_t* k_new;      // [B, A]
  std::uint16_t* v_new;      // [B, A]
  std::int32_t* positions;   // [B]
  std::int32_t* len_after;   // [B]
  std::int32_t* kv_offsets;  // [2]
  std::uint16_t* attn;       // [B, Hq d]
  std::uint16_t* y;          // [B k, D]
  std::uint16_t* comb;       // [B, D]
  std::uint16_t* x_mid;      // [B, D]
  std::uint16_t* u2;         // [B, D]
  Routing moe;
  std::uint16_t* z;  // [B k, 2F]
};

DecodeScratch carve_decode(Carver& c, const Dims& s, std::int64_t max_seq) {
  DecodeScratch v;
  const int E = static_cast<int>(s.E), k = static_cast<int>(s.k);
  v.ws_bytes =
      std::max(jk_router_fwd_workspace_bytes(s.N, E, k), jk_attention_decode_workspace_bytes(s.N, s.Hq, max_seq, s.d));
  v.ws = c.take<char>(static_cast<std::int64_t>(v.ws_bytes));
  v.u1 = c.take<std::uint16_t>(s.N * s.D);
  v.moa = carve_routing(c, s.N, s.E, s.k);
  v.rows_in = c.take<std::uint16_t>(s.NK * std::max(s.D, s.A));
  v.rows_mid = c.take<std::uint16_t>(s.NK * std::max(s.A, s.F));
  v.q = c.take<std::uint16_t>(s.N * s.Hq * s.d);
  v.k_new = c.take<std::uint16_t>(s.N * s.A);
  v.v_new = c.take<std::uint16_t>(s.N * s.A);
  v.positions = c.take<std::int32_t>(s.N);
  v.len_after = c.take<std::int32_t>(s.N);
  v.kv_offsets = c.take<std::int32_t>(2);
  v.attn = c.take<std::uint16_t>(s.N * s.Hq * s.d);
  v.y = c.take<std::uint16_t>(s.NK * s.D);
  v.comb = c.take<std::uint16_t>(s.N * s.D);
  v.x_mid = c.take<std::uint16_t>(s.N * s.D);
  v.u2 = c.take<std::uint16_t>(s.N * s.D);
  v.moe = carve_routing(c, s.N, s.E, s.k);
  v.z = c.take<std::uint16_t>(s.NK * 2 * s.F);
  return v;
}

}  // namespace
}  // namespace jk::detail

size_t jk_layer_decode_bytes(const jk_layer_config_t* cfg, int64_t batch, int64_t max_seq) {
  if (!valid_config(cfg) || batch < 0 || max_seq < 0 || batch > INT32_MAX / 64) return 0;
  const Dims s = dims_of(*cfg, batch, 1);
  Carver c{nullptr};
  carve_decode(c, s, max_seq);
  return c.used;
}

cudaError_t jk_layer_decode(const jk_layer_weights_t* w, const jk_layer_config_t* cfg, const uint16_t* x, int64_t batch,
                            uint16_t* k_cache, uint16_t* v_cache, const int32_t* cache_len, int64_t max_seq,
                            uint16_t* out, void* scratch, size_t scratch_bytes, jk_layer_profile_t* profile,
                            cudaStream_t stream) {
  if (!valid_config(cfg) || !valid_weights(w) || batch < 0 || max_seq < 0 || batch > INT32_MAX / 64)
    return cudaErrorInvalidValue;
  if (batch == 0) return cudaSuccess;
  if (max_seq == 0 || x == nullptr || k_cache == nullptr || v_cache == nullptr || cache_len == nullptr ||
      out == nullptr || scratch == nullptr || !is_aligned(scratch, 256))
    return cudaErrorInvalidValue;
  if (scratch_bytes < jk_layer_decode_bytes(cfg, batch, max_seq)) return cudaErrorInvalidValue;

  const jk_layer_config_t& c = *cfg;
  const Dims s = dims_of(c, batch, 1);
  Carver cv{static_cast<char*>(scratch)};
  const DecodeScratch sc = carve_decode(cv, s, max_seq);
  Stages st{profile, stream};
  const std::int64_t B = batch;

  JK_LAUNCH(set_single_expert_offsets, 1, sc.kv_offsets, static_cast<std::int32_t>(B));
  JK_LAUNCH(decode_positions, B, cache_len, sc.positions, sc.len_after, B);
  JK_RETURN_IF_ERROR(jk_rmsnorm_fwd_bf16(x, w->input_norm, sc.u1, nullptr, B, s.D, c.eps, stream));
  JK_RETURN_IF_ERROR(route(c, sc.u1, w->moa_router, B, s, sc.moa, sc.ws, sc.ws_bytes, stream));
  JK_RETURN_IF_ERROR(st.mark("moa.norm_router"));
  JK_RETURN_IF_ERROR(moa_qkv(*w, c, s, B, sc.u1, sc.moa, sc.kv_offsets, sc.rows_in, sc.rows_mid, sc.q, sc.k_new,
                             sc.v_new, st, stream));
  JK_RETURN_IF_ERROR(jk_fused_rope_fwd_bf16(sc.q, sc.k_new, sc.positions, c.rope_table, c.rope_max_positions, B, s.Hq,
                                            s.Hkv, s.d, stream));
  JK_LAUNCH(append_kv, B * s.A, sc.k_new, sc.v_new, sc.positions, k_cache, v_cache, B, max_seq, s.A);
  JK_RETURN_IF_ERROR(st.mark("moa.rope_append"));
  JK_RETURN_IF_ERROR(jk_attention_decode_bf16(sc.q, k_cache, v_cache, sc.len_after, sc.attn, nullptr, B, max_seq, s.Hq,
                                              s.Hkv, s.d, sc.ws, sc.ws_bytes, stream));
  JK_RETURN_IF_ERROR(st.mark("moa.attention_decode"));
  JK_RETURN_IF_ERROR(moa_output(*w, c, s, B, sc.attn, sc.moa, sc.rows_in, sc.y, sc.comb, x, sc.x_mid, st, stream));
  JK_RETURN_IF_ERROR(jk_rmsnorm_fwd_bf16(sc.x_mid, w->post_norm, sc.u2, nullptr, B, s.D, c.eps, stream));
  JK_RETURN_IF_ERROR(route(c, sc.u2, w->moe_router, B, s, sc.moe, sc.ws, sc.ws_bytes, stream));
  JK_RETURN_IF_ERROR(st.mark("moe.norm_router"));
  // h lives in rows_mid; y_mlp reuses y; comb reused.
  JK_RETURN_IF_ERROR(
      moe_forward(*w, c, s, B, sc.u2, sc.moe, sc.rows_in, sc.z, sc.rows_mid, sc.y, sc.comb, sc.x_mid, out, st, stream));
  return cudaSuccess;
}
