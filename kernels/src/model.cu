// A pipeline stage of the JetMoE causal LM on the device: host orchestration of the embedding, layer
// and fused families (include/jetmoe/model.h). Mirrors src/train/network.cpp (forward, loss, backward)
// step for step, in bf16 with HF's roundings.
#include "common.cuh"
#include "jetmoe/kernels.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace jk::detail {
namespace {

// The one-expert grouped GEMMs of the LM head: offsets {0, rows, 0, tail}, i.e. {0, rows} for a
// chunk of `rows` rows and {0, tail} for the last, shorter chunk.
__global__ void model_single_expert_offsets(std::int32_t* offsets, std::int32_t rows, std::int32_t tail) {
  if (threadIdx.x == 0 && blockIdx.x == 0) {
    offsets[0] = 0;
    offsets[1] = rows;
    offsets[2] = 0;
    offsets[3] = tail;
  }
}

// out[b] = row rows[b] of x [., D] (bf16): each prompt's last position, for the head of a ragged prefill.
__global__ void model_gather_rows(const std::uint16_t* x, const std::int32_t* rows, std::int64_t D,
                                  std::uint16_t* out) {
  const std::int64_t b = blockIdx.x;
  const std::uint16_t* src = x + static_cast<std::int64_t>(rows[b]) * D;
  for (std::int64_t i = threadIdx.x; i < D; i += blockDim.x) out[b * D + i] = src[i];
}

struct StageDims {
  std::int64_t B, T, N, D, V, L;
  std::int64_t C;  // rows of one LM-head chunk (jk_model_config_t::head_chunk): N when unchunked
  bool chunked() const { return C < N; }
};

// Rows of one chunk of the LM head for N rows: head_chunk when 0 < head_chunk < N, else all N.
std::int64_t head_chunk_rows(const jk_model_config_t& c, std::int64_t N) {
  return c.head_chunk > 0 && c.head_chunk < N ? c.head_chunk : N;
}

StageDims stage_dims(const jk_model_config_t& c, std::int64_t B, std::int64_t T) {
  return {B, T, B * T, c.layer.hidden, c.vocab, c.num_layers, head_chunk_rows(c, B * T)};
}

// What the forward keeps for the backward.
struct StageSaved {
  std::vector<std::uint16_t*> x;      // [L + 1] block inputs x_0..x_{L-1} and the stage output x_L, [N, D]
  std::vector<void*> layer;           // [L] each block's jk_layer saved buffer (none with recompute)
  std::size_t layer_bytes = 0;
  std::int32_t* ids = nullptr;        // [N] (embedding)
  std::int32_t* labels = nullptr;     // [N] (head)
  std::uint16_t* h = nullptr;         // [N, D] final norm output (head)
  float* rstd = nullptr;              // [N] (head)
  std::uint16_t* logits = nullptr;    // [N, V] (head, unchunked); the backward turns it into dlogits
  float* lse = nullptr;               // [N] (head)
  std::int32_t* head_offsets = nullptr;  // [4] = {0, C, 0, last chunk's rows}
};

struct StageScratch {
  void* layer = nullptr;  // shared by every block
  std::size_t layer_bytes = 0;
  void* layer_saved = nullptr;  // recompute: the one block's jk_layer saved buffer, shared by every block
  std::uint16_t* dx[2] = {nullptr, nullptr};  // [N, D] ping-pong gradient of the block boundaries
  float* norm_ws = nullptr;                    // final norm backward workspace
  void* emb_ws = nullptr;                      // embedding backward workspace
  std::size_t emb_ws_bytes = 0;
  std::uint16_t* logits = nullptr;             // [C, V] one chunk's logits (head, chunked)
};

cudaError_t layer_bytes(const jk_model_config_t& c, std::int64_t B, std::int64_t T, std::size_t* saved,
                        std::size_t* scratch) {
  *saved = *scratch = 0;
  if (c.num_layers == 0) return cudaSuccess;
  return jk_layer_train_bytes(&c.layer, B, T, saved, scratch);
}

StageSaved carve_stage_saved(Carver& cv, const jk_model_config_t& c, const StageDims& s, std::size_t layer_saved) {
  StageSaved v;
  v.layer_bytes = layer_saved;
  for (std::int64_t l = 0; l <= s.L; ++l) v.x.push_back(cv.take<std::uint16_t>(s.N * s.D));
  if (!c.recompute)
    for (std::int64_t l = 0; l < s.L; ++l) v.layer.push_back(cv.take<char>(static_cast<std::int64_t>(layer_saved)));
  if (c.has_embedding) v.ids = cv.take<std::int32_t>(s.N);
  if (c.has_head) {
    v.labels = cv.take<std::int32_t>(s.N);
    v.h = cv.take<std::uint16_t>(s.N * s.D);
    v.rstd = cv.take<float>(s.N);
    if (!s.chunked()) v.logits = cv.take<std::uint16_t>(s.N * s.V);
    v.lse = cv.take<float>(s.N);
    v.head_offsets = cv.take<std::int32_t>(4);
  }
  return v;
}

StageScratch carve_stage_scratch(Carver& cv, const jk_model_config_t& c, const StageDims& s,
                                 std::size_t layer_scratch, std::size_t layer_saved) {
  StageScratch v;
  v.layer_bytes = layer_scratch;
  v.layer = cv.take<char>(static_cast<std::int64_t>(layer_scratch));
  if (c.recompute && s.L > 0) v.layer_saved = cv.take<char>(static_cast<std::int64_t>(layer_saved));
  v.dx[0] = cv.take<std::uint16_t>(s.N * s.D);
  v.dx[1] = cv.take<std::uint16_t>(s.N * s.D);
  if (c.has_head) v.norm_ws = cv.take<float>(jk_fused_rmsnorm_bwd_workspace_elems(s.N, s.D));
  if (c.has_embedding) {
    v.emb_ws_bytes = jk_embedding_bwd_workspace_bytes(s.N, s.V);
    v.emb_ws = cv.take<char>(static_cast<std::int64_t>(v.emb_ws_bytes));
  }
  if (c.has_head && s.chunked()) v.logits = cv.take<std::uint16_t>(s.C * s.V);
  return v;
}

bool valid_stage_config(const jk_model_config_t* c) {
  if (c == nullptr || c->vocab < 1 || c->num_layers < 0) return false;
  if ((c->has_embedding != 0 && c->has_embedding != 1) || (c->has_head != 0 && c->has_head != 1)) return false;
  if (c->recompute != 0 && c->recompute != 1) return false;
  if (c->head_chunk < 0) return false;
  if (c->num_layers == 0 && !c->has_embedding && !c->has_head) return false;  // an empty stage
  if (c->has_head && !(c->final_eps >= 0.0f && c->final_eps < 1.0f)) return false;
  if (c->layer.hidden < 1 || c->layer.hidden > INT32_MAX || c->vocab > INT32_MAX) return false;
  return true;
}

// The tensors a stage needs are present (jk_model_weights_t or jk_model_grads_t: the same members).
template <typename Tensors>
bool valid_stage_tensors(const Tensors* t, const jk_model_config_t& c) {
  if (t == nullptr) return false;
  if (c.has_embedding && t->embedding == nullptr) return false;
  if (c.has_head && (t->final_norm == nullptr || t->lm_head == nullptr)) return false;
  if (c.num_layers > 0 && t->layers == nullptr) return false;
  return true;
}

// Block l's jk_layer saved buffer: its own, or with recompute the one that every block shares.
void* block_saved(const jk_model_config_t& c, const StageSaved& sv, const StageScratch& sc, std::int64_t l) {
  return c.recompute ? sc.layer_saved : sv.layer[static_cast<std::size_t>(l)];
}

// Checks the configuration, the batch and the buffers common to forward and backward; on success
// carves the saved and scratch buffers.
cudaError_t prepare(const jk_model_config_t* cfg, const jk_model_batch_t* batch, void* saved, std::size_t saved_bytes,
                    void* scratch, std::size_t scratch_bytes, StageDims* dims, StageSaved* sv, StageScratch* sc) {
  std::size_t need_saved = 0, need_scratch = 0;
  JK_RETURN_IF_ERROR(jk_model_train_bytes(cfg, batch->batch, batch->seq, &need_saved, &need_scratch));
  if (saved == nullptr || scratch == nullptr || saved_bytes < need_saved || scratch_bytes < need_scratch)
    return cudaErrorInvalidValue;
  if (!is_aligned(saved, 256) || !is_aligned(scratch, 256)) return cudaErrorInvalidValue;
  if (cfg->has_embedding && batch->ids == nullptr) return cudaErrorInvalidValue;
  if (!cfg->has_embedding && batch->x_in == nullptr) return cudaErrorInvalidValue;
  if (cfg->has_head && batch->labels == nullptr) return cudaErrorInvalidValue;
  std::size_t ls = 0, lc = 0;
  JK_RETURN_IF_ERROR(layer_bytes(*cfg, batch->batch, batch->seq, &ls, &lc));
  *dims = stage_dims(*cfg, batch->batch, batch->seq);
  Carver a{static_cast<char*>(saved)};
  *sv = carve_stage_saved(a, *cfg, *dims, ls);
  Carver b{static_cast<char*>(scratch)};
  *sc = carve_stage_scratch(b, *cfg, *dims, lc, ls);
  return cudaSuccess;
}

// The decode step's scratch: the block boundaries (ping-pong), the final norm, the head's bf16 logits
// and the blocks' shared decode scratch.
struct DecodeScratch {
  std::uint16_t* x[2] = {nullptr, nullptr};  // [B, D]
  std::uint16_t* h = nullptr;                // [B, D]
  float* rstd = nullptr;                     // [B]
  std::int32_t* head_offsets = nullptr;      // [4] = {0, B, 0, B}
  std::uint16_t* logits = nullptr;           // [B, V]
  void* layer = nullptr;
  std::size_t layer_bytes = 0;
};

DecodeScratch carve_decode(Carver& cv, const jk_model_config_t& c, std::int64_t B, std::int64_t max_seq) {
  DecodeScratch v;
  const std::int64_t D = c.layer.hidden;
  v.x[0] = cv.take<std::uint16_t>(B * D);
  v.x[1] = cv.take<std::uint16_t>(B * D);
  v.h = cv.take<std::uint16_t>(B * D);
  v.rstd = cv.take<float>(B);
  v.head_offsets = cv.take<std::int32_t>(4);
  v.logits = cv.take<std::uint16_t>(B * c.vocab);
  v.layer_bytes = c.num_layers > 0 ? jk_layer_decode_bytes(&c.layer, B, max_seq) : 0;
  v.layer = cv.take<char>(static_cast<std::int64_t>(v.layer_bytes));
  return v;
}

bool valid_decode_config(const jk_model_config_t* c) {
  return valid_stage_config(c) && c->has_embedding == 1 && c->has_head == 1;
}

// The scratch of a forward that keeps nothing for a backward (prefill, eval): the block boundaries
// [N, D] (ping-pong), one block's forward buffers (reused by every block), and the head of `head`'s
// rows: the last position of each sequence (prefill, gathered into `last`) or every position (eval,
// with the cross-entropy's lse).
enum class HeadRows { Last, All };

struct ForwardScratch {
  std::uint16_t* x[2] = {nullptr, nullptr};  // [N, D]
  void* saved = nullptr;
  void* layer = nullptr;
  std::size_t saved_bytes = 0, layer_bytes = 0;
  std::uint16_t* last = nullptr;      // [B, D] the last position of each sequence (Last)
  std::int32_t* last_rows = nullptr;  // [B] which row of x that is (Last, prompts of different lengths)
  std::uint16_t* h = nullptr;     // [R, D], R = B (Last) or N (All)
  float* rstd = nullptr;          // [R]
  std::int32_t* head_offsets = nullptr;  // [4]
  std::uint16_t* logits = nullptr;  // [B, V] (Last) or one chunk's [C, V] (All; C = N unchunked)
  float* lse = nullptr;             // [R] (All)
};

cudaError_t carve_forward(Carver& cv, const jk_model_config_t& c, std::int64_t B, std::int64_t T, HeadRows head,
                          ForwardScratch* v) {
  const std::int64_t D = c.layer.hidden, N = B * T, R = head == HeadRows::Last ? B : N;
  JK_RETURN_IF_ERROR(layer_bytes(c, B, T, &v->saved_bytes, &v->layer_bytes));
  v->x[0] = cv.take<std::uint16_t>(N * D);
  v->x[1] = cv.take<std::uint16_t>(N * D);
  v->saved = cv.take<char>(static_cast<std::int64_t>(v->saved_bytes));
  v->layer = cv.take<char>(static_cast<std::int64_t>(v->layer_bytes));
  if (head == HeadRows::Last) {
    v->last = cv.take<std::uint16_t>(B * D);
    v->last_rows = cv.take<std::int32_t>(B);
  }
  v->h = cv.take<std::uint16_t>(R * D);
  v->rstd = cv.take<float>(R);
  v->head_offsets = cv.take<std::int32_t>(4);
  v->logits = cv.take<std::uint16_t>((head == HeadRows::Last ? B : head_chunk_rows(c, N)) * c.vocab);
  if (head == HeadRows::All) v->lse = cv.take<float>(R);
  return cudaSuccess;
}

// jk_model_prefill_bytes / jk_model_eval_bytes (0 for bad arguments).
std::size_t forward_bytes(const jk_model_config_t* cfg, std::int64_t batch, std::int64_t seq, HeadRows head) {
  if (!valid_decode_config(cfg) || batch < 0 || seq < 1 || (batch > 0 && seq > INT32_MAX / batch)) return 0;
  const std::int64_t rows = head == HeadRows::Last ? batch : batch * seq;
  if (rows > 0 && cfg->vocab > INT64_MAX / 2 / rows) return 0;
  Carver a{nullptr};
  ForwardScratch v;
  if (carve_forward(a, *cfg, batch, seq, head, &v) != cudaSuccess) return 0;
  return a.used;
}

// The grouped-GEMM path of the head (the layers' path choice).
jk_grouped_gemm_algo_t head_algo(const jk_model_config_t& c) {
  return c.layer.path == JK_LAYER_SIMPLE ? JK_GROUPED_GEMM_SIMPLE
         : c.layer.path == JK_LAYER_WGMMA ? JK_GROUPED_GEMM_WGMMA
                                          : JK_GROUPED_GEMM_AUTO;
}

// The final norm of `rows` >= 1 rows x: h = RMSNorm(x) (and rstd), and offsets [4] of the head's
// one-expert grouped GEMMs over chunks of `chunk` rows (head_offsets_of picks a chunk's pair).
cudaError_t head_norm(const jk_model_weights_t* w, const jk_model_config_t* cfg, const std::uint16_t* x,
                      std::int64_t rows, std::int64_t chunk, std::uint16_t* h, float* rstd, std::int32_t* offsets,
                      cudaStream_t stream) {
  JK_RETURN_IF_ERROR(jk_rmsnorm_fwd_bf16(x, w->final_norm, h, rstd, rows, cfg->layer.hidden, cfg->final_eps, stream));
  const std::int64_t tail = rows - (rows - 1) / chunk * chunk;
  model_single_expert_offsets<<<1, 32, 0, stream>>>(offsets, static_cast<std::int32_t>(chunk),
                                                    static_cast<std::int32_t>(tail));
  return cudaGetLastError();
}

// A chunk of n rows' offsets: {0, n} (n == chunk) or the last chunk's {0, tail}.
const std::int32_t* head_offsets_of(const std::int32_t* offsets, std::int64_t n, std::int64_t chunk) {
  return n == chunk ? offsets : offsets + 2;
}

// bf16 logits [n, V] = h[r0 .. r0 + n) W_head^T: the LM head of one chunk (fp32 accumulation over D in
// the same order whatever the chunk, so a row's logits do not depend on the chunking).
cudaError_t head_logits(const jk_model_weights_t* w, const jk_model_config_t* cfg, const std::uint16_t* h,
                        std::int64_t r0, std::int64_t n, std::int64_t chunk, const std::int32_t* offsets,
                        std::uint16_t* logits, cudaStream_t stream) {
  const std::int64_t D = cfg->layer.hidden;
  return jk_grouped_gemm_fwd_bf16(h + r0 * D, w->lm_head, logits, head_offsets_of(offsets, n, chunk), nullptr, n, 1,
                                  cfg->vocab, D, head_algo(*cfg), stream);
}

// f(r0, n) for the chunks [r0, r0 + n) of `chunk` rows of `rows` rows, in order; the first error returned.
template <typename F>
cudaError_t for_each_chunk(std::int64_t rows, std::int64_t chunk, F&& f) {
  for (std::int64_t r0 = 0; r0 < rows; r0 += chunk) JK_RETURN_IF_ERROR(f(r0, std::min(chunk, rows - r0)));
  return cudaSuccess;
}

// The final norm and the LM head of `rows` rows x at once: h, rstd and bf16 logits = h W_head^T.
// Decode and prefill (one row per sequence).
cudaError_t head_forward(const jk_model_weights_t* w, const jk_model_config_t* cfg, const std::uint16_t* x,
                         std::int64_t rows, std::uint16_t* h, float* rstd, std::int32_t* offsets, std::uint16_t* logits,
                         cudaStream_t stream) {
  JK_RETURN_IF_ERROR(head_norm(w, cfg, x, rows, rows, h, rstd, offsets, stream));
  return head_logits(w, cfg, h, 0, rows, rows, offsets, logits, stream);
}

bool valid_caches(const jk_model_config_t& c, uint16_t* const* k_caches, uint16_t* const* v_caches) {
  if (c.num_layers > 0 && (k_caches == nullptr || v_caches == nullptr)) return false;
  for (std::int64_t l = 0; l < c.num_layers; ++l)
    if (k_caches[l] == nullptr || v_caches[l] == nullptr) return false;
  return true;
}

// The embedding and the blocks of B sequences of T tokens through `sc` (one block's buffers at a time);
// with caches (not null), each block's K (after RoPE) and V go to rows 0..T-1 of every sequence's cache
// (rows max_seq apart). *x_out: the blocks' output x_L, one of sc.x. Prefill and eval.
cudaError_t forward_blocks(const jk_model_weights_t* w, const jk_model_config_t* cfg, const int32_t* ids,
                           std::int64_t B, std::int64_t T, uint16_t* const* k_caches, uint16_t* const* v_caches,
                           std::int64_t max_seq, int32_t* invalid_ids, const ForwardScratch& sc,
                           const std::uint16_t** x_out, cudaStream_t stream) {
  const std::int64_t N = B * T, D = cfg->layer.hidden, V = cfg->vocab;
  const std::size_t cache_row =
      static_cast<std::size_t>(cfg->layer.kv_heads * cfg->layer.head_dim) * sizeof(std::uint16_t);
  JK_RETURN_IF_ERROR(
      jk_embedding_fwd_bf16(w->embedding, ids, sc.x[0], N, V, D, invalid_ids, jk_embedding_path_auto, stream));
  int cur = 0;
  for (std::int64_t l = 0; l < cfg->num_layers; ++l, cur ^= 1) {
    JK_RETURN_IF_ERROR(jk_layer_fwd(&w->layers[l], &cfg->layer, sc.x[cur], B, T, sc.x[cur ^ 1], nullptr, sc.saved,
                                    sc.saved_bytes, sc.layer, sc.layer_bytes, nullptr, stream));
    if (k_caches == nullptr) continue;
    const std::uint16_t *k = nullptr, *v = nullptr;
    JK_RETURN_IF_ERROR(jk_layer_saved_kv(&cfg->layer, B, T, sc.saved, &k, &v));
    JK_RETURN_IF_ERROR(cudaMemcpy2DAsync(k_caches[l], max_seq * cache_row, k, T * cache_row, T * cache_row, B,
                                         cudaMemcpyDeviceToDevice, stream));
    JK_RETURN_IF_ERROR(cudaMemcpy2DAsync(v_caches[l], max_seq * cache_row, v, T * cache_row, T * cache_row, B,
                                         cudaMemcpyDeviceToDevice, stream));
  }
  *x_out = sc.x[cur];
  return cudaSuccess;
}

// jk_model_grads_t::ready[i]: recorded on `stream` when given.
cudaError_t record_ready(const jk_model_grads_t* grads, std::int64_t i, cudaStream_t stream) {
  return grads->ready != nullptr && grads->ready[i] != nullptr ? cudaEventRecord(grads->ready[i], stream) : cudaSuccess;
}

}  // namespace
}  // namespace jk::detail

