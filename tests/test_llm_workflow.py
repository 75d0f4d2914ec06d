"""IAMM_large end to end through the scripts, as a user runs them: a trained IAMM -> instruction data ->
LoRA on a (tiny) GLM -> predictions -> LLM metrics, and the instruction data set published to a (local) Hub."""

import json
import os
import runpy
import subprocess
import sys

import pytest

from iamm.llm.records import read_jsonl
from tests.helpers.tiny_glm import tiny_glm_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "modeling_iamm", "sample_data")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_DATASETS_DISABLE_PROGRESS_BARS="1",
           OMP_NUM_THREADS="1", PYTHONPATH=ROOT)

pytestmark = pytest.mark.slow


def run(script, *args):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script), *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script}: {proc.stdout[-2000:]}{proc.stderr[-4000:]}"
    return proc.stdout


def test_instructions_lora_generation_and_llm_metrics_fit_together(tmp_path, monkeypatch):
    iamm = tmp_path / "iamm"
    run("train.py", "--preset", "tiny", "--data", SAMPLE, "--use_cpu", "true", "--max_samples", 64,
        "--disable_tqdm", "true", "--output_dir", iamm)
    instructions = tmp_path / "instructions"
    run("build_instructions.py", "--model_name_or_path", iamm, "--data", SAMPLE, "--splits", "train", "valid",
        "--max_samples", 6, "--output_dir", instructions, "--disable_tqdm", "true")
    info = json.load(open(instructions / "build_info.json"))
    assert info["counts"] == {"train": 6, "valid": 6} and info["model"]
    assert (info["data"], info["data_source"], info["max_samples"]) == ("modeling_iamm/sample_data", "bundled_sample", 6)

    glm = tiny_glm_folder(str(tmp_path / "base"))
    adapter = tmp_path / "lora"
    run("train_lora.py", "--model_name_or_path", glm, "--data_dir", instructions, "--output_dir", adapter,
        "--instruction_column", "messages", "--max_steps", 2, "--per_device_train_batch_size", 2,
        "--gradient_accumulation_steps", 1, "--use_cpu", "true", "--report_to", "none", "--max_length", 512)
    predictions = tmp_path / "valid.jsonl"
    run("generate_lora.py", "--model_name_or_path", glm, "--adapter_dir", adapter, "--data_dir", instructions,
        "--split", "valid", "--output_file", predictions, "--batch_size", 3, "--max_new_tokens", 6)
    header, records = read_jsonl(str(predictions))
    assert header["adapter_sha256"] and len({r["id"] for r in records}) == 6

    metrics_file = tmp_path / "metrics.json"
    run("evaluate_llm.py", "--predictions", predictions, "--instructions", instructions, "--split", "valid",
        "--output_file", metrics_file)
    metrics = json.load(open(metrics_file))
    assert (metrics["samples"], metrics["answered"], metrics["missing"]) == (6, 6, 0)
    # lenient (gold label anywhere in the output) counts at least every strict hit
    assert 0 <= metrics["emotion_accuracy_strict_x100"] <= metrics["emotion_accuracy_lenient_x100"] <= 100

    # ---- published as users publish them: the cards describe the data and the adapter these scripts wrote
    publish_and_check(tmp_path, instructions, adapter, glm, monkeypatch)


DATASET_CLIENT = r'''
import json, sys
from datasets import load_dataset

data = load_dataset("org/iamm-instructions")
print(json.dumps({"splits": {k: len(v) for k, v in data.items()}, "columns": data["train"].column_names,
                  "first": data["train"][0]["id"]}))
'''


def publish_and_check(tmp_path, instructions, adapter, glm, monkeypatch):
    import pyarrow.parquet as pq
    from huggingface_hub import DatasetCard, ModelCard

    from tests.helpers.hub_server import FakeHub

    hub = FakeHub().start()
    try:
        env = dict(ENV, HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_test_token", HF_HOME=str(tmp_path / "home"))
        for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env.pop(key, None)

        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the local server only
        push_main = runpy.run_path(os.path.join(ROOT, "scripts", "push_to_hub.py"), run_name="imported")["main"]

        def push(*args):
            """scripts/push_to_hub.py's main in this process (as the CLI, without a subprocess's start-up)."""
            try:
                push_main([*map(str, args), "--endpoint", hub.endpoint, "--token", "hf_test_token"])
            except SystemExit as stop:
                return 1, "", str(stop.code)
            return 0, "", ""

        code, _, err = push("--kind", "dataset", "--folder", instructions, "--repo_id", "org/iamm-instructions")
        assert code == 0, err[-3000:]
        files = hub.files("org/iamm-instructions", "dataset")
        card = DatasetCard(files["README.md"].decode())
        parquet = sorted(p for p in files if p.endswith(".parquet"))
        assert parquet == ["data/train-00000-of-00001.parquet", "data/valid-00000-of-00001.parquet"]
        columns = pq.read_schema(os.path.join(instructions, parquet[0])).names
        listed = [line.split("`")[1] for line in card.text.split("## Columns")[1].split("##")[0].splitlines()
                  if line.startswith("| `")]
        assert listed == columns  # the card lists exactly the columns the data has, in order
        assert "| train | 6 |" in card.text and "| valid | 6 |" in card.text
        assert "local checkpoint `iamm`" in card.text and str(tmp_path) not in card.text
        assert "only the first 6 samples of each split (`--max_samples 6`)" in card.text
        proc = subprocess.run([sys.executable, "-c", DATASET_CLIENT], env=env, capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        loaded = json.loads(proc.stdout.strip().splitlines()[-1])
        assert loaded["splits"] == {"train": 6, "valid": 6} and loaded["columns"] == columns

        # the adapter: its base is a folder of this machine, so the push asks for the base's Hub id first
        code, _, err = push("--kind", "adapter", "--folder", adapter, "--repo_id", "org/iamm-lora")
        assert code != 0 and "Traceback" not in err and "pass --base_model" in err.strip().splitlines()[-1]
        assert "convert_chatglm3.py" in err  # a ChatGLM3 base: how to make the weights it applies to
        code, _, err = push("--kind", "adapter", "--folder", adapter, "--repo_id", "org/iamm-lora",
                            "--base_model", "org/chatglm3-6b-glm", "--instruction_format", "plain_messages")
        assert code != 0 and "contradicts" in err and "'messages' column" in err  # lora_args.json says messages
        code, _, err = push("--kind", "adapter", "--folder", adapter, "--repo_id", "org/iamm-lora",
                            "--base_model", "org/chatglm3-6b-glm", "--dataset_repo", "org/iamm-instructions")
        assert code == 0, err[-3000:]
        files = hub.files("org/iamm-lora")
        assert "lora_args.json" in files and "adapter_model.safetensors" in files
        assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == "org/chatglm3-6b-glm"
        card = ModelCard(files["README.md"].decode())
        assert card.data.base_model == "org/chatglm3-6b-glm" and card.data.datasets == ["org/iamm-instructions"]
        assert "`messages` column" in card.text and "| instruction format | iamm |" in card.text
        assert "| qkv_adapter | separate |" in card.text  # lora_args.json: one adapter per projection (iamm data)
        assert "convert_chatglm3.py" in card.text and str(tmp_path) not in card.text
        assert "The base is a ChatGLM3-architecture model with 2 layers" in card.text  # the tiny test GLM
        assert str(tmp_path) not in files["lora_args.json"].decode()
    finally:
        hub.stop()
