#!/usr/bin/env python3
"""Make the JetMoE reference fixtures under tests/fixtures/models/ from HF transformers' JetMoeForCausalLM.

Each fixture is a tiny random JetMoE model (config.json + safetensors weights, as save_pretrained writes them) plus
reference.safetensors with what HF computes from exactly those weights:

  input_ids            int64   [B, T]       the prompt batch (B=2, no padding)
  logits               float32 [B, T, V]    model(input_ids).logits, eval mode, no cache
  hidden_states.<i>    float32 [B, T, D]    output_hidden_states: i=0 embeddings, i=1..L-1 output of layer i-1,
                                            i=L the FINAL-NORMED last hidden state (HF replaces the last entry)
  prenorm_final        float32 [B, T, D]    output of the last layer before the final norm (forward hook)
  router_logits.<l>.attn / router_logits.<l>.mlp
                       float32 [B*T, E]     router logits of the MoA / MoE router of layer l (forward hooks), tokens
                                            flattened batch-major (row = b*T + t)
  greedy_ids           int64   [B, T+N]     model.generate(input_ids, max_new_tokens=N, do_sample=False,
                                            use_cache=True) with eos/pad disabled, so exactly N tokens are added
  incremental_logits   float32 [B, N, V]    logits of each generation step with the KV cache (step 0: the prefill's
                                            last position; step s>0: the single-token decode of greedy_ids[:, T+s-1])
  labels               int64   [B, T]       = input_ids with two entries set to -100 (ignored)
  loss                 float32 [1]          HF causal-LM cross entropy (logits[:, t] predicts labels[:, t+1], mean over
                                            targets != -100); aux loss disabled (output_router_logits=False)
  grad.<param name>    float32              d loss / d param for every parameter of model.named_parameters()
                                            (tied head: only model.embed_tokens.weight, holding both gradients)

Run with the venv described in README.md:  /opt/oracle-venv/bin/python scripts/oracle/make_model_fixtures.py
"""

import argparse
import copy
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import transformers
from transformers import GenerationConfig, JetMoeConfig, JetMoeForCausalLM

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "models")

B = 2            # batch
N_NEW = 6        # generated tokens
INIT_STD = 0.2   # std of every matrix and the embedding (much larger than initializer_range=0.01 on purpose)

# Variants that build a model of their own. T is the prompt length. Every value is a today's-HF JetMoeConfig key,
# except T and seed.
BASE = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_key_value_heads=2, kv_channels=8,
            intermediate_size=32, num_local_experts=4, num_experts_per_tok=2, rope_theta=10000.0,
            rms_norm_eps=1e-5, tie_word_embeddings=True, T=10, seed=1001)

VARIANTS = {
    # (a) the reference shape: 4 experts top-2 in MoA and MoE, 2 KV heads (4 query heads), tied head
    "base": dict(BASE),
    # (b) top-1 routing: one query slot, num_attention_heads = num_key_value_heads, the gate is always 1
    "top1": dict(vocab_size=80, hidden_size=24, num_hidden_layers=2, num_key_value_heads=2, kv_channels=8,
                 intermediate_size=24, num_local_experts=3, num_experts_per_tok=1, rope_theta=10000.0,
                 rms_norm_eps=1e-5, tie_word_embeddings=True, T=9, seed=1002),
    # (c) 3 of 5 experts, 3 layers, head_dim 4: 6 query heads over 2 KV heads
    "top3of5": dict(vocab_size=72, hidden_size=24, num_hidden_layers=3, num_key_value_heads=2, kv_channels=4,
                    intermediate_size=20, num_local_experts=5, num_experts_per_tok=3, rope_theta=10000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=True, T=8, seed=1003),
    # (d) odd hidden (33), odd expert width (27), odd vocab (101)
    "odd_sizes": dict(vocab_size=101, hidden_size=33, num_hidden_layers=2, num_key_value_heads=2, kv_channels=8,
                      intermediate_size=27, num_local_experts=4, num_experts_per_tok=2, rope_theta=10000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=True, T=11, seed=1004),
    # (e) untied LM head: lm_head.weight is stored and gets its own gradient
    "untied": dict(vocab_size=90, hidden_size=32, num_hidden_layers=2, num_key_value_heads=2, kv_channels=8,
                   intermediate_size=32, num_local_experts=4, num_experts_per_tok=2, rope_theta=10000.0,
                   rms_norm_eps=1e-5, tie_word_embeddings=False, T=12, seed=1005),
    # (f) rope_theta 500, 3 KV heads of dim 6 (6 query heads), and a LARGE final-norm eps (1e-2) so that using the
    #     config eps in the block norms (which HF fixes at 1e-6) or 1e-6 in the final norm is visible in the logits
    "rope500_kv3": dict(vocab_size=64, hidden_size=24, num_hidden_layers=2, num_key_value_heads=3, kv_channels=6,
                        intermediate_size=24, num_local_experts=4, num_experts_per_tok=2, rope_theta=500.0,
                        rms_norm_eps=1e-2, tie_word_embeddings=True, T=12, seed=1006),
}
# Variants derived from "base" (same weights, same inputs):
#   (g) base_bf16:    weights rounded to bf16 and stored as BF16; reference computed in fp32 from the rounded weights
#   (h) base_sharded: the base fp32 weights in 3 shards + model.safetensors.index.json
#   (i) base_oldkeys: the base model with config.json in the hub's old (Megatron-era) key names


