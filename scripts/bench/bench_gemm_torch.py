#!/usr/bin/env python3
"""The GEMM shapes of bench/bench_gemm.cpp through torch.nn.functional.linear (PyTorch CPU, float32): what the HF
peer's GEMMs can reach on this machine with the same thread count.

    OMP_NUM_THREADS=1 /opt/oracle-venv/bin/python scripts/bench/bench_gemm_torch.py --threads 1 [--json FILE]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

SHAPES = [
    (1, 512, 32000, "lm_head, decode b1"), (4, 512, 32000, "lm_head, decode b4"),
    (128, 512, 32000, "lm_head, prefill b1"), (512, 512, 32000, "lm_head, prefill b4"),
    (1, 512, 1536, "MoE W_in, 1 row"), (32, 512, 1536, "MoE W_in, 32 rows"), (128, 512, 1536, "MoE W_in, 128 rows"),
    (1, 768, 512, "MoE W_out, 1 row"), (128, 768, 512, "MoE W_out, 128 rows"), (1, 512, 512, "MoA W_q, 1 row"),
    (128, 512, 512, "MoA W_q, 128 rows"), (512, 512, 1024, "kv_proj, prefill b4"), (1024, 1024, 1024, "square 1024"),
]


def median_seconds(repeats, f):
    f()
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    return sorted(t)[len(t) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"bench_gemm_torch.py: torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{torch.backends.cpu.get_cpu_capability()}, median of {args.repeats}\n")
    print(f"  {'shape':<22} {'M':>5} {'K':>5} {'N':>6} {'linear ms':>10} {'GFLOP/s':>9} {'W GB/s':>9}")
    out = []
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for M, K, N, what in SHAPES:
            x = torch.randn(M, K, generator=g) * 0.05
            w = torch.randn(N, K, generator=g) * 0.05
            t = median_seconds(args.repeats, lambda: F.linear(x, w))
            flops, wbytes = 2.0 * M * K * N, 4.0 * K * N
            print(f"  {what:<22} {M:>5} {K:>5} {N:>6} {1e3 * t:>10.3f} {flops / t * 1e-9:>9.1f} {wbytes / t * 1e-9:>9.1f}")
            out.append({"what": what, "M": M, "K": K, "N": N, "linear_seconds": t, "gflops": flops / t * 1e-9,
                        "weight_gbytes_per_s": wbytes / t * 1e-9})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
