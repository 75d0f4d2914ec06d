"""What each kind of folder must hold to be published, and the staging copy that is uploaded.

Staging copies only the files a repository should hold (never optimizer states, `checkpoint-*` folders, training
arguments or predictions), adds what the Hub needs (the card, the pipeline's remote code for models that lack it)
and is uploaded as a whole, so the repository mirrors it exactly.
"""

import glob
import json
import logging
import os
import shutil
from typing import Any, Dict, List, Optional

from transformers.dynamic_module_utils import get_relative_import_files

logger = logging.getLogger(__name__)

MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
MODEL_EXTRA_FILES = ("config.json", "generation_config.json", "train_summary.json")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
NEVER_PUSH = ["checkpoint-*", "checkpoint-*/**", "optimizer.pt", "scheduler.pt", "rng_state*.pth", "trainer_state.json",
              "training_args.bin", "predictions*.jsonl", "*.pt", "*.pth", "*.bin", "runs/**", ".cache/**"]
"""Patterns that are never uploaded (also given to `upload_folder` as `ignore_patterns`)."""


class IncompleteFolderError(ValueError):
    """The folder cannot be published: it lacks files a loader needs (the message names them)."""


def read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise IncompleteFolderError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def _refuse(folder: str, kind: str, missing: List[str], hint: str) -> None:
    if missing:
        raise IncompleteFolderError(
            f"{folder} is not a complete {kind}; missing: " + "; ".join(missing) + f". {hint}"
        )


def remote_code_files(folder: str, config: Dict[str, Any]) -> List[str]:
    """The `.py` files config.json's `auto_map` and `custom_pipelines` name, with everything they import."""
    modules = {ref.split(".")[0] for ref in (config.get("auto_map") or {}).values() if isinstance(ref, str)}
    modules |= {info["impl"].split(".")[0] for info in (config.get("custom_pipelines") or {}).values()
                if isinstance(info, dict) and "impl" in info}
    files = set()
    for module in modules:
        path = os.path.join(folder, f"{module}.py")
        files.add(f"{module}.py")
        if os.path.exists(path):
            files.update(os.path.basename(p) for p in get_relative_import_files(path))
    return sorted(files)


def check_model_folder(folder: str) -> Dict[str, Any]:
    """Refuse (`IncompleteFolderError`, naming what is missing) a folder that is not a loadable IAMM checkpoint;
    return its config."""
    if not os.path.isdir(folder):
        raise IncompleteFolderError(f"{folder} is not a folder: pass the output_dir of scripts/train.py")
    missing = []
    config: Dict[str, Any] = {}
    if not os.path.exists(os.path.join(folder, "config.json")):
        missing.append("config.json")
    else:
        config = read_json(os.path.join(folder, "config.json"))
        if config.get("model_type") != "iamm":
            missing.append(f"an IAMM config (config.json has model_type {config.get('model_type')!r})")
        if "AutoModel" not in (config.get("auto_map") or {}):
            missing.append("config.json auto_map.AutoModel (remote code entry point)")
    if not any(os.path.exists(os.path.join(folder, w)) for w in MODEL_WEIGHTS):
        found = [os.path.basename(p) for p in glob.glob(os.path.join(folder, "*.bin"))]
        missing.append("model weights (model.safetensors)" + (f"; found only {found}, which is not pushed" if found else ""))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not os.path.exists(os.path.join(folder, name)):
            missing.append(f"tokenizer file {name}")
    if config:
        code = [f for f in remote_code_files(folder, {"auto_map": config.get("auto_map")})
                if not os.path.exists(os.path.join(folder, f))]
        if code:
            missing.append("remote code " + ", ".join(code))
    _refuse(folder, "IAMM checkpoint", missing,
            "Save the model with IAMMForConditionalGeneration.save_pretrained(folder, tokenizer=tokenizer) "
            "(scripts/train.py does) or pick a checkpoint folder that has them")
    return config


