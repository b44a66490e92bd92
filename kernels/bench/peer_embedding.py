"""PyTorch peer of kernels/bench/bench_embedding.cu: the same embedding operations at the same shapes,
timed the same way (median after warm-up; CUDA events on a GPU), printing the same table columns
(time, GB/s of the same minimal traffic, % of H100 SXM HBM3 peak).

  GPU session: python kernels/bench/peer_embedding.py --out peer-embedding.csv   (N = 16384, V = 32000, D = 2048)
  CPU smoke:   python kernels/bench/peer_embedding.py --device cpu --tokens 64 --vocab 100 --hidden 32 --reps 3

Ops (HF JetMoeModel.embed_tokens is a plain nn.Embedding, padding_idx None):
  fwd_bf16 / fwd_f32       F.embedding(ids, weight)
  bwd_bf16_beta1           the embedding backward (torch.ops.aten.embedding_dense_backward) of a bf16 dx into a
                           bf16 gradient, then .float() added to an fp32 accumulator (as a trainer with fp32
                           master gradients would do); our kernel reads bf16 dx and writes fp32 directly
  bwd_f32_beta1            embedding_dense_backward of an fp32 dx, added to the fp32 accumulator
  bwd_*_det                the same under torch.use_deterministic_algorithms(True)
  bwd_bf16_beta0_zero      embedding_dense_backward alone (it writes the whole V x D gradient: the full overwrite)
Uniform ids and Zipf-like ids (P(k) ~ 1/(k+1)), as in the C++ benchmark.
"""
import argparse

import torch
import torch.nn.functional as F

from peer_common import add_run_args, median_us, print_table, rand_nonzero as rand, select_device, write_csv

HBM_PEAK = 3.35e12


def make_ids(n, v, zipf, gen):
    if not zipf:
        return torch.randint(0, v, (n,), generator=gen)
    weights = 1.0 / torch.arange(1, v + 1, dtype=torch.float64)
    return torch.multinomial(weights, n, replacement=True, generator=gen)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=2048)
    add_run_args(p, reps=50, warmup=5)
    a = p.parse_args()
    dev = select_device(a.device, "peer_embedding.py", "--device cpu --tokens 64 --vocab 100 --hidden 32 --reps 3")
    N, V, D = a.tokens, a.vocab, a.hidden
    gen = torch.Generator().manual_seed(1234)
    emb32 = rand((V, D), dev, torch.float32, 1.0 / 64, 0.05, gen)
    emb16 = emb32.to(torch.bfloat16)
    dx32 = rand((N, D), dev, torch.float32, 1.0 / 64, 1.0, gen)
    dx16 = dx32.to(torch.bfloat16)
    grad = torch.zeros(V, D, device=dev, dtype=torch.float32)
    rows = []
    print("peer_embedding: torch %s on %s, median of %d runs after %d warm-up runs" % (torch.__version__, dev, a.reps, a.warmup))

    def add(op, ids_name, us, nbytes):
        gbs = nbytes / (us * 1e-6) / 1e9
        rows.append((op, ids_name, N, V, D, us, gbs, 100.0 * gbs * 1e9 / HBM_PEAK))

    def bwd(dx, ids):
        return torch.ops.aten.embedding_dense_backward(dx, ids, V, -1, False)

    for zipf in (False, True):
        name = "zipf" if zipf else "uniform"
        ids = make_ids(N, V, zipf, gen).to(dev)
        U = int(torch.unique(ids).numel())
        print("ids %s: %d distinct of %d" % (name, U, V))
        idb = N * 8  # int64 ids in PyTorch
        add("fwd_bf16", name, median_us(lambda: F.embedding(ids, emb16), dev, a.warmup, a.reps), idb + 2.0 * N * D * 2)
        add("fwd_f32", name, median_us(lambda: F.embedding(ids, emb32), dev, a.warmup, a.reps), idb + 2.0 * N * D * 4)
        touched = 2.0 * U * D * 4
        for det in (False, True):
            torch.use_deterministic_algorithms(det)
            suffix = "_det" if det else ""
            add("bwd_bf16_beta1" + suffix, name,
                median_us(lambda: grad.add_(bwd(dx16, ids).float()), dev, a.warmup, a.reps),
                idb + N * D * 2.0 + touched)
            add("bwd_f32_beta1" + suffix, name,
                median_us(lambda: grad.add_(bwd(dx32, ids)), dev, a.warmup, a.reps), idb + N * D * 4.0 + touched)
            add("bwd_bf16_beta0_zero" + suffix, name,
                median_us(lambda: bwd(dx16, ids), dev, a.warmup, a.reps), idb + N * D * 2.0 + V * D * 2.0)
        torch.use_deterministic_algorithms(False)

    print_table("%-24s %-8s %6s %6s %6s %10s %9s %7s", ("op", "ids", "N", "V", "D", "time_us", "GB/s", "%HBM"),
                "%-24s %-8s %6d %6d %6d %10.1f %9.1f %6.1f%%", rows)
    if a.out:
        write_csv(a.out, "impl,op,ids,N,V,D,time_us,gbs,hbm_pct", "torch,%s,%s,%d,%d,%d,%.3f,%.3f,%.3f", rows)


if __name__ == "__main__":
    main()
