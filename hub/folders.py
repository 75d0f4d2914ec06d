"""What each kind of folder must hold to be published, and the staging copy that is uploaded.

Staging copies only the files a repository should hold (never optimizer states, `checkpoint-*` folders, training
arguments or predictions, never a file that may hold a secret: :data:`SECRET_FILES`), adds what the Hub needs (the
card, the pipeline's remote code for models that lack it) and is uploaded as a whole. Every file is read through :func:`source_file`, which refuses a path that is a folder where a file is
expected, or that leads out of the published folder through a symbolic link.
"""

import fnmatch
import glob
import json
import logging
import math
import os
import re
import shutil
from typing import Any, Dict, List, Optional, Tuple

from transformers.dynamic_module_utils import get_relative_import_files

from modeling_iamm.folders import LORA_PATH_KEYS

from .cards import MODEL_METRICS, is_local_path

logger = logging.getLogger(__name__)

MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
MODEL_EXTRA_FILES = ("config.json", "generation_config.json", "train_summary.json")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
NEVER_PUSH = ["checkpoint-*", "checkpoint-*/**", "optimizer.pt", "scheduler.pt", "rng_state*.pth", "trainer_state.json",
              "training_args.bin", "predictions*.jsonl", "*.pt", "*.pth", "*.bin", "runs/**", ".cache/**"]
"""Patterns that are never uploaded (also given to `upload_folder` as `ignore_patterns`)."""


SECRET_FILES = (
    ".env", ".env.*", "*.env", ".envrc", ".netrc", "_netrc", ".git-credentials", ".pypirc", ".npmrc", ".pgpass",
    ".htpasswd", ".dockercfg", "credentials.json", "client_secret*.json", "id_rsa*", "id_dsa*", "id_ecdsa*",
    "id_ed25519*", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.ppk", "*.kdbx",
)
"""File names (at any depth, case-insensitive) that are never uploaded, by any kind of push: environment files with
tokens (`.env`), login files (`.netrc`, `.git-credentials`, `.pypirc`, `.npmrc`, `.pgpass`, `.htpasswd`, Docker's
`.dockercfg`), OAuth client and service-account files, SSH and TLS private keys and key stores. Such a file in a
Space folder is left out and named in the push's output."""

SECRET_FOLDERS = (".git", ".ssh", ".aws", ".gnupg", ".docker", ".huggingface", ".cache")
"""Folders (at any depth) whose files are never uploaded: git's own folder (credentials in its config), SSH, AWS,
GnuPG and Docker credentials, and the Hugging Face token folders (`.huggingface/`, `.cache/huggingface/token`)."""


def is_secret(path: str) -> bool:
    """Whether a folder-relative path (with `/`) is, or lies in, one of :data:`SECRET_FILES` or
    :data:`SECRET_FOLDERS`."""
    parts = path.lower().split("/")
    if any(part in SECRET_FOLDERS for part in parts[:-1]):
        return True
    return any(fnmatch.fnmatchcase(parts[-1], pattern) for pattern in SECRET_FILES)


def is_never_pushed(path: str) -> bool:
    """Whether a folder-relative path (with `/`) is one that no push uploads (:data:`NEVER_PUSH`, matched against
    the whole path and, by name, against every folder and file on it)."""
    names = [pattern.split("/")[0] for pattern in NEVER_PUSH]
    return (any(fnmatch.fnmatchcase(path, pattern) for pattern in NEVER_PUSH)
            or any(fnmatch.fnmatchcase(part, name) for part in path.split("/") for name in names))


class IncompleteFolderError(ValueError):
    """The folder cannot be published: it lacks files a loader needs (the message names them)."""


