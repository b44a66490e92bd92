#!/usr/bin/env python3
"""The peer of bench/bench_train.cpp: training-step throughput of Hugging Face transformers' JetMoeForCausalLM on
PyTorch (CPU), float32, random weights and random tokens.

    /opt/oracle-venv/bin/python scripts/bench/bench_hf_train.py --preset small --batch 4 --seq-len 256 \
        --steps 5 --threads 2 --json-out hf_train.json
    /opt/oracle-venv/bin/python scripts/bench/bench_hf_train.py --config tests/fixtures/models/base --steps 3

The model: --preset (the C++ presets of src/model/config.cpp: tiny, small, jetmoe-8b) or --config (an HF config.json,
or a directory holding one; only its shape is used), initialised with --seed: N(0, 0.01) for every matrix and the
embedding (and an untied lm_head), zeros for the MoA/MoE output biases, ones for the RMSNorm weights (spec section 0).

One training step (no gradient accumulation), timed in three phases with time.perf_counter():
  forward    optimizer.zero_grad(set_to_none=True); model(input_ids, labels=input_ids) in train() mode (HF shifts
             the labels; CE = mean over the B*(T-1) targets) + the ORIGINAL JetMoE router losses (spec section 4) from
             forward hooks on all 2L routers: per router p = softmax(X), P_e = mean_t p_te, f_e = top-k count / (N k)
             (no gradient), switch = E sum_e P_e f_e, z = mean_t logsumexp(X_t)^2;
             loss = CE + 0.01 sum switch + 0.001 sum z
  backward   loss.backward()
  optimizer  torch.nn.utils.clip_grad_norm_(parameters, --max-norm) + torch.optim.AdamW.step()
             (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on ndim >= 2, 0 on norms and biases; constant --lr;
             --adamw default: torch's choice, which on the CPU is the single-tensor loop; fused: fused=True)
Reported: median step time over --steps timed steps after --warmup untimed ones, tokens/s = batch * seq_len / median
step, the per-phase medians, model GFLOP/s (the C++ training_flops_per_token estimate: 6 x active matmul parameters
+ 6 L H d (T+1) attention per token), and this process's peak RSS (getrusage ru_maxrss).
"""
import argparse
import json
import os
import platform
import resource
import sys
import time

from bench_hf import cpu_seconds, current_rss_mib, median, peak_rss_mib

# src/model/config.cpp ModelConfig::preset (the other fields take the C++ defaults: rope_theta 1e4, rms_norm_eps 1e-5,
# tied embeddings, bos 1, eos 2)
PRESETS = {
    "tiny": dict(vocab_size=4096, hidden_size=128, num_hidden_layers=4, num_key_value_heads=4, kv_channels=16,
                 num_local_experts=4, num_experts_per_tok=2, intermediate_size=256, max_position_embeddings=512),
    "small": dict(vocab_size=32000, hidden_size=512, num_hidden_layers=6, num_key_value_heads=8, kv_channels=64,
                  num_local_experts=8, num_experts_per_tok=2, intermediate_size=768, max_position_embeddings=2048),
    "jetmoe-8b": dict(vocab_size=32000, hidden_size=2048, num_hidden_layers=24, num_key_value_heads=16,
                      kv_channels=128, num_local_experts=8, num_experts_per_tok=2, intermediate_size=5632,
                      max_position_embeddings=4096),
}
COEF_SWITCH, COEF_Z = 0.01, 0.001
BETAS, EPS, WEIGHT_DECAY = (0.9, 0.95), 1e-8, 0.1
INIT_STD = 0.01


def make_config(args):
    from transformers import JetMoeConfig
    if args.config:
        path = os.path.join(args.config, "config.json") if os.path.isdir(args.config) else args.config
        cfg = JetMoeConfig.from_json_file(path)
    else:
        cfg = JetMoeConfig(**PRESETS[args.preset], rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                           rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                           pad_token_id=None, initializer_range=INIT_STD)
    cfg.output_router_logits = False   # HF's own (Mixtral-style) aux loss off: we add the original form
    cfg.attention_dropout = 0.0
    cfg.use_cache = False
    return cfg