def log(*a):
    print(*a, flush=True)


def make_config(v):
    kw = {k: val for k, val in v.items() if k not in ("T", "seed", "rope_theta")}
    return JetMoeConfig(
        **kw,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": float(v["rope_theta"])},
        bos_token_id=1, eos_token_id=2, pad_token_id=None,
        attention_dropout=0.0, output_router_logits=False,
        attn_implementation="eager",
    )


@torch.no_grad()
def init_weights(model, gen):
    """Non-trivial random weights: N(0, 0.2) matrices/embedding, biases N(0, 0.1), norm weights U(0.7, 1.3)."""
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(0.7 + 0.6 * torch.rand(p.shape, generator=gen))
        elif name.endswith(".bias"):
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(INIT_STD * torch.randn(p.shape, generator=gen))


def build(v):
    torch.manual_seed(v["seed"])
    model = JetMoeForCausalLM(make_config(v)).float()
    gen = torch.Generator().manual_seed(v["seed"])
    init_weights(model, gen)
    disable_eos(model)  # saved as generation_config.json: says how greedy_ids were made
    if v["tie_word_embeddings"]:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    else:
        assert model.lm_head.weight is not model.model.embed_tokens.weight
    ids_gen = torch.Generator().manual_seed(v["seed"] + 7)
    input_ids = torch.randint(0, v["vocab_size"], (B, v["T"]), generator=ids_gen, dtype=torch.int64)
    return model.eval(), input_ids


def disable_eos(model):
    # The configs keep bos=1/eos=2 like jetmoe-8b; generation must not stop early, so the generation config has no
    # eos and no pad id: generate() then always adds exactly N_NEW tokens (checked below).
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=None, pad_token_id=None,
                                               do_sample=False, use_cache=True)


def compute_reference(model, input_ids):
    """Everything HF computes for the fixture; model must be float32."""
    cfg = model.config
    L, T = cfg.num_hidden_layers, input_ids.shape[1]
    ref = {"input_ids": input_ids.clone()}

    # --- eval forward with hooks: router logits and the pre-final-norm hidden state
    captured = {}
    hooks = []
    for l, layer in enumerate(model.model.layers):
        hooks.append(layer.self_attention.experts.router.register_forward_hook(
            lambda m, i, o, l=l: captured.__setitem__(f"router_logits.{l}.attn", o[4].detach().clone())))
        hooks.append(layer.mlp.router.register_forward_hook(
            lambda m, i, o, l=l: captured.__setitem__(f"router_logits.{l}.mlp", o[4].detach().clone())))
    hooks.append(model.model.layers[-1].register_forward_hook(
        lambda m, i, o: captured.__setitem__("prenorm_final", (o[0] if isinstance(o, tuple) else o).detach().clone())))
    with torch.no_grad():
        out = model(input_ids, output_hidden_states=True, use_cache=False)
    for h in hooks:
        h.remove()
    ref["logits"] = out.logits.float().clone()
    assert len(out.hidden_states) == L + 1
    for i, h in enumerate(out.hidden_states):
        ref[f"hidden_states.{i}"] = h.float().clone()
    for k in sorted(captured):
        ref[k] = captured[k].float()
    for l in range(L):
        assert ref[f"router_logits.{l}.attn"].shape == (B * T, cfg.num_local_experts)

    # --- greedy generation with the KV cache (HF's own generate), with the per-step logits
    disable_eos(model)
    with torch.no_grad():
        g = model.generate(input_ids, max_new_tokens=N_NEW, do_sample=False, use_cache=True,
                           output_logits=True, return_dict_in_generate=True)
    greedy = g.sequences
    assert greedy.shape == (B, T + N_NEW), greedy.shape
    assert torch.equal(greedy[:, :T], input_ids)
    inc = torch.stack([s.float() for s in g.logits], dim=1)  # [B, N, V]
    assert inc.shape == (B, N_NEW, cfg.vocab_size)
    assert torch.equal(inc.argmax(-1), greedy[:, T:]), "generate() tokens are not the argmax of its logits"
    ref["greedy_ids"] = greedy.clone()
    ref["incremental_logits"] = inc.clone()

    # cross-check: a hand-written cached decode loop and a full no-cache forward over greedy_ids agree
    with torch.no_grad():
        o = model(input_ids, use_cache=True)
        past, steps = o.past_key_values, [o.logits[:, -1]]
        for s in range(1, N_NEW):
            o = model(greedy[:, T + s - 1:T + s], past_key_values=past, use_cache=True)
            past = o.past_key_values
            steps.append(o.logits[:, -1])
        loop = torch.stack(steps, 1)
        full = model(greedy, use_cache=False).logits[:, T - 1:T + N_NEW - 1]
    stats = {"inc_vs_loop": (loop - inc).abs().max().item(), "inc_vs_full": (full - inc).abs().max().item()}
    assert stats["inc_vs_loop"] < 1e-5 and stats["inc_vs_full"] < 1e-4, stats

    # --- training batch: CE loss and gradients (aux loss off)
    labels = input_ids.clone()
    labels[0, 3] = -100
    labels[1, T - 2] = -100
    ref["labels"] = labels
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(input_ids, labels=labels, use_cache=False)
    assert out.aux_loss is None, "aux loss must be off"
    assert torch.allclose(out.logits, ref["logits"], rtol=0, atol=1e-6), "train-mode logits differ from eval"
    # the recorded loss is plain CE over the shifted labels
    ce = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, cfg.vocab_size).float(),
                                           labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(ce, out.loss, rtol=1e-6, atol=0), (ce, out.loss)
    out.loss.backward()
    model.eval()
    ref["loss"] = out.loss.detach().float().reshape(1).clone()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        ref[f"grad.{name}"] = p.grad.float().clone()
    model.zero_grad(set_to_none=True)
    return ref, stats


