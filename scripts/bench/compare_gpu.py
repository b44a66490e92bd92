#!/usr/bin/env python3
"""Side-by-side tables of a directory written by scripts/bench/run_gpu_bench.sh: each kernel family's
benchmark (kernels/bench/bench_<family>.cu -> jk-<family>.csv) against its PyTorch / HF peer
(kernels/bench/peer_<family>.py -> peer-<family>.csv).

    python3 scripts/bench/compare_gpu.py OUTDIR

Prints Markdown (one table per family and throughput metric: the shape columns, every variant of ours and of
the peer as "throughput (time)", our best, the peer's best and best/best, > 1 when ours is faster) and writes
OUTDIR/summary.csv with one row per compared shape:

    family,key,metric,ours_best_variant,ours_metric,peer_best_variant,peer_metric,ratio,note

key is the shape's identification as "column=value; ..." (the op without its variant suffix); metric is the
throughput unit; ratio = ours_metric / peer_metric (higher is better for every metric used here), or
peer_time / ours_time where a throughput was written as 0 (tiny CPU smoke shapes round TFLOP/s to 0.000; the
note says so). A shape measured on one side only is kept, with an empty ratio and the note "ours only" or
"peer only"; a family with one CSV is reported as missing its partner (its rows "ours only" / "peer only").
The `kernels` family has no peer program: its CSV's device-to-device cudaMemcpyAsync of the same bytes,
measured in the same run, stands in as the peer ("memcpy").

Variants: a family's variant column (attention `path`, grouped_gemm and embedding `impl`) and suffixes of the op
name (layer/model `.wgmma` etc.: `train.fwd+bwd.wgmma` is shape `train.fwd+bwd`, variant `wgmma`, the plain op our
default path `tuned`; embedding `_simple` / the peer's `_det`; fused ` simple` and a trailing "(...)"
annotation; router ` simple`). layer/model `decode.graph` (our decode step replayed from a CUDA graph) is a variant `graph` of
`decode.step`. The best variant of a side is the one with the highest throughput (ties: the shorter time).

Standard-library Python only (runs where the benchmarks ran, or anywhere the CSVs are copied to).
"""
import csv
import math
import os
import re
import sys

# Variant suffixes of the layer/model ops (the layer paths: JK_LAYER_TUNED, JK_LAYER_WGMMA, ...).
PATH_SUFFIXES = ((".wgmma", "wgmma"), (".mma", "mma"), (".simple", "simple"), (".tuned", "tuned"))
THROUGHPUT = (("decode", "tokens_per_s", "tokens/s"), ("prefill", "tokens_per_s", "tokens/s"),
              ("", "tflops", "TFLOP/s"))

# Per family: keys (the shape's columns; the `op` one stripped of variant suffixes), op (the column the suffix
# rules and the metric rule read), variant (the variant column, or None), ours / peer (the variant label of a
# row without a variant column or suffix), suffixes ((suffix, label), first match), aliases (op -> (op,
# label)), annotation (a trailing " (...)" of the op is a variant label), metric ((op prefix, column, unit),
# first match), time ((column, unit)), info (columns shown, not part of the key), self_peer (the peer's
# metric and time columns in OUR CSV, for the family without a peer program).
SPECS = {
    "kernels": dict(keys=("kernel", "shape"), op="kernel", metric=(("", "gb_per_s", "GB/s"),),
                    time=("median_us", "us"), ours="jk",
                    self_peer=dict(metric="memcpy_gb_per_s", time="memcpy_median_us", label="memcpy")),
    "embedding": dict(keys=("op", "ids", "N", "V", "D"), op="op", variant="impl",
                      suffixes=(("_simple", "simple"), ("_det", "det")),
                      metric=(("", "gbs", "GB/s"),), time=("time_us", "us")),
    "fused": dict(keys=("kernel",), op="kernel", info=("shape",), suffixes=((" simple", "simple"),),
                  annotation=True, ours="jk", peer="torch", metric=(("", "gb_per_s", "GB/s"),),
                  time=("median_us", "us")),
    "router": dict(keys=("op", "N", "C"), op="op", ours="jk", peer="torch", suffixes=((" simple", "simple"),),
                   metric=(("", "GB_s", "GB/s"),),
                   time=("time_us", "us")),
    "grouped_gemm": dict(keys=("op", "tokens", "routing"), op="op", variant="impl",
                         metric=(("swiglu.bwd", "gbs", "GB/s"), ("", "tflops", "TFLOP/s")),
                         time=("time_ms", "ms")),
    "attention": dict(keys=("op", "shape"), op="op", variant="path",
                      metric=(("decode", "tokens_per_s", "tokens/s"), ("", "tflops", "TFLOP/s")),
                      time=("ms", "ms")),
    "layer": dict(keys=("op", "B", "T"), op="op", ours="tuned", peer="hf", suffixes=PATH_SUFFIXES,
                  aliases={"decode.graph": ("decode.step", "graph")}, metric=THROUGHPUT, time=("time_ms", "ms")),
    "model": dict(keys=("op", "B", "T"), op="op", ours="tuned", peer="hf", suffixes=PATH_SUFFIXES,
                  aliases={"decode.graph": ("decode.step", "graph")}, metric=THROUGHPUT, time=("time_ms", "ms")),
}
FAMILIES = tuple(SPECS)  # the order of the report
SUMMARY_FIELDS = ("family", "key", "metric", "ours_best_variant", "ours_metric", "peer_best_variant", "peer_metric",
                  "ratio", "note")


