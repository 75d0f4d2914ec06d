#!/usr/bin/env python
"""The main job on the embedded default: train a small IAMM on the bundled EmpatheticDialogues sample (no
downloads), then print, for a few validation dialogues, the predicted emotion, the generated response and the
associated words the model found.

    python scripts/quickstart.py                 # about 3 minutes on 2 CPU cores
    python scripts/quickstart.py --epochs 1      # a faster smoke run
    python scripts/quickstart.py --overwrite_output_dir true   # again into the same folder (the old one moved aside)

The bundled sample (600 training conversations) is far too small for a good model: the point is to see every part
work end to end. The sample has no COMET knowledge, so the implicit branch is off. The model is evaluated after every
epoch and the saved one is the epoch with the lowest validation perplexity (the recipe of `scripts/train.py --preset
paper`), not the last: on so little data the later epochs overfit. A non-empty output folder is refused unless
`--overwrite_output_dir true`, which moves it aside to `<output_dir>.replaced-<time>`, as `scripts/train.py` does.
"""

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import transformers  # transformers.set_seed is read after modeling_iamm is imported, which quiets bitsandbytes

from modeling_iamm import SAMPLE_DATA_DIR, IAMMConfig, IAMMDataCollator, IAMMForConditionalGeneration
from modeling_iamm.cli import check_min, parse_args, script_main
from modeling_iamm.collator import DEFAULT_LENGTH_LIMITS
from modeling_iamm.folders import explain_disk_full
from modeling_iamm.inference import predict, top_associations
from modeling_iamm.preparation import DataArguments, prepare_data
from modeling_iamm.tokenization import tokenizer_fingerprint
from modeling_iamm.training import IAMMTrainer, IAMMTrainingArguments, prepare_output_dir


@dataclass
class QuickstartArguments:
    output_dir: str = field(default="quickstart_output", metadata={"help": "Where the trained model is saved."})
    epochs: float = field(default=8, metadata={"help": "Training epochs over the bundled sample."})
    hidden_size: int = field(default=128, metadata={"help": "Model width (the paper's is 300)."})
    show: int = field(default=4, metadata={"help": "Validation dialogues to print."})
    seed: int = field(default=42, metadata={"help": "Random seed."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over in a non-empty output_dir: its contents are moved aside to "
                                         "<output_dir>.replaced-<time> (refused otherwise)."}
    )
    max_samples: Optional[int] = field(default=None, metadata={"help": "Keep the first N samples of each split (smoke runs)."})

    def __post_init__(self):  # before the output folder is touched
        if not self.epochs > 0:
            raise ValueError(f"--epochs must be > 0, got {self.epochs}")
        check_min("--hidden_size", self.hidden_size)
        check_min("--show", self.show, 0)
        check_min("--max_samples", self.max_samples)


@script_main("quickstart")
def main(argv=None):
    (args,) = parse_args((QuickstartArguments,), argv)
    logging.basicConfig(level=logging.WARNING)
    aside = prepare_output_dir(args.output_dir, args.overwrite_output_dir, resume=None, can_resume=False)
    if aside:
        print(f"--overwrite_output_dir: moved the previous contents of {args.output_dir} to {aside}")
    transformers.set_seed(args.seed)
    start = time.time()
    data_args = DataArguments(data=SAMPLE_DATA_DIR, max_samples=args.max_samples)
    data, tokenizer = prepare_data(data_args)
    print(f"data: {data['train'].num_rows} train / {data['valid'].num_rows} valid samples (listener turns); "
          f"vocabulary {len(tokenizer)} words (train split only)")

    config = IAMMConfig(vocab_size=len(tokenizer), hidden_size=args.hidden_size, use_implicit_association=False)
    model = IAMMForConditionalGeneration(config)
    # saved with the model: scripts/evaluate.py applies the same limits and checks the tokenizer
    model.config.update({"length_limits": dict(DEFAULT_LENGTH_LIMITS), "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)})
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    training_args = IAMMTrainingArguments(
        output_dir=args.output_dir, per_device_train_batch_size=16, per_device_eval_batch_size=32,
        num_train_epochs=args.epochs, learning_rate=2e-3, schedule="hf", lr_scheduler_type="linear",
        warmup_steps=40, optim="adamw_torch_fused", adam_beta2=0.98, adam_epsilon=1e-9, weight_decay=0.0,
        logging_steps=50, eval_strategy="epoch", report_to=[], use_cpu=not torch.cuda.is_available(),
        seed=args.seed, disable_tqdm=False,
        # keep the epoch with the lowest validation perplexity (train.py's paper preset), not the last, overfit one
        save_strategy="epoch", save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="eval_ppl",
        greater_is_better=False,
    )
    trainer = IAMMTrainer(
        model=model, args=training_args, train_dataset=data["train"], eval_dataset=data["valid"],
        data_collator=IAMMDataCollator(tokenizer, return_oov_words=False, **DEFAULT_LENGTH_LIMITS),
    )
    trainer.train()
    best = trainer.state.best_model_checkpoint
    metrics = trainer.evaluate()
    print(f"kept {os.path.basename(best) if best else 'the last epoch'} (lowest validation perplexity); validation: "
          f"loss {metrics['eval_loss']:.3f}, perplexity {metrics['eval_ppl']:.1f}, "
          f"emotion accuracy {100 * metrics['eval_emotion_accuracy']:.1f}%")
    with explain_disk_full(args.output_dir):
        model.save_pretrained(args.output_dir, tokenizer=tokenizer)
        summary = {"global_step": trainer.state.global_step,
                   "best_checkpoint": os.path.relpath(best, args.output_dir) if best else None,
                   "implicit_association": False, "samples": {split: ds.num_rows for split, ds in data.items()},
                   "vocabulary": len(tokenizer), **data_args.source_record(args.output_dir)}  # the model card's data
        with open(os.path.join(args.output_dir, "train_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    print(f"saved to {os.path.abspath(args.output_dir)} (loads with AutoModel.from_pretrained(..., trust_remote_code=True))")

    # a few validation dialogues with contexts of different lengths (1, 3, 5, ... utterances)
    lengths = [len(c) for c in data["valid"]["context"]]
    picks = [next((i for i, n in enumerate(lengths) if n == want), None) for want in (1, 3, 5, 7, 2, 4)]
    shown = data["valid"].select([i for i in picks if i is not None][: args.show])
    for sample, record in zip(shown, predict(model, tokenizer, shown, max_new_tokens=30)):
        print("\n" + "=" * 100)
        print(f"situation : {sample['situation']}")
        for role, utterance in zip(sample["context_roles"], sample["context"]):
            print(f"{role:>9} : {utterance}")
        print(f"emotion   : predicted {record['emotion']!r}, gold {sample['emotion']!r}")
        print(f"response  : {record['response']}")
        print(f"gold      : {sample['target']}")
        print("associated words:")
        for pair, lines in top_associations(record["associations"]).items():
            if lines:
                print(f"  {pair}: " + "; ".join(lines))
    print(f"\ndone in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
