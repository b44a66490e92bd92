#!/usr/bin/env python3
"""An independent NumPy implementation of the JetMoE forward pass, written from docs/jetmoe-spec.md (section 3),
and a checker that compares it with the HF-made fixtures in tests/fixtures/models/.

It uses only NumPy and the standard library (no torch, no transformers, no safetensors package): it reads
config.json (today's HF key names or the hub's old ones), safetensors files (single file or sharded with
model.safetensors.index.json; F32, BF16, F16, I64) by parsing the format itself, and computes in float64.

    python3 scripts/oracle/numpy_reference.py                 # check every fixture, print a table
    python3 scripts/oracle/numpy_reference.py base top1       # some of them
    python3 scripts/oracle/numpy_reference.py --mutations     # which fixture catches which deliberate mistake
    python3 scripts/oracle/numpy_reference.py --grads         # finite differences against the stored gradients
                                                              # (grad.* of the CE loss and grad_total.* of loss_total)

The maths, per block (pre-norm, two residual adds), for N = B*T tokens:
    u      = RMSNorm(x; eps=1e-6) * w_in                        (block norms: eps fixed at 1e-6, as HF builds them)
    r      = u W_r^T                                            MoA router logits [N, E]
    e_j    = top-k of r (descending), g = softmax(r[e_j])       softmax over the selected k only
    q_j    = u W_q[e_j]^T, Q = [q_0 | ... | q_{k-1}]             query head i = j*H_kv + h
    [K|V]  = u W_kv^T                                           K rows first, then V
    RoPE (half split / rotate_half) on Q and K, positions 0..T-1 (past_len + t when cached)
    query head i attends with KV head i mod H_kv                 (TILED, not repeat_interleave)
    S = Q K^T / sqrt(d) + causal mask, softmax, O = S V
    attn   = sum_j g_j * (O_j W_o[e_j]^T) + b_attn             O_j = heads j*H_kv .. j*H_kv+H_kv-1, head-major
    x     += attn
    w      = RMSNorm(x; eps=1e-6) * w_post
    MoE router on w (same top-k/softmax), per chosen expert: z = w W_in[e]^T, h = silu(z[:F]) * z[F:],
    mlp    = sum_j g'_j * (h_j W_out[e'_j]^T) + b_mlp
    x     += mlp
  final:  RMSNorm(x; eps=config.rms_norm_eps) * w_final, logits = h E^T (tied) or h W_lm^T (untied).

Aux loss, the original JetMoE form (spec section 4), per router with logits X [N, E] over all N = B*T tokens:
    p = softmax(X), P_e = mean_t p_te, f_e = #{(t, slot): e among the top-k of X_t} / (N k),
    switch = E sum_e P_e f_e,  z = mean_t logsumexp(X_t)^2;   summed over the 2L routers;
    loss_total = CE + coef_switch * sum switch + coef_z * sum z   (coefficients 0.01, 0.001, stored in the fixture)
"""

import json
import os
import struct
import sys

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.environ.get("JETMOE_FIXTURES", os.path.join(REPO, "tests", "fixtures", "models"))
BLOCK_NORM_EPS = 1e-6