using namespace jk::detail;

size_t jk_model_decode_bytes(const jk_model_config_t* cfg, int64_t batch, int64_t max_seq) {
  if (!valid_decode_config(cfg) || batch < 0 || max_seq < 1) return 0;
  if (batch > 0 && cfg->vocab > INT64_MAX / 2 / batch) return 0;
  Carver a{nullptr};
  carve_decode(a, *cfg, batch, max_seq);
  return a.used;
}

cudaError_t jk_model_decode(const jk_model_weights_t* w, const jk_model_config_t* cfg, const int32_t* ids,
                            int64_t batch, uint16_t* const* k_caches, uint16_t* const* v_caches,
                            const int32_t* cache_len, int64_t max_seq, float* logits, int32_t* invalid_ids,
                            void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  if (!valid_decode_config(cfg) || !valid_stage_tensors(w, *cfg) || batch < 0 || max_seq < 1)
    return cudaErrorInvalidValue;
  if (batch == 0) return invalid_ids ? cudaMemsetAsync(invalid_ids, 0, sizeof(std::int32_t), stream) : cudaSuccess;
  if (ids == nullptr || cache_len == nullptr || logits == nullptr || scratch == nullptr) return cudaErrorInvalidValue;
  if (!valid_caches(*cfg, k_caches, v_caches)) return cudaErrorInvalidValue;
  const std::size_t need = jk_model_decode_bytes(cfg, batch, max_seq);
  if (need == 0 || scratch_bytes < need || !is_aligned(scratch, 256)) return cudaErrorInvalidValue;
  Carver a{static_cast<char*>(scratch)};
  const DecodeScratch sc = carve_decode(a, *cfg, batch, max_seq);
  const std::int64_t B = batch, D = cfg->layer.hidden, V = cfg->vocab;

  JK_RETURN_IF_ERROR(jk_embedding_fwd_bf16(w->embedding, ids, sc.x[0], B, V, D, invalid_ids, jk_embedding_path_auto, stream));
  int cur = 0;
  for (std::int64_t l = 0; l < cfg->num_layers; ++l, cur ^= 1)
    JK_RETURN_IF_ERROR(jk_layer_decode(&w->layers[l], &cfg->layer, sc.x[cur], B, k_caches[l], v_caches[l], cache_len,
                                       max_seq, sc.x[cur ^ 1], sc.layer, sc.layer_bytes, nullptr, stream));
  JK_RETURN_IF_ERROR(head_forward(w, cfg, sc.x[cur], B, sc.h, sc.rstd, sc.head_offsets, sc.logits, stream));
  return jk_bf16_to_f32(sc.logits, logits, B * V, stream);
}

