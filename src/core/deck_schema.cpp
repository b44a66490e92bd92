// The application's deck schema: every block and key jetmoe understands, with type, default, allowed
// range and meaning. docs/deck-reference.md is generated from this file (`jetmoe-train
// --deck-reference`), and a test fails when the two differ.
#include "core/deck.hpp"

namespace jetmoe {

namespace {

DeckSchema make_standard_schema() {
  DeckSchema s;
  const std::string train = "jetmoe-train", generate = "jetmoe-generate", eval = "jetmoe-eval",
                    prepare = "jetmoe-prepare", convert = "jetmoe-convert";

  {
    auto& b = s.block("job", "What the run is called, where it writes, how it reports.",
                      {train, generate, eval, prepare, convert});
    b.string("name", "jetmoe", "Run name; prefixes output files.");
    b.integer("seed", 1234, "Seed of every random stream (initialisation, data order, sampling).").at_least(0);
    b.path("output_dir", "runs", "Directory for the run's outputs (metrics, checkpoints, samples).");
    b.choice("log_level", "info", {"debug", "info", "warn", "error"}, "Least severe message printed.");
    b.integer("progress_interval", 10, "Steps between progress lines.").at_least(1);
    b.real("peak_gflops", 0.0,
           "Peak GFLOP/s per rank that MFU is relative to (0: measured at start-up as the best of three 1024^3 "
           "SGEMMs on the rank).")
        .at_least(0);
    b.choice("gpu_kernels", "tuned", {"tuned", "wgmma", "simple"},
             "Which CUDA kernels the bf16 paths run (train, generate and eval with precision = bf16): tuned (the "
             "mma.sync kernels), wgmma (the sm_90a TMA/wgmma kernels on an H100/H200 with a 90a build, the tuned ones "
             "elsewhere; checked on the emulated GPU, not yet on a real one) or simple (the straightforward fallback "
             "kernels: slow, to rule out a tuned kernel). The same model, different fp32 summation orders.");
  }
  {
    auto& b = s.block("model",
                      "The JetMoE architecture. Values come from `preset`, then `config` (a Hugging Face "
                      "config.json, or the one next to `weights`), then the keys set here.",
                      {train, generate, eval, convert});
    b.choice("preset", "tiny", {"tiny", "small", "jetmoe-8b", "none"},
             "Starting shape: `tiny` (CPU minutes), `small` (~100M parameters, benchmarks), `jetmoe-8b` "
             "(the paper's model), `none` (every shape key must be set).");
    b.path("config", std::nullopt, "Hugging Face config.json to take the shape from.")
        .unset_means("the preset (or the config.json next to `weights`).");
    b.path("weights", std::nullopt,
           "Initial weights: a Hugging Face checkpoint directory (safetensors + config.json) or a jetmoe "
           "HDF5 checkpoint.")
        .unset_means("random initialisation from job/seed.");
    b.integer("vocab_size", std::nullopt, "Vocabulary size.").at_least(2).unset_means("from the preset/config.");
    b.integer("hidden_size", std::nullopt, "Model width D.").at_least(1).unset_means("from the preset/config.");
    b.integer("num_layers", std::nullopt, "Number of transformer blocks.").at_least(1).unset_means("from the preset/config.");
    b.integer("num_kv_heads", std::nullopt, "Shared key/value heads H_kv (query heads = H_kv x top_k).")
        .at_least(1).unset_means("from the preset/config.");
    b.integer("head_dim", std::nullopt, "Head dimension (kv_channels); must be even (RoPE).")
        .at_least(2).unset_means("from the preset/config.");
    b.integer("num_experts", std::nullopt, "Experts per MoA and per MoE layer.").at_least(1).unset_means("from the preset/config.");
    b.integer("top_k", std::nullopt, "Experts selected per token (MoA and MoE).").at_least(1).unset_means("from the preset/config.");
    b.integer("ffn_hidden_size", std::nullopt, "Per-expert SwiGLU width F.").at_least(1).unset_means("from the preset/config.");
    b.integer("max_position_embeddings", std::nullopt, "Longest sequence (context length).")
        .at_least(1).unset_means("from the preset/config.");
    b.real("rope_theta", std::nullopt, "RoPE base.").greater_than(0).unset_means("from the preset/config.");
    b.real("rms_norm_eps", std::nullopt, "Epsilon of the final RMSNorm.").greater_than(0).unset_means("from the preset/config.");
    b.real("block_norm_eps", 1e-6, "Epsilon of the two RMSNorms in each block (HF uses 1e-6 whatever the config says).")
        .greater_than(0);
    b.boolean("tie_word_embeddings", std::nullopt, "LM head shares the embedding matrix.")
        .unset_means("from the preset/config (true for JetMoE).");
    b.real("initializer_range", std::nullopt, "Standard deviation of the normal initialisation.")
        .greater_than(0).unset_means("from the preset/config (0.01).");
  }
  {
    auto& b = s.block("tokenizer", "The SentencePiece tokenizer.", {train, generate, eval, prepare});
    b.path("model", std::nullopt, "SentencePiece `tokenizer.model`.")
        .unset_means("the tokenizer.model next to model/weights.");
    b.boolean("add_bos", true, "Prepend `<s>` when encoding, as the HF Llama tokenizer does.");
    b.boolean("add_eos", false, "Append `</s>` when encoding.");
  }
  {
    auto& b = s.block("data", "Training data: token shards written by jetmoe-prepare, mixed by source.", {train});
    b.path("dir", "data/prepared", "Directory of prepared shards (one subdirectory per source).");
    b.weight_list("phase1_mixture", std::nullopt,
                  "Source weights during warmup and the stable phase, e.g. `web:0.64, code:0.25, ...`.")
        .unset_means("every source in data/dir, weighted by its token count.");
    b.weight_list("phase2_mixture", std::nullopt, "Source weights during the decay phase.")
        .unset_means("the phase 1 mixture.");
    b.path("chat_train", std::nullopt,
           "train/mode = sft: jsonl of {\"messages\": [{\"role\", \"content\"}, ...]}; dpo: jsonl of "
           "{\"prompt\", \"chosen\", \"rejected\"} (strings or message lists). Rendered with the Zephyr chat "
           "template; the loss covers assistant tokens only.")
        .unset_means("none (required for sft and dpo).");
    b.path("chat_validation", std::nullopt, "Validation file in the format of chat_train (sft, dpo).")
        .unset_means("no validation.");
  }
  {
    auto& b = s.block("train", "The training run.", {train});
    b.choice("mode", "pretrain", {"pretrain", "sft", "dpo"},
             "Objective: language modelling on <data>/dir, SFT or DPO on <data>/chat_train. For dpo, "
             "micro_batch_size and global_batch_tokens count preference pairs (each pair is two sequences).");
    b.integer("seq_len", 256, "Tokens per sequence.").at_least(2);
    b.integer("micro_batch_size", 8, "Sequences per forward/backward pass.").at_least(1);
    b.integer("global_batch_tokens", 16384,
              "Tokens per optimizer step over all data-parallel ranks; a multiple of "
              "micro_batch_size x seq_len x parallel/data_parallel (gradient accumulation fills the rest).")
        .at_least(1);
    b.choice("precision", "fp32", {"fp32", "bf16"}, "fp32: Kokkos on any backend; bf16: the CUDA kernels on a GPU, fp32 master weights.");
    b.real("load_balance_coef", 0.01, "Weight of each router's switch load-balancing loss.").at_least(0);
    b.real("z_loss_coef", 0.001, "Weight of each router's z-loss.").at_least(0);
    b.integer("eval_interval", 100, "Steps between validation-loss evaluations (0: never).").at_least(0);
    b.integer("eval_batches", 8, "Micro-batches per validation evaluation.").at_least(1);
    b.choice("nonfinite_loss", "stop", {"stop", "skip"}, "On a NaN/Inf loss: stop with an error, or skip the step.");
    b.boolean("recompute", false,
              "Recompute activations in backward instead of storing them: only each block's input is kept and "
              "the block's forward runs again before its backward (fp32 and bf16 alike; the same results, about "
              "a third more block FLOPs, one block's activations in memory instead of every block's).");
    b.integer("logits_chunk_tokens", 0,
              "The LM head and the cross-entropy of at most this many tokens at a time (0: the whole "
              "micro-batch). Below the micro-batch's tokens (micro_batch_size x seq_len, twice that for DPO's "
              "pairs), one chunk's logits (tokens x vocabulary: bf16 on the GPU; fp32, and their gradient, in "
              "fp32) are in memory instead of the micro-batch's, for one more LM-head forward per micro-batch "
              "(the backward computes a chunk's logits again). bf16: the same results bit for bit except the "
              "LM-head weight gradient, whose fp32 sum over the tokens is rounded once per chunk; fp32: the "
              "same up to the rounding of the chunks' matrix products.")
        .at_least(0);
    b.string("sample_prompt", "The", "Prompt of the sample generated at the end of training (needs <tokenizer>/model).");
    b.integer("sample_tokens", 48, "Tokens of that sample (0: no sample).").at_least(0);
  }
  {
    auto& b = s.block("optimizer", "AdamW with decoupled weight decay (none on norms and biases).", {train});
    b.real("lr", 5e-4, "Peak learning rate.").greater_than(0);
    b.real("beta1", 0.9, "Adam beta1.").at_least(0).less_than(1);
    b.real("beta2", 0.95, "Adam beta2.").at_least(0).less_than(1);
    b.real("eps", 1e-8, "Adam epsilon.").greater_than(0);
    b.real("weight_decay", 0.1, "Decoupled weight decay on matrices and embeddings.").at_least(0);
    b.real("grad_clip", 1.0, "Clip the global gradient norm to this value (0: no clipping).").at_least(0);
  }
  {
    auto& b = s.block("schedule", "Learning-rate schedule.", {train});
    b.choice("type", "wsd", {"wsd", "cosine", "constant"},
             "`wsd`: linear warmup from initial_ratio x lr, constant, exponential decay to final_ratio x lr; "
             "`cosine`: warmup then cosine to final_ratio x lr; `constant`.");
    b.choice("unit", "steps", {"steps", "tokens"}, "Unit of total, warmup and decay.");
    b.integer("total", 1000, "Length of the run.").at_least(1);
    b.integer("warmup", 100, "Warmup length.").at_least(0);
    b.real("warmup_ratio", std::nullopt, "Warmup as a fraction of total (replaces warmup; e.g. 0.1 for the alignment recipes).")
        .at_least(0).at_most(1).unset_means("schedule/warmup.");
    b.integer("decay", 200, "Decay length (wsd: the final phase).").at_least(0);
    b.real("initial_ratio", 0.1, "Learning rate at step 0 as a fraction of the peak.").at_least(0).at_most(1);
    b.real("final_ratio", 0.1, "Learning rate at the end as a fraction of the peak.").at_least(0).at_most(1);
  }
  {
    auto& b = s.block("dpo", "Direct preference optimisation (train/mode = dpo).", {train});
    b.real("beta", 0.1, "DPO temperature beta.").greater_than(0);
    b.real("label_smoothing", 0.0, "Conservative DPO label smoothing.").at_least(0).less_than(0.5);
  }
  {
    auto& b = s.block("checkpoint", "HDF5 checkpoints.", {train});
    b.path("dir", "checkpoints", "Directory for checkpoints, relative to job/output_dir unless absolute.");
    b.integer("interval", 500, "Steps between checkpoints (0: only at the end and on SIGTERM).").at_least(0);
    b.integer("keep_last", 3, "Checkpoints kept; older ones are deleted.").at_least(1);
    b.boolean("overwrite", false,
              "A fresh run (no restart) whose checkpoint/dir holds an earlier run's checkpoints: false stops with an "
              "error naming them; true deletes them first.");
  }
  {
    auto& b = s.block("parallel", "Rank layout: ranks = pipeline_stages x data_parallel.", {train});
    b.integer("pipeline_stages", 1,
              "Pipeline stages: the layers split across ranks, the embedding on the first stage, the final norm and "
              "LM head on the last (1F1B schedule).")
        .at_least(1);
    b.integer("data_parallel", 1, "Data-parallel replicas (of the whole pipeline).").at_least(1);
    b.string_list("stage_layers", std::nullopt, "Layers per pipeline stage, e.g. `13, 11` (they must add up to model/num_layers).")
        .unset_means("as even as possible, the first stages taking one more when the layers do not divide.");
    b.integer("micro_batches", 0,
              "Micro-batches per step through the pipeline; 0 or the gradient-accumulation count (global_batch_tokens / "
              "(micro_batch_size x seq_len x data_parallel)), which it always is.")
        .at_least(0);
    b.real("bucket_mb", 25.0,
           "Size of the gradient all-reduce buckets in MB (data parallelism): small tensors are packed into "
           "buckets of this size, one non-blocking MPI_Iallreduce each, started during the last micro-batch's backward "
           "pass as soon as its layers are done.")
        .greater_than(0);
    b.choice("communication", "auto", {"auto", "mpi", "nccl"},
             "How the GPUs of train/precision = bf16 exchange stage boundaries and gradient sums: nccl (GPU to GPU; the "
             "replicas' sums overlap the step's last backward pass, see overlap_allreduce), mpi (through host memory, "
             "as fp32 does) or auto (nccl when the build has NCCL). fp32 always uses MPI.");
    b.boolean("overlap_allreduce", true,
              "Start each gradient bucket's all-reduce during the last micro-batch's backward pass, as soon as its "
              "layers are done (false: all buckets after the backward pass; the same sums, for comparison). With "
              "NCCL (bf16) the buckets are the head, each block and the embedding, summed on a second GPU stream.");
    b.real("timeout", 600.0,
           "Seconds a rank waits for the others (a pipeline exchange, the gradient sums, NCCL's start) before it "
           "stops the job with an error naming the wait; 0: wait forever. Training with more than one rank.")
        .at_least(0);
    b.boolean("zero1", false,
              "Shard the AdamW moments over the data-parallel replicas (ZeRO-1): each replica keeps and updates every "
              "data_parallel-th tensor of its stage and broadcasts it; the same results, 1/data_parallel of the "
              "moments' memory.");
  }
  {
    auto& b = s.block("generate", "Text generation.", {generate});
    b.string("prompt", std::nullopt, "Prompt text.").unset_means("read from generate/prompt_file, or stdin.");
    b.path("prompt_file", std::nullopt, "File with one prompt per line.").unset_means("use generate/prompt or stdin.");
    b.boolean("chat", false, "Wrap prompts in the Zephyr chat template.");
    b.string("system", std::nullopt, "System message in chat mode.").unset_means("no system turn.");
    b.integer("max_new_tokens", 64, "Tokens generated per prompt.").at_least(1);
    b.real("temperature", 0.0, "Sampling temperature (0: greedy).").at_least(0);
    b.integer("top_k", 0, "Sample from the k most likely tokens (0: all).").at_least(0);
    b.real("top_p", 1.0, "Nucleus sampling mass.").greater_than(0).at_most(1);
    b.choice("precision", "fp32", {"fp32", "bf16"},
             "fp32: the Kokkos model on any backend; bf16: the CUDA kernels on a GPU (weights rounded to bf16, HF's "
             "bf16 numerics; prompts prefilled in batches, then one decode step per new token).");
    b.integer("prefill_tokens", 8192,
              "precision = bf16: the most tokens, padding included, in one prefill batch (prompts are batched "
              "longest first and right-padded to the batch's longest; a longer prompt goes alone). Larger batches "
              "prefill faster and need more GPU memory; the results do not depend on it.")
        .at_least(1);
    b.path("output", std::nullopt,
           "Results file (JSON), relative to job/output_dir unless absolute: the settings, and per prompt its text, "
           "the completion, the token counts and ids, and why it stopped (eos or length).")
        .unset_means("standard output only.");
  }
  {
    auto& b = s.block("eval", "Evaluation.", {eval});
    b.choice("task", "perplexity", {"perplexity", "multiple-choice", "logits"},
             "What to evaluate: perplexity of a text file, multiple-choice accuracy, or dump logits.");
    b.path("input", std::nullopt,
           "Text file (perplexity), task jsonl (multiple-choice), or for `logits` a text file of token ids, one "
           "sequence per line, all of the same length.");
    b.choice("format", "auto", {"auto", "hellaswag", "arc", "mmlu", "winogrande", "truthfulqa-mc"},
             "Multiple-choice file format (rows as the HF datasets publish them); `auto` tells it from the fields of "
             "the first row.");
    b.integer("num_fewshot", 0, "Few-shot examples per question (truthfulqa-mc: always 0, as in lm-eval).").at_least(0);
    b.path("fewshot_input", std::nullopt,
           "jsonl in the format of `input` that few-shot examples are drawn from (lm-eval's train/dev split).")
        .unset_means("`input` itself, leaving out the question being asked.");
    b.integer("fewshot_seed", 1234, "Seed of the few-shot draws (lm-eval's fewshot_random_seed; Python's random.Random).")
        .at_least(0);
    b.integer("limit", 0, "Questions evaluated per task (0: all), as lm-eval's --limit.").at_least(0);
    b.integer("context", 0, "Tokens per evaluated window for perplexity (0: the model's context length).").at_least(0);
    b.integer("batch_size", 4, "Sequences per forward pass (perplexity: windows of `context` tokens).").at_least(1);
    b.choice("precision", "fp32", {"fp32", "bf16"},
             "fp32: the Kokkos model on any backend; bf16: the CUDA kernels on a GPU (weights rounded to bf16, HF's "
             "bf16 numerics: bf16 logits, log-likelihoods in fp32 from them).");
    b.path("output", "eval.json",
           "Results file, relative to job/output_dir unless absolute: JSON for perplexity and multiple-choice, a "
           "NumPy `.npy` of float32 logits [sequences, tokens, vocab] for `logits`.");
  }
  {
    auto& b = s.block("prepare", "Tokenising corpora into shards.", {prepare});
    b.string_list("inputs", std::nullopt,
                  "Corpora as `name=path` entries; a path is a file or a directory of files (plain text, `.jsonl`, "
                  "either optionally `.gz`); the name is the source name used by data/phase1_mixture.");
    b.path("output_dir", "data/prepared", "Where the shards go (one subdirectory per source).");
    b.string("text_field", "text", "Field holding the text in jsonl input.");
    b.real("validation_fraction", 0.01,
           "Fraction of documents held out for validation (chosen by a hash of the text and job/seed).")
        .at_least(0).less_than(1);
    b.choice("text_documents", "blank-line", {"blank-line", "file"},
             "Documents in plain-text input: separated by blank lines, or one per file (jsonl: one per line).");
    b.boolean("eos_between_documents", true, "Append `</s>` to every document, so packed documents are separated.");
    b.integer("jobs", 0, "Tokenising threads (0: every hardware thread); the output does not depend on it.")
        .at_least(0);
    b.boolean("overwrite", false, "Replace sources that output_dir already holds (otherwise an error).");
  }
  {
    auto& b = s.block("convert", "Checkpoint conversion.", {convert});
    b.path("input", std::nullopt, "Checkpoint to read: HF directory or jetmoe HDF5 file.");
    b.path("output", std::nullopt, "Where to write the converted checkpoint.");
    b.choice("to", "hf", {"hf", "hdf5"}, "Output format.");
    b.choice("dtype", "bf16", {"bf16", "fp16", "fp32"}, "Tensor type written.");
  }
  return s;
}

}  // namespace

const DeckSchema& DeckSchema::standard() {
  static const DeckSchema schema = make_standard_schema();
  return schema;
}

}  // namespace jetmoe
