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

and, for the same labelled batch, the ORIGINAL JetMoE router losses (docs/jetmoe-spec.md section 4, "Original JetMoE
code"), computed per router from its fp32 logits X [N=B*T, E] (train mode, padding not masked):
    p = softmax(X), P_e = mean_t p_te, f_e = #{(t, slot): top-k(X_t) picks e} / (N*k) (a constant, no gradient),
    switch = E * sum_e P_e f_e,  z = mean_t logsumexp(X_t)^2
  aux.switch           float32 [1]          sum of switch over the 2L routers (layer 0 MoA, layer 0 MoE, layer 1 ...)
  aux.z                float32 [1]          sum of z over the 2L routers
  aux.switch_per_router, aux.z_per_router
                       float32 [L, 2]       the per-router terms ([:, 0] MoA, [:, 1] MoE)
  aux.coef_switch, aux.coef_z
                       float32 [1]          0.01 and 0.001
  loss_total           float32 [1]          loss + coef_switch * aux.switch + coef_z * aux.z
  grad_total.<param>   float32              d loss_total / d param (same names as grad.<param>)

For "base" and "untied" only, adamw.safetensors holds a 10-step AdamW training trajectory from the fixture's
weights (adamw_trajectory below; definitions also in its metadata key "oracle", a JSON string):
  batch.input_ids, batch.labels  int64 [10, 2, B, T]   step s, micro-batch m (labels: ids with 1..3 entries -100)
  micro.loss / micro.ce / micro.switch / micro.z       float32 [10, 2]   per micro-batch: CE + 0.01 sw + 0.001 z,
                                                      HF CE (mean over that micro-batch's targets), summed aux terms
  step.loss / step.ce / step.switch / step.z          float32 [10]      means over the 2 micro-batches
  step.grad_norm       float32 [10]         clip_grad_norm_'s pre-clip total norm of the accumulated gradient
  step.lr              float64 [10]         WSD learning rate used by step s
  hparams              float64 [13]         peak, beta1, beta2, eps, wd, max_norm, coef_switch, coef_z, W, D, total,
                                            r0, rf (ADAMW_HPARAMS)
  final.<param name>   float32              every parameter after the 10 optimizer steps

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
from safetensors.torch import load_file, save, save_file

import transformers
from transformers import GenerationConfig, JetMoeConfig, JetMoeForCausalLM

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "models")

B = 2            # batch
N_NEW = 6        # generated tokens
INIT_STD = 0.2   # std of every matrix and the embedding (much larger than initializer_range=0.01 on purpose)

# Original JetMoE aux loss (spec section 0/4): loss = CE + 0.01 * sum_routers switch + 0.001 * sum_routers z
AUX_COEF_SWITCH = 0.01
AUX_COEF_Z = 0.001

# The AdamW trajectory (adamw.safetensors) of the variants in ADAMW_VARIANTS. The order of these fields is the order
# of the float64 `hparams` vector.
ADAMW_VARIANTS = ("base", "untied")
ADAMW_STEPS = 10
ADAMW_MICRO = 2     # micro-batches per step (gradient accumulation, mean)
ADAMW_HPARAMS = [
    ("peak", 1e-3, "peak learning rate of the WSD schedule"),
    ("beta1", 0.9, "AdamW beta1"),
    ("beta2", 0.95, "AdamW beta2"),
    ("eps", 1e-8, "AdamW eps (added to sqrt(v_hat))"),
    ("wd", 0.1, "decoupled weight decay of the ndim>=2 group (matrices, embedding, untied lm_head); 0 for ndim==1"),
    # max_norm: the spec default 1.0 would clip every step here (pre-clip norms 4.3 .. 7.2); 5.85 clips some steps and
    # not others (base: 8 of 10, untied: 2 of 10), every norm at least 2% away from it
    ("max_norm", 5.85, "clip_grad_norm_ max_norm over all parameters: g *= min(1, max_norm / (norm + 1e-6))"),
    ("coef_switch", AUX_COEF_SWITCH, "weight of the summed switch (load-balancing) terms"),
    ("coef_z", AUX_COEF_Z, "weight of the summed z terms"),
    ("W", 3.0, "WSD warmup steps"),
    ("D", 4.0, "WSD decay steps"),
    ("total", float(ADAMW_STEPS), "total steps"),
    ("r0", 0.1, "WSD initial ratio: lr(0) = r0 * peak"),
    ("rf", 0.1, "WSD final ratio: lr = peak * rf ** ((s - (total - D)) / D) in the decay"),
]

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


def capture_routers(model):
    """Forward hooks that record every router's fp32 logits (output 4 of JetMoeTopKGating), KEPT in the autograd
    graph, under (layer, 0 = MoA / 1 = MoE). Returns (store, hooks); each router must fire once per forward."""
    store, hooks = {}, []

    def put(key, o):
        assert key not in store, f"router {key} called twice in one forward"
        assert o[4].dtype == torch.float32
        store[key] = o[4]

    for l, layer in enumerate(model.model.layers):
        hooks.append(layer.self_attention.experts.router.register_forward_hook(
            lambda m, i, o, l=l: put((l, 0), o)))
        hooks.append(layer.mlp.router.register_forward_hook(lambda m, i, o, l=l: put((l, 1), o)))
    return store, hooks


def router_aux_terms(X, k):
    """Original JetMoE router loss terms of one router, X = fp32 logits [N, E] over all N = B*T tokens (no padding
    mask). Returns (switch, z), 0-dim tensors in the graph of X."""
    N, E = X.shape
    p = torch.softmax(X, dim=1)
    P = p.mean(dim=0)                                                   # [E] mean router probability
    idx = torch.topk(X.detach(), k, dim=1).indices                      # top-k of the logits
    f = torch.bincount(idx.reshape(-1), minlength=E).to(X.dtype) / (N * k)   # constant: no gradient
    switch = E * (P * f).sum()
    z = torch.logsumexp(X, dim=1).square().mean()
    return switch, z


def aux_loss(store, L, k):
    """Sums of the switch and z terms over the 2L routers in the order (0, MoA), (0, MoE), (1, MoA), ...;
    plus the per-router values [L, 2] (detached)."""
    assert sorted(store) == [(l, j) for l in range(L) for j in (0, 1)], sorted(store)
    switch_sum = z_sum = None
    per_s, per_z = torch.zeros(L, 2), torch.zeros(L, 2)
    for l in range(L):
        for j in (0, 1):
            sw, z = router_aux_terms(store[(l, j)], k)
            per_s[l, j], per_z[l, j] = sw.detach(), z.detach()
            switch_sum = sw if switch_sum is None else switch_sum + sw
            z_sum = z if z_sum is None else z_sum + z
    return switch_sum, z_sum, per_s, per_z


def check_aux_gradient(store, k, coef_s, coef_z):
    """The closed-form router-logit gradient of coef_s*switch + coef_z*z (spec section 4 "Gradients") equals autograd:
    dX_te = p_te * (G_e - sum_e' p_te' G_e') + coef_z * (2/N) * lse_t * p_te,  G_e = coef_s * E * f_e / N."""
    worst = 0.0
    for X in store.values():
        Xd = X.detach().double().requires_grad_(True)
        sw, z = router_aux_terms(Xd, k)
        (g_auto,) = torch.autograd.grad(coef_s * sw + coef_z * z, Xd)
        N, E = Xd.shape
        with torch.no_grad():
            p = torch.softmax(Xd, 1)
            f = torch.bincount(torch.topk(Xd, k, dim=1).indices.reshape(-1), minlength=E).double() / (N * k)
            G = coef_s * E * f / N
            g = p * (G[None, :] - (p * G[None, :]).sum(1, keepdim=True)) \
                + coef_z * 2.0 / N * torch.logsumexp(Xd, 1, keepdim=True) * p
        worst = max(worst, ((g - g_auto).abs().max() / g_auto.abs().max()).item())
    assert worst < 1e-12, worst
    return worst


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

    # --- the same batch again with the original JetMoE aux loss (a separate pass, so the CE-only keys above stay as
    #     they were): loss_total = CE + coef_s * sum_routers switch + coef_z * sum_routers z
    model.train()
    store, hooks = capture_routers(model)
    out = model(input_ids, labels=labels, use_cache=False)
    for h in hooks:
        h.remove()
    assert torch.equal(out.loss.detach().reshape(1), ref["loss"]), "second training pass: CE differs"
    for (l, j), X in store.items():
        assert torch.equal(X.detach(), ref[f"router_logits.{l}.{('attn', 'mlp')[j]}"]), (l, j)
    switch, z, per_s, per_z = aux_loss(store, L, cfg.num_experts_per_tok)
    total = out.loss + AUX_COEF_SWITCH * switch + AUX_COEF_Z * z
    stats["aux_grad_closed_form"] = check_aux_gradient(store, cfg.num_experts_per_tok, AUX_COEF_SWITCH, AUX_COEF_Z)
    total.backward()
    model.eval()
    ref["aux.switch"] = switch.detach().float().reshape(1).clone()
    ref["aux.z"] = z.detach().float().reshape(1).clone()
    ref["aux.switch_per_router"] = per_s
    ref["aux.z_per_router"] = per_z
    ref["aux.coef_switch"] = torch.tensor([AUX_COEF_SWITCH], dtype=torch.float32)
    ref["aux.coef_z"] = torch.tensor([AUX_COEF_Z], dtype=torch.float32)
    ref["loss_total"] = total.detach().float().reshape(1).clone()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        ref[f"grad_total.{name}"] = p.grad.float().clone()
    model.zero_grad(set_to_none=True)
    return ref, stats


# ----------------------------------------------------------------------------------------------- AdamW trajectory
def wsd_lr(s, hp):
    """WSD learning rate of step s = 0 .. total-1 (set before optimizer.step() of step s)."""
    peak, W, D, total, r0, rf = hp["peak"], int(hp["W"]), int(hp["D"]), int(hp["total"]), hp["r0"], hp["rf"]
    if s < W:
        return peak * (r0 + (1.0 - r0) * s / W)
    if s < total - D:
        return peak
    return peak * rf ** ((s - (total - D)) / D)


def adamw_batches(v):
    """Token ids [steps, micro, B, T] from a fixed generator; labels = ids with 1..3 positions per micro-batch set to
    -100 (never column 0, which is no target anyway), so micro-batches have different target counts."""
    gen = torch.Generator().manual_seed(v["seed"] + 500)
    T, V = v["T"], v["vocab_size"]
    ids = torch.randint(0, V, (ADAMW_STEPS, ADAMW_MICRO, B, T), generator=gen, dtype=torch.int64)
    labels = ids.clone()
    for s in range(ADAMW_STEPS):
        for m in range(ADAMW_MICRO):
            n_ign = int(torch.randint(1, 4, (1,), generator=gen))
            for q in torch.randperm(B * (T - 1), generator=gen)[:n_ign].tolist():
                labels[s, m, q // (T - 1), 1 + q % (T - 1)] = -100
    return ids, labels


def manual_clip_and_adamw(params, decay_flags, state, step, lr, hp):
    """The same clip + AdamW as torch's single-tensor CPU path, written out op by op (to document it and to check
    that we know it): fp32 tensors, Python-double scalars."""
    with torch.no_grad():
        norms = [torch.linalg.vector_norm(p.grad, 2) for p in params]
        total = torch.linalg.vector_norm(torch.stack(norms), 2)
        coef = torch.clamp(hp["max_norm"] / (total + 1e-6), max=1.0)
        for p in params:
            p.grad.mul_(coef)
        b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
        t = step + 1
        for p, dec in zip(params, decay_flags):
            m, vv = state.setdefault(id(p), (torch.zeros_like(p), torch.zeros_like(p)))
            if dec:
                p.mul_(1.0 - lr * hp["wd"])
            m.lerp_(p.grad, 1.0 - b1)
            vv.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
            step_size = lr / (1.0 - b1 ** t)
            denom = (vv.sqrt() / (1.0 - b2 ** t) ** 0.5).add_(eps)
            p.addcdiv_(m, denom, value=-step_size)
    return total


def adamw_trajectory(d, v, hp, manual=False):
    """10 AdamW steps from the fixture's weights (as from_pretrained loads them), fp32, train() mode. Returns the
    tensors of adamw.safetensors. manual=True: the hand-written clip + AdamW instead of torch's."""
    model = JetMoeForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").train()
    L, k = model.config.num_hidden_layers, model.config.num_experts_per_tok
    named = list(model.named_parameters())   # tied head: lm_head.weight is not listed (same tensor as the embedding)
    params = [p for _, p in named]
    decay_flags = [p.ndim >= 2 for p in params]
    assert all(p.ndim in (1, 2, 3) for p in params)
    opt = None
    if not manual:
        opt = torch.optim.AdamW(
            [{"params": [p for p, dflag in zip(params, decay_flags) if dflag], "weight_decay": hp["wd"]},
             {"params": [p for p, dflag in zip(params, decay_flags) if not dflag], "weight_decay": 0.0}],
            lr=hp["peak"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"], foreach=False, fused=False)
    state = {}
    ids, labels = adamw_batches(v)
    S, M = ADAMW_STEPS, ADAMW_MICRO
    rec = {k_: torch.zeros(S, M) for k_ in ("micro.loss", "micro.ce", "micro.switch", "micro.z")}
    grad_norm, lrs = torch.zeros(S), torch.zeros(S, dtype=torch.float64)   # lr: the exact Python double used
    for s in range(S):
        model.zero_grad(set_to_none=True)
        for m in range(M):
            store, hooks = capture_routers(model)
            out = model(ids[s, m], labels=labels[s, m], use_cache=False)
            for h in hooks:
                h.remove()
            switch, z, _, _ = aux_loss(store, L, k)
            loss = out.loss + hp["coef_switch"] * switch + hp["coef_z"] * z
            (loss / M).backward()
            for key, val in (("loss", loss), ("ce", out.loss), ("switch", switch), ("z", z)):
                rec[f"micro.{key}"][s, m] = val.detach()
        lr = wsd_lr(s, hp)
        lrs[s] = lr
        if manual:
            grad_norm[s] = manual_clip_and_adamw(params, decay_flags, state, s, lr, hp)
        else:
            grad_norm[s] = torch.nn.utils.clip_grad_norm_(params, hp["max_norm"])
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
    out = {"batch.input_ids": ids, "batch.labels": labels, "step.lr": lrs, "step.grad_norm": grad_norm,
           "hparams": torch.tensor([val for _, val, _ in ADAMW_HPARAMS], dtype=torch.float64)}
    for key in ("loss", "ce", "switch", "z"):
        out[f"step.{key}"] = rec[f"micro.{key}"].mean(dim=1)
    out.update(rec)
    for name, p in named:
        out[f"final.{name}"] = p.detach().clone()
    return out


def adamw_metadata(variant):
    fields = [{"name": n, "value": val, "meaning": what} for n, val, what in ADAMW_HPARAMS]
    return {"variant": variant, "torch": torch.__version__, "transformers": transformers.__version__,
            "generator": "scripts/oracle/make_model_fixtures.py", "hparams_fields": fields,
            "micro_batches": ADAMW_MICRO, "steps": ADAMW_STEPS,
            "loss": "per micro-batch: HF CE (mean over its targets != -100) + coef_switch * sum_routers switch + "
                    "coef_z * sum_routers z (original JetMoE form on that micro-batch); backward of loss / micro_batches",
            "clip": "torch.nn.utils.clip_grad_norm_(all parameters, max_norm): per-tensor 2-norms, 2-norm of those; "
                    "g *= min(1, max_norm / (norm + 1e-6)); step.grad_norm is the pre-clip norm",
            "optimizer": "torch.optim.AdamW(foreach=False, fused=False), groups: ndim>=2 weight_decay=wd, ndim==1 0; "
                         "p *= 1 - lr*wd; m = lerp(m, g, 1-beta1); v = beta2*v + (1-beta2)*g*g; "
                         "p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps), t = step + 1",
            "lr": "WSD, step s: s<W: peak*(r0+(1-r0)*s/W); W<=s<total-D: peak; else peak*rf**((s-(total-D))/D)",
            "mode": "float32, train() (dropout 0), eager attention, 1 thread, deterministic algorithms"}


def make_adamw(d, variant, v):
    hp = {n: val for n, val, _ in ADAMW_HPARAMS}
    ref = adamw_trajectory(d, v, hp)
    meta = {"oracle": json.dumps(adamw_metadata(variant), sort_keys=True)}
    blob = save({k_: t.contiguous() for k_, t in ref.items()}, metadata=meta)
    # determinism: a second run from scratch gives the same bytes
    again = save({k_: t.contiguous() for k_, t in adamw_trajectory(d, v, hp).items()}, metadata=meta)
    assert blob == again, f"{variant}: the AdamW trajectory is not deterministic"
    clipped = int((ref["step.grad_norm"] > hp["max_norm"]).sum())
    assert 0 < clipped < ADAMW_STEPS, f"{variant}: max_norm {hp['max_norm']} clips {clipped} of {ADAMW_STEPS} steps"
    # the hand-written clip + AdamW reproduces torch's
    man = adamw_trajectory(d, v, hp, manual=True)
    diff = max((man[k_] - ref[k_]).abs().max().item() for k_ in ref if k_.startswith("final."))
    diff = max(diff, (man["step.grad_norm"] - ref["step.grad_norm"]).abs().max().item())
    assert diff < 1e-6, f"{variant}: manual AdamW differs from torch's by {diff}"
    with open(os.path.join(d, "adamw.safetensors"), "wb") as f:
        f.write(blob)
    init = load_file(os.path.join(d, "model.safetensors"))
    moved = max((ref[k_] - init[k_[6:]]).abs().max().item() for k_ in ref if k_.startswith("final."))
    return ref, hp, {"manual_vs_torch": diff, "max_param_change": moved}


def print_trajectory(variant, ref, hp, st):
    log(f"\nAdamW trajectory of {variant} (peak {hp['peak']:g}, max_norm {hp['max_norm']:g}, "
        f"{ADAMW_MICRO} micro-batches/step; manual AdamW vs torch: max |diff| {st['manual_vs_torch']:.1e}; "
        f"max |final - initial| {st['max_param_change']:.2e})")
    log(f"{'step':>4}{'lr':>11}{'loss':>10}{'ce':>10}{'switch':>10}{'z':>10}{'grad_norm':>11}  clipped")
    for s in range(ADAMW_STEPS):
        gn = ref["step.grad_norm"][s].item()
        log(f"{s:>4}{ref['step.lr'][s].item():>11.3e}{ref['step.loss'][s].item():>10.5f}"
            f"{ref['step.ce'][s].item():>10.5f}{ref['step.switch'][s].item():>10.5f}{ref['step.z'][s].item():>10.5f}"
            f"{gn:>11.5f}  {'yes' if gn > hp['max_norm'] else 'no'}")


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
                inc_full=stats["inc_vs_full"], aux_grad=stats["aux_grad_closed_form"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output folder (default tests/fixtures/models)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    os.makedirs(args.out, exist_ok=True)
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}")

    rows, trajectories = [], []
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
        if name in ADAMW_VARIANTS:
            trajectories.append((name,) + make_adamw(d, name, v))
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

    log("")
    log(f"{'fixture':<14}{'loss_total':>11}{'aux.switch':>11}{'aux.z':>10}{'routers':>8}"
        f"{'switch/router':>14}{'|aux grad - closed form|':>26}")
    for r in rows:
        ref = load_file(os.path.join(args.out, r["name"], "reference.safetensors"))
        nr = ref["aux.switch_per_router"].numel()
        log(f"{r['name']:<14}{ref['loss_total'].item():>11.5f}{ref['aux.switch'].item():>11.5f}"
            f"{ref['aux.z'].item():>10.5f}{nr:>8}{ref['aux.switch'].item() / nr:>14.4f}{r['aux_grad']:>26.1e}")
    for name, ref, hp, st in trajectories:
        print_trajectory(name, ref, hp, st)


if __name__ == "__main__":
    sys.exit(main())
