#!/usr/bin/env python3
"""Side-by-side tables of a bench/results/<run>-train/ directory written by scripts/bench/run_cpu_train_bench.sh.

    python3 scripts/bench/compare_train.py bench/results/<run>-train

Reads jetmoe-<variant>-<preset>-b<batch>-s<seq>-t<threads>.json (bench/bench_train.cpp) and
hf-<variant>-<preset>-b<batch>-s<seq>-t<threads>.json (scripts/bench/bench_hf_train.py) and prints Markdown:
training tokens/s of each (median step, and the fastest step), the ratio ours / HF (target >= 2), peak RSS and its
ratio (target <= 1), the per-phase medians side by side, and the conditions of each run. Writes summary.csv.

Phases are grouped as both programs can time them:
  forward   ours: zero_grad + forward + loss;   HF: zero_grad(set_to_none) + model(...) + router losses
  backward  both: the backward pass
  optimizer ours: grad norm (clip) + AdamW with the clip factor applied in its loop;  HF: clip_grad_norm_ + step()
"""
import csv
import glob
import json
import os
import re
import sys

NAME = re.compile(r"(jetmoe|hf)-(.+)-(tiny|small|jetmoe-8b)-b(\d+)-s(\d+)-t(\d+)\.json$")


def load(directory):
    runs = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        m = NAME.match(os.path.basename(path))
        if not m:
            continue
        impl, variant, preset, batch, seq, threads = m.groups()
        with open(path) as f:
            runs[(int(threads), preset, int(batch), int(seq), impl, variant)] = json.load(f)
    return runs


def phases(run, impl):
    p = run.get("phases_median_s", {})
    if impl == "hf":
        return p.get("forward", 0.0), p.get("backward", 0.0), p.get("optimizer", 0.0)
    return (p.get("zero_grad", 0.0) + p.get("forward", 0.0) + p.get("loss", 0.0), p.get("backward", 0.0),
            p.get("clip", 0.0) + p.get("optimizer", 0.0))


