"""ChatGLM3 on transformers' native `glm` architecture: config translation, weight conversion, tokenizer.

ChatGLM3-6B's published code needs `trust_remote_code` and no longer runs on transformers 5. Its computation is
the one of transformers' `GlmForCausalLM` (pre-RMSNorm decoder, grouped-query attention with a fused, biased qkv
projection, rotary embeddings on the first half of each head in interleaved pairs, SwiGLU MLP, untied head), so a
ChatGLM3 checkpoint becomes a standard transformers folder by renaming and splitting tensors:

    ChatGLM3 checkpoint name                                    GlmForCausalLM name
    transformer.embedding.word_embeddings.weight                 model.embed_tokens.weight
    transformer.encoder.layers.N.input_layernorm.weight          model.layers.N.input_layernorm.weight
    transformer.encoder.layers.N.self_attention.query_key_value  model.layers.N.self_attn.{q,k,v}_proj (split)
    transformer.encoder.layers.N.self_attention.dense            model.layers.N.self_attn.o_proj
    transformer.encoder.layers.N.post_attention_layernorm        model.layers.N.post_attention_layernorm
    transformer.encoder.layers.N.mlp.dense_h_to_4h               model.layers.N.mlp.gate_up_proj
    transformer.encoder.layers.N.mlp.dense_4h_to_h               model.layers.N.mlp.down_proj
    transformer.encoder.final_layernorm.weight                   model.norm.weight
    transformer.output_layer.weight                              lm_head.weight
    transformer.rotary_pos_emb.inv_freq                          (buffer, recomputed: skipped)

Rotary conventions agree, so no permutation is needed: ChatGLM3 rotates the first `kv_channels / 2` dimensions of
each head as interleaved pairs (2i, 2i+1) with frequency `(10000 * rope_ratio) ** (-2i / (kv_channels / 2))`, and
so does `GlmRotaryEmbedding` + `apply_rotary_pos_emb` with `partial_rotary_factor=0.5` (it repeats each frequency
twice, `repeat_interleave`, and rotates `x[0::2], x[1::2]`). Attention scaling is `1 / sqrt(kv_channels)` in both
(ChatGLM3's query-key layer scaling multiplies and divides by the layer number, a no-op on the result).

Loading converts shard by shard into a temporary standard folder and then calls `GlmForCausalLM.from_pretrained`
on it, so peak host memory is about one shard plus transformers' own loading, and `dtype`, `device_map` and
`quantization_config` (bitsandbytes 4/8-bit) behave as for any transformers checkpoint. Convert once with
`scripts/convert_chatglm3.py` to skip the conversion on every load.

The tokenizer is a `tokenizers`-backed fast tokenizer built from the checkpoint's SentencePiece `tokenizer.model`
plus ChatGLM3's nine special tokens, with a chat template whose ids equal ChatGLM3's own chat encoding (see
`CHATGLM3_CHAT_TEMPLATE`). A LoRA adapter trained on ChatGLM3's own layout (on `query_key_value`) converts into
the equivalent q/k/v adapter of the converted model (`convert_chatglm3_adapter`).
"""

import json
import logging
import os
import re
import tempfile
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from transformers import GenerationConfig, GlmConfig, GlmForCausalLM

logger = logging.getLogger(__name__)

# ChatGLM3's special tokens, appended after the SentencePiece vocabulary in this order (ids n, n+1, ...).
CHATGLM3_SPECIAL_TOKENS = [
    "[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"
]
CHATGLM3_ROLES = ("system", "user", "assistant", "observation")

