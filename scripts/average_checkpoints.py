#!/usr/bin/env python
"""Average the weights of a run's checkpoints into one model folder (weights, config, tokenizer, remote code):

    python scripts/average_checkpoints.py --run_dir runs/iamm --from_step 4800 --to_step 12000 \
        --output_dir runs/iamm/average-4800-12000
    python scripts/average_checkpoints.py --checkpoints runs/iamm/checkpoint-8000 runs/iamm/checkpoint-8800 \
        --output_dir runs/iamm/average

The folder loads like any checkpoint (`evaluate.py --model_name_or_path`, `AutoModelForSeq2SeqLM.from_pretrained`);
its config records the averaged checkpoints under `checkpoint_average`. An existing --output_dir is never replaced,
and the folder appears only once complete.
"""

import os
import shutil
from dataclasses import dataclass, field
from typing import List, Optional

from modeling_iamm.averaging import average_checkpoints, checkpoints_between
from modeling_iamm.cli import parse_args, script_main
from modeling_iamm.folders import explain_disk_full
from modeling_iamm.tokenization import check_tokenizer, load_tokenizer


@dataclass
class AveragingArguments:
    output_dir: str = field(metadata={"help": "Folder to write the averaged model to (must not exist)."})
    run_dir: Optional[str] = field(default=None, metadata={"help": "A training run's output_dir: average its "
                                                                   "checkpoint-N folders from --from_step to --to_step."})
    from_step: int = field(default=0, metadata={"help": "First step to average (inclusive), with --run_dir."})
    to_step: Optional[int] = field(default=None, metadata={"help": "Last step to average (inclusive; default: the last)."})
    checkpoints: Optional[List[str]] = field(default=None, metadata={
        "help": "Checkpoint folders to average instead of --run_dir's range (the last one gives the config and code)."})

    def __post_init__(self):
        if (self.run_dir is None) == (self.checkpoints is None):
            raise ValueError("pass either --run_dir (with --from_step/--to_step) or --checkpoints, not both")


@script_main("average_checkpoints")
def main(argv=None):
    (args,) = parse_args((AveragingArguments,), argv)
    if os.path.exists(args.output_dir):
        raise FileExistsError(f"{args.output_dir} exists: choose another --output_dir (an average is never written "
                              f"over an existing folder)")
    checkpoints = args.checkpoints or checkpoints_between(args.run_dir, args.from_step, args.to_step)
    try:  # before the work: the average is saved with the tokenizer of the last checkpoint
        tokenizer = load_tokenizer(checkpoints[-1])
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{checkpoints[-1]} has no tokenizer (tokenizer.json): the average is saved with "
                                f"the last checkpoint's; end --checkpoints with one that has it") from err
    model = average_checkpoints(checkpoints)
    check_tokenizer(tokenizer, model.config, source=checkpoints[-1])
    partial = f"{os.path.normpath(args.output_dir)}.partial-{os.getpid()}"
    try:
        with explain_disk_full(args.output_dir):
            model.save_pretrained(partial, tokenizer=tokenizer)
        os.rename(partial, args.output_dir)  # the folder appears complete or not at all
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print(f"averaged {len(checkpoints)} checkpoints ({', '.join(os.path.basename(os.path.normpath(c)) for c in checkpoints)}) "
          f"into {args.output_dir}")


if __name__ == "__main__":
    main()