def check_adapter_folder(folder: str) -> Dict[str, Any]:
    """Refuse a folder without a PEFT adapter; return its adapter_config.json."""
    if not os.path.isdir(folder):
        raise IncompleteFolderError(f"{folder} is not a folder: pass the adapter's output_dir")
    missing = [f for f in ADAPTER_FILES if not os.path.exists(os.path.join(folder, f))]
    _refuse(folder, "LoRA adapter", missing, "Save it with PeftModel.save_pretrained(folder)")
    adapter_config = read_json(os.path.join(folder, "adapter_config.json"))
    if not adapter_config.get("base_model_name_or_path"):
        raise IncompleteFolderError(
            f"{folder}/adapter_config.json has no base_model_name_or_path: the card must name the base model; "
            "set it to the base model's Hub id"
        )
    return adapter_config


def dataset_splits(folder: str) -> Dict[str, str]:
    """The parquet file of each split (`data/{split}.parquet`, or `data/{split}-*.parquet` shards), as repo paths."""
    files: Dict[str, List[str]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "data", "*.parquet"))):
        name = os.path.basename(path)[: -len(".parquet")]
        split = name.split("-")[0]
        files.setdefault(split, []).append(f"data/{os.path.basename(path)}")
    if not files:
        raise IncompleteFolderError(
            f"{folder} is not a dataset folder; missing: data/<split>.parquet files. Build it with "
            "scripts/build_instructions.py (or save a DatasetDict as parquet under data/)"
        )
    return {split: paths[0] if len(paths) == 1 else f"data/{split}-*.parquet" for split, paths in files.items()}


def split_counts(folder: str) -> Dict[str, int]:
    """Records per split, from the parquet metadata (no data is read)."""
    import pyarrow.parquet as pq

    counts: Dict[str, int] = {}
    for path in sorted(glob.glob(os.path.join(folder, "data", "*.parquet"))):
        split = os.path.basename(path)[: -len(".parquet")].split("-")[0]
        counts[split] = counts.get(split, 0) + pq.read_metadata(path).num_rows
    return counts


def _copy(folder: str, staging: str, names: List[str]) -> None:
    for name in names:
        source = os.path.join(folder, name)
        if os.path.exists(source):
            target = os.path.join(staging, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy(source, target)


def stage_model(folder: str, staging: str, config: Dict[str, Any]) -> Dict[str, Any]:
    """Copy a checkpoint's publishable files into `staging`, adding the pipeline's remote code (and its
    `custom_pipelines` entry) when the folder predates it. Returns the config as staged."""
    from modeling_iamm.pipeline_iamm import CUSTOM_PIPELINES, pipeline_files

    weights = [w for w in MODEL_WEIGHTS if os.path.exists(os.path.join(folder, w))]
    if "model.safetensors.index.json" in weights:
        index = read_json(os.path.join(folder, "model.safetensors.index.json"))
        weights += sorted(set(index.get("weight_map", {}).values()))
    _copy(folder, staging, weights + list(TOKENIZER_FILES) + list(MODEL_EXTRA_FILES) + remote_code_files(folder, config))
    shipped = config.get("custom_pipelines") and all(
        os.path.exists(os.path.join(staging, f)) for f in remote_code_files(folder, {"custom_pipelines": config["custom_pipelines"]})
    )
    if not shipped:
        logger.warning("%s has no empathetic-response pipeline code: adding it from the installed package", folder)
        for path in pipeline_files():
            target = os.path.join(staging, os.path.basename(path))
            if not os.path.exists(target):
                shutil.copy(path, target)
        config = dict(config, custom_pipelines=CUSTOM_PIPELINES)
        with open(os.path.join(staging, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
    return config


def stage_adapter(folder: str, staging: str) -> None:
    """Copy an adapter's publishable files (adapter, tokenizer, chat template) into `staging`."""
    extra = [os.path.basename(p) for p in glob.glob(os.path.join(folder, "*"))
             if os.path.basename(p) in TOKENIZER_FILES or os.path.basename(p).endswith((".model", ".jinja"))
             or os.path.basename(p) in ("train_summary.json", "chat_template.json")]
    _copy(folder, staging, list(ADAPTER_FILES) + extra)


def stage_dataset(folder: str, staging: str) -> Optional[Dict[str, Any]]:
    """Copy the parquet splits (and build_info.json) into `staging`; return build_info if present."""
    names = [os.path.relpath(p, folder) for p in glob.glob(os.path.join(folder, "data", "*.parquet"))]
    _copy(folder, staging, sorted(names) + ["build_info.json"])
    info = os.path.join(folder, "build_info.json")
    return read_json(info) if os.path.exists(info) else None