# ChatGLM3 encodes a chat as `[gMASK] sop` followed, per message, by the role token, `sp.encode(metadata + "\n")`
# and `sp.encode(content)`: two SentencePiece calls, each with its own dummy-prefix "▁". The fast tokenizer adds
# the dummy prefix once per stretch of text between special tokens (SentencePiece's "legacy" behaviour), so the
# template writes "\n" + " " + content: the escaped space is exactly the second call's dummy prefix, and
# SentencePiece never merges a piece across "▁" boundaries (whitespace splits words), so the ids are the same.
# Empty content adds nothing (SentencePiece encodes "" as no ids). The prompt for a reply ends with
# `<|assistant|>`, as ChatGLM3's `build_chat_input`: the model writes the "\n" metadata line itself.
CHATGLM3_CHAT_TEMPLATE = (
    "[gMASK]sop"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant', 'observation'] %}"
    "{{ raise_exception('ChatGLM3 knows the roles system, user, assistant and observation, not ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + '\\n' }}"
    "{% if message['content'] %}{{ ' ' + message['content'] }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# Config keys that do not change the computation of a ChatGLM3 checkpoint (or that GlmConfig derives itself).
_IGNORED_KEYS = {
    "_name_or_path", "model_type", "architectures", "auto_map", "transformers_version", "use_cache",
    "apply_query_key_layer_scaling",  # multiplies and divides the scores by the layer number: a no-op
    "attention_softmax_in_fp32",  # GlmAttention takes the softmax in fp32 always
    "bias_dropout_fusion",  # a kernel choice
    "classifier_dropout",  # sequence-classification head only
    "torch_dtype", "dtype",  # read separately (the dtype of the saved weights)
}
# Keys that must have one value because GlmForCausalLM computes only that variant: (key, required, default).
_REQUIRED_VALUES = [
    ("rmsnorm", True, True),
    ("apply_residual_connection_post_layernorm", False, False),
    ("add_bias_linear", False, False),
    ("post_layer_norm", True, True),
    ("multi_query_attention", True, False),
    ("fp32_residual_connection", False, False),
    ("original_rope", True, True),
    ("pre_seq_len", None, None),
    ("prefix_projection", False, False),
    ("quantization_bit", 0, 0),
    ("hidden_dropout", 0.0, 0.0),
]
_TRANSLATED_KEYS = {
    "hidden_size", "ffn_hidden_size", "num_layers", "num_attention_heads", "multi_query_group_num", "kv_channels",
    "add_qkv_bias", "layernorm_epsilon", "padded_vocab_size", "vocab_size", "seq_length", "rope_ratio",
    "attention_dropout", "pad_token_id", "eos_token_id", "bos_token_id", "tie_word_embeddings",
}


def chatglm3_config_to_glm(config_dict: Dict[str, Any], source: str = "config.json") -> GlmConfig:
    """Translate a ChatGLM3 `config.json` (as a dict) into the equivalent `GlmConfig`.

    Args:
        config_dict: the keys of ChatGLM3's config (`num_layers`, `kv_channels`, `multi_query_group_num`, ...).
        source: where the dict came from, named in errors.

    Raises:
        ValueError: naming the key when the config asks for a variant `GlmForCausalLM` does not compute (e.g.
            `rmsnorm: false`, `add_bias_linear: true`, `post_layer_norm: false`, P-tuning prefixes), or when a key
            is unknown to this translation (rather than silently dropping it).
    """
    unknown = sorted(set(config_dict) - _IGNORED_KEYS - _TRANSLATED_KEYS - {k for k, _, _ in _REQUIRED_VALUES})
    if unknown:
        raise ValueError(f"{source}: ChatGLM3 config keys {unknown} are not understood by this conversion; "
                         "check what they change in the model before adding them to the translation")
    for key, required, default in _REQUIRED_VALUES:
        value = config_dict.get(key, default)
        if value != required:
            raise ValueError(f"{source}: {key}={value!r} is not supported (transformers' GlmForCausalLM computes "
                             f"only {key}={required!r}); this checkpoint is not a ChatGLM3-architecture model")
    missing = [k for k in ("hidden_size", "ffn_hidden_size", "num_layers", "num_attention_heads", "kv_channels",
                           "multi_query_group_num", "padded_vocab_size") if k not in config_dict]
    if missing:
        raise ValueError(f"{source}: missing ChatGLM3 config keys {missing}")
    heads, groups = config_dict["num_attention_heads"], config_dict["multi_query_group_num"]
    if heads % groups:
        raise ValueError(f"{source}: num_attention_heads={heads} is not a multiple of multi_query_group_num={groups}")
    rope_theta = 10000.0 * float(config_dict.get("rope_ratio", 1.0))
    eos = config_dict.get("eos_token_id", 2)
    return GlmConfig(
        vocab_size=config_dict["padded_vocab_size"],
        hidden_size=config_dict["hidden_size"],
        intermediate_size=config_dict["ffn_hidden_size"],
        num_hidden_layers=config_dict["num_layers"],
        num_attention_heads=heads,
        num_key_value_heads=groups,
        head_dim=config_dict["kv_channels"],
        hidden_act="silu",
        attention_dropout=float(config_dict.get("attention_dropout", 0.0)),
        max_position_embeddings=config_dict.get("seq_length", 2048),
        rms_norm_eps=config_dict.get("layernorm_epsilon", 1e-5),
        tie_word_embeddings=bool(config_dict.get("tie_word_embeddings", False)),
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta, "partial_rotary_factor": 0.5},
        pad_token_id=config_dict.get("pad_token_id", 0),
        eos_token_id=eos,
        bos_token_id=config_dict.get("bos_token_id"),
        attention_bias=bool(config_dict.get("add_qkv_bias", True)),
        architectures=["GlmForCausalLM"],
    )


