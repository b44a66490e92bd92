"""Fixtures of HF JetMoe's attention core for tests/kernel_reference/test_attention.cpp.

The attention core of transformers.models.jetmoe.modeling_jetmoe.JetMoeAttention.forward after RoPE:
K/V tiled along the head axis (`key_states.repeat(1, top_k, 1, 1)`, spec section 9), then HF's own
`eager_attention_forward` (with num_key_value_groups = 1, as JetMoeAttention sets it) under a causal
additive mask plus right padding. Gradients by autograd of sum(out * dout).

Cases (tiny: B=2, H_kv=2, Hq=4):
  fp32_pad : T=5, d=8, fp32, lengths [5, 3]; out, lse (logsumexp of the masked scaled scores), dq/dk/dv.
  fp32_full: T=6, d=12, fp32, no padding; out and grads.
  bf16_full: T=9, d=16, bf16 inputs and HF's bf16 eager path (softmax fp32 -> bf16 -> P@V in bf16).
Each also stores out_interleave: the same computation with Llama's repeat_interleave pairing, which a
correct reference must NOT match (the test that catches the wrong pairing).
Inputs are rounded to bf16 values so the files stay small. Run:
  nice /opt/oracle-venv/bin/python scripts/oracle/kernel_fixtures/attention.py
"""
import math
import types

import torch
from transformers.models.jetmoe import modeling_jetmoe

from fixture_io import FixtureWriter

FAMILY = "attention"


def hf_core(q, k, v, lengths, dtype, tile=True):
    """q [B, T, Hq, d], k/v [B, T, Hkv, d] -> out [B, T, Hq, d] (eager_attention_forward transposes back), lse [B, Hq, T]."""
    B, T, Hq, d = q.shape
    Hkv = k.shape[2]
    top_k = Hq // Hkv
    qs = q.transpose(1, 2).to(dtype)  # [B, Hq, T, d]
    ks = k.transpose(1, 2).to(dtype)
    vs = v.transpose(1, 2).to(dtype)
    if tile:  # JetMoeAttention.forward: "repeat k/v heads instead of repeat interleaving them"
        ks = ks.repeat(1, top_k, 1, 1)
        vs = vs.repeat(1, top_k, 1, 1)
    else:     # Llama repeat_kv (the WRONG pairing for JetMoE)
        ks = ks.repeat_interleave(top_k, dim=1)
        vs = vs.repeat_interleave(top_k, dim=1)
    mask = torch.zeros(B, 1, T, T, dtype=dtype)
    neg = torch.finfo(dtype).min
    for b in range(B):
        for t in range(T):
            for u in range(T):
                if u > t or u >= lengths[b]:
                    mask[b, 0, t, u] = neg
    module = types.SimpleNamespace(num_key_value_groups=1, training=False)
    out, _ = modeling_jetmoe.eager_attention_forward(module, qs, ks, vs, mask, scaling=1.0 / math.sqrt(d))
    # lse of the masked scaled scores (fp32/fp64 of the same inputs), for rows t < len
    scores = torch.matmul(qs.double(), ks.double().transpose(2, 3)) / math.sqrt(d) + mask.double()
    lse = torch.logsumexp(scores, dim=-1)  # [B, Hq, T]
    return out, lse


def bf16_round(t):
    return t.to(torch.bfloat16).to(torch.float32)


def make_case(name, B, T, Hkv, top_k, d, lengths, dtype, grads, seed):
    g = torch.Generator().manual_seed(seed)
    Hq = Hkv * top_k
    q = bf16_round(torch.randn(B, T, Hq, d, generator=g))
    k = bf16_round(torch.randn(B, T, Hkv, d, generator=g))
    v = bf16_round(torch.randn(B, T, Hkv, d, generator=g))
    dout = bf16_round(torch.randn(B, T, Hq, d, generator=g))
    # zero dout on padded query rows: HF's padded rows are not ours (we write zeros), so no gradient
    for b in range(B):
        dout[b, lengths[b]:] = 0
    qv = q.clone().requires_grad_(grads)
    kv = k.clone().requires_grad_(grads)
    vv = v.clone().requires_grad_(grads)
    out, lse = hf_core(qv, kv, vv, lengths, dtype)
    out_il, _ = hf_core(q, k, v, lengths, dtype, tile=False)
    comment = (f"HF JetMoe attention core ({'tiled K/V, eager_attention_forward'}), {dtype}, "
               f"B={B} T={T} Hq={Hq} Hkv={Hkv} d={d} lengths={lengths}\n"
               "layouts: q/out/dq [B,T,Hq,d], k/v/dk/dv [B,T,Hkv,d], lse [B,Hq,T]; rows t >= len are not compared")
    with FixtureWriter(FAMILY, name, comment) as f:
        f.scalar("B", B)
        f.scalar("T", T)
        f.scalar("Hq", Hq)
        f.scalar("Hkv", Hkv)
        f.scalar("d", d)
        f.tensor("seq_len", torch.tensor(lengths, dtype=torch.float64))
        f.tensor("q", q)
        f.tensor("k", k)
        f.tensor("v", v)
        f.tensor("out", out.float())  # eager_attention_forward returns [B, T, Hq, d]
        f.tensor("out_interleave", out_il.float())
        if dtype == torch.float32:
            f.tensor("lse", lse)
        if grads:
            (out * dout.to(dtype)).sum().backward()
            f.tensor("dout", dout)
            f.tensor("dq", qv.grad)
            f.tensor("dk", kv.grad)
            f.tensor("dv", vv.grad)


def main():
    torch.set_num_threads(1)
    make_case("fp32_pad", B=2, T=5, Hkv=2, top_k=2, d=8, lengths=[5, 3], dtype=torch.float32, grads=True, seed=11)
    make_case("fp32_full", B=2, T=6, Hkv=2, top_k=2, d=12, lengths=[6, 6], dtype=torch.float32, grads=True, seed=12)
    make_case("bf16_full", B=2, T=9, Hkv=2, top_k=2, d=16, lengths=[9, 9], dtype=torch.bfloat16, grads=False, seed=13)


if __name__ == "__main__":
    main()
