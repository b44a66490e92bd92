#!/usr/bin/env python3
# Trains the shipped SentencePiece tokenizer, data/tokenizer/tokenizer.model, on the shipped corpus
# (data/corpus/, made by scripts/data/make_corpus.py). Standard library plus Debian's `spm_train`
# (package `sentencepiece`, 0.1.97 on Debian 12; scripts/install-deps.sh installs it). jetmoe itself only
# reads the finished model, through libsentencepiece.
#
#   python3 scripts/data/train_tokenizer.py            # rewrite data/tokenizer/tokenizer.model
#   python3 scripts/data/train_tokenizer.py --verify   # retrain in a temporary directory and compare
#
# The settings are Llama/Mistral's conventions, which jetmoe's Tokenizer (src/io/tokenizer.hpp) implements
# and the test fixture (scripts/fixtures/make_tokenizer_fixtures.py) uses: BPE, byte fallback (every byte
# has a piece, so there is no <unk> in practice), identity normalisation, a dummy-prefix "▁", whitespace kept
# as written (code indentation survives), digits split one by one, <unk>=0 <s>=1 </s>=2 and no <pad>.
# Vocabulary 4096, the `tiny` model preset's. One training thread and no sentence sampling, so the model
# file depends only on the corpus and the spm_train version.
#
# The trainer sees one line of each document per sentence (spm_train's input format), so "\n" is not a
# piece of its own: newlines in documents become the byte piece <0x0A>, as with Llama's tokenizer.
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(ROOT, "data", "corpus")
OUT = os.path.join(ROOT, "data", "tokenizer", "tokenizer.model")
VOCAB_SIZE = 4096


def corpus_lines():
    with gzip.open(os.path.join(CORPUS, "kjv.txt.gz"), "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield line.rstrip("\n")
    with gzip.open(os.path.join(CORPUS, "sqlite.jsonl.gz"), "rt", encoding="utf-8") as f:
        for record in f:
            for line in json.loads(record)["text"].split("\n"):
                if line.strip():
                    yield line


def train(work):
    text = os.path.join(work, "corpus.txt")
    with open(text, "w", encoding="utf-8") as f:
        for line in corpus_lines():
            f.write(line + "\n")
    subprocess.run([
        shutil.which("spm_train") or sys.exit("train_tokenizer: spm_train not found (Debian package sentencepiece)"),
        "--input=corpus.txt",  # relative: the model records its trainer options, temporary paths would differ
        "--model_prefix=tokenizer",
        "--model_type=bpe",
        f"--vocab_size={VOCAB_SIZE}",
        "--character_coverage=1.0",
        "--byte_fallback=true",
        "--split_digits=true",
        "--split_by_unicode_script=true",
        "--split_by_whitespace=true",
        "--split_by_number=true",
        "--allow_whitespace_only_pieces=true",
        "--max_sentencepiece_length=16",
        "--normalization_rule_name=identity",
        "--add_dummy_prefix=true",
        "--remove_extra_whitespaces=false",
        "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1",
        "--unk_piece=<unk>", "--bos_piece=<s>", "--eos_piece=</s>",
        "--input_sentence_size=0",
        "--shuffle_input_sentence=false",
        "--num_threads=1",
        "--minloglevel=1",
    ], check=True, cwd=work)
    with open(os.path.join(work, "tokenizer.model"), "rb") as f:
        return f.read()


def main():
    ap = argparse.ArgumentParser(description="Train data/tokenizer/tokenizer.model on data/corpus.")
    ap.add_argument("--verify", action="store_true", help="retrain and compare with the committed model")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        model = train(work)
    if args.verify:
        if not os.path.exists(OUT) or open(OUT, "rb").read() != model:
            sys.exit("train_tokenizer: the retrained model differs from data/tokenizer/tokenizer.model")
        print("train_tokenizer: data/tokenizer/tokenizer.model is reproduced exactly")
        return
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(model)
    print(f"train_tokenizer: wrote data/tokenizer/tokenizer.model ({len(model)} bytes, vocabulary {VOCAB_SIZE})")


if __name__ == "__main__":
    main()
