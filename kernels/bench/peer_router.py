"""PyTorch / HF transformers peer of kernels/bench/bench_router.cu: the same router operations at the
same shapes, timed the same way (median after warm-up; CUDA events on a GPU), printing the same table
columns (time, GB/s of the same minimal traffic, % of H100 SXM HBM3 peak, TFLOP/s, % of bf16 peak).

  GPU session: python kernels/bench/peer_router.py --out peer-router.csv       (N = 4096, 16384; D = 2048)
  CPU smoke:   python kernels/bench/peer_router.py --device cpu --tokens 64 --hidden 32 --reps 3

Ops (HF JetMoe code paths where HF has them):
  router_fwd_bf16     JetMoeTopKGating.forward (bf16 linear, topk, softmax, expert_size .tolist() sync, sort)
  aux_loss+grad       original JetMoE aux loss (switch + z) forward and autograd backward
  gather_bf16         layer_input[batch_index]
  gather_bwd          index_add of the grouped rows back to tokens (fp32)
  combine_bf16        expert_outputs * batch_gates, zeros.index_add, + bias (JetMoeMoE.forward tail)
  combine_bwd_bf16    dy = dout[batch_index] * gates, dgate = (dout[batch_index] * y).sum(-1), dbias = dout.sum(0)
  router_bwd_bf16     dW = dlogits^T u, du = dlogits W (fp32)
"""
import argparse

import torch

from transformers.models.jetmoe.modeling_jetmoe import JetMoeTopKGating

from peer_common import add_run_args, device_name, median_us, print_table, select_device, write_csv
from peer_common import rand_nonzero as rand

HBM_PEAK = 3.35e12
BF16_PEAK = 989e12


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--tokens", type=int, nargs="*", default=[4096, 16384])
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    add_run_args(p, reps=50, warmup=5)
    a = p.parse_args()
    dev = select_device(a.device, "peer_router.py", "--device cpu --tokens 64 --hidden 32 --reps 3")
    E, k, D = a.experts, a.top_k, a.hidden
    C = D
    gen = torch.Generator().manual_seed(1234)
    print("peer_router.py: torch %s on %s, median of %d runs after %d warm-up runs"
          % (torch.__version__, device_name(dev), a.reps, a.warmup))
    rows = []
    for N in a.tokens:
        nk = N * k
        u = rand((N, D), dev, torch.bfloat16, gen=gen)
        gate = JetMoeTopKGating(D, E, k).to(device=dev, dtype=torch.bfloat16)
        with torch.no_grad():
            gate.layer.weight.copy_(rand((E, D), dev, torch.bfloat16, hi=0.05, gen=gen))
        with torch.no_grad():
            index_sorted, batch_index, batch_gates, expert_size, logits = gate(u)
        x = rand((N, C), dev, torch.bfloat16, gen=gen)
        y = rand((nk, C), dev, torch.bfloat16, gen=gen)
        bias = rand((C,), dev, torch.bfloat16, gen=gen)
        dout = rand((N, C), dev, torch.bfloat16, gen=gen)
        dlogits = rand((N, E), dev, torch.float32, lo=1e-3, hi=0.1, gen=gen)
        w32 = gate.layer.weight.float()
        ids = logits.topk(k, dim=1).indices

        def aux():
            xl = logits.detach().clone().requires_grad_(True)
            probs = torch.softmax(xl, dim=1)
            sel = torch.zeros(N, E, device=dev).scatter(1, ids, 1.0)
            P = probs.mean(0)
            f = sel.sum(0) / (N * k)
            switch = E * (P * f).sum()
            z = (torch.logsumexp(xl, dim=1) ** 2).mean()
            (0.01 * switch + 0.001 * z).backward()

        def combine():
            eo = y * batch_gates[:, None]
            zeros = torch.zeros((N, C), dtype=eo.dtype, device=dev)
            return zeros.index_add(0, batch_index, eo) + bias

        def combine_bwd():
            g = dout[batch_index]
            dy = g * batch_gates[:, None]
            dgate = (g.float() * y.float()).sum(-1)
            dbias = dout.float().sum(0)
            return dy, dgate, dbias

        def router_bwd():
            return dlogits.t() @ u.float(), dlogits @ w32

        bf, f4 = 2.0, 4.0
        ops = [
            ("router_fwd_bf16 (logits+topk+plan)", D, N * D * bf + E * D * bf + N * E * f4 + nk * (4 * 4 + 2 + 4),
             2.0 * N * D * E, lambda: gate(u)),
            ("aux_loss+grad", E, N * E * f4 * 4 + nk * 4.0 * 2, 0, aux),
            ("gather_bf16", C, 2.0 * nk * C * bf, 0, lambda: x[batch_index]),
            ("gather_bwd_bf16->f32", C, nk * C * bf + N * C * f4, 0,
             lambda: torch.zeros((N, C), device=dev).index_add_(0, batch_index, y.float())),
            ("combine_bf16", C, nk * C * bf + N * C * bf, 0, combine),
            ("combine_bwd_bf16 (+dbias)", C, 2.0 * N * C * bf + 2.0 * nk * C * bf, 2.0 * nk * C, combine_bwd),
            ("router_bwd_bf16 (dW + du f32)", D, N * D * bf + 2.0 * N * D * f4, 4.0 * N * D * E, router_bwd),
        ]
        for op, c, nbytes, flops, fn in ops:
            with torch.no_grad() if op != "aux_loss+grad" else torch.enable_grad():
                us = median_us(fn, dev, a.warmup, a.reps)
            gbs = nbytes / (us * 1e-6) / 1e9
            tf = flops / (us * 1e-6) / 1e12
            rows.append((op, N, c, us, gbs, 100 * gbs * 1e9 / HBM_PEAK, tf, 100 * tf * 1e12 / BF16_PEAK))
    print_table("%-36s %7s %6s %10s %9s %7s %9s %7s", ("op", "N", "D/C", "time_us", "GB/s", "%HBM", "TFLOP/s", "%bf16"),
                "%-36s %7d %6d %10.2f %9.1f %7.1f %9.2f %7.2f", rows)
    if a.out:
        write_csv(a.out, "op,N,C,time_us,GB_s,pct_hbm,TFLOP_s,pct_bf16", "%s,%d,%d,%.3f,%.2f,%.2f,%.4f,%.4f", rows)


if __name__ == "__main__":
    main()
