#!/usr/bin/env python3
"""Tests of scripts/bench/compare_gpu.py and scripts/bench/run_gpu_bench.sh (standard library unittest).

    python3 scripts/bench/test_compare_gpu.py                               # every case
    python3 scripts/bench/test_compare_gpu.py HandMadeCsvTest RunScriptTest  # what CTest runs (no torch needed)

HandMadeCsvTest: small hand-made CSVs in each family's own columns (layer, attention, grouped_gemm, fused,
kernels, a router CSV without its peer) with known throughputs; the summary's rows, best variants and ratios
are checked exactly against closed-form values (ours 2x, 0.5x, 1.5x, ..., a ratio from times where the
throughput is 0, rows on one side only, a family missing its partner).
RunScriptTest: run_gpu_bench.sh with fake bench binaries and a fake peer interpreter (a bench that writes its
CSV, one that exits 77, one that outlives the timeout, a missing one, a peer that fails): status.tsv, the
logs, stale CSVs removed, the exit status, the per-program extra arguments.
RealPeerCsvTest: a real CSV of kernels/bench/peer_layer.py (--device cpu at the tiny sizes of its docstring,
~10 s) compared with itself renamed as ours: every ratio exactly 1. Skipped when the interpreter
($JETMOE_PEER_PYTHON, default /opt/oracle-venv/bin/python) lacks torch and transformers.
"""
import csv
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
COMPARE = os.path.join(HERE, "compare_gpu.py")
RUN = os.path.join(HERE, "run_gpu_bench.sh")

LAYER_COLS = "op,B,T,time_ms,tokens_per_s,tflops,mfu_pct,gbs,hbm_pct"


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def layer_row(op, B, T, ms, tokens_per_s, tflops):
    return "%s,%d,%d,%.6f,%.3f,%.3f,%.3f,0.000,0.000" % (op, B, T, ms, tokens_per_s, tflops, 100 * tflops / 989)