def read_rows(path):
    """The CSV's rows as dicts (lines starting with '#' skipped, fields stripped)."""
    with open(path, newline="") as f:
        lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            for row in csv.DictReader(lines)]


def number(text):
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def split_variant(spec, side, row):
    """(op without its variant suffix, variant label) of one row."""
    op = row.get(spec["op"], "")
    base_label = row.get(spec["variant"], "") if spec.get("variant") else spec.get(side, side)
    label = None
    if op in spec.get("aliases", {}):
        op, label = spec["aliases"][op]
    else:
        for suffix, name in spec.get("suffixes", ()):
            if op.endswith(suffix) and len(op) > len(suffix):
                op, label = op[:-len(suffix)], name
                break
        if label is None and spec.get("annotation"):
            m = re.match(r"^(.*\S)\s*\((.*)\)$", op)
            if m:
                return m.group(1), "%s (%s)" % (base_label, m.group(2))
    if label is None:
        return op, base_label
    return op, (base_label + "." + label if spec.get("variant") and base_label else label)


def metric_of(spec, op):
    for prefix, column, unit in spec["metric"]:
        if op.startswith(prefix):
            return column, unit
    raise AssertionError("no metric rule for %r" % op)


class Side:
    """One side's measurements: shape key -> {variant: (throughput, time)}, in first-seen order."""

    def __init__(self):
        self.shapes = {}   # key tuple -> {"unit": str, "info": {col: value}, "variants": {label: (metric, time)}}
        self.variants = []  # labels, first-seen order
        self.warnings = []
        self.self_peer_rows = []  # (key, unit, info, metric, time) of the peer's columns in our CSV (kernels)

    def add(self, key, unit, info, label, metric, time):
        shape = self.shapes.setdefault(key, {"unit": unit, "info": info, "variants": {}})
        if label in shape["variants"]:
            self.warnings.append("duplicate row %s, variant %s: the first kept" % (" ".join(key), label))
            return
        shape["variants"][label] = (metric, time)
        if label not in self.variants:
            self.variants.append(label)

    def best(self, key):
        """(label, metric, time) of the highest throughput (ties: the shorter time), or None."""
        shape = self.shapes.get(key)
        if not shape:
            return None
        cands = [(lab, m, t) for lab, (m, t) in shape["variants"].items() if m is not None or t is not None]
        if not cands:
            return None
        return max(cands, key=lambda c: (c[1] if c[1] is not None else -1.0,
                                         -c[2] if c[2] is not None and c[2] > 0 else -math.inf))


