"""Run a trained IAMM over ED samples and keep, per listener turn, its associated words with their weights.

Only the encoder runs (`model.get_encoder()`: encoders, iterative association, emotion heads); nothing is generated.
Each sample's associations (`modeling_iamm.modeling_iamm.decode_associations`) are reduced to its ranked dialogue
words (:func:`iamm.llm.instructions.aggregate_word_weights`) and IAMM's predicted emotion, and cached as one JSONL
line per sample, keyed by `id` (`"<conv_id>#<turn>"`), written and fsynced as soon as its batch is done:

    {"__header__": {"format": 1, "aggregation": 1, "model_fingerprint": "...", "dtype": "torch.float32", ...}}
    {"id": "hit:0_conv:1#1", "input_sha": "...", "iamm_emotion": "afraid", "words": [["scared", 0.886], ...]}

A killed run continues where it stopped (finished samples are read back, not recomputed). A cache written by
another checkpoint (a hash of its weights and config), tokenizer, dtype, knowledge setting, length limits or
aggregation rule is refused, and so is a cached sample whose dialogue text has changed. Samples are batched in
order of length (fewer padded positions), so the cache's line order is not the data's.

:func:`build_instruction_data` runs this per split and turns the cached words into the instruction data set.
"""

import hashlib
import json
import logging
import os
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from modeling_iamm import IAMMDataCollator
from modeling_iamm.modeling_iamm import IAMM_ENCODER_INPUTS, decode_associations
from modeling_iamm.evaluation import model_fingerprint
from modeling_iamm.tokenization import SPECIAL_TOKENS, tokenizer_fingerprint

from .instructions import (
    INSTRUCTION_FEATURES,
    InstructionConfig,
    aggregate_word_weights,
    instruction_row,
    parquet_path,
    sample_id,
    save_instruction_split,
)
from .records import open_records

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
AGGREGATION_VERSION = 2  # (2: punctuation kept, filtered per format) bump when aggregate_word_weights changes what it keeps
COMPARED_HEADER_KEYS = ("format", "aggregation", "model_fingerprint", "tokenizer_fingerprint", "dtype", "knowledge",
                        "length_limits")


BUILD_INFO = "build_info.json"
"""The settings of an instruction data set, the IAMM checkpoint that made its associations, and its counts."""


def input_sha(sample: Dict[str, Any]) -> str:
    """A hash of what the model reads of a sample (situation, context, roles): a cached sample must match it."""
    payload = json.dumps([sample["situation"], list(sample["context"]), list(sample["context_roles"])],
                         ensure_ascii=False)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()


@torch.no_grad()
def extract_word_weights(model, tokenizer: PreTrainedTokenizerBase, samples: Sequence[Dict[str, Any]],
                         collator: Optional[IAMMDataCollator] = None) -> List[Dict[str, Any]]:
    """For one batch of samples: `{"iamm_emotion": label, "words": [[word, weight], ...]}` each (encoder only)."""
    collator = collator or IAMMDataCollator(tokenizer, relation_names=model.config.relation_names)
    batch = collator(list(samples))
    device = next(model.parameters()).device
    tensors = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    model.eval()
    out = model.get_encoder()(**{k: v for k, v in tensors.items() if k in IAMM_ENCODER_INPUTS},
                              output_associations=True)
    associations = decode_associations(out.associations, tensors, tokenizer, model.config)
    id2label = model.config.id2label
    special = set(SPECIAL_TOKENS) | set(getattr(tokenizer, "all_special_tokens", []))
    return [
        {"iamm_emotion": id2label[int(label)],
         "words": [[w, round(x, 4)] for w, x in aggregate_word_weights(assoc, special)]}
        for label, assoc in zip(out.emotion_logits.argmax(-1).tolist(), associations)
    ]


def cache_header(model, tokenizer: PreTrainedTokenizerBase, collator: IAMMDataCollator, with_knowledge: bool,
                 model_name: str = "") -> Dict[str, Any]:
    """The header of an association cache: what produced it (the compared keys are :data:`COMPARED_HEADER_KEYS`)."""
    return json.loads(json.dumps({  # as read back from disk
        "format": CACHE_FORMAT,
        "aggregation": AGGREGATION_VERSION,
        "model_fingerprint": model_fingerprint(model),
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "dtype": str(next(model.parameters()).dtype),
        "knowledge": bool(with_knowledge),
        "length_limits": collator.length_limits,
        "model": model_name,  # informational only
    }))


