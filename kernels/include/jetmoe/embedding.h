#pragma once
// jetmoe kernels, family 'embedding': the token embedding gather (forward) and its deterministic
// scatter-add (backward) for the GPU model (jetmoe-spec.md sections 2-3: Emb [V = 32000, D = 2048],
// x = Emb[ids], no scaling; the table is tied with the LM head, whose GEMM gradient the trainer adds
// separately: this family computes only the gather's gradient).
// Conventions as in kernels.h: device pointers, int64_t sizes, asynchronous on `stream`, returns
// cudaSuccess / cudaErrorInvalidValue (bad arguments) / the launch error; zero sizes are no-ops.
// bf16 = uint16_t raw bits. Nothing here synchronises with the host.
//
// Shapes (row-major, contiguous): emb / dEmb [V, D], ids [N] int32, x / dx [N, D].
// Limits: N, V and D must each fit in int32 (token indices and ids are int32).
//
// Out-of-range ids (id < 0 or id >= V) are not undefined behaviour: the forward zero-fills the row of
// such a token, the backward skips the token (it contributes to no row), and both count them into an
// optional device int32 `invalid_count` (may be null), which the call first sets to 0 (on `stream`)
// and then to the number of out-of-range tokens; read it after synchronising the stream.
//
// Determinism: bit-identical results run to run. The forward is a copy. The backward groups the
// tokens by id with a device counting sort (integer histogram, exclusive scan, a stable scatter that
// keeps tokens ascending within an id), then sums each id's dx rows in ascending token order in fp32,
// exactly as src/model/layers.cpp embedding_backward does: acc = 0; acc += dx[t] for each t with
// ids[t] == v, ascending; dEmb[v] = acc (beta 0) or dEmb[v] + acc (beta 1). No float atomics.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

// C linkage: the library exports these functions under their plain names (ctypes, other languages).
extern "C" {

// Which implementation runs. auto: 16-byte vector loads/stores where pointers are 16-byte aligned
// and D is a multiple of the vector width (8 bf16 / 4 fp32), a scalar path otherwise. simple: always
// the scalar path (one element per thread and step) and, in the backward, the single-pass rank kernel
// of the grouping: the obviously correct fallback, kept callable so tests can compare it with the tuned
// path. Both give bit-identical results.
enum jk_embedding_path_t : int { jk_embedding_path_auto = 0, jk_embedding_path_simple = 1 };

// ---- forward: x[t, :] = emb[ids[t], :] ----------------------------------------------------------------
// out must not overlap emb or ids. Bit-exact copy (NaN payloads kept); rows of out-of-range ids are
// zero-filled and counted (see above).
cudaError_t jk_embedding_fwd_bf16(const std::uint16_t* emb, const std::int32_t* ids, std::uint16_t* out,
                                  std::int64_t N, std::int64_t V, std::int64_t D, std::int32_t* invalid_count,
                                  jk_embedding_path_t path, cudaStream_t stream);

cudaError_t jk_embedding_fwd_f32(const float* emb, const std::int32_t* ids, float* out, std::int64_t N,
                                 std::int64_t V, std::int64_t D, std::int32_t* invalid_count,
                                 jk_embedding_path_t path, cudaStream_t stream);

// ---- backward: dEmb[v, :] (+)= sum over t with ids[t] == v of dx[t, :] ---------------------------------
// Device scratch (bytes) of the backward for N tokens and V ids: id histogram and offsets (V + 1 int32
// each) and the grouped token order and per-token ranks (N int32 each), each part 256-byte aligned. Pass a buffer of at least this size
// (256-byte aligned, as cudaMalloc gives); it may be reused once the call's work on `stream` is done.
std::size_t jk_embedding_bwd_workspace_bytes(std::int64_t N, std::int64_t V);

// dx [N, D] bf16 (widened exactly) or fp32; dEmb [V, D] fp32. beta must be 0 or 1:
//   beta 1: dEmb[v] = dEmb[v] + acc_v for every id v that occurs; other rows are not touched.
//   beta 0: dEmb[v] = acc_v for every id v that occurs; rows of ids that do not occur are zeroed when
//           zero_untouched != 0 (a full overwrite: V x D x 4 bytes of writes, 262 MB at JetMoE-8B), and
//           left as they are when zero_untouched == 0 (the caller knows they are already zero or does
//           not read them). zero_untouched is ignored with beta 1.
// acc_v is the fp32 sum, in ascending token order starting from 0.0f, of the dx rows of the tokens with
// id v (see the determinism note above). Out-of-range ids are skipped and counted. dEmb must not
// overlap dx, ids or the workspace. With N = 0 nothing is summed (beta 0 with zero_untouched still
// zeroes all of dEmb; invalid_count, when given, is set to 0).
cudaError_t jk_embedding_bwd_bf16(const std::uint16_t* dx, const std::int32_t* ids, float* demb, std::int64_t N,
                                  std::int64_t V, std::int64_t D, float beta, int zero_untouched,
                                  std::int32_t* invalid_count, void* workspace, std::size_t workspace_bytes,
                                  jk_embedding_path_t path, cudaStream_t stream);

cudaError_t jk_embedding_bwd_f32(const float* dx, const std::int32_t* ids, float* demb, std::int64_t N,
                                 std::int64_t V, std::int64_t D, float beta, int zero_untouched,
                                 std::int32_t* invalid_count, void* workspace, std::size_t workspace_bytes,
                                 jk_embedding_path_t path, cudaStream_t stream);

// The grouping alone (exposed for tests and for callers that reuse it): from ids [N] fills
//   offsets [V + 1]   exclusive prefix sum of the per-id counts (offsets[V] = number of in-range tokens)
//   sorted_token [N]  tokens grouped by id, ascending within an id: id v owns
//                     sorted_token[offsets[v] .. offsets[v + 1]); entries from offsets[V] on are -1.
// `workspace` as for the backward (only its histogram and rank parts are used by this call). Uses the
// tuned (split) rank count.
cudaError_t jk_embedding_group_tokens(const std::int32_t* ids, std::int64_t N, std::int64_t V,
                                      std::int32_t* offsets, std::int32_t* sorted_token,
                                      std::int32_t* invalid_count, void* workspace, std::size_t workspace_bytes,
                                      cudaStream_t stream);

}  // extern "C"
