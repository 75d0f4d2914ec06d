#!/usr/bin/env python
"""Plots of the associated words of an evaluation (like the paper's Appendix C), from scripts/evaluate.py output.

    python scripts/analyze_associations.py --predictions eval/valid/predictions.jsonl --train_data path/to/ed \
        --output_dir eval/valid/plots

Writes `topk_intensity_idf.png` (average emotion intensity and IDF of the k most attended associated words vs. k,
against all context words), `topk_intensity_idf.json` (the numbers), and `association_<id>.png` heat maps for a
few dialogues. Intensity: |VADER valence| / 4 (vaderSentiment's lexicon); IDF: over the training split.
"""

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from modeling_iamm.analysis import (association_matrix, inverse_document_frequency, plot_association_matrix,
                                    plot_topk, topk_statistics, vader_intensity)
from modeling_iamm.cli import check_min, parse_args, script_main
from modeling_iamm.data import load_empathetic_dialogues
from modeling_iamm.evaluation import read_records
from modeling_iamm.tokenization import conversation_texts


@dataclass
class AnalysisArguments:
    predictions: str = field(metadata={"help": "predictions.jsonl from scripts/evaluate.py (with associations)."})
    train_data: str = field(metadata={"help": "ED source whose train split gives the IDF."})
    output_dir: str = field(metadata={"help": "Where the PNGs (and the numbers) go."})
    max_k: int = field(default=10, metadata={"help": "Largest k of the top-k curves."})
    heatmaps: int = field(default=3, metadata={"help": "Dialogues to draw heat maps for (longest contexts first)."})
    sample_id: Optional[str] = field(default=None, metadata={"help": "Draw this record id (conv_id#turn) instead."})

    def __post_init__(self):
        check_min("--max_k", self.max_k)
        check_min("--heatmaps", self.heatmaps, 0)


@script_main("analyze_associations")
def main(argv=None):
    (args,) = parse_args((AnalysisArguments,), argv)
    if not os.path.isfile(args.predictions):
        raise FileNotFoundError(f"--predictions {args.predictions}: no such file")
    records = read_records(args.predictions)
    if not records:
        raise SystemExit(f"{args.predictions}: no records")
    if args.sample_id and not any(r["id"] == args.sample_id for r in records):
        raise SystemExit(f"{args.predictions}: no record {args.sample_id!r}")
    train = load_empathetic_dialogues(args.train_data, splits=["train"])["train"]  # read before anything is written
    os.makedirs(args.output_dir, exist_ok=True)
    idf, unseen = inverse_document_frequency(conversation_texts(train))
    stats = topk_statistics(records, vader_intensity(), idf, unseen, args.max_k)
    plot_topk(stats, os.path.join(args.output_dir, "topk_intensity_idf.png"),
              f"{len(records)} dialogues of {os.path.basename(os.path.dirname(os.path.abspath(args.predictions)))}")
    with open(os.path.join(args.output_dir, "topk_intensity_idf.json"), "w") as f:
        json.dump(stats, f, indent=2)
    if args.sample_id:
        chosen = [r for r in records if r["id"] == args.sample_id]
    else:
        chosen = sorted(records, key=lambda r: -len(r["context"]))[: args.heatmaps]
    for record in chosen:
        rows, columns, matrix = association_matrix(record)
        name = "association_" + record["id"].replace(":", "_").replace("#", "_") + ".png"
        plot_association_matrix(rows, columns, matrix, os.path.join(args.output_dir, name), record["id"])
    print(json.dumps({k: v for k, v in stats.items()}, indent=2))
    print(f"plots in {args.output_dir}")


if __name__ == "__main__":
    main()
