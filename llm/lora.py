"""LoRA / QLoRA fine-tuning of a causal LM on IAMM_large's instruction data, and batched generation from it.

The instruction data (`scripts/build_instructions.py`) has one row per listener turn; a row becomes
`messages + [{"role": "assistant", "content": answer}]` rendered with the tokenizer's chat template. Only the answer
tokens and the end-of-text token are trained (prompt labels are -100), as ChatGLM3's own fine-tuning recipe does.
The base model is any causal LM (a Hub id or folder, e.g. Qwen, Llama, a ChatGLM3 folder converted with
`scripts/convert_chatglm3.py`) or a raw ChatGLM3 folder (`model_type: chatglm`, loaded through `load_chatglm3`).

Defaults follow the authors' IAMM_large run (their `examples/ed.sh` and glmtuner's defaults, which it kept): LoRA
r=8, alpha 32, dropout 0.1 on the attention's query/key/value projection, lr 1e-3 with a cosine schedule and no
warm-up, batch 12 x 2 accumulation steps, 3 epochs, base model in 8 bits when CUDA is available.

ChatGLM3 computes query, key and value with ONE fused linear layer (`query_key_value`, hidden -> q + k + v rows), and
their run put one rank-8 adapter on it: an input projection `A` (r x hidden) and an output projection `B`
((q + k + v) x r), 69,632 parameters per layer and 1,949,696 in ChatGLM3-6B's 28 layers. The native `glm`
architecture splits the layer into `q_proj`, `k_proj` and `v_proj`; three independent adapters there would be a
rank-24 update with 135,168 parameters per layer. `qkv_adapter="fused"` (the default for data built with `--format
authors`) reproduces the fused adapter on the split layers: the three adapters share one `A` (the same parameter)
and keep their own `B` blocks, so `[B_q; B_k; B_v] A` is exactly the fused update, with the fused layer's parameter
count (:func:`share_qkv_lora_input`). One difference remains, in training only: dropout draws its mask separately
for q, k and v, where the fused layer draws one for all three (the same regulariser, not the same random numbers).
`qkv_adapter="separate"` keeps three independent adapters (the default for `--format iamm` data). A saved fused
adapter holds three equal copies of `A` (safetensors stores no shared tensors) and loads with plain
`PeftModel.from_pretrained`; an adapter trained on ChatGLM3's own layout converts with
:func:`iamm.llm.chatglm3.convert_chatglm3_adapter`.
"""

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from transformers import TrainingArguments

from modeling_iamm.cli import check_min
from modeling_iamm.folders import LORA_PATH_KEYS, recorded_location
from modeling_iamm.inference import check_generate_kwargs

from .chatglm3 import chatglm3_stop_token_ids, is_chatglm3_checkpoint, load_chatglm3, load_chatglm3_tokenizer
from .instructions import glmtuner_source, load_instruction_dataset
from .records import RecordWriter, open_records

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
INSTRUCTION_COLUMNS = ("messages", "plain_messages")
_QKV_MODULES = {"glm": ["q_proj", "k_proj", "v_proj"], "glm4": ["q_proj", "k_proj", "v_proj"],
                "chatglm": ["query_key_value"]}
QKV_ADAPTERS = ("fused", "separate")
"""`fused`: one rank-r adapter on the query/key/value projection as a whole (one input projection shared by q, k and
v); `separate`: one rank-r adapter per projection."""


