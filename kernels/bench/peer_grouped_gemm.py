#!/usr/bin/env python3
"""PyTorch / HF peer of kernels/bench/bench_grouped_gemm.cu: the same ops at the same shapes and routings,
printed with the same table columns (op, tokens, routing, impl, time_ms, TFLOP/s, %989, GB/s, %3350), so
the GPU session can run both side by side.

impls:
  hf         HF transformers JetMoeParallelExperts (a per-expert F.linear loop) and, for fc1+swiglu, HF's
             SwiGLU (ACT2FN["silu"](chunk 0) * chunk 1) exactly as JetMoeMoE.forward runs them
  loop       per-expert torch.matmul loop (backward shapes; wgrad in bf16 out, unlike ours: fp32)
  grouped_mm torch._grouped_mm (one call over all experts) where this torch has it and accepts the layout

Usage (GPU):  python kernels/bench/peer_grouped_gemm.py [--out peer.csv] [--tokens 4096,16384]
      (CPU):  python kernels/bench/peer_grouped_gemm.py --device cpu --tiny
Timing: median of --reps runs after --warmup, torch.cuda.Event on the GPU, perf_counter on the CPU.
"""
import argparse

import torch
import torch.nn.functional as F

from peer_common import add_run_args, device_name, median_ms, select_device, write_csv

PEAK_TFLOPS = 989.0
PEAK_GBS = 3350.0