def cache_associations(
    model,
    tokenizer: PreTrainedTokenizerBase,
    samples,
    cache_path: str,
    batch_size: int = 64,
    overwrite: bool = False,
    model_name: str = "",
    progress: bool = True,
    on_batch: Optional[Callable[[int], None]] = None,
    collator: Optional[IAMMDataCollator] = None,
) -> Dict[str, Dict[str, Any]]:
    """Make sure `cache_path` holds the associated words of every sample; return them by sample id.

    Args:
        model: a trained IAMM (`AutoModel.from_pretrained(path, trust_remote_code=True)`), on its device.
        tokenizer: its tokenizer.
        samples: listener-turn samples (a `datasets.Dataset` or list of dicts from `modeling_iamm.build_samples`,
            optionally with knowledge attached).
        cache_path: the JSONL cache (created, or continued if it was made with the same checkpoint and settings).
        batch_size: samples per encoder call.
        overwrite: discard an existing cache first.
        model_name: the model's path or Hub id, written into the header (not compared).
        on_batch: called with the number of samples just written, after each batch (progress hooks, tests).
        collator: the collator (its length limits are part of the header); default: no length limits. Pass the
            limits the model was trained with (`DataArguments.length_limits(model.config.length_limits)`).

    Raises:
        ValueError: the cache was made with another checkpoint/settings, or a cached sample's text has changed.
    """
    rows = samples if isinstance(samples, list) else [samples[i] for i in range(len(samples))]
    with_knowledge = bool(rows) and ("situation_knowledge" in rows[0] or "situation_knowledge_words" in rows[0])
    collator = collator or IAMMDataCollator(tokenizer, relation_names=model.config.relation_names)
    header = cache_header(model, tokenizer, collator, with_knowledge, model_name)
    done_records, writer = open_records(cache_path, header, COMPARED_HEADER_KEYS, overwrite, what="IAMM associations")
    done = {r["id"]: r for r in done_records}
    with writer:
        pending = []
        for index, row in enumerate(rows):
            key = sample_id(row)
            cached = done.get(key)
            if cached is None:
                pending.append(index)
            elif cached["input_sha"] != input_sha(row):
                raise ValueError(f"{cache_path}: sample {key} was cached for another dialogue text (the data changed); "
                                 "use another output location or --overwrite_output true")
        if done:
            logger.info("%s: %d of %d samples already cached; computing %d", cache_path, len(rows) - len(pending),
                        len(rows), len(pending))
        pending.sort(key=lambda i: len(rows[i]["situation"]) + sum(len(u) for u in rows[i]["context"]))
        bar = tqdm(total=len(pending), desc="IAMM associations", unit="sample", disable=not progress)
        for start in range(0, len(pending), batch_size):
            chunk = [rows[i] for i in pending[start:start + batch_size]]
            for row, result in zip(chunk, extract_word_weights(model, tokenizer, chunk, collator)):
                record = {"id": sample_id(row), "input_sha": input_sha(row), **result}
                writer.write(record)
                done[record["id"]] = record
            bar.update(len(chunk))
            if on_batch is not None:
                on_batch(len(chunk))
        bar.close()
    return {sample_id(row): done[sample_id(row)] for row in rows}


def build_instruction_data(
    model,
    tokenizer: PreTrainedTokenizerBase,
    samples: Dict[str, Any],
    output_dir: str,
    config: Optional[InstructionConfig] = None,
    batch_size: int = 64,
    overwrite: bool = False,
    model_name: str = "",
    progress: bool = True,
    on_batch: Optional[Callable[[int], None]] = None,
    collator: Optional[IAMMDataCollator] = None,
    data_info: Optional[Mapping[str, Any]] = None,
) -> Dict[str, str]:
    """Associated words (cached, resumable) -> instruction rows -> one parquet file per split; returns the paths.

    `samples` maps split names to listener-turn samples. In `output_dir`: `associations/<split>.jsonl` (the caches),
    `data/<split>-00000-of-00001.parquet` (:data:`INSTRUCTION_FEATURES`, load with
    :func:`iamm.llm.instructions.load_instruction_dataset`) and `build_info.json` (the settings, the IAMM
    checkpoint, `data_info` (where the dialogues came from: `DataArguments.source_record`) and the counts per split;
    the dataset card reads it). A folder built with other word-split settings is refused unless `overwrite` (which
    also discards the caches).
    """
    config = config or InstructionConfig()
    settings_path = os.path.join(output_dir, BUILD_INFO)
    settings = asdict(config)
    if overwrite:
        for split in samples:
            for path in (os.path.join(output_dir, "associations", f"{split}.jsonl"), parquet_path(output_dir, split)):
                if os.path.exists(path):
                    os.remove(path)
    elif os.path.exists(settings_path):
        with open(settings_path) as f:
            old = json.load(f)
        differ = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if differ:
            raise ValueError(f"{output_dir} was built with other settings "
                             f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in differ.items())}); use "
                             "another --output_dir or pass --overwrite_output true")
    os.makedirs(output_dir, exist_ok=True)
    counts: Dict[str, int] = {}
    if os.path.exists(settings_path) and not overwrite:
        with open(settings_path) as f:
            counts = json.load(f).get("counts", {})

    def write_build_info():
        with open(settings_path + ".tmp", "w") as f:
            # "model_source" tells a card whether `model` is a Hub id or a folder of this machine
            source = None if not model_name else ("local" if os.path.exists(model_name) else "hub")
            json.dump({**settings, "model": model_name, "model_source": source, **(data_info or {}), "counts": counts},
                      f, indent=2)
        os.replace(settings_path + ".tmp", settings_path)

    write_build_info()
    paths = {}
    for split, split_samples in samples.items():
        rows = split_samples if isinstance(split_samples, list) else [split_samples[i] for i in range(len(split_samples))]
        cached = cache_associations(model, tokenizer, rows, os.path.join(output_dir, "associations", f"{split}.jsonl"),
                                    batch_size, model_name=model_name, progress=progress, on_batch=on_batch,
                                    collator=collator)
        instructions = [instruction_row(row, cached[sample_id(row)]["words"], cached[sample_id(row)]["iamm_emotion"],
                                        config) for row in rows]
        paths[split] = save_instruction_split(Dataset.from_list(instructions, features=INSTRUCTION_FEATURES),
                                              output_dir, split)
        logger.info("%s: %d instructions -> %s", split, len(instructions), paths[split])
        counts[split] = len(instructions)
        write_build_info()
    return paths
