#!/usr/bin/env python3
"""Loads a checkpoint directory written by jetmoe (jetmoe-convert, or later jetmoe-train's export) with
Hugging Face transformers and compares its logits on a fixture's input ids with the fixture's reference:
the round trip C++ -> safetensors -> transformers.

    /opt/oracle-venv/bin/python scripts/oracle/check_export.py EXPORT_DIR tests/fixtures/models/base
"""
import sys

import torch
from safetensors.numpy import load_file
from transformers import JetMoeForCausalLM


def main():
    export_dir, fixture_dir = sys.argv[1], sys.argv[2]
    ref = load_file(f"{fixture_dir}/reference.safetensors")
    model = JetMoeForCausalLM.from_pretrained(export_dir, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.inference_mode():
        logits = model(torch.from_numpy(ref["input_ids"])).logits.numpy()
    err = abs(logits - ref["logits"]).max() / abs(ref["logits"]).max()
    print(f"{export_dir}: transformers loads it; max relative logits error vs {fixture_dir}: {err:.3e}")
    sys.exit(0 if err <= 1e-4 else 1)


if __name__ == "__main__":
    main()
