#!/usr/bin/env python3
"""PyTorch / HF peer of kernels/bench/bench_attention.cu: the same shapes, the same table columns.

Ops timed (inputs in the kernels' token-major layout [B, T, H, d], bf16, fresh random non-zero values):
  fwd / bwd  sdpa   torch.nn.functional.scaled_dot_product_attention(is_causal=True), K/V TILED to Hq heads
                    (`repeat(1, k, 1, 1)`, JetMoE's pairing; SDPA's enable_gqa would interleave, the wrong
                    pairing). On CUDA the flash backend is forced (sdpa_kernel(FLASH_ATTENTION)).
  fwd / bwd  eager  HF transformers' JetMoe eager_attention_forward (softmax fp32 -> bf16, T x T scores)
                    with the tiled K/V and an additive causal mask, as JetMoeAttention.forward runs it.
  decode     sdpa   one query per sequence against a [B, Tmax, H_kv, d] cache (first len rows), tiled K/V.
The tiling copy and the layout transposes are inside the timed region (the peer has to do them).
FLOPs: causal fwd 4 B Hq T^2 d / 2, bwd 2.5x (the kernels' convention); decode bytes = K and V rows read.
Timing: CUDA events (cuda) or perf_counter (cpu), median of --reps after --warmup.

  nice /opt/oracle-venv/bin/python kernels/bench/peer_attention.py --device cpu --quick     # proves it runs
  python kernels/bench/peer_attention.py --device cuda --out peer-attention.csv              # on the H100
"""
import argparse
import math
import sys
import types

import torch
import torch.nn.functional as F

from peer_common import add_run_args, device_name, median_ms, rand_nonzero, select_device, write_csv

PEAK_TFLOPS = 989.0
PEAK_TBS = 3.35


def tile(x, k):
    return x.repeat(1, k, 1, 1)


def sdpa_fwd(q, k, v, device):
    """q [B,T,Hq,d], k/v [B,T,Hkv,d] -> out [B,T,Hq,d]"""
    top_k = q.shape[2] // k.shape[2]
    qs, ks, vs = q.transpose(1, 2), tile(k.transpose(1, 2), top_k), tile(v.transpose(1, 2), top_k)
    if device == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
    else:
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
    return o.transpose(1, 2)


def eager_fwd(q, k, v, device):
    from transformers.models.jetmoe import modeling_jetmoe
    top_k = q.shape[2] // k.shape[2]
    T = q.shape[1]
    qs, ks, vs = q.transpose(1, 2), tile(k.transpose(1, 2), top_k), tile(v.transpose(1, 2), top_k)
    mask = torch.full((T, T), torch.finfo(q.dtype).min, dtype=q.dtype, device=q.device).triu(1)[None, None]
    module = types.SimpleNamespace(num_key_value_groups=1, training=False)
    out, _ = modeling_jetmoe.eager_attention_forward(module, qs, ks, vs, mask, scaling=1.0 / math.sqrt(q.shape[3]))
    return out  # already [B, T, Hq, d]


