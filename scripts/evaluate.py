#!/usr/bin/env python
"""Evaluate a saved or Hub IAMM on a split with the paper's protocol; writes predictions.jsonl, manifest.json and
metrics.json.

    python scripts/evaluate.py --model_name_or_path runs/iamm --data path/to/ed --split valid --output_dir eval/valid
    python scripts/evaluate.py --model_name_or_path runs/iamm --test_file ed/test.csv --split test --output_dir eval/test
    python scripts/evaluate.py ... --use_situation false     # the same model without the situation text
    python scripts/evaluate.py ... --device cuda --batch_size 128 --torch_compile true   # compiled (GPU)

Greedy decoding up to 50 tokens by default (--num_beams / --do_sample for others; with --num_return_sequences N
each record keeps the N responses as a list and Dist-n counts the first of each sample). Re-running after an
interruption continues where it stopped, only with the same model, tokenizer, data and settings (manifest.json
records them; a difference is refused, naming it); a finished evaluation is kept unless --overwrite_output true.
The length limits are the model's (saved by train.py) unless given; non-finite metrics fail the run. One evaluation
at a time writes into an output folder (its .lock file names the process holding it); a second one stops at once,
saying which process holds it.
"""

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import torch

from modeling_iamm.cli import DTYPES, check_min, parse_args, parse_dtype, script_main
from modeling_iamm.collator import IAMMDataCollator
from modeling_iamm.evaluation import run_evaluation
from modeling_iamm.folders import FolderLock, ensure_folder, removed_if_left_empty
from modeling_iamm.inference import check_generate_kwargs
from modeling_iamm.preparation import DataArguments, prepare_data
from modeling_iamm.tokenization import load_tokenizer
from modeling_iamm.training import COMPILE_PAD_MULTIPLE, load_model


@dataclass
class EvaluationArguments:
    model_name_or_path: str = field(metadata={"help": "Saved folder or Hub id of an IAMM (its tokenizer included)."})
    output_dir: str = field(metadata={"help": "Where predictions.jsonl, manifest.json and metrics.json go."})
    split: str = field(default="valid", metadata={"help": "Split to evaluate (valid, test, ...)."})
    batch_size: int = field(default=32, metadata={"help": "Samples per batch."})
    max_new_tokens: int = field(default=50, metadata={"help": "Longest response (paper: 50)."})
    num_beams: int = field(default=1, metadata={"help": "Beam search width (1: greedy, the paper's protocol)."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy/beam decoding."})
    top_p: Optional[float] = field(default=None, metadata={"help": "Nucleus sampling threshold (with --do_sample)."})
    no_repeat_ngram_size: int = field(
        default=0, metadata={"help": "Never repeat an n-gram of this many tokens within a response (0: off, the "
                                     "paper's protocol)."}
    )
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "Penalise tokens already in the response (transformers' repetition_penalty; "
                                       "1.0: off, the paper's protocol)."}
    )
    num_return_sequences: Optional[int] = field(
        default=None, metadata={"help": "Responses per sample (with --do_sample, or at most --num_beams): each record "
                                        "keeps them all as a list; Dist-n counts the first of each sample."}
    )
    use_situation: Optional[bool] = field(
        default=None, metadata={"help": "false: evaluate without the situation text (the model must have been saved with it)."}
    )
    with_associations: bool = field(default=True, metadata={"help": "Write the associated words of every sample."})
    overwrite_output: bool = field(default=False, metadata={"help": "Replace the evaluation in output_dir (finished or not)."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "torch device."})
    dtype: str = field(default="float32", metadata={"help": f"Weights' dtype: one of {', '.join(DTYPES)}."})
    trust_remote_code: bool = field(default=True, metadata={"help": "Load the checkpoint's own code (Hub ids)."})
    torch_compile: bool = field(
        default=False,
        metadata={"help": "Compile the model (model.compile(dynamic=True)): the encoder and each decoding step run as "
                          "compiled graphs, and lengths are padded to multiples of 8 so that a few shapes cover the "
                          "split. The first batches pay the compilation; worth it on a GPU over a whole split."},
    )
    torch_compile_backend: str = field(default="inductor", metadata={"help": "torch.compile backend (with --torch_compile)."})

    def __post_init__(self):
        parse_dtype(self.dtype)
        check_min("--batch_size", self.batch_size)
        check_generate_kwargs(self.generate_kwargs(), prefix="--")  # --max_new_tokens -1, --top_p 1.5, ...
        n = self.num_return_sequences
        if n is not None and n > self.num_beams and not self.do_sample:
            raise ValueError(f"--num_return_sequences {n} needs --num_beams >= {n} or --do_sample true (greedy and "
                             f"beam search return at most num_beams different responses)")

    def generate_kwargs(self) -> dict:
        """The `generate()` settings of these flags (those left at their 'off' value are not passed)."""
        kwargs = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "do_sample": self.do_sample}
        if self.top_p is not None:
            kwargs["top_p"] = self.top_p
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        if self.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = self.repetition_penalty
        if self.num_return_sequences is not None:
            kwargs["num_return_sequences"] = self.num_return_sequences
        return kwargs


