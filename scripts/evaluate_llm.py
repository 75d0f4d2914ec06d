#!/usr/bin/env python
"""Score LLM answers to IAMM_large instructions and print them beside the paper's Table 3.

    python scripts/evaluate_llm.py --predictions llm_runs/gpt35_assoc.jsonl --instructions instructions/ed \
        --split test --name "GPT-3.5 with associations"
    python scripts/evaluate_llm.py --predictions generated_predictions.jsonl   # the authors' own output format

Predictions: JSONL records with `id` and the raw answer under `output` (or `answer`), as written by
scripts/prompt_openai.py or scripts/generate_lora.py, scored against the gold labels of --instructions; or the
IAMM_large authors' `generated_predictions.jsonl` (`label` + `predict` per line), which carries its gold labels.
The columns marked "paper rule" follow the authors' scorer and are the ones comparable to Table 3. Writes the
metrics to --output_file (default: `<predictions without .jsonl>.metrics.json`).
"""

import json
import logging
from dataclasses import dataclass, field
from typing import Optional

from iamm.llm.evaluation import comparison_table, evaluate_predictions_file
from iamm.llm.instructions import load_instruction_dataset
from modeling_iamm.cli import parse_args, script_main
from modeling_iamm.evaluation import RecordError

BAD_LINE_REMEDY = ("scoring only reads the file: check that it is a predictions file, and fix or delete that line "
                   "(a run that was killed leaves at most an unfinished last line, which is ignored)")


@dataclass
class EvaluateLLMArguments:
    predictions: str = field(metadata={"help": "Predictions JSONL (id + output/answer per line, or label + predict)."})
    instructions: Optional[str] = field(default=None, metadata={
        "help": "Instruction data set folder holding the gold labels (not needed for label + predict files)."})
    split: str = field(default="test", metadata={"help": "Split the predictions are for."})
    output_file: Optional[str] = field(default=None, metadata={"help": "Metrics JSON (default: beside the predictions)."})
    name: str = field(default="this run", metadata={"help": "Row name of this run in the printed table."})


@script_main("evaluate_llm")
def main(argv=None):
    args, = parse_args((EvaluateLLMArguments,), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    output_file = args.output_file or (args.predictions[: -len(".jsonl")] if args.predictions.endswith(".jsonl")
                                       else args.predictions) + ".metrics.json"
    try:
        gold = None
        if args.instructions is not None:
            data = load_instruction_dataset(args.instructions, [args.split], columns=["id", "emotion"])
            gold = data[args.split].select_columns(["id", "emotion"]).to_list()
        metrics = evaluate_predictions_file(args.predictions, gold, output_file,
                                            extra={"instructions": args.instructions, "split": args.split,
                                                   "name": args.name})
    except RecordError as err:  # the reader's advice is for a run that writes the file; this one only reads it
        raise err.with_remedy(BAD_LINE_REMEDY) from None
    print(json.dumps(metrics, indent=2))
    print(comparison_table(metrics, args.name))
    if metrics["missing"]:
        print(f"\n{metrics['missing']} of {metrics['samples']} samples have no prediction ({metrics['failed']} failed); "
              "they count as wrong in the accuracies above")
    print(f"metrics: {output_file}")


if __name__ == "__main__":
    main()
