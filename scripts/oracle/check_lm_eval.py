#!/usr/bin/env python3
"""Reference for jetmoe-eval's multiple-choice scoring from lm-evaluation-harness itself.

Runs lm-evaluation-harness (PyPI `lm-eval`, its Python API: `simple_evaluate` with the HF backend `HFLM`) on the
samples shipped in tests/fixtures/eval/, with a small JetMoE model built here (tests/fixtures/eval/model/: vocabulary
400 to fit the fixture tokenizer tests/fixtures/tokenizer/), and writes what lm-eval computed to
tests/fixtures/eval/lm_eval_reference.json:

  runs[]                 per format: 0-shot; 2-shot from the *_fewshot.jsonl pool (lm-eval's train/dev split); 2-shot
                         from the sample itself (fewshot_input null: the configs' fewshot_split set to the evaluated
                         split, so lm-eval leaves each question out of its own examples); truthfulqa-mc only 0-shot
                         (its config fixes num_fewshot = 0). Each: format, input, fewshot_input, num_fewshot,
                         fewshot_seed
    tasks{}              lm-eval's aggregated metrics per task: n, acc, acc_stderr, acc_norm, acc_norm_stderr
                         (MMLU: one task per subject, mmlu_<subject>, plus the group "mmlu" aggregated with lm-eval's
                         own size-weighted mean and pooled stderr over the subjects)
    docs[]               per question, in input-file order: task, line (1-based line of the input file), choices
                         (doc_to_choice), gold, acc, acc_norm (lm-eval's per-sample values); contexts[] (text and
                         ids: each distinct context of the question's requests) and requests[] (one per choice):
                         context (index into contexts), continuation (with contexts: lm-eval's Instance arguments,
                         i.e. its exact prompt strings), continuation_ids (with the context's ids: HFLM._encode_pair,
                         what HFLM scores), loglikelihood (HFLM's float)

The tasks are lm-eval's own task configs (hellaswag, arc_easy, mmlu_<subject>, winogrande, truthfulqa_mc1), unchanged
but for the split overrides of the self-pool runs: `datasets.load_dataset` is replaced by a function that returns the shipped jsonl as the splits those configs
read (validation/test = the sample, train/dev = the *_fewshot.jsonl pool), so everything runs offline. acc_norm is
added to the metric list of the tasks whose config lists only acc (mmlu, winogrande, truthfulqa_mc1) so that lm-eval
computes it with its own formula.

Setup (outside the repository; scripts only, never a build or test dependency):
    /opt/oracle-venv/bin/pip install lm-eval==0.4.13 protobuf==7.36.2 accelerate==1.15.0  # on top of requirements.txt
(protobuf: transformers 5 converts tokenizer.model with it; accelerate: lm-eval's HF backend imports it.)
Run:
    nice /opt/oracle-venv/bin/python scripts/oracle/check_lm_eval.py                 # ~30 s, offline
    nice /opt/oracle-venv/bin/python scripts/oracle/check_lm_eval.py --rebuild-model # also rewrite the model
    nice /opt/oracle-venv/bin/python scripts/oracle/check_lm_eval.py --compare OUT.json ...
        compares jetmoe-eval outputs (eval/output of task multiple-choice) against the reference and prints the
        largest relative log-likelihood difference and any acc/acc_norm disagreement.
"""

import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EVAL_DIR = os.path.join(REPO, "tests", "fixtures", "eval")
MODEL_DIR = os.path.join(EVAL_DIR, "model")
TOKENIZER_DIR = os.path.join(REPO, "tests", "fixtures", "tokenizer")
REFERENCE = os.path.join(EVAL_DIR, "lm_eval_reference.json")

FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed, and jetmoe's eval/fewshot_seed default
FEWSHOT = 2  # few-shot runs: from the *_fewshot.jsonl pool, and from the sample itself

