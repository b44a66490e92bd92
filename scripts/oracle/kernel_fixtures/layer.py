"""PyTorch / HF transformers fixtures of the 'layer' kernel family (tests/fixtures/kernels/layer/).

One HF JetMoeDecoderLayer (transformers.models.jetmoe.modeling_jetmoe, fp32, eager attention with an
explicit causal mask, RoPE from JetMoeRotaryEmbedding at positions 0..T-1) run forward, then autograd
backward of
    L = sum(out * G) + cs * sum_routers switch + cz * sum_routers z
where switch and z are the original JetMoE aux losses ([JM] gate.py compute_aux_loss, jetmoe-spec.md
section 4: f = counts / (N k) detached, P = mean softmax, switch = E sum P f, z = mean lse^2) of the two
routers' fp32 logits, captured from HF's JetMoeTopKGating outputs (so the router gradients flow through
HF's own graph). tests/kernel_reference/test_layer.cpp composes kernels/tests/reference/layer.hpp and
requires it to match these numbers (1e-5 relative).

Size: to keep the files small, the weights, the input x and the output weighting G are not stored: both
sides generate them with the same 64-bit LCG (lcg_values below, jkref::layer_lcg_values in the C++),
as multiples of 2^-10 (exact in fp32 and in double); the fixture stores the first values of each tensor
so a generator mismatch fails loudly. Results are fp32 and are written with %.9g (enough to identify an
fp32 value; the test's tolerance is 1e-5 relative).

Run: nice /opt/oracle-venv/bin/python scripts/oracle/kernel_fixtures/layer.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_io import FixtureWriter  # noqa: E402

from transformers import AttentionInterface  # noqa: E402
from transformers.models.jetmoe.configuration_jetmoe import JetMoeConfig  # noqa: E402
from transformers.models.jetmoe.modeling_jetmoe import (  # noqa: E402
    JetMoeDecoderLayer,
    JetMoeRotaryEmbedding,
)

FAMILY = "layer"
MASK64 = (1 << 64) - 1


def lcg_values(seed, n, lo, hi):
    """n values lo + (hi - lo) * m / 1024 with m in [0, 1024) from a 64-bit LCG (Knuth MMIX constants).
    The same sequence as jkref::layer_lcg_values (kernels/tests/reference/layer.hpp)."""
    state = seed & MASK64
    out = []
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) & MASK64
        m = (state >> 33) % 1024
        out.append(lo + (hi - lo) * m / 1024.0)
    return out


class Fp32Writer(FixtureWriter):
    """FixtureWriter with fp32 precision (%.9g identifies an fp32 value) to keep the files small."""

    def tensor9(self, name, t):
        t = t.detach().to(torch.float64).cpu().contiguous()
        shape = list(t.shape)
        self.lines.append("tensor %s %d %s" % (name, len(shape), " ".join(str(d) for d in shape)))
        flat = t.reshape(-1).tolist()
        for i in range(0, len(flat), 8):
            self.lines.append(" ".join("%.9g" % v for v in flat[i:i + 8]))


# HF parameter name, generator seed offset, value range. Same table in test_layer.cpp.
PARAMS = [
    ("input_layernorm.weight", 1, 0.5, 1.5),
    ("self_attention.experts.router.layer.weight", 2, -1.0, 1.0),
    ("self_attention.experts.input_linear.weight", 3, -0.5, 0.5),
    ("self_attention.kv_proj.weight", 4, -0.5, 0.5),
    ("self_attention.experts.output_linear.weight", 5, -0.5, 0.5),
    ("self_attention.experts.bias", 6, -0.25, 0.25),
    ("post_attention_layernorm.weight", 7, 0.5, 1.5),
    ("mlp.router.layer.weight", 8, -1.0, 1.0),
    ("mlp.input_linear.weight", 9, -0.5, 0.5),
    ("mlp.output_linear.weight", 10, -0.5, 0.5),
    ("mlp.bias", 11, -0.25, 0.25),
]
SHORT = ["input_norm", "moa_router", "moa_q", "kv_proj", "moa_o", "moa_bias", "post_norm", "moe_router", "moe_in",
         "moe_out", "moe_bias"]


def aux_terms(logits, k):
    """[JM] compute_aux_loss with a stable lse: (switch, z); f detached (counts)."""
    n, e = logits.shape
    probs = torch.softmax(logits, dim=1)
    ids = logits.topk(k, dim=1).indices
    counts = torch.zeros(e, dtype=logits.dtype).scatter_add_(0, ids.reshape(-1), torch.ones(n * k, dtype=logits.dtype))
    f = (counts / (n * k)).detach()
    P = probs.mean(0)
    switch = e * (P * f).sum()
    lse = torch.logsumexp(logits, dim=1)
    z = (lse * lse).mean()
    return switch, z, ids


def layer_case(name, hidden, experts, kv_heads, kv_channels, ffn, seq, seed, cs, cz):
    torch.manual_seed(0)
    cfg = JetMoeConfig(hidden_size=hidden, num_local_experts=experts, num_experts_per_tok=2,
                       num_key_value_heads=kv_heads, kv_channels=kv_channels, intermediate_size=ffn,
                       num_hidden_layers=1, vocab_size=32, max_position_embeddings=64, rope_theta=10000.0,
                       attn_implementation="eager")
    cfg._attn_implementation = "eager"
    layer = JetMoeDecoderLayer(cfg, layer_idx=0).to(torch.float32)
    layer.train()
    params = dict(layer.named_parameters())
    first = {}
    with torch.no_grad():
        for (pname, off, lo, hi), short in zip(PARAMS, SHORT):
            p = params[pname]
            vals = lcg_values(seed * 100 + off, p.numel(), lo, hi)
            p.copy_(torch.tensor(vals, dtype=torch.float64).reshape(p.shape).to(torch.float32))
            first[short] = p.reshape(-1)[:4].clone()
    assert set(params) == {p[0] for p in PARAMS}, sorted(params)

    x = torch.tensor(lcg_values(seed * 100 + 20, seq * hidden, -2.0, 2.0), dtype=torch.float32).reshape(1, seq, hidden)
    G = torch.tensor(lcg_values(seed * 100 + 21, seq * hidden, -1.0, 1.0), dtype=torch.float32).reshape(1, seq, hidden)
    x.requires_grad_(True)

    captured = []

    def hook(_module, _inputs, output):
        captured.append(output[4])  # JetMoeTopKGating returns (..., logits): fp32, part of the graph

    h1 = layer.self_attention.experts.router.register_forward_hook(hook)
    h2 = layer.mlp.router.register_forward_hook(hook)
    rotary = JetMoeRotaryEmbedding(config=cfg)
    pos = torch.arange(seq).unsqueeze(0)
    cos, sin = rotary(x, pos)
    mask = torch.full((seq, seq), float("-inf")).triu(1).reshape(1, 1, seq, seq)
    out = layer(x, attention_mask=mask, position_ids=pos, position_embeddings=(cos, sin))
    h1.remove()
    h2.remove()
    assert len(captured) == 2
    moa_switch, moa_z, moa_ids = aux_terms(captured[0], 2)
    moe_switch, moe_z, moe_ids = aux_terms(captured[1], 2)
    loss = (out * G).sum() + cs * (moa_switch + moe_switch) + cz * (moa_z + moe_z)
    loss.backward()

    comment = ("HF JetMoeDecoderLayer fp32 eager, hidden %d, E %d, k 2, kv heads %d, kv_channels %d, ffn %d, T %d.\n"
               "Weights, x and G from lcg_values(seed*100 + offset) (see layer.py); L = sum(out*G) + cs*sum switch\n"
               "+ cz*sum z over both routers; gradients by autograd." % (hidden, experts, kv_heads, kv_channels, ffn, seq))
    with Fp32Writer(FAMILY, name, comment) as f:
        for key, val in [("hidden", hidden), ("experts", experts), ("kv_heads", kv_heads),
                         ("kv_channels", kv_channels), ("ffn", ffn), ("seq", seq), ("seed", seed), ("cs", cs),
                         ("cz", cz), ("eps", layer.input_layernorm.variance_epsilon),
                         ("rope_theta", 10000.0)]:
            f.scalar(key, val)
        for short in SHORT:
            f.tensor("first_" + short, first[short])
        f.tensor("moa_ids", moa_ids)
        f.tensor("moe_ids", moe_ids)
        f.tensor9("moa_logits", captured[0])
        f.tensor9("moe_logits", captured[1])
        f.scalar("moa_switch", moa_switch.item()); f.scalar("moa_z", moa_z.item())
        f.scalar("moe_switch", moe_switch.item()); f.scalar("moe_z", moe_z.item())
        f.tensor9("out", out.reshape(seq, hidden))
        f.tensor9("dx", x.grad.reshape(seq, hidden))
        for (pname, _, _, _), short in zip(PARAMS, SHORT):
            f.tensor9("grad_" + short, params[pname].grad)


def fp32_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Attention of the bf16 case: fp32 scores, softmax and P.V from the bf16 q, k, v (K/V already tiled by
    JetMoeAttention), one rounding of the output to bf16. HF eager instead rounds the scores and P to bf16;
    neither the device kernels nor the reference do, so this isolates the other modules' rounding points."""
    q, k, v = query.float(), key.float(), value.float()
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask.float()
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, v).to(query.dtype)
    return out.transpose(1, 2).contiguous(), probs