_LAYER = re.compile(r"^transformer\.encoder\.layers\.(\d+)\.(.+)$")
_LAYER_RENAMES = {
    "input_layernorm.weight": "input_layernorm.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "self_attention.dense.weight": "self_attn.o_proj.weight",
    "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",
    "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
}
_TOP_RENAMES = {
    "transformer.embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "transformer.encoder.final_layernorm.weight": "model.norm.weight",
    "transformer.output_layer.weight": "lm_head.weight",
}
_SKIPPED = {"transformer.rotary_pos_emb.inv_freq"}


def chatglm3_weight_names(name: str, num_layers: int) -> List[str]:
    """The `GlmForCausalLM` names one ChatGLM3 tensor becomes ([] for the skipped rotary buffer).

    Raises:
        KeyError: for a name the conversion does not know (or a layer index outside `num_layers`).
    """
    if name in _SKIPPED:
        return []
    if name in _TOP_RENAMES:
        return [_TOP_RENAMES[name]]
    match = _LAYER.match(name)
    if match:
        index, rest = int(match.group(1)), match.group(2)
        if index >= num_layers:
            raise KeyError(f"{name}: layer {index} but the config has num_layers={num_layers}")
        prefix = f"model.layers.{index}."
        if rest in _LAYER_RENAMES:
            return [prefix + _LAYER_RENAMES[rest]]
        if rest in ("self_attention.query_key_value.weight", "self_attention.query_key_value.bias"):
            kind = rest.rsplit(".", 1)[1]
            return [f"{prefix}self_attn.{p}_proj.{kind}" for p in ("q", "k", "v")]
    raise KeyError(f"{name}: not a ChatGLM3 weight name this conversion knows")


def split_fused_qkv(tensor: torch.Tensor, config: GlmConfig, name: str, source: str) -> Tuple[torch.Tensor, ...]:
    """The q, k and v rows of a tensor laid out as ChatGLM3's fused `query_key_value` (its weight or bias, or a LoRA
    `B` of it); a `ValueError` naming `name` when its row count does not fit `config`."""
    q_size = config.num_attention_heads * config.head_dim
    kv_size = config.num_key_value_heads * config.head_dim
    if tensor.shape[0] != q_size + 2 * kv_size:
        raise ValueError(f"{source}: {name} has {tensor.shape[0]} rows, expected num_attention_heads * kv_channels "
                         f"+ 2 * multi_query_group_num * kv_channels = {q_size + 2 * kv_size}")
    # (heads*hd + 2*groups*hd, ...) -> q (heads*hd, ...), k (groups*hd, ...), v (groups*hd, ...)
    return tuple(part.contiguous() for part in torch.split(tensor, [q_size, kv_size, kv_size], dim=0))