size_t jk_model_prefill_bytes(const jk_model_config_t* cfg, int64_t batch, int64_t seq) {
  return forward_bytes(cfg, batch, seq, HeadRows::Last);
}

cudaError_t jk_model_prefill(const jk_model_weights_t* w, const jk_model_config_t* cfg, const int32_t* ids,
                             int64_t batch, int64_t seq, const int64_t* lens, uint16_t* const* k_caches,
                             uint16_t* const* v_caches, int64_t max_seq, float* logits, int32_t* invalid_ids,
                             void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  if (!valid_decode_config(cfg) || !valid_stage_tensors(w, *cfg) || batch < 0 || seq < 1 || seq > max_seq)
    return cudaErrorInvalidValue;
  if (batch == 0) return invalid_ids ? cudaMemsetAsync(invalid_ids, 0, sizeof(std::int32_t), stream) : cudaSuccess;
  if (ids == nullptr || logits == nullptr || scratch == nullptr || !valid_caches(*cfg, k_caches, v_caches))
    return cudaErrorInvalidValue;
  const std::size_t need = jk_model_prefill_bytes(cfg, batch, seq);
  if (need == 0 || scratch_bytes < need || !is_aligned(scratch, 256)) return cudaErrorInvalidValue;
  const std::int64_t B = batch, T = seq, D = cfg->layer.hidden, V = cfg->vocab;
  // Each prompt's last row of x [B T, D] (B T fits int32: jk_model_prefill_bytes checked it); without
  // lens every prompt fills its row and one strided copy gathers them.
  std::vector<std::int32_t> last_rows;
  if (lens != nullptr) {
    last_rows.resize(static_cast<std::size_t>(B));
    for (std::int64_t b = 0; b < B; ++b) {
      if (lens[b] < 1 || lens[b] > T) return cudaErrorInvalidValue;
      last_rows[static_cast<std::size_t>(b)] = static_cast<std::int32_t>(b * T + lens[b] - 1);
    }
  }
  Carver a{static_cast<char*>(scratch)};
  ForwardScratch sc;
  JK_RETURN_IF_ERROR(carve_forward(a, *cfg, B, T, HeadRows::Last, &sc));
  const std::uint16_t* x = nullptr;
  JK_RETURN_IF_ERROR(forward_blocks(w, cfg, ids, B, T, k_caches, v_caches, max_seq, invalid_ids, sc, &x, stream));
  const std::size_t row = static_cast<std::size_t>(D) * sizeof(std::uint16_t);
  if (lens == nullptr) {
    JK_RETURN_IF_ERROR(
        cudaMemcpy2DAsync(sc.last, row, x + (T - 1) * D, T * row, row, B, cudaMemcpyDeviceToDevice, stream));
  } else {
    // From pageable memory: the copy is staged before cudaMemcpyAsync returns, so last_rows may go.
    JK_RETURN_IF_ERROR(cudaMemcpyAsync(sc.last_rows, last_rows.data(), last_rows.size() * sizeof(std::int32_t),
                                       cudaMemcpyHostToDevice, stream));
    model_gather_rows<<<static_cast<unsigned>(B), 128, 0, stream>>>(x, sc.last_rows, D, sc.last);
    JK_RETURN_IF_ERROR(cudaGetLastError());
  }
  JK_RETURN_IF_ERROR(head_forward(w, cfg, sc.last, B, sc.h, sc.rstd, sc.head_offsets, sc.logits, stream));
  return jk_bf16_to_f32(sc.logits, logits, B * V, stream);
}