@dataclass
class ModelLoadingArguments:
    """How to load the base model.

    Args:
        model_name_or_path: Hub id or folder of a causal LM; a raw ChatGLM3 folder (`model_type: chatglm`) is
            converted on the fly (`load_chatglm3`).
        tokenizer_name_or_path: tokenizer to use (default: the model's).
        load_in_8bit: bitsandbytes 8-bit base (default: on when CUDA is available and 4-bit is off).
        load_in_4bit: QLoRA: bitsandbytes 4-bit NF4 base with double quantisation.
        bnb_4bit_compute_dtype: compute dtype of 4-bit layers.
        torch_dtype: dtype of the non-quantised weights.
        trust_remote_code: allow model code from the checkpoint (not needed for ChatGLM3 here).
    """

    model_name_or_path: str = field(metadata={"help": "Hub id or folder of a causal LM, or a raw ChatGLM3 folder"})
    tokenizer_name_or_path: Optional[str] = field(default=None, metadata={"help": "Default: the model's"})
    load_in_8bit: Optional[bool] = field(default=None, metadata={
        "help": "Base in 8 bits (bitsandbytes); default: true when CUDA is available and 4-bit is off"})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: base in 4-bit NF4 with double quantisation"})
    bnb_4bit_compute_dtype: str = field(default="bfloat16", metadata={
        "help": "Compute dtype of the 4-bit layers: bfloat16, float16 or float32"})
    torch_dtype: str = field(default="auto", metadata={
        "help": "dtype of the non-quantised weights: auto, bfloat16, float16 or float32"})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code shipped with the checkpoint"})

    def __post_init__(self):
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("--load_in_4bit and --load_in_8bit exclude each other: pick one")
        if self.load_in_8bit is None:
            self.load_in_8bit = torch.cuda.is_available() and not self.load_in_4bit
        for name in ("bnb_4bit_compute_dtype", "torch_dtype"):
            value = getattr(self, name)
            if value not in ("auto", "bfloat16", "float16", "float32") or (name == "bnb_4bit_compute_dtype"
                                                                          and value == "auto"):
                raise ValueError(f"--{name} {value!r}: choose bfloat16, float16 or float32")


@dataclass
class LoraArguments(ModelLoadingArguments):
    """Model, data and adapter options of `train_lora.py` (training options are `LoraTrainingArguments`).

    Args:
        data_dir: folder of the instruction dataset (`data/{split}.parquet` or `data/{split}-*.parquet`).
        instruction_column: `messages` (with associated words) or `plain_messages` (without).
        train_split, eval_split: split names.
        max_length: longest training sequence; longer rows lose prompt tokens from the left, the answer is kept
            (`iamm` format data).
        max_source_length, max_target_length: the authors' format (data built with `--format authors`): prompt and
            answer lengths as their glmtuner run had them (512 each), the prompt cut on the right.
        max_train_samples: use only the first N training rows (smoke runs).
        lora_r, lora_alpha, lora_dropout: LoRA rank, scaling numerator and dropout.
        target_modules: comma-separated module names (default: the attention's q/k/v projections).
        qkv_adapter: `fused` (one adapter on q/k/v together, one shared input projection: the authors' run) or
            `separate` (one adapter per projection); default: `fused` for authors-format data, else `separate`.
        merge: also write base + adapter merged into one model under `output_dir/merged`.
    """

    data_dir: str = field(default="", metadata={"help": "Instruction dataset folder (data/{split}.parquet or data/{split}-*.parquet)"})
    instruction_column: str = field(default="messages", metadata={
        "help": "messages (with associated words) or plain_messages (without)"})
    train_split: str = field(default="train", metadata={"help": "Training split"})
    eval_split: str = field(default="valid", metadata={"help": "Split evaluated when --eval_strategy is not no"})
    max_length: int = field(default=1024, metadata={
        "help": "Longest training sequence in tokens; the prompt is cut from the left, the answer kept (iamm format)"})
    max_source_length: int = field(default=512, metadata={
        "help": "Authors' format: longest prompt in tokens, cut on the right (glmtuner's default, their run)"})
    max_target_length: int = field(default=512, metadata={"help": "Authors' format: longest answer in tokens"})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N training rows"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scaling = alpha / r)"})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input"})
    target_modules: Optional[str] = field(default=None, metadata={
        "help": "Comma-separated modules to adapt; default the attention's query/key/value projections"})
    qkv_adapter: Optional[str] = field(default=None, metadata={
        "help": "fused: one rank-r adapter on query/key/value together (one input projection shared by q, k and v, "
                "as on ChatGLM3's fused query_key_value: the authors' run); separate: one adapter per projection. "
                "Default: fused for --format authors data, separate otherwise"})
    merge: bool = field(default=False, metadata={"help": "Also save base + adapter merged (output_dir/merged)"})

    def __post_init__(self):
        super().__post_init__()
        if not self.data_dir:
            raise ValueError("--data_dir is required: the folder written by scripts/build_instructions.py")
        if self.instruction_column not in INSTRUCTION_COLUMNS:
            raise ValueError(f"--instruction_column {self.instruction_column!r}: choose one of {INSTRUCTION_COLUMNS}")
        if self.max_length < 8:
            raise ValueError(f"--max_length {self.max_length} is too small")
        if self.lora_r < 1:
            raise ValueError(f"--lora_r {self.lora_r} must be at least 1")
        if self.qkv_adapter is not None and self.qkv_adapter not in QKV_ADAPTERS:
            raise ValueError(f"--qkv_adapter {self.qkv_adapter!r}: choose one of {QKV_ADAPTERS}")


