#!/usr/bin/env python3
"""Table of a run_cpu_train_bench.sh results directory: jetmoe against transformers per case (Markdown)."""
import glob
import json
import os
import sys


def main():
    d = sys.argv[1]
    rows = []
    for ours_path in sorted(glob.glob(os.path.join(d, "jetmoe-*.json"))):
        tag = os.path.basename(ours_path)[len("jetmoe-"):-len(".json")]
        hf_path = os.path.join(d, f"hf-{tag}.json")
        if not os.path.exists(hf_path):
            continue
        ours, hf = json.load(open(ours_path)), json.load(open(hf_path))
        rows.append((tag, ours, hf))
    print(f"# Training step, jetmoe vs transformers ({os.path.basename(d)})\n")
    print("| case | jetmoe tok/s | transformers tok/s | speed ratio | jetmoe peak RSS MB | transformers peak RSS MB | memory ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for tag, o, h in rows:
        print(f"| {tag} | {o['tokens_per_s']:.1f} | {h['tokens_per_s']:.1f} | {o['tokens_per_s'] / h['tokens_per_s']:.2f}x "
              f"| {o['peak_rss_mb']:.0f} | {h['peak_rss_mb']:.0f} | {o['peak_rss_mb'] / h['peak_rss_mb']:.2f} |")
    print("\nspeed ratio = jetmoe tokens/s / transformers tokens/s (target >= 2); memory ratio = jetmoe / transformers "
          "peak RSS (target <= 1). Median step over the timed steps; each implementation in its own process.")
    cond = os.path.join(d, "conditions.txt")
    if os.path.exists(cond):
        print("\n```\n" + open(cond).read().strip() + "\n```")


if __name__ == "__main__":
    main()
