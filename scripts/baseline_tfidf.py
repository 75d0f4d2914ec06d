#!/usr/bin/env python
"""TF-IDF (word 1-2 grams) + logistic regression emotion baseline, one sample per listener turn.

    python scripts/baseline_tfidf.py --data path/to/ed --eval_split valid
"""

import json
from dataclasses import dataclass, field
from typing import List

from modeling_iamm.baselines import INPUTS, tfidf_emotion_accuracy
from modeling_iamm.cli import parse_args
from modeling_iamm.data import build_samples, load_empathetic_dialogues


@dataclass
class BaselineArguments:
    data: str = field(metadata={"help": "ED source with a train split and the evaluation split."})
    eval_split: str = field(default="valid", metadata={"help": "Split to measure on."})
    inputs: List[str] = field(default_factory=lambda: list(INPUTS), metadata={"help": f"Any of {list(INPUTS)}."})
    C: float = field(default=10.0, metadata={"help": "Inverse regularisation of the logistic regression."})
    min_df: int = field(default=2, metadata={"help": "Ignore n-grams seen in fewer training samples."})


def main(argv=None):
    (args,) = parse_args((BaselineArguments,), argv)
    samples = build_samples(load_empathetic_dialogues(args.data, splits=["train", args.eval_split]))
    accuracy = tfidf_emotion_accuracy(samples["train"], samples[args.eval_split], args.inputs, args.C, args.min_df)
    print(json.dumps({f"accuracy_x100[{k}]": round(100 * v, 2) for k, v in accuracy.items()}, indent=2))


if __name__ == "__main__":
    main()
