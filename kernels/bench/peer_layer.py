"""PyTorch / HF transformers peer of kernels/bench/bench_layer.cu: one HF JetMoeDecoderLayer
(transformers.models.jetmoe.modeling_jetmoe, the only mainstream JetMoE runtime) in bf16 at the same
shapes, timed the same way (median after warm-up; CUDA events on a GPU), printing the same table columns
(op, B, T, time_ms, tokens_per_s, TFLOP/s, MFU%, GB/s, HBM%).

  GPU session: python kernels/bench/peer_layer.py --out peer-layer.csv
               (D 2048, E 8, k 2, H_kv 16, d 128, F 5632; training B*T = 8192 and 16384 at T = 4096; decode
               B = 1 and 8 at context 4096; attention 'sdpa' by default on the GPU, 'eager' on the CPU)
  CPU smoke:   python kernels/bench/peer_layer.py --device cpu --hidden 32 --experts 4 --kv-heads 2 \
                   --head-dim 8 --ffn 24 --seq 16 --batches 1 2 --decode-batches 1 2 --context 16 --reps 2

Training op: forward of the layer (causal), the original JetMoE aux losses of both routers (0.01 switch +
0.001 z, router logits captured from HF's JetMoeTopKGating), loss = sum(out * G) + aux, autograd backward
(the same work as jk_layer_fwd + jk_layer_bwd). MFU = 3 * flops_per_token * tokens / time / 989 TFLOP/s with
the same flops_per_token as jk_layer_flops_per_token. Decode op: one token per sequence through the layer
with a DynamicCache holding context - 1 tokens (cropped back after each step), bytes of the same
bandwidth bound as the bench.
"""
import argparse

import torch

from transformers import DynamicCache
from transformers.models.jetmoe.modeling_jetmoe import JetMoeDecoderLayer, JetMoeRotaryEmbedding

from peer_common import (add_block_args, add_run_args, block_config, decode_block_bytes, layer_flops_per_token,
                         median_ms, report_throughput, select_device, throughput_row)


def aux_loss(logits, k):
    n, e = logits.shape
    probs = torch.softmax(logits, dim=1)
    ids = logits.topk(k, dim=1).indices
    counts = torch.zeros(e, device=logits.device, dtype=logits.dtype).scatter_add_(
        0, ids.reshape(-1), torch.ones(n * k, device=logits.device, dtype=logits.dtype))
    switch = e * (probs.mean(0) * (counts / (n * k)).detach()).sum()
    lse = torch.logsumexp(logits, dim=1)
    return switch, (lse * lse).mean()