# ----------------------------------------------------------------------------------------------- file reading
def read_safetensors(path):
    """{name: np.ndarray} from one .safetensors file. BF16/F16 are widened to float32, exactly."""
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        shape = tuple(info["shape"])
        dt = info["dtype"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dt == "F64":
            arr = np.frombuffer(raw, dtype="<f8")
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt == "I64":
            arr = np.frombuffer(raw, dtype="<i8")
        elif dt == "I32":
            arr = np.frombuffer(raw, dtype="<i4")
        else:
            raise ValueError(f"{path}: {name}: dtype {dt} not handled")
        out[name] = arr.reshape(shape).copy()
    return out


def read_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        weight_map = json.load(open(index))["weight_map"]
        w = {}
        for shard in sorted(set(weight_map.values())):
            part = read_safetensors(os.path.join(model_dir, shard))
            for k, v in part.items():
                assert weight_map[k] == shard, (k, shard)
            w.update(part)
        assert set(w) == set(weight_map), "index and shards disagree"
        return w
    return read_safetensors(os.path.join(model_dir, "model.safetensors"))


def read_config(model_dir):
    """Today's HF names first, then the hub's old ones (spec section 1)."""
    j = json.load(open(os.path.join(model_dir, "config.json")))

    def get(*names, default=None):
        for n in names:
            if n in j and j[n] is not None:
                return j[n]
        if default is None:
            raise KeyError(names)
        return default

    rope = j.get("rope_parameters") or {}
    c = dict(
        vocab_size=get("vocab_size"),
        hidden_size=get("hidden_size"),
        num_layers=get("num_hidden_layers", "num_layers"),
        num_kv_heads=get("num_key_value_heads"),
        head_dim=get("kv_channels", "head_dim"),
        num_experts=get("num_local_experts", "moe_num_experts", default=8),
        top_k=get("num_experts_per_tok", "moe_top_k", default=2),
        ffn=get("intermediate_size", "ffn_hidden_size", default=5632),
        rope_theta=float(rope.get("rope_theta", j.get("rope_theta", 10000.0))),
        rms_norm_eps=float(get("rms_norm_eps", default=1e-6)),
        tie=bool(j.get("tie_word_embeddings", True)),
    )
    assert c["top_k"] <= c["num_experts"]
    return c


# ----------------------------------------------------------------------------------------------- the model
def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(a):
    return a / (1.0 + np.exp(-a))


def route(x, w_router, k, full_softmax=False):
    """Router logits [N,E], chosen experts [N,k] (descending logit, ties to the lower index), gates [N,k]."""
    logits = x @ w_router.T
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    if full_softmax:  # mutation: gates = the top-k entries of the softmax over ALL experts (not renormalised)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return logits, order, np.take_along_axis(p / p.sum(axis=1, keepdims=True), order, axis=1)
    top = np.take_along_axis(logits, order, axis=1)
    g = np.exp(top - top.max(axis=1, keepdims=True))
    return logits, order, g / g.sum(axis=1, keepdims=True)


def rope(v, pos, theta, interleaved=False):
    """v [..., T, d] (T on axis -2), half-split layout (interleaved=True: the GPT-J pair layout, a mutation)."""
    d = v.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, None].astype(np.float64) * inv[None, :]          # [T, d/2]
    if interleaved:
        a, b = v[..., 0::2], v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2] = a * np.cos(ang) - b * np.sin(ang)
        out[..., 1::2] = b * np.cos(ang) + a * np.sin(ang)
        return out
    cos = np.concatenate([np.cos(ang)] * 2, axis=-1)
    sin = np.concatenate([np.sin(ang)] * 2, axis=-1)
    h = d // 2
    rot = np.concatenate([-v[..., h:], v[..., :h]], axis=-1)
    return v * cos + rot * sin


# Deliberate deviations from the spec, to show which fixture detects which mistake (see --mutations).
MUTATIONS = {
    "kv_interleave": "query head i uses KV head i // top_k (Llama repeat_kv) instead of i mod H_kv",
    "block_eps_config": "block norms use config.rms_norm_eps instead of 1e-6",
    "final_eps_1e-6": "final norm uses 1e-6 instead of config.rms_norm_eps",
    "glu_up_first": "SiLU on the second half of input_linear instead of the first",
    "no_moa_bias": "MoA output bias not added",
    "no_moe_bias": "MoE output bias not added",
    "full_softmax_gates": "gates = top-k of the softmax over all experts, not renormalised",
    "rope_interleaved": "RoPE on (even, odd) pairs instead of the half split",
    "untied_as_tied": "logits from the embedding even when lm_head.weight exists",
    "kv_order_vk": "kv_proj rows: V first, then K",
    "rope_theta_10000": "rope_theta 10000 whatever the config says (e.g. a reader that misses rope_parameters)",
}


