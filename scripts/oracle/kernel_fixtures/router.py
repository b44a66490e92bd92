"""PyTorch / HF transformers fixtures of the 'router' kernel family (tests/fixtures/kernels/router/).

The numbers come from HF's own modules (transformers.models.jetmoe.modeling_jetmoe): JetMoeTopKGating for
the routing and JetMoeMoE.forward for the gated combine (its expert linears replaced by stubs that return
chosen expert outputs, so the gate multiply, the bf16 index_add and the bias add are HF's code), with
autograd for the gradients. The aux losses follow the original JetMoE form ([JM] gate.py
compute_aux_loss: naive log(sum(exp)), jetmoe-spec.md section 4), differentiated by autograd.
tests/kernel_reference/test_router.cpp compares kernels/tests/reference/router.hpp against these files.

Run: nice /opt/oracle-venv/bin/python scripts/oracle/kernel_fixtures/router.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_io import FixtureWriter  # noqa: E402

from transformers.models.jetmoe.configuration_jetmoe import JetMoeConfig  # noqa: E402
from transformers.models.jetmoe.modeling_jetmoe import JetMoeMoE, JetMoeTopKGating  # noqa: E402

FAMILY = "router"
E, K = 8, 2


def make_inputs(gen, n, d, dtype):
    u = (torch.rand(n, d, generator=gen) * 2 - 1).to(dtype)
    w = (torch.randn(E, d, generator=gen) * 0.3).to(dtype)
    w[5] = w[2]          # experts 2 and 5 always tie: torch.topk must keep the lower index first
    u[3] = 0             # token 3: every logit is 0, an 8-way tie -> experts 0, 1
    return u, w


def gating_case(name, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    n, d = 12, 16
    u, w = make_inputs(gen, n, d, dtype)
    gate = JetMoeTopKGating(d, E, K).to(dtype)
    with torch.no_grad():
        gate.layer.weight.copy_(w)
        index_sorted, batch_index, batch_gates, expert_size, logits = gate(u)
        top_logits, top_ids = logits.topk(K, dim=1)  # the same calls as JetMoeTopKGating.forward
        gates_f32 = torch.softmax(top_logits, dim=1)
    comment = ("HF JetMoeTopKGating, %s: u [N, D], w [E, D] (rows 2 and 5 equal: ties), token 3 all zero.\n"
               "logits = gate.layer(u).float(); topk_ids/gates_f32 from logits.topk + softmax; HF's\n"
               "expert_size, batch_index (token of each sorted row), index_sorted (flat t*k+j of each row),\n"
               "batch_gates (gates in the activation dtype, per sorted row)." % dtype)
    with FixtureWriter(FAMILY, name, comment) as f:
        f.scalar("N", n); f.scalar("D", d); f.scalar("E", E); f.scalar("k", K)
        f.tensor("u", u); f.tensor("w", w); f.tensor("logits", logits)
        f.tensor("topk_ids", top_ids); f.tensor("gates_f32", gates_f32)
        f.tensor("expert_size", torch.tensor(expert_size)); f.tensor("batch_index", batch_index)
        f.tensor("index_sorted", index_sorted); f.tensor("batch_gates", batch_gates)


class _Captured:
    pass


def moe_combine_case(name, dtype, seed, with_grad):
    """JetMoeMoE.forward with expert stubs: output row of (token t, slot j) = y_ts[t, j]."""
    gen = torch.Generator().manual_seed(seed)
    n, d = 8, 16
    u, w = make_inputs(gen, n, d, dtype)
    y_ts = (torch.randn(n, K, d, generator=gen)).to(dtype)
    bias = (torch.randn(d, generator=gen) * 0.5).to(dtype)
    dout = (torch.randn(n, d, generator=gen)).to(dtype)
    cfg = JetMoeConfig(hidden_size=d, intermediate_size=4, num_local_experts=E, num_experts_per_tok=K,
                       kv_channels=4, num_key_value_heads=2)
    moe = JetMoeMoE(cfg).to(dtype)
    cap = _Captured()

    def router_hook(_module, _inputs, outputs):
        cap.index_sorted = outputs[0]
        cap.logits = outputs[4]
        if with_grad:
            cap.logits.retain_grad()

    class InputStub(torch.nn.Module):
        def forward(self, inputs, expert_size):
            return torch.zeros(inputs.shape[0], 8, dtype=inputs.dtype)

    y_leaf = y_ts.clone().requires_grad_(with_grad)

    class OutputStub(torch.nn.Module):
        def forward(self, inputs, expert_size):
            return y_leaf.reshape(n * K, d)[cap.index_sorted]

    moe.input_linear = InputStub()
    moe.output_linear = OutputStub()
    with torch.no_grad():
        moe.router.layer.weight.copy_(w)
        moe.bias.copy_(bias)
    moe.router.register_forward_hook(router_hook)
    u_leaf = u.clone().requires_grad_(with_grad)
    with torch.set_grad_enabled(with_grad):
        out = moe(u_leaf.reshape(1, n, d)).reshape(n, d)
        if with_grad:
            (out * dout).sum().backward()
    top_logits, top_ids = cap.logits.detach().topk(K, dim=1)
    gates_f32 = torch.softmax(top_logits, dim=1)
    comment = ("HF JetMoeMoE.forward, %s, expert linears stubbed: the output row of (token t, slot j) is\n"
               "y_ts[t, j]; out = index_add of gate * row into zeros, + bias (HF's code).%s" %
               (dtype, "\nGradients of sum(out * dout) by autograd: dlogits (router logits), dw (router\n"
                       "weight), du, dy_ts, dbias." if with_grad else ""))
    with FixtureWriter(FAMILY, name, comment) as f:
        f.scalar("N", n); f.scalar("D", d); f.scalar("E", E); f.scalar("k", K)
        f.tensor("u", u); f.tensor("w", w); f.tensor("y_ts", y_ts); f.tensor("bias", bias)
        f.tensor("logits", cap.logits.detach()); f.tensor("topk_ids", top_ids); f.tensor("gates_f32", gates_f32)
        f.tensor("out", out.detach())
        if with_grad:
            f.tensor("dout", dout)
            f.tensor("dlogits", cap.logits.grad)
            f.tensor("dw", moe.router.layer.weight.grad)
            f.tensor("du", u_leaf.grad)
            f.tensor("dy_ts", y_leaf.grad)
            f.tensor("dbias", moe.bias.grad)


def aux_case(name, seed, scale):
    """[JM] compute_aux_loss, fp32 (written from jetmoe-spec.md section 4), gradients by autograd."""
    gen = torch.Generator().manual_seed(seed)
    n = 16
    x = (torch.randn(n, E, generator=gen) * scale).to(torch.float64)
    ids = x.topk(K, dim=1).indices
    x = x.clone().requires_grad_(True)
    probs = torch.softmax(x, dim=1)
    gates = torch.zeros(n, E, dtype=torch.float64).scatter(1, ids, 1.0)
    P = probs.sum(0)
    P = P / P.sum()
    f = gates.sum(0)
    f = f / f.sum()
    switch = E * (P * f).sum()
    z = (torch.log(torch.exp(x).sum(1)) ** 2).sum() / n
    alpha, beta = 0.01, 0.001
    (alpha * switch + beta * z).backward()
    comment = ("Original JetMoE aux loss per router (jetmoe-spec.md section 4), float64 autograd:\n"
               "switch = E sum_e P_e f_e (P = normalised sum of softmax, f = normalised choice counts),\n"
               "z = mean_t log(sum_e exp x)^2 (naive form), dlogits = d(alpha switch + beta z)/dx.")
    with FixtureWriter(FAMILY, name, comment) as f_:
        f_.scalar("N", n); f_.scalar("E", E); f_.scalar("k", K)
        f_.scalar("alpha", alpha); f_.scalar("beta", beta)
        f_.tensor("logits", x.detach()); f_.tensor("ids", ids)
        f_.scalar("switch", switch.item()); f_.scalar("z", z.item())
        f_.tensor("dlogits", x.grad)


def main():
    torch.manual_seed(0)
    gating_case("gating_bf16", torch.bfloat16, 11)
    gating_case("gating_f32", torch.float32, 12)
    moe_combine_case("moe_combine_bf16", torch.bfloat16, 13, with_grad=True)
    moe_combine_case("moe_combine_f32", torch.float32, 14, with_grad=True)
    aux_case("aux_loss", 15, 1.5)
    aux_case("aux_loss_large", 16, 20.0)


if __name__ == "__main__":
    main()