def save_model(model, d, **kw):
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    model.save_pretrained(d, safe_serialization=True, **kw)


def save_reference(ref, d, variant, extra_meta=None):
    meta = {"variant": variant, "torch": torch.__version__, "transformers": transformers.__version__,
            "generator": "scripts/oracle/make_model_fixtures.py", "max_new_tokens": str(N_NEW),
            "attn_implementation": "eager"}
    if extra_meta:
        meta.update(extra_meta)
    # one metadata key: safetensors writes a multi-key metadata map in no fixed order, which would make the file
    # bytes differ between runs
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(d, "reference.safetensors"),
              metadata={"oracle": json.dumps(meta, sort_keys=True)})


def old_keys_config(new_cfg):
    """The jetmoe/jetmoe-8b hub config.json format: Megatron-era names, top-level rope_theta, torch_dtype."""
    c = new_cfg
    old = {
        "activation_function": c["activation_function"],
        "architectures": ["JetMoEForCausalLM"],
        "bos_token_id": c["bos_token_id"],
        "eos_token_id": c["eos_token_id"],
        "ffn_hidden_size": c["intermediate_size"],
        "hidden_size": c["hidden_size"],
        "initializer_range": c["initializer_range"],
        "kv_channels": c["kv_channels"],
        "layer_norm_epsilon": c["rms_norm_eps"],
        "model_type": "jetmoe",
        "moe_num_experts": c["num_local_experts"],
        "moe_top_k": c["num_experts_per_tok"],
        "n_positions": c["max_position_embeddings"],
        "num_attention_heads": c["num_attention_heads"],
        "num_key_value_heads": c["num_key_value_heads"],
        "num_layers": c["num_hidden_layers"],
        "rms_norm_eps": c["rms_norm_eps"],
        "rope_theta": c["rope_parameters"]["rope_theta"],
        "torch_dtype": "float32",
        "transformers_version": "4.40.0.dev0",
        "vocab_size": c["vocab_size"],
    }
    assert c["tie_word_embeddings"] is True  # like the hub's base config: the key is absent, the default (tied) holds
    return old


def shard_size_for(model, want=(3,)):
    """A max_shard_size (bytes) that makes save_pretrained write 3 shards."""
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    for frac in (0.36, 0.4, 0.45, 0.5, 0.3, 0.55):
        size = int(total * frac)
        tmp = "/tmp/jetmoe_shard_probe"
        save_model(model, tmp, max_shard_size=size)
        n = len([f for f in os.listdir(tmp) if f.endswith(".safetensors")])
        shutil.rmtree(tmp)
        if n in want:
            return size
    raise RuntimeError("no shard size gives 3 shards")