def best_tps(run):
    t = min(run["step_seconds"])
    return run["batch"] * run["seq_len"] / t if t > 0 else 0.0


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    runs = load(directory)
    if not runs:
        sys.exit(f"compare_train.py: no results in {directory}")
    cases = sorted({k[:4] for k in runs}, key=lambda c: (c[0], c[1] != "small", c[1], c[2], c[3]))
    ours_v = sorted({k[5] for k in runs if k[4] == "jetmoe"}, key=lambda v: (v != "serial", v))
    hf_v = sorted({k[5] for k in runs if k[4] == "hf"})
    any_run = next(iter(runs.values()))
    print(f"# Training step: jetmoe vs HF transformers + torch.optim.AdamW (CPU), median of "
          f"{any_run['steps']} timed steps after {any_run.get('warmup', 1)} warm-up\n")
    for v in ours_v:
        r = next(r for k, r in runs.items() if k[4] == "jetmoe" and k[5] == v)
        e = r.get("environment", {})
        if e:
            print(f"- ours ({v}): Kokkos {e['kokkos_backend']} {e['kokkos_version']} (concurrency "
                  f"{e['kokkos_concurrency']}), {e['build_type']} build, {e['compiler']}, BLAS {e['blas']} "
                  f"({e.get('openblas', '')}), OPENBLAS_CORETYPE {e.get('OPENBLAS_CORETYPE') or 'unset (detected)'}")
    for v in hf_v:
        r = next(r for k, r in runs.items() if k[4] == "hf" and k[5] == v)
        e = r["environment"]
        print(f"- HF ({v}): transformers {e['transformers']}, torch {e['torch']} ({e['blas']}, {e['cpu_capability']}), "
              f"float32, attn {e['attn_implementation']}, AdamW {e['adamw']}")
    print("- threads t: OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = MKL_NUM_THREADS = torch.set_num_threads = t "
          "(a threaded Kokkos build: OMP_NUM_THREADS = t, OpenBLAS as recorded above)\n")

    rows = []
    for stat in ("median", "best"):
        print("Tokens/s from the MEDIAN step:\n" if stat == "median" else
              "\nTokens/s from the FASTEST step (less sensitive to other users of the machine):\n")
        header = ["threads", "case"] + [f"ours {v}" for v in ours_v] + [f"HF {v}" for v in hf_v] + \
                 [f"ours {v} / HF best" for v in ours_v]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for c in cases:
            t, preset, b, s = c
            get = (lambda r: r["tokens_per_s"]) if stat == "median" else best_tps
            ours = [get(runs[c + ("jetmoe", v)]) if c + ("jetmoe", v) in runs else 0.0 for v in ours_v]
            hf = [get(runs[c + ("hf", v)]) if c + ("hf", v) in runs else 0.0 for v in hf_v]
            best = max(hf) if hf else 0.0
            print(f"| {t} | {preset} {b}x{s} | " + " | ".join(f"{x:.1f}" for x in ours + hf) + " | " +
                  " | ".join(f"**{o / best:.2f}x**" if best else "-" for o in ours) + " |")
            for v, o in zip(ours_v, ours):
                rows.append({"threads": t, "case": f"{preset}-b{b}-s{s}", "metric": f"tokens_per_s_{stat}",
                             "ours": f"jetmoe-{v}", "ours_value": round(o, 2), "hf_best": round(best, 2),
                             "ratio": round(o / best, 4) if best else ""})

    print("\nPeak RSS (MiB, getrusage ru_maxrss of each process; in brackets: minus the RSS at start for ours, "
          "after `import torch, transformers` for HF):\n")
    header = ["threads", "case"] + [f"ours {v}" for v in ours_v] + [f"HF {v}" for v in hf_v] + ["ours / HF (worst)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for c in cases:
        t, preset, b, s = c
        cells, o_max, h_min = [], 0.0, 0.0
        for v in ours_v:
            r = runs.get(c + ("jetmoe", v))
            cells.append(f"{r['peak_rss_mb']:.0f} ({r['peak_rss_mb'] - r.get('rss_at_start_mib', 0):.0f})" if r else "-")
            if r:
                o_max = max(o_max, r["peak_rss_mb"])
        for v in hf_v:
            r = runs.get(c + ("hf", v))
            cells.append(f"{r['peak_rss_mb']:.0f} ({r['peak_rss_mb'] - r['rss_after_import_mib']:.0f})" if r else "-")
            if r:
                h_min = r["peak_rss_mb"] if h_min == 0 else min(h_min, r["peak_rss_mb"])
        ratio = f"{o_max / h_min:.2f}" if h_min else "-"
        print(f"| {t} | {preset} {b}x{s} | " + " | ".join(cells) + f" | {ratio} |")
        rows.append({"threads": t, "case": f"{preset}-b{b}-s{s}", "metric": "peak_rss_mib", "ours": "jetmoe (max)",
                     "ours_value": round(o_max, 1), "hf_best": round(h_min, 1),
                     "ratio": round(o_max / h_min, 4) if h_min else ""})

    print("\nPer-phase median seconds per step (forward includes zeroing the gradients and the losses; optimizer "
          "includes the gradient norm and clipping):\n")
    header = ["threads", "case", "impl", "forward", "backward", "optimizer", "step", "cpu/wall"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for c in cases:
        t, preset, b, s = c
        for impl, variants in (("jetmoe", ours_v), ("hf", hf_v)):
            for v in variants:
                r = runs.get(c + (impl, v))
                if not r:
                    continue
                f, bw, o = phases(r, impl)
                cpu = r.get("step_cpu_seconds") or []
                ratio = sorted(cpu)[len(cpu) // 2] / r["step_median_s"] if cpu else 0.0
                print(f"| {t} | {preset} {b}x{s} | {'ours' if impl == 'jetmoe' else 'HF'} {v} | {f:.3f} | {bw:.3f} | "
                      f"{o:.3f} | {r['step_median_s']:.3f} | {ratio:.2f} |")

    print("\nLoss (first and last step; same model shape and step definition, independent random weights and "
          "tokens, so the values agree only roughly: ln V at the start):\n")
    for c in cases:
        t, preset, b, s = c
        cells = []
        for impl, variants in (("jetmoe", ours_v), ("hf", hf_v)):
            for v in variants:
                r = runs.get(c + (impl, v))
                if r:
                    cells.append(f"{'ours' if impl == 'jetmoe' else 'HF'} {v} {r['loss_first']:.3f} -> {r['loss_last']:.3f}")
        print(f"- t{t} {preset} {b}x{s}: " + "; ".join(cells))

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
                own = None
                run_json = os.path.join(directory, tag + ".json")
                if os.path.exists(run_json):
                    with open(run_json) as g:
                        own = json.load(g).get("process_cpu_seconds")
                others = max(0.0, busy - own) / (wall * ncores) if own is not None and wall > 0 else None
                flag = " (disturbed)" if others is not None and others > 0.10 else ""
                print(f"| {tag} | {wall:.1f} | {'-' if own is None else round(own, 1)} | "
                      f"{'-' if others is None else f'{100 * others:.0f}%'}{flag} | {kv.get('steal_pct', '-')}% | "
                      f"{kv.get('load', '-')} |")

    with open(os.path.join(directory, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["threads", "case", "metric", "ours", "ours_value", "hf_best", "ratio"])
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