def convert_chatglm3_state_dict(state_dict: Dict[str, torch.Tensor], config: GlmConfig,
                                source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """Rename (and split the fused qkv of) ChatGLM3 tensors into `GlmForCausalLM` tensors; works on one shard."""
    out: Dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        try:
            targets = chatglm3_weight_names(name, config.num_hidden_layers)
        except KeyError as err:
            raise ValueError(f"{source}: {err.args[0]}") from None
        if len(targets) == 3:
            out.update(zip(targets, split_fused_qkv(tensor, config, name, source)))
        elif targets:
            out[targets[0]] = tensor
    return out


def _checkpoint_shards(checkpoint_dir: str) -> List[str]:
    """The weight files of a ChatGLM3 folder: from an index json if present, else the single weight file."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = os.path.join(checkpoint_dir, index_name)
        if os.path.isfile(index_path):
            with open(index_path, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            shards = sorted(set(weight_map.values()))
            absent = [s for s in shards if not os.path.isfile(os.path.join(checkpoint_dir, s))]
            if absent:
                raise FileNotFoundError(f"{index_path} lists shards that are not in the folder: {absent}")
            return [os.path.join(checkpoint_dir, s) for s in shards]
    for single in ("model.safetensors", "pytorch_model.bin"):
        path = os.path.join(checkpoint_dir, single)
        if os.path.isfile(path):
            return [path]
    raise FileNotFoundError(f"{checkpoint_dir}: no model.safetensors / pytorch_model.bin (or their .index.json) "
                            "found; is this a ChatGLM3 checkpoint folder?")


def _read_shard(path: str) -> Dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _expected_glm_names(config: GlmConfig) -> set:
    names = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        names |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight", p + "self_attn.o_proj.weight",
                  p + "mlp.gate_up_proj.weight", p + "mlp.down_proj.weight"}
        names |= {f"{p}self_attn.{x}_proj.weight" for x in "qkv"}
        if config.attention_bias:
            names |= {f"{p}self_attn.{x}_proj.bias" for x in "qkv"}
    return names


def read_chatglm3_config(checkpoint_dir: str) -> Tuple[Dict[str, Any], GlmConfig]:
    """Read `checkpoint_dir/config.json` (ChatGLM3 keys) and return it with its `GlmConfig` translation."""
    path = os.path.join(checkpoint_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing; a ChatGLM3 checkpoint folder holds config.json and the weights")
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    if raw.get("model_type", "chatglm") != "chatglm":
        raise ValueError(f"{path}: model_type is {raw['model_type']!r}, not 'chatglm'; load it with "
                         "AutoModelForCausalLM.from_pretrained instead")
    return raw, chatglm3_config_to_glm(raw, source=path)


def convert_chatglm3_checkpoint(checkpoint_dir: str, output_dir: str, dtype: Optional[torch.dtype] = None,
                                max_shard_size_bytes: int = 5 * 1024**3) -> GlmConfig:
    """Write a ChatGLM3 checkpoint as a standard `GlmForCausalLM` folder (safetensors shards, index, config).

    Reads one input shard at a time. Every tensor of the input must map and every `GlmForCausalLM` weight must be
    produced, or a `ValueError` names the offending tensors. The tokenizer is not written here (see
    `load_chatglm3_tokenizer`), so a folder with weights and config only converts. `dtype` casts floating-point
    tensors (default: keep the stored dtype).
    """
    from safetensors.torch import save_file

    raw, config = read_chatglm3_config(checkpoint_dir)
    os.makedirs(output_dir, exist_ok=True)
    expected = _expected_glm_names(config)
    written: Dict[str, str] = {}
    pending: Dict[str, torch.Tensor] = {}
    files: List[Tuple[str, List[str]]] = []

    def flush() -> None:
        if pending:
            name = f"model-{len(files) + 1:05d}.safetensors"
            save_file({k: v.contiguous() for k, v in pending.items()}, os.path.join(output_dir, name),
                      metadata={"format": "pt"})
            files.append((name, list(pending)))
            pending.clear()

    size = 0
    for shard in _checkpoint_shards(checkpoint_dir):
        converted = convert_chatglm3_state_dict(_read_shard(shard), config, source=shard)
        for name, tensor in converted.items():
            if name not in expected:
                raise ValueError(f"{shard}: produced {name}, which GlmForCausalLM with this config does not have "
                                 "(e.g. a qkv bias while add_qkv_bias is false)")
            if name in written or name in pending:
                raise ValueError(f"{shard}: tensor {name} appears twice in the checkpoint")
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            pending[name] = tensor
            size += tensor.numel() * tensor.element_size()
            if size >= max_shard_size_bytes:
                flush()
                size = 0
        del converted
    flush()
    for name, names in files:
        written.update({n: name for n in names})
    missing = sorted(expected - set(written))
    if missing:
        raise ValueError(f"{checkpoint_dir}: the checkpoint lacks tensors for {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''} ({len(missing)} in all)")
    # Name the shards "-of-N" now that N is known.
    total = len(files)
    weight_map = {}
    for i, (name, names) in enumerate(files, 1):
        final = f"model-{i:05d}-of-{total:05d}.safetensors" if total > 1 else "model.safetensors"
        os.replace(os.path.join(output_dir, name), os.path.join(output_dir, final))
        weight_map.update({n: final for n in names})
    if total > 1:
        with open(os.path.join(output_dir, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
            json.dump({"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    stored = dtype or _dtype_from_name(raw.get("torch_dtype"))
    if stored is not None:
        config.dtype = stored
    config.converted_from = "chatglm3"  # the layout says glm; this says which model (read by the adapter card)
    config.save_pretrained(output_dir)
    chatglm3_generation_config(config).save_pretrained(output_dir)
    return config


def _dtype_from_name(name: Optional[str]) -> Optional[torch.dtype]:
    return getattr(torch, name) if isinstance(name, str) and hasattr(torch, name) else None


def chatglm3_generation_config(config: GlmConfig, stop_token_ids: Optional[List[int]] = None) -> GenerationConfig:
    """Generation defaults: stop at end of text (and at `stop_token_ids`, e.g. `chatglm3_stop_token_ids`)."""
    eos = config.eos_token_id if isinstance(config.eos_token_id, int) else 2
    return GenerationConfig(eos_token_id=[eos] + [i for i in (stop_token_ids or []) if i != eos],
                            pad_token_id=config.pad_token_id)


def load_chatglm3(checkpoint_dir: str, dtype: Optional[torch.dtype] = None,
                  device_map: Optional[Union[str, Dict[str, Any]]] = None,
                  quantization_config: Optional[Any] = None, **from_pretrained_kwargs: Any) -> GlmForCausalLM:
    """Load a ChatGLM3 checkpoint (its own config keys and weight names) as a native `GlmForCausalLM`.

    The checkpoint is converted shard by shard into a temporary folder, which `GlmForCausalLM.from_pretrained`
    then loads with the given `dtype`, `device_map` and `quantization_config` (e.g. `BitsAndBytesConfig`). Needs
    free disk space for one copy of the weights; convert once with `scripts/convert_chatglm3.py` to avoid it.
    """
    with tempfile.TemporaryDirectory(prefix="chatglm3-glm-") as tmp:
        convert_chatglm3_checkpoint(checkpoint_dir, tmp)
        model = GlmForCausalLM.from_pretrained(tmp, dtype=dtype if dtype is not None else "auto",
                                               device_map=device_map, quantization_config=quantization_config,
                                               **from_pretrained_kwargs)
    model.name_or_path = checkpoint_dir
    return model


def is_chatglm3_checkpoint(path: str) -> bool:
    """Whether `path` is a local folder whose config.json says `model_type: chatglm` (ChatGLM's own format)."""
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        return False
    with open(config_path, encoding="utf-8") as f:
        return json.load(f).get("model_type") == "chatglm"


# ----------------------------------------------------------------------------------------------------- tokenizer
def build_chatglm3_tokenizer(sentencepiece_model: str):
    """A `PreTrainedTokenizerFast` equal to ChatGLM3's tokenizer, from its SentencePiece `tokenizer.model`.

    The SentencePiece model becomes a `tokenizers` model that follows the file's own normalizer settings
    (transformers' `SpmConverter.build_tokenizer_from_spm_proto`, with the dummy prefix on every stretch of text as
    SentencePiece adds it per call); ChatGLM3's nine special tokens follow the SentencePiece vocabulary with ids
    `n .. n+8`. End of text is `</s>`, padding `<unk>` (id 0), as ChatGLM3. The chat template reproduces
    ChatGLM3's chat ids (see `CHATGLM3_CHAT_TEMPLATE`). One known difference: a literal `<s>`, `</s>` or `<unk>`
    in the text is read as that special token, where ChatGLM3's chat builder encodes its characters.
    """
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    if not os.path.isfile(sentencepiece_model):
        raise FileNotFoundError(f"{sentencepiece_model}: no SentencePiece model file")
    proto = import_protobuf().ModelProto()
    with open(sentencepiece_model, "rb") as f:
        proto.ParseFromString(f.read())
    if proto.trainer_spec.model_type == 1:  # unigram
        vocab: Any = [(p.piece, p.score) for p in proto.pieces]
    elif proto.trainer_spec.model_type == 2:  # bpe
        vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    else:
        raise ValueError(f"{sentencepiece_model}: SentencePiece model type {proto.trainer_spec.model_type} is "
                         "neither unigram nor BPE")
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
    n = len(proto.pieces)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in CHATGLM3_SPECIAL_TOKENS])
    ids = [backend.token_to_id(t) for t in CHATGLM3_SPECIAL_TOKENS]
    if ids != list(range(n, n + len(CHATGLM3_SPECIAL_TOKENS))):
        raise ValueError(f"{sentencepiece_model}: ChatGLM3's special tokens got ids {ids}, expected {n}.."
                         f"{n + len(CHATGLM3_SPECIAL_TOKENS) - 1} (does the SentencePiece vocabulary contain them?)")
    piece = {p.piece for p in proto.pieces}
    for required in ("<unk>", "</s>"):
        if required not in piece:
            raise ValueError(f"{sentencepiece_model}: no {required!r} piece; ChatGLM3's model has <unk> and </s>")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="</s>", pad_token="<unk>",
        bos_token="<s>" if "<s>" in piece else None,
        extra_special_tokens=CHATGLM3_SPECIAL_TOKENS, chat_template=CHATGLM3_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
    return tokenizer


