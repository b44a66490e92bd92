#pragma once
// bf16 mixed-precision training on a CUDA GPU (train/precision = bf16): a pipeline stage that runs the
// tuned kernels of kernels/ (jetmoe/model.h: embedding, jk_layer blocks, final norm, LM head,
// cross-entropy) behind the StageNetwork interface the Pipeline uses, so micro-batching, 1F1B stages,
// data-parallel sums, clipping, AdamW, checkpoints and restarts are the fp32 path's.
//
// Precision: the trainer's fp32 parameters are the master weights. At the start of every pass (a
// training step or an evaluation) they are rounded to bf16 on the device (round to nearest even); the
// forward and backward run in bf16 with fp32 accumulation and HF's bf16 roundings (kernels/notes/
// model.md); weight gradients accumulate in fp32 on the device over the step's micro-batches and are
// added to the trainer's fp32 gradients after the last one; AdamW updates the fp32 masters (on a
// Kokkos::Cuda build the masters and gradients are Kokkos GPU memory, read and updated in place; on a
// host-memory Kokkos build they are uploaded and downloaded once per step). Stage
// boundaries travel as fp32 arrays holding bf16 values (exact both ways).
//
// Per-token loss weights (DPO) are computed on the host from the row losses of the forward pass and
// applied in the backward's cross-entropy (jk_fused_cross_entropy_bwd_bf16_weighted).
//
// Communication (parallel/communication): with `mpi` the stage boundaries and the gradient sums go
// through host memory and MPI, as in fp32. With `nccl` (GpuComms) they stay on the GPUs: boundaries
// move as bf16 by ncclSend/ncclRecv (the Pipeline's exchanges become NCCL groups), and after the
// step's last backward pass the fp32 gradients are summed by ncclAllReduce over the stage's
// data-parallel replicas, then the tied embedding's copies between the first and the last stage, before
// they are added to the trainer's. The replicas' sums overlap the last backward pass: one ncclAllReduce
// per part of the gradient buffer (the head, each block, the embedding) on a second stream, each
// behind the event jk_model_bwd records when that part is final (parallel/overlap_allreduce = false:
// one call over the whole buffer after the backward pass).
//
// Activation recomputation (train/recompute) keeps each block's input only and runs the block again in
// the backward, with bit-identical results. train/logits_chunk_tokens runs the LM head and the
// cross-entropy a chunk of tokens at a time (jk_model_config_t::head_chunk). The optimizer is not part
// of this stage: it is the trainer's Kokkos AdamW, which runs on the GPU with a Kokkos::Cuda build;
// jk_fused_adamw (bit-identical to it) would also keep a host-Kokkos build's masters on the GPU.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "model/gpu_kernels.hpp"
#include "parallel/comm.hpp"
#include "train/network.hpp"

namespace jetmoe {

// A rank's NCCL communicators (built with NCCL): made once, shared by the trainer's device networks
// (DPO's frozen reference uses the pipeline one).
struct GpuComms;

// Empty when this build can move the bf16 path's traffic by NCCL, else why not (for a deck error).
std::string gpu_comms_unavailable();

// Collective over every rank of the job (each calls with its own three communicators, made by the
// same splits): NCCL communicators with the same ranks as `pipe` (this replica's stages), `replicas`
// (this stage's data-parallel replicas) and `embedding` (the first and last stage with tied
// embeddings; a one-rank communicator elsewhere). Throws jetmoe::Error when NCCL fails to start.
std::shared_ptr<GpuComms> make_gpu_comms(const Comm& pipe, const Comm& replicas, const Comm& embedding);

// ZeRO-1's parameter broadcast GPU to GPU (a Kokkos::Cuda build, where the parameters are GPU
// memory): part i (a device pointer and a count of floats) goes from replica owners[i] of `comms`'
// replicas communicator to the other replicas, in place, all parts in one NCCL group on a stream of its
// own, which this waits for. The caller fences first (the optimizer's kernels wrote the parts). A
// no-op with one replica; throws jetmoe::Error when NCCL or CUDA fails.
void broadcast_from_owners(GpuComms& comms, const std::vector<std::pair<float*, std::size_t>>& parts,
                           const std::vector<int>& owners);

// Empty when this process can train with the device network; otherwise why not, for the user: this
// build has no CUDA kernels, there is no usable GPU (with the runtime's reason), or the kernels were
// not built for the GPU's architecture. With several visible GPUs it first makes this rank use GPU
// (node-local rank mod count), the local rank taken from the launcher's environment (Open MPI, Slurm,
// MPICH, PMI, MVAPICH); with one visible GPU per task there is nothing to choose. On a Kokkos::Cuda
// build it uses the GPU Kokkos chose at start-up.
std::string device_training_unavailable();

// One line naming the GPU the device network runs on (for the run's log).
std::string device_training_description();

// How the device stage runs (the deck's choices).
struct DeviceNetworkOptions {
  // Which CUDA kernels (job/gpu_kernels).
  GpuKernels kernels = GpuKernels::Tuned;
  // train/recompute: keep only each block's input from forward to backward and run the block's forward
  // again in the backward (jk_model_config_t::recompute): one block's activations instead of every
  // block's, the same results bit for bit.
  bool recompute = false;
  // parallel/overlap_allreduce (with NCCL comms and more than one replica): the replicas' sums run on a
  // second stream during the step's last backward pass, each part of the gradients (the head, each
  // block from the last, the embedding) as soon as jk_model_bwd's event says it is final
  // (jk_model_grads_t::ready); false: one sum over all of them after the backward pass.
  bool overlap_sums = true;
  // train/logits_chunk_tokens (jk_model_config_t::head_chunk): the LM head and the cross-entropy of at
  // most this many tokens at a time, one chunk's logits in memory instead of the micro-batch's, computed
  // again in the backward; 0: the whole micro-batch at once.
  std::int64_t logits_chunk = 0;
};

// The options of a stage that only runs forward passes (DPO's frozen reference): recompute, and the
// head at most kForwardLogitsChunk tokens at a time; without a backward neither costs anything, and
// the results are the same bit for bit.
inline DeviceNetworkOptions forward_only(DeviceNetworkOptions options) {
  options.recompute = true;
  if (options.logits_chunk == 0 || options.logits_chunk > kForwardLogitsChunk) options.logits_chunk = kForwardLogitsChunk;
  return options;
}

// The device stage for `span` of the model. Throws jetmoe::Error when device_training_unavailable()
// is not empty or device memory runs out. With `comms`, its boundaries and gradient sums go by NCCL
// (it is its own StageLink and sums_gradients()); without, by the Pipeline and the trainer over MPI.
std::unique_ptr<StageNetwork> make_device_network(const ModelConfig& config, double coef_switch, double coef_z,
                                                  const StageSpan& span, std::shared_ptr<GpuComms> comms = nullptr,
                                                  const DeviceNetworkOptions& options = {});

}  // namespace jetmoe
