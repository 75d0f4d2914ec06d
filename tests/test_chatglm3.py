"""ChatGLM3 -> native GlmForCausalLM: config, weights (against an independent forward), tokenizer, conversion."""

import json
import os
import subprocess
import sys

import pytest
import torch

from iamm.llm.chatglm3 import (
    CHATGLM3_SPECIAL_TOKENS,
    chatglm3_config_to_glm,
    chatglm3_weight_names,
    convert_chatglm3_state_dict,
    load_chatglm3,
    load_chatglm3_tokenizer,
)
from tests.helpers.tiny_glm import (
    TINY_CHATGLM3_CONFIG,
    random_chatglm3_state_dict,
    synthetic_sentences,
    train_tiny_sentencepiece,
    write_chatglm3_checkpoint,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "chatglm3-6b")


# ---------------------------------------------------------------- independent reference of ChatGLM3's computation
def chatglm3_reference_logits(sd, cfg, input_ids):
    """ChatGLM3's forward in plain torch, written from its description (not from transformers' Glm code)."""
    nh, g, hd = cfg["num_attention_heads"], cfg["multi_query_group_num"], cfg["kv_channels"]
    eps, rot = cfg["layernorm_epsilon"], hd // 2
    B, T = input_ids.shape

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    inv_freq = 1.0 / ((10000.0 * cfg.get("rope_ratio", 1.0)) ** (torch.arange(0, rot, 2).float() / rot))
    angles = torch.arange(T).float()[:, None] * inv_freq[None]  # (T, rot/2)
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]

    def rope(x):  # (B, T, heads, hd): rotate the first `rot` channels as pairs (2i, 2i+1)
        x_rot, x_pass = x[..., :rot], x[..., rot:]
        pairs = x_rot.reshape(B, T, x.shape[2], rot // 2, 2)
        a, b = pairs[..., 0], pairs[..., 1]
        out = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).reshape(B, T, x.shape[2], rot)
        return torch.cat([out, x_pass], dim=-1)

    h = sd["transformer.embedding.word_embeddings.weight"][input_ids]
    causal = torch.ones(T, T).tril().bool()
    for i in range(cfg["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        x = rms(h, sd[p + "input_layernorm.weight"])
        qkv = x @ sd[p + "self_attention.query_key_value.weight"].T + sd[p + "self_attention.query_key_value.bias"]
        q, k, v = qkv.split([nh * hd, g * hd, g * hd], dim=-1)
        q, k, v = q.view(B, T, nh, hd), k.view(B, T, g, hd), v.view(B, T, g, hd)
        q, k = rope(q), rope(k)
        # each group serves nh/g consecutive query heads
        k = k[:, :, :, None].expand(B, T, g, nh // g, hd).reshape(B, T, nh, hd)
        v = v[:, :, :, None].expand(B, T, g, nh // g, hd).reshape(B, T, nh, hd)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / hd**0.5
        scores = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        ctx = torch.einsum("bhqk,bkhd->bqhd", scores, v).reshape(B, T, nh * hd)
        h = h + ctx @ sd[p + "self_attention.dense.weight"].T
        x = rms(h, sd[p + "post_attention_layernorm.weight"])
        a, b = (x @ sd[p + "mlp.dense_h_to_4h.weight"].T).chunk(2, dim=-1)
        h = h + (torch.nn.functional.silu(a) * b) @ sd[p + "mlp.dense_4h_to_h.weight"].T
    h = rms(h, sd["transformer.encoder.final_layernorm.weight"])
    return h @ sd["transformer.output_layer.weight"].T


def chatglm3_reference_chat_ids(sp, messages, add_generation_prompt):
    """ChatGLM3's chat encoding: [gMASK] sop, then per message <|role|> + sp("\\n") + sp(content)."""
    n = sp.vocab_size()
    special = {t: n + i for i, t in enumerate(CHATGLM3_SPECIAL_TOKENS)}
    ids = [special["[gMASK]"], special["sop"]]
    for m in messages:
        ids += [special[f"<|{m['role']}|>"]] + sp.encode("\n") + sp.encode(m["content"])
    if add_generation_prompt:
        ids.append(special["<|assistant|>"])
    return ids


@pytest.fixture(scope="module")
def tiny_sd():
    return random_chatglm3_state_dict()


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    return train_tiny_sentencepiece(str(tmp_path_factory.mktemp("sp")))


# -------------------------------------------------------------------------------------------------------- config
def test_real_6b_config_translation():
    with open(os.path.join(FIXTURES, "config.json")) as f:
        config = chatglm3_config_to_glm(json.load(f))
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (28, 4096, 13696)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (32, 2, 128)
    assert config.vocab_size == 65024 and config.max_position_embeddings == 8192
    assert config.rope_parameters["rope_theta"] == 10000.0
    assert config.rope_parameters["partial_rotary_factor"] == 0.5
    assert config.attention_bias is True and config.tie_word_embeddings is False
    assert config.rms_norm_eps == 1e-5 and config.hidden_act == "silu"
    assert config.pad_token_id == 0 and config.eos_token_id == 2


def test_rope_ratio_scales_theta():
    config = chatglm3_config_to_glm({**TINY_CHATGLM3_CONFIG, "rope_ratio": 50})
    assert config.rope_parameters["rope_theta"] == 500000.0


@pytest.mark.parametrize("key,value", [
    ("rmsnorm", False), ("apply_residual_connection_post_layernorm", True), ("add_bias_linear", True),
    ("post_layer_norm", False), ("multi_query_attention", False), ("pre_seq_len", 16), ("quantization_bit", 4),
    ("some_new_key", 1),
])
def test_unsupported_config_is_refused_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        chatglm3_config_to_glm({**TINY_CHATGLM3_CONFIG, key: value})


# ------------------------------------------------------------------------------------------------------- weights
def test_every_real_6b_weight_name_maps_onto_glm():
    with open(os.path.join(FIXTURES, "pytorch_model.bin.index.json")) as f:
        names = list(json.load(f)["weight_map"])
    with open(os.path.join(FIXTURES, "config.json")) as f:
        config = chatglm3_config_to_glm(json.load(f))
    assert len(names) == 200
    targets = [t for n in names for t in chatglm3_weight_names(n, config.num_hidden_layers)]
    assert chatglm3_weight_names("transformer.rotary_pos_emb.inv_freq", 28) == []
    from transformers import GlmForCausalLM

    with torch.device("meta"):
        model = GlmForCausalLM(config)
    assert sorted(targets) == sorted(model.state_dict())  # every parameter produced exactly once


def test_qkv_split_shapes_on_real_dims():
    with open(os.path.join(FIXTURES, "config.json")) as f:
        config = chatglm3_config_to_glm(json.load(f))
    name = "transformer.encoder.layers.3.self_attention.query_key_value."
    sd = {name + "weight": torch.empty(4608, 8, device="meta"), name + "bias": torch.empty(4608, device="meta")}
    config.hidden_size = 8  # only the row split matters here
    out = convert_chatglm3_state_dict(sd, config)
    assert out["model.layers.3.self_attn.q_proj.weight"].shape == (4096, 8)
    assert out["model.layers.3.self_attn.k_proj.weight"].shape == (256, 8)
    assert out["model.layers.3.self_attn.v_proj.bias"].shape == (256,)


@pytest.mark.parametrize("fmt,shards", [("bin", 2), ("safetensors", 1), ("safetensors", 3)])
def test_loaded_model_matches_reference_forward(tmp_path, tiny_sd, fmt, shards):
    write_chatglm3_checkpoint(str(tmp_path), tiny_sd, fmt=fmt, num_shards=shards)  # no tokenizer in the folder
    model = load_chatglm3(str(tmp_path), dtype=torch.float32).eval()
    ids = torch.randint(0, TINY_CHATGLM3_CONFIG["padded_vocab_size"], (2, 11))
    with torch.no_grad():
        logits = model(ids).logits
    reference = chatglm3_reference_logits(tiny_sd, TINY_CHATGLM3_CONFIG, ids)
    assert (logits - reference).abs().max().item() <= 1e-4


def test_cached_greedy_generation_matches_reference(tmp_path, tiny_sd):
    write_chatglm3_checkpoint(str(tmp_path), tiny_sd)
    model = load_chatglm3(str(tmp_path)).eval()
    ids = torch.tensor([[5, 17, 40, 99, 3]])
    out = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = ids
    for _ in range(6):
        nxt = chatglm3_reference_logits(tiny_sd, TINY_CHATGLM3_CONFIG, expected)[:, -1].argmax(-1, keepdim=True)
        expected = torch.cat([expected, nxt], dim=1)
    assert out.tolist() == expected.tolist()


def test_rope_ratio_reaches_the_model(tmp_path, tiny_sd):
    config = {**TINY_CHATGLM3_CONFIG, "rope_ratio": 3.0}
    write_chatglm3_checkpoint(str(tmp_path), tiny_sd, config=config)
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        logits = load_chatglm3(str(tmp_path)).eval()(ids).logits
    assert (logits - chatglm3_reference_logits(tiny_sd, config, ids)).abs().max().item() <= 1e-4
    assert (logits - chatglm3_reference_logits(tiny_sd, TINY_CHATGLM3_CONFIG, ids)).abs().max().item() > 1e-3


def test_missing_and_unknown_tensors_are_named(tmp_path, tiny_sd):
    missing = dict(tiny_sd)
    del missing["transformer.encoder.layers.1.mlp.dense_4h_to_h.weight"]
    write_chatglm3_checkpoint(str(tmp_path / "a"), missing)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.down_proj\.weight"):
        load_chatglm3(str(tmp_path / "a"))
    extra = {**tiny_sd, "transformer.prefix_encoder.embedding.weight": torch.zeros(2, 2)}
    write_chatglm3_checkpoint(str(tmp_path / "b"), extra)
    with pytest.raises(ValueError, match="prefix_encoder"):
        load_chatglm3(str(tmp_path / "b"))


# ------------------------------------------------------------------------------------------------------ adapters
def test_converted_fused_adapter_gives_the_fused_output(tmp_path, tiny_sd):
    """A LoRA on ChatGLM3's fused query_key_value, saved as peft saved the authors' glmtuner adapter (their layout,
    names and config), converted to q/k/v adapters of the glm model: the same logits as the reference forward with
    the fused update merged; loaded into a fused-q/k/v adapter (one shared A), the same again."""
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    from iamm.llm.chatglm3 import convert_chatglm3_adapter
    from iamm.llm.lora import LoraArguments, add_lora

    cfg, r, alpha = TINY_CHATGLM3_CONFIG, 8, 32.0
    qkv_rows = (cfg["num_attention_heads"] + 2 * cfg["multi_query_group_num"]) * cfg["kv_channels"]
    g = torch.Generator().manual_seed(1)
    adapter, merged = {}, dict(tiny_sd)
    for i in range(cfg["num_layers"]):
        name = f"transformer.encoder.layers.{i}.self_attention.query_key_value"
        a, b = torch.randn(r, cfg["hidden_size"], generator=g) * 0.2, torch.randn(qkv_rows, r, generator=g) * 0.2
        adapter[f"base_model.model.{name}.lora_A.weight"], adapter[f"base_model.model.{name}.lora_B.weight"] = a, b
        merged[f"{name}.weight"] = tiny_sd[f"{name}.weight"] + alpha / r * b @ a
    fused_dir = tmp_path / "fused_adapter"
    fused_dir.mkdir()
    torch.save(adapter, fused_dir / "adapter_model.bin")
    json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.1,
               "target_modules": ["query_key_value"], "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
               "modules_to_save": None, "base_model_name_or_path": "../models/ChatGLM3"},
              open(fused_dir / "adapter_config.json", "w"))
    checkpoint = write_chatglm3_checkpoint(str(tmp_path / "chatglm3"), tiny_sd)
    converted = convert_chatglm3_adapter(str(fused_dir), str(tmp_path / "converted"), checkpoint)
    ids = torch.randint(0, cfg["padded_vocab_size"], (2, 11), generator=g)
    reference = chatglm3_reference_logits(merged, cfg, ids)
    assert (reference - chatglm3_reference_logits(tiny_sd, cfg, ids)).abs().max().item() > 1e-2  # it does change
    model = PeftModel.from_pretrained(load_chatglm3(checkpoint, dtype=torch.float32), converted).eval()
    with torch.no_grad():
        assert (model(ids).logits - reference).abs().max().item() <= 1e-4
    args = LoraArguments(model_name_or_path=checkpoint, data_dir="unused", load_in_8bit=False, qkv_adapter="fused")
    fused = add_lora(load_chatglm3(checkpoint, dtype=torch.float32), args)
    set_peft_model_state_dict(fused, load_file(os.path.join(converted, "adapter_model.safetensors")))
    with torch.no_grad():
        assert (fused.eval()(ids).logits - reference).abs().max().item() <= 1e-4
    with pytest.raises(ValueError, match="dense.lora_A.weight is not a LoRA weight of ChatGLM3's query_key_value"):
        torch.save({**adapter, "base_model.model.transformer.encoder.layers.0.self_attention.dense.lora_A.weight":
                    torch.zeros(1)}, fused_dir / "adapter_model.bin")
        convert_chatglm3_adapter(str(fused_dir), str(tmp_path / "refused"), checkpoint)


# ----------------------------------------------------------------------------------------------------- tokenizer
CHATS = [
    [{"role": "user", "content": "I feel so happy today"}],
    [{"role": "system", "content": "You are a listener."}, {"role": "user", "content": "my dog  lost, 2023!"},
     {"role": "assistant", "content": "Emotion: sad\nResponse: sorry to hear"},
     {"role": "user", "content": " really? café 😊\n\nthat is great "}],
    [{"role": "user", "content": ""}, {"role": "assistant", "content": "wow"}],
]


@pytest.mark.parametrize("chat", CHATS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_reproduces_chatglm3_ids(sp_model, chat, add_generation_prompt):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=sp_model)
    tokenizer = load_chatglm3_tokenizer(sp_model)
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=add_generation_prompt)["input_ids"]
    assert ids == chatglm3_reference_chat_ids(sp, chat, add_generation_prompt)


def test_special_tokens_follow_the_sentencepiece_vocabulary(sp_model):
    import sentencepiece as spm

    n = spm.SentencePieceProcessor(model_file=sp_model).vocab_size()
    tokenizer = load_chatglm3_tokenizer(sp_model)
    assert tokenizer.convert_tokens_to_ids(CHATGLM3_SPECIAL_TOKENS) == list(range(n, n + 9))
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id, len(tokenizer)) == (2, 0, n + 9)


