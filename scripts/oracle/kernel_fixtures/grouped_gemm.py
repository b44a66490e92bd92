"""Fixtures for the 'grouped_gemm' kernel reference (kernels/tests/reference/grouped_gemm.hpp).

Written by PyTorch / HF transformers on the CPU (never by our own code):
  parallel_experts_fp32.txt  HF JetMoeParallelExperts in fp32: forward and autograd backward (grad input,
                             grad weight) for uneven expert sizes with an empty expert.
  parallel_experts_bf16.txt  the same module and inputs in bf16 (fp32 accumulation inside torch, output
                             rounded to bf16).
  swiglu_bf16.txt            HF's SwiGLU in bf16 (ACT2FN["silu"](a) * b on bf16 tensors) and its autograd
                             backward, over a spread of gate values (including silu's minimum near -1.28).
  moe_experts_bf16.txt       the expert part of a tiny HF JetMoeMoE in bf16: router grouping, fc1 (Z),
                             SwiGLU (H), fc2 (Y), exactly as JetMoeMoE.forward computes them.

Run: nice /opt/oracle-venv/bin/python scripts/oracle/kernel_fixtures/grouped_gemm.py
"""
import torch

from fixture_io import FixtureWriter
from transformers.activations import ACT2FN
from transformers.models.jetmoe.configuration_jetmoe import JetMoeConfig
from transformers.models.jetmoe.modeling_jetmoe import JetMoeMoE, JetMoeParallelExperts

FAMILY = "grouped_gemm"


def bf16_exact(t):
    """Round to bf16 and back, so the same values are exact in fp32 and bf16."""
    return t.to(torch.bfloat16).to(torch.float32)


def nonzero_uniform(gen, shape, lo, hi):
    mag = lo + (hi - lo) * torch.rand(shape, generator=gen)
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
    return mag * sign


def parallel_experts(gen):
    num_experts, k_in, n_out = 3, 8, 4
    expert_size = [2, 0, 3]
    rows = sum(expert_size)
    x = bf16_exact(nonzero_uniform(gen, (rows, k_in), 0.05, 2.0))
    w = bf16_exact(nonzero_uniform(gen, (num_experts, n_out, k_in), 0.05, 2.0))
    g = bf16_exact(nonzero_uniform(gen, (rows, n_out), 0.05, 2.0))
    for dtype, case in ((torch.float32, "parallel_experts_fp32"), (torch.bfloat16, "parallel_experts_bf16")):
        mod = JetMoeParallelExperts(num_experts, k_in, n_out).to(dtype)
        with torch.no_grad():
            mod.weight.copy_(w.to(dtype))
        xin = x.to(dtype).clone().requires_grad_(True)
        out = mod(xin, expert_size)
        out.backward(g.to(dtype))
        with FixtureWriter(FAMILY, case, "HF JetMoeParallelExperts (%s): out = x W[e]^T per expert; loss = sum(out * "
                           "grad_out); grad_x, grad_w by torch autograd" % dtype) as f:
            f.tensor("offsets", torch.tensor([0] + list(torch.tensor(expert_size).cumsum(0).tolist())))
            f.tensor("x", x)
            f.tensor("w", w)
            f.tensor("grad_out", g)
            f.tensor("out", out.float())
            f.tensor("grad_x", xin.grad.float())
            f.tensor("grad_w", mod.weight.grad.float())


def swiglu(gen):
    n = 160
    a = torch.cat([
        torch.linspace(-12.0, 12.0, 64),
        -1.2785 + 0.02 * torch.randn(32, generator=gen),  # around silu's minimum (da cancels there)
        torch.randn(64, generator=gen) * 3.0,
    ])[:n]
    a = a.to(torch.bfloat16)
    b = nonzero_uniform(gen, (n,), 0.01, 4.0).to(torch.bfloat16)
    dh = nonzero_uniform(gen, (n,), 0.01, 4.0).to(torch.bfloat16)
    act = ACT2FN["silu"]
    a_ = a.clone().requires_grad_(True)
    b_ = b.clone().requires_grad_(True)
    h = act(a_) * b_  # JetMoeMoE.forward: self.activation(chunk[0]) * chunk[1]
    h.backward(dh)
    with FixtureWriter(FAMILY, "swiglu_bf16", "HF SwiGLU in bf16: h = silu(a) * b (ACT2FN['silu']), torch autograd "
                       "backward with grad dh; all tensors bf16") as f:
        f.tensor("a", a.float())
        f.tensor("b", b.float())
        f.tensor("dh", dh.float())
        f.tensor("h", h.float())
        f.tensor("da", a_.grad.float())
        f.tensor("db", b_.grad.float())


def moe_experts(gen):
    cfg = JetMoeConfig(hidden_size=8, intermediate_size=4, num_local_experts=3, num_experts_per_tok=2,
                       kv_channels=4, num_key_value_heads=2)
    moe = JetMoeMoE(cfg).to(torch.bfloat16)
    with torch.no_grad():
        moe.router.layer.weight.copy_(torch.randn(3, 8, generator=gen) * 0.5)
        moe.input_linear.weight.copy_(nonzero_uniform(gen, (3, 8, 8), 0.05, 1.0))
        moe.output_linear.weight.copy_(nonzero_uniform(gen, (3, 8, 4), 0.05, 1.0))
    tokens = torch.randn(5, 8, generator=gen).to(torch.bfloat16)
    with torch.no_grad():
        # The expert part of JetMoeMoE.forward, line by line.
        _, batch_index, _, expert_size, _ = moe.router(tokens)
        expert_inputs = tokens[batch_index]
        z = moe.input_linear(expert_inputs, expert_size)
        chunks = z.chunk(2, dim=-1)
        h = moe.activation(chunks[0]) * chunks[1]
        y = moe.output_linear(h, expert_size)
    with FixtureWriter(FAMILY, "moe_experts_bf16", "expert part of a tiny HF JetMoeMoE in bf16 (D=8, F=4, E=3, "
                       "top-2, 5 tokens): z = input_linear, h = silu(z[:F]) * z[F:], y = output_linear(h)") as f:
        f.tensor("offsets", torch.tensor([0] + list(torch.tensor(expert_size).cumsum(0).tolist())))
        f.tensor("x", expert_inputs.float())
        f.tensor("w_in", moe.input_linear.weight.float())
        f.tensor("w_out", moe.output_linear.weight.float())
        f.tensor("z", z.float())
        f.tensor("h", h.float())
        f.tensor("y", y.float())


def main():
    gen = torch.Generator().manual_seed(20240407)
    torch.manual_seed(20240407)
    parallel_experts(gen)
    swiglu(gen)
    moe_experts(gen)


if __name__ == "__main__":
    main()
