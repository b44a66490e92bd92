"""HF transformers fixtures of the 'model' reference (tests/fixtures/kernels/model/).

A whole JetMoE pipeline stage (kernels/tests/reference/model.hpp: embedding, L blocks, final RMSNorm, LM head,
cross-entropy) against HF JetMoeForCausalLM (transformers.models.jetmoe.modeling_jetmoe), B = 2 sequences of T
tokens, positions 0..T-1 in each, no padding. tests/kernel_reference/test_model.cpp rebuilds the same model and
compares.

Weights: as layer.py, every tensor comes from the 64-bit LCG lcg_values (multiples of 2^-10, exact in fp32 and in
double; jkref::layer_lcg_values in the C++), so the files hold no weights, only the first values of each tensor
(a generator mismatch fails loudly). Seed offsets (s = the case's seed):
    model.embed_tokens.weight      s*1000 + 1        [-1, 1)
    model.norm.weight              s*1000 + 2        [0.5, 1.5)
    lm_head.weight (untied only)   s*1000 + 3        [-0.5, 0.5)
    model.layers.<l>.<param>       s*1000 + 100*(l+1) + offset, offset and range from layer.py's PARAMS table.
The token ids and the labels are stored (ints). Block RMSNorm eps 1e-6 (HF hard-codes it), final norm eps =
config.rms_norm_eps = 1e-5 (jetmoe-8b's value; a different eps on purpose, so a mix-up shows).

Labels. HF takes labels [B, T] and shifts them: logits[b, t] predicts labels[b, t + 1]. The C++ stage takes the
shifted labels [N = B T] directly (labels[b T + t] = the target predicted at (b, t), -100 at t = T - 1 and where HF's
label is -100): the fixture stores both ("labels_hf" and "labels").

fp32 cases (fp32_tied, fp32_untied; eager attention, train mode, dropout 0), forward + autograd backward of
    L = loss_HF + cs * sum_routers switch + cz * sum_routers z
where loss_HF is HF's own causal-LM loss (model(ids, labels=labels).loss: mean CE over the targets != -100, i.e.
the reference's ce_scale = 1 / n_valid) and switch, z are the ORIGINAL JetMoE aux losses of each of the 2L routers
(layer.py aux_terms: [JM] compute_aux_loss, f detached, stable lse) of the routers' fp32 logits, captured from
HF's JetMoeTopKGating outputs inside the graph. That is exactly the reference's objective
ce_scale * sum_t loss_t + sum_l (cs * switch_l + cz * z_l).

HF's own aux loss (output_router_logits=True, load_balancing_loss_func, Mixtral style) is NOT of that form and is
not used in L: it pools the counts and the mean probabilities of all recorded router logits into one statistic,
E * sum_e (sum_r c_re / (R N)) (sum_r P_re / R), a product of sums over routers (not a sum of per-router terms),
and has no z-loss. It is recorded for information only ("hf_aux_loss", with "hf_aux_multiplicity" [L, 2]: how
many times HF's recorder lists each router's logits), and the test reproduces it from the reference's logits.

Stored per fp32 case: sizes, seed, cs, cz, eps, ids, labels, logits [N, V] (%.9g), loss_rows [N] (F.cross_entropy
reduction none on logits.float(), 0 where ignored), loss (HF's), n_valid, per router ids / switch / z, total L,
and for every parameter tensor P (names embedding, final_norm, lm_head, l<l>_<layer.py short name>) its gradient:
    numel <= 256: grad_<P> in full;
    else: gidx_<P> (64 sorted random flat indices), gval_<P> (the gradient there), gnorm_<P> (its 2-norm in
          double) and gproj_<P> [3] = sum_i grad_i r_j[i] in double, r_j = lcg_values(PROJ_SEED + j, numel, -1, 1).
The samples and projections keep the files small (a full set of gradients is ~40k values per case); every
entry contributes to the projections.

float64 records (f64_*, %.17g) of the same case: HF's modelling code run in float64 inside hf_without_fp32_casts
(its three fp32 casts removed, RoPE tables correctly rounded to fp32), with the CE of HF's loss computed on the
float64 logits: f64_loss_rows, f64_lse, f64_loss, f64_<router>_switch / _z, f64_objective, and the gradients as
above (f64_grad_<P>, or f64_gval_<P> at the same gidx_<P>, f64_gnorm_<P>, f64_gproj_<P>). The same maths in double:
the reference must match them to ~1e-14, which separates a reference error from HF's fp32 rounding (~1e-5 here).
The routing is asserted identical in fp32 and float64 and every top-2 margin is > 1e-3.

bf16 case (bf16_tied): the same kind of model cast to bf16 (weights = the LCG values rounded to bf16, round to
nearest even as jkref::round_bf16), attention replaced by layer.py's fp32_attention (fp32 scores, softmax and
P V from the bf16 q, k, v, one rounding of the output; the reference's and the kernels' attention) with an
explicit causal mask, forward only: logits [N, V] (bf16 values, exact in %.9g), per-row losses (fp32 CE on
logits.float(), as HF's loss), HF's loss, and per router the top-2 ids. Module.to(bfloat16) would also round
the RoPE buffer inv_freq to bf16 (from_pretrained(dtype=bfloat16) keeps it fp32): make_model rebuilds it in fp32.

Run: nice /opt/oracle-venv/bin/python scripts/oracle/kernel_fixtures/model.py   (a few seconds; deterministic:
one thread, deterministic algorithms; two runs give byte-identical files)
"""
import contextlib
import inspect
import os
import sys
import textwrap

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layer import PARAMS, SHORT, Fp32Writer, aux_terms, fp32_attention, lcg_values  # noqa: E402

