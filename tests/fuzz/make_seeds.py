#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz corpora (tests/fuzz/corpus/<target>/seed-*) from files the
repository already has: the shipped decks, the test fixtures' config.json, safetensors files, index,
eval and chat files, and one source prepared by jetmoe-prepare from tests/cli/data/prepare/code.jsonl.

    tests/fuzz/make_seeds.py BUILD_DIR     (BUILD_DIR holds apps/jetmoe-prepare, e.g. build)

Seeds are valid inputs for the fuzzer to mutate, not expected values. Inputs that once found a bug
(crash-*, named after what they found) are added by hand and never rewritten by this script.
"""
import glob
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build = os.path.abspath(sys.argv[1])
    for d in glob.glob(os.path.join(CORPUS, "*")):
        for f in glob.glob(os.path.join(d, "seed-*")):
            os.remove(f)

    # Decks: the shipped ones, and small ones that reach the cross-key checks.
    for path in sorted(glob.glob(os.path.join(ROOT, "inputs", "*.deck"))):
        write("deck", os.path.basename(path), read(path))
    write("deck", "override", "train/lr=3e-4\n<model>\npreset = tiny\n")
    write("deck", "model-none", "<model>\npreset = none\nvocab_size = 256\nhidden_size = 64\nnum_layers = 2\n"
          "num_kv_heads = 2\nhead_dim = 16\nnum_experts = 4\ntop_k = 2\nffn_hidden_size = 32\n"
          "max_position_embeddings = 128\n")
    write("deck", "parallel", "<train>\nseq_len = 64\nmicro_batch_size = 2\nglobal_batch_tokens = 384\n"
          "<parallel>\npipeline_stages = 3\nstage_layers = 1, 1, 2\n<schedule>\nwarmup = 2\n"
          "<data>\nmixture = a:1, b:0.5\n<generate>\nprompt = \"a # b\"\n")

    # config.json of every fixture model.
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "models", "*", "config.json"))):
        write("model_config", os.path.basename(os.path.dirname(path)), read(path))

    # safetensors: the format fixtures and the small shards.
    fx = "tests/fixtures/safetensors"
    for name in ["dtypes", "golden", "metadata"]:
        write("safetensors", name, read(f"{fx}/{name}.safetensors"))
    for path in sorted(glob.glob(os.path.join(ROOT, fx, "sharded", "*.safetensors")))[:3]:
        write("safetensors", os.path.basename(path), read(path))
    write("checkpoint_index", "sharded", read(f"{fx}/sharded/model.safetensors.index.json"))

    # A prepared source: its manifest and one split.
    with tempfile.TemporaryDirectory() as tmp:
        deck = os.path.join(tmp, "prepare.deck")
        with open(deck, "w") as f:
            # Paths relative to the repository, so that the manifest does not depend on where it is.
            f.write("<tokenizer>\nmodel = data/tokenizer/tokenizer.model\n<prepare>\n"
                    f"inputs = code=tests/cli/data/prepare/code.jsonl\noutput_dir = {tmp}/out\n"
                    "validation_fraction = 0\n")
        subprocess.run([os.path.join(build, "apps", "jetmoe-prepare"), "-i", deck], check=True,
                       stdout=subprocess.DEVNULL, cwd=ROOT)
        src = os.path.join(tmp, "out", "code")
        write("manifest", "code", read(os.path.join(src, "manifest.json")))
        for split in ["train", "validation"]:
            binary, index = read(os.path.join(src, split + ".bin")), read(os.path.join(src, split + ".idx"))
            write("token_shard", split, struct.pack("<I", len(binary)) + binary + index)

    # Tokenizer: texts (even first byte; 2: BOS, 4: EOS) and ids (odd first byte).
    texts = ["Hello world", "  two leading spaces", "tabs\tand\nnewlines", "<s>special</s> pieces",
             "héllo wörld ☃ 日本語 🙂", "\xff\xfe invalid", "int main() { return 0; }"]
    for i, t in enumerate(texts):
        raw = t.encode("latin-1") if t.startswith("\xff") else t.encode()
        write("tokenizer", f"text{i}", bytes([2 * (i % 4)]) + raw)
    write("tokenizer", "ids", bytes([1]) + struct.pack("<16H", *range(1, 400, 25)))
    write("tokenizer", "byte-ids", bytes([1]) + struct.pack("<8H", 3, 200, 201, 230, 259, 100, 2, 1))

    # tokenizer.model: the test fixture's (the shipped one is ten times larger).
    write("tokenizer_model", "fixture", read("tests/fixtures/tokenizer/tokenizer.model"))

    # Chat: the CLI tests' SFT file and both DPO forms of the unit tests.
    write("chat_jsonl", "sft", read("tests/cli/data/sft_tiny.jsonl"))
    write("chat_jsonl", "dpo", "\n".join([
        json.dumps({"prompt": "Name a river.", "chosen": "The Nile.", "rejected": "A tree."}),
        json.dumps({"prompt": "ignored",
                    "chosen": [{"role": "user", "content": "Name a river."},
                               {"role": "assistant", "content": "The Nile."}],
                    "rejected": [{"role": "user", "content": "Name a river."},
                                 {"role": "assistant", "content": "A tree."}]})]) + "\n")

    # Multiple choice: the first rows of each task's fixture.
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "eval", "*.jsonl"))):
        with open(path, "rb") as f:
            rows = f.read().split(b"\n")[:4]
        write("mc_jsonl", os.path.basename(path)[:-len(".jsonl")], b"\n".join(rows) + b"\n")

    # Corpus files of jetmoe-prepare (first byte: 1 JSON Lines, 2 one document per file, 4 gzip).
    code = read("tests/cli/data/prepare/code.jsonl")
    prose = b"In the beginning.\n\n  \nAnd the earth\nwas without form.\r\n\r\nThe end"
    write("documents", "jsonl", b"\x01" + code)
    write("documents", "text", b"\x00" + prose)
    write("documents", "text-file", b"\x02" + prose)
    write("documents", "jsonl-gz", b"\x05" + gzip.compress(code, mtime=0))
    write("documents", "text-gz", b"\x04" + gzip.compress(prose, mtime=0))


if __name__ == "__main__":
    main()