# format -> (sample file, few-shot pool file or None, lm-eval task names)
FORMATS = {
    "hellaswag": ("hellaswag.jsonl", "hellaswag_fewshot.jsonl", ["hellaswag"]),
    "arc": ("arc.jsonl", "arc_fewshot.jsonl", ["arc_easy"]),
    "mmlu": ("mmlu.jsonl", "mmlu_fewshot.jsonl", None),  # one task per subject in the file
    "winogrande": ("winogrande.jsonl", "winogrande_fewshot.jsonl", ["winogrande"]),
    # truthfulqa_mc1 has no training split (lm-eval's pool would be the validation set itself), and its config
    # fixes num_fewshot = 0
    "truthfulqa-mc": ("truthfulqa-mc.jsonl", None, ["truthfulqa_mc1"]),
}
# jetmoe's task names for lm-eval's
JETMOE_TASK = {"hellaswag": "hellaswag", "arc_easy": "arc", "winogrande": "winogrande",
               "truthfulqa_mc1": "truthfulqa_mc1"}

# The model: a small random JetMoE whose vocabulary is the fixture tokenizer's 400 pieces and whose context holds the
# longest few-shot prompt of the samples. Weights drawn like scripts/oracle/make_model_fixtures.py (N(0, 0.2)
# matrices, N(0, 0.1) biases, U(0.7, 1.3) norms) so that the choices' log-likelihoods are far apart.
MODEL = dict(vocab_size=400, hidden_size=48, num_hidden_layers=2, num_key_value_heads=2, kv_channels=12,
             intermediate_size=48, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=2048,
             rms_norm_eps=1e-5, tie_word_embeddings=True)
MODEL_SEED = 4242


def log(*a):
    print(*a, flush=True)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------------------------------------------------------
# The model


