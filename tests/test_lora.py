"""LoRA on the instruction data: label masking, truncation, training, adapter save/merge, k-bit paths, scripts."""

import json
import os
import runpy
import subprocess
import sys

import pytest
import torch

from iamm.llm.lora import (
    IGNORE_INDEX,
    CausalLMCollator,
    LoraArguments,
    add_lora,
    encode_training_example,
    load_base_model,
    load_tokenizer,
    prompt_ids,
)
from tests.helpers.tiny_glm import tiny_glm_folder, write_instruction_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESSAGES = [{"role": "system", "content": "You are an empathetic listener."},
            {"role": "user", "content": "Dialogue context: my dog lost today\nHigh weight words: dog"}]
ANSWER = "Emotion: sad\nResponse: sorry to hear that"


@pytest.fixture(scope="module")
def glm_dir(tmp_path_factory):
    return tiny_glm_folder(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def tokenizer(glm_dir):
    return load_tokenizer(glm_dir)


def lora_args(glm_dir, **kw):
    return LoraArguments(model_name_or_path=glm_dir, data_dir="unused", load_in_8bit=kw.pop("load_in_8bit", False),
                         torch_dtype="float32", **kw)


def batch_for(tokenizer, n=4):
    rows = [encode_training_example(tokenizer, MESSAGES, ANSWER.replace("sad", e), 256)
            for e in ["sad", "proud", "angry", "joyful"][:n]]
    return CausalLMCollator(tokenizer.pad_token_id)(rows)


def test_labels_mask_exactly_the_prompt(tokenizer):
    example = encode_training_example(tokenizer, MESSAGES, ANSWER, max_length=256)
    prompt = prompt_ids(tokenizer, MESSAGES)
    assert prompt[-1] == tokenizer.convert_tokens_to_ids("<|assistant|>")
    n = len(prompt)
    assert example["input_ids"][:n] == prompt
    assert example["labels"][:n] == [IGNORE_INDEX] * n
    assert example["labels"][n:] == example["input_ids"][n:]
    assert example["labels"][-1] == tokenizer.eos_token_id
    # what is trained is ChatGLM3's reply: the "\n" header line, the answer, end of text
    assert tokenizer.decode(example["labels"][n:-1]) == "\n " + ANSWER
    assert example["truncated"] is False


AUTHORS_MESSAGES = [{"role": "user", "content": "You are an empathetic conversational agent.\n\nDialogue context: i "
                                                "lost my job today .\n High weight words: job,lost \n Low wieght "
                                                "words: my,today"}]
AUTHORS_ANSWER = "Emotion:sad\n Response:sorry to hear that"


def test_authors_format_is_glmtuners_layout(tokenizer):
    from iamm.llm.instructions import glmtuner_source
    from iamm.llm.lora import encode_authors_example

    gmask, sop = tokenizer.convert_tokens_to_ids(["[gMASK]", "sop"])
    source = tokenizer(glmtuner_source(AUTHORS_MESSAGES[0]["content"]), add_special_tokens=False)["input_ids"]
    target = tokenizer(AUTHORS_ANSWER, add_special_tokens=False)["input_ids"]
    example = encode_authors_example(tokenizer, AUTHORS_MESSAGES, AUTHORS_ANSWER)
    # [gMASK] sop + "[Round 1]\n\n问：<query>\n\n答：" + answer + eos; only the answer and eos are trained
    assert example["input_ids"] == [gmask, sop] + source + target + [tokenizer.eos_token_id]
    assert example["labels"] == [IGNORE_INDEX] * (2 + len(source)) + target + [tokenizer.eos_token_id]
    assert example["truncated"] is False
    assert prompt_ids(tokenizer, AUTHORS_MESSAGES, format="authors") == [gmask, sop] + source  # generation prompt
    # too long: the source loses its END (the word lists, "答："), the answer stays whole, as in their run
    cut = encode_authors_example(tokenizer, AUTHORS_MESSAGES, AUTHORS_ANSWER, max_source_length=12, max_target_length=4)
    assert cut["input_ids"] == [gmask, sop] + source[:10] + target[:3] + [tokenizer.eos_token_id] and cut["truncated"]
    assert prompt_ids(tokenizer, AUTHORS_MESSAGES, 12, format="authors") == [gmask, sop] + source[:10]


def test_authors_data_trains_with_glmtuners_layout(glm_dir, tokenizer, tmp_path):
    from datasets import Dataset

    from iamm.llm.lora import build_training_dataset, encode_authors_example

    rows = Dataset.from_list([{"id": "a", "messages": AUTHORS_MESSAGES, "answer": AUTHORS_ANSWER, "format": "authors"}])
    encoded = build_training_dataset(rows, tokenizer, "messages", max_length=1024)
    assert encoded[0]["input_ids"] == encode_authors_example(tokenizer, AUTHORS_MESSAGES, AUTHORS_ANSWER)["input_ids"]
    mixed = Dataset.from_list([{"id": "a", "messages": MESSAGES, "answer": ANSWER, "format": "iamm"},
                               {"id": "b", "messages": AUTHORS_MESSAGES, "answer": AUTHORS_ANSWER, "format": "authors"}])
    with pytest.raises(ValueError, match="mix formats"):
        build_training_dataset(mixed, tokenizer, "messages", max_length=1024)


def test_training_defaults_are_the_authors_ed_sh():
    """The fine-tuning flags of their examples/ed.sh (fixture) are train_lora.py's defaults; the LoRA and length
    settings they left to glmtuner's defaults (rank 8, alpha 32, dropout 0.1, query_key_value; 512 / 512) too."""
    import re

    from iamm.llm.lora import LoraTrainingArguments

    with open(os.path.join(ROOT, "tests", "fixtures", "iamm_large_authors", "ed.sh")) as f:
        train_command = f.read().split("--do_train")[1].split("CUDA_VISIBLE_DEVICES")[0]
    flags = dict(re.findall(r"--(\w+) ([^\s\\]+)", train_command))
    assert flags["finetuning_type"] == "lora" and flags["quantization_bit"] == "8"
    training = LoraTrainingArguments(output_dir="unused", use_cpu=True)
    for name in ("learning_rate", "num_train_epochs", "warmup_steps", "logging_steps", "save_steps"):
        assert float(getattr(training, name)) == float(flags[name]), name
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        assert getattr(training, name) == int(flags[name]), name
    assert getattr(training.lr_scheduler_type, "value", training.lr_scheduler_type) == flags["lr_scheduler_type"]
    args = LoraArguments(model_name_or_path="unused", data_dir="unused")
    assert (args.lora_r, args.lora_alpha, args.lora_dropout) == (8, 32, 0.1)
    assert (args.max_source_length, args.max_target_length) == (512, 512)


def test_truncation_cuts_the_prompt_from_the_left(tokenizer):
    full = encode_training_example(tokenizer, MESSAGES, ANSWER, max_length=256)
    n_answer = len(full["input_ids"]) - len(prompt_ids(tokenizer, MESSAGES))
    limit = n_answer + 6
    cut = encode_training_example(tokenizer, MESSAGES, ANSWER, max_length=limit)
    assert cut["truncated"] is True and len(cut["input_ids"]) == limit
    assert cut["input_ids"] == full["input_ids"][-limit:]
    assert cut["labels"] == full["labels"][-limit:]  # the whole answer is still trained
    assert cut["labels"].count(IGNORE_INDEX) == 6


def test_collator_pads_right_with_ignored_labels(tokenizer):
    rows = [encode_training_example(tokenizer, MESSAGES, a, 256) for a in ("Emotion: sad", ANSWER)]
    batch = CausalLMCollator(tokenizer.pad_token_id)(rows)
    short = len(rows[0]["input_ids"])
    assert batch["attention_mask"][0].sum().item() == short
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][0, short:] == tokenizer.pad_token_id).all()