def load_side(spec, side, rows):
    data = Side()
    key_cols = spec["keys"]
    time_col = spec["time"][0]
    if rows:
        needed = list(key_cols) + [c for _, c, _ in spec["metric"]] + [time_col] + \
            ([spec["variant"]] if spec.get("variant") else [])
        absent = [c for c in dict.fromkeys(needed) if c not in rows[0]]
        if absent:
            data.warnings.append("%s CSV lacks the column(s) %s: not this family's schema?" % (side, ", ".join(absent)))
    for row in rows:
        op, label = split_variant(spec, side, row)
        key = tuple(op if col == spec["op"] else row.get(col, "") for col in key_cols)
        metric_col, unit = metric_of(spec, op)
        info = {col: row.get(col, "") for col in spec.get("info", ())}
        data.add(key, unit, info, label, number(row.get(metric_col)), number(row.get(time_col)))
        peer = spec.get("self_peer")
        if peer is not None and side == "ours":
            data.self_peer_rows.append((key, unit, info, number(row.get(peer["metric"])),
                                        number(row.get(peer["time"]))))
    return data


def format_key(key, cols):
    return "; ".join("%s=%s" % (c, v) for c, v in zip(cols, key))


def fmt_num(x):
    if x is None:
        return "n/a"
    a = abs(x)
    if a >= 1000:
        return "%.0f" % x
    if a >= 100:
        return "%.1f" % x
    if a >= 1:
        return "%.2f" % x
    return "%.3g" % x


def ratio_of(ours, peer):
    """(ratio, note) of two best entries (label, metric, time)."""
    _, om, ot = ours
    _, pm, pt = peer
    if om is not None and pm is not None and om > 0 and pm > 0:
        return om / pm, ""
    if ot is not None and pt is not None and ot > 0 and pt > 0:
        return pt / ot, "ratio from times (throughput 0)"
    return None, "no usable throughput or time"


