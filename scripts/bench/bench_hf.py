#!/usr/bin/env python3
"""The peer of bench/bench_forward.cpp: Hugging Face transformers' JetMoeForCausalLM on PyTorch (CPU), measured
the same way on the same weights and the same prompt ids.

    /opt/oracle-venv/bin/python scripts/bench/bench_hf.py --model DIR --batch 4 --prompt 128 --new 32 \
        --threads 2 --attn sdpa --reference-json ours.json --json hf.json

DIR is what `jetmoe-bench-forward --export DIR --seed S` wrote (fp32 config.json + model.safetensors of the
ModelWeights::init_random weights of seed S). The prompt ids come from the same counter-based generator as the C++
(prompt_id below), keyed by --seed; with --reference-json the ids and the greedy tokens are checked against the C++
run's JSON.

Measured (wall time, median of --repeats after --warmup untimed rounds, float32, eval(), torch.inference_mode()):
  prefill   model(input_ids, past_key_values=DynamicCache(), use_cache=True): logits of all B*T positions (as ours)
  decode    after that prefill, --new single-token steps model(next[:, None], past_key_values=cache) with
            logits[:, -1].argmax(-1) (greedy); tokens/s = B * new / time
  generate  model.generate(max_new_tokens=new, do_sample=False, use_cache=True, EOS disabled) end to end
plus this process's peak RSS (getrusage ru_maxrss) and CPU time.
"""
import argparse
import json
import os
import platform
import resource
import sys
import time

