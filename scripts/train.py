#!/usr/bin/env python
"""Train IAMM with Seq2SeqTrainer, on one process or many (`accelerate launch`).

    python scripts/train.py --preset paper --data path/to/ed --output_dir runs/iamm
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --preset paper --data path/to/ed --output_dir runs/iamm
    python scripts/train.py --preset paper --data path/to/ed --output_dir runs/iamm --resume_from_checkpoint true
    python scripts/train.py config.yaml          # the same arguments as a JSON/YAML file (may name a preset)

Presets (modeling_iamm/cli.py) set defaults that any flag overrides: `paper` (the authors' schedule), `cpu-quick`,
`tiny`. The final output directory is a complete save_pretrained folder (weights, config with auto_map, code,
tokenizer): the best checkpoint by `--metric_for_best_model` (paper preset: validation perplexity, as the authors'
code) when the run evaluates, else the last. `--max_train_seconds` stops a run on a wall-clock budget.
"""

import json
import logging
import os
import sys
import time

from transformers import TrainerCallback, set_seed

from modeling_iamm.cli import parse_args
from modeling_iamm.collator import IAMMDataCollator
from modeling_iamm.preparation import DataArguments, prepare_data
from modeling_iamm.training import IAMMTrainer, IAMMTrainingArguments, ModelArguments, build_model

logger = logging.getLogger("train")


class CountBatches(TrainerCallback):
    """Counts the optimizer steps this process took part in (the multi-process check reads it)."""

    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


def main(argv=None):
    data_args, model_args, training_args = parse_args((DataArguments, ModelArguments, IAMMTrainingArguments), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
                        if training_args.process_index == 0 else logging.WARNING)
    if (os.path.isdir(training_args.output_dir) and os.listdir(training_args.output_dir)
            and not training_args.resume_from_checkpoint and not training_args.overwrite_output_dir):
        sys.exit(f"{training_args.output_dir} is not empty: pass --resume_from_checkpoint true to continue that run, "
                 f"or --overwrite_output_dir true to start over (its checkpoints will be replaced)")
    set_seed(training_args.seed)
    if model_args.model_name_or_path and not data_args.tokenizer_name_or_path:
        data_args.tokenizer_name_or_path = model_args.model_name_or_path
    with training_args.main_process_first(desc="preparing data"):
        data, tokenizer = prepare_data(data_args)
    has_knowledge = "situation_knowledge" in data["train"].column_names
    model = build_model(model_args, tokenizer, has_knowledge)
    eval_split = "valid" if "valid" in data else None
    if training_args.eval_strategy != "no" and eval_split is None:
        sys.exit("evaluation is on but the data has no valid split (pass it, or --eval_strategy no)")
    counter = CountBatches()
    trainer = IAMMTrainer(
        model=model, args=training_args, train_dataset=data["train"],
        eval_dataset=data[eval_split] if eval_split else None, processing_class=tokenizer,
        data_collator=IAMMDataCollator(tokenizer, relation_names=model.config.relation_names, return_oov_words=False),
        callbacks=[counter],
    )
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"
    start = time.time()
    result = trainer.train(resume_from_checkpoint=resume or None)
    elapsed = time.time() - start
    print(f"[rank {training_args.process_index}/{training_args.world_size}] took part in {counter.steps} optimizer "
          f"steps (global step {trainer.state.global_step})", flush=True)
    trainer.save_model(training_args.output_dir)  # the best checkpoint when load_best_model_at_end, else the last
    if trainer.is_world_process_zero():
        summary = {
            "global_step": trainer.state.global_step, "train_seconds": round(elapsed, 1),
            "seconds_per_1000_steps": round(1000 * elapsed / max(counter.steps, 1), 1),
            "best_checkpoint": trainer.state.best_model_checkpoint, "best_metric": trainer.state.best_metric,
            "train_loss": result.training_loss, "implicit_association": model.config.use_implicit_association,
            "samples": {split: ds.num_rows for split, ds in data.items()}, "vocabulary": len(tokenizer),
        }
        with open(os.path.join(training_args.output_dir, "train_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