class JetMoe:
    def __init__(self, model_dir, dtype=np.float64, mutation=None):
        assert mutation is None or mutation in MUTATIONS, mutation
        self.mut = mutation
        self.c = read_config(model_dir)
        self.w = {k: v.astype(dtype) for k, v in read_weights(model_dir).items()}
        c = self.c
        if c["tie"] or mutation == "untied_as_tied":
            assert mutation or "lm_head.weight" not in self.w, "tied model stores lm_head.weight"
            self.head = self.w["model.embed_tokens.weight"]
        else:
            self.head = self.w["lm_head.weight"]
        D, E, H, d, F = c["hidden_size"], c["num_experts"], c["num_kv_heads"], c["head_dim"], c["ffn"]
        for l in range(c["num_layers"]):
            p = f"model.layers.{l}."
            assert self.w[p + "self_attention.experts.input_linear.weight"].shape == (E, H * d, D)
            assert self.w[p + "self_attention.experts.output_linear.weight"].shape == (E, D, H * d)
            assert self.w[p + "self_attention.kv_proj.weight"].shape == (2 * H * d, D)
            assert self.w[p + "mlp.input_linear.weight"].shape == (E, 2 * F, D)
            assert self.w[p + "mlp.output_linear.weight"].shape == (E, D, F)

    def new_cache(self):
        return [dict(k=None, v=None) for _ in range(self.c["num_layers"])]

    def forward(self, ids, cache=None):
        """ids [B, T] int. With cache (list from new_cache), appends to it and uses past positions.
        Returns dict: logits [B,T,V], hidden_states list (HF convention), prenorm_final, router_logits."""
        c, w, mut = self.c, self.w, self.mut
        beps = c["rms_norm_eps"] if mut == "block_eps_config" else BLOCK_NORM_EPS
        feps = 1e-6 if mut == "final_eps_1e-6" else c["rms_norm_eps"]
        fsm = mut == "full_softmax_gates"
        B, T = ids.shape
        E, k, H, d, F = c["num_experts"], c["top_k"], c["num_kv_heads"], c["head_dim"], c["ffn"]
        A = H * d
        past = 0 if cache is None or cache[0]["k"] is None else cache[0]["k"].shape[2]
        pos = np.arange(past, past + T)
        x = w["model.embed_tokens.weight"][ids]                     # [B, T, D]
        D = x.shape[-1]
        hidden, routers = [x], {}
        for l in range(c["num_layers"]):
            p = f"model.layers.{l}."
            # ---- mixture of attention heads
            u = rms_norm(x, w[p + "input_layernorm.weight"], beps).reshape(B * T, D)
            r, e, g = route(u, w[p + "self_attention.experts.router.layer.weight"], k, fsm)
            routers[f"router_logits.{l}.attn"] = r
            Wq = w[p + "self_attention.experts.input_linear.weight"]
            Wo = w[p + "self_attention.experts.output_linear.weight"]
            q = np.einsum("nd,njad->nja", u, Wq[e])                 # [N, k, A]: slot j uses expert e[:, j]
            q = q.reshape(B, T, k * H, d).transpose(0, 2, 1, 3)     # [B, kH, T, d], head i = j*H + h
            kv = u @ w[p + "self_attention.kv_proj.weight"].T
            if mut == "kv_order_vk":
                kv = np.concatenate([kv[:, A:], kv[:, :A]], axis=1)
            kk = kv[:, :A].reshape(B, T, H, d).transpose(0, 2, 1, 3)
            vv = kv[:, A:].reshape(B, T, H, d).transpose(0, 2, 1, 3)
            ri = mut == "rope_interleaved"
            th = 10000.0 if mut == "rope_theta_10000" else c["rope_theta"]
            q, kk = rope(q, pos, th, ri), rope(kk, pos, th, ri)
            if cache is not None:
                if cache[l]["k"] is not None:
                    kk = np.concatenate([cache[l]["k"], kk], axis=2)
                    vv = np.concatenate([cache[l]["v"], vv], axis=2)
                cache[l]["k"], cache[l]["v"] = kk, vv
            S_len = kk.shape[2]
            kt = np.tile(kk, (1, k, 1, 1))                          # TILED: query head i -> KV head i mod H
            vt = np.tile(vv, (1, k, 1, 1))
            if mut == "kv_interleave":
                kt, vt = np.repeat(kk, k, axis=1), np.repeat(vv, k, axis=1)
            s = q @ kt.transpose(0, 1, 3, 2) / np.sqrt(d)           # [B, kH, T, S]
            mask = (np.arange(S_len)[None, :] > (past + np.arange(T))[:, None])
            s = np.where(mask, -np.inf, s)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = (s @ vt).transpose(0, 2, 1, 3).reshape(B * T, k, A)  # slot j = heads j*H .. j*H+H-1
            y = np.einsum("nja,njda->njd", o, Wo[e])
            attn = (g[:, :, None] * y).sum(1) + (0 if mut == "no_moa_bias" else w[p + "self_attention.experts.bias"])
            x = x + attn.reshape(B, T, D)
            # ---- mixture of experts (SwiGLU, gate half first)
            v_ = rms_norm(x, w[p + "post_attention_layernorm.weight"], beps).reshape(B * T, D)
            r, e, g = route(v_, w[p + "mlp.router.layer.weight"], k, fsm)
            routers[f"router_logits.{l}.mlp"] = r
            z = np.einsum("nd,njfd->njf", v_, w[p + "mlp.input_linear.weight"][e])   # [N, k, 2F]
            h = silu(z[..., F:]) * z[..., :F] if mut == "glu_up_first" else silu(z[..., :F]) * z[..., F:]
            y = np.einsum("njf,njdf->njd", h, w[p + "mlp.output_linear.weight"][e])
            mlp = (g[:, :, None] * y).sum(1) + (0 if mut == "no_moe_bias" else w[p + "mlp.bias"])
            x = x + mlp.reshape(B, T, D)
            hidden.append(x)
        prenorm = x
        x = rms_norm(x, w["model.norm.weight"], feps)
        hidden[-1] = x   # HF: the last hidden_states entry is the final-normed state
        return dict(logits=x @ self.head.T, hidden_states=hidden, prenorm_final=prenorm, router_logits=routers)

    def greedy(self, ids, n_new):
        """Greedy decode with the KV cache: (sequences [B, T+n], step logits [B, n, V])."""
        cache = self.new_cache()
        out = self.forward(ids, cache)["logits"][:, -1]
        steps, seq = [out], [ids]
        for s in range(n_new):
            nxt = steps[-1].argmax(-1)[:, None]
            seq.append(nxt)
            if s + 1 < n_new:
                steps.append(self.forward(nxt, cache)["logits"][:, -1])
        return np.concatenate(seq, axis=1), np.stack(steps, axis=1)