from transformers import AttentionInterface  # noqa: E402
from transformers.models.jetmoe import modeling_jetmoe as mj  # noqa: E402
from transformers.models.jetmoe.configuration_jetmoe import JetMoeConfig  # noqa: E402
from transformers.models.jetmoe.modeling_jetmoe import JetMoeForCausalLM, JetMoeRotaryEmbedding  # noqa: E402

FAMILY = "model"
PROJ_SEED = 7
N_SAMPLES = 64
FULL_MAX = 256
B = 2


def make_model(c, dtype, attn):
    torch.manual_seed(0)
    cfg = JetMoeConfig(vocab_size=c["V"], hidden_size=c["D"], num_hidden_layers=c["L"],
                       num_local_experts=c["E"], num_experts_per_tok=2, num_key_value_heads=c["Hkv"],
                       kv_channels=c["d"], intermediate_size=c["F"], max_position_embeddings=64,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-5,
                       tie_word_embeddings=c["tied"], bos_token_id=1, eos_token_id=2, pad_token_id=None,
                       attention_dropout=0.0, output_router_logits=False, attn_implementation=attn)
    cfg._attn_implementation = attn
    model = JetMoeForCausalLM(cfg).to(dtype)
    # .to(dtype) also casts the RoPE buffer inv_freq; from_pretrained(dtype=...) keeps it fp32 (HF computes the
    # angles in fp32, spec section 3): rebuild it so a bf16 model has HF's real fp32 angles.
    model.model.rotary_emb = JetMoeRotaryEmbedding(config=cfg)
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    if c["tied"]:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    else:
        assert model.lm_head.weight is not model.model.embed_tokens.weight
    return model


def param_table(c):
    """(HF name, short name, seed, lo, hi) for every parameter of the stage, in the C++ order."""
    s = c["seed"] * 1000
    table = [("model.embed_tokens.weight", "embedding", s + 1, -1.0, 1.0)]
    for l in range(c["L"]):
        for (pname, off, lo, hi), short in zip(PARAMS, SHORT):
            table.append(("model.layers.%d.%s" % (l, pname), "l%d_%s" % (l, short), s + 100 * (l + 1) + off, lo, hi))
    table.append(("model.norm.weight", "final_norm", s + 2, 0.5, 1.5))
    if not c["tied"]:
        table.append(("lm_head.weight", "lm_head", s + 3, -0.5, 0.5))
    return table


def set_weights(model, c, dtype):
    params = dict(model.named_parameters())
    table = param_table(c)
    assert set(params) == {t[0] for t in table}, sorted(params)
    first = {}
    with torch.no_grad():
        for hname, short, seed, lo, hi in table:
            p = params[hname]
            vals = torch.tensor(lcg_values(seed, p.numel(), lo, hi), dtype=torch.float64)
            p.copy_(vals.reshape(p.shape).to(dtype))
            first[short] = vals[:4].clone()
    return params, table, first


