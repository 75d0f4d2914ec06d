#!/usr/bin/env python
"""Train and evaluate the authors' IAMM code beside this package's, on identical inputs, in one resumable command:

    python scripts/reference/side_by_side.py --authors_src path/to/IAMM --data path/to/ed --output_dir runs/side_by_side
    python scripts/reference/side_by_side.py ... --max_seconds 3600     # a time budget; rerun to continue

`--authors_src` is a checkout of github zhouzhouyang520/IAMM (it has no licence: nothing of it is copied here; its
extra needs are `pip install -e ".[reference]"`). The command

1. prepares the shared inputs once (`<output_dir>/inputs/`): the tokenizer built from the train split (both sides'
   vocabulary), one word-vector file both start from (`--word_vectors` here, `--emb_file` there), and the knowledge
   stand-in both read (no COMET generations are available: the same constant text per relation for every event);
2. trains every run of `--variants` x `--seeds` (`authors`: their code and their Noam optimiser, `ours`: this
   package with implicit association on the stand-in, `ours_woIA`: without implicit association; the
   swaps of one part towards their code on request, see `OUR_VARIANTS`) with the same
   schedule (batch 16, Adam 0.9/0.98/1e-9 under Noam with `--warmup`, `--max_steps`), `--parallel` runs at a time,
   one thread each, each resumable;
3. evaluates every run at each step of `--eval_at` with this package's metric code on the whole `--split`:
   emotion accuracy, perplexity (the paper's estimator and the corpus one), Dist-1/2 of greedy responses (50 tokens;
   on the first `--greedy_samples` samples before the last step, all at the last), each emotion head alone, and the
   decoders' gate (Eq. 30: `association_decoder_weight_mean` is the mean of 1 - g over real target tokens);
4. writes `<output_dir>/side_by_side.json` (every evaluation, and the table: means and spread over seeds) and prints
   the table.

Everything is written as it is produced; a rerun skips what exists and continues what was interrupted. Runs trained
by separate invocations into one `--output_dir` (say, each side on its own core with its own budget) are gathered into
one table by `--collect_only` with all their variants and seeds.
"""

import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from modeling_iamm.cli import parse_args, script_main  # noqa: E402

logger = logging.getLogger("side_by_side")
# This package's variants: whether the run reads the knowledge stand-in, and its train.py arguments beyond the shared
# ones. The others are swaps of one part towards the authors' code: `ours_copy_scores` copies with their copy
# distribution (the softmax of the heads' mean scores), `ours_no_copy` without the pointer-generator, `ours_k15`
# gives the association decoder their 15 memory slots instead of the paper's 5, `ours_raw_memory` selects them from
# the raw memory slots (their code) instead of the memory encoder's output (the paper).
OUR_VARIANTS = {
    "ours": (True, []),
    "ours_woIA": (False, ["--use_implicit_association", "false"]),
    "ours_copy_scores": (True, ["--copy_head_pooling", "scores"]),
    "ours_no_copy": (True, ["--use_pointer_generator", "false"]),
    "ours_k15": (True, ["--num_memory_words", "15"]),
    "ours_raw_memory": (True, ["--word_selector_input", "raw"]),
}
VARIANTS = ("authors",) + tuple(OUR_VARIANTS)
DEFAULT_VARIANTS = ("authors", "ours", "ours_woIA")