def cross_entropy(logits, labels):
    """HF causal LM loss: logits[:, t] predicts labels[:, t+1]; mean over targets != -100."""
    lg = logits[:, :-1].reshape(-1, logits.shape[-1])
    tg = labels[:, 1:].reshape(-1)
    keep = tg != -100
    lg, tg = lg[keep], tg[keep]
    m = lg.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(lg - m).sum(-1, keepdims=True)))[:, 0]
    return float(np.mean(lse - lg[np.arange(len(tg)), tg]))


def router_aux(X, k):
    """(switch, z) of one router, logits X [N, E], in float64."""
    N, E = X.shape
    m = X.max(axis=1, keepdims=True)
    ex = np.exp(X - m)
    p = ex / ex.sum(axis=1, keepdims=True)
    lse = (m + np.log(ex.sum(axis=1, keepdims=True)))[:, 0]
    chosen = np.argsort(-X, axis=1, kind="stable")[:, :k]
    f = np.bincount(chosen.reshape(-1), minlength=E) / (N * k)
    return float(E * np.sum(p.mean(axis=0) * f)), float(np.mean(lse ** 2))


def aux_sums(router_logits, num_layers, k):
    """Sums of switch and z over the 2L routers (order: layer 0 MoA, layer 0 MoE, layer 1 MoA, ...)."""
    sw = z = 0.0
    for l in range(num_layers):
        for kind in ("attn", "mlp"):
            a, b = router_aux(router_logits[f"router_logits.{l}.{kind}"], k)
            sw, z = sw + a, z + b
    return sw, z


def total_loss(m, ids, labels, coef_switch, coef_z):
    """(loss_total, ce, switch, z) of one labelled batch."""
    out = m.forward(ids)
    ce = cross_entropy(out["logits"], labels)
    sw, z = aux_sums(out["router_logits"], m.c["num_layers"], m.c["top_k"])
    return ce + coef_switch * sw + coef_z * z, ce, sw, z


def wsd_lr(s, peak, W, D, total, r0, rf):
    if s < W:
        return peak * (r0 + (1.0 - r0) * s / W)
    if s < total - D:
        return peak
    return peak * rf ** ((s - (total - D)) / D)


