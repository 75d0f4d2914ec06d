#!/usr/bin/env python
"""Pick the checkpoint to release from a training run's validations, by a rule fixed in advance:

    python scripts/select_checkpoint.py --run_dir runs/iamm --max_ppl 35.3 --output_file runs/iamm/selection.json

Highest validation emotion accuracy among the checkpoints with validation perplexity (paper's estimator) at most
--max_ppl; when none qualifies, the lowest perplexity. Prints every validation and the choice.
"""

import json
from dataclasses import dataclass, field
from typing import Optional

from modeling_iamm.cli import parse_args, refuse_existing_file, script_main
from modeling_iamm.selection import evaluated_checkpoints, select_checkpoint, selection_record


@dataclass
class SelectionArguments:
    run_dir: str = field(metadata={"help": "The training run's output_dir (its checkpoint-N folders)."})
    max_ppl: Optional[float] = field(default=None, metadata={
        "help": "Perplexity ceiling; among checkpoints under it, the most accurate wins (none: lowest perplexity)."})
    output_file: Optional[str] = field(default=None, metadata={"help": "Write the record as JSON here."})


@script_main("select_checkpoint")
def main(argv=None):
    (args,) = parse_args((SelectionArguments,), argv)
    refuse_existing_file(args.output_file)
    evaluated = evaluated_checkpoints(args.run_dir)
    chosen = select_checkpoint(evaluated, args.max_ppl)
    print(f"{'step':>6} {'PPL':>7} {'Acc':>6}  checkpoint")
    for e in evaluated:
        mark = "  <- selected" if e is chosen else ""
        print(f"{e.step:>6} {e.ppl:7.2f} {100 * e.emotion_accuracy:6.2f}  {e.checkpoint or '(not kept)'}{mark}")
    if args.output_file:
        with open(args.output_file, "w") as f:
            json.dump(selection_record(evaluated, chosen, args.max_ppl), f, indent=2)
    print(chosen.checkpoint)


if __name__ == "__main__":
    main()