def load_chatglm3_tokenizer(path_or_dir: str):
    """ChatGLM3's tokenizer from a folder (or a `tokenizer.model` file path).

    A folder already converted (it has `tokenizer.json`) loads with `AutoTokenizer`; otherwise the fast tokenizer is
    built from `tokenizer.model` (`build_chatglm3_tokenizer`).
    """
    from transformers import AutoTokenizer

    if os.path.isdir(path_or_dir):
        if os.path.isfile(os.path.join(path_or_dir, "tokenizer.json")):
            return AutoTokenizer.from_pretrained(path_or_dir)
        model_file = os.path.join(path_or_dir, "tokenizer.model")
    else:
        model_file = path_or_dir
    if not os.path.isfile(model_file):
        raise FileNotFoundError(f"{model_file}: ChatGLM3's SentencePiece tokenizer.model is missing; copy it from "
                                "the original checkpoint (the weights load without it)")
    return build_chatglm3_tokenizer(model_file)


def chatglm3_stop_token_ids(tokenizer) -> List[int]:
    """Ids that end a ChatGLM3 reply: `</s>` and the start of the next `<|user|>` or `<|observation|>` turn."""
    return [tokenizer.eos_token_id] + tokenizer.convert_tokens_to_ids(["<|user|>", "<|observation|>"])



