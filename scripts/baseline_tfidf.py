#!/usr/bin/env python
"""TF-IDF (word 1-2 grams; --ngram_max 1: words only) + logistic regression emotion baseline, one sample per listener turn.

    python scripts/baseline_tfidf.py --data path/to/ed --eval_split valid

With --model_name_or_path, also how much a trained IAMM adds to it: the accuracy of each emotion head, of the
model's product of heads, and of each multiplied 1:1 with the baseline's probabilities (situation + context):

    python scripts/baseline_tfidf.py --data path/to/ed --inputs situation+context --model_name_or_path runs/iamm
"""

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from modeling_iamm.baselines import INPUTS, combined_accuracy, emotion_accuracy, emotion_ids, tfidf_emotion_log_probs
from modeling_iamm.cli import check_min, parse_args, script_main
from modeling_iamm.data import build_samples, load_empathetic_dialogues


@dataclass
class BaselineArguments:
    data: str = field(metadata={"help": "ED source with a train split and the evaluation split."})
    eval_split: str = field(default="valid", metadata={"help": "Split to measure on."})
    inputs: List[str] = field(default_factory=lambda: list(INPUTS), metadata={"help": f"Any of {list(INPUTS)}."})
    C: float = field(default=10.0, metadata={"help": "Inverse regularisation of the logistic regression."})
    min_df: int = field(default=2, metadata={"help": "Ignore n-grams seen in fewer training samples."})
    ngram_max: int = field(default=2, metadata={"help": "Longest word n-gram of the features (1: a bag of words)."})
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "A trained IAMM to combine with the baseline (its emotion heads, 1:1)."}
    )
    knowledge_file: Optional[str] = field(
        default=None, metadata={"help": "The knowledge cache the model needs (a model with implicit association)."}
    )
    batch_size: int = field(default=64, metadata={"help": "Samples per batch of the model."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "torch device."})

    def __post_init__(self):
        check_min("--ngram_max", self.ngram_max)
        if not self.C > 0:
            raise ValueError(f"--C must be > 0, got {self.C}")
        check_min("--min_df", self.min_df)
        check_min("--batch_size", self.batch_size)
        unknown = [name for name in self.inputs if name not in INPUTS]
        if unknown:
            raise ValueError(f"--inputs {unknown[0]!r}: choose among {list(INPUTS)}")


def with_model(args: BaselineArguments, baseline_log_probs: torch.Tensor, evaluation) -> Dict[str, Any]:
    """The model's heads alone and multiplied with the baseline's log-probabilities on `evaluation`; the model reads
    the same samples, in the same order (checked)."""
    from modeling_iamm.collator import IAMMDataCollator
    from modeling_iamm.diagnostics import emotion_log_probs
    from modeling_iamm.preparation import DataArguments, prepare_data
    from modeling_iamm.tokenization import load_tokenizer
    from modeling_iamm.training import load_model

    model = load_model(args.model_name_or_path).to(args.device)
    data_args = DataArguments(data=args.data, splits=[args.eval_split], knowledge_file=args.knowledge_file)
    data, tokenizer = prepare_data(data_args, load_tokenizer(args.model_name_or_path, model.config))
    samples = data[args.eval_split]
    if samples["conv_id"] != evaluation["conv_id"] or samples["turn"] != evaluation["turn"]:
        raise ValueError(f"{args.data}: the model's {args.eval_split} samples are not the baseline's")
    collator = IAMMDataCollator(tokenizer, relation_names=model.config.relation_names,
                                **data_args.length_limits(getattr(model.config, "length_limits", None)))
    model_log_probs = emotion_log_probs(model, collator, samples, args.batch_size)
    labels = model_log_probs.pop("labels")
    return {"model": args.model_name_or_path, "inputs": "situation+context",
            "accuracy_x100": combined_accuracy(model_log_probs, baseline_log_probs, labels)}


@script_main("baseline_tfidf")
def main(argv=None):
    (args,) = parse_args((BaselineArguments,), argv)
    samples = build_samples(load_empathetic_dialogues(args.data, splits=["train", args.eval_split]))
    train, evaluation = samples["train"], samples[args.eval_split]
    inputs = list(dict.fromkeys(args.inputs + (["situation+context"] if args.model_name_or_path else [])))
    log_probs = {name: tfidf_emotion_log_probs(train, evaluation, name, args.C, args.min_df, ngram_max=args.ngram_max)
                 for name in inputs}  # one fit per input, shared with the combination below
    labels = emotion_ids(evaluation)
    result = {f"accuracy_x100[{k}]": round(100 * emotion_accuracy(log_probs[k], labels), 2) for k in args.inputs}
    if args.model_name_or_path:
        result["with_model"] = with_model(args, log_probs["situation+context"], evaluation)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