def main():
    p = argparse.ArgumentParser()
    add_block_args(p)
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--batches", type=int, nargs="*", default=[2, 4])
    p.add_argument("--decode-batches", type=int, nargs="*", default=[1, 8])
    p.add_argument("--context", type=int, default=4096)
    add_run_args(p, reps=10, warmup=2)
    a = p.parse_args()
    device = select_device(a.device, "peer_layer.py", "--device cpu and small sizes (see the docstring)")
    torch.manual_seed(20240407)
    D, E, k, Hkv, d, F = a.hidden, a.experts, a.top_k, a.kv_heads, a.head_dim, a.ffn
    cfg, attn = block_config(a, device, num_hidden_layers=1, vocab_size=32,
                             max_position_embeddings=max(a.seq, a.context))
    layer = JetMoeDecoderLayer(cfg, layer_idx=0).to(device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        for name, prm in layer.named_parameters():
            if "layernorm" in name:
                prm.copy_(1.0 + 0.25 * torch.rand_like(prm, dtype=torch.float32).to(prm.dtype))
            elif name.endswith("bias"):
                prm.copy_(0.1 * torch.randn_like(prm, dtype=torch.float32).to(prm.dtype))
            else:
                prm.copy_((torch.randn(prm.shape, device=device) / prm.shape[-1] ** 0.5).to(prm.dtype))
    rotary = JetMoeRotaryEmbedding(config=cfg).to(device)
    captured = []

    def hook(_m, _i, out):
        captured.append(out[4])

    layer.self_attention.experts.router.register_forward_hook(hook)
    layer.mlp.router.register_forward_hook(hook)
    print("peer_layer: torch %s, device %s, attention %s, bf16" % (torch.__version__, device, attn))
    if device.type == "cuda":
        print("  " + torch.cuda.get_device_name(device))
    else:
        print("  CPU threads %d" % torch.get_num_threads())
    fpt = layer_flops_per_token(D, E, k, Hkv, d, F, a.seq)
    print("FLOPs per token per layer (forward, T = %d): %.4g (training 3x: %.4g)" % (a.seq, fpt, 3 * fpt))
    rows = []

    layer.train()
    for B in a.batches:
        T = a.seq
        N = B * T
        x = (torch.rand(B, T, D, device=device) * 2 - 1).to(torch.bfloat16).requires_grad_(True)
        G = (torch.rand(B, T, D, device=device) * 2 - 1).to(torch.bfloat16)
        pos = torch.arange(T, device=device).unsqueeze(0)
        cos, sin = rotary(x, pos)
        mask = None
        if attn == "eager":
            mask = torch.full((T, T), float("-inf"), device=device).triu(1).to(torch.bfloat16).reshape(1, 1, T, T)

        def step():
            captured.clear()
            out = layer(x, attention_mask=mask, position_ids=pos, position_embeddings=(cos, sin))
            loss = (out.float() * G.float()).sum()
            for lg in captured:
                s, z = aux_loss(lg, k)
                loss = loss + 0.01 * s + 0.001 * z
            loss.backward()
            layer.zero_grad(set_to_none=True)
            x.grad = None

        def fwd_only():
            with torch.no_grad():
                captured.clear()
                layer(x, attention_mask=mask, position_ids=pos, position_embeddings=(cos, sin))

        t_fwd = median_ms(fwd_only, device, a.warmup, a.reps)
        t_all = median_ms(step, device, a.warmup, a.reps)
        for op, t, mult in (("train.fwd", t_fwd, 1), ("train.fwd+bwd", t_all, 3)):
            rows.append(throughput_row(op, B, T, t, N, mult * fpt * N, 0.0))
        del x, G, mask

    layer.eval()
    for B in a.decode_batches:
        ctx = a.context
        with torch.no_grad():
            cache = DynamicCache(config=cfg)
            xp = (torch.rand(B, ctx - 1, D, device=device) * 2 - 1).to(torch.bfloat16)
            pos = torch.arange(ctx - 1, device=device).unsqueeze(0)
            cos, sin = rotary(xp, pos)
            mask = None
            if attn == "eager":
                mask = torch.full((ctx - 1, ctx - 1), float("-inf"), device=device).triu(1).to(torch.bfloat16)
                mask = mask.reshape(1, 1, ctx - 1, ctx - 1)
            layer(xp, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                  position_embeddings=(cos, sin))
            del xp, mask
            x1 = (torch.rand(B, 1, D, device=device) * 2 - 1).to(torch.bfloat16)
            p1 = torch.full((1, 1), ctx - 1, device=device, dtype=torch.long)
            c1, s1 = rotary(x1, p1)

            def decode_step():
                captured.clear()
                layer(x1, attention_mask=None, position_ids=p1, past_key_values=cache, use_cache=True,
                      position_embeddings=(c1, s1))
                cache.crop(-1)  # drop the appended token: the context stays ctx - 1

            t = median_ms(decode_step, device, max(a.warmup, 5), a.reps * 5)
        rows.append(throughput_row("decode.step", B, ctx, t, B, B * layer_flops_per_token(D, E, k, Hkv, d, F, 2 * ctx),
                                   decode_block_bytes(D, E, k, Hkv, d, F, B, ctx)))

    report_throughput(rows, a.out)

if __name__ == "__main__":
    main()
