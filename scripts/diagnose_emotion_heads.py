#!/usr/bin/env python
"""Each emotion head's accuracy alone and the decoder gate of a trained IAMM, teacher-forced on a split:

    python scripts/diagnose_emotion_heads.py --model_name_or_path runs/iamm/checkpoint-12000 --data ED --split valid
    python scripts/diagnose_emotion_heads.py ... --max_samples 2000 --output_file heads.json

Prints (and with --output_file writes) one JSON record; see `modeling_iamm.diagnostics`.
"""

import json
from dataclasses import dataclass, field
from typing import Optional

import torch

from modeling_iamm.cli import check_min, parse_args, refuse_existing_file, script_main
from modeling_iamm.collator import IAMMDataCollator
from modeling_iamm.diagnostics import emotion_heads_and_gate
from modeling_iamm.preparation import DataArguments, prepare_data
from modeling_iamm.tokenization import load_tokenizer
from modeling_iamm.training import load_model


@dataclass
class DiagnosisArguments:
    model_name_or_path: str = field(metadata={"help": "Saved folder or Hub id of an IAMM (its tokenizer included)."})
    split: str = field(default="valid", metadata={"help": "Split to run on."})
    batch_size: int = field(default=64, metadata={"help": "Samples per batch."})
    output_file: Optional[str] = field(default=None, metadata={"help": "Also write the record here (never replaced)."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "torch device."})

    def __post_init__(self):
        check_min("--batch_size", self.batch_size)


@script_main("diagnose_emotion_heads")
def main(argv=None):
    args, data_args = parse_args((DiagnosisArguments, DataArguments), argv)
    refuse_existing_file(args.output_file)
    model = load_model(args.model_name_or_path).to(args.device)
    tokenizer = load_tokenizer(data_args.tokenizer_name_or_path or args.model_name_or_path, model.config)
    data_args.splits = [args.split]
    data, tokenizer = prepare_data(data_args, tokenizer)
    collator = IAMMDataCollator(tokenizer, relation_names=model.config.relation_names,
                                **data_args.length_limits(getattr(model.config, "length_limits", None)))
    report = {"model": args.model_name_or_path, "split": args.split,
              **emotion_heads_and_gate(model, collator, data[args.split], args.batch_size)}
    print(json.dumps(report, indent=2))
    if args.output_file:
        with open(args.output_file, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