def build_model():
    from transformers import GenerationConfig, JetMoeConfig, JetMoeForCausalLM

    torch.manual_seed(MODEL_SEED)
    config = JetMoeConfig(**MODEL, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                          bos_token_id=1, eos_token_id=2, pad_token_id=None, attention_dropout=0.0,
                          output_router_logits=False)
    model = JetMoeForCausalLM(config).float()
    gen = torch.Generator().manual_seed(MODEL_SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(0.7 + 0.6 * torch.rand(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=None)
    if os.path.isdir(MODEL_DIR):
        shutil.rmtree(MODEL_DIR)
    model.save_pretrained(MODEL_DIR, safe_serialization=True)
    for name in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(TOKENIZER_DIR, name), os.path.join(MODEL_DIR, name))
    log("wrote", os.path.relpath(MODEL_DIR, REPO))


# ---------------------------------------------------------------------------------------------------------------------
# lm-eval on the shipped samples


class OfflineDatasets:
    """Replaces datasets.load_dataset: lm-eval's task configs get the shipped jsonl under the split names they read."""

    def __init__(self):
        self.splits = {}  # (dataset_path, dataset_name) -> {split: [docs]}

    def set(self, path, name, splits):
        self.splits[(path, name)] = splits

    def __call__(self, path=None, name=None, **kwargs):
        import datasets

        key = (path, name)
        if key not in self.splits:
            raise RuntimeError(f"check_lm_eval: no offline data for dataset {key}")
        return datasets.DatasetDict({s: datasets.Dataset.from_list(docs) for s, docs in self.splits[key].items()})


def add_acc_norm(task):
    """Lets lm-eval compute acc_norm for tasks whose config lists only acc (its process_results computes it anyway)."""
    from lm_eval.api.registry import get_metric, get_metric_aggregation, is_higher_better

    if "acc_norm" not in task._metric_fn_list:
        task._metric_fn_list["acc_norm"] = get_metric("acc_norm")
        task._metric_fn_kwargs["acc_norm"] = {}
        task._aggregation_list["acc_norm"] = get_metric_aggregation("acc_norm")
        task._higher_is_better["acc_norm"] = is_higher_better("acc_norm")


# The split each config evaluates (where the shipped sample goes)
EVAL_SPLIT = {"hellaswag": "validation", "arc": "test", "mmlu": "test", "winogrande": "validation",
              "truthfulqa-mc": "validation"}


def run_lm_eval(lm, fmt, num_fewshot, offline, self_pool=False):
    """One lm-eval run. self_pool: few-shot examples come from the evaluated split itself, which lm-eval does when
    a config's fewshot_split is its test_split (the question is then left out of its own examples); jetmoe does
    the same when eval/fewshot_input is unset."""
    import lm_eval
    from lm_eval.api.metrics import aggregate_subtask_metrics, pooled_sample_stderr
    from lm_eval.tasks import TaskManager

    sample_file, pool_file, task_names = FORMATS[fmt]
    docs = read_jsonl(os.path.join(EVAL_DIR, sample_file))
    pool = read_jsonl(os.path.join(EVAL_DIR, pool_file)) if pool_file else []
    doc_lines = {}  # (lm-eval task, doc_id) -> line in the sample file
    if fmt == "hellaswag":
        offline.set("Rowan/hellaswag", None, {"train": pool, "validation": docs})
        doc_lines.update({("hellaswag", i): i + 1 for i in range(len(docs))})
    elif fmt == "arc":
        offline.set("allenai/ai2_arc", "ARC-Easy", {"train": pool, "validation": pool, "test": docs})
        doc_lines.update({("arc_easy", i): i + 1 for i in range(len(docs))})
    elif fmt == "winogrande":
        offline.set("allenai/winogrande", "winogrande_xl", {"train": pool, "validation": docs})
        doc_lines.update({("winogrande", i): i + 1 for i in range(len(docs))})
    elif fmt == "truthfulqa-mc":
        offline.set("truthfulqa/truthful_qa", "multiple_choice", {"validation": docs})
        doc_lines.update({("truthfulqa_mc1", i): i + 1 for i in range(len(docs))})
    elif fmt == "mmlu":
        subjects = list(dict.fromkeys(d["subject"] for d in docs))
        task_names = ["mmlu_" + s for s in subjects]
        for s in subjects:
            lines = [i + 1 for i, d in enumerate(docs) if d["subject"] == s]
            offline.set("cais/mmlu", s, {"test": [docs[i - 1] for i in lines],
                                         "dev": [d for d in pool if d["subject"] == s]})
            doc_lines.update({("mmlu_" + s, k): line for k, line in enumerate(lines)})

    tm = TaskManager()
    if self_pool:
        split = EVAL_SPLIT[fmt]
        overrides = {"fewshot_split": split, "test_split": split}
        tasks = [tm._factory.build(tm._entry(n), overrides=overrides, registry=tm._index) for n in task_names]
        pool_file = None
    else:
        tasks = list(tm.load(task_names)["tasks"].values())
    for t in tasks:
        add_acc_norm(t)
    out = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot,
                                  fewshot_random_seed=FEWSHOT_SEED, random_seed=0, numpy_random_seed=0,
                                  torch_random_seed=0, log_samples=True)

    run = {"format": fmt, "input": sample_file, "fewshot_input": pool_file, "num_fewshot": num_fewshot,
           "fewshot_seed": FEWSHOT_SEED, "tasks": {}, "docs": []}
    for lm_task in task_names:
        r = out["results"][lm_task]
        name = JETMOE_TASK.get(lm_task, lm_task)
        run["tasks"][name] = {"n": len(out["samples"][lm_task]),
                              "acc": r["acc,none"], "acc_stderr": r["acc_stderr,none"],
                              "acc_norm": r["acc_norm,none"], "acc_norm_stderr": r["acc_norm_stderr,none"]}
        task = next(t for t in tasks if t.config.task == lm_task)
        for s in out["samples"][lm_task]:
            contexts, requests = [], []
            for args, resp in zip(s["arguments"], s["resps"]):
                context, continuation = args[0], args[1]
                ctx_ids, cont_ids = encode_pair(lm, context, continuation)
                if not contexts or contexts[-1]["text"] != context:
                    contexts.append({"text": context, "ids": ctx_ids})
                assert contexts[-1]["ids"] == ctx_ids
                requests.append({"context": len(contexts) - 1, "continuation": continuation,
                                 "continuation_ids": cont_ids, "loglikelihood": float(resp[0][0])})
            choices = task.doc_to_choice(s["doc"])
            gold = task.doc_to_text(s["doc"]) if task.multiple_input else task.doc_to_target(s["doc"])
            gold = choices.index(gold) if isinstance(gold, str) else gold  # as process_results resolves it
            run["docs"].append({"task": name, "line": doc_lines[(lm_task, s["doc_id"])],
                                "choices": choices, "gold": gold, "acc": s["acc"],
                                "acc_norm": s["acc_norm"], "contexts": contexts, "requests": requests})
    if fmt == "mmlu":
        # lm-eval's group aggregation (weight_by_size): size-weighted mean, pooled stderr
        sizes = [run["tasks"][t]["n"] for t in task_names]
        group = {"n": sum(sizes)}
        for m in ("acc", "acc_norm"):
            group[m] = float(aggregate_subtask_metrics([run["tasks"][t][m] for t in task_names], sizes, True))
            group[m + "_stderr"] = float(pooled_sample_stderr([run["tasks"][t][m + "_stderr"] for t in task_names],
                                                              sizes))
        run["tasks"]["mmlu"] = group
    run["docs"].sort(key=lambda d: d["line"])
    return run