@dataclass
class LoraTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the authors' IAMM_large schedule as defaults (lr 1e-3, cosine, no warm-up, batch
    12 x 2 accumulation, 3 epochs)."""

    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (authors: 1e-3)"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Schedule (authors: cosine)"})
    warmup_steps: float = field(default=0, metadata={"help": "Warm-up steps (authors: none)"})
    per_device_train_batch_size: int = field(default=12, metadata={"help": "Batch per device (authors: 12)"})
    gradient_accumulation_steps: int = field(default=2, metadata={"help": "Accumulation steps (authors: 2)"})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs (authors: 3)"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the collator's columns"})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps"})
    save_steps: float = field(default=1000, metadata={"help": "Save a checkpoint every N steps (authors: 1000)"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Start over in a non-empty output_dir (its checkpoints are replaced)"})


# ---------------------------------------------------------------------------------------------------------- data
def load_instruction_splits(data_dir: str, splits: Sequence[str], columns: Sequence[str] = ("id", "answer")):
    """Splits of the instruction data set in `data_dir` (`data/<split>.parquet` or Hub-style shards), with `columns`."""
    return load_instruction_dataset(data_dir, splits, columns=columns)


def load_training_data(lora_args: "LoraArguments", training_args: TrainingArguments):
    """The splits `train_lora` reads (train, and eval when evaluation is on) with the columns it needs; raises
    `FileNotFoundError`/`ValueError` (one line, naming the folder) when the data set or a split is missing."""
    splits = [lora_args.train_split] + ([lora_args.eval_split] if training_args.eval_strategy != "no" else [])
    return load_instruction_splits(lora_args.data_dir, splits, ("id", lora_args.instruction_column, "answer", "format"))


def _render_ids(tokenizer, messages: List[Dict[str, str]], add_generation_prompt: bool) -> List[int]:
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


AUTHORS_MAX_SOURCE_LENGTH = 512
AUTHORS_MAX_TARGET_LENGTH = 512
"""glmtuner's defaults, which the authors' runs kept: prompt and answer each at most 512 tokens, specials included."""


def _glmtuner_prefix(tokenizer) -> List[int]:
    prefix = tokenizer.convert_tokens_to_ids(["[gMASK]", "sop"])
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in prefix:
        raise ValueError("the authors' format needs ChatGLM's [gMASK] and sop tokens, which this tokenizer lacks")
    return prefix


def authors_source_ids(tokenizer, messages: List[Dict[str, str]], max_source_length: int = AUTHORS_MAX_SOURCE_LENGTH
                       ) -> List[int]:
    """The authors' glmtuner prompt: `[gMASK] sop` + the tokens of `[Round 1]\\n\\n问：<query>\\n\\n答：` cut on the RIGHT
    to `max_source_length - 2` (a long prompt loses the end of its word lists and the answer cue, as theirs did)."""
    source = glmtuner_source("".join(m["content"] for m in messages))
    ids = tokenizer(source, add_special_tokens=False)["input_ids"]
    return _glmtuner_prefix(tokenizer) + ids[: max_source_length - 2]


def prompt_ids(tokenizer, messages: List[Dict[str, str]], max_length: Optional[int] = None,
               format: str = "iamm") -> List[int]:
    """The chat prompt ending in the assistant's turn; cut from the left to `max_length` tokens if given (the
    authors' format: :func:`authors_source_ids`, cut on the right, `max_length` default 512)."""
    if format == "authors":
        return authors_source_ids(tokenizer, messages, max_length or AUTHORS_MAX_SOURCE_LENGTH)
    ids = _render_ids(tokenizer, messages, add_generation_prompt=True)
    return ids[-max_length:] if max_length else ids