def decode(q, kc, vc, length, device):
    """q [B,Hq,d], caches [B,Tmax,Hkv,d]; all sequences have `length` valid rows."""
    top_k = q.shape[1] // kc.shape[2]
    ks = tile(kc[:, :length].transpose(1, 2), top_k)
    vs = tile(vc[:, :length].transpose(1, 2), top_k)
    return F.scaled_dot_product_attention(q[:, :, None, :], ks, vs)[:, :, 0, :]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--quick", action="store_true", help="tiny shapes (CPU smoke test)")
    add_run_args(ap, reps=20, warmup=3, out_help="CSV file for the raw numbers")
    args = ap.parse_args()
    select_device(args.device, "peer_attention.py", "--device cpu --quick")  # exits 77 without CUDA
    device = args.device
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20240407)
    Hq, Hkv, d = 32, 16, 128
    train = [(4, 4096), (8, 2048)]
    decodes = [(1, 4096, 4096), (1, 1024, 4096), (8, 4096, 4096)]
    if args.quick:
        Hq, Hkv, d = 4, 2, 64
        train = [(1, 64)]
        decodes = [(1, 100, 128)]
    dev_name = device_name(device)
    print(f"peer_attention.py: torch {torch.__version__}, device {dev_name}, median of {args.reps} after {args.warmup} warm-up")
    print(f"peaks: {PEAK_TFLOPS:.0f} TFLOP/s dense bf16, {PEAK_TBS:.2f} TB/s HBM3 (H100 SXM); causal FLOPs fwd 4*B*Hq*T^2*d/2, bwd 2.5x")
    print("%-8s %-7s %-34s %10s %9s %9s %12s %8s" % ("op", "path", "shape", "ms", "TFLOP/s", "GB/s", "tokens/s", "%peak"))
    rows = []

    def emit(op, path, shape, ms, tflops, gbs, tok, pct):
        rows.append((op, path, shape, ms, tflops, gbs, tok, pct))
        print("%-8s %-7s %-34s %10.3f %9.1f %9.1f %12.0f %7.1f%%" % (op, path, shape, ms, tflops, gbs, tok, pct))

    for B, T in train:
        shape = f"B={B} T={T} Hq={Hq} Hkv={Hkv} d={d}"
        q = rand_nonzero((B, T, Hq, d), device, torch.bfloat16, hi=1.5, gen=gen)
        k = rand_nonzero((B, T, Hkv, d), device, torch.bfloat16, hi=1.5, gen=gen)
        v = rand_nonzero((B, T, Hkv, d), device, torch.bfloat16, hi=2.0, gen=gen)
        dout = rand_nonzero((B, T, Hq, d), device, torch.bfloat16, hi=2.0, gen=gen)
        fwd_flops = 4.0 * B * Hq * T * T * d / 2
        for name, fn in (("sdpa", sdpa_fwd), ("eager", eager_fwd)):
            try:
                with torch.no_grad():
                    ms = median_ms(lambda: fn(q, k, v, device), device, args.warmup, args.reps)
                emit("fwd", name, shape, ms, fwd_flops / ms * 1e-9, 0.0, B * T / ms * 1e3, fwd_flops / ms * 1e-9 / PEAK_TFLOPS * 100)
                qg, kg, vg = (x.clone().requires_grad_(True) for x in (q, k, v))
                out = fn(qg, kg, vg, device)

                def bwd():
                    torch.autograd.grad(out, (qg, kg, vg), dout, retain_graph=True)
                ms = median_ms(bwd, device, args.warmup, args.reps)
                emit("bwd", name, shape, ms, 2.5 * fwd_flops / ms * 1e-9, 0.0, B * T / ms * 1e3,
                     2.5 * fwd_flops / ms * 1e-9 / PEAK_TFLOPS * 100)
                del out, qg, kg, vg
            except torch.OutOfMemoryError:
                print("%-8s %-7s %-34s out of memory" % ("fwd/bwd", name, shape))
            if device == "cuda":
                torch.cuda.empty_cache()
    for B, length, Tmax in decodes:
        shape = f"B={B} len={length} Tmax={Tmax} Hq={Hq} Hkv={Hkv}"
        q = rand_nonzero((B, Hq, d), device, torch.bfloat16, hi=1.5, gen=gen)
        kc = rand_nonzero((B, Tmax, Hkv, d), device, torch.bfloat16, hi=1.5, gen=gen)
        vc = rand_nonzero((B, Tmax, Hkv, d), device, torch.bfloat16, hi=2.0, gen=gen)
        with torch.no_grad():
            ms = median_ms(lambda: decode(q, kc, vc, length, device), device, args.warmup, args.reps)
        nbytes = 2.0 * B * length * Hkv * d * 2 + 2.0 * B * Hq * d * 2
        gbs = nbytes / ms * 1e-6
        emit("decode", "sdpa", shape, ms, 4.0 * B * Hq * length * d / ms * 1e-9, gbs, B / ms * 1e3, gbs / (PEAK_TBS * 1e3) * 100)
    if args.out:
        write_csv(args.out, "op,path,shape,ms,tflops,gbs,tokens_per_s,pct_peak,device",
                  "%s,%s,%s,%.6f,%.3f,%.3f,%.1f,%.3f,%s", [(*r, dev_name) for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