def active_parameter_count(cfg):
    """ModelConfig::active_parameter_count of src/model/config.cpp."""
    D, H, d, E, k, F, V = (cfg.hidden_size, cfg.num_key_value_heads, cfg.kv_channels, cfg.num_local_experts,
                           cfg.num_experts_per_tok, cfg.intermediate_size, cfg.vocab_size)
    A = H * d
    per_layer = 2 * D + E * D + 2 * k * A * D + D + 2 * A * D + E * D + k * 3 * F * D + D
    return V * D * (1 if cfg.tie_word_embeddings else 2) + cfg.num_hidden_layers * per_layer + D


def training_flops_per_token(cfg, T):
    """training_flops_per_token of src/train/network.cpp."""
    gather = 0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size
    heads = cfg.num_key_value_heads * cfg.num_experts_per_tok
    return 6.0 * (active_parameter_count(cfg) - gather) + 6.0 * cfg.num_hidden_layers * heads * cfg.kv_channels * (T + 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--config", help="HF config.json (or a directory with one): the model shape")
    src.add_argument("--preset", choices=sorted(PRESETS), default="small", help="a C++ preset (default small)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    ap.add_argument("--seed", type=int, default=1234, help="weights and tokens")
    ap.add_argument("--lr", type=float, default=1e-4, help="constant learning rate (the C++ benchmark's)")
    ap.add_argument("--max-norm", type=float, default=1.0, help="global gradient-norm clipping")
    ap.add_argument("--attn", default="sdpa", choices=["eager", "sdpa"], help="transformers attention implementation")
    ap.add_argument("--adamw", default="default", choices=["default", "fused"],
                    help="torch.optim.AdamW implementation (default: torch's choice; fused: fused=True)")
    ap.add_argument("--json-out", help="write the raw results here")
    args = ap.parse_args()
    if args.steps < 1 or args.batch < 1 or args.seq_len < 2:
        ap.error("need --steps >= 1, --batch >= 1, --seq-len >= 2")

    rss_start = current_rss_mib()
    import torch
    import transformers
    from transformers import JetMoeForCausalLM

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    rss_after_import = current_rss_mib()

    t0 = time.perf_counter()
    cfg = make_config(args)
    torch.manual_seed(args.seed)
    model = JetMoeForCausalLM._from_config(cfg, attn_implementation=args.attn, dtype=torch.float32)
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, INIT_STD, generator=gen)
    model.train()
    params = list(model.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    kw = {"fused": True} if args.adamw == "fused" else {}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=BETAS, eps=EPS, **kw)
    B, T, V = args.batch, args.seq_len, cfg.vocab_size
    k = cfg.num_experts_per_tok
    ids = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    setup_seconds = time.perf_counter() - t0
    rss_after_setup = current_rss_mib()

    # router logits of every router, kept in the graph
    routers = []
    for layer in model.model.layers:
        for gate in (layer.self_attention.experts.router, layer.mlp.router):
            gate.register_forward_hook(lambda m, i, o: routers.append(o[4]))

    def router_terms(X):
        N, E = X.shape
        P = torch.softmax(X, dim=1).mean(dim=0)
        f = torch.bincount(torch.topk(X.detach(), k, dim=1).indices.reshape(-1), minlength=E).to(X.dtype) / (N * k)
        return E * (P * f).sum(), torch.logsumexp(X, dim=1).square().mean()

    phases = {"forward": [], "backward": [], "optimizer": []}
    steps_s, cpu_s, losses = [], [], []
    for s in range(args.warmup + args.steps):
        w0, c0 = time.perf_counter(), cpu_seconds()
        opt.zero_grad(set_to_none=True)
        routers.clear()
        out = model(input_ids=ids, labels=ids, use_cache=False)
        assert len(routers) == 2 * cfg.num_hidden_layers, len(routers)
        switch = z = 0.0
        for X in routers:
            a, b = router_terms(X)
            switch, z = switch + a, z + b
        loss = out.loss + COEF_SWITCH * switch + COEF_Z * z
        w1 = time.perf_counter()
        loss.backward()
        w2 = time.perf_counter()
        gnorm = torch.nn.utils.clip_grad_norm_(params, args.max_norm)
        opt.step()
        w3, c3 = time.perf_counter(), cpu_seconds()
        routers.clear()
        losses.append(dict(loss=loss.detach().item(), ce=out.loss.detach().item(), switch=switch.detach().item(),
                           z=z.detach().item(), grad_norm=gnorm.item()))
        if s >= args.warmup:
            phases["forward"].append(w1 - w0)
            phases["backward"].append(w2 - w1)
            phases["optimizer"].append(w3 - w2)
            steps_s.append(w3 - w0)
            cpu_s.append(c3 - c0)
    peak = peak_rss_mib()

    med = median(steps_s)
    tokens_per_s = B * T / med
    flops = training_flops_per_token(cfg, T) * B * T / med
    n_params = sum(p.numel() for p in params)
    env = {
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "attn_implementation": args.attn, "adamw": args.adamw, "blas": "MKL" if torch.backends.mkl.is_available() else "?",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""), "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", ""),
        "cores_online": os.cpu_count(),
    }
    name = args.config or args.preset
    print(f"bench_hf_train.py: transformers {transformers.__version__} JetMoeForCausalLM on torch {torch.__version__} "
          f"(CPU, {env['blas']}, {env['cpu_capability']}), float32, attn_implementation={args.attn}, "
          f"threads {env['torch_threads']}")
    print(f"model {name}: L={cfg.num_hidden_layers} D={cfg.hidden_size} E={cfg.num_local_experts} "
          f"k={k} F={cfg.intermediate_size} V={V}, {n_params / 1e6:.1f}M parameters "
          f"({active_parameter_count(cfg) / 1e6:.1f}M active); setup {setup_seconds:.2f} s")
    print(f"batch {B} x seq {T}, {args.steps} timed steps after {args.warmup} warm-up")
    print(f"  step median {med:.4f} s (min {min(steps_s):.4f}, max {max(steps_s):.4f}) | {tokens_per_s:.1f} tokens/s | "
          f"{flops / 1e9:.2f} GFLOP/s model | cpu/wall {median(cpu_s) / med:.2f} | peak RSS {peak:.1f} MiB")
    print(f"  {'phase':<10} {'median s':>10} {'share':>7}")
    for ph, v in phases.items():
        print(f"  {ph:<10} {median(v):>10.4f} {median(v) / med:>7.1%}")
    print(f"  loss {losses[0]['loss']:.4f} -> {losses[-1]['loss']:.4f} (ce {losses[0]['ce']:.4f} -> "
          f"{losses[-1]['ce']:.4f}; first and last step)")

    result = {
        "impl": f"hf-transformers-{args.attn}",
        "model": name, "preset": None if args.config else args.preset,
        "config": {k_: getattr(cfg, k_) for k_ in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                  "num_key_value_heads", "kv_channels", "num_local_experts",
                                                  "num_experts_per_tok", "intermediate_size", "tie_word_embeddings")},
        "parameters": n_params, "active_parameters": active_parameter_count(cfg),
        "batch": B, "seq_len": T, "steps": args.steps, "warmup": args.warmup, "threads": env["torch_threads"],
        "seed": args.seed, "lr": args.lr, "max_norm": args.max_norm,
        "step_seconds": steps_s, "step_median_s": med, "tokens_per_s": tokens_per_s, "model_gflops": flops / 1e9,
        "phases_median_s": {ph: median(v) for ph, v in phases.items()},
        "phases_seconds": phases, "step_cpu_seconds": cpu_s,
        "peak_rss_mb": peak, "rss_at_start_mib": rss_start, "rss_after_import_mib": rss_after_import,
        "rss_after_setup_mib": rss_after_setup, "setup_seconds": setup_seconds,
        "loss_first": losses[0]["loss"], "loss_last": losses[-1]["loss"], "per_step": losses,
        "process_cpu_seconds": cpu_seconds(),
        "environment": env,
    }
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"raw results: {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