def read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise IncompleteFolderError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise IncompleteFolderError(f"{path}: not a UTF-8 JSON file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise IncompleteFolderError(f"{path}: cannot be read ({e.strerror or e})") from None


def source_file(folder: str, name: str) -> Optional[str]:
    """The file `name` (a path relative to `folder`, with `/`) that a push copies from `folder`, as a real path;
    None when there is none. An `IncompleteFolderError` (one line, nothing uploaded) when the name is a folder or
    another non-file, or when it leads outside `folder` (itself, or a folder on its way, a symbolic link to a place
    outside it, or to nothing): a push never follows a link out of the folder it publishes."""
    path = os.path.join(folder, *name.split("/"))
    if not os.path.lexists(path):
        return None
    root, real = os.path.realpath(folder), os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        raise IncompleteFolderError(
            f"{path} is a symbolic link (or lies in a linked folder) leading outside {folder}, to {real}: a push does "
            "not follow links out of the folder it publishes; copy the file into the folder or remove the link")
    if not os.path.exists(real):
        raise IncompleteFolderError(f"{path} is a symbolic link to {real}, which does not exist: remove the link or "
                                    "put the file there")
    if os.path.isdir(real):
        raise IncompleteFolderError(f"{path} is a folder, not a file: a push expects the file {name} there (remove "
                                    "or rename the folder)")
    if not os.path.isfile(real):
        raise IncompleteFolderError(f"{path} is not a regular file: a push only uploads files")
    return real


def copy_files(folder: str, staging: str, names: List[str]) -> None:
    """Copy the files `names` (relative paths, with `/`) of `folder` into `staging`, those that exist; a name that
    :func:`is_secret` is never copied, whatever asked for it. Every name is checked (and a problem raised, see
    :func:`source_file`) before the first copy."""
    sources = {name: source_file(folder, name) for name in names if not is_secret(name)}
    for name, source in sources.items():
        if source is None:
            continue
        target = os.path.join(staging, *name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            shutil.copyfile(source, target)
        except OSError as e:
            raise IncompleteFolderError(f"{os.path.join(folder, name)}: cannot be read ({e.strerror or e})") from None


SPACE_SKIPPED = ("__pycache__", "*.pyc")
"""Names (at any depth) a Space folder's push skips besides :data:`NEVER_PUSH`: Python's caches."""


def folder_files(folder: str) -> Tuple[List[str], List[str]]:
    """Every file of `folder` that a push of the whole folder (a Space) uploads, as relative paths with `/`, and the
    files and folders left out as secrets (:func:`is_secret`, named even where :data:`NEVER_PUSH` would skip them).
    Symbolic links are followed inside the folder only, and published under their own names too: a link leading
    outside it is refused (`IncompleteFolderError`, naming it), a link to a folder the walk is in (a loop) is not
    followed. Skipped silently: :data:`NEVER_PUSH` and :data:`SPACE_SKIPPED`. A file link is checked by
    :func:`copy_files`, which refuses one leading outside before anything is copied."""
    root = os.path.realpath(folder)
    files: List[str] = []
    left_out: List[str] = []

    def skipped(rel: str) -> bool:
        return is_never_pushed(rel) or any(fnmatch.fnmatchcase(part, pattern) for part in rel.split("/")
                                           for pattern in SPACE_SKIPPED)

    for directory, folders, names in os.walk(folder, followlinks=True):
        base = os.path.relpath(directory, folder).replace(os.sep, "/")
        base = "" if base == "." else base + "/"
        current = os.path.realpath(directory)
        kept = []
        for name in sorted(folders):
            rel = base + name
            if is_secret(rel + "/"):
                left_out.append(rel + "/")
                continue
            if skipped(rel):
                continue
            path = os.path.join(directory, name)
            real = os.path.realpath(path)
            if os.path.commonpath([root, real]) != root:
                raise IncompleteFolderError(
                    f"{os.path.join(folder, rel)} is a symbolic link leading outside {folder}, to {real}: a push does "
                    "not follow links out of the folder it publishes; copy what it should publish into the folder "
                    "or remove the link")
            if os.path.islink(path) and os.path.commonpath([current, real]) == real:
                continue  # a link to this folder or one above it: following it would never end
            kept.append(name)
        folders[:] = kept
        for name in sorted(names):
            rel = base + name
            if is_secret(rel):
                left_out.append(rel)
            elif not skipped(rel):
                files.append(rel)
    return files, left_out


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
    for name in ("config.json", *MODEL_WEIGHTS, *TOKENIZER_FILES):
        source_file(folder, name)  # a folder or a link out of the folder where a file belongs: one line
    other = other_kind(folder)
    if other:
        raise IncompleteFolderError(f"{folder} is not an IAMM checkpoint but {other[0]}: push it with --kind {other[1]}")
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


def other_kind(folder: str) -> Optional[Tuple[str, str]]:
    """`(what, kind)` when `folder` holds a LoRA adapter or an instruction dataset, else None."""
    if os.path.exists(os.path.join(folder, "adapter_config.json")):
        return "a LoRA adapter (it has adapter_config.json)", "adapter"
    if glob.glob(os.path.join(folder, "data", "*.parquet")) and not os.path.exists(os.path.join(folder, "config.json")):
        return "a dataset (it has data/*.parquet)", "dataset"
    return None


def check_adapter_folder(folder: str) -> Dict[str, Any]:
    """Refuse a folder without a PEFT adapter; return its adapter_config.json."""
    if not os.path.isdir(folder):
        raise IncompleteFolderError(f"{folder} is not a folder: pass the adapter's output_dir")
    missing = [f for f in ADAPTER_FILES if source_file(folder, f) is None]
    _refuse(folder, "LoRA adapter", missing, "Save it with PeftModel.save_pretrained(folder)")
    return read_json(os.path.join(folder, "adapter_config.json"))


RAW_CHATGLM = re.compile(r"^(thudm|zai-org)/chatglm", re.IGNORECASE)
"""Hub ids of ChatGLM checkpoints in their own remote-code layout."""


def adapter_base_model(folder: str, adapter_config: Dict[str, Any], base_model: Optional[str]) -> Dict[str, Any]:
    """The base model an adapter's card and staged `adapter_config.json` name: `base_model` (a Hub id) when given,
    else the recorded `base_model_name_or_path` when it is a Hub id. A recorded folder of this machine is refused
    (nobody else can load it). Returns `{"hub_id", "recorded", "chatglm3": "raw" | "converted" | None, "size"}`,
    `size` the recorded base's `{"layers", "hidden_size"}` when its config.json is on this machine, else None."""
    recorded = adapter_config.get("base_model_name_or_path") or ""
    chatglm3 = size = None
    if recorded and os.path.isfile(os.path.join(recorded, "config.json")):
        base_config = read_json(os.path.join(recorded, "config.json"))
        if base_config.get("model_type") == "chatglm":  # raw ChatGLM3: training converted it on the fly
            chatglm3 = "raw"
        elif base_config.get("converted_from") == "chatglm3":  # written by scripts/convert_chatglm3.py
            chatglm3 = "converted"
        layers = base_config.get("num_hidden_layers", base_config.get("num_layers"))  # glm / ChatGLM3's own key
        if isinstance(layers, int) and isinstance(base_config.get("hidden_size"), int):
            size = {"layers": layers, "hidden_size": base_config["hidden_size"]}
    elif RAW_CHATGLM.match(recorded):
        chatglm3 = "raw"
    hub_id = base_model or (recorded if recorded and not is_local_path(recorded) else None)
    if hub_id and RAW_CHATGLM.match(hub_id):
        raise IncompleteFolderError(
            f"{hub_id} is ChatGLM3 in its remote-code layout, whose module names differ from the transformers `glm` "
            "layout the adapter was trained on: convert it with scripts/convert_chatglm3.py, push the converted "
            "folder and pass its id as --base_model")
    if not hub_id:
        where = f"names {recorded!r}, a folder of this machine," if recorded else "names no base model"
        hint = (" It was trained on ChatGLM3: convert THUDM/chatglm3-6b with scripts/convert_chatglm3.py, push the "
                "converted folder and pass its id" if chatglm3 else "")
        raise IncompleteFolderError(
            f"{folder}/adapter_config.json {where} as its base model: pass --base_model with the Hub id of the base "
            f"weights it was trained on.{hint}")
    return {"hub_id": hub_id, "recorded": recorded, "chatglm3": chatglm3, "size": size}


def _recorded_or_given(recorded: Optional[str], given: Optional[str], flag: str, source: str, what: str,
                       missing: str) -> str:
    """The value a file recorded, else the one given on the command line; a contradiction or neither is refused
    (`what` says what the file records, with `{}` for the value; `missing` is the message when neither is known)."""
    if recorded and given and recorded != given:
        raise IncompleteFolderError(f"{flag} {given} contradicts {source}, which says "
                                    f"{what.format(repr(recorded))}: leave {flag} out")
    if not (recorded or given):
        raise IncompleteFolderError(missing)
    return recorded or given


def adapter_training(folder: str, instruction_column: Optional[str]) -> Dict[str, Any]:
    """What an adapter was trained on, from the `lora_args.json` that `scripts/train_lora.py` saved beside it: the
    instruction column (checked against `instruction_column` when both are known) and the data's instruction format."""
    path = os.path.join(folder, "lora_args.json")
    lora_args = read_json(path) if os.path.exists(path) else {}
    column = _recorded_or_given(
        lora_args.get("instruction_column"), instruction_column, "--instruction_format", path,
        "the adapter was trained on the {} column",
        f"{folder} has no lora_args.json (scripts/train_lora.py writes it): pass --instruction_format "
        "messages|plain_messages to say what the adapter was trained on")
    data_format = None
    data_dir = lora_args.get("data_dir")
    # scripts/train_lora.py records the data folder relative to the adapter folder; older records hold it as given
    candidates = [os.path.join(folder, data_dir), data_dir] if isinstance(data_dir, str) and data_dir else []
    info = next((os.path.join(c, "build_info.json") for c in candidates
                 if os.path.isfile(os.path.join(c, "build_info.json"))), None)
    if info:
        data_format = read_json(info).get("format")
    return {"instruction_column": column, "data_format": data_format, "lora_args": lora_args}


def _is_path(value: str, folder: str) -> bool:
    """Whether a recorded name is a path of the machine that wrote it (absolute, `~`, found here relative to the
    adapter folder or the working folder, or not shaped like a Hub id) rather than a Hub id."""
    return os.path.exists(os.path.join(folder, value)) or is_local_path(value)


def published_lora_args(lora_args: Dict[str, Any], folder: str, base_model: str,
                        dataset_repo: Optional[str] = None) -> Dict[str, Any]:
    """`lora_args.json` as a push publishes it, naming no path of the training machine: a local base model (and a
    tokenizer that was the base's) becomes `base_model`, the Hub id the published adapter names; a local data
    folder becomes `dataset_repo` when given, else the folder's name; any other absolute path its last part. Hub ids
    stay as recorded."""
    published = dict(lora_args)
    model = lora_args.get("model_name_or_path")
    for key, value in lora_args.items():
        if not isinstance(value, str) or not value:
            continue
        if key in LORA_PATH_KEYS and not _is_path(value, folder):
            continue  # a Hub id
        if key not in LORA_PATH_KEYS and not (os.path.isabs(value) or value.startswith("~")):
            continue
        if key == "model_name_or_path" or (key == "tokenizer_name_or_path" and value == model):
            published[key] = base_model
        elif key == "data_dir" and dataset_repo:
            published[key] = dataset_repo
        else:
            published[key] = os.path.basename(os.path.normpath(os.path.expanduser(value)))
    return published


METRIC_KEYS = tuple(key for key, _, _ in MODEL_METRICS)


def check_metrics(metrics_file: str, folder: str, eval_split: Optional[str]) -> Dict[str, Any]:
    """Read a `metrics.json` of `scripts/evaluate.py` for the card of the checkpoint in `folder`, refusing one that
    is not such a file, that contradicts `eval_split`, or whose `manifest.json` (written beside it) records another
    model than the weights in `folder`. Returns the metrics with `split` set."""
    metrics = read_json(metrics_file)
    if not isinstance(metrics, dict):
        raise IncompleteFolderError(f"{metrics_file} is not a metrics.json of scripts/evaluate.py (not a JSON object)")
    missing = [k for k in ("samples",) if not isinstance(metrics.get(k), int) or metrics[k] <= 0]
    numbers = {k: metrics[k] for k in METRIC_KEYS if metrics.get(k) is not None}
    bad = [k for k, v in numbers.items() if not isinstance(v, (int, float)) or not math.isfinite(v)]
    if missing or not numbers or bad:
        what = (["a positive sample count (samples)"] if missing else []) + \
               ([f"any of {', '.join(METRIC_KEYS)}"] if not numbers else []) + [f"a finite number in {k}" for k in bad]
        raise IncompleteFolderError(f"{metrics_file} is not a metrics.json of scripts/evaluate.py: it lacks "
                                    + "; ".join(what))
    split = _recorded_or_given(metrics.get("split"), eval_split, "--eval_split", metrics_file, "it is on the {} split",
                               f"{metrics_file} does not record its split: pass --eval_split")
    manifest_path = os.path.join(os.path.dirname(os.path.abspath(metrics_file)), "manifest.json")
    if not os.path.exists(manifest_path):
        raise IncompleteFolderError(f"{metrics_file} has no manifest.json beside it, so nothing says which model it "
                                    f"measured: evaluate {folder} with scripts/evaluate.py (it writes both)")
    manifest = read_json(manifest_path)
    if manifest.get("max_samples") is not None:
        raise IncompleteFolderError(
            f"{metrics_file} covers only the first {manifest['max_samples']} samples of the {split} split "
            "(--max_samples): evaluate the whole split to publish results")
    expected = manifest.get("model_fingerprint")
    actual = folder_fingerprint(folder, manifest.get("dtype"), manifest.get("use_situation"))
    if expected != actual:
        raise IncompleteFolderError(
            f"{metrics_file} measured another model: {manifest_path} records model_fingerprint {expected}, the "
            f"weights and config in {folder} have {actual}. Evaluate this folder: python scripts/evaluate.py "
            f"--model_name_or_path {folder} --split {split} --output_dir ...")
    data = str(manifest.get("data") or "")
    bundled = os.path.normpath(data).endswith(os.path.join("modeling_iamm", "sample_data"))
    return dict(metrics, split=split, generation=metrics.get("generation") or manifest.get("generation") or {},
                data="bundled sample" if bundled else "EmpatheticDialogues")


def folder_fingerprint(folder: str, dtype: Optional[str] = None, use_situation: Optional[bool] = None) -> str:
    """`modeling_iamm.evaluation.model_fingerprint` of the checkpoint in `folder`, loaded in `dtype` (as recorded in
    an evaluation's manifest, e.g. `"torch.bfloat16"`; default float32) and with `use_situation` set as the
    evaluation set it (`scripts/evaluate.py --use_situation`)."""
    import torch

    from modeling_iamm import IAMMForConditionalGeneration
    from modeling_iamm.evaluation import model_fingerprint

    torch_dtype = getattr(torch, str(dtype or "torch.float32").replace("torch.", ""), torch.float32)
    overrides = {} if use_situation is None else {"use_situation": bool(use_situation)}  # as evaluate.py loads it
    model = IAMMForConditionalGeneration.from_pretrained(folder, dtype=torch_dtype, **overrides)
    return model_fingerprint(model)



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


def dataset_columns(folder: str) -> List[Tuple[str, str]]:
    """`(name, type)` of each column of the dataset in `folder`, from the first split's parquet schema, checked to be
    the same in every split."""
    import pyarrow.parquet as pq

    schemas = {}
    for path in sorted(glob.glob(os.path.join(folder, "data", "*.parquet"))):
        schemas[os.path.relpath(path, folder)] = [(f.name, str(f.type)) for f in pq.read_schema(path)]
    first, columns = next(iter(schemas.items()))
    for path, other in schemas.items():
        if [n for n, _ in other] != [n for n, _ in columns]:
            raise IncompleteFolderError(f"{folder}: {path} has other columns than {first} "
                                        f"({[n for n, _ in other]} vs {[n for n, _ in columns]})")
    return columns


def stage_model(folder: str, staging: str, config: Dict[str, Any]) -> Dict[str, Any]:
    """Copy a checkpoint's publishable files into `staging` (:func:`copy_files`), adding the pipeline's remote code
    (and its `custom_pipelines` entry) when the folder predates it. Returns the config as staged."""
    from modeling_iamm.pipeline_iamm import CUSTOM_PIPELINES, pipeline_files

    weights = [w for w in MODEL_WEIGHTS if os.path.exists(os.path.join(folder, w))]
    if "model.safetensors.index.json" in weights:
        index = read_json(os.path.join(folder, "model.safetensors.index.json"))
        weights += sorted(set(index.get("weight_map", {}).values()))
    copy_files(folder, staging, weights + list(TOKENIZER_FILES) + list(MODEL_EXTRA_FILES)
               + remote_code_files(folder, config))
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
        write_json(os.path.join(staging, "config.json"), config)
    return config


def stage_adapter(folder: str, staging: str, base_model: Optional[str] = None,
                  dataset_repo: Optional[str] = None) -> None:
    """Copy an adapter's publishable files (adapter, tokenizer, chat template, `lora_args.json`) into `staging`;
    with `base_model`, the staged `adapter_config.json` names that Hub id (so `AutoPeftModel` finds the base), and
    the staged `lora_args.json` names no path of this machine (:func:`published_lora_args`)."""
    extra = [os.path.basename(p) for p in glob.glob(os.path.join(folder, "*"))
             if os.path.basename(p) in TOKENIZER_FILES or os.path.basename(p).endswith((".model", ".jinja"))
             or os.path.basename(p) in ("train_summary.json", "chat_template.json", "lora_args.json")]
    copy_files(folder, staging, list(ADAPTER_FILES) + sorted(extra))
    if not base_model:
        return
    path = os.path.join(staging, "adapter_config.json")
    config = read_json(path)
    if config.get("base_model_name_or_path") != base_model:
        config["base_model_name_or_path"] = base_model
        write_json(path, config)
    path = os.path.join(staging, "lora_args.json")
    if os.path.exists(path):
        lora_args = read_json(path)
        published = published_lora_args(lora_args, folder, base_model, dataset_repo)
        if published != lora_args:
            write_json(path, published)


def write_json(path: str, value: Dict[str, Any]) -> None:
    """Write a JSON file as the staged files are written (sorted keys, indented, a final newline)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def stage_dataset(folder: str, staging: str) -> Optional[Dict[str, Any]]:
    """Copy the parquet splits (and build_info.json) into `staging`; return build_info if present. The staged
    build_info.json names local folders (the IAMM checkpoint, the ED copy) by their last part only."""
    names = [f"data/{os.path.basename(p)}" for p in glob.glob(os.path.join(folder, "data", "*.parquet"))]
    copy_files(folder, staging, sorted(names) + ["build_info.json"])
    path = os.path.join(staging, "build_info.json")
    if not os.path.exists(path):
        return None
    info = read_json(path)
    published = dict(info)
    model = info.get("model")
    if isinstance(model, str) and model and (info.get("model_source") == "local" if info.get("model_source")
                                              else is_local_path(model)):
        published["model"] = os.path.basename(os.path.normpath(model))
    data = info.get("data")
    if isinstance(data, dict):
        published["data"] = {split: os.path.basename(str(p)) for split, p in data.items()}
    elif isinstance(data, str) and info.get("data_source") == "local":
        published["data"] = os.path.basename(os.path.normpath(data))
    if published != info:
        write_json(path, published)
    return info