def encode_authors_example(tokenizer, messages: List[Dict[str, str]], answer: str,
                           max_source_length: int = AUTHORS_MAX_SOURCE_LENGTH,
                           max_target_length: int = AUTHORS_MAX_TARGET_LENGTH) -> Dict[str, Any]:
    """A training row as glmtuner built the authors' ones: `[gMASK] sop` + source (cut on the right to
    `max_source_length - 2`) + answer tokens (cut to `max_target_length - 1`) + eos; labels -100 on the prompt."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; set one so that the model learns to stop")
    full_source = glmtuner_source("".join(m["content"] for m in messages))
    n_source = len(tokenizer(full_source, add_special_tokens=False)["input_ids"])
    prompt = authors_source_ids(tokenizer, messages, max_source_length)
    target = tokenizer(answer, add_special_tokens=False)["input_ids"][: max_target_length - 1] + [tokenizer.eos_token_id]
    return {"input_ids": prompt + target, "labels": [IGNORE_INDEX] * len(prompt) + target,
            "truncated": n_source > max_source_length - 2}


def encode_training_example(tokenizer, messages: List[Dict[str, str]], answer: str, max_length: int) -> Dict[str, Any]:
    """Token ids and labels of one instruction row: labels are -100 on the prompt, the answer ids then eos.

    The answer tokens are what the full chat (with the assistant's answer) adds after the generation prompt, so the
    training input equals the inference prompt followed by what the model must write. Too long: prompt tokens are
    dropped from the left (`truncated` True); an answer alone longer than `max_length` is cut on the right.
    """
    prompt = _render_ids(tokenizer, messages, add_generation_prompt=True)
    full = _render_ids(tokenizer, list(messages) + [{"role": "assistant", "content": answer}],
                       add_generation_prompt=False)
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template renders the conversation with the answer differently from the prompt "
                         "it gives for generation; LoRA training needs a template whose prompt is a prefix")
    target = full[len(prompt):]
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; set one so that the model learns to stop")
    if not target or target[-1] != tokenizer.eos_token_id:
        target = target + [tokenizer.eos_token_id]
    truncated = len(prompt) + len(target) > max_length
    if truncated:
        target = target[:max_length - 1]
        prompt = prompt[-(max_length - len(target)):]
    input_ids = prompt + target
    return {"input_ids": input_ids, "labels": [IGNORE_INDEX] * len(prompt) + target, "truncated": truncated}


def instruction_format(dataset) -> str:
    """The instruction format of a split (its `format` column): `authors` or `iamm`; rows of both are refused."""
    formats = set(dataset["format"]) if "format" in dataset.column_names else {"iamm"}
    if len(formats) > 1:
        raise ValueError(f"the instruction rows mix formats {sorted(formats)}; build one data set per format")
    return "authors" if formats == {"authors"} else "iamm"


def build_training_dataset(dataset, tokenizer, instruction_column: str, max_length: int,
                           max_source_length: int = AUTHORS_MAX_SOURCE_LENGTH,
                           max_target_length: int = AUTHORS_MAX_TARGET_LENGTH):
    """Tokenise instruction rows (`instruction_column` + `answer`) into `input_ids`/`labels`; logs truncations.

    Rows of the authors' format (`format` column) are encoded as glmtuner did (:func:`encode_authors_example`,
    `max_source_length`/`max_target_length`), the others with the tokenizer's chat template (`max_length`).
    """
    for column in (instruction_column, "answer"):
        if column not in dataset.column_names:
            raise ValueError(f"instruction dataset has no {column!r} column (has {dataset.column_names})")
    data_format = instruction_format(dataset)

    def encode(row):
        if row.get("format") == "authors":
            return encode_authors_example(tokenizer, row[instruction_column], row["answer"], max_source_length,
                                          max_target_length)
        return encode_training_example(tokenizer, row[instruction_column], row["answer"], max_length)

    encoded = dataset.map(encode, remove_columns=dataset.column_names, desc="tokenising")
    n_truncated = sum(encoded["truncated"])
    if data_format == "authors":
        logger.info("%d of %d prompts longer than max_source_length=%d lost their end (the authors' right cut)",
                    n_truncated, len(encoded), max_source_length)
    else:
        logger.info("%d of %d rows longer than max_length=%d lost prompt tokens from the left", n_truncated,
                    len(encoded), max_length)
    return encoded.remove_columns("truncated")


@dataclass
class CausalLMCollator:
    """Right-pads `input_ids` with the pad id and `labels` with -100; builds the attention mask."""

    pad_token_id: int

    def __call__(self, features: List[Dict[str, List[int]]]) -> Dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# --------------------------------------------------------------------------------------------------------- model
def _dtype(name: str):
    return "auto" if name == "auto" else getattr(torch, name)


def quantization_config(args: ModelLoadingArguments):
    """`BitsAndBytesConfig` for `--load_in_4bit` (NF4, double quant) or `--load_in_8bit`; None otherwise."""
    if not (args.load_in_4bit or args.load_in_8bit):
        return None
    from transformers import BitsAndBytesConfig

    if args.load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=_dtype(args.bnb_4bit_compute_dtype))
    return BitsAndBytesConfig(load_in_8bit=True)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """The model's tokenizer (ChatGLM3's built from `tokenizer.model` for a raw ChatGLM3 folder), with a pad token."""
    from transformers import AutoTokenizer

    if os.path.isdir(name_or_path) and is_chatglm3_checkpoint(name_or_path):
        tokenizer = load_chatglm3_tokenizer(name_or_path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ValueError(f"{name_or_path}: the tokenizer has no chat template; use a chat model's tokenizer")
    return tokenizer


def load_base_model(args: ModelLoadingArguments, quantize: bool = True, device_map: Any = None):
    """The base causal LM, quantised as `args` asks (unless `quantize` is False, e.g. for merging)."""
    from transformers import AutoModelForCausalLM

    qconfig = quantization_config(args) if quantize else None
    if qconfig is not None and device_map is None:
        device_map = {"": _local_device()}
    kwargs = dict(dtype=_dtype(args.torch_dtype), device_map=device_map, quantization_config=qconfig)
    if os.path.isdir(args.model_name_or_path) and is_chatglm3_checkpoint(args.model_name_or_path):
        return load_chatglm3(args.model_name_or_path, **kwargs)
    return AutoModelForCausalLM.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code,
                                                **kwargs)


def _local_device() -> Any:
    if torch.cuda.is_available():
        return int(os.environ.get("LOCAL_RANK", 0))
    return "cpu"


def default_target_modules(model) -> Optional[List[str]]:
    """The attention's query/key/value projections: `query_key_value` (ChatGLM), `q_proj,k_proj,v_proj` (glm and
    any model with those names), or None (peft's own default for the model type)."""
    model_type = getattr(model.config, "model_type", "")
    if model_type in _QKV_MODULES:
        return _QKV_MODULES[model_type]
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if {"q_proj", "k_proj", "v_proj"} <= names:
        return ["q_proj", "k_proj", "v_proj"]
    return None


def share_qkv_lora_input(model) -> int:
    """Make the LoRA adapters of every attention's `q_proj`, `k_proj` and `v_proj` share one input projection `A`.

    Afterwards `[B_q; B_k; B_v] A` is one rank-r update of the fused query/key/value matrix, as a LoRA on ChatGLM3's
    `query_key_value` (the shared `A` is one parameter: counted, optimised and updated once). Returns how many
    attention modules were tied; raises `ValueError` when some but not all of the three projections carry an adapter.
    """
    from peft.tuners.lora import LoraLayer

    tied = 0
    for name, module in model.named_modules():
        layers = [getattr(module, p, None) for p in ("q_proj", "k_proj", "v_proj")]
        adapted = [isinstance(layer, LoraLayer) for layer in layers]
        if not any(adapted):
            continue
        if not all(adapted):
            raise ValueError(f"{name}: a fused q/k/v adapter needs q_proj, k_proj and v_proj all adapted "
                             "(--target_modules), or --qkv_adapter separate")
        q, k, v = layers
        for adapter in q.lora_A:
            for other in (k, v):
                other.lora_A[adapter] = q.lora_A[adapter]
        tied += 1
    return tied


def resolve_qkv_adapter(args: LoraArguments, data_format: str) -> str:
    """`args.qkv_adapter`, or its default for data of `data_format`: `fused` for the authors' format (their run),
    `separate` otherwise; stored back into `args` (so that `lora_args.json` records it)."""
    if args.qkv_adapter is None:
        args.qkv_adapter = "fused" if data_format == "authors" else "separate"
    return args.qkv_adapter


def add_lora(model, args: LoraArguments, gradient_checkpointing: bool = False):
    """Wrap `model` with a LoRA adapter (after `prepare_model_for_kbit_training` for a quantised base); with
    `args.qkv_adapter == "fused"` the q/k/v adapters share their input projection (:func:`share_qkv_lora_input`)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = args.target_modules.split(",") if args.target_modules else default_target_modules(model)
    config = LoraConfig(task_type="CAUSAL_LM", r=args.lora_r, lora_alpha=args.lora_alpha,
                        lora_dropout=args.lora_dropout, target_modules=targets)
    model = get_peft_model(model, config)
    if args.qkv_adapter == "fused":
        share_qkv_lora_input(model)
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("LoRA on %s (%s q/k/v adapter): %d trainable of %d parameters", config.target_modules,
                args.qkv_adapter or "separate", trainable, total)
    return model


def merge_adapter(base_args: ModelLoadingArguments, adapter_dir: str, output_dir: str, tokenizer=None) -> str:
    """Reload the base unquantised, apply the adapter, merge and save one standard model folder."""
    from peft import PeftModel

    base = load_base_model(base_args, quantize=False)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    return output_dir


def train_lora(lora_args: LoraArguments, training_args: LoraTrainingArguments) -> Dict[str, Any]:
    """Fine-tune a LoRA adapter on the instruction data; saves adapter, tokenizer and `lora_args.json` in
    `training_args.output_dir` (and the merged model under `merged/` with `--merge`). `lora_args.json` names local
    models and data folders relative to the output folder, Hub ids as given. Resumable with
    `--resume_from_checkpoint`. Returns the training metrics."""
    from transformers import Trainer

    if training_args.gradient_checkpointing and training_args.gradient_checkpointing_kwargs is None:
        training_args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    tokenizer = load_tokenizer(lora_args.tokenizer_name_or_path or lora_args.model_name_or_path,
                               lora_args.trust_remote_code)
    do_eval = training_args.eval_strategy != "no"
    data = load_training_data(lora_args, training_args)
    train = data[lora_args.train_split]
    if lora_args.max_train_samples is not None:
        train = train.select(range(min(lora_args.max_train_samples, len(train))))
    with training_args.main_process_first(desc="tokenising"):
        lengths = (lora_args.max_length, lora_args.max_source_length, lora_args.max_target_length)
        train = build_training_dataset(train, tokenizer, lora_args.instruction_column, *lengths)
        evaluation = (build_training_dataset(data[lora_args.eval_split], tokenizer, lora_args.instruction_column,
                                             *lengths) if do_eval else None)
    resolve_qkv_adapter(lora_args, instruction_format(data[lora_args.train_split]))
    model = load_base_model(lora_args)
    model = add_lora(model, lora_args, training_args.gradient_checkpointing)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=evaluation,
                      data_collator=CausalLMCollator(tokenizer.pad_token_id), processing_class=tokenizer)
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "1", "yes"):
        resume = True
    result = trainer.train(resume_from_checkpoint=resume or None)
    trainer.save_model(training_args.output_dir)  # the adapter (and tokenizer), not the base
    if trainer.is_world_process_zero():
        record = asdict(lora_args)
        for key in LORA_PATH_KEYS:  # no absolute path of this machine
            if record[key]:
                record[key] = recorded_location(record[key], training_args.output_dir)
        with open(os.path.join(training_args.output_dir, "lora_args.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        if lora_args.merge:
            merge_adapter(lora_args, training_args.output_dir, os.path.join(training_args.output_dir, "merged"),
                          tokenizer)
    return result.metrics


# ---------------------------------------------------------------------------------------------------- generation
DECODING_PRESETS: Dict[str, Dict[str, Any]] = {
    "authors": {"do_sample": True, "top_p": 0.7, "temperature": 0.95, "top_k": 50,
                "max_new_tokens": AUTHORS_MAX_TARGET_LENGTH + 1},
    "greedy": {"do_sample": False, "top_p": 1.0, "temperature": 1.0, "top_k": 50, "max_new_tokens": 128},
}
"""Decoding defaults. `authors`: the IAMM_large authors' prediction run (glmtuner's `sft/workflow.py`: sampling with
top_p 0.7 and temperature 0.95, `max_new_tokens` = max_target_length + 1 = 513; top_k 50 is the transformers
default they ran with), in fp16 on a GPU: the settings behind the paper's Table 3. `greedy`: deterministic, 128 new
tokens."""


@dataclass
class GenerationArguments(ModelLoadingArguments):
    """Options of `generate_lora.py`.

    Args:
        adapter_dir: the LoRA adapter folder written by `train_lora.py` (None: the base model alone).
        data_dir, split, instruction_column: which instruction rows to answer (column default: the adapter's).
        output_file: predictions as JSONL lines `{"id", "output"}`, appended as batches finish, after a header line
            recording what produced them (`iamm.llm.records`).
        decoding: `authors` (their sampling, :data:`DECODING_PRESETS`; the default for authors-format data, and
            fp16 where CUDA is available unless `torch_dtype` says otherwise) or `greedy` (the default otherwise);
            `max_new_tokens`, `do_sample`, `temperature`, `top_p`, `top_k` left unset take the preset's value.
        batch_size, max_prompt_length, num_beams, seed: decoding. Batches are cut at fixed positions of the split
            and sampling is seeded per batch (from `seed` and the batch's number), so a resumed or extended run
            draws every answer as one uninterrupted run does (a batch that was partly answered is generated again
            whole, and only its missing rows are written).
        max_samples: answer only the first N rows.
    """

    adapter_dir: Optional[str] = field(default=None, metadata={"help": "LoRA adapter folder (train_lora.py output)"})
    data_dir: str = field(default="", metadata={"help": "Instruction dataset folder (data/{split}.parquet or data/{split}-*.parquet)"})
    split: str = field(default="test", metadata={"help": "Split to answer"})
    instruction_column: Optional[str] = field(default=None, metadata={
        "help": "messages or plain_messages; default: the column the adapter was trained on"})
    output_file: str = field(default="predictions.jsonl", metadata={"help": "JSONL of {id, output}"})
    batch_size: int = field(default=8, metadata={"help": "Rows per generate() call"})
    decoding: Optional[str] = field(default=None, metadata={
        "help": "authors (their sampling: top_p 0.7, temperature 0.95, 513 new tokens, fp16 on a GPU; default for "
                "--format authors data) or greedy (128 new tokens; default otherwise). Flags below override it"})
    max_new_tokens: Optional[int] = field(default=None, metadata={"help": "Longest reply (authors 513, greedy 128)"})
    max_prompt_length: Optional[int] = field(default=None, metadata={
        "help": "Prompts are cut to this length: from the left (default 1024), or for authors-format data on the "
                "right (default 512, as their run)"})
    do_sample: Optional[bool] = field(default=None, metadata={
        "help": "Sample instead of greedy/beam search (authors: true, greedy: false)"})
    num_beams: int = field(default=1, metadata={"help": "Beam width"})
    temperature: Optional[float] = field(default=None, metadata={"help": "Sampling temperature (authors 0.95)"})
    top_p: Optional[float] = field(default=None, metadata={"help": "Nucleus sampling mass (authors 0.7)"})
    top_k: Optional[int] = field(default=None, metadata={"help": "Top-k sampling cut (authors 50)"})
    seed: int = field(default=42, metadata={"help": "Seed for sampling"})
    max_samples: Optional[int] = field(default=None, metadata={"help": "Answer only the first N rows"})

    def __post_init__(self):
        if self.load_in_8bit is None:
            self.load_in_8bit = False  # generation: full precision unless asked
        super().__post_init__()
        if not self.data_dir:
            raise ValueError("--data_dir is required: the folder written by scripts/build_instructions.py")
        if self.instruction_column is None and self.adapter_dir:
            saved = os.path.join(self.adapter_dir, "lora_args.json")
            if os.path.isfile(saved):
                with open(saved, encoding="utf-8") as f:
                    self.instruction_column = json.load(f).get("instruction_column")
        self.instruction_column = self.instruction_column or "messages"
        if self.instruction_column not in INSTRUCTION_COLUMNS:
            raise ValueError(f"--instruction_column {self.instruction_column!r}: choose one of {INSTRUCTION_COLUMNS}")
        if self.decoding is not None and self.decoding not in DECODING_PRESETS:
            raise ValueError(f"--decoding {self.decoding!r}: choose one of {tuple(DECODING_PRESETS)}")
        check_min("--batch_size", self.batch_size)
        check_min("--max_samples", self.max_samples)
        check_generate_kwargs({"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
                               "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k},
                              prefix="--")


def resolve_decoding(args: GenerationArguments, data_format: str) -> GenerationArguments:
    """Fill the decoding settings `args` leaves unset from its preset (:data:`DECODING_PRESETS`; default `authors`
    for data of the authors' format, `greedy` otherwise); the authors' preset also loads the base in fp16 where
    CUDA is available when `torch_dtype` is `auto`. Changes and returns `args`."""
    if args.decoding is None:
        args.decoding = "authors" if data_format == "authors" else "greedy"
    for name, value in DECODING_PRESETS[args.decoding].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.decoding == "authors" and args.torch_dtype == "auto" and torch.cuda.is_available():
        args.torch_dtype = "float16"
    return args


def _fingerprint(folder: Optional[str]) -> Optional[str]:
    """sha256 of the adapter weights, so predictions of a retrained adapter in the same folder are not mixed."""
    if not folder:
        return None
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.startswith("adapter_model") or name == "adapter_config.json":
            with open(os.path.join(folder, name), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def generation_manifest(args: GenerationArguments) -> Dict[str, Any]:
    """What determines the predictions: base, adapter (path and weight hash), data, column and decoding."""
    # (not max_samples: it picks which rows are answered, not their answers, so a run can be extended)
    keys = ("model_name_or_path", "load_in_8bit", "load_in_4bit", "torch_dtype", "split", "instruction_column",
            "decoding", "max_new_tokens", "max_prompt_length", "do_sample", "num_beams", "temperature", "top_p",
            "top_k", "seed")
    manifest = {k: getattr(args, k) for k in keys}
    if args.do_sample:  # a batch's members decide what sampling draws (greedy answers do not depend on batching)
        manifest["batch_size"] = args.batch_size
    manifest["data_dir"] = os.path.abspath(args.data_dir)
    manifest["adapter_dir"] = os.path.abspath(args.adapter_dir) if args.adapter_dir else None
    manifest["adapter_sha256"] = _fingerprint(args.adapter_dir)
    return manifest


def batch_seed(seed: int, batch: int) -> int:
    """The sampling seed of batch number `batch` of a run seeded `seed` (runs of nearby seeds share no stream)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{batch}".encode()).digest()[:4], "big")


def generate_predictions(args: GenerationArguments) -> int:
    """Answer the rows of `args.split` not yet in `args.output_file`; returns how many were written now. Unset
    decoding settings are filled from the data's format first (:func:`resolve_decoding`)."""
    rows = load_instruction_splits(args.data_dir, [args.split], ("id", args.instruction_column, "format"))[args.split]
    resolve_decoding(args, instruction_format(rows))
    header = generation_manifest(args)
    finished, writer = open_records(args.output_file, header, compare=list(header), what="predictions",
                                    overwrite_hint="another --output_file")
    with writer:
        return _answer(args, rows, {record["id"] for record in finished}, writer)


def _answer(args: GenerationArguments, rows, done: set, out: RecordWriter) -> int:
    """Answer the `rows` whose id is not in `done`, appending to `out`."""
    from transformers import set_seed

    limit = len(rows) if args.max_samples is None else min(args.max_samples, len(rows))
    ids = rows["id"]
    missing = {index for index in range(limit) if ids[index] not in done}
    logger.info("%d rows to answer (%d already in %s)", len(missing), len(done), args.output_file)
    if not missing:
        return 0
    rows = rows.select_columns(["id", args.instruction_column, "format"])
    saved_with_adapter = args.adapter_dir and os.path.isfile(os.path.join(args.adapter_dir, "tokenizer_config.json"))
    tokenizer = load_tokenizer(args.tokenizer_name_or_path or (args.adapter_dir if saved_with_adapter else None)
                               or args.model_name_or_path, args.trust_remote_code)
    tokenizer.padding_side = "left"
    model = load_base_model(args)
    if args.adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter_dir)
    model.eval()
    device = next(model.parameters()).device
    stop_ids = model.generation_config.eos_token_id or tokenizer.eos_token_id
    if "<|assistant|>" in tokenizer.get_vocab() and "[gMASK]" in tokenizer.get_vocab():
        stop_ids = chatglm3_stop_token_ids(tokenizer)
    sampling = dict(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k) if args.do_sample else {}
    written = 0
    for start in range(0, limit, args.batch_size):  # batches at fixed positions of the whole split
        positions = range(start, min(start + args.batch_size, len(rows)))
        if not missing.intersection(positions):
            continue
        set_seed(batch_seed(args.seed, start // args.batch_size))
        batch = list(zip(positions, rows.select(positions)))
        prompts = [prompt_ids(tokenizer, r[args.instruction_column], args.max_prompt_length, r["format"])
                   for _, r in batch]
        enc = tokenizer.pad({"input_ids": prompts}, return_tensors="pt").to(device)
        with torch.no_grad():
            generated = model.generate(
                **enc, max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, num_beams=args.num_beams,
                eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id, **sampling)
        new_tokens = generated[:, enc["input_ids"].shape[1]:]
        for (index, row), answer in zip(batch, new_tokens):
            if index in missing:  # (rows already answered, or past --max_samples, are drawn but not written)
                out.write({"id": row["id"], "output": tokenizer.decode(answer, skip_special_tokens=True).strip()})
                written += 1
    return written