@dataclass
class SideBySideArguments:
    authors_src: str = field(metadata={"help": "A checkout of github zhouzhouyang520/IAMM (their code is imported from here)."})
    data: str = field(metadata={"help": "EmpatheticDialogues (a folder of split files, one file, or a Hub dataset id)."})
    output_dir: str = field(metadata={"help": "Where inputs, runs, evaluations and the table go (resumable)."})
    variants: List[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS),
                                metadata={"help": f"Runs to make, of: {', '.join(VARIANTS)}."})
    seeds: List[int] = field(default_factory=lambda: [1, 2], metadata={"help": "One run per seed and variant."})
    max_steps: int = field(default=3000, metadata={"help": "Training steps of every run."})
    warmup: int = field(default=1000, metadata={"help": "Noam warm-up steps (the paper: 8000)."})
    eval_at: List[int] = field(default_factory=lambda: [800, 1000, 2000, 3000],
                               metadata={"help": "Steps whose checkpoints are evaluated."})
    split: str = field(default="valid", metadata={"help": "The split evaluated."})
    greedy_samples: int = field(default=1000, metadata={"help": "Greedy responses for Dist before the last step "
                                                                "(the last step decodes the whole split)."})
    parallel: int = field(default=2, metadata={"help": "Runs trained (or evaluated) at once, one thread each."})
    max_seconds: Optional[float] = field(default=None, metadata={"help": "Wall-clock budget of this invocation."})
    train_seconds: Optional[float] = field(default=None, metadata={"help": "Training budget of each run in this "
                                                                          "invocation (then the evaluations)."})
    collect_only: bool = field(default=False, metadata={"help": "Train and evaluate nothing: gather the evaluations "
                               "already written for `--variants` x `--seeds` (by any earlier invocations into this "
                               "`--output_dir`) into side_by_side.json and print the table."})
    eval_batch_size: int = field(default=64, metadata={"help": "Samples per evaluation batch."})
    our_preset: str = field(default="paper", metadata={"help": "scripts/train.py preset of this package's runs (the "
                                                               "authors' model is always paper-size; `tiny` for tests)."})
    max_samples: Optional[int] = field(default=None, metadata={"help": "Only the first N samples of each split "
                                                                       "(quick checks)."})
    # internal: one worker process per run or evaluation
    worker: Optional[str] = field(default=None, metadata={"help": "(internal) train | evaluate"})
    variant: Optional[str] = field(default=None, metadata={"help": "(internal) the worker's variant."})
    seed: Optional[int] = field(default=None, metadata={"help": "(internal) the worker's seed."})
    step: Optional[int] = field(default=None, metadata={"help": "(internal) the checkpoint step to evaluate."})
    worker_seconds: Optional[float] = field(default=None, metadata={"help": "(internal) the worker's budget."})

    def __post_init__(self):
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
        if self.max_steps < 1 or self.warmup < 1 or self.parallel < 1:
            raise ValueError("--max_steps, --warmup and --parallel must be >= 1")
        if any(s < 1 or s > self.max_steps for s in self.eval_at):
            raise ValueError(f"--eval_at steps must lie in 1..{self.max_steps}, got {self.eval_at}")
        for name in ("max_seconds", "train_seconds"):
            value = getattr(self, name)
            if value is not None and not value > 0:  # also refuses nan
                raise ValueError(f"--{name} must be > 0, got {value}")


def inputs_dir(args) -> str:
    return os.path.join(args.output_dir, "inputs")


def run_dir(args, variant: str, seed: int) -> str:
    return os.path.join(args.output_dir, "runs", f"{variant}-seed{seed}")


def eval_file(args, variant: str, seed: int, step: int) -> str:
    return os.path.join(args.output_dir, "eval", f"{variant}-seed{seed}-step{step}.json")


def checkpoint_of(args, variant: str, seed: int, step: int) -> str:
    base = run_dir(args, variant, seed)
    return os.path.join(base, f"checkpoint-{step}.pt" if variant == "authors" else f"checkpoint-{step}")


# ------------------------------------------------------------------------------------------------------------------
# 1. shared inputs
# ------------------------------------------------------------------------------------------------------------------


