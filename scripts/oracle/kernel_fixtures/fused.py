"""Fixtures of the 'fused' kernel family (tests/fixtures/kernels/fused/*.txt), computed with PyTorch and
HF transformers' JetMoe modules on the CPU:

  rmsnorm_f32, rmsnorm_bf16  JetMoeRMSNorm forward and autograd backward (dx, dw) for a given dy
  rope_table                 JetMoeRotaryEmbedding at head_dim 128, theta 1e4: inv_freq and cos/sin (fp32)
  rope_f32, rope_bf16        apply_rotary_pos_emb on small q, k (head_dim 16) and its autograd backward
  cross_entropy_f32/_bf16    F.cross_entropy(logits.float(), labels, ignore_index=-100): per-row losses,
                             the mean and d mean / d logits
  adamw                      torch.optim.AdamW (single-tensor, foreach=False) for 3 steps on 3 tensors,
                             clip_grad_norm_(max_norm=1) before each step, one tensor without decay

Run: nice /opt/oracle-venv/bin/python scripts/oracle/kernel_fixtures/fused.py
"""
import torch
import torch.nn.functional as F
from transformers import JetMoeConfig
from transformers.models.jetmoe import modeling_jetmoe as hf

from fixture_io import FixtureWriter

FAMILY = "fused"


def rmsnorm(dtype, case):
    g = torch.Generator().manual_seed(11)
    rows, hidden, eps = 3, 8, 1e-6
    x = (torch.randn(rows, hidden, generator=g) * torch.tensor([[1.0], [0.01], [30.0]])).to(dtype)
    w = (1.0 + 0.5 * torch.randn(hidden, generator=g)).to(dtype)
    dy = torch.randn(rows, hidden, generator=g).to(dtype)
    norm = hf.JetMoeRMSNorm(hidden, eps=eps).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(w)
    xr = x.clone().requires_grad_(True)
    y = norm(xr)
    y.backward(dy)
    with FixtureWriter(FAMILY, case, "HF JetMoeRMSNorm (%s), eps 1e-6: y = norm(x); dx, dw by autograd of <y, dy>" % dtype) as f:
        f.scalar("eps", eps)
        f.tensor("x", x)
        f.tensor("w", w)
        f.tensor("dy", dy)
        f.tensor("y", y)
        f.tensor("dx", xr.grad)
        f.tensor("dw", norm.weight.grad)


def rope_config(head_dim):
    return JetMoeConfig(kv_channels=head_dim, num_key_value_heads=2, hidden_size=2 * head_dim, rope_theta=10000.0,
                        num_hidden_layers=1, vocab_size=16)


def rope_table():
    emb = hf.JetMoeRotaryEmbedding(rope_config(128))
    positions = torch.tensor([[0, 1, 37, 4095]])
    x = torch.zeros(1, 4, 128)
    cos, sin = emb(x, positions)
    half = 64
    with FixtureWriter(FAMILY, "rope_table", "JetMoeRotaryEmbedding head_dim 128, theta 1e4: inv_freq [64] and the fp32\n"
                       "cos, sin [4 positions, 64] (first half: HF repeats it)") as f:
        f.scalar("theta", 10000.0)
        f.scalar("head_dim", 128)
        f.tensor("positions", positions[0])
        f.tensor("inv_freq", emb.inv_freq)
        f.tensor("cos", cos[0, :, :half])
        f.tensor("sin", sin[0, :, :half])


def rope(dtype, case):
    g = torch.Generator().manual_seed(5)
    head_dim, tokens, hq, hk = 16, 3, 2, 1
    emb = hf.JetMoeRotaryEmbedding(rope_config(head_dim))
    positions = torch.tensor([[0, 3, 1000]])
    q = torch.randn(1, hq, tokens, head_dim, generator=g).to(dtype)
    k = torch.randn(1, hk, tokens, head_dim, generator=g).to(dtype)
    gq = torch.randn(1, hq, tokens, head_dim, generator=g).to(dtype)
    gk = torch.randn(1, hk, tokens, head_dim, generator=g).to(dtype)
    cos, sin = emb(q, positions)
    qr = q.clone().requires_grad_(True)
    kr = k.clone().requires_grad_(True)
    q_out, k_out = hf.apply_rotary_pos_emb(qr, kr, cos, sin)
    torch.autograd.backward([q_out, k_out], [gq, gk])
    # Stored token-major as the kernels see them: [tokens, heads, d].
    tm = lambda t: t[0].transpose(0, 1).contiguous()
    with FixtureWriter(FAMILY, case, "HF apply_rotary_pos_emb (%s) with JetMoeRotaryEmbedding, head_dim 16, theta 1e4;\n"
                       "tensors token-major [tokens, heads, d]; dq, dk by autograd for the given gq, gk" % dtype) as f:
        f.scalar("theta", 10000.0)
        f.tensor("positions", positions[0])
        f.tensor("cos", cos[0])
        f.tensor("sin", sin[0])
        f.tensor("q", tm(q))
        f.tensor("k", tm(k))
        f.tensor("q_out", tm(q_out))
        f.tensor("k_out", tm(k_out))
        f.tensor("gq", tm(gq))
        f.tensor("gk", tm(gk))
        f.tensor("dq", tm(qr.grad))
        f.tensor("dk", tm(kr.grad))


