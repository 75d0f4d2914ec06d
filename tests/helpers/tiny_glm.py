"""A tiny ChatGLM3-format checkpoint and tokenizer for tests: SentencePiece trained here, random weights."""

import json
import os
import random
from typing import Dict

import torch

SP_VOCAB_SIZE = 320  # 3 control pieces + 256 byte-fallback pieces + merges
WORDS = ("I feel so happy sad angry proud lonely today my dog friend lost job new car exam passed failed 2023 "
         "really glad of you , . ! ? that is great terrible sorry to hear wow Emotion Response : trusting").split()

# ChatGLM3's config keys with tiny sizes: 2 layers, hidden 64, 4 heads of 16 channels in 2 key/value groups.
TINY_CHATGLM3_CONFIG = {
    "model_type": "chatglm", "architectures": ["ChatGLMModel"], "add_bias_linear": False, "add_qkv_bias": True,
    "apply_query_key_layer_scaling": True, "apply_residual_connection_post_layernorm": False,
    "attention_dropout": 0.0, "attention_softmax_in_fp32": True, "bias_dropout_fusion": True,
    "ffn_hidden_size": 96, "fp32_residual_connection": False, "hidden_dropout": 0.0, "hidden_size": 64,
    "kv_channels": 16, "layernorm_epsilon": 1e-05, "multi_query_attention": True, "multi_query_group_num": 2,
    "num_attention_heads": 4, "num_layers": 2, "original_rope": True, "padded_vocab_size": 336,
    "post_layer_norm": True, "rmsnorm": True, "seq_length": 256, "use_cache": True, "torch_dtype": "float32",
    "tie_word_embeddings": False, "eos_token_id": 2, "pad_token_id": 0,
}


def synthetic_sentences(n: int = 400, seed: int = 0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


def train_tiny_sentencepiece(directory: str, model_type: str = "bpe") -> str:
    """Train a SentencePiece model with ChatGLM3's kind of settings; returns the `tokenizer.model` path."""
    import sentencepiece as spm

    os.makedirs(directory, exist_ok=True)
    corpus = os.path.join(directory, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(synthetic_sentences()))
    prefix = os.path.join(directory, "tokenizer")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=prefix, vocab_size=SP_VOCAB_SIZE, model_type=model_type, byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
        add_dummy_prefix=True, minloglevel=2, num_threads=1,
    )
    os.remove(corpus)
    os.remove(prefix + ".vocab")
    return prefix + ".model"