def test_default_lora_targets_the_qkv_projections(glm_dir):
    model = add_lora(load_base_model(lora_args(glm_dir)), lora_args(glm_dir))
    assert model.peft_config["default"].target_modules == {"q_proj", "k_proj", "v_proj"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert len(trainable) == 2 * 3 * 2  # A and B for q, k, v in both layers
    assert model.peft_config["default"].r == 8


def test_fused_qkv_adapter_has_the_authors_trainable_count_at_chatglm3_size():
    """Their log: "trainable params: 1949696 || all params: 6245533696" (r=8 on query_key_value, 28 layers). Counted
    on the meta device at ChatGLM3-6B's real size (its config.json, translated), nothing allocated."""
    from transformers import GlmForCausalLM

    from iamm.llm.chatglm3 import chatglm3_config_to_glm

    with open(os.path.join(ROOT, "tests", "fixtures", "chatglm3-6b", "config.json")) as f:
        config = chatglm3_config_to_glm(json.load(f))
    counts = {}
    for kind in ("fused", "separate"):
        with torch.device("meta"):
            model = GlmForCausalLM(config)
        counts[kind] = add_lora(model, lora_args("unused", qkv_adapter=kind)).get_nb_trainable_parameters()
    assert counts["fused"] == (1_949_696, 6_245_533_696)
    assert counts["separate"][0] == 28 * 135_168  # three rank-8 adapters: a rank-24 update, twice the parameters


def _qkv_update(model, layer=0):
    """The (q + k + v rows) x hidden update the adapter adds to layer `layer`'s query/key/value projection."""
    attention = model.base_model.model.model.layers[layer].self_attn
    return torch.cat([getattr(attention, p).get_delta_weight("default") for p in ("q_proj", "k_proj", "v_proj")])


def test_fused_qkv_adapter_is_one_rank_r_update_and_reloads(glm_dir, tokenizer, tmp_path):
    from peft import PeftModel

    args = lora_args(glm_dir, lora_dropout=0.0, qkv_adapter="fused")
    model = add_lora(load_base_model(args), args)
    attention = model.base_model.model.model.layers[0].self_attn
    assert attention.q_proj.lora_A["default"].weight is attention.v_proj.lora_A["default"].weight
    # r=8: A (8 x 64) once, B of q (64 x 8), k and v (32 x 8 each), in 2 layers: the fused layer's count
    assert model.get_nb_trainable_parameters()[0] == 2 * (8 * 64 + (64 + 32 + 32) * 8)
    batch = batch_for(tokenizer)
    _train_steps(model, batch, 4, lr=2e-2)
    assert attention.q_proj.lora_A["default"].weight is attention.k_proj.lora_A["default"].weight  # still shared
    assert torch.linalg.matrix_rank(_qkv_update(model)).item() == 8
    separate = add_lora(load_base_model(args), lora_args(glm_dir, lora_dropout=0.0, qkv_adapter="separate"))
    _train_steps(separate, batch, 4, lr=2e-2)
    assert torch.linalg.matrix_rank(_qkv_update(separate)).item() > 8  # three adapters: up to rank 24
    model.eval()
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(load_base_model(args), tmp_path / "adapter").eval()
    with torch.no_grad():
        assert (reloaded(**batch).logits - model(**batch).logits).abs().max().item() < 1e-5


def test_authors_format_data_defaults_to_the_fused_adapter(glm_dir):
    from iamm.llm.lora import resolve_qkv_adapter

    assert resolve_qkv_adapter(lora_args("unused"), "authors") == "fused"
    assert resolve_qkv_adapter(lora_args("unused"), "iamm") == "separate"
    assert resolve_qkv_adapter(lora_args("unused", qkv_adapter="separate"), "authors") == "separate"
    with pytest.raises(ValueError, match="--qkv_adapter 'joint'"):
        lora_args("unused", qkv_adapter="joint")
    with pytest.raises(ValueError, match="needs q_proj, k_proj and v_proj all adapted"):
        add_lora(load_base_model(lora_args(glm_dir)), lora_args(glm_dir, qkv_adapter="fused",
                                                                target_modules="q_proj,v_proj"))


def _train_steps(model, batch, steps, lr=5e-3):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_loss_falls_and_adapter_reloads_and_merges_identically(glm_dir, tokenizer, tmp_path):
    from peft import PeftModel

    args = lora_args(glm_dir, lora_dropout=0.0)
    model = add_lora(load_base_model(args), args)
    batch = batch_for(tokenizer)
    losses = _train_steps(model, batch, 12, lr=2e-2)
    assert losses[-1] < losses[0] - 0.5
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(load_base_model(args), tmp_path / "adapter").eval()
    base = load_base_model(args).eval()
    with torch.no_grad():
        assert (reloaded(**batch).logits - trained).abs().max().item() < 1e-5
        assert (base(**batch).logits - trained).abs().max().item() > 1e-3  # the adapter does change the model
        merged = reloaded.merge_and_unload()
        assert (merged(**batch).logits - trained).abs().max().item() < 1e-4


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_kbit_base_trains_a_step_on_cpu(glm_dir, tokenizer, bits):
    args = lora_args(glm_dir, load_in_8bit=bits == "8bit", load_in_4bit=bits == "4bit", bnb_4bit_compute_dtype="float32")
    base = load_base_model(args)
    assert getattr(base, f"is_loaded_in_{bits[0]}bit")
    model = add_lora(base, args)
    lora_b = next(p for n, p in model.named_parameters() if "lora_B" in n)
    before = lora_b.detach().clone()
    losses = _train_steps(model, batch_for(tokenizer, 2), 2)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(before, lora_b.detach())


def test_conflicting_quantisation_flags_are_refused(glm_dir):
    with pytest.raises(ValueError, match="exclude each other"):
        LoraArguments(model_name_or_path=glm_dir, data_dir="d", load_in_8bit=True, load_in_4bit=True)
    with pytest.raises(ValueError, match="instruction_column"):
        LoraArguments(model_name_or_path=glm_dir, data_dir="d", instruction_column="text")


def _run(script, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def _main(script):
    """The script's `main`, in this process (argument checks without a new interpreter)."""
    return runpy.run_path(os.path.join(ROOT, "scripts", script), run_name="imported")["main"]


def test_train_script_user_mistakes_are_one_line_before_any_work(glm_dir, tmp_path):
    data = write_instruction_dataset(str(tmp_path / "instructions"))
    out = tmp_path / "run"
    base = ["--model_name_or_path", glm_dir, "--output_dir", str(out), "--use_cpu", "true", "--report_to", "none"]
    cases = [
        (["--data_dir", str(tmp_path / "nowhere")], "no instruction data"),
        (["--data_dir", data, "--train_split", "training"], "split(s) ['training'] not built"),
        (["--data_dir", data, "--eval_strategy", "steps", "--eval_split", "dev"], "split(s) ['dev'] not built"),
        ([], "--data_dir is required"),
    ]
    for extra, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            _main("train_lora.py")(base + extra)
        message = str(exit_info.value.code)
        assert message.startswith("train_lora: ") and expected in message and "\n" not in message, message
        assert not out.exists()


@pytest.mark.slow
def test_train_script_trains_resumes_merges_and_refuses_a_used_folder(glm_dir, tmp_path):
    data = write_instruction_dataset(str(tmp_path / "instructions"))
    out = tmp_path / "run"
    train = ["--model_name_or_path", glm_dir, "--data_dir", data, "--output_dir", out, "--max_steps", 2,
             "--per_device_train_batch_size", 2, "--gradient_accumulation_steps", 1, "--use_cpu", "true",
             "--save_steps", 1, "--report_to", "none", "--instruction_column", "plain_messages"]
    run = _run("train_lora.py", *train, "--merge", "true")
    assert run.returncode == 0, run.stderr[-3000:]
    assert os.path.isfile(out / "adapter_model.safetensors") and os.path.isfile(out / "merged" / "config.json")
    recorded = json.load(open(out / "lora_args.json"))
    assert recorded["instruction_column"] == "plain_messages"
    assert recorded["qkv_adapter"] == "separate"  # iamm-format data
    # local folders relative to the adapter folder: no absolute path of this machine
    assert (recorded["model_name_or_path"], recorded["data_dir"]) == (os.path.relpath(glm_dir, out), "../instructions")
    with pytest.raises(SystemExit, match="not empty"):
        _main("train_lora.py")(list(map(str, train)))
    resumed = _run("train_lora.py", *train[:-8], "--max_steps", 3, "--save_steps", 1, "--report_to", "none",
                   "--instruction_column", "plain_messages", "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = json.load(open(out / "checkpoint-3" / "trainer_state.json"))
    assert state["global_step"] == 3 and len([h for h in state["log_history"] if "loss" in h]) <= 3


@pytest.fixture(scope="module")
def adapter_dir(glm_dir, tmp_path_factory):
    """A LoRA adapter trained a few steps in this process, saved as train_lora.py saves it."""
    folder = tmp_path_factory.mktemp("adapter")
    args = lora_args(glm_dir, lora_dropout=0.0, instruction_column="plain_messages")
    model = add_lora(load_base_model(args), args)
    _train_steps(model, batch_for(load_tokenizer(glm_dir)), 3, lr=2e-2)
    model.save_pretrained(folder)
    json.dump({"instruction_column": "plain_messages"}, open(folder / "lora_args.json", "w"))
    return str(folder)


def _generation_args(glm_dir, adapter, data, output, **kw):
    from iamm.llm.lora import GenerationArguments

    return GenerationArguments(model_name_or_path=glm_dir, adapter_dir=adapter, data_dir=data, split="valid",
                               output_file=str(output), batch_size=kw.pop("batch_size", 2), max_new_tokens=kw.pop("max_new_tokens", 6),
                               torch_dtype="float32", **kw)


def test_generation_resumes_skipping_finished_ids_and_refuses_other_settings(glm_dir, adapter_dir, tmp_path):
    from iamm.llm.lora import generate_predictions
    from iamm.llm.records import read_jsonl

    data = write_instruction_dataset(str(tmp_path / "instructions"))
    whole, parts = tmp_path / "whole.jsonl", tmp_path / "parts.jsonl"
    assert generate_predictions(_generation_args(glm_dir, adapter_dir, data, whole, batch_size=6)) == 6
    header, records = read_jsonl(str(whole))
    assert header["instruction_column"] == "plain_messages" and len(records) == 6
    assert generate_predictions(_generation_args(glm_dir, adapter_dir, data, parts, max_samples=2)) == 2
    with pytest.raises(ValueError, match="other settings.*max_new_tokens"):
        generate_predictions(_generation_args(glm_dir, adapter_dir, data, parts, max_new_tokens=3))
    with open(parts, "a") as f:
        f.write('{"id": "valid2:')  # an interrupted write
    # the same run, continued over the whole split: only the missing ids are answered
    assert generate_predictions(_generation_args(glm_dir, adapter_dir, data, parts, batch_size=3)) == 4
    assert open(parts).read() == open(whole).read()  # left padding: same greedy outputs in any batching
    with open(tmp_path / "orphan.jsonl", "w") as f:
        f.write('{"id": "valid0:1", "output": "hi"}\n')  # predictions of unknown origin
    with pytest.raises(ValueError, match="__header__"):
        generate_predictions(_generation_args(glm_dir, adapter_dir, data, tmp_path / "orphan.jsonl"))


def _authors_format_dataset(directory):
    """The tiny instruction data set as --format authors writes it: one user turn, the `format` column."""
    import pandas as pd

    write_instruction_dataset(directory)
    for split in ("train", "valid", "test"):
        path = os.path.join(directory, "data", f"{split}.parquet")
        frame = pd.read_parquet(path)
        frame["messages"] = [[{"role": "user", "content": " ".join(m["content"] for m in messages)}]
                             for messages in frame["messages"]]
        frame["format"] = "authors"
        frame.to_parquet(path)
    return directory


def test_authors_decoding_loads_the_base_in_fp16_where_cuda_is(glm_dir, adapter_dir, monkeypatch):
    from iamm.llm.lora import resolve_decoding

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def dtype(data_format, torch_dtype="auto"):
        args = _generation_args(glm_dir, adapter_dir, "d", "u")
        args.torch_dtype = torch_dtype
        return resolve_decoding(args, data_format).torch_dtype

    assert (dtype("authors"), dtype("iamm"), dtype("authors", "bfloat16")) == ("float16", "auto", "bfloat16")


def test_authors_format_defaults_to_their_seeded_sampling(glm_dir, adapter_dir, tmp_path):
    """glmtuner's sft/workflow.py: do_sample, top_p 0.7, temperature 0.95, max_new_tokens 512 + 1 (top_k 50, the
    transformers default of their run); greedy stays the default for the project's format. Seeded per batch: the
    same command gives the same file, and a run continued after --max_samples (inside a batch) gives what one run
    gives."""
    from iamm.llm.lora import generate_predictions, resolve_decoding
    from iamm.llm.records import read_jsonl

    data = _authors_format_dataset(str(tmp_path / "authors"))
    args = resolve_decoding(_generation_args(glm_dir, adapter_dir, data, "u", max_new_tokens=None), "authors")
    assert (args.decoding, args.do_sample, args.top_p, args.temperature, args.top_k, args.max_new_tokens) == \
        ("authors", True, 0.7, 0.95, 50, 513)
    greedy = resolve_decoding(_generation_args(glm_dir, adapter_dir, data, "u", max_new_tokens=None), "iamm")
    assert (greedy.decoding, greedy.do_sample, greedy.max_new_tokens) == ("greedy", False, 128)
    mine = resolve_decoding(_generation_args(glm_dir, adapter_dir, data, "u", top_p=0.9), "authors")
    assert (mine.top_p, mine.temperature) == (0.9, 0.95)

    def run(output, **kw):
        generate_predictions(_generation_args(glm_dir, adapter_dir, data, tmp_path / output, **kw))
        return read_jsonl(str(tmp_path / output))

    header, first = run("a.jsonl")
    assert (header["decoding"], header["do_sample"], header["top_p"], header["temperature"], header["top_k"]) == \
        ("authors", True, 0.7, 0.95, 50) and header["max_new_tokens"] == 6  # (the test's own cap)
    assert run("b.jsonl") == (header, first)
    run("c.jsonl", max_samples=1)  # stopped inside a batch (of 2): continued, every answer is the one-run answer
    assert run("c.jsonl") == (header, first)
    _, other_seed = run("d.jsonl", seed=7)
    assert [r["output"] for r in other_seed] != [r["output"] for r in first]  # it does sample


def test_generation_uses_the_adapter(glm_dir, adapter_dir, tmp_path):
    from iamm.llm.lora import generate_predictions

    data = write_instruction_dataset(str(tmp_path / "instructions"))
    generate_predictions(_generation_args(glm_dir, adapter_dir, data, tmp_path / "a.jsonl", max_samples=4))
    generate_predictions(_generation_args(glm_dir, None, data, tmp_path / "b.jsonl", max_samples=4))
    assert open(tmp_path / "a.jsonl").read() != open(tmp_path / "b.jsonl").read()


@pytest.mark.slow
def test_generate_script_writes_jsonl(glm_dir, adapter_dir, tmp_path):
    data = write_instruction_dataset(str(tmp_path / "instructions"))
    preds = tmp_path / "preds.jsonl"
    run = _run("generate_lora.py", "--model_name_or_path", glm_dir, "--adapter_dir", adapter_dir, "--data_dir", data,
               "--split", "test", "--output_file", preds, "--batch_size", 4, "--max_new_tokens", 5)
    assert run.returncode == 0, run.stderr[-3000:]
    import pandas as pd

    from iamm.llm.records import read_jsonl

    header, lines = read_jsonl(str(preds))
    assert header["split"] == "test"
    assert [r["id"] for r in lines] == list(pd.read_parquet(os.path.join(data, "data", "test.parquet"))["id"])
    assert all(set(r) == {"id", "output"} and isinstance(r["output"], str) for r in lines)


def test_benchmark_runs_with_tiny_dims():
    main = _main("benchmark_lora.py")
    from contextlib import redirect_stdout
    from io import StringIO

    buffer = StringIO()
    with redirect_stdout(buffer):
        main(["--tiny", "true", "--quantization", "4bit", "--steps", "2", "--batch_size", "2", "--seq_len", "16",
              "--dtype", "float32"])
    result = json.loads(buffer.getvalue().strip().splitlines()[-1])
    # r=8 on q (64 -> 64), k and v (64 -> 32) in 2 layers, one input projection shared by the three (the default)
    assert result["dims"] == "tiny" and result["trainable_parameters"] == 2 * (8 * 64 + (64 + 32 + 32) * 8)
    assert result["s_per_step"] > 0 and result["quantization"] == "4bit" and result["qkv_adapter"] == "fused"
    buffer = StringIO()
    with redirect_stdout(buffer):
        main(["--tiny", "true", "--count_only", "true", "--qkv_adapter", "separate"])
    counted = json.loads(buffer.getvalue().strip().splitlines()[-1])
    assert counted["trainable_parameters"] == 2 * (8 * 64 + 64 * 8 + 2 * (8 * 64 + 32 * 8))
