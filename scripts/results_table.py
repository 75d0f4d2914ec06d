#!/usr/bin/env python
"""Print a Markdown table of evaluation results (one row per evaluation folder holding a metrics.json).

    python scripts/results_table.py --eval_dirs runs/eval_woIA runs/eval_woIA_woEA ...
    python scripts/results_table.py --runs_dir runs          # every runs/eval_*/metrics.json

A row's training columns come from the `train_summary.json` of the model it evaluated (metrics.json's `model`).
"""

import glob
import json
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional

from modeling_iamm.cli import parse_args, script_main
from modeling_iamm.evaluation import results_table


@dataclass
class TableArguments:
    eval_dirs: List[str] = field(default_factory=list, metadata={"help": "Evaluation folders (metrics.json inside)."})
    runs_dir: Optional[str] = field(default=None, metadata={"help": "Take every RUNS_DIR/eval_*/ folder."})
    json_output: Optional[str] = field(default=None, metadata={"help": "Also write all rows as one JSON file."})


@script_main("results_table")
def main(argv=None):
    (args,) = parse_args((TableArguments,), argv)
    dirs = list(args.eval_dirs)
    if args.runs_dir:
        dirs += sorted(os.path.dirname(p) for p in glob.glob(os.path.join(args.runs_dir, "eval_*", "metrics.json")))
    if not dirs:
        sys.exit("no evaluation folders: pass them, or --runs_dir")
    runs = {}
    for d in dirs:
        path = os.path.join(d, "metrics.json")
        if not os.path.isfile(path):
            sys.exit(f"{path}: no such file (evaluation not finished?)")
        with open(path) as f:
            metrics = json.load(f)
        summary = os.path.join(str(metrics.get("model", "")), "train_summary.json")
        if os.path.isfile(summary):
            with open(summary) as f:
                metrics["train"] = json.load(f)
        name = os.path.basename(os.path.normpath(d))
        runs[name[len("eval_"):] if name.startswith("eval_") else name] = metrics
    print(results_table(runs))
    if args.json_output:
        with open(args.json_output, "w") as f:
            json.dump(runs, f, indent=2)


if __name__ == "__main__":
    main()