def tokens(c):
    gen = torch.Generator().manual_seed(c["seed"] + 17)
    ids = torch.randint(0, c["V"], (B, c["T"]), generator=gen, dtype=torch.int64)
    labels_hf = ids.clone()
    for b, t in c["ignore"]:
        labels_hf[b, t] = -100
    shifted = torch.full_like(labels_hf, -100)
    shifted[:, :-1] = labels_hf[:, 1:]
    return ids, labels_hf, shifted


def capture_routers(model):
    store, hooks = [], []
    for layer in model.model.layers:
        for router in (layer.self_attention.experts.router, layer.mlp.router):
            hooks.append(router.register_forward_hook(lambda m, i, o: store.append(o[4])))
    return store, hooks


def write_common(f, c, model, ids, labels_hf, shifted):
    for key in ("V", "D", "L", "E", "Hkv", "d", "F", "T", "seed"):
        f.scalar(key, c[key])
    f.scalar("B", B)
    f.scalar("tied", 1 if c["tied"] else 0)
    f.scalar("eps", model.model.layers[0].input_layernorm.variance_epsilon)
    f.scalar("final_eps", model.model.norm.variance_epsilon)
    f.scalar("rope_theta", 10000.0)
    f.tensor("ids", ids.reshape(-1))
    f.tensor("labels_hf", labels_hf.reshape(-1))
    f.tensor("labels", shifted.reshape(-1))


@contextlib.contextmanager
def hf_without_fp32_casts():
    """HF's modelling code with its three fp32 casts removed, so that a float64 model computes in float64
    throughout: JetMoeRMSNorm's upcast (hidden_states.to(torch.float32)), JetMoeTopKGating's logits.float() and
    eager attention's softmax dtype=torch.float32 (then float64 is the query dtype). RoPE keeps HF's fp32 angles
    and fp32 cos / sin tables, but correctly rounded (cos of the fp32 angle in double, rounded to fp32, as the
    reference's rope_cos_sin): torch's vectorised fp32 cos / sin is one ulp off in ~10% of the entries, which
    alone moves the gradients by ~1e-6. Source-level patches of exactly these expressions (asserted present),
    undone on exit."""
    patches = [(mj.JetMoeRMSNorm, "forward", "hidden_states.to(torch.float32)", "hidden_states"),
               (mj.JetMoeTopKGating, "forward", "self.layer(hidden_states).float()", "self.layer(hidden_states)"),
               (mj, "eager_attention_forward", "dtype=torch.float32", "dtype=query.dtype"),
               (mj.JetMoeRotaryEmbedding, "forward", "emb.cos()", "emb.double().cos().float()"),
               (mj.JetMoeRotaryEmbedding, "forward", "emb.sin()", "emb.double().sin().float()")]
    saved, sources = [], {}
    for owner, name, old, new in patches:
        key = (id(owner), name)
        if key not in sources:
            saved.append((owner, name, getattr(owner, name)))
            sources[key] = textwrap.dedent(inspect.getsource(getattr(owner, name)))
        assert sources[key].count(old) == 1, (name, old)
        sources[key] = sources[key].replace(old, new)
        ns = {}
        exec(compile(sources[key], "<model.py patched %s>" % name, "exec"), vars(mj), ns)
        setattr(owner, name, ns[name])
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def run_fp(c, dtype):
    """Forward + backward of L (see the docstring) in dtype (float32: HF as is; float64: inside
    hf_without_fp32_casts, the CE computed on the float64 logits by the same formula as HF's loss)."""
    model = make_model(c, dtype, "eager")
    model.train()
    params, table, first = set_weights(model, c, dtype)
    ids, labels_hf, shifted = tokens(c)
    store, hooks = capture_routers(model)
    if dtype == torch.float32:
        out = model(input_ids=ids, labels=labels_hf)
        loss = out.loss
    else:
        out = model(input_ids=ids)
        loss = F.cross_entropy(out.logits.reshape(-1, c["V"]), shifted.reshape(-1), ignore_index=-100)
    for h in hooks:
        h.remove()
    assert out.aux_loss is None and len(store) == 2 * c["L"]
    assert all(x.dtype == dtype for x in store)
    aux = [aux_terms(x, 2) for x in store]  # (switch, z, ids) per router: layer 0 MoA, layer 0 MoE, ...
    for x in store:  # no near ties in the top-2 (the double reference must choose the same experts)
        top = x.detach().double().topk(3, dim=1).values
        assert (top[:, 1] - top[:, 2]).min().item() > 1e-3
    total = loss + sum(c["cs"] * sw + c["cz"] * z for sw, z, _ in aux)
    total.backward()
    N = B * c["T"]
    logits = out.logits.detach().reshape(N, c["V"])
    loss_rows = F.cross_entropy(logits.to(dtype), shifted.reshape(-1), reduction="none", ignore_index=-100)
    n_valid = int((shifted != -100).sum())
    assert abs(loss_rows.double().sum().item() / n_valid - loss.item()) < 1e-6
    grads = {short: params[hname].grad.detach().reshape(-1) for hname, short, _, _, _ in table}
    return dict(model=model, table=table, first=first, ids=ids, labels_hf=labels_hf, shifted=shifted, aux=aux,
                loss=loss, total=total, logits=logits, loss_rows=loss_rows, n_valid=n_valid, grads=grads)


