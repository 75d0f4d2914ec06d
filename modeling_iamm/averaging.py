"""Averaging the weights of a run's checkpoints (checkpoint averaging, as in the Transformer paper and fairseq).

The uniform mean of the checkpoints saved between two steps of one run is a model of its own: it smooths the
last stretch of the optimisation and, on this model, is more accurate than the checkpoints it averages, at close
to the perplexity of the last of them (docs/results.md, "Checkpoint averaging"). Every checkpoint must come from the same architecture: same
parameter names, shapes and dtypes, and the same config apart from bookkeeping fields.
"""

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import torch
from safetensors import safe_open

from .configuration_iamm import IAMMConfig
from .training import _checkpoints, _step, check_checkpoint_files

WEIGHTS_NAME = "model.safetensors"
# config keys that may differ between checkpoints of one run
_CONFIG_BOOKKEEPING = ("_name_or_path", "transformers_version", "checkpoint_average")


def checkpoints_between(run_dir: str, from_step: int, to_step: Optional[int] = None) -> List[str]:
    """The `checkpoint-N` folders of `run_dir` with `from_step <= N <= to_step` (no upper bound when None), by step."""
    if to_step is not None and to_step < from_step:
        raise ValueError(f"--to_step {to_step} is before --from_step {from_step}")
    found = [c for c in _checkpoints(run_dir) if _step(c) >= from_step and (to_step is None or _step(c) <= to_step)]
    if not found:
        steps = [_step(c) for c in _checkpoints(run_dir)]
        raise FileNotFoundError(f"{run_dir}: no checkpoint-N folder with {from_step} <= N"
                                f"{f' <= {to_step}' if to_step is not None else ''} (its checkpoints: {steps or 'none'})")
    return found


def _architecture(folder: str) -> Dict[str, Any]:
    """The checkpoint's config as it loads: a field that an older config.json lacks counts as the value loading
    gives it (its default), so a run resumed under a newer version can still be averaged across the upgrade."""
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as f:
            config = IAMMConfig.from_dict(json.load(f)).to_dict()
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: cannot read the checkpoint's config ({err})") from err
    return {k: v for k, v in config.items() if k not in _CONFIG_BOOKKEEPING}


def average_state_dicts(checkpoints: Sequence[str]) -> Dict[str, torch.Tensor]:
    """The parameter-wise mean of the `model.safetensors` of `checkpoints` (accumulated in float64, returned in
    each tensor's own dtype). Integer and boolean tensors are not averaged: they must be equal in every checkpoint.

    Raises `ValueError` naming the checkpoint whose config, parameter names, shapes or dtypes differ from the first's.
    """
    if not checkpoints:
        raise ValueError("no checkpoint to average")
    reference_config = _architecture(checkpoints[0])
    total: Dict[str, torch.Tensor] = {}
    reference: Dict[str, torch.Tensor] = {}
    for n, folder in enumerate(checkpoints):
        check_checkpoint_files(folder)
        config = _architecture(folder)
        differ = sorted(k for k in set(config) | set(reference_config) if config.get(k) != reference_config.get(k))
        if differ:
            raise ValueError(f"{folder}: config differs from {checkpoints[0]} in {', '.join(differ)}; only checkpoints "
                             f"of one architecture can be averaged")
        path = os.path.join(folder, WEIGHTS_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing (averaging reads each checkpoint's {WEIGHTS_NAME})")
        with safe_open(path, framework="pt") as f:
            names = set(f.keys())
            if n and names != set(reference):
                extra, missing = sorted(names - set(reference)), sorted(set(reference) - names)
                raise ValueError(f"{path}: parameters differ from {checkpoints[0]} (extra: {extra[:3]}, missing: {missing[:3]})")
            for name in sorted(names):
                tensor = f.get_tensor(name)
                if not n:
                    reference[name] = tensor
                    if tensor.is_floating_point():
                        total[name] = tensor.double()
                    continue
                first = reference[name]
                if tensor.shape != first.shape or tensor.dtype != first.dtype:
                    raise ValueError(f"{path}: {name} is {tuple(tensor.shape)} {tensor.dtype}, "
                                     f"{tuple(first.shape)} {first.dtype} in {checkpoints[0]}")
                if tensor.is_floating_point():
                    total[name] += tensor.double()
                elif not torch.equal(tensor, first):
                    raise ValueError(f"{path}: {name} (not a float tensor, so not averaged) differs from {checkpoints[0]}")
    return {name: (total[name] / len(checkpoints)).to(t.dtype) if name in total else t for name, t in reference.items()}


def average_checkpoints(checkpoints: Sequence[str]):
    """The model of the last of `checkpoints` (its config and code) with the mean of all their weights, and a
    `checkpoint_average` record in its config (the steps and folders averaged)."""
    from .training import load_model

    averaged = average_state_dicts(checkpoints)
    model = load_model(checkpoints[-1])
    try:
        model.load_state_dict(averaged, strict=True)
    except RuntimeError as err:  # e.g. a checkpoint saved under parameter names of an earlier version
        raise ValueError(f"{checkpoints[-1]}: the averaged weights do not fit the model it loads as "
                         f"({str(err).splitlines()[0]}); re-save the checkpoints with this version first") from err
    model.config.update({"checkpoint_average": {
        "checkpoints": [os.path.basename(os.path.normpath(c)) for c in checkpoints],
        "steps": [_step(c) for c in checkpoints],
    }})
    return model