size_t jk_model_eval_bytes(const jk_model_config_t* cfg, int64_t batch, int64_t seq) {
  return forward_bytes(cfg, batch, seq, HeadRows::All);
}

cudaError_t jk_model_eval(const jk_model_weights_t* w, const jk_model_config_t* cfg, const int32_t* ids,
                          int64_t batch, int64_t seq, const int32_t* labels, float* loss_rows, float* logits,
                          int32_t* invalid_ids, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  if (!valid_decode_config(cfg) || !valid_stage_tensors(w, *cfg) || batch < 0 || seq < 1) return cudaErrorInvalidValue;
  if ((labels == nullptr) != (loss_rows == nullptr)) return cudaErrorInvalidValue;
  if (batch == 0) return invalid_ids ? cudaMemsetAsync(invalid_ids, 0, sizeof(std::int32_t), stream) : cudaSuccess;
  if (ids == nullptr || scratch == nullptr) return cudaErrorInvalidValue;
  const std::size_t need = jk_model_eval_bytes(cfg, batch, seq);
  if (need == 0 || scratch_bytes < need || !is_aligned(scratch, 256)) return cudaErrorInvalidValue;
  Carver a{static_cast<char*>(scratch)};
  ForwardScratch sc;
  JK_RETURN_IF_ERROR(carve_forward(a, *cfg, batch, seq, HeadRows::All, &sc));
  const std::int64_t N = batch * seq, V = cfg->vocab, C = head_chunk_rows(*cfg, N);
  const std::uint16_t* x = nullptr;
  JK_RETURN_IF_ERROR(forward_blocks(w, cfg, ids, batch, seq, nullptr, nullptr, 0, invalid_ids, sc, &x, stream));
  JK_RETURN_IF_ERROR(head_norm(w, cfg, x, N, C, sc.h, sc.rstd, sc.head_offsets, stream));
  return for_each_chunk(N, C, [&](std::int64_t r0, std::int64_t n) {
    JK_RETURN_IF_ERROR(head_logits(w, cfg, sc.h, r0, n, C, sc.head_offsets, sc.logits, stream));
    if (loss_rows != nullptr)
      JK_RETURN_IF_ERROR(jk_fused_cross_entropy_fwd_bf16(sc.logits, labels + r0, loss_rows + r0, sc.lse + r0, nullptr,
                                                         nullptr, nullptr, n, V, stream));
    return logits != nullptr ? jk_bf16_to_f32(sc.logits, logits + r0 * V, n * V, stream) : cudaSuccess;
  });
}

