"""Shared by the PyTorch / HF peers of the kernel benchmarks (kernels/bench/peer_*.py): the options every
peer takes, the device choice, the timing (median after a warm-up: CUDA events on a GPU, perf_counter on
the CPU, the way the C++ benches time their launches) and the table / CSV output.

The peers are run as scripts (python kernels/bench/peer_X.py ...), so this directory is on sys.path and
they import this module as `import peer_common`.
"""
import statistics
import sys
import time

import torch


def add_run_args(parser, reps, warmup, out=None, out_help=None):
    """--reps, --warmup and --out (after the peer's own options, as every peer lists them)."""
    parser.add_argument("--reps", type=int, default=reps)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--out", default=out, help=out_help)


def add_block_args(parser):
    """--device and a JetMoE block's sizes, JetMoE-8B's by default (peer_layer.py, peer_model.py)."""
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--kv-heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--ffn", type=int, default=5632)
    parser.add_argument("--attn", default=None, help="eager or sdpa (default: sdpa on cuda, eager on cpu)")


def jetmoe_config(hidden, experts, top_k, kv_heads, head_dim, ffn, attn, **sizes):
    """HF's JetMoeConfig of a block's sizes plus `sizes` (vocab, layers, context, ...), attention
    implementation `attn` (eager or sdpa). Also kernels/tests/torch_check.py's."""
    from transformers.models.jetmoe.configuration_jetmoe import JetMoeConfig
    cfg = JetMoeConfig(hidden_size=hidden, num_local_experts=experts, num_experts_per_tok=top_k,
                       num_key_value_heads=kv_heads, kv_channels=head_dim, intermediate_size=ffn,
                       rope_theta=10000.0, attn_implementation=attn, **sizes)
    cfg._attn_implementation = attn
    return cfg


def block_config(a, device, **sizes):
    """(JetMoeConfig, attention implementation) of add_block_args' sizes plus `sizes` (vocab, layers,
    context, ...): sdpa on cuda, eager on cpu unless --attn says otherwise."""
    attn = a.attn or ("sdpa" if device.type == "cuda" else "eager")
    return jetmoe_config(a.hidden, a.experts, a.top_k, a.kv_heads, a.head_dim, a.ffn, attn, **sizes), attn


def select_device(name, prog, smoke="--device cpu"):
    """torch.device(name); exits 77 (as the C++ benches do) when CUDA is asked for and there is none."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("%s: no CUDA device (use %s for a smoke test); exit 77" % (prog, smoke))
        sys.exit(77)
    return device


def device_name(device, threads=True):
    """The GPU's name, or "cpu (N threads)" ("cpu" when threads is False)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu (%d threads)" % torch.get_num_threads() if threads else "cpu"


def _median(fn, device, warmup, reps, per_ms):
    for _ in range(warmup):
        fn()
    times = []
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        for _ in range(reps):
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) * per_ms)
    else:
        per_s = 1e3 * per_ms
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * per_s)
    return statistics.median(times)


def median_ms(fn, device, warmup, reps):
    """Runs fn warmup times, then times reps calls one by one; the median in milliseconds."""
    return _median(fn, device, warmup, reps, 1.0)


def median_us(fn, device, warmup, reps):
    """median_ms in microseconds."""
    return _median(fn, device, warmup, reps, 1e3)


def rand_nonzero(shape, device, dtype, lo=1.0 / 64, hi=1.0, gen=None):
    """Uniform magnitudes in [lo, hi] with random signs (never zero), drawn on the CPU from gen."""
    mag = torch.rand(shape, generator=gen) * (hi - lo) + lo
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
    return (mag * sign).to(device=device, dtype=dtype)


def print_table(header_fmt, names, row_fmt, rows, lead=""):
    """The header (names formatted by header_fmt, after lead) and one line per row (row_fmt % row)."""
    print(lead + header_fmt % tuple(names))
    for r in rows:
        print(row_fmt % tuple(r))


def write_csv(path, header, row_fmt, rows, announce=True):
    """Writes the header line and one line per row (row_fmt % row); says so unless announce is False."""
    with open(path, "w") as f:
        f.write(header + "\n")
        for r in rows:
            f.write(row_fmt % tuple(r) + "\n")
    if announce:
        print("wrote", path)


# ---- the throughput table of peer_layer.py and peer_model.py (bench_timing.cuh's in the C++ benches) ----

HBM_PEAK = 3.35e12  # bytes/s, H100 SXM HBM3
BF16_PEAK = 989e12  # FLOP/s, H100 SXM dense bf16


def layer_flops_per_token(D, E, k, Hkv, d, F, seq):
    """jk_layer_flops_per_token: 2 * active matmul params + causal attention 2 * 2 * (T/2) * Hq * d."""
    A = Hkv * d
    params = 2 * E * D + k * A * D + 2 * A * D + k * D * A + k * 2 * F * D + k * D * F
    return 2.0 * params + 2.0 * 2.0 * (seq / 2.0) * (k * Hkv) * d


def decode_block_bytes(D, E, k, Hkv, d, F, B, context):
    """jkb::decode_block_bytes: a block's bandwidth bound for one decode step of B sequences."""
    A, experts = Hkv * d, min(E, B * k)
    weights = 2.0 * (experts * 2 * A * D + 2 * A * D + 2 * E * D + experts * 3 * F * D + 4 * D)
    return weights + B * context * 2.0 * A * 2.0


def throughput_row(op, B, T, ms, tokens, flops, nbytes):
    """(op, B, T, time_ms, tokens_per_s, TFLOP/s, MFU%, GB/s, HBM%) as jkb::throughput_row."""
    tf, gbs = flops / (ms * 1e-3) / 1e12, nbytes / (ms * 1e-3) / 1e9
    return (op, B, T, ms, tokens / (ms * 1e-3), tf, 100 * tf * 1e12 / BF16_PEAK, gbs, 100 * gbs * 1e9 / HBM_PEAK)


def report_throughput(rows, out):
    """The table, the peaks, and the CSV when out is set (jkb::report_throughput's columns)."""
    print_table("%-16s %5s %6s %11s %13s %9s %7s %9s %7s",
                ("op", "B", "T", "time_ms", "tokens_per_s", "TFLOP/s", "MFU%", "GB/s", "HBM%"),
                "%-16s %5d %6d %11.3f %13.1f %9.1f %7.1f %9.1f %7.1f", rows, lead="\n")
    print("peaks: bf16 dense 989 TFLOP/s, HBM3 3.35 TB/s (H100 SXM)")
    if out:
        write_csv(out, "op,B,T,time_ms,tokens_per_s,tflops,mfu_pct,gbs,hbm_pct",
                  "%s,%d,%d,%.6f,%.3f,%.3f,%.3f,%.3f,%.3f", rows, announce=False)
