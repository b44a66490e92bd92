"""PyTorch / HF transformers peer of kernels/bench/bench_model.cu: the decode step and the prefill of HF's
JetMoeForCausalLM (transformers.models.jetmoe) in bf16 at the same shapes, timed the same way (median
after a warm-up; CUDA events on a GPU), printing the same table columns (op, B, T, time_ms,
tokens_per_s, TFLOP/s, MFU%, GB/s, HBM%).

  GPU session: python kernels/bench/peer_model.py --out peer-model.csv
               (JetMoE-8B: V 32000, 24 layers of D 2048, E 8, k 2, H_kv 16, d 128, F 5632, untied head;
               B = 1 and 8 at context 4096; attention 'sdpa' on the GPU)
  CPU smoke:   python kernels/bench/peer_model.py --device cpu --vocab 64 --layers 2 --hidden 32 --experts 4 \
                   --kv-heads 2 --head-dim 8 --ffn 24 --batches 1 2 --context 16 --reps 2

Prefill ops (as the bench): 8 prompts of 1024, 96, 512, 37, 768, 256, 1 and 640 tokens, each alone
(prefill.alone) and as one left-padded batch with an attention mask (prefill.batched); tokens/s and
MFU count the prompts' own tokens.

Head op (head.train.c0, as the bench's): HF's final norm, LM head and cross-entropy (logits upcast to
fp32, as JetMoeForCausalLM's loss) forward and backward over 2 x context tokens; MFU counts 6 N D V.

Decode op: one token per sequence through the whole model (logits of the last position), with a
DynamicCache holding context - 1 tokens (cropped back after each step); bytes of the same bandwidth bound
as the bench (per layer the active experts, the shared K/V projection, routers, norms, biases and the K/V
cache read; the embedding rows, final norm and LM head). The model is built on the meta device and its
bf16 parameters drawn on the target device (8.5B parameters; host initialisation would take minutes);
the RoPE buffer is rebuilt in fp32 (a whole-model bf16 cast would round it).
"""
import argparse

import torch

from transformers import DynamicCache
from transformers.models.jetmoe.modeling_jetmoe import JetMoeForCausalLM, JetMoeRotaryEmbedding

from peer_common import (add_block_args, add_run_args, block_config, decode_block_bytes, device_name,
                         layer_flops_per_token, median_ms, report_throughput, select_device, throughput_row)

# The bench's prefill prompts (tokens; scaled down when --context is below the longest).
PREFILL_LENS = [1024, 96, 512, 37, 768, 256, 1, 640]
PREFILL_LONGEST = 1024


def main():
    p = argparse.ArgumentParser()
    add_block_args(p)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    p.add_argument("--context", type=int, default=4096)
    add_run_args(p, reps=50, warmup=5)
    a = p.parse_args()
    device = select_device(a.device, "peer_model.py", "--device cpu and small sizes (see the docstring)")
    torch.manual_seed(20240407)
    V, L, D, E, k, Hkv, d, F = a.vocab, a.layers, a.hidden, a.experts, a.top_k, a.kv_heads, a.head_dim, a.ffn
    ctx = a.context
    cfg, attn = block_config(a, device, vocab_size=V, num_hidden_layers=L, max_position_embeddings=ctx,
                             tie_word_embeddings=False)
    with torch.device("meta"):
        model = JetMoeForCausalLM(cfg).to(torch.bfloat16)
    model = model.to_empty(device=device)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if "layernorm" in name or name.endswith("norm.weight"):
                prm.copy_(1.0 + 0.25 * torch.rand(prm.shape, device=device))
            elif name.endswith("bias"):
                prm.copy_(0.1 * torch.randn(prm.shape, device=device))
            else:
                prm.copy_(torch.randn(prm.shape, device=device) / prm.shape[-1] ** 0.5)
    model.model.rotary_emb = JetMoeRotaryEmbedding(config=cfg).to(device)  # fp32 inv_freq, as from_pretrained
    model.eval()
    print("peer_model: torch %s, %s, attention %s, bf16, %d layers, %.1fM parameters" %
          (torch.__version__, device_name(device), attn, L, sum(q.numel() for q in model.parameters()) / 1e6))
    rows = []
    for B in a.batches:
        with torch.no_grad():
            cache = DynamicCache(config=cfg)
            prompt = torch.randint(0, V, (B, ctx - 1), device=device)
            model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
            del prompt
            step_ids = torch.randint(0, V, (B, 1), device=device)
            pos = torch.full((B, 1), ctx - 1, device=device, dtype=torch.long)

            def decode_step():
                model(input_ids=step_ids, position_ids=pos, past_key_values=cache, use_cache=True, logits_to_keep=1)
                cache.crop(-1)  # drop the appended token: the context stays ctx - 1

            t = median_ms(decode_step, device, a.warmup, a.reps)
            del cache
        total = L * decode_block_bytes(D, E, k, Hkv, d, F, B, ctx) + 2.0 * (B * D + D + V * D)
        flops = B * (L * layer_flops_per_token(D, E, k, Hkv, d, F, 2 * ctx) + 2.0 * V * D)
        rows.append(throughput_row("decode.step", B, ctx, t, B, flops, total))
        print("decode B %d: bandwidth-bound bytes %.3f GB per step" % (B, total / 1e9))

    # Prefill of the bench's prompts of different lengths: each alone, then one left-padded batch with an
    # attention mask (HF's way of batching prompts); the prompts' own tokens and FLOPs, as the bench counts.
    longest = min(PREFILL_LONGEST, ctx)
    lens = [max(1, n * longest // PREFILL_LONGEST) for n in PREFILL_LENS]
    prompts = [torch.randint(0, V, (n,), device=device) for n in lens]
    ids = torch.zeros((len(lens), longest), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for b, q in enumerate(prompts):
        ids[b, longest - len(q):] = q
        mask[b, longest - len(q):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    tokens = float(sum(lens))
    flops = sum(n * L * layer_flops_per_token(D, E, k, Hkv, d, F, n) + 2.0 * V * D for n in lens)

    def alone():
        for q in prompts:
            model(input_ids=q[None], past_key_values=DynamicCache(config=cfg), use_cache=True, logits_to_keep=1)

    def batched():
        model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=DynamicCache(config=cfg),
              use_cache=True, logits_to_keep=1)

    reps = max(3, a.reps // 5)
    with torch.no_grad():
        rows.append(throughput_row("prefill.alone", len(lens), longest, median_ms(alone, device, 1, reps), tokens,
                                   flops, 0.0))
        rows.append(throughput_row("prefill.batched", len(lens), longest, median_ms(batched, device, 1, reps), tokens,
                                   flops, 0.0))
    print("prefill: %d prompts of %d tokens in all, the longest %d" % (len(lens), int(tokens), longest))

    # The LM head of training: final norm, head and cross-entropy of 2 x context tokens, forward and backward.
    N = 2 * ctx
    x = torch.randn(N, D, device=device).to(torch.bfloat16).requires_grad_(True)
    labels = torch.randint(0, V, (N,), device=device)

    def head_step():
        logits = model.lm_head(model.model.norm(x))
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()

    with torch.enable_grad():
        rows.append(throughput_row("head.train.c0", 2, ctx, median_ms(head_step, device, a.warmup, a.reps), N,
                                   6.0 * N * D * V, 0.0))

    report_throughput(rows, a.out)

if __name__ == "__main__":
    main()