def test_plain_text_matches_sentencepiece_and_decodes_back(sp_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=sp_model)
    tokenizer = load_chatglm3_tokenizer(sp_model)
    for text in synthetic_sentences(30, seed=1) + ["naïve  spaces\tand 12345", "Emotion: proud\nResponse: wow"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == sp.encode(text)
        assert tokenizer.decode(ids) == text


def test_unknown_role_is_refused(sp_model):
    tokenizer = load_chatglm3_tokenizer(sp_model)
    with pytest.raises(Exception, match="roles"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}])


def test_folder_without_tokenizer_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        load_chatglm3_tokenizer(str(tmp_path))


# ---------------------------------------------------------------------------------------------------- conversion
@pytest.mark.slow
def test_convert_script_gives_a_standard_folder(tmp_path, tiny_sd, sp_model):
    import shutil

    import sentencepiece as spm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, dst = tmp_path / "chatglm3", tmp_path / "converted"
    write_chatglm3_checkpoint(str(src), tiny_sd)
    shutil.copy(sp_model, src / "tokenizer.model")
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "convert_chatglm3.py"), "--checkpoint_dir", str(src),
           "--output_dir", str(dst)]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.load(open(dst / "config.json"))["model_type"] == "glm"
    model = AutoModelForCausalLM.from_pretrained(str(dst)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(dst))
    ids = torch.randint(0, 300, (1, 8))
    with torch.no_grad():
        assert (model(ids).logits - chatglm3_reference_logits(tiny_sd, TINY_CHATGLM3_CONFIG, ids)).abs().max() <= 1e-4
    sp = spm.SentencePieceProcessor(model_file=sp_model)
    chat = CHATS[1]
    assert tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"] == \
        chatglm3_reference_chat_ids(sp, chat, True)
    user, observation = tokenizer.convert_tokens_to_ids(["<|user|>", "<|observation|>"])
    assert model.generation_config.eos_token_id == [2, user, observation]
    import runpy

    main = runpy.run_path(cmd[1], run_name="imported")["main"]
    with pytest.raises(SystemExit, match="not empty"):  # a finished folder is never overwritten silently
        main(cmd[2:])
