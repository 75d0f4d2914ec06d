#!/usr/bin/env python
"""Train IAMM with Seq2SeqTrainer, on one process or many (`accelerate launch`).

    python scripts/train.py --preset paper --data path/to/ed --output_dir runs/iamm
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --preset paper --data path/to/ed --output_dir runs/iamm
    python scripts/train.py --preset paper --data path/to/ed --output_dir runs/iamm --resume_from_checkpoint true
    python scripts/train.py config.yaml          # the same arguments as a JSON/YAML file (may name a preset)

Presets (modeling_iamm/cli.py) set defaults that any flag overrides: `paper` (the authors' schedule), `cpu-quick`,
`tiny`. The final output directory is a complete save_pretrained folder (weights, config with auto_map, code,
tokenizer): the best checkpoint by `--metric_for_best_model` (paper preset: validation perplexity, as the authors'
code) when the run evaluates, else the last. `--max_train_seconds` stops a run on a wall-clock budget (logged;
train_summary.json says what ended the run in `stopped_by`: max_steps, time_budget or early_stopping).

`--resume_from_checkpoint true` continues from the last complete checkpoint: one left incomplete by a kill or a full
disk is skipped, with a warning naming it. A run that already reached its --max_steps trains nothing: it says so and
keeps its final model (or saves it, when the run was killed before its final save).

`--overwrite_output_dir true` moves an existing run aside (to `<output_dir>.replaced-<time>`, logged) so that no old
checkpoint is resumed by mistake. Length limits (`--max_utterance_length`, ...; defaults cover ED) are saved in the
model's config, with the tokenizer's fingerprint and the word-vector initialisation (`--word_vectors`), so that
evaluation applies the same; how many texts they cut is logged and written to train_summary.json.
"""

import json
import logging
import os
import sys
import time

import torch
import transformers  # its trainer names are read after modeling_iamm is imported, which quiets bitsandbytes

from modeling_iamm.cli import parse_args, script_main
from modeling_iamm.collator import IAMMDataCollator
from modeling_iamm.evaluation import compiled_graphs
from modeling_iamm.folders import removed_if_left_empty
from modeling_iamm.preparation import DataArguments, prepare_data
from modeling_iamm.tokenization import check_tokenizer, tokenizer_fingerprint
from modeling_iamm.training import (IAMMTrainer, IAMMTrainingArguments, ModelArguments, build_model,
                                    final_model_saved, load_final_weights, prepare_output_dir,
                                    resolve_resume_checkpoint, run_end_reached, stop_reason)

logger = logging.getLogger("train")


class CountBatches(transformers.TrainerCallback):
    """Counts the optimizer steps this process took part in (the multi-process check reads it)."""

    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


@script_main("train")  # a user mistake (a bad flag, unreadable data, a full disk) ends the run with one line
def main(argv=None):
    train(argv)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # leave the process group in order: ranks that tear it down at interpreter exit can abort (SIGABRT)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def train(argv=None):
    data_args, model_args, training_args = parse_args((DataArguments, ModelArguments, IAMMTrainingArguments), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
                        if training_args.process_index == 0 else logging.WARNING)
    with removed_if_left_empty(training_args.output_dir):  # a refusal below leaves no empty output folder behind
        _train(data_args, model_args, training_args)


def _train(data_args, model_args, training_args) -> None:
    with training_args.main_process_first(desc="checking output_dir"):
        aside = prepare_output_dir(training_args.output_dir, training_args.overwrite_output_dir,
                                   training_args.resume_from_checkpoint, training_args.process_index == 0)
    if aside:
        logger.warning("--overwrite_output_dir: moved the previous contents of %s to %s", training_args.output_dir, aside)
    resume = resolve_resume_checkpoint(training_args.output_dir, training_args.resume_from_checkpoint)
    finished = run_end_reached(resume, training_args) if resume else None
    if finished and final_model_saved(training_args.output_dir, resume):
        logger.warning("nothing to train: %s; the run is finished and %s holds its final model (unchanged). Raise "
                       "--max_steps (or --num_train_epochs) to train further", finished, training_args.output_dir)
        return
    transformers.set_seed(training_args.seed)
    if model_args.model_name_or_path and not data_args.tokenizer_name_or_path:
        data_args.tokenizer_name_or_path = model_args.model_name_or_path
    with training_args.main_process_first(desc="preparing data"):
        data, tokenizer, word_counts = prepare_data(data_args, return_train_word_counts=True)
    has_knowledge = "situation_knowledge" in data["train"].column_names
    model = build_model(model_args, tokenizer, has_knowledge, token_counts=word_counts)
    check_tokenizer(tokenizer, model.config, source=data_args.tokenizer_name_or_path or "the tokenizer")
    limits = data_args.length_limits(getattr(model.config, "length_limits", None))
    # saved with every checkpoint: evaluation applies the same limits and checks it has the same tokenizer
    model.config.update({"length_limits": limits, "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)})
    eval_split = "valid" if "valid" in data else None
    if training_args.eval_strategy != "no" and eval_split is None:
        sys.exit("evaluation is on but the data has no valid split (pass it, or --eval_strategy no)")
    counter = CountBatches()
    collator = IAMMDataCollator(tokenizer, relation_names=model.config.relation_names, return_oov_words=False,
                                pad_to_multiple_of=training_args.pad_to_multiple_of or None, **limits)
    trainer = IAMMTrainer(
        model=model, args=training_args, train_dataset=data["train"],
        eval_dataset=data[eval_split] if eval_split else None, processing_class=tokenizer,
        data_collator=collator, callbacks=[counter],
    )
    start = time.time()
    if finished:  # killed after its last checkpoint, before the final save: save the final model, train nothing
        logger.warning("nothing to train: %s; saving the run's final model from its checkpoints", finished)
        train_loss, stopped_by = None, "max_steps"
        load_final_weights(trainer, resume)
    else:
        train_loss = trainer.train(resume_from_checkpoint=resume).training_loss
        stopped_by = stop_reason(trainer)
    elapsed = time.time() - start
    print(f"[rank {training_args.process_index}/{training_args.world_size}] took part in {counter.steps} optimizer "
          f"steps (global step {trainer.state.global_step})", flush=True)
    truncated = collator.truncation_report()
    if truncated:
        logger.warning("length limits %s cut %s (texts per limit; turns: samples) on this process", limits, truncated)
    trainer.save_model(training_args.output_dir)  # the best checkpoint when load_best_model_at_end, else the last
    if trainer.is_world_process_zero():
        summary = {
            "global_step": trainer.state.global_step, "stopped_by": stopped_by, "train_seconds": round(elapsed, 1),
            "seconds_per_1000_steps": round(1000 * elapsed / max(counter.steps, 1), 1),
            "best_checkpoint": trainer.state.best_model_checkpoint, "best_metric": trainer.state.best_metric,
            "train_loss": train_loss, "implicit_association": model.config.use_implicit_association,
            "samples": {split: ds.num_rows for split, ds in data.items()}, "vocabulary": len(tokenizer),
            "length_limits": limits, "truncated": truncated, "pad_to_multiple_of": collator.pad_to_multiple_of,
            "torch_compile": training_args.torch_compile,
            "compiled_graphs": compiled_graphs() if training_args.torch_compile else None,
            "word_vectors": getattr(model.config, "word_vectors", None),
            **data_args.source_record(training_args.output_dir),  # the model card's training data
        }
        with open(os.path.join(training_args.output_dir, "train_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
