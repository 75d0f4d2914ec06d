"""IAMM_large end to end through the scripts, as a user runs them: a trained IAMM -> instruction data ->
LoRA on a (tiny) GLM -> predictions -> LLM metrics, and the instruction data set published to a (local) Hub."""

import json
import os
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


def test_instructions_lora_generation_and_llm_metrics_fit_together(tmp_path):
    iamm = tmp_path / "iamm"
    run("train.py", "--preset", "tiny", "--data", SAMPLE, "--use_cpu", "true", "--max_samples", 64,
        "--disable_tqdm", "true", "--output_dir", iamm)
    instructions = tmp_path / "instructions"
    run("build_instructions.py", "--model_name_or_path", iamm, "--data", SAMPLE, "--splits", "train", "valid",
        "--max_samples", 6, "--output_dir", instructions, "--disable_tqdm", "true")
    info = json.load(open(instructions / "build_info.json"))
    assert info["counts"] == {"train": 6, "valid": 6} and info["model"]

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