def run_compare(directory):
    proc = subprocess.run([sys.executable, COMPARE, directory], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError("compare_gpu.py failed (%d):\n%s%s" % (proc.returncode, proc.stdout, proc.stderr))
    with open(os.path.join(directory, "summary.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    return proc.stdout, rows


def by_key(rows):
    out = {}
    for r in rows:
        k = (r["family"], r["key"])
        assert k not in out, "duplicate summary row %s" % (k,)
        out[k] = r
    return out


class HandMadeCsvTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="compare_gpu_test.")
        d = cls.tmp
        # layer: ours tuned + wgmma (suffix) + decode.graph (a variant of decode.step); the peer HF.
        write(os.path.join(d, "jk-layer.csv"), "\n".join([
            LAYER_COLS,
            layer_row("train.fwd", 2, 4096, 20.0, 409600, 100.0),           # ours 100 vs peer 200: 0.5
            layer_row("train.bwd", 2, 4096, 30.0, 273066.667, 150.0),       # ours only
            layer_row("train.fwd+bwd", 2, 4096, 10.0, 819200, 200.0),
            layer_row("train.fwd.wgmma", 2, 4096, 25.0, 327680, 80.0),      # slower than tuned: best stays tuned
            layer_row("train.bwd.wgmma", 2, 4096, 20.0, 409600, 160.0),
            layer_row("train.fwd+bwd.wgmma", 2, 4096, 5.0, 1638400, 400.0),  # best 400 vs peer 200: 2
            layer_row("train.fwd", 8, 16, 2.0, 64000, 0.0),                 # TFLOP/s rounded to 0: ratio from times
            layer_row("decode.step", 1, 4096, 1.0, 1000.0, 0.5),
            layer_row("decode.graph", 1, 4096, 1.0 / 3, 3000.0, 1.5),       # best 3000 vs peer 1500: 2
        ]) + "\n")
        write(os.path.join(d, "peer-layer.csv"), "\n".join([
            LAYER_COLS,
            layer_row("train.fwd", 2, 4096, 10.0, 819200, 200.0),
            layer_row("train.fwd+bwd", 2, 4096, 20.0, 409600, 200.0),
            layer_row("train.fwd", 4, 4096, 20.0, 819200, 250.0),           # peer only
            layer_row("train.fwd", 8, 16, 6.0, 21333.333, 0.0),
            layer_row("decode.step", 1, 4096, 2.0 / 3, 1500.0, 0.75),
        ]) + "\n")
        # attention: variant column `path`; decode compared in tokens/s.
        s1, s2 = "B=4 T=4096 Hq=32 Hkv=16 d=128", "B=8 T=2048 Hq=32 Hkv=16 d=128"
        dec = "B=1 len=4096 Tmax=4096 Hq=32 Hkv=16"
        head = "op,path,shape,ms,tflops,gbs,tokens_per_s,pct_peak,device\n"
        write(os.path.join(d, "jk-attention.csv"), head + "".join([
            "fwd,simple,%s,9.0,50.000,0.000,1000.0,5.0,H100\n" % s1,
            "fwd,tuned,%s,1.5,300.000,0.000,6000.0,30.3,H100\n" % s1,
            "fwd,wgmma,%s,1.0,450.000,0.000,9000.0,45.5,H100\n" % s1,   # best 450 vs sdpa 300: 1.5
            "bwd,tuned,%s,6.0,100.000,0.000,2000.0,10.1,H100\n" % s1,   # 100 vs 400: 0.25
            "decode,split,%s,0.125,10.000,2000.000,8000.0,59.7,H100\n" % dec,  # 8000 vs 2000 tokens/s: 4
        ]))
        write(os.path.join(d, "peer-attention.csv"), head + "".join([
            "fwd,sdpa,%s,1.5,300.000,0.000,6000.0,30.3,H100\n" % s1,
            "fwd,eager,%s,4.5,100.000,0.000,2000.0,10.1,H100\n" % s1,
            "bwd,sdpa,%s,1.5,400.000,0.000,8000.0,40.4,H100\n" % s1,
            "bwd,eager,%s,3.0,200.000,0.000,4000.0,20.2,H100\n" % s1,
            "fwd,sdpa,%s,1.0,300.000,0.000,16000.0,30.3,H100\n" % s2,   # peer only
            "decode,sdpa,%s,0.5,2.500,500.000,2000.0,14.9,H100\n" % dec,
        ]))
        # grouped_gemm: variant column `impl`; swiglu.bwd compared in GB/s (its TFLOP/s is 0).
        head = "op,tokens,routing,impl,time_ms,tflops,pct_989,gbs,pct_3350,device\n"
        write(os.path.join(d, "jk-grouped_gemm.csv"), head + "".join([
            "fc1+swiglu,4096,balanced,mma,2.0,300.000,30.3,0.000,0.0,H100\n",
            "fc1+swiglu,4096,balanced,wgmma,1.0,600.000,60.7,0.000,0.0,H100\n",    # 600 vs 300: 2
            "fc1+swiglu,4096,balanced,cublaslt,1.2,500.000,50.6,0.000,0.0,H100\n",
            "swiglu.bwd,4096,balanced,own,0.1,0.000,0.0,2000.000,59.7,H100\n",     # 2000 vs 1000 GB/s: 2
            "moa.q,16384,skewed,mma,1.0,500.000,50.6,0.000,0.0,H100\n",            # ours only
        ]))
        write(os.path.join(d, "peer-grouped_gemm.csv"), head + "".join([
            "fc1+swiglu,4096,balanced,hf,3.0,200.000,20.2,0.000,0.0,H100\n",
            "fc1+swiglu,4096,balanced,grouped_mm,2.0,300.000,30.3,0.000,0.0,H100\n",
            "swiglu.bwd,4096,balanced,hf,0.2,0.000,0.0,1000.000,29.9,H100\n",
        ]))
        # fused: the " simple" suffix and the "(...)" annotations are variants; shapes differ between the sides.
        head = "kernel,shape,bytes,median_us,gb_per_s,percent_hbm_peak\n"
        write(os.path.join(d, "jk-fused.csv"), head + "".join([
            'rmsnorm_bwd bf16,"16384x2048",201457664,201.5,1000.00,29.85\n',
            'rmsnorm_bwd bf16 simple,"16384x2048",201457664,167.9,1200.00,35.82\n',  # 1200 vs 600: 2
            'adamw f32 (+bf16 copy),"8x11264x2048 + 4096x2048 + 3 small",5788000000,1929.3,3000.00,89.55\n',
        ]))
        write(os.path.join(d, "peer-fused.csv"), head + "".join([
            'rmsnorm_bwd bf16,"16384x2048",201457664,335.8,600.00,17.91\n',
            'adamw f32 (fused=True),"184549376+8388608+2048+2048+1",5402000000,3601.3,1500.00,44.78\n',  # 3000/1500
        ]))
        # kernels: no peer program; the memcpy columns of our CSV stand in (a '#' comment line first).
        write(os.path.join(d, "jk-kernels.csv"),
              "# device=NVIDIA H100 sm_90 runtime=13000 driver=13000 warmup=10 reps=100\n"
              "kernel,shape,bytes,median_us,gb_per_s,memcpy_median_us,memcpy_gb_per_s\n"
              "rmsnorm_bf16,16384x2048,134217728,67.1,2000.00,53.7,2500.00\n")  # 2000 vs 2500: 0.8
        # router: ours without its peer.
        write(os.path.join(d, "jk-router.csv"), "op,N,C,time_us,GB_s,pct_hbm,TFLOP_s,pct_bf16\n"
              "gather_bf16,4096,2048,20.000,1677.72,50.08,0.0000,0.0000\n"
              "router_plan,4096,8,5.000,26.21,0.78,0.0000,0.0000\n"
              "router_fwd_bf16 (logits+topk+plan) simple,4096,2048,30.000,600.00,17.91,0.0000,0.0000\n"
              "router_fwd_bf16 (logits+topk+plan),4096,2048,20.000,900.00,26.87,0.0000,0.0000\n")
        write(os.path.join(d, "jk-unknown.csv"), "a,b\n1,2\n")
        cls.markdown, cls.rows = run_compare(d)
        cls.summary = by_key(cls.rows)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def check(self, family, key, ours_variant, ours_metric, peer_variant, peer_metric, ratio, note="", metric=None):
        r = self.summary.get((family, key))
        self.assertIsNotNone(r, "no summary row %s %s; rows: %s" % (family, key, sorted(self.summary)))
        self.assertEqual(r["ours_best_variant"], ours_variant, key)
        self.assertEqual(r["peer_best_variant"], peer_variant, key)
        self.assertEqual(float(r["ours_metric"]) if r["ours_metric"] else None, ours_metric, key)
        self.assertEqual(float(r["peer_metric"]) if r["peer_metric"] else None, peer_metric, key)
        if ratio is None:
            self.assertEqual(r["ratio"], "", key)
        else:
            self.assertEqual(float(r["ratio"]), ratio, key)
        self.assertEqual(r["note"], note, key)
        if metric:
            self.assertEqual(r["metric"], metric, key)

    def test_summary_columns(self):
        with open(os.path.join(self.tmp, "summary.csv")) as f:
            self.assertEqual(f.readline().strip(), "family,key,metric,ours_best_variant,ours_metric,"
                             "peer_best_variant,peer_metric,ratio,note")

    def test_layer(self):
        k = "op=%s; B=%d; T=%d"
        self.check("layer", k % ("train.fwd", 2, 4096), "tuned", 100.0, "hf", 200.0, 0.5, metric="TFLOP/s")
        self.check("layer", k % ("train.fwd+bwd", 2, 4096), "wgmma", 400.0, "hf", 200.0, 2.0, metric="TFLOP/s")
        self.check("layer", k % ("train.bwd", 2, 4096), "wgmma", 160.0, "", None, None, "ours only")
        self.check("layer", k % ("train.fwd", 4, 4096), "", None, "hf", 250.0, None, "peer only")
        self.check("layer", k % ("train.fwd", 8, 16), "tuned", 0.0, "hf", 0.0, 3.0, "ratio from times (throughput 0)")
        self.check("layer", k % ("decode.step", 1, 4096), "graph", 3000.0, "hf", 1500.0, 2.0, metric="tokens/s")
        self.assertEqual(len([r for r in self.rows if r["family"] == "layer"]), 6)

    def test_attention(self):
        s1, s2 = "B=4 T=4096 Hq=32 Hkv=16 d=128", "B=8 T=2048 Hq=32 Hkv=16 d=128"
        dec = "B=1 len=4096 Tmax=4096 Hq=32 Hkv=16"
        self.check("attention", "op=fwd; shape=" + s1, "wgmma", 450.0, "sdpa", 300.0, 1.5, metric="TFLOP/s")
        self.check("attention", "op=bwd; shape=" + s1, "tuned", 100.0, "sdpa", 400.0, 0.25)
        self.check("attention", "op=decode; shape=" + dec, "split", 8000.0, "sdpa", 2000.0, 4.0, metric="tokens/s")
        self.check("attention", "op=fwd; shape=" + s2, "", None, "sdpa", 300.0, None, "peer only")
        self.assertEqual(len([r for r in self.rows if r["family"] == "attention"]), 4)

    def test_grouped_gemm(self):
        self.check("grouped_gemm", "op=fc1+swiglu; tokens=4096; routing=balanced", "wgmma", 600.0, "grouped_mm",
                   300.0, 2.0, metric="TFLOP/s")
        self.check("grouped_gemm", "op=swiglu.bwd; tokens=4096; routing=balanced", "own", 2000.0, "hf", 1000.0, 2.0,
                   metric="GB/s")
        self.check("grouped_gemm", "op=moa.q; tokens=16384; routing=skewed", "mma", 500.0, "", None, None,
                   "ours only")
        self.assertEqual(len([r for r in self.rows if r["family"] == "grouped_gemm"]), 3)

    def test_fused_variants_from_the_name(self):
        self.check("fused", "kernel=rmsnorm_bwd bf16", "simple", 1200.0, "torch", 600.0, 2.0, metric="GB/s")
        self.check("fused", "kernel=adamw f32", "jk (+bf16 copy)", 3000.0, "torch (fused=True)", 1500.0, 2.0)
        self.assertEqual(len([r for r in self.rows if r["family"] == "fused"]), 2)
        self.assertIn("8x11264x2048 + 4096x2048 + 3 small (peer: 184549376+8388608+2048+2048+1)", self.markdown)

    def test_kernels_against_memcpy(self):
        self.check("kernels", "kernel=rmsnorm_bf16; shape=16384x2048", "jk", 2000.0, "memcpy", 2500.0, 0.8)

    def test_family_missing_its_partner(self):
        self.check("router", "op=gather_bf16; N=4096; C=2048", "jk", 1677.72, "", None, None,
                   "ours only; peer missing (peer-router.csv)")
        self.check("router", "op=router_plan; N=4096; C=8", "jk", 26.21, "", None, None,
                   "ours only; peer missing (peer-router.csv)")
        # the " simple" suffix is a variant of the same op: the tuned row (jk, faster here) is the best one.
        self.check("router", "op=router_fwd_bf16 (logits+topk+plan); N=4096; C=2048", "jk", 900.0, "", None, None,
                   "ours only; peer missing (peer-router.csv)")
        self.assertIn("**Missing its partner: peer missing (peer-router.csv)**", self.markdown)
        self.assertIn("No CSV on either side: embedding, model.", self.markdown)
        self.assertIn("Not a known family, not compared: jk-unknown.csv.", self.markdown)

    def test_every_summary_row_expected(self):
        self.assertEqual(len(self.rows), 6 + 4 + 3 + 2 + 1 + 3)  # router: 3 shapes (its simple row is a variant)

    def test_markdown_table(self):
        md = self.markdown
        self.assertIn("| op | B | T | ours tuned | ours wgmma | peer hf | ours best | peer best | ours/peer |", md)
        self.assertIn("| train.fwd+bwd | 2 | 4096 | 200.0 (10.00) | 400.0 (5.00) | 200.0 (20.00) | wgmma | hf | 2.00 |",
                      md)
        self.assertIn("| train.bwd | 2 | 4096 | 150.0 (30.00) | 160.0 (20.00) | - | wgmma | - | ours only |", md)
        self.assertIn("| train.fwd | 4 | 4096 | - | - | 250.0 (20.00) | - | hf | peer only |", md)
        self.assertIn("| train.fwd | 8 | 16 | 0 (2.00) | - | 0 (6.00) | tuned | hf | 3.00 (from times) |", md)
        self.assertIn("**tokens/s** (each cell: tokens/s, in brackets the time in ms", md)
        self.assertIn("| op | B | T | ours tuned | ours graph | peer hf | ours best | peer best | ours/peer |", md)
        self.assertIn("| decode.step | 1 | 4096 | 1000 (1.00) | 3000 (0.333) | 1500 (0.667) | graph | hf | 2.00 |", md)
        self.assertIn("shapes: 4 compared, 1 ours only, 1 peer only.", md)


class RunScriptTest(unittest.TestCase):
    """run_gpu_bench.sh with fake programs: no GPU and no torch needed."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="run_gpu_bench_test.")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def executable(self, path, text):
        write(path, text)
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def test_sweep(self):
        build = os.path.join(self.tmp, "build")
        out = os.path.join(self.tmp, "out")
        os.makedirs(os.path.join(build, "kernels"))
        os.makedirs(out)
        write(os.path.join(out, "jk-attention.csv"), "stale\n")  # must be removed before the run
        bench = os.path.join(build, "kernels", "jetmoe-%s-bench")
        self.executable(bench % "layer", "#!/bin/sh\necho \"$@\" > %s/layer-args\n"
                        "while [ $# -gt 0 ]; do [ \"$1\" = --out ] && out=$2; shift; done\n"
                        "printf '%s\\n%s\\n' > \"$out\"\necho layer bench done\n"
                        % (self.tmp, LAYER_COLS, layer_row("train.fwd+bwd", 2, 4096, 5.0, 1638400, 400.0)))
        self.executable(bench % "attention", "#!/bin/sh\necho 'no CUDA device: exit 77'\nexit 77\n")
        self.executable(bench % "grouped-gemm", "#!/bin/sh\nexec sleep 30\n")
        # (no jetmoe-kernels-bench: missing)
        python = os.path.join(self.tmp, "python")
        self.executable(python, "#!/bin/sh\n"
                        "case \"$1\" in *compare_gpu.py) exec %s \"$@\";; -c) echo fake torch; exit 0;; esac\n"
                        "script=$1; shift\necho \"$@\" > %s/peer-args\n"
                        "while [ $# -gt 0 ]; do [ \"$1\" = --out ] && out=$2; shift; done\n"
                        "case \"$script\" in\n"
                        "  *peer_layer.py) printf '%s\\n%s\\n' > \"$out\";;\n"
                        "  *peer_attention.py) echo 'Traceback: boom' >&2; exit 1;;\n"
                        "  *) echo 'no CUDA device; exit 77'; exit 77;;\n"
                        "esac\n" % (sys.executable, self.tmp, LAYER_COLS,
                                    layer_row("train.fwd+bwd", 2, 4096, 20.0, 409600, 200.0)))
        env = dict(os.environ, BUILD=build, PYTHON=python, JETMOE_BENCH_TIMEOUT="1", JK_ARGS_layer="--reps 3",
                   PEER_ARGS_layer="--device cpu --reps 2")
        env.pop("BIN", None)  # the benches from $BUILD/kernels
        proc = subprocess.run(["bash", RUN, out, "layer", "attention", "grouped_gemm", "kernels"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
        self.assertEqual(proc.returncode, 1, proc.stdout)  # a failure, a timeout and a missing binary
        with open(os.path.join(out, "status.tsv")) as f:
            status = [line.rstrip("\n").split("\t") for line in f][1:]
        self.assertEqual([s[:3] for s in status], [
            ["jk-layer", "ok", "0"], ["peer-layer", "ok", "0"],
            ["jk-attention", "no-device", "77"], ["peer-attention", "failed", "1"],
            ["jk-grouped_gemm", "timeout", "124"], ["peer-grouped_gemm", "no-device", "77"],
            ["jk-kernels", "missing", "-"], ["peer-kernels", "no-peer", "-"]])
        self.assertFalse(os.path.exists(os.path.join(out, "jk-attention.csv")))  # the stale one is gone
        with open(os.path.join(out, "peer-attention.log")) as f:
            self.assertIn("Traceback: boom", f.read())
        with open(os.path.join(out, "jk-layer.log")) as f:
            self.assertIn("layer bench done", f.read())
        with open(os.path.join(self.tmp, "layer-args")) as f:
            self.assertEqual(f.read().strip(), "--out %s/jk-layer.csv --reps 3" % out)
        with open(os.path.join(self.tmp, "peer-args")) as f:  # the last peer run: grouped_gemm, no extra args
            self.assertEqual(f.read().strip(), "--out %s/peer-grouped_gemm.csv" % out)
        with open(os.path.join(out, "summary.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([(r["family"], r["key"], r["ratio"]) for r in rows],
                         [("layer", "op=train.fwd+bwd; B=2; T=4096", "2")])
        with open(os.path.join(out, "summary.md")) as f:
            md = f.read()
        self.assertIn("| jk-grouped_gemm | timeout | 124 |", md)
        self.assertIn("No CSV on either side: kernels, embedding, fused, router, grouped_gemm, attention, model.", md)

    def test_unknown_family(self):
        proc = subprocess.run(["bash", RUN, os.path.join(self.tmp, "out"), "layer", "nonsense"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("unknown family 'nonsense'", proc.stdout)


class RealPeerCsvTest(unittest.TestCase):
    """A real peer_layer.py CSV (CPU, tiny sizes) against itself renamed as ours: every ratio exactly 1."""

    def test_peer_layer_against_itself(self):
        python = os.environ.get("JETMOE_PEER_PYTHON", "/opt/oracle-venv/bin/python")
        if not os.path.exists(python):
            self.skipTest("no %s (set JETMOE_PEER_PYTHON)" % python)
        probe = subprocess.run([python, "-c", "import torch, transformers.models.jetmoe"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
        if probe.returncode != 0:
            self.skipTest("%s lacks torch / transformers" % python)
        tmp = tempfile.mkdtemp(prefix="compare_gpu_real.")
        try:
            peer = os.path.join(tmp, "peer-layer.csv")
            proc = subprocess.run(
                [python, os.path.join(REPO, "kernels", "bench", "peer_layer.py"), "--device", "cpu", "--hidden", "32",
                 "--experts", "4", "--kv-heads", "2", "--head-dim", "8", "--ffn", "24", "--seq", "16", "--batches", "1",
                 "2", "--decode-batches", "1", "2", "--context", "16", "--reps", "2", "--out", peer],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
            self.assertEqual(proc.returncode, 0, proc.stdout)
            shutil.copy(peer, os.path.join(tmp, "jk-layer.csv"))
            _, rows = run_compare(tmp)
            self.assertEqual(len(rows), 6)  # train.fwd and train.fwd+bwd at B 1 and 2, decode.step at B 1 and 2
            for r in rows:
                self.assertEqual((r["family"], r["ours_best_variant"], r["peer_best_variant"]),
                                 ("layer", "tuned", "hf"))
                self.assertEqual(float(r["ratio"]), 1.0, r)
                self.assertEqual(r["ours_metric"], r["peer_metric"], r)
                # tiny shapes round TFLOP/s to 0.000: the train rows' ratio comes from the times
                self.assertEqual(r["note"], "ratio from times (throughput 0)" if r["key"].startswith("op=train")
                                 else "", r)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