def encode_pair(lm, context, continuation):
    """HFLM's tokenization of one request (the empty-context case does not occur in the samples)."""
    assert context
    ctx, cont = lm._encode_pair(context, continuation)
    return [int(i) for i in ctx], [int(i) for i in cont]


def check_tokenizer_is_legacy_llama(runs):
    """transformers 5 replaced the slow SentencePiece LlamaTokenizer (which jetmoe's tokenizer follows) by a
    `tokenizers` one that differs on leading spaces and literal special tokens. Make sure that on these prompts it
    gives what the slow legacy tokenizer gives: <s> + SentencePiece's encoding of the whole text."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.path.join(MODEL_DIR, "tokenizer.model"))
    checked = 0
    for run in runs:
        for d in run["docs"]:
            for r in d["requests"]:
                context, continuation = d["contexts"][r["context"]]["text"], r["continuation"]
                n = len(context) - len(context.rstrip())
                if n:
                    context, continuation = context[:-n], context[-n:] + continuation
                assert "<s>" not in context + continuation and "</s>" not in context + continuation
                assert context[:1] not in (" ", "\u2581")
                legacy_ctx = [1] + sp.encode(context)
                legacy_whole = [1] + sp.encode(context + continuation)
                assert legacy_ctx == d["contexts"][r["context"]]["ids"], context
                assert legacy_whole[len(legacy_ctx):] == r["continuation_ids"], (context, continuation)
                checked += 1
    log(f"tokenizer: HF's ids equal the slow legacy LlamaTokenizer's on all {checked} requests")


def summarize(runs):
    log(f"{'format':<14} {'shots':>5} {'few-shot pool':<24} {'task':<26} {'n':>3} {'acc':>7} {'acc_norm':>9} {'min margin':>11} "
        f"{'min norm margin':>16} {'max tokens':>10}")
    for run in runs:
        margins, norm_margins, longest = [], [], 0
        for d in run["docs"]:
            lls = np.array([r["loglikelihood"] for r in d["requests"]])
            lens = np.array([float(len(c)) for c in d["choices"]])
            for v, out in ((lls, margins), (lls / lens, norm_margins)):
                s = np.sort(v)[::-1]
                out.append(s[0] - s[1])
            longest = max(longest, max(len(d["contexts"][r["context"]]["ids"]) + len(r["continuation_ids"])
                                       for r in d["requests"]))
        for task, m in run["tasks"].items():
            pool = "-" if run["num_fewshot"] == 0 else run["fewshot_input"] or "(the sample itself)"
            log(f"{run['format']:<14} {run['num_fewshot']:>5} {pool:<24} {task:<26} {m['n']:>3} {m['acc']:>7.4f} "
                f"{m['acc_norm']:>9.4f} {min(margins):>11.2e} {min(norm_margins):>16.2e} {longest:>10}")
        assert longest <= MODEL["max_position_embeddings"], "a prompt is longer than the model's context"


# ---------------------------------------------------------------------------------------------------------------------
# Comparing jetmoe-eval outputs with the reference


def compare(paths):
    with open(REFERENCE, encoding="utf-8") as f:
        ref = json.load(f)
    worst, bad = 0.0, 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            ours = json.load(f)
        matches = [r for r in ref["runs"] if r["input"] == os.path.basename(ours["input"]) and
                   r["num_fewshot"] == ours["num_fewshot"] and
                   (r["num_fewshot"] == 0 or
                    (r["fewshot_input"] or "") == os.path.basename(ours.get("fewshot_input") or ""))]
        if not matches:
            sys.exit(f"{path}: no reference run for input {ours['input']}, num_fewshot {ours['num_fewshot']}")
        run = matches[0]
        by_line = {d["line"]: d for d in run["docs"]}
        run_worst = 0.0
        for ex in ours["examples"]:
            d = by_line[ex["line"]]
            for a, b in zip(ex["loglikelihoods"], (r["loglikelihood"] for r in d["requests"])):
                run_worst = max(run_worst, abs(a - b) / max(abs(b), 1e-30))
            for m in ("acc", "acc_norm"):
                if float(ex[m]) != float(d[m]):
                    bad += 1
                    log(f"{path}: line {ex['line']}: {m} {ex[m]} vs lm-eval {d[m]}")
        for task, m in run["tasks"].items():
            o = ours["results"][task]
            for k in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr"):
                if not math.isclose(o[k], m[k], rel_tol=1e-9, abs_tol=1e-12):
                    bad += 1
                    log(f"{path}: {task} {k} {o[k]} vs lm-eval {m[k]}")
        log(f"{path}: {run['format']} {run['num_fewshot']}-shot: {len(ours['examples'])} questions, "
            f"max relative log-likelihood difference {run_worst:.2e}")
        worst = max(worst, run_worst)
    log(f"overall: max relative difference {worst:.2e}, {bad} metric disagreements")
    return 0 if bad == 0 and worst <= 1e-4 else 1


def dumps_one_doc_per_line(reference):
    """Indented JSON down to the docs, each doc on one line: small, and a diff shows which question changed."""
    def compact(v):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))

    lines = ["{"]
    for i, (k, v) in enumerate(reference.items()):
        comma = "," if i + 1 < len(reference) else ""
        if k != "runs":
            lines.append(f" {compact(k)}: {compact(v)}{comma}")
            continue
        lines.append(' "runs": [')
        for j, run in enumerate(v):
            head = {key: val for key, val in run.items() if key != "docs"}
            lines.append("  " + compact(head)[:-1] + ', "docs": [')
            lines += ["   " + compact(d) + ("," if n + 1 < len(run["docs"]) else "") for n, d in enumerate(run["docs"])]
            lines.append("  ]}" + ("," if j + 1 < len(v) else ""))
        lines.append(" ]" + comma)
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == reference
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rebuild-model", action="store_true", help="rewrite tests/fixtures/eval/model first")
    parser.add_argument("--compare", nargs="+", metavar="EVAL_JSON",
                        help="compare jetmoe-eval outputs with the reference instead of running lm-eval")
    args = parser.parse_args()
    if args.compare:
        sys.exit(compare(args.compare))

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if args.rebuild_model or not os.path.isdir(MODEL_DIR):
        build_model()

    import datasets
    import lm_eval
    import transformers
    from lm_eval.models.huggingface import HFLM

    offline = OfflineDatasets()
    datasets.load_dataset = offline  # lm_eval.api.task calls datasets.load_dataset(...)
    lm = HFLM(pretrained=MODEL_DIR, device="cpu", dtype="float32", batch_size=8)
    # truthfulqa_mc1's config fixes num_fewshot = 0 (lm-eval ignores the argument), so it has one run
    runs = []
    for fmt in FORMATS:
        runs.append(run_lm_eval(lm, fmt, 0, offline))
        if fmt != "truthfulqa-mc":
            runs += [run_lm_eval(lm, fmt, FEWSHOT, offline), run_lm_eval(lm, fmt, FEWSHOT, offline, self_pool=True)]
    check_tokenizer_is_legacy_llama(runs)
    summarize(runs)

    reference = {
        "generator": "scripts/oracle/check_lm_eval.py",
        "oracle": f"lm-eval {lm_eval.__version__} (HFLM, simple_evaluate), transformers {transformers.__version__}, "
                  f"torch {torch.__version__.split('+')[0]}, datasets {datasets.__version__}",
        "model": os.path.relpath(MODEL_DIR, REPO),
        "max_length": lm.max_length,
        "runs": runs,
    }
    with open(REFERENCE, "w", encoding="utf-8") as f:
        f.write(dumps_one_doc_per_line(reference))
    log("wrote", os.path.relpath(REFERENCE, REPO), f"({os.path.getsize(REFERENCE) / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