def random_chatglm3_state_dict(config: Dict = TINY_CHATGLM3_CONFIG, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random tensors under ChatGLM3's checkpoint names (including the rotary buffer a loader must skip)."""
    g = torch.Generator().manual_seed(seed)
    h, f, v = config["hidden_size"], config["ffn_hidden_size"], config["padded_vocab_size"]
    qkv = (config["num_attention_heads"] + 2 * config["multi_query_group_num"]) * config["kv_channels"]

    def rand(*shape, scale=0.08):
        return torch.randn(*shape, generator=g) * scale

    sd = {"transformer.embedding.word_embeddings.weight": rand(v, h, scale=0.5),
          "transformer.rotary_pos_emb.inv_freq": 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8)),
          "transformer.encoder.final_layernorm.weight": 1 + rand(h, scale=0.1),
          "transformer.output_layer.weight": rand(v, h)}
    for i in range(config["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        sd[p + "input_layernorm.weight"] = 1 + rand(h, scale=0.1)
        sd[p + "post_attention_layernorm.weight"] = 1 + rand(h, scale=0.1)
        sd[p + "self_attention.query_key_value.weight"] = rand(qkv, h, scale=0.2)
        sd[p + "self_attention.query_key_value.bias"] = rand(qkv, scale=0.2)
        sd[p + "self_attention.dense.weight"] = rand(h, config["num_attention_heads"] * config["kv_channels"])
        sd[p + "mlp.dense_h_to_4h.weight"] = rand(2 * f, h, scale=0.15)
        sd[p + "mlp.dense_4h_to_h.weight"] = rand(h, f, scale=0.15)
    return sd


def write_chatglm3_checkpoint(directory: str, state_dict: Dict[str, torch.Tensor], config: Dict = TINY_CHATGLM3_CONFIG,
                              fmt: str = "bin", num_shards: int = 2) -> str:
    """Write config.json and the tensors as ChatGLM3 does (`pytorch_model-0000i-of-0000N.bin` + index), or as
    safetensors; `num_shards=1` writes a single file without index."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    names = sorted(state_dict)
    chunks = [names[i::num_shards] for i in range(num_shards)]
    ext = "bin" if fmt == "bin" else "safetensors"
    stem = "pytorch_model" if fmt == "bin" else "model"
    weight_map = {}
    for i, chunk in enumerate(chunks, 1):
        file = f"{stem}-{i:05d}-of-{num_shards:05d}.{ext}" if num_shards > 1 else f"{stem}.{ext}"
        part = {n: state_dict[n].contiguous() for n in chunk}
        if fmt == "bin":
            torch.save(part, os.path.join(directory, file))
        else:
            from safetensors.torch import save_file

            save_file(part, os.path.join(directory, file))
        weight_map.update({n: file for n in chunk})
    if num_shards > 1:
        with open(os.path.join(directory, f"{stem}.{ext}.index.json"), "w", encoding="utf-8") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return directory


def tiny_chatglm3_checkpoint(directory: str, with_tokenizer: bool = True, fmt: str = "bin") -> str:
    """A complete tiny ChatGLM3 folder: config.json, weights, and (optionally) tokenizer.model."""
    write_chatglm3_checkpoint(directory, random_chatglm3_state_dict(), fmt=fmt)
    if with_tokenizer:
        train_tiny_sentencepiece(directory)
    return directory


def tiny_glm_folder(directory: str) -> str:
    """The tiny ChatGLM3 checkpoint converted to a standard transformers `glm` folder (model + chat tokenizer)."""
    from iamm.llm.chatglm3 import convert_chatglm3

    source = os.path.join(directory, "chatglm3")
    tiny_chatglm3_checkpoint(source)
    return convert_chatglm3(source, os.path.join(directory, "glm"))


EMOTIONS = ["joyful", "sad", "angry", "proud"]


def write_instruction_dataset(directory: str, rows_per_split: int = 6, seed: int = 0) -> str:
    """A small instruction dataset with the columns of `scripts/build_instructions.py`, as data/{split}.parquet."""
    import pandas as pd

    rng = random.Random(seed)
    os.makedirs(os.path.join(directory, "data"), exist_ok=True)
    for split in ("train", "valid", "test"):
        rows = []
        for i in range(rows_per_split):
            context = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(rng.randint(1, 3))]
            emotion, response = rng.choice(EMOTIONS), " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
            situation = " ".join(rng.choice(WORDS) for _ in range(5))
            system = "You are an empathetic listener."
            user = f"Dialogue context: {' | '.join(context)}\nDialogue situation: {situation}"
            rows.append({
                "id": f"{split}{i}:{len(context)}", "conv_id": f"{split}{i}", "turn": len(context),
                "situation": situation, "context": context, "context_roles": ["speaker"] * len(context),
                "emotion": emotion, "response": response, "high_weight_words": ["dog"], "low_weight_words": ["my"],
                "associations": json.dumps([["dog", "lost", 0.9]]),
                "messages": [{"role": "system", "content": system},
                             {"role": "user", "content": user + "\nHigh weight words: dog\nLow weight words: my"}],
                "plain_messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                "answer": f"Emotion: {emotion}\nResponse: {response}",
            })
        pd.DataFrame(rows).to_parquet(os.path.join(directory, "data", f"{split}.parquet"))
    return directory