def compare_family(family, spec, ours_rows, peer_rows, ours_file, peer_file, out, summary):
    ours = load_side(spec, "ours", ours_rows) if ours_rows is not None else Side()
    if spec.get("self_peer"):
        peer = Side()
        for key, unit, info, m, t in ours.self_peer_rows:
            peer.add(key, unit, info, spec["self_peer"]["label"], m, t)
    else:
        peer = load_side(spec, "peer", peer_rows) if peer_rows is not None else Side()
    missing = None
    if ours_rows is None:
        missing = "ours missing (%s)" % ours_file
    elif peer_rows is None and not spec.get("self_peer"):
        missing = "peer missing (%s)" % peer_file

    title = "## %s: %s vs %s" % (family, ours_file, peer_file if not spec.get("self_peer") else
                                  "cudaMemcpyAsync D2D of the same bytes in the same run (no peer program)")
    out.append(title)
    out.append("")
    if missing:
        out.append("**Missing its partner: %s**; the rows of the other side are listed unpaired." % missing)
        out.append("")
    for w in ours.warnings + peer.warnings:
        out.append("- warning: " + w)
    if ours.warnings or peer.warnings:
        out.append("")
    keys = list(ours.shapes) + [k for k in peer.shapes if k not in ours.shapes]
    units = []
    for k in keys:
        u = (ours.shapes.get(k) or peer.shapes.get(k))["unit"]
        if u not in units:
            units.append(u)
    time_unit = spec["time"][1]
    counts = {"both": 0, "ours only": 0, "peer only": 0}
    for unit in units:
        group = [k for k in keys if (ours.shapes.get(k) or peer.shapes.get(k))["unit"] == unit]
        ov = [v for v in ours.variants if any(v in ours.shapes.get(k, {}).get("variants", {}) for k in group)]
        pv = [v for v in peer.variants if any(v in peer.shapes.get(k, {}).get("variants", {}) for k in group)]
        out.append("**%s** (each cell: %s, in brackets the time in %s; best/best > 1: ours faster)" %
                   (unit, unit, time_unit))
        out.append("")
        header = list(spec["keys"]) + list(spec.get("info", ())) + ["ours " + v for v in ov] + \
            ["peer " + v for v in pv] + ["ours best", "peer best", "ours/peer"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for k in group:
            o_shape, p_shape = ours.shapes.get(k), peer.shapes.get(k)
            cells = list(k)
            for col in spec.get("info", ()):
                ovl = o_shape["info"].get(col, "") if o_shape else ""
                pvl = p_shape["info"].get(col, "") if p_shape else ""
                cells.append(ovl if not pvl or pvl == ovl else pvl if not ovl else "%s (peer: %s)" % (ovl, pvl))
            for side, shape, labels in ((ours, o_shape, ov), (peer, p_shape, pv)):
                for v in labels:
                    entry = shape["variants"].get(v) if shape else None
                    cells.append("-" if entry is None else "%s (%s)" % (fmt_num(entry[0]), fmt_num(entry[1])))
            ob, pb = ours.best(k), peer.best(k)
            cells.append(ob[0] if ob else "-")
            cells.append(pb[0] if pb else "-")
            rec = {"family": family, "key": format_key(k, spec["keys"]), "metric": unit,
                   "ours_best_variant": ob[0] if ob else "", "ours_metric": csv_num(ob[1]) if ob else "",
                   "peer_best_variant": pb[0] if pb else "", "peer_metric": csv_num(pb[1]) if pb else "",
                   "ratio": "", "note": ""}
            if o_shape and p_shape:
                r, note = ratio_of(ob, pb) if ob and pb else (None, "no usable throughput or time")
                rec["ratio"], rec["note"] = ("%.6g" % r if r is not None else ""), note
                cells.append(("%.2f" % r if r is not None else "n/a") +
                             (" (from times)" if note.startswith("ratio from") else ""))
                counts["both"] += 1
            else:
                only = "ours only" if o_shape else "peer only"
                rec["note"] = only + ("; " + missing if missing else "")
                cells.append(only)
                counts[only] += 1
            summary.append(rec)
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    out.append("shapes: %d compared, %d ours only, %d peer only." %
               (counts["both"], counts["ours only"], counts["peer only"]))
    out.append("")


def csv_num(x):
    return "" if x is None else "%.10g" % x


def status_lines(directory):
    path = os.path.join(directory, "status.tsv")
    if not os.path.exists(path):
        return []
    out = ["| program | status | exit | seconds |", "|---|---|---|---|"]
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts and parts[0] and parts[0] != "program":
                out.append("| " + " | ".join((parts + ["", "", "", ""])[:4]) + " |")
    return out + [""]


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0])
        print("usage: compare_gpu.py OUTDIR")
        return 0 if len(argv) == 2 else 2
    directory = argv[1]
    if not os.path.isdir(directory):
        print("compare_gpu.py: %s is not a directory" % directory, file=sys.stderr)
        return 2
    out = ["# GPU benchmarks: ours (kernels/bench/bench_<family>.cu) vs PyTorch / HF peers (%s)" % directory, ""]
    env = os.path.join(directory, "environment.txt")
    if os.path.exists(env):
        with open(env) as f:
            out += ["```", f.read().rstrip("\n"), "```", ""]
    out += status_lines(directory)
    summary = []
    absent = []
    for family in FAMILIES:
        spec = SPECS[family]
        ours_file, peer_file = "jk-%s.csv" % family, "peer-%s.csv" % family
        ours_path, peer_path = os.path.join(directory, ours_file), os.path.join(directory, peer_file)
        ours_rows = read_rows(ours_path) if os.path.exists(ours_path) else None
        peer_rows = read_rows(peer_path) if os.path.exists(peer_path) and not spec.get("self_peer") else None
        if ours_rows is None and peer_rows is None:
            absent.append(family)
            continue
        compare_family(family, spec, ours_rows, peer_rows, ours_file, peer_file, out, summary)
    if absent:
        out.append("No CSV on either side: " + ", ".join(absent) + ".")
    stray = sorted(n for n in os.listdir(directory) if re.match(r"^(jk|peer)-(.+)\.csv$", n)
                   and re.match(r"^(jk|peer)-(.+)\.csv$", n).group(2) not in SPECS)
    if stray:
        out.append("Not a known family, not compared: " + ", ".join(stray) + ".")
    print("\n".join(out).rstrip("\n"))
    with open(os.path.join(directory, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