cudaError_t jk_model_train_bytes(const jk_model_config_t* cfg, int64_t batch, int64_t seq, size_t* saved_bytes,
                                 size_t* scratch_bytes) {
  if (!valid_stage_config(cfg) || saved_bytes == nullptr || scratch_bytes == nullptr) return cudaErrorInvalidValue;
  if (batch < 0 || seq < 0 || (seq > 0 && batch > INT32_MAX / seq)) return cudaErrorInvalidValue;
  std::size_t ls = 0, lc = 0;
  JK_RETURN_IF_ERROR(layer_bytes(*cfg, batch, seq, &ls, &lc));
  const StageDims s = stage_dims(*cfg, batch, seq);
  if (s.N > 0 && s.V > INT64_MAX / 2 / s.N) return cudaErrorInvalidValue;
  Carver a{nullptr};
  carve_stage_saved(a, *cfg, s, ls);
  Carver b{nullptr};
  carve_stage_scratch(b, *cfg, s, lc, ls);
  *saved_bytes = a.used;
  *scratch_bytes = b.used;
  return cudaSuccess;
}

cudaError_t jk_model_saved_logits(const jk_model_config_t* cfg, int64_t batch, int64_t seq, const void* saved,
                                  const uint16_t** logits) {
  std::size_t need_saved = 0, need_scratch = 0;
  JK_RETURN_IF_ERROR(jk_model_train_bytes(cfg, batch, seq, &need_saved, &need_scratch));
  if (!cfg->has_head || saved == nullptr || logits == nullptr) return cudaErrorInvalidValue;
  if (stage_dims(*cfg, batch, seq).chunked()) return cudaErrorInvalidValue;  // no logits kept
  std::size_t ls = 0, lc = 0;
  JK_RETURN_IF_ERROR(layer_bytes(*cfg, batch, seq, &ls, &lc));
  Carver a{static_cast<char*>(const_cast<void*>(saved))};
  *logits = carve_stage_saved(a, *cfg, stage_dims(*cfg, batch, seq), ls).logits;
  return cudaSuccess;
}