def _where(path):
    """A local path as an absolute path (the manifest compares them), anything else (a Hub id) as it is."""
    if isinstance(path, dict):
        return {k: _where(v) for k, v in path.items()}
    return os.path.abspath(path) if isinstance(path, str) and os.path.exists(path) else path


@script_main("evaluate")
def main(argv=None):
    args, data_args = parse_args((EvaluationArguments, DataArguments), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with removed_if_left_empty(args.output_dir):  # a refusal (bad data, a model that does not load) leaves nothing
        # before loading anything: a folder that another evaluation is writing into stops this one at once
        ensure_folder(args.output_dir)
        with FolderLock(args.output_dir, "evaluation"):
            evaluate(args, data_args)


def evaluate(args: EvaluationArguments, data_args: DataArguments) -> None:
    """Load the model and data of `args` and evaluate them (the caller holds the output folder's lock)."""
    overrides = {"use_situation": args.use_situation} if args.use_situation is not None else {}
    model = load_model(args.model_name_or_path, dtype=parse_dtype(args.dtype),
                       trust_remote_code=args.trust_remote_code, **overrides)
    model.to(args.device)
    if args.torch_compile:  # the encoder (called once per batch) and the model (teacher forcing, decoding steps)
        model.get_encoder().compile(dynamic=True, backend=args.torch_compile_backend)
        model.compile(dynamic=True, backend=args.torch_compile_backend)
    tokenizer = load_tokenizer(data_args.tokenizer_name_or_path or args.model_name_or_path, model.config)
    data_args.splits = [args.split]
    data, tokenizer = prepare_data(data_args, tokenizer)
    limits = data_args.length_limits(getattr(model.config, "length_limits", None))
    collator = IAMMDataCollator(tokenizer, relation_names=model.config.relation_names, **limits,
                                pad_to_multiple_of=COMPILE_PAD_MULTIPLE if args.torch_compile else None)
    generate_kwargs = args.generate_kwargs()
    run_info = {"model": _where(args.model_name_or_path), "data": _where(data_args.source), "split": args.split,
                "max_samples": data_args.max_samples, "skip_invalid": data_args.skip_invalid,
                "knowledge_file": _where(data_args.knowledge_file), "dtype": str(parse_dtype(args.dtype))}
    extra = {"model": args.model_name_or_path, "split": args.split, "use_situation": model.config.use_situation,
             "implicit_association": model.config.use_implicit_association}
    metrics = run_evaluation(model, tokenizer, data[args.split], args.output_dir, args.batch_size,
                             args.with_associations, args.overwrite_output, extra_metrics=extra, collator=collator,
                             run_info=run_info, **generate_kwargs)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
