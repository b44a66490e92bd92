"""PyTorch / HF transformers peer of kernels/bench/bench_fused.cu: the same operations at the same shapes,
timed the same way (median of event-timed repeats after a warm-up), printed with the same columns
(kernel, shape, MB, time_us, GB/s, %peak). MB counts the same essential traffic as the CUDA benchmark,
so GB/s is comparable as an effective rate, whatever extra traffic PyTorch makes.

  GPU (the real comparison): python kernels/bench/peer_fused.py [--out peer.csv]
  CPU smoke test (tiny shapes): python kernels/bench/peer_fused.py --device cpu --tiny

Ops: HF JetMoeRMSNorm backward (autograd; the forward is run outside the timed region, its graph
retained), HF apply_rotary_pos_emb (q and k), F.cross_entropy(logits.float()) forward and backward,
torch.nn.utils.clip_grad_norm_ (foreach, fused norm) and torch.optim.AdamW(fused=True) on CUDA
(foreach=False on the CPU) over the same tensor list (fp32 master weights; PyTorch has no bf16-copy
output, so its AdamW moves 28 of our 30 bytes per element).
"""
import argparse

import torch
import torch.nn.functional as F
from transformers import JetMoeConfig
from transformers.models.jetmoe import modeling_jetmoe as hf

from peer_common import add_run_args, device_name, median_us, print_table, select_device, write_csv

HBM_PEAK = 3.35e12


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="small shapes (CPU smoke test)")
    add_run_args(ap, reps=50, warmup=5)
    a = ap.parse_args()
    dev = select_device(a.device, "peer_fused.py", "--device cpu --tiny")
    if a.tiny:
        R, H, T, HQ, HK, D, N, V = 64, 256, 32, 4, 2, 128, 16, 1000
        sizes = [64 * 1024, 2048, 2048, 1]
        a.reps, a.warmup = min(a.reps, 5), min(a.warmup, 1)
    else:
        R, H, T, HQ, HK, D, N, V = 16384, 2048, 4096, 32, 16, 128, 4096, 32000
        sizes = [8 * 11264 * 2048, 4096 * 2048, 2048, 2048, 1]
    torch.manual_seed(0)
    rows = []  # kernel, shape, bytes, us, GB/s, % of the HBM peak

    def add(kernel, shape, nbytes, us):
        gbs = nbytes / (us * 1e-6) / 1e9
        rows.append((kernel, shape, nbytes, us, gbs, 100 * gbs * 1e9 / HBM_PEAK))

    # RMSNorm backward (HF module, autograd), bf16 and fp32.
    for dtype, size in ((torch.bfloat16, 2), (torch.float32, 4)):
        norm = hf.JetMoeRMSNorm(H, eps=1e-6).to(dev, dtype)
        x = torch.randn(R, H, device=dev, dtype=dtype).requires_grad_(True)
        dy = torch.randn(R, H, device=dev, dtype=dtype)
        y = norm(x)

        def bwd():
            x.grad = None
            norm.weight.grad = None
            torch.autograd.backward(y, dy, retain_graph=True)

        add("rmsnorm_bwd %s" % ("bf16" if size == 2 else "f32"), "%dx%d" % (R, H),
            3.0 * R * H * size + 2.0 * ((R + 31) // 32) * H * 4 + H * 4, median_us(bwd, dev, a.warmup, a.reps))

    # RoPE (HF apply_rotary_pos_emb with JetMoeRotaryEmbedding), q [1, HQ, T, D], k [1, HK, T, D].
    cfg = JetMoeConfig(kv_channels=D, num_key_value_heads=HK, hidden_size=HK * D, rope_theta=10000.0,
                       num_hidden_layers=1, vocab_size=16)
    emb = hf.JetMoeRotaryEmbedding(cfg).to(dev)
    pos = torch.arange(T, device=dev)[None]
    for dtype, size, name in ((torch.bfloat16, 2, "bf16"), (torch.float32, 4, "f32")):
        q = torch.randn(1, HQ, T, D, device=dev, dtype=dtype)
        k = torch.randn(1, HK, T, D, device=dev, dtype=dtype)
        cos, sin = emb(q, pos)
        add("rope_fwd %s" % name, "%d tok, %d+%d heads x%d" % (T, HQ, HK, D), 2.0 * (HQ + HK) * T * D * size,
            median_us(lambda: hf.apply_rotary_pos_emb(q, k, cos, sin), dev, a.warmup, a.reps))

    # Cross-entropy forward and backward over the vocabulary.
    labels = torch.randint(0, V, (N,), device=dev)
    labels[5::97] = -100
    for dtype, size, name in ((torch.bfloat16, 2, "bf16"), (torch.float32, 4, "f32")):
        logits = (2 * torch.randn(N, V, device=dev)).to(dtype).requires_grad_(True)
        add("cross_entropy_fwd %s" % name, "%dx%d" % (N, V), N * V * size,
            median_us(lambda: F.cross_entropy(logits.float(), labels, ignore_index=-100), dev, a.warmup, a.reps))
        loss = F.cross_entropy(logits.float(), labels, ignore_index=-100)

        def ce_bwd():
            logits.grad = None
            loss.backward(retain_graph=True)

        add("cross_entropy_bwd %s" % name, "%dx%d" % (N, V), 2.0 * N * V * size,
            median_us(ce_bwd, dev, a.warmup, a.reps))

    # Gradient norm + AdamW over the tensor list.
    params = [torch.nn.Parameter(0.01 * torch.randn(s, device=dev)) for s in sizes]
    for p in params:
        p.grad = 0.01 * torch.randn_like(p)
    total = float(sum(sizes))
    shape = "+".join(str(s) for s in sizes)
    add("grad_norm f32", shape, total * 4,
        median_us(lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=dev.type == "cuda"), dev, a.warmup,
                  a.reps))
    fused = dev.type == "cuda"
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=fused,
                            foreach=False if not fused else None)
    add("adamw f32 (fused=%s)" % fused, shape, total * 28, median_us(opt.step, dev, a.warmup, a.reps))

    print("peer_fused.py: torch %s on %s (%s), median of %d after %d warm-up" % (
        torch.__version__, dev, device_name(dev, threads=False), a.reps, a.warmup))
    print_table("%-26s %-34s %12s %10s %10s %8s", ("kernel", "shape", "MB", "time_us", "GB/s", "%peak"),
                "%-26s %-34s %12.1f %10.1f %10.1f %7.1f%%",
                [(kernel, shp[:34], nbytes / 1e6, us, gbs, pct) for kernel, shp, nbytes, us, gbs, pct in rows])
    if a.out:
        write_csv(a.out, "kernel,shape,bytes,median_us,gb_per_s,percent_hbm_peak", "%s,\"%s\",%.0f,%.3f,%.2f,%.2f",
                  rows)


if __name__ == "__main__":
    main()