cudaError_t jk_model_saved_layer(const jk_model_config_t* cfg, int64_t batch, int64_t seq, const void* saved,
                                 int64_t layer, const void** layer_saved) {
  std::size_t need_saved = 0, need_scratch = 0;
  JK_RETURN_IF_ERROR(jk_model_train_bytes(cfg, batch, seq, &need_saved, &need_scratch));
  if (saved == nullptr || layer_saved == nullptr || layer < 0 || layer >= cfg->num_layers || cfg->recompute)
    return cudaErrorInvalidValue;
  std::size_t ls = 0, lc = 0;
  JK_RETURN_IF_ERROR(layer_bytes(*cfg, batch, seq, &ls, &lc));
  Carver a{static_cast<char*>(const_cast<void*>(saved))};
  *layer_saved = carve_stage_saved(a, *cfg, stage_dims(*cfg, batch, seq), ls).layer[static_cast<std::size_t>(layer)];
  return cudaSuccess;
}

cudaError_t jk_model_fwd(const jk_model_weights_t* w, const jk_model_config_t* cfg, const jk_model_batch_t* batch,
                         uint16_t* out, float* loss_rows, float* aux, int32_t* invalid_ids, void* saved,
                         size_t saved_bytes, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  if (batch == nullptr || !valid_stage_config(cfg) || !valid_stage_tensors(w, *cfg)) return cudaErrorInvalidValue;
  if (cfg->has_head ? loss_rows == nullptr : out == nullptr) return cudaErrorInvalidValue;
  if (batch->batch < 0 || batch->seq < 0) return cudaErrorInvalidValue;
  if (batch->batch == 0 || batch->seq == 0) return cudaSuccess;
  StageDims s{};
  StageSaved sv;
  StageScratch sc;
  JK_RETURN_IF_ERROR(prepare(cfg, batch, saved, saved_bytes, scratch, scratch_bytes, &s, &sv, &sc));
  const std::size_t row_bytes = static_cast<std::size_t>(s.N * s.D) * sizeof(std::uint16_t);

  if (cfg->has_embedding) {
    JK_RETURN_IF_ERROR(cudaMemcpyAsync(sv.ids, batch->ids, static_cast<std::size_t>(s.N) * sizeof(std::int32_t),
                                       cudaMemcpyDeviceToDevice, stream));
    JK_RETURN_IF_ERROR(
        jk_embedding_fwd_bf16(w->embedding, sv.ids, sv.x[0], s.N, s.V, s.D, invalid_ids, jk_embedding_path_auto, stream));
  } else {
    JK_RETURN_IF_ERROR(cudaMemcpyAsync(sv.x[0], batch->x_in, row_bytes, cudaMemcpyDeviceToDevice, stream));
    if (invalid_ids != nullptr) JK_RETURN_IF_ERROR(cudaMemsetAsync(invalid_ids, 0, sizeof(std::int32_t), stream));
  }
  // With recompute every block saves into the one shared buffer; the backward runs the block again.
  for (std::int64_t l = 0; l < s.L; ++l)
    JK_RETURN_IF_ERROR(jk_layer_fwd(&w->layers[l], &cfg->layer, sv.x[l], s.B, s.T, sv.x[l + 1],
                                    aux != nullptr ? aux + 4 * l : nullptr, block_saved(*cfg, sv, sc, l),
                                    sv.layer_bytes, sc.layer, sc.layer_bytes, nullptr, stream));
  if (!cfg->has_head)
    return cudaMemcpyAsync(out, sv.x[s.L], row_bytes, cudaMemcpyDeviceToDevice, stream);

  JK_RETURN_IF_ERROR(cudaMemcpyAsync(sv.labels, batch->labels, static_cast<std::size_t>(s.N) * sizeof(std::int32_t),
                                     cudaMemcpyDeviceToDevice, stream));
  // The head chunk by chunk (one chunk of all N rows, kept in saved, when unchunked).
  JK_RETURN_IF_ERROR(head_norm(w, cfg, sv.x[s.L], s.N, s.C, sv.h, sv.rstd, sv.head_offsets, stream));
  std::uint16_t* logits = s.chunked() ? sc.logits : sv.logits;
  return for_each_chunk(s.N, s.C, [&](std::int64_t r0, std::int64_t n) {
    JK_RETURN_IF_ERROR(head_logits(w, cfg, sv.h, r0, n, s.C, sv.head_offsets, logits, stream));
    return jk_fused_cross_entropy_fwd_bf16(logits, sv.labels + r0, loss_rows + r0, sv.lse + r0, nullptr, nullptr,
                                           nullptr, n, s.V, stream);
  });
}