def bf16_case(name, hidden, experts, kv_heads, kv_channels, ffn, seq, seed):
    """HF JetMoeDecoderLayer in bf16 (CPU), forward only: the LCG weights and x rounded to bf16 (round to
    nearest even, as jkref::round_bf16), attention by fp32_attention (registered as an HF attention
    implementation). Checks the rounding points of the reference's hf_bf16 mode (test_layer.cpp)."""
    AttentionInterface.register("jk_fp32_reference", fp32_attention)
    torch.manual_seed(0)
    cfg = JetMoeConfig(hidden_size=hidden, num_local_experts=experts, num_experts_per_tok=2,
                       num_key_value_heads=kv_heads, kv_channels=kv_channels, intermediate_size=ffn,
                       num_hidden_layers=1, vocab_size=32, max_position_embeddings=64, rope_theta=10000.0)
    cfg._attn_implementation = "jk_fp32_reference"
    layer = JetMoeDecoderLayer(cfg, layer_idx=0).to(torch.bfloat16)
    params = dict(layer.named_parameters())
    with torch.no_grad():
        for (pname, off, lo, hi), short in zip(PARAMS, SHORT):
            p = params[pname]
            vals = lcg_values(seed * 100 + off, p.numel(), lo, hi)
            p.copy_(torch.tensor(vals, dtype=torch.float64).reshape(p.shape).to(torch.bfloat16))
        x = torch.tensor(lcg_values(seed * 100 + 20, seq * hidden, -2.0, 2.0), dtype=torch.float64)
        x = x.reshape(1, seq, hidden).to(torch.bfloat16)
        captured = []
        h1 = layer.self_attention.experts.router.register_forward_hook(lambda m, i, o: captured.append(o[4]))
        h2 = layer.mlp.router.register_forward_hook(lambda m, i, o: captured.append(o[4]))
        rotary = JetMoeRotaryEmbedding(config=cfg)
        pos = torch.arange(seq).unsqueeze(0)
        cos, sin = rotary(x, pos)
        mask = torch.full((seq, seq), float("-inf")).triu(1).to(torch.bfloat16).reshape(1, 1, seq, seq)
        out = layer(x, attention_mask=mask, position_ids=pos, position_embeddings=(cos, sin))
        h1.remove()
        h2.remove()
    comment = ("HF JetMoeDecoderLayer bf16 (CPU) forward, attention fp32 then bf16 (fp32_attention), hidden %d, E %d, kv heads %d, kv_channels %d, ffn %d,"
               " T %d.\nWeights and x: lcg_values rounded to bf16. out, both routers' logits (bf16 values, .float())"
               " and top-2 ids." % (hidden, experts, kv_heads, kv_channels, ffn, seq))
    with Fp32Writer(FAMILY, name, comment) as f:
        for key, val in [("hidden", hidden), ("experts", experts), ("kv_heads", kv_heads),
                         ("kv_channels", kv_channels), ("ffn", ffn), ("seq", seq), ("seed", seed),
                         ("eps", layer.input_layernorm.variance_epsilon), ("rope_theta", 10000.0)]:
            f.scalar(key, val)
        f.tensor("moa_ids", captured[0].topk(2, dim=1).indices)
        f.tensor("moe_ids", captured[1].topk(2, dim=1).indices)
        f.tensor9("moa_logits", captured[0])
        f.tensor9("moe_logits", captured[1])
        f.tensor9("out", out.reshape(seq, hidden))


def main():
    torch.set_default_dtype(torch.float32)
    # ffn 24 and the JetMoE layout; the second case has E = 8, head dim 4, ffn 4 and T = 7 (kept small: the
    # fixtures store every gradient).
    layer_case("fp32_small", hidden=16, experts=4, kv_heads=2, kv_channels=8, ffn=24, seq=6, seed=1, cs=0.5, cz=0.2)
    bf16_case("bf16_fwd", hidden=32, experts=4, kv_heads=2, kv_channels=8, ffn=24, seq=6, seed=3)
    layer_case("fp32_e8", hidden=16, experts=8, kv_heads=2, kv_channels=4, ffn=4, seq=7, seed=2, cs=0.5, cz=0.2)


if __name__ == "__main__":
    main()
