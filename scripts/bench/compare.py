#!/usr/bin/env python3
"""Side-by-side table of a bench/results/<run>/ directory written by scripts/bench/run_cpu_bench.sh.

    python3 scripts/bench/compare.py bench/results/<run>

Reads jetmoe-<coretype>-t<threads>-b<batch>.json and hf-<attn>-t<threads>-b<batch>.json, prints Markdown tables
(tokens/s of each implementation, ratios ours/HF, peak RSS and its ratio) and writes summary.csv next to them.
Ratios are against the faster HF attention implementation of the same case ("HF best"), and against each.
"""
import csv
import glob
import json
import os
import re
import sys

PHASES = ("prefill", "decode", "generate")


def load(directory):
    runs = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        m = re.match(r"(jetmoe|hf)-(.+)-t(\d+)-b(\d+)\.json$", os.path.basename(path))
        if not m:
            continue
        impl, variant, threads, batch = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
        with open(path) as f:
            runs[(threads, batch, impl, variant)] = json.load(f)
    return runs


def tps(run, phase, stat="median"):
    """Tokens/s from the median time of the run's samples, or ("best") from its fastest sample."""
    if not run or phase not in run:
        return 0.0
    if stat == "median":
        return run[phase].get("tokens_per_second", 0.0)
    t = min(run[phase]["seconds"])
    return run[phase]["tokens"] / t if t > 0 else 0.0


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    runs = load(directory)
    if not runs:
        sys.exit(f"compare.py: no results in {directory}")
    cases = sorted({(t, b) for (t, b, _, _) in runs})
    ours_variants = sorted({v for (_, _, i, v) in runs if i == "jetmoe"}, key=lambda v: (v != "default", v))
    hf_variants = sorted({v for (_, _, i, v) in runs if i == "hf"})
    rows = []

    any_run = next(iter(runs.values()))
    print(f"# jetmoe vs HF transformers (CPU): prompt {any_run['prompt']}, {any_run['new_tokens']} new tokens, "
          f"{any_run['repeats']} prefill/decode rounds and {any_run.get('generate_repeats', any_run['repeats'])} "
          f"generate calls after {any_run['warmup']} warm-up\n")
    envs = [r["environment"] for (t, b, i, v), r in runs.items() if i == "jetmoe"]
    if envs:
        e = envs[0]
        print(f"ours: Kokkos {e['kokkos_backend']} {e['kokkos_version']} (concurrency {e['kokkos_concurrency']}), "
              f"{e['build_type']} build, {e['compiler']}, BLAS {e['blas']} ({e.get('openblas', '')})")
    henvs = [r["environment"] for (t, b, i, v), r in runs.items() if i == "hf"]
    if henvs:
        e = henvs[0]
        print(f"HF: transformers {e['transformers']}, torch {e['torch']} ({e['blas']}, {e['cpu_capability']}), "
              f"float32, eval, inference_mode")
    print("threads: OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = MKL_NUM_THREADS = torch.set_num_threads = t\n")

    for stat in ("median", "best"):
        if stat == "median":
            print("Tokens/s from the MEDIAN time of each run's samples:\n")
        else:
            print("\nTokens/s from the BEST (fastest) sample of each run: less sensitive to other users of this "
                  "shared machine:\n")
        header = ["threads", "batch", "phase"] + [f"ours {v}" for v in ours_variants] + \
                 [f"HF {v}" for v in hf_variants] + [f"ours {v} / HF best" for v in ours_variants]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for (t, b) in cases:
            for phase in PHASES:
                ours = [tps(runs.get((t, b, "jetmoe", v)), phase, stat) for v in ours_variants]
                hf = [tps(runs.get((t, b, "hf", v)), phase, stat) for v in hf_variants]
                if not any(ours) and not any(hf):
                    continue
                best = max(hf) if hf else 0.0
                ratios = [o / best if best else 0.0 for o in ours]
                print(f"| {t} | {b} | {phase} | " + " | ".join(f"{x:.1f}" for x in ours + hf) + " | " +
                      " | ".join(f"{r:.2f}x" for r in ratios) + " |")
                for v, o in zip(ours_variants, ours):
                    for hv, h in zip(hf_variants, hf):
                        rows.append({"threads": t, "batch": b, "phase": f"{phase}_{stat}", "ours": f"jetmoe-{v}",
                                     "peer": f"hf-{hv}", "ours_tokens_per_s": round(o, 3),
                                     "peer_tokens_per_s": round(h, 3), "ratio": round(o / h, 4) if h else ""})

    print("\nPeak RSS (MiB, whole process, getrusage ru_maxrss; in brackets: peak minus the RSS before the model "
          "existed, i.e. after start-up / imports):\n")
    header = ["threads", "batch"] + [f"ours {v}" for v in ours_variants] + [f"HF {v}" for v in hf_variants] + \
             ["ours / HF (min)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (t, b) in cases:
        ours = [runs.get((t, b, "jetmoe", v)) for v in ours_variants]
        hf = [runs.get((t, b, "hf", v)) for v in hf_variants]
        cells = []
        for r in ours:
            cells.append(f"{r['peak_rss_mib']:.0f} ({r['peak_rss_mib'] - r['rss_at_start_mib']:.0f})" if r else "-")
        for r in hf:
            cells.append(f"{r['peak_rss_mib']:.0f} ({r['peak_rss_mib'] - r['rss_after_import_mib']:.0f})" if r else "-")
        o = max((r["peak_rss_mib"] for r in ours if r), default=0.0)
        h = min((r["peak_rss_mib"] for r in hf if r), default=0.0)
        ratio = f"{o / h:.2f}" if h else "-"
        print(f"| {t} | {b} | " + " | ".join(cells) + f" | {ratio} |")
        for v, r in zip(ours_variants, ours):
            for hv, hr in zip(hf_variants, hf):
                if r and hr:
                    rows.append({"threads": t, "batch": b, "phase": "peak_rss_mib", "ours": f"jetmoe-{v}",
                                 "peer": f"hf-{hv}", "ours_tokens_per_s": round(r["peak_rss_mib"], 1),
                                 "peer_tokens_per_s": round(hr["peak_rss_mib"], 1),
                                 "ratio": round(r["peak_rss_mib"] / hr["peak_rss_mib"], 4)})

    print("\nSanity (same weights, same ids):")
    for (t, b) in cases:
        for hv in hf_variants:
            r = runs.get((t, b, "hf", hv))
            if r and "checks" in r:
                c = r["checks"]
                print(f"- t{t} b{b} HF {hv}: prompt ids {'identical' if c.get('same_prompt_ids') else 'DIFFERENT'}, "
                      f"greedy tokens agreeing with ours (per sequence, of {len(r['greedy_tokens'][0])}): "
                      f"{c.get('greedy_agreeing_prefix')}")

    cond = os.path.join(directory, "conditions.txt")
    if os.path.exists(cond):
        print("\nConditions of each run: CPU used by other processes while it ran (busy CPU time of the machine minus "
              "the run's own process CPU time, as a share of wall time x cores), hypervisor steal, load average:\n")
        print("| run | wall s | own CPU s | others' CPU | steal | load |")
        print("|---|---|---|---|---|---|")
        ncores = os.cpu_count() or 1
        with open(cond) as f:
            for line in f:
                parts = line.split()
                if not parts:
                    continue
                tag, kv = parts[0], dict(p.split("=", 1) for p in parts[1:] if "=" in p)
                wall, busy = float(kv.get("wall_s", 0)), float(kv.get("busy_cpu_s", 0))
                run_json = os.path.join(directory, tag + ".json")
                own = None
                if os.path.exists(run_json):
                    with open(run_json) as g:
                        own = json.load(g).get("process_cpu_seconds")
                others = max(0.0, busy - own) / (wall * ncores) if own is not None and wall > 0 else None
                flag = " (disturbed)" if others is not None and others > 0.10 else ""
                print(f"| {tag} | {wall:.1f} | {own if own is None else round(own, 1)} | "
                      f"{'-' if others is None else f'{100 * others:.0f}%'}{flag} | {kv.get('steal_pct', '-')}% | "
                      f"{kv.get('load', '-')} |")

    with open(os.path.join(directory, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["threads", "batch", "phase", "ours", "peer", "ours_tokens_per_s",
                                          "peer_tokens_per_s", "ratio"])
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