# ------------------------------------------------------------------------------------------------------ adapters
_ADAPTER_QKV = re.compile(r"^(base_model\.model\.)?transformer\.encoder\.layers\.(\d+)\.self_attention\."
                          r"query_key_value\.(lora_A|lora_B)(\.[^.]+)?\.weight$")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def convert_chatglm3_adapter_state_dict(state_dict: Dict[str, torch.Tensor], config: GlmConfig,
                                        source: str = "adapter") -> Dict[str, torch.Tensor]:
    """A LoRA adapter of ChatGLM3's fused `query_key_value` (as peft saves it for ChatGLM3, e.g. the authors'
    glmtuner run) as the equivalent adapter of `GlmForCausalLM`'s `q_proj`, `k_proj`, `v_proj`.

    The fused update `B A` (B: (q + k + v rows) x r) becomes `B_q A`, `B_k A`, `B_v A`: each projection gets the
    same `A` and its rows of `B`, so every projection's output is exactly what the fused adapter gives it (load the
    result with `qkv_adapter="fused"` to train on with one shared `A`). Raises `ValueError` naming any tensor
    that is not a query_key_value LoRA weight, or a `B` whose row count does not fit the config.
    """
    out: Dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        match = _ADAPTER_QKV.match(name)
        if match is None:
            raise ValueError(f"{source}: {name} is not a LoRA weight of ChatGLM3's query_key_value; only adapters "
                             "on query_key_value convert")
        kind, adapter = match.group(3), match.group(4) or ""
        fused = name[len(match.group(1) or ""):].split(".self_attention.")[0] + ".self_attention.query_key_value.weight"
        try:  # the layer's q/k/v names as the base model's conversion gives them
            projections = chatglm3_weight_names(fused, config.num_hidden_layers)
        except KeyError as err:
            raise ValueError(f"{source}: {err.args[0]}") from None
        targets = [f"base_model.model.{p[: -len('.weight')]}.{kind}{adapter}.weight" for p in projections]
        parts = [tensor] * 3 if kind == "lora_A" else split_fused_qkv(tensor, config, name, source)
        for target, part in zip(targets, parts):
            out[target] = part.contiguous().clone()
    return out


