#!/usr/bin/env python3
"""Plot the loss curves of one or more jetmoe-train runs to a PNG.

    scripts/plot_metrics.py runs/tiny/metrics.jsonl [more metrics.jsonl ...] -o loss.png [--x tokens]

Each metrics.jsonl (written by jetmoe-train in job/output_dir) holds one JSON object per line:
"type": "train" lines (step, tokens, loss, ce, switch, z, lr, grad_norm, ...) and "type": "eval" lines
(step, tokens, val_loss). Panels: training cross-entropy (raw and smoothed) with validation loss,
learning rate, router losses (switch and z), gradient norm.

Needs matplotlib (Debian: apt-get install python3-matplotlib; or pip install matplotlib).
"""
import argparse
import json
import math
import sys


def read(path):
    train, evals = [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not a JSON line: {e}")
            # A non-finite value (a skipped step's gradient norm) is null in the file: NaN here, a gap in
            # the curves.
            rec = {k: float("nan") if v is None else v for k, v in rec.items()}
            (evals if rec.get("type") == "eval" else train).append(rec)
    if not train and not evals:
        sys.exit(f"{path}: no metrics")
    return train, evals


def smooth(values, alpha):
    out, s = [], None
    for v in values:
        if not math.isnan(v):  # a NaN (skipped step) leaves the average as it was
            s = v if s is None else alpha * s + (1 - alpha) * v
        out.append(float("nan") if s is None else s)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("metrics", nargs="+", help="metrics.jsonl files (one per run)")
    ap.add_argument("-o", "--output", default="loss.png", help="PNG to write (default loss.png)")
    ap.add_argument("--x", choices=["step", "tokens"], default="step", help="x axis")
    ap.add_argument("--smooth", type=float, default=0.9, help="EMA factor of the smoothed curve (0: none)")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_metrics.py needs matplotlib: apt-get install python3-matplotlib (or pip install matplotlib)")

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (ax_loss, ax_lr), (ax_aux, ax_norm) = axes
    for path in args.metrics:
        train, evals = read(path)
        label = path
        x = [r[args.x] for r in train]
        if train:
            line, = ax_loss.plot(x, [r["ce"] for r in train], alpha=0.3, lw=0.8)
            ax_loss.plot(x, smooth([r["ce"] for r in train], args.smooth), color=line.get_color(), lw=1.5,
                         label=f"{label} train (EMA {args.smooth})")
            ax_lr.plot(x, [r["lr"] for r in train], label=label)
            ax_aux.plot(x, [r["switch"] for r in train], label=f"{label} switch")
            ax_aux.plot(x, [r["z"] for r in train], ls="--", label=f"{label} z")
            ax_norm.plot(x, [r["grad_norm"] for r in train], label=label, lw=0.8)
        if evals:
            ax_loss.plot([r[args.x] for r in evals], [r["val_loss"] for r in evals], "o-", ms=4,
                         label=f"{label} validation")
    ax_loss.set_ylabel("cross-entropy (nats/token)")
    ax_lr.set_ylabel("learning rate")
    ax_aux.set_ylabel("router losses (sum over routers)")
    ax_norm.set_ylabel("gradient norm (before clipping)")
    ax_norm.set_yscale("log")
    for ax in axes.flat:
        ax.set_xlabel(args.x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("jetmoe-train")
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