def fp32_case(name, c):
    r = run_fp(c, torch.float32)
    with hf_without_fp32_casts():
        r64 = run_fp(c, torch.float64)
    model, table, ids = r["model"], r["table"], r["ids"]
    for a32, a64 in zip(r["aux"], r64["aux"]):
        assert torch.equal(a32[2], a64[2]), "fp32 and fp64 routing differ"

    # HF's own (pooled, Mixtral-style) aux loss, for information: which router logits its recorder lists.
    with torch.no_grad():
        store2, hooks = capture_routers(model)
        out2 = model(input_ids=ids, output_router_logits=True)
        for h in hooks:
            h.remove()
    mult = torch.zeros(c["L"], 2)
    for rl in out2.router_logits:
        hits = [i for i, x in enumerate(store2) if x.shape == rl.shape and torch.equal(x, rl)]
        assert len(hits) == 1, "an HF router_logits entry matches no captured router"
        mult[hits[0] // 2, hits[0] % 2] += 1

    V = c["V"]
    comment = ("HF JetMoeForCausalLM fp32 eager, %s head, V %d, D %d, L %d, E %d, k 2, kv heads %d, kv_channels %d,"
               " ffn %d, B %d, T %d.\nWeights from lcg_values (see model.py); L = HF loss (mean CE) + cs * sum switch"
               " + cz * sum z over the 2L routers ([JM] aux);\ngradients by autograd (sampled + projected, see model.py)."
               " f64_*: the same in float64 without HF's fp32 casts.")
    comment = comment % ("tied" if c["tied"] else "untied", V, c["D"], c["L"], c["E"], c["Hkv"], c["d"], c["F"], B,
                         c["T"])
    with Fp32Writer(FAMILY, name, comment) as f:
        write_common(f, c, model, ids, r["labels_hf"], r["shifted"])
        f.scalar("cs", c["cs"])
        f.scalar("cz", c["cz"])
        for _, short, _, _, _ in table:
            f.tensor("first_" + short, r["first"][short])
        f.tensor9("logits", r["logits"])
        f.tensor9("loss_rows", r["loss_rows"])
        f.tensor("f64_loss_rows", r64["loss_rows"])
        f.tensor("f64_lse", torch.logsumexp(r64["logits"], dim=1))
        f.scalar("loss", r["loss"].item())
        f.scalar("f64_loss", r64["loss"].item())
        f.scalar("n_valid", r["n_valid"])
        for i, ((sw, z, rid), (sw64, z64, _)) in enumerate(zip(r["aux"], r64["aux"])):
            tag = "l%d_%s" % (i // 2, "moa" if i % 2 == 0 else "moe")
            f.tensor(tag + "_ids", rid)
            f.scalar(tag + "_switch", sw.item())
            f.scalar(tag + "_z", z.item())
            f.scalar("f64_" + tag + "_switch", sw64.item())
            f.scalar("f64_" + tag + "_z", z64.item())
        f.scalar("objective", r["total"].item())
        f.scalar("f64_objective", r64["total"].item())
        f.scalar("hf_aux_loss", out2.aux_loss.item())
        f.tensor("hf_aux_multiplicity", mult)
        for _, short, _, _, _ in table:
            g, g64 = r["grads"][short], r64["grads"][short]
            n = g.numel()
            if n <= FULL_MAX:
                f.tensor9("grad_" + short, g)
                f.tensor("f64_grad_" + short, g64)
                continue
            gen = torch.Generator().manual_seed(c["seed"] * 1000 + len(short) * 31 + n)
            idx = torch.randperm(n, generator=gen)[:N_SAMPLES].sort().values
            f.tensor("gidx_" + short, idx)
            f.tensor9("gval_" + short, g[idx])
            f.tensor("f64_gval_" + short, g64[idx])
            for prefix, gg in (("", g.double()), ("f64_", g64)):
                f.tensor(prefix + "gnorm_" + short, gg.norm().reshape(1))
                proj = [torch.dot(gg, torch.tensor(lcg_values(PROJ_SEED + j, n, -1.0, 1.0), dtype=torch.float64))
                        for j in range(3)]
                f.tensor(prefix + "gproj_" + short, torch.stack(proj))


def bf16_case(name, c):
    AttentionInterface.register("jk_fp32_reference", fp32_attention)
    model = make_model(c, torch.bfloat16, "jk_fp32_reference")
    model.eval()
    set_weights(model, c, torch.bfloat16)
    ids, labels_hf, shifted = tokens(c)
    T, V, N = c["T"], c["V"], B * c["T"]
    # The registered attention has no HF mask function: pass the causal mask explicitly (4D masks are used as is).
    mask = torch.full((T, T), float("-inf")).triu(1).to(torch.bfloat16).reshape(1, 1, T, T).expand(B, 1, T, T)
    with torch.no_grad():
        store, hooks = capture_routers(model)
        out = model(input_ids=ids, attention_mask=mask, labels=labels_hf)
        for h in hooks:
            h.remove()
    assert out.logits.dtype == torch.bfloat16
    logits = out.logits.reshape(N, V)
    loss_rows = F.cross_entropy(logits.float(), shifted.reshape(-1), reduction="none", ignore_index=-100)
    n_valid = int((shifted != -100).sum())
    assert abs(loss_rows.double().sum().item() / n_valid - out.loss.item()) < 1e-6
    comment = ("HF JetMoeForCausalLM bf16 (CPU) forward, %s head, attention fp32 then bf16 (layer.py fp32_attention),"
               " V %d, D %d, L %d, E %d, kv heads %d, kv_channels %d, ffn %d, B %d, T %d.\nWeights: lcg_values rounded"
               " to bf16. logits (bf16 values), loss_rows (fp32 CE on logits.float()), HF loss, router top-2 ids."
               % ("tied" if c["tied"] else "untied", V, c["D"], c["L"], c["E"], c["Hkv"], c["d"], c["F"], B, T))
    with Fp32Writer(FAMILY, name, comment) as f:
        write_common(f, c, model, ids, labels_hf, shifted)
        f.tensor9("logits", logits)
        f.tensor9("loss_rows", loss_rows)
        f.scalar("loss", out.loss.item())
        f.scalar("n_valid", n_valid)
        for r, x in enumerate(store):
            f.tensor("l%d_%s_ids" % (r // 2, "moa" if r % 2 == 0 else "moe"), x.topk(2, dim=1).indices)


CASES = {
    "fp32_tied": dict(V=64, D=32, L=2, E=4, Hkv=2, d=8, F=32, T=10, seed=1, tied=True, cs=0.3, cz=0.1,
                      ignore=[(0, 4), (1, 7)]),
    "fp32_untied": dict(V=80, D=32, L=2, E=4, Hkv=2, d=16, F=40, T=8, seed=2, tied=False, cs=0.3, cz=0.1,
                        ignore=[(0, 2), (1, 5)]),
    "bf16_tied": dict(V=64, D=32, L=2, E=4, Hkv=2, d=8, F=32, T=10, seed=3, tied=True, ignore=[(0, 4), (1, 7)]),
}


def main():
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    fp32_case("fp32_tied", CASES["fp32_tied"])
    fp32_case("fp32_untied", CASES["fp32_untied"])
    bf16_case("bf16_tied", CASES["bf16_tied"])


if __name__ == "__main__":
    main()
