"""Choosing the checkpoint to release from a training run's validations, by a rule fixed before looking
(`RULE`)."""

import json
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

from .training import CHECKPOINT_NAME, _checkpoints

RULE = ("Among the evaluated checkpoints, the highest validation emotion accuracy among those whose validation "
        "perplexity is at most max_ppl; when none is (or without max_ppl), the lowest validation perplexity. Ties "
        "go to the earlier step.")


@dataclass
class EvaluatedCheckpoint:
    """One validation of a run: its step, metrics (perplexity with the paper's estimator, emotion accuracy as a
    fraction) and its checkpoint folder (None when it was not kept)."""

    step: int
    ppl: float
    emotion_accuracy: float
    ppl_corpus: Optional[float] = None
    checkpoint: Optional[str] = None


def evaluated_checkpoints(run_dir: str) -> List[EvaluatedCheckpoint]:
    """Every validation of the run in `run_dir`, in step order, read from its last checkpoint's `trainer_state.json`
    (which holds the whole log history)."""
    checkpoints = _checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir}: no checkpoint-N folder, so no trainer_state.json to read validations from")
    state_file = os.path.join(checkpoints[-1], "trainer_state.json")
    try:
        with open(state_file) as f:
            history = json.load(f)["log_history"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{state_file}: cannot read the log history ({err})") from err
    by_step = {int(CHECKPOINT_NAME.fullmatch(os.path.basename(c)).group(1)): c for c in checkpoints}
    found: Dict[int, EvaluatedCheckpoint] = {}
    for entry in history:
        if "eval_ppl" not in entry:
            continue
        if "eval_emotion_accuracy" not in entry or "step" not in entry:
            raise ValueError(f"{state_file}: a validation without eval_emotion_accuracy or step: {entry}")
        step = int(entry["step"])
        found[step] = EvaluatedCheckpoint(step=step, ppl=float(entry["eval_ppl"]),
                                          emotion_accuracy=float(entry["eval_emotion_accuracy"]),
                                          ppl_corpus=entry.get("eval_ppl_corpus"), checkpoint=by_step.get(step))
    if not found:
        raise ValueError(f"{state_file}: the run has no validation (eval_ppl) yet")
    return [found[step] for step in sorted(found)]


def select_checkpoint(evaluated: List[EvaluatedCheckpoint], max_ppl: Optional[float] = None) -> EvaluatedCheckpoint:
    """The checkpoint `RULE` picks (only among checkpoints that were kept)."""
    kept = [e for e in evaluated if e.checkpoint is not None]
    if not kept:
        raise ValueError("none of the evaluated checkpoints was kept (save_steps must match eval_steps)")
    within = [e for e in kept if max_ppl is not None and e.ppl <= max_ppl]
    if within:
        return max(within, key=lambda e: (e.emotion_accuracy, -e.step))
    return min(kept, key=lambda e: (e.ppl, e.step))


def selection_record(evaluated: List[EvaluatedCheckpoint], chosen: EvaluatedCheckpoint,
                     max_ppl: Optional[float]) -> Dict:
    """A JSON-ready record: the rule, every validation and the choice."""
    return {"rule": RULE, "max_ppl": max_ppl,
            "evaluated": [asdict(e) for e in evaluated], "selected": asdict(chosen)}