cudaError_t jk_model_bwd(const jk_model_weights_t* w, const jk_model_config_t* cfg, const jk_model_batch_t* batch,
                         const uint16_t* dout, float ce_scale, const float* ce_row_weights, uint16_t* dx_in,
                         const jk_model_grads_t* grads,
                         float grad_beta, void* saved, size_t saved_bytes, void* scratch, size_t scratch_bytes,
                         cudaStream_t stream) {
  if (batch == nullptr || !valid_stage_config(cfg) || !valid_stage_tensors(w, *cfg) ||
      !valid_stage_tensors(grads, *cfg))
    return cudaErrorInvalidValue;
  if (grad_beta != 0.0f && grad_beta != 1.0f) return cudaErrorInvalidValue;
  if (!cfg->has_head && dout == nullptr) return cudaErrorInvalidValue;
  if (cfg->has_head && ce_row_weights == nullptr && !(ce_scale == ce_scale)) return cudaErrorInvalidValue;  // NaN
  if (batch->batch < 0 || batch->seq < 0) return cudaErrorInvalidValue;
  if (batch->batch == 0 || batch->seq == 0) return cudaSuccess;
  StageDims s{};
  StageSaved sv;
  StageScratch sc;
  JK_RETURN_IF_ERROR(prepare(cfg, batch, saved, saved_bytes, scratch, scratch_bytes, &s, &sv, &sc));
  const jk_grouped_gemm_algo_t algo = head_algo(*cfg);
  const bool tied = cfg->has_head && cfg->has_embedding && grads->lm_head == grads->embedding;

  // The gradient of the current boundary x_l: dout, or the head's, then ping-pong through the blocks.
  const std::uint16_t* dcur = dout;
  int next = 0;
  if (cfg->has_head) {
    std::uint16_t* dh = sc.dx[1];
    std::uint16_t* logits = s.chunked() ? sc.logits : sv.logits;
    auto chunk_backward = [&](std::int64_t r0, std::int64_t n) {
      const std::int32_t* offsets = head_offsets_of(sv.head_offsets, n, s.C);
      // A chunk's logits again (the forward's bits); unchunked, the saved ones.
      if (s.chunked()) JK_RETURN_IF_ERROR(head_logits(w, cfg, sv.h, r0, n, s.C, sv.head_offsets, logits, stream));
      // dlogits in place of the logits (bf16, one rounding of (softmax - onehot) * ce_scale).
      if (ce_row_weights != nullptr)
        JK_RETURN_IF_ERROR(jk_fused_cross_entropy_bwd_bf16_weighted(logits, sv.labels + r0, sv.lse + r0, logits,
                                                                    ce_row_weights + r0, n, s.V, stream));
      else
        JK_RETURN_IF_ERROR(jk_fused_cross_entropy_bwd_bf16(logits, sv.labels + r0, sv.lse + r0, logits, nullptr,
                                                           ce_scale, n, s.V, stream));
      // dW_head: the first chunk writes (grad_beta), the others add their rows' fp32 sum.
      JK_RETURN_IF_ERROR(jk_grouped_gemm_bwd_weight_f32(logits, sv.h + r0 * s.D, grads->lm_head,
                                                        r0 == 0 ? grad_beta : 1.0f, offsets, nullptr, n, 1, s.V, s.D,
                                                        algo, stream));
      return jk_grouped_gemm_bwd_data_bf16(logits, w->lm_head, dh + r0 * s.D, offsets, nullptr, n, 1, s.V, s.D, algo,
                                           stream);
    };
    JK_RETURN_IF_ERROR(for_each_chunk(s.N, s.C, chunk_backward));
    // d x_L in place of dh (the fused RMSNorm backward allows dx == dy).
    JK_RETURN_IF_ERROR(jk_fused_rmsnorm_bwd_bf16(sv.x[s.L], w->final_norm, sv.rstd, dh, dh, grads->final_norm,
                                                 grad_beta, sc.norm_ws, s.N, s.D, stream));
    dcur = dh;
    next = 0;
    JK_RETURN_IF_ERROR(record_ready(grads, s.L, stream));
  }
  for (std::int64_t l = s.L - 1; l >= 0; --l) {
    // The gradient of the stage input goes straight to dx_in when there is no embedding.
    std::uint16_t* dst = (l == 0 && !cfg->has_embedding && dx_in != nullptr) ? dx_in : sc.dx[next];
    void* layer_saved = block_saved(*cfg, sv, sc, l);
    if (cfg->recompute)  // the block's forward again from its kept input: the same bits as the first time
      JK_RETURN_IF_ERROR(jk_layer_fwd(&w->layers[l], &cfg->layer, sv.x[l], s.B, s.T, sv.x[l + 1], nullptr, layer_saved,
                                      sv.layer_bytes, sc.layer, sc.layer_bytes, nullptr, stream));
    JK_RETURN_IF_ERROR(jk_layer_bwd(&w->layers[l], &cfg->layer, sv.x[l], dcur, s.B, s.T, dst, &grads->layers[l],
                                    grad_beta, layer_saved, sv.layer_bytes, sc.layer, sc.layer_bytes, nullptr, stream));
    dcur = dst;
    next = dst == sc.dx[0] ? 1 : 0;
    JK_RETURN_IF_ERROR(record_ready(grads, l, stream));
  }
  if (cfg->has_embedding) {
    JK_RETURN_IF_ERROR(jk_embedding_bwd_bf16(dcur, sv.ids, grads->embedding, s.N, s.V, s.D, tied ? 1.0f : grad_beta,
                                             /*zero_untouched=*/1, nullptr, sc.emb_ws, sc.emb_ws_bytes,
                                             jk_embedding_path_auto, stream));
    return record_ready(grads, s.L + 1, stream);
  }
  if (dx_in != nullptr && dcur != dx_in)
    return cudaMemcpyAsync(dx_in, dcur, static_cast<std::size_t>(s.N * s.D) * sizeof(std::uint16_t),
                           cudaMemcpyDeviceToDevice, stream);
  return cudaSuccess;
}
