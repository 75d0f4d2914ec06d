"""Training IAMM with `transformers.Seq2SeqTrainer`: the authors' Noam schedule and the arguments it needs."""

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

LABEL_NAMES = ["labels", "emotion_labels"]


def noam_lambda(hidden_size: int, warmup_steps: int) -> Callable[[int], float]:
    """The Noam schedule (Vaswani et al., 2017), as the authors train IAMM:
    `lr = d^-0.5 * min(step^-0.5, step * warmup^-1.5)`, peaking at step `warmup` (6.45e-4 for d=300, 8000 steps).
    The returned factor multiplies `learning_rate` (1.0 reproduces the authors' values)."""
    if warmup_steps < 1:
        raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")

    def factor(step: int) -> float:
        step = step + 1  # LambdaLR counts from 0; the authors' first update is step 1
        return hidden_size**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)

    return factor


@dataclass
class IAMMTrainingArguments(Seq2SeqTrainingArguments):
    """`Seq2SeqTrainingArguments` plus IAMM's schedule.

    Schedule:
        schedule: `"noam"` (the authors': `learning_rate` x the Noam factor, so learning_rate=1.0 gives their values)
            or `"hf"` (the usual `lr_scheduler_type` / `warmup_steps`).
        noam_warmup_steps: Noam warm-up (authors: 8000).
        noam_hidden_size: the `d` of the Noam formula (default: the model's hidden size).

    IAMM batches carry two label tensors: `label_names` defaults to `["labels", "emotion_labels"]`, and the
    collator's extra columns need `remove_unused_columns=False` (the default here).
    """

    schedule: str = field(default="noam", metadata={"help": "'noam' (the authors' schedule) or 'hf' (lr_scheduler_type)."})
    noam_warmup_steps: int = field(default=8000, metadata={"help": "Warm-up steps of the Noam schedule."})
    noam_hidden_size: Optional[int] = field(default=None, metadata={"help": "d of the Noam formula (default: model's)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the collator's columns (IAMM needs them)."})
    label_names: Optional[List[str]] = field(
        default_factory=lambda: list(LABEL_NAMES), metadata={"help": "Label tensors of a batch."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.schedule not in ("noam", "hf"):
            raise ValueError(f"--schedule must be 'noam' or 'hf', got {self.schedule!r}")
        if self.remove_unused_columns:
            raise ValueError("IAMM needs remove_unused_columns=False: its collator reads columns the model does not take")


class IAMMTrainer(Seq2SeqTrainer):
    """`Seq2SeqTrainer` with the Noam schedule when `args.schedule == "noam"`."""

    def create_scheduler(self, num_training_steps: int, optimizer: Optional[torch.optim.Optimizer] = None):
        if getattr(self.args, "schedule", "hf") != "noam":
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            model = self.model.module if hasattr(self.model, "module") else self.model
            d = self.args.noam_hidden_size or model.config.hidden_size
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer if optimizer is not None else self.optimizer, noam_lambda(d, self.args.noam_warmup_steps)
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler


def peak_noam_learning_rate(hidden_size: int, warmup_steps: int) -> float:
    """The Noam schedule's highest learning rate (at step `warmup_steps`)."""
    return hidden_size**-0.5 * warmup_steps**-0.5 if warmup_steps else math.inf
