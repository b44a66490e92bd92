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
import statistics
import time

import torch
import torch.nn.functional as F

HBM_PEAK = 3.35e12


def timer(device, fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        for _ in range(reps):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) * 1e3)
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def rand(shape, device, dtype, lo, hi, gen):
    mag = torch.rand(shape, generator=gen) * (hi - lo) + lo
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
    return (mag * sign).to(device=device, dtype=dtype)


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
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out")
    a = p.parse_args()
    dev = torch.device(a.device)
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
        add("fwd_bf16", name, timer(dev, lambda: F.embedding(ids, emb16), a.warmup, a.reps), idb + 2.0 * N * D * 2)
        add("fwd_f32", name, timer(dev, lambda: F.embedding(ids, emb32), a.warmup, a.reps), idb + 2.0 * N * D * 4)
        touched = 2.0 * U * D * 4
        for det in (False, True):
            torch.use_deterministic_algorithms(det)
            suffix = "_det" if det else ""
            add("bwd_bf16_beta1" + suffix, name,
                timer(dev, lambda: grad.add_(bwd(dx16, ids).float()), a.warmup, a.reps), idb + N * D * 2.0 + touched)
            add("bwd_f32_beta1" + suffix, name,
                timer(dev, lambda: grad.add_(bwd(dx32, ids)), a.warmup, a.reps), idb + N * D * 4.0 + touched)
            add("bwd_bf16_beta0_zero" + suffix, name,
                timer(dev, lambda: bwd(dx16, ids), a.warmup, a.reps), idb + N * D * 2.0 + V * D * 2.0)
        torch.use_deterministic_algorithms(False)

    print("%-24s %-8s %6s %6s %6s %10s %9s %7s" % ("op", "ids", "N", "V", "D", "time_us", "GB/s", "%HBM"))
    for r in rows:
        print("%-24s %-8s %6d %6d %6d %10.1f %9.1f %6.1f%%" % r)
    if a.out:
        with open(a.out, "w") as f:
            f.write("impl,op,ids,N,V,D,time_us,gbs,hbm_pct\n")
            for r in rows:
                f.write("torch,%s,%s,%d,%d,%d,%.3f,%.3f,%.3f\n" % r)
        print("wrote", a.out)


if __name__ == "__main__":
    main()