def prepare_inputs(args) -> None:
    from modeling_iamm.data import load_empathetic_dialogues
    from modeling_iamm.knowledge import knowledge_events
    from modeling_iamm.reference import STAND_IN_KNOWLEDGE, write_stand_in_knowledge, write_text_vectors
    from modeling_iamm.tokenization import build_tokenizer

    folder = inputs_dir(args)
    done = os.path.join(folder, "inputs.json")
    if os.path.exists(done):
        return
    os.makedirs(folder, exist_ok=True)
    conversations = load_empathetic_dialogues(args.data, splits=["train", args.split])
    tokenizer = build_tokenizer(conversations["train"])
    tokenizer.save_pretrained(os.path.join(folder, "tokenizer"))
    vocab = tokenizer.get_vocab()
    missing = sorted({w for text in STAND_IN_KNOWLEDGE.values() for w in text.split()} - set(vocab))
    if missing:
        raise ValueError(f"the knowledge stand-in's words {missing} are not in the train vocabulary")
    for name in ("vectors.txt", "knowledge.jsonl"):
        if os.path.exists(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))  # left by an interrupted preparation (inputs.json not written)
    words = [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    n_vectors = write_text_vectors(os.path.join(folder, "vectors.txt"), words, seed=0)
    n_events = write_stand_in_knowledge(knowledge_events(conversations), os.path.join(folder, "knowledge.jsonl"))
    with open(done, "w") as f:
        json.dump({"vocabulary": len(tokenizer), "vectors": n_vectors, "knowledge_events": n_events,
                   "knowledge_stand_in": STAND_IN_KNOWLEDGE, "data": args.data}, f, indent=2)
    logger.info("inputs ready in %s: vocabulary %d, %d vectors, %d knowledge events", folder, len(tokenizer),
                n_vectors, n_events)


# ------------------------------------------------------------------------------------------------------------------
# 2. / 3. workers (one process each, one thread)
# ------------------------------------------------------------------------------------------------------------------


def _samples(args, splits: List[str], knowledge: bool):
    from modeling_iamm.preparation import DataArguments, prepare_data
    from modeling_iamm.tokenization import load_tokenizer

    folder = inputs_dir(args)
    data_args = DataArguments(data=args.data, splits=splits, max_samples=args.max_samples,
                              knowledge_file=os.path.join(folder, "knowledge.jsonl") if knowledge else None)
    return prepare_data(data_args, load_tokenizer(os.path.join(folder, "tokenizer")))


def _authors(args):
    from modeling_iamm.reference import AuthorsCode, authors_index2word, to_authors_data

    code = AuthorsCode(args.authors_src, emb_file=os.path.join(inputs_dir(args), "vectors.txt"))
    return code, authors_index2word, to_authors_data


def worker_train(args) -> None:
    budget = args.worker_seconds
    if args.variant == "authors":
        from modeling_iamm.reference import train_authors

        code, authors_index2word, to_authors_data = _authors(args)
        samples, tokenizer = _samples(args, ["train"], knowledge=False)
        vocab = code.vocabulary(authors_index2word(tokenizer))
        dataset = code.dataset(to_authors_data(samples["train"], vocab.word2index), vocab)
        summary = train_authors(code, dataset, run_dir(args, "authors", args.seed), args.max_steps, args.eval_at,
                                args.seed, args.warmup, max_seconds=budget)
        with open(os.path.join(run_dir(args, "authors", args.seed), "train_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        return
    out = run_dir(args, args.variant, args.seed)
    cmd = our_train_command(args)
    if os.path.isdir(out) and any(n.startswith("checkpoint-") for n in os.listdir(out)):
        cmd += ["--resume_from_checkpoint", "true"]
    elif os.path.isdir(out):
        import shutil

        shutil.rmtree(out)  # a run that never reached its first checkpoint: start it again
    subprocess.run(cmd, check=True)


def our_train_command(args) -> List[str]:
    """The scripts/train.py command of this package's run `args.variant`/`args.seed` (see `OUR_VARIANTS`)."""
    budget = args.worker_seconds
    folder, out = inputs_dir(args), run_dir(args, args.variant, args.seed)
    cmd = [sys.executable, os.path.join(os.path.dirname(HERE), "train.py"), "--preset", args.our_preset,
           "--data", args.data,
           "--splits", "train", "--tokenizer_name_or_path", os.path.join(folder, "tokenizer"),
           "--word_vectors", os.path.join(folder, "vectors.txt"), "--noam_warmup_steps", str(args.warmup),
           "--max_steps", str(args.max_steps), "--eval_strategy", "no", "--load_best_model_at_end", "false",
           "--save_steps", str(math.gcd(*args.eval_at)), "--seed", str(args.seed), "--use_cpu", "true", "--dataloader_num_workers", "0",
           "--report_to", "none", "--output_dir", out]
    with_knowledge, extra = OUR_VARIANTS[args.variant]
    cmd += (["--knowledge_file", os.path.join(folder, "knowledge.jsonl")] if with_knowledge else []) + extra
    if budget is not None:
        cmd += ["--max_train_seconds", str(int(budget))]
    if args.max_samples is not None:
        cmd += ["--max_samples", str(args.max_samples)]
    return cmd


def worker_evaluate(args) -> None:
    from modeling_iamm.collator import IAMMDataCollator
    from modeling_iamm.reference import evaluate_authors, evaluate_ours

    last = args.step == max(args.eval_at)
    greedy = None if last else args.greedy_samples
    if args.variant == "authors":
        code, authors_index2word, to_authors_data = _authors(args)
        samples, tokenizer = _samples(args, [args.split], knowledge=False)
        vocab = code.vocabulary(authors_index2word(tokenizer))
        split = samples[args.split]
        dataset = code.dataset(to_authors_data(split, vocab.word2index), vocab)
        rows = [split[i] for i in range(len(split))]
        report = evaluate_authors(code, checkpoint_of(args, "authors", args.seed, args.step), dataset, rows,
                                  args.eval_batch_size, greedy_samples=greedy)
    else:
        from modeling_iamm.training import load_model

        model = load_model(checkpoint_of(args, args.variant, args.seed, args.step))
        samples, tokenizer = _samples(args, [args.split], knowledge=OUR_VARIANTS[args.variant][0])
        collator = IAMMDataCollator(tokenizer, relation_names=model.config.relation_names)
        report = evaluate_ours(model, tokenizer, samples[args.split], collator, args.eval_batch_size,
                               greedy_samples=greedy)
    report.update({"variant": args.variant, "seed": args.seed, "step": args.step, "split": args.split})
    path = eval_file(args, args.variant, args.seed, args.step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".partial", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(path + ".partial", path)


# ------------------------------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------------------------------


def _launch(args, worker: str, variant: str, seed: int, step: Optional[int], budget: Optional[float]):
    cmd = [sys.executable, os.path.abspath(__file__), "--authors_src", args.authors_src, "--data", args.data,
           "--output_dir", args.output_dir, "--max_steps", str(args.max_steps), "--warmup", str(args.warmup),
           "--eval_at", *map(str, args.eval_at), "--split", args.split, "--greedy_samples", str(args.greedy_samples),
           "--eval_batch_size", str(args.eval_batch_size), "--our_preset", args.our_preset, "--worker", worker, "--variant", variant,
           "--seed", str(seed)]
    if step is not None:
        cmd += ["--step", str(step)]
    if args.max_samples is not None:
        cmd += ["--max_samples", str(args.max_samples)]
    if budget is not None:
        cmd += ["--worker_seconds", str(int(budget))]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    log = os.path.join(args.output_dir, "logs", f"{worker}-{variant}-seed{seed}" + (f"-step{step}" if step else "") + ".log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    handle = open(log, "a")
    return subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT), handle, log


def _run_all(args, jobs, deadline: Optional[float]) -> List[str]:
    """Run `jobs` (worker, variant, seed, step) `args.parallel` at a time; returns the logs of failed jobs."""
    failed, running = [], []
    queue = list(jobs)
    while queue or running:
        while queue and len(running) < args.parallel and (deadline is None or time.time() < deadline - 60):
            worker, variant, seed, step = queue.pop(0)
            budget = None if deadline is None else deadline - time.time() - 120
            if worker == "train" and args.train_seconds is not None:
                budget = args.train_seconds if budget is None else min(budget, args.train_seconds)
            logger.info("starting %s %s seed %d%s", worker, variant, seed, f" step {step}" if step else "")
            running.append(_launch(args, worker, variant, seed, step, budget))
        if not running:
            break
        time.sleep(5)
        for job in list(running):
            process, handle, log = job
            if process.poll() is not None:
                handle.close()
                running.remove(job)
                if process.returncode != 0:
                    failed.append(log)
                    logger.error("failed (exit %d): see %s", process.returncode, log)
    return failed


def _finished(args, variant: str, seed: int) -> bool:
    return os.path.exists(checkpoint_of(args, variant, seed, args.max_steps))


def collect(args) -> Dict[str, Dict]:
    """Every evaluation written so far, and the table rows (mean and min-max over seeds) per variant and step."""
    import statistics

    table: Dict[str, Dict] = {}
    evaluations: Dict[str, Dict] = {}
    for variant in args.variants:
        for step in sorted(args.eval_at):
            reports = [json.load(open(p)) for p in (eval_file(args, variant, s, step) for s in args.seeds) if os.path.exists(p)]
            if not reports:
                continue
            evaluations.update({f"{variant}-seed{r['seed']}-step{step}": r for r in reports})
            row = {"seeds": [r["seed"] for r in reports]}
            for key in ("emotion_accuracy_x100", "ppl_paper", "ppl_corpus", "dist1_x100", "dist2_x100",
                        "acc_context_head_alone", "acc_situation_head_alone", "acc_memory_head_alone",
                        "acc_knowledge_head_alone", "association_decoder_weight_mean", "gate_logit_mean"):
                values = [r[key] for r in reports if r.get(key) is not None]
                if values:
                    row[key] = {"mean": round(statistics.mean(values), 3), "min": min(values), "max": max(values)}
            row["greedy_samples"] = reports[0]["greedy_samples"]
            table.setdefault(variant, {})[str(step)] = row
    speed = {}
    for variant in args.variants:
        for seed in args.seeds:
            path = os.path.join(run_dir(args, variant, seed), "train_summary.json")
            if os.path.exists(path):
                summary = json.load(open(path))
                speed[f"{variant}-seed{seed}"] = {"steps": summary.get("steps", summary.get("global_step")),
                                                  "seconds_per_1000_steps": summary.get("seconds_per_1000_steps")}
    return {"settings": {k: v for k, v in asdict(args).items() if k not in ("worker", "variant", "seed", "step",
                                                                             "worker_seconds", "max_seconds", "train_seconds",
                                                                             "collect_only")},
            "table": table, "evaluations": evaluations, "train": speed}


def print_table(result: Dict) -> None:
    cols = [("emotion_accuracy_x100", "Acc"), ("ppl_paper", "PPL"), ("dist1_x100", "D-1"), ("dist2_x100", "D-2"),
            ("acc_context_head_alone", "ctx"), ("acc_situation_head_alone", "sit"), ("acc_memory_head_alone", "mem"),
            ("acc_knowledge_head_alone", "kn"), ("association_decoder_weight_mean", "1-g")]
    print("| variant | step | seeds | " + " | ".join(c for _, c in cols) + " |")
    print("|---|---:|---|" + "---:|" * len(cols))
    for variant, steps in result["table"].items():
        for step, row in steps.items():
            cells = []
            for key, _ in cols:
                v = row.get(key)
                cells.append("" if v is None else (f"{v['mean']:.2f}" if v["min"] == v["max"] else
                                                   f"{v['mean']:.2f} ({v['min']:.2f}-{v['max']:.2f})"))
            print(f"| {variant} | {step} | {','.join(map(str, row['seeds']))} | " + " | ".join(cells) + " |")


@script_main("side_by_side")
def main(argv=None):
    (args,) = parse_args((SideBySideArguments,), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.worker:
        import torch

        torch.set_num_threads(1)
        {"train": worker_train, "evaluate": worker_evaluate}[args.worker](args)
        return
    deadline = None if args.max_seconds is None else time.time() + args.max_seconds
    runs = [(v, s) for s in args.seeds for v in args.variants]
    if args.collect_only:
        if not os.path.isdir(os.path.join(args.output_dir, "eval")):
            sys.exit(f"--collect_only: {args.output_dir} holds no evaluations (no eval/ folder)")
        result = collect(args)
        with open(os.path.join(args.output_dir, "side_by_side.json"), "w") as f:
            json.dump(result, f, indent=2)
        print_table(result)
        return
    prepare_inputs(args)
    failed = _run_all(args, [("train", v, s, None) for v, s in runs if not _finished(args, v, s)], deadline)
    evaluations = [("evaluate", v, s, step) for v, s in runs for step in sorted(args.eval_at)
                   if not os.path.exists(eval_file(args, v, s, step)) and os.path.exists(checkpoint_of(args, v, s, step))]
    failed += _run_all(args, evaluations, deadline)
    result = collect(args)
    with open(os.path.join(args.output_dir, "side_by_side.json"), "w") as f:
        json.dump(result, f, indent=2)
    print_table(result)
    pending = [f"{v}-seed{s}" for v, s in runs if not _finished(args, v, s)]
    if pending:
        print(f"not finished (rerun the same command to continue): {', '.join(pending)}")
    if failed:
        sys.exit(f"{len(failed)} job(s) failed; logs: {', '.join(failed)}")


if __name__ == "__main__":
    main()