def convert_chatglm3_adapter(adapter_dir: str, output_dir: str, base_model: str) -> str:
    """Write a peft LoRA adapter trained on ChatGLM3's own layout (`query_key_value`) as an adapter of the converted
    `GlmForCausalLM` (`q_proj`, `k_proj`, `v_proj`; :func:`convert_chatglm3_adapter_state_dict`).

    Args:
        adapter_dir: the adapter folder (`adapter_config.json` + `adapter_model.safetensors` or `.bin`).
        output_dir: where the converted adapter is written (loads with `PeftModel.from_pretrained`).
        base_model: the ChatGLM3 checkpoint folder (or its converted glm folder) whose config sizes the split;
            recorded as the adapter's base model.
    """
    from safetensors.torch import save_file
    from transformers import AutoConfig

    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as f:
        adapter_config = json.load(f)
    if adapter_config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{adapter_dir}: peft_type {adapter_config.get('peft_type')!r}; only LoRA adapters convert")
    targets = adapter_config.get("target_modules")
    if sorted(targets if isinstance(targets, list) else [targets]) != ["query_key_value"]:
        raise ValueError(f"{adapter_dir}: target_modules {targets!r}; only an adapter on query_key_value converts")
    config = (read_chatglm3_config(base_model)[1] if is_chatglm3_checkpoint(base_model)
              else AutoConfig.from_pretrained(base_model))
    weights = next((os.path.join(adapter_dir, n) for n in ADAPTER_WEIGHTS
                    if os.path.isfile(os.path.join(adapter_dir, n))), None)
    if weights is None:
        raise FileNotFoundError(f"{adapter_dir}: no {' or '.join(ADAPTER_WEIGHTS)}")
    converted = convert_chatglm3_adapter_state_dict(_read_shard(weights), config, source=weights)
    os.makedirs(output_dir, exist_ok=True)
    save_file(converted, os.path.join(output_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
    keep = ("r", "lora_alpha", "lora_dropout", "bias", "fan_in_fan_out", "init_lora_weights")
    new_config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
                  "target_modules": ["q_proj", "k_proj", "v_proj"], "inference_mode": True,
                  **{k: adapter_config[k] for k in keep if k in adapter_config}}
    with open(os.path.join(output_dir, "adapter_config.json"), "w", encoding="utf-8") as f:
        json.dump(new_config, f, indent=2)
    return output_dir


def convert_chatglm3(checkpoint_dir: str, output_dir: str, dtype: Optional[torch.dtype] = None,
                     overwrite: bool = False) -> str:
    """Convert a ChatGLM3 folder into a standard transformers folder: `GlmForCausalLM` weights (safetensors),
    `GlmConfig`, generation config with ChatGLM3's stop tokens and, when `tokenizer.model` is there, the fast
    tokenizer with its chat template. The result loads with `AutoModelForCausalLM` / `AutoTokenizer` and no remote
    code. Writes into `output_dir + ".partial"` and renames at the end, so an interrupted run leaves no folder that
    looks complete; refuses a non-empty `output_dir` unless `overwrite`.
    """
    import shutil

    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} is not empty: choose another folder or pass overwrite=True "
                              "(--overwrite_output_dir true)")
    partial = output_dir.rstrip("/") + ".partial"
    if os.path.isdir(partial):
        shutil.rmtree(partial)  # a previous interrupted conversion: nothing in it is trusted
    config = convert_chatglm3_checkpoint(checkpoint_dir, partial, dtype=dtype)
    sp_model = os.path.join(checkpoint_dir, "tokenizer.model")
    if os.path.isfile(sp_model):
        tokenizer = build_chatglm3_tokenizer(sp_model)
        tokenizer.save_pretrained(partial)
        chatglm3_generation_config(config, chatglm3_stop_token_ids(tokenizer)).save_pretrained(partial)
    else:
        logger.warning("%s has no tokenizer.model: the converted folder holds the model only", checkpoint_dir)
    if os.path.isdir(output_dir):
        shutil.rmtree(output_dir)
    os.replace(partial, output_dir)
    return output_dir