def summary_row(name, d, ref, stats):
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    cfg = json.load(open(os.path.join(d, "config.json")))
    L = sum(1 for k in ref if k.startswith("router_logits.") and k.endswith(".attn"))
    pairs = set()
    for l in range(L):
        for kind in ("attn", "mlp"):
            r = ref[f"router_logits.{l}.{kind}"]
            k = cfg.get("num_experts_per_tok") or cfg.get("moe_top_k")
            idx = torch.topk(r, k, dim=1).indices
            for row in idx.tolist():
                pairs.add((l, kind, tuple(sorted(row))))
    lg = ref["logits"]
    E = ref["router_logits.0.attn"].shape[1]
    return dict(name=name, kB=size / 1024, V=lg.shape[-1], T=ref["input_ids"].shape[1],
                sets=f"{len(pairs)}/{2 * L * math.comb(E, k)}", logit_std=lg.std().item(), loss=ref["loss"].item(),
                new=" ".join(str(x) for x in ref["greedy_ids"][0, -N_NEW:].tolist()),
                inc_full=stats["inc_vs_full"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output folder (default tests/fixtures/models)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    os.makedirs(args.out, exist_ok=True)
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}")

    rows = []
    base_model = base_ids = None
    for name, v in VARIANTS.items():
        model, ids = build(v)
        d = os.path.join(args.out, name)
        save_model(model, d)
        with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
            assert ("lm_head.weight" in f.keys()) == (not v["tie_word_embeddings"]), name
        ref, stats = compute_reference(model, ids)
        save_reference(ref, d, name)
        rows.append(summary_row(name, d, ref, stats))
        if name == "base":
            base_model, base_ids, base_ref, base_stats = model, ids, ref, stats

    # (g) bf16: store bf16-rounded weights; the reference is fp32 maths on those rounded values
    d = os.path.join(args.out, "base_bf16")
    m16 = copy.deepcopy(base_model).to(torch.bfloat16)
    save_model(m16, d)
    # Reload in float32 through from_pretrained: the rotary inv_freq buffer is then recomputed in fp32. (Do NOT use
    # m16.float(): Module.to(bfloat16) also rounds the non-persistent inv_freq buffer to bf16, and .float() keeps
    # the rounded frequencies, which moves the logits by ~5e-4 relative.)
    m32 = JetMoeForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    assert m32.model.rotary_emb.inv_freq.dtype == torch.float32
    for (n1, p1), (n2, p2) in zip(m16.named_parameters(), m32.named_parameters()):
        assert n1 == n2 and p2.dtype == torch.float32 and torch.equal(p1.float(), p2), n1
    ref, stats = compute_reference(m32, base_ids)
    save_reference(ref, d, "base_bf16", {"weights": "bf16-rounded, reference computed in float32"})
    rows.append(summary_row("base_bf16", d, ref, stats))

    # (h) sharded copy of base
    d = os.path.join(args.out, "base_sharded")
    save_model(base_model, d, max_shard_size=shard_size_for(base_model))
    save_reference(base_ref, d, "base_sharded")
    rows.append(summary_row("base_sharded", d, base_ref, base_stats))

    # (i) base with the hub's old config key names
    d = os.path.join(args.out, "base_oldkeys")
    save_model(base_model, d)
    new_cfg = json.load(open(os.path.join(d, "config.json")))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(old_keys_config(new_cfg), f, indent=2, sort_keys=True)
        f.write("\n")
    save_reference(base_ref, d, "base_oldkeys")
    rows.append(summary_row("base_oldkeys", d, base_ref, base_stats))

    # Every fixture except the old-key one reloads through HF's from_pretrained and reproduces its logits exactly.
    for r in rows:
        d = os.path.join(args.out, r["name"])
        if r["name"] == "base_oldkeys":
            continue
        m = JetMoeForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        ref = load_file(os.path.join(d, "reference.safetensors"))
        with torch.no_grad():
            lg = m(ref["input_ids"], use_cache=False).logits
        assert torch.equal(lg, ref["logits"]), r["name"]
    log("reload check: from_pretrained + forward reproduces the stored logits bit for bit (all but base_oldkeys)")

    log("")
    log(f"{'fixture':<14}{'kB':>7}{'V':>5}{'T':>4}{'routing sets':>14}{'logit std':>11}{'CE loss':>9}"
        f"{'|inc-full|':>12}  generated (row 0)")
    for r in rows:
        log(f"{r['name']:<14}{r['kB']:>7.1f}{r['V']:>5}{r['T']:>4}{r['sets']:>14}{r['logit_std']:>11.3f}"
            f"{r['loss']:>9.4f}{r['inc_full']:>12.2e}  {r['new']}")
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(args.out) for f in fs)
    log(f"total {total / 1024:.1f} kB in {args.out}")
    log("routing sets = distinct (layer, router, chosen-expert set) over the 2*T prompt tokens / all possible")


if __name__ == "__main__":
    sys.exit(main())