def cross_entropy(dtype, case):
    g = torch.Generator().manual_seed(3)
    rows, vocab = 5, 11
    logits = (3.0 * torch.randn(rows, vocab, generator=g)).to(dtype)
    labels = torch.tensor([3, -100, 10, 0, 7])
    lr = logits.clone().requires_grad_(True)
    loss = F.cross_entropy(lr.float(), labels, ignore_index=-100)
    loss.backward()
    rows_loss = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="none")
    with FixtureWriter(FAMILY, case, "F.cross_entropy(logits.float(), labels, ignore_index=-100) with %s logits;\n"
                       "loss_rows (reduction none), loss (mean), dlogits = d loss / d logits (autograd, %s)" % (dtype, dtype)) as f:
        f.tensor("logits", logits)
        f.tensor("labels", labels)
        f.tensor("loss_rows", rows_loss)
        f.scalar("loss", loss.item())
        f.tensor("dlogits", lr.grad)


def adamw():
    g = torch.Generator().manual_seed(7)
    shapes = [(3, 4), (5,), (1,)]
    decays = [1, 0, 1]
    params = [torch.nn.Parameter(0.1 * torch.randn(s, generator=g)) for s in shapes]
    lr, betas, eps, wd, max_norm = 1e-2, (0.9, 0.95), 1e-8, 0.1, 1.0
    groups = [{"params": [p for p, d in zip(params, decays) if d], "weight_decay": wd},
              {"params": [p for p, d in zip(params, decays) if not d], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=False, fused=False)
    grad_scales = [3.0, 0.05, 1.0]  # clipping active, inactive, active
    with FixtureWriter(FAMILY, "adamw", "torch.optim.AdamW(foreach=False) lr 1e-2, betas (0.9, 0.95), eps 1e-8, weight decay 0.1\n"
                       "on tensors 0 and 2 (tensor 1 in a group with weight decay 0); before each of the 3 steps the\n"
                       "gradients g<step>_<i> are set and clipped by clip_grad_norm_(max_norm 1); clip<step> = the\n"
                       "coefficient applied (min(1, max_norm / (norm + 1e-6)) in fp32), norm<step> the returned norm") as f:
        f.scalar("lr", lr)
        f.scalar("beta1", betas[0])
        f.scalar("beta2", betas[1])
        f.scalar("eps", eps)
        f.scalar("weight_decay", wd)
        f.scalar("max_norm", max_norm)
        f.tensor("decays", torch.tensor(decays))
        for i, p in enumerate(params):
            f.tensor("p0_%d" % i, p.detach().reshape(-1))
        for step in range(1, 4):
            grads = [grad_scales[step - 1] * torch.randn(s, generator=g) for s in shapes]
            for i, (p, gr) in enumerate(zip(params, grads)):
                p.grad = gr.clone()
                f.tensor("g%d_%d" % (step, i), gr.reshape(-1))
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            clip = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
            f.scalar("norm%d" % step, norm.item())
            f.scalar("clip%d" % step, clip.item())
            opt.step()
            for i, p in enumerate(params):
                f.tensor("p%d_%d" % (step, i), p.detach().reshape(-1))


def main():
    torch.manual_seed(0)
    rmsnorm(torch.float32, "rmsnorm_f32")
    rmsnorm(torch.bfloat16, "rmsnorm_bf16")
    rope_table()
    rope(torch.float32, "rope_f32")
    rope(torch.bfloat16, "rope_bf16")
    cross_entropy(torch.float32, "cross_entropy_f32")
    cross_entropy(torch.bfloat16, "cross_entropy_bf16")
    adamw()


if __name__ == "__main__":
    main()