def check_adamw(name, m):
    """adamw.safetensors (where present): the step-0 micro-batch losses from the initial weights, the lr schedule
    from hparams, and step.* = mean over micro-batches. Returns the worst relative difference (None: no file)."""
    path = os.path.join(FIXTURES, name, "adamw.safetensors")
    if not os.path.exists(path):
        return None
    a = read_safetensors(path)
    peak, b1, b2, eps, wd, max_norm, cs, cz, W, D, total, r0, rf = a["hparams"].tolist()
    worst = 0.0
    for mb in range(a["batch.input_ids"].shape[1]):
        lt, ce, sw, z = total_loss(m, a["batch.input_ids"][0, mb], a["batch.labels"][0, mb], cs, cz)
        for key, val in (("loss", lt), ("ce", ce), ("switch", sw), ("z", z)):
            ref = float(a[f"micro.{key}"][0, mb])
            worst = max(worst, abs(val - ref) / abs(ref))
    lr = np.array([wsd_lr(s, peak, int(W), int(D), int(total), r0, rf) for s in range(int(total))])
    worst = max(worst, rel(lr, a["step.lr"].astype(np.float64)))
    for key in ("loss", "ce", "switch", "z"):
        worst = max(worst, rel(a[f"micro.{key}"].astype(np.float64).mean(axis=1), a[f"step.{key}"]))
    return worst


# ----------------------------------------------------------------------------------------------- checking
def rel(a, b):
    """max |a-b| / max |b|"""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def check(name):
    d = os.path.join(FIXTURES, name)
    ref = read_safetensors(os.path.join(d, "reference.safetensors"))
    m = JetMoe(d)
    ids = ref["input_ids"]
    out = m.forward(ids)
    T = ids.shape[1]
    n_new = ref["greedy_ids"].shape[1] - T
    r = dict(name=name)
    r["logits"] = rel(out["logits"], ref["logits"])
    r["hidden"] = max(rel(h, ref[f"hidden_states.{i}"]) for i, h in enumerate(out["hidden_states"]))
    r["prenorm"] = rel(out["prenorm_final"], ref["prenorm_final"])
    r["router"] = max(rel(v, ref[k]) for k, v in out["router_logits"].items())
    # routing decisions identical? and the smallest gap between the k-th and (k+1)-th logit (robustness margin)
    k, E = m.c["top_k"], m.c["num_experts"]
    same, gap = True, np.inf
    for key, v in out["router_logits"].items():
        a = np.argsort(-v, axis=1, kind="stable")[:, :k]
        b = np.argsort(-ref[key], axis=1, kind="stable")[:, :k]
        same &= bool(np.array_equal(a, b))
        if k < E:
            srt = -np.sort(-v, axis=1)
            gap = min(gap, float((srt[:, k - 1] - srt[:, k]).min()))
    r["same_routing"], r["route_gap"] = same, gap
    seq, inc = m.greedy(ids, n_new)
    r["greedy_equal"] = bool(np.array_equal(seq, ref["greedy_ids"]))
    r["incremental"] = rel(inc, ref["incremental_logits"])
    srt = -np.sort(-inc, axis=-1)
    r["greedy_margin"] = float((srt[..., 0] - srt[..., 1]).min())
    loss = cross_entropy(out["logits"], ref["labels"])
    r["loss"] = abs(loss - float(ref["loss"][0])) / abs(float(ref["loss"][0]))
    # original-form aux loss from the NumPy router logits (the labelled batch uses the same input_ids)
    sw, z = aux_sums(out["router_logits"], m.c["num_layers"], k)
    cs, cz = float(ref["aux.coef_switch"][0]), float(ref["aux.coef_z"][0])
    r["switch"] = abs(sw - float(ref["aux.switch"][0])) / abs(float(ref["aux.switch"][0]))
    r["z"] = abs(z - float(ref["aux.z"][0])) / abs(float(ref["aux.z"][0]))
    lt = loss + cs * sw + cz * z
    r["loss_total"] = abs(lt - float(ref["loss_total"][0])) / abs(float(ref["loss_total"][0]))
    r["adamw"] = check_adamw(name, m)
    return r


def mutation_table(names):
    """How far each deliberate mistake moves the logits, per fixture (max|mutated-HF| / max|HF|)."""
    print(f"{'mutation':<20}" + "".join(f"{n[:11]:>12}" for n in names))
    for mut in MUTATIONS:
        row = []
        for n in names:
            d = os.path.join(FIXTURES, n)
            ref = read_safetensors(os.path.join(d, "reference.safetensors"))
            row.append(rel(JetMoe(d, mutation=mut).forward(ref["input_ids"])["logits"], ref["logits"]))
        print(f"{mut:<20}" + "".join(f"{x:>12.1e}" for x in row))
    print("(a mistake is caught where the entry is well above the ~1e-6 fp32 agreement)")
    for mut, what in MUTATIONS.items():
        print(f"  {mut}: {what}")