def offsets_for(rows, num_experts, skewed):
    if skewed:
        frac = [0.35, 0.20, 0.15, 0.12, 0.08, 0.06, 0.04, 0.0][:num_experts]
        sizes = [int(f * rows) for f in frac]
        sizes[0] += rows - sum(sizes)
    else:
        sizes = [rows // num_experts] * num_experts
        sizes[0] += rows - sum(sizes)
    return sizes


def random_bf16(shape, gen, device):
    mag = torch.exp2(torch.empty(shape).uniform_(-6.0, 1.0, generator=gen))
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
    return (mag * sign).to(torch.bfloat16).to(device)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tokens", default="4096,16384")
    p.add_argument("--tiny", action="store_true", help="small shapes (D=64, F=96, Q=64) for a CPU smoke run")
    add_run_args(p, reps=15, warmup=3, out="peer-grouped-gemm.csv")
    args = p.parse_args()

    device = select_device(args.device, "peer_grouped_gemm.py", "--device cpu --tiny")
    D, FF, E, Q = (64, 96, 8, 64) if args.tiny else (2048, 5632, 8, 2048)
    tokens_list = [int(t) for t in args.tokens.split(",")]
    if args.tiny and args.tokens == "4096,16384":
        tokens_list = [64]

    def measure(fn):
        return median_ms(fn, device, args.warmup, args.reps)

    gen = torch.Generator().manual_seed(1)

    from transformers.activations import ACT2FN
    from transformers.models.jetmoe.modeling_jetmoe import JetMoeParallelExperts

    act = ACT2FN["silu"]
    w_in = random_bf16((E, 2 * FF, D), gen, device)
    w_out = random_bf16((E, D, FF), gen, device)
    w_q = random_bf16((E, Q, D), gen, device)
    hf_in = JetMoeParallelExperts(E, D, 2 * FF).to(device=device, dtype=torch.bfloat16)
    hf_out = JetMoeParallelExperts(E, FF, D).to(device=device, dtype=torch.bfloat16)
    hf_q = JetMoeParallelExperts(E, D, Q).to(device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        hf_in.weight.copy_(w_in)
        hf_out.weight.copy_(w_out)
        hf_q.weight.copy_(w_q)
    has_grouped = hasattr(torch, "_grouped_mm")

    dev_name = device_name(device, threads=False)
    print("peer_grouped_gemm: torch %s, device %s, D=%d F=%d E=%d Q=%d, median of %d reps after %d warm-up, "
          "torch._grouped_mm %s" % (torch.__version__, dev_name, D, FF, E, Q, args.reps, args.warmup,
                                     "available" if has_grouped else "absent"))
    header = "%-11s %7s %-8s %-10s %9s %8s %7s %8s %7s" % ("op", "tokens", "routing", "impl", "time_ms", "TFLOP/s",
                                                            "%989", "GB/s", "%3350")
    print("\n" + header)
    rows_out = []

    def report(op, tokens, routing, impl, ms, flop=0.0, nbytes=0.0):
        tflops = flop / (ms * 1e-3) / 1e12 if flop else 0.0
        gbs = nbytes / (ms * 1e-3) / 1e9 if nbytes else 0.0
        rows_out.append((op, tokens, routing, impl, ms, tflops, 100 * tflops / PEAK_TFLOPS, gbs, 100 * gbs / PEAK_GBS))
        print("%-11s %7d %-8s %-10s %9.3f %8.1f %6.1f%% %8.1f %6.1f%%" % rows_out[-1])

    def try_report(op, tokens, routing, impl, fn, flop):
        try:
            ms = measure(fn)
        except (RuntimeError, NotImplementedError, TypeError) as e:  # layout/dtype/device not supported
            print("%-11s %7d %-8s %-10s n/a (%s)" % (op, tokens, routing, impl, str(e).splitlines()[0][:80]))
            return
        report(op, tokens, routing, impl, ms, flop=flop)

    for tokens in tokens_list:
        rows = 2 * tokens
        x = random_bf16((rows, D), gen, device)
        dz = random_bf16((rows, 2 * FF), gen, device)
        dy = random_bf16((rows, D), gen, device)
        hmat = random_bf16((rows, FF), gen, device)
        for routing in ("balanced", "skewed"):
            sizes = offsets_for(rows, E, routing == "skewed")
            ends = torch.tensor(sizes, dtype=torch.int64).cumsum(0).to(torch.int32).to(device)
            starts = [0]
            for s in sizes:
                starts.append(starts[-1] + s)
            r = float(rows)

            def loop(a, w, transpose_w):
                outs = []
                for e in range(E):
                    ae = a[starts[e]:starts[e + 1]]
                    outs.append(ae @ (w[e].t() if transpose_w else w[e]))
                return torch.cat(outs, 0)

            def wgrad_loop(g, a):
                return torch.stack([g[starts[e]:starts[e + 1]].t() @ a[starts[e]:starts[e + 1]] for e in range(E)])

            with torch.no_grad():
                def hf_fc1():
                    zz = hf_in(x, sizes)
                    c = zz.chunk(2, dim=-1)
                    return act(c[0]) * c[1]

                if has_grouped:  # the grouped_mm calls below compute the same products as the loops
                    checks = {
                        "fwd": (lambda: torch._grouped_mm(x, w_in.transpose(-2, -1), offs=ends), lambda: loop(x, w_in, True)),
                        "dgrad": (lambda: torch._grouped_mm(dy, w_out, offs=ends), lambda: loop(dy, w_out, False)),
                        "wgrad": (lambda: torch._grouped_mm(dy.t(), hmat, offs=ends), lambda: wgrad_loop(dy, hmat)),
                    }
                    for what, (fa, fb) in checks.items():
                        try:
                            a_, b_ = fa().float(), fb().float()
                            ok = a_.shape == b_.shape and bool((a_ - b_).norm() <= 1e-2 * b_.norm())
                        except (RuntimeError, NotImplementedError, TypeError) as e:
                            ok = "n/a: %s" % str(e).splitlines()[0][:60]
                        if ok is not True:
                            print("# grouped_mm %s differs from the per-expert loop (%s): its timing is not comparable"
                                  % (what, ok))
                try_report("fc1+swiglu", tokens, routing, "hf", hf_fc1, 2 * r * 2 * FF * D)
                if has_grouped:
                    def gm_fc1():
                        zz = torch._grouped_mm(x, w_in.transpose(-2, -1), offs=ends)
                        c = zz.chunk(2, dim=-1)
                        return act(c[0]) * c[1]
                    try_report("fc1+swiglu", tokens, routing, "grouped_mm", gm_fc1, 2 * r * 2 * FF * D)
                try_report("fc2", tokens, routing, "hf", lambda: hf_out(hmat, sizes), 2 * r * D * FF)
                if has_grouped:
                    try_report("fc2", tokens, routing, "grouped_mm",
                               lambda: torch._grouped_mm(hmat, w_out.transpose(-2, -1), offs=ends), 2 * r * D * FF)
                try_report("fc2.dgrad", tokens, routing, "loop", lambda: loop(dy, w_out, False), 2 * r * D * FF)
                if has_grouped:
                    try_report("fc2.dgrad", tokens, routing, "grouped_mm",
                               lambda: torch._grouped_mm(dy, w_out, offs=ends), 2 * r * D * FF)
                try_report("fc2.wgrad", tokens, routing, "loop", lambda: wgrad_loop(dy, hmat), 2 * r * D * FF)
                if has_grouped:
                    try_report("fc2.wgrad", tokens, routing, "grouped_mm",
                               lambda: torch._grouped_mm(dy.t(), hmat, offs=ends), 2 * r * D * FF)
                try_report("fc1.dgrad", tokens, routing, "loop", lambda: loop(dz, w_in, False), 2 * r * 2 * FF * D)
                if has_grouped:
                    try_report("fc1.dgrad", tokens, routing, "grouped_mm",
                               lambda: torch._grouped_mm(dz, w_in, offs=ends), 2 * r * 2 * FF * D)
                try_report("fc1.wgrad", tokens, routing, "loop", lambda: wgrad_loop(dz, x), 2 * r * 2 * FF * D)
                if has_grouped:
                    try_report("fc1.wgrad", tokens, routing, "grouped_mm",
                               lambda: torch._grouped_mm(dz.t(), x, offs=ends), 2 * r * 2 * FF * D)
                try_report("moa.q", tokens, routing, "hf", lambda: hf_q(x, sizes), 2 * r * Q * D)
                if has_grouped:
                    try_report("moa.q", tokens, routing, "grouped_mm",
                               lambda: torch._grouped_mm(x, w_q.transpose(-2, -1), offs=ends), 2 * r * Q * D)

            # SwiGLU backward by torch autograd in bf16 (reads Z and dH, writes dZ: 5 rows F bf16 values).
            z_leaf = dz.clone().requires_grad_(True)

            def swiglu_bwd():
                c = z_leaf.chunk(2, dim=-1)
                hh = act(c[0]) * c[1]
                return torch.autograd.grad(hh, z_leaf, hmat)

            ms = measure(swiglu_bwd)
            report("swiglu.bwd", tokens, routing, "hf", ms, nbytes=r * FF * 2.0 * 5)

    write_csv(args.out, "op,tokens,routing,impl,time_ms,tflops,pct_989,gbs,pct_3350,device",
              "%s,%d,%s,%s,%.6f,%.3f,%.3f,%.3f,%.3f,%s", [row + (dev_name,) for row in rows_out], announce=False)
    print("\nwrote %s" % args.out)


if __name__ == "__main__":
    main()