MASK = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def prompt_id(seed, b, t, vocab):
    """Same as prompt_id in bench/bench_forward.cpp."""
    key = ((seed << 32) & MASK) ^ (b << 20) ^ t
    return 3 + splitmix64(key) % (vocab - 3)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    return 0.0


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def median(v):
    s = sorted(v)
    n = len(s)
    if n == 0:
        return 0.0
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class Samples:
    def __init__(self):
        self.wall, self.cpu = [], []

    def add(self, w, c):
        self.wall.append(w)
        self.cpu.append(c)

    def to_json(self, tokens):
        w = median(self.wall)
        return {"tokens": tokens, "median_seconds": w, "tokens_per_second": tokens / w if w > 0 else 0.0,
                "median_cpu_seconds": median(self.cpu), "cpu_per_wall": median(self.cpu) / w if w > 0 else 0.0,
                "seconds": self.wall, "cpu_seconds": self.cpu}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory written by jetmoe-bench-forward --export")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--generate-repeats", type=int, default=3, help="timed model.generate() calls")
    ap.add_argument("--seed", type=int, default=1234, help="prompt ids (the weights come from --model)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    ap.add_argument("--attn", default="sdpa", choices=["eager", "sdpa"])
    ap.add_argument("--no-generate", action="store_true", help="skip the model.generate() measurement")
    ap.add_argument("--reference-json", help="the C++ run's --json: check prompt ids and greedy tokens")
    ap.add_argument("--json", help="write the raw results here")
    args = ap.parse_args()

    rss_start = current_rss_mib()
    import torch
    import transformers
    from transformers import DynamicCache, GenerationConfig, JetMoeForCausalLM

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    rss_after_import = current_rss_mib()

    t0 = time.perf_counter()
    model = JetMoeForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation=args.attn).eval()
    setup_seconds = time.perf_counter() - t0
    rss_after_setup = current_rss_mib()
    cfg = model.config
    # EOS and padding disabled: generate() always adds exactly --new tokens (as the C++ run with eos_id = -1).
    model.generation_config = GenerationConfig(bos_token_id=cfg.bos_token_id, eos_token_id=None, pad_token_id=None,
                                               do_sample=False, use_cache=True)

    B, T, N, V = args.batch, args.prompt, args.new, cfg.vocab_size
    ids = torch.tensor([[prompt_id(args.seed, b, t, V) for t in range(T)] for b in range(B)], dtype=torch.long)
    mask = torch.ones_like(ids)

    def prefill():
        cache = DynamicCache(config=cfg)
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        return out.past_key_values, out.logits[:, -1, :].argmax(-1)

    def decode(cache, nxt):
        tokens = [nxt]
        for _ in range(N):
            out = model(input_ids=nxt[:, None], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            nxt = out.logits[:, -1, :].argmax(-1)
            tokens.append(nxt)
        return torch.stack(tokens, dim=1)

    pre_s, dec_s, gen_s = Samples(), Samples(), Samples()
    greedy = None
    gen_tokens = None
    with torch.inference_mode():
        for r in range(args.warmup + args.repeats):
            w0, c0 = time.perf_counter(), cpu_seconds()
            cache, nxt = prefill()
            pw, pc = time.perf_counter() - w0, cpu_seconds() - c0
            w0, c0 = time.perf_counter(), cpu_seconds()
            toks = decode(cache, nxt) if N > 0 else nxt[:, None]
            dw, dc = time.perf_counter() - w0, cpu_seconds() - c0
            del cache
            if r >= args.warmup:
                pre_s.add(pw, pc)
                dec_s.add(dw, dc)
            if r == 0:
                greedy = toks.tolist()
        if not args.no_generate and N > 0 and args.generate_repeats > 0:
            for r in range(args.warmup + args.generate_repeats):
                w0, c0 = time.perf_counter(), cpu_seconds()
                out = model.generate(ids, attention_mask=mask, max_new_tokens=N, min_new_tokens=N, do_sample=False,
                                     use_cache=True)
                gw, gc = time.perf_counter() - w0, cpu_seconds() - c0
                if r >= args.warmup:
                    gen_s.add(gw, gc)
                gen_tokens = out[:, T:].tolist()
    peak = peak_rss_mib()

    env = {
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "attn_implementation": args.attn, "blas": "MKL" if torch.backends.mkl.is_available() else "?",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""), "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", ""),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", ""),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", ""),
        "cores_online": os.cpu_count(),
    }
    print(f"\nbench_hf.py: transformers {transformers.__version__} JetMoeForCausalLM on torch {torch.__version__} "
          f"(CPU, {env['blas']}, {env['cpu_capability']}), float32, attn_implementation={args.attn}")
    print(f"threads: torch {env['torch_threads']} (interop {env['torch_interop_threads']}); "
          f"OMP_NUM_THREADS={env['OMP_NUM_THREADS'] or '(unset)'} MKL_NUM_THREADS={env['MKL_NUM_THREADS'] or '(unset)'} "
          f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE'] or '(unset)'}; cores online {env['cores_online']}")
    print(f"model: {args.model} (L={cfg.num_hidden_layers} D={cfg.hidden_size} E={cfg.num_local_experts} "
          f"k={cfg.num_experts_per_tok} F={cfg.intermediate_size} V={V}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
    print(f"batch {B}, prompt {T}, new tokens {N}; median of {args.repeats} (generate: {args.generate_repeats}) "
          f"after {args.warmup} warm-up; "
          f"setup {setup_seconds:.2f} s\n")
    print(f"  {'phase':<10} {'tokens':>10} {'median ms':>12} {'tokens/s':>12} {'cpu/wall':>9}")
    for name, tokens, s in (("prefill", B * T, pre_s), ("decode", B * N, dec_s), ("generate", B * N, gen_s)):
        if s.wall:
            w = median(s.wall)
            print(f"  {name:<10} {tokens:>10} {1e3 * w:>12.2f} {tokens / w:>12.1f} {median(s.cpu) / w:>9.2f}")
    print(f"\npeak RSS {peak:.1f} MiB (at start {rss_start:.1f}, after import {rss_after_import:.1f}, after load "
          f"{rss_after_setup:.1f}); process CPU {cpu_seconds():.2f} s")
    print("greedy tokens of sequence 0: " + " ".join(str(t) for t in greedy[0][:12]) + (" ..." if len(greedy[0]) > 12 else ""))

    checks = {}
    if gen_tokens is not None:
        checks["generate_agrees_with_decode_loop"] = all(
            gen_tokens[b] == greedy[b][:N] for b in range(B))
        print(f"model.generate() tokens {'match' if checks['generate_agrees_with_decode_loop'] else 'DIFFER FROM'} "
              f"the manual decode loop's")
    if args.reference_json:
        with open(args.reference_json) as f:
            ref = json.load(f)
        checks["same_prompt_ids"] = ref["input_ids_first_row"] == ids[0].tolist()
        ours = ref["greedy_tokens"]
        first_diff = []
        for b in range(B):
            d = next((i for i, (x, y) in enumerate(zip(ours[b], greedy[b])) if x != y), None)
            first_diff.append(d)
        agree = [len(greedy[b]) if first_diff[b] is None else first_diff[b] for b in range(B)]
        checks["greedy_tokens_agree"] = all(d is None for d in first_diff)
        checks["greedy_agreeing_prefix"] = agree
        print(f"vs {args.reference_json}: prompt ids {'identical' if checks['same_prompt_ids'] else 'DIFFERENT'}; "
              f"greedy tokens agree for the first {agree} of {len(greedy[0])} per sequence"
              f"{'' if checks['greedy_tokens_agree'] else ' (a near-tie can flip one token in fp32; later tokens then differ)'}")

    result = {
        "implementation": f"hf-transformers-{args.attn}",
        "environment": env,
        "model": {"directory": args.model, "parameters": sum(p.numel() for p in model.parameters())},
        "batch": B, "prompt": T, "new_tokens": N, "repeats": args.repeats, "warmup": args.warmup,
        "generate_repeats": args.generate_repeats,
        "setup_seconds": setup_seconds,
        "prefill": pre_s.to_json(B * T), "decode": dec_s.to_json(B * N),
        "peak_rss_mib": peak, "rss_at_start_mib": rss_start, "rss_after_import_mib": rss_after_import,
        "rss_after_setup_mib": rss_after_setup, "process_cpu_seconds": cpu_seconds(),
        "input_ids_first_row": ids[0].tolist(), "greedy_tokens": greedy, "checks": checks,
    }
    if gen_s.wall:
        result["generate"] = gen_s.to_json(B * N)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"raw results: {args.json}")
    ok = checks.get("same_prompt_ids", True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