def grad_check(names, per_param=2, seed=0):
    """Central differences (float64) of the NumPy losses against the stored HF gradients, a few entries of every
    parameter: the CE loss against grad.*, loss_total (CE + aux) against grad_total.*. Prints max |fd - grad| /
    max |grad of that parameter| per fixture."""
    rng = np.random.default_rng(seed)
    worst_all = 0.0
    for name in names:
        d = os.path.join(FIXTURES, name)
        ref = read_safetensors(os.path.join(d, "reference.safetensors"))
        m = JetMoe(d)
        cs, cz = float(ref["aux.coef_switch"][0]), float(ref["aux.coef_z"][0])
        losses = {
            "grad.": lambda: cross_entropy(m.forward(ref["input_ids"])["logits"], ref["labels"]),
            "grad_total.": lambda: total_loss(m, ref["input_ids"], ref["labels"], cs, cz)[0],
        }
        line = f"{name:<14}"
        for prefix, fn in losses.items():
            worst, zero = 0.0, []
            for key in sorted(k for k in ref if k.startswith(prefix)):
                pname, g = key[len(prefix):], ref[key]
                scale = float(np.abs(g).max())
                if scale == 0.0:
                    zero.append(pname)
                W = m.w[pname]
                for _ in range(per_param):
                    idx = tuple(int(rng.integers(0, n)) for n in g.shape)
                    old, h = W[idx], 1e-6
                    W[idx] = old + h
                    lp = fn()
                    W[idx] = old - h
                    lm = fn()
                    W[idx] = old
                    worst = max(worst, abs((lp - lm) / (2 * h) - g[idx]) / max(scale, 1e-12))
            worst_all = max(worst_all, worst)
            line += f"  {prefix + '*':<12} max|fd-grad|/max|grad| {worst:.1e}"
            if zero:
                line += f" (all-zero: {', '.join(zero)})"
        print(line)
    return worst_all


def main(argv):
    if argv and argv[0] == "--grads":
        names = argv[1:] or sorted(n for n in os.listdir(FIXTURES) if os.path.isdir(os.path.join(FIXTURES, n)))
        return 0 if grad_check(names) < 1e-4 else 1
    if argv and argv[0] == "--mutations":
        names = argv[1:] or sorted(n for n in os.listdir(FIXTURES) if os.path.isdir(os.path.join(FIXTURES, n)))
        mutation_table(names)
        return 0
    names = argv or sorted(n for n in os.listdir(FIXTURES) if os.path.isdir(os.path.join(FIXTURES, n)))
    cols = ["logits", "hidden", "prenorm", "router", "incremental", "loss", "switch", "z", "loss_total"]
    print(f"{'fixture':<14}" + "".join(f"{c:>12}" for c in cols) + f"{'adamw':>10}{'routing':>9}{'greedy':>8}"
          f"{'min route gap':>15}{'min greedy margin':>19}")
    print("  (columns: max|numpy-HF| / max|HF|; numpy in float64 from the stored weights; switch, z: the sums over all"
          " routers of the original JetMoE aux terms; adamw: step-0 micro-batch losses, lr schedule and step means of"
          " adamw.safetensors, '-' where there is none)")
    worst = 0.0
    ok = True
    for n in names:
        r = check(n)
        worst = max(worst, *(r[c] for c in cols), r["adamw"] or 0.0)
        ok &= r["same_routing"] and r["greedy_equal"]
        print(f"{n:<14}" + "".join(f"{r[c]:>12.2e}" for c in cols)
              + (f"{r['adamw']:>10.2e}" if r["adamw"] is not None else f"{'-':>10}")
              + f"{'same' if r['same_routing'] else 'DIFF':>9}{'same' if r['greedy_equal'] else 'DIFF':>8}"
              + f"{r['route_gap']:>15.2e}{r['greedy_margin']:>19.2e}")
    print(f"worst relative difference {worst:.2e}")
    ok &= worst < 1e-5
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
