"""PyTorch / HF transformers fixtures of the 'embedding' kernel family (tests/fixtures/kernels/embedding/).

The embedding is HF's own module: JetMoeModel(config).embed_tokens (an nn.Embedding with padding_idx =
config.pad_token_id, which is None for JetMoE, so no row is masked), run forward on token ids with
repeats and absent ids, and differentiated by autograd (x.backward(dx)) with
torch.use_deterministic_algorithms(True). fp32 table and gradient; a bf16 table for the forward copy.
tests/kernel_reference/test_embedding.cpp compares kernels/tests/reference/embedding.hpp against these files.

Run: nice /opt/oracle-venv/bin/python scripts/oracle/kernel_fixtures/embedding.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_io import FixtureWriter  # noqa: E402

from transformers.models.jetmoe.configuration_jetmoe import JetMoeConfig  # noqa: E402
from transformers.models.jetmoe.modeling_jetmoe import JetMoeModel  # noqa: E402

FAMILY = "embedding"


def hf_embedding(vocab, hidden, dtype):
    config = JetMoeConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1, num_key_value_heads=1,
                          kv_channels=4, intermediate_size=8, num_local_experts=2, num_experts_per_tok=1)
    model = JetMoeModel(config)
    emb = model.embed_tokens
    assert emb.padding_idx is None, "JetMoE has no pad_token_id: no embedding row may be masked"
    return emb.to(dtype)


def case(name, ids, vocab, hidden, dtype, seed, comment):
    gen = torch.Generator().manual_seed(seed)
    emb = hf_embedding(vocab, hidden, dtype)
    with torch.no_grad():
        emb.weight.copy_((torch.randn(vocab, hidden, generator=gen) * 0.5).to(dtype))
    ids_t = torch.tensor(ids, dtype=torch.long)
    x = emb(ids_t)
    dx = (torch.rand(len(ids), hidden, generator=gen) * 2 - 1).to(dtype)
    x.backward(dx)
    with FixtureWriter(FAMILY, name, comment) as f:
        f.scalar("V", vocab)
        f.scalar("D", hidden)
        f.tensor("ids", ids_t)
        f.tensor("emb", emb.weight)
        f.tensor("x", x)
        f.tensor("dx", dx)
        f.tensor("demb", emb.weight.grad)


def main():
    torch.use_deterministic_algorithms(True)
    # id 3 four times (tokens 1, 4, 5, 9), id 0 twice, ids 2 and 6 absent.
    case("fp32_repeats", [5, 3, 0, 1, 3, 3, 4, 0, 1, 3, 5, 1], 7, 5, torch.float32, 11,
         "HF JetMoeModel.embed_tokens fp32: forward x = Emb[ids], autograd dEmb for upstream dx; repeated and absent ids")
    case("fp32_all_same", [2] * 9, 4, 6, torch.float32, 12,
         "HF JetMoeModel.embed_tokens fp32: every token has id 2")
    case("bf16_repeats", [1, 0, 1, 2, 1, 0], 3, 8, torch.bfloat16, 13,
         "HF JetMoeModel.embed_tokens bf16: forward is a copy; dEmb is PyTorch's bf16 gradient (bf16 accumulate)")


if __name__ == "__main__":
    main()
