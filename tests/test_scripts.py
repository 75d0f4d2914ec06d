"""The command-line scripts end to end on tiny configs: train (1 process, 2 accelerate ranks, resume after a kill),
evaluate (both files, resume), the association plots and the TF-IDF baseline."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # every test here starts the scripts as subprocesses (accelerate included)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
SAMPLE = os.path.join(ROOT, "modeling_iamm", "sample_data")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_DATASETS_DISABLE_PROGRESS_BARS="1",
           OMP_NUM_THREADS="1")
TINY = ["--preset", "tiny", "--data", SAMPLE, "--use_cpu", "true", "--max_samples", "64", "--disable_tqdm", "true"]


def run(args, cwd, timeout=300, **kwargs):
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout,
                          **kwargs)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "iamm"
    stdout = run([os.path.join(SCRIPTS, "train.py"), *TINY, "--output_dir", str(out)], cwd=out.parent)
    return out, stdout


def test_train_single_process_writes_a_complete_folder(trained):
    out, stdout = trained
    assert "[rank 0/1] took part in 20 optimizer steps" in stdout
    summary = json.load(open(out / "train_summary.json"))
    assert summary["global_step"] == 20 and summary["implicit_association"] is False
    for name in ("model.safetensors", "config.json", "configuration_iamm.py", "modeling_iamm.py", "tokenizer.json"):
        assert (out / name).exists(), name
    assert json.load(open(out / "config.json"))["auto_map"]["AutoModel"] == "modeling_iamm.IAMMForConditionalGeneration"
    from transformers import AutoModel

    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    assert model.config.hidden_size == 32
    # refuses to overwrite an existing run without being told
    proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, "train.py"), *TINY, "--output_dir", str(out)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "is not empty: pass --resume_from_checkpoint" in proc.stderr


def test_train_with_two_accelerate_ranks(tmp_path):
    out = tmp_path / "ddp"
    cmd = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", os.path.join(SCRIPTS, "train.py"), *TINY,
           "--max_steps", "6", "--save_steps", "3", "--output_dir", str(out)]
    stdout = run(cmd, cwd=tmp_path, timeout=600)
    assert "[rank 0/2] took part in 6 optimizer steps" in stdout
    assert "[rank 1/2] took part in 6 optimizer steps" in stdout
    state = json.load(open(out / "checkpoint-6" / "trainer_state.json"))
    assert state["global_step"] == 6
    # 2 ranks x 8 samples per step: 6 steps cover 96 samples, i.e. 1.5 epochs of the 64
    assert state["epoch"] == pytest.approx(1.5)
    from modeling_iamm import IAMMForConditionalGeneration

    IAMMForConditionalGeneration.from_pretrained(out)  # the saved checkpoint loads


def test_resume_after_a_kill_loses_nothing(tmp_path, trained):
    reference, _ = trained  # the same run (seed, data, 20 steps), never interrupted
    out = tmp_path / "killed"
    args = [sys.executable, os.path.join(SCRIPTS, "train.py"), *TINY, "--output_dir", str(out), "--save_steps", "4"]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not (out / "checkpoint-8" / "trainer_state.json").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists()  # it did not finish
    # resume: continues from the last checkpoint, same data order, same result as the uninterrupted run
    run([os.path.join(SCRIPTS, "train.py"), *TINY, "--output_dir", str(out), "--save_steps", "4",
         "--resume_from_checkpoint", "true"], cwd=tmp_path)
    assert json.load(open(out / "train_summary.json"))["global_step"] == 20
    a, b = weights(reference), weights(out)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_evaluate_writes_both_files_and_resumes(tmp_path, trained):
    model_dir, _ = trained
    out = tmp_path / "eval"
    args = [os.path.join(SCRIPTS, "evaluate.py"), "--model_name_or_path", str(model_dir), "--data", SAMPLE,
            "--split", "valid", "--output_dir", str(out), "--max_samples", "20", "--batch_size", "8",
            "--max_new_tokens", "8"]
    run(args, cwd=tmp_path)
    records = [json.loads(l) for l in open(out / "predictions.jsonl")]
    metrics = json.load(open(out / "metrics.json"))
    assert len(records) == 20 and metrics["samples"] == 20
    assert metrics["runtime"]["evaluated_samples"] == 20 and metrics["runtime"]["samples_per_second"] > 0
    first = records[0]
    for key in ("conv_id", "context", "gold_emotion", "predicted_emotion", "gold_response", "generated_response",
                "associations", "nll_sum", "n_tokens"):
        assert key in first, key
    assert {"emotion_accuracy_x100", "ppl_paper", "ppl_corpus", "dist1_x100", "dist2_x100"} <= set(metrics)
    # a finished evaluation is not overwritten by accident
    proc = subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "already holds a finished evaluation" in proc.stderr
    # an interrupted one (records 13-20 lost, a half-written line) resumes and gives the same file
    lines = open(out / "predictions.jsonl").read().splitlines(keepends=True)
    with open(out / "predictions.jsonl", "w") as f:
        f.writelines(lines[:12])
        f.write(lines[12][:30])
    os.remove(out / "metrics.json")
    run(args, cwd=tmp_path)
    assert [json.loads(l)["id"] for l in open(out / "predictions.jsonl")] == [r["id"] for r in records]
    assert json.load(open(out / "metrics.json"))["dist1_x100"] == pytest.approx(metrics["dist1_x100"])

    # the results table reads metrics.json and the evaluated model's train_summary.json
    table = run([os.path.join(SCRIPTS, "results_table.py"), "--eval_dirs", str(out), "--json_output",
                 str(tmp_path / "results.json")], cwd=tmp_path)
    row = next(line for line in table.splitlines() if line.startswith("| eval |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "20" and float(cells[3]) == pytest.approx(metrics["emotion_accuracy_x100"], abs=0.01)
    assert float(cells[4]) == pytest.approx(metrics["ppl_paper"], abs=0.01)
    assert json.load(open(tmp_path / "results.json"))["eval"]["train"]["global_step"] == 20

    plots = tmp_path / "plots"
    run([os.path.join(SCRIPTS, "analyze_associations.py"), "--predictions", str(out / "predictions.jsonl"),
                  "--train_data", SAMPLE, "--output_dir", str(plots), "--max_k", "4", "--heatmaps", "2"], cwd=tmp_path)
    pngs = sorted(p for p in os.listdir(plots) if p.endswith(".png"))
    assert "topk_intensity_idf.png" in pngs and sum(p.startswith("association_") for p in pngs) == 2
    for png in pngs:
        assert open(plots / png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    stats = json.load(open(plots / "topk_intensity_idf.json"))
    assert stats["k"] == [1, 2, 3, 4] and stats["all_words_idf"] > 0


def test_tfidf_baseline_runs(tmp_path):
    stdout = run([os.path.join(SCRIPTS, "baseline_tfidf.py"), "--data", SAMPLE, "--inputs", "situation",
                  "context"], cwd=tmp_path)
    result = json.loads(stdout[stdout.index("{"):])
    assert set(result) == {"accuracy_x100[situation]", "accuracy_x100[context]"}
    assert all(0 <= v <= 100 for v in result.values())


def test_tfidf_baseline_combined_with_a_trained_model(tmp_path, trained):
    """--model_name_or_path: the model's heads alone and multiplied with the baseline, on the same samples (the
    baseline's accuracy is sklearn's own prediction's)."""
    model_dir, _ = trained
    stdout = run([os.path.join(SCRIPTS, "baseline_tfidf.py"), "--data", SAMPLE, "--inputs", "situation+context",
                  "--model_name_or_path", str(model_dir), "--device", "cpu"], cwd=tmp_path)
    result = json.loads(stdout[stdout.index("{"):])
    combined = result["with_model"]["accuracy_x100"]
    from modeling_iamm import build_samples, load_empathetic_dialogues
    from modeling_iamm.baselines import _fit, _texts

    samples = build_samples(load_empathetic_dialogues(SAMPLE, splits=["train", "valid"]))
    vectorizer, classifier = _fit(samples["train"], "situation+context", C=10.0, min_df=2, seed=0)
    predicted = classifier.predict(vectorizer.transform(_texts(samples["valid"], "situation+context")))
    expected = 100 * sum(p == g for p, g in zip(predicted, samples["valid"]["emotion"])) / len(predicted)
    assert combined["baseline"] == result["accuracy_x100[situation+context]"] == pytest.approx(expected, abs=0.006)
    assert {"product", "product+baseline", "context", "context+baseline"} <= set(combined)
    predictions = tmp_path / "eval"
    run([os.path.join(SCRIPTS, "evaluate.py"), "--model_name_or_path", str(model_dir), "--data", SAMPLE, "--split",
         "valid", "--output_dir", str(predictions), "--max_new_tokens", "1", "--no_with_associations"], cwd=tmp_path)
    evaluated = json.load(open(predictions / "metrics.json"))["emotion_accuracy_x100"]
    assert combined["product"] == pytest.approx(evaluated, abs=0.006)  # rounded to 2 decimals


@pytest.mark.slow
def test_train_compiled_through_the_trainer(tmp_path):
    """--torch_compile trains through the Trainer's compiled model, with bucketed padding (the "eager" backend here:
    graph capture only; the compiled train step's autograd is checked in test_modeling.py)."""
    out = tmp_path / "compiled"
    run([os.path.join(SCRIPTS, "train.py"), *TINY, "--output_dir", str(out), "--max_steps", "3", "--max_samples", "16",
         "--torch_compile", "true", "--torch_compile_backend", "eager"], cwd=tmp_path)
    summary = json.load(open(out / "train_summary.json"))
    assert summary["global_step"] == 3 and summary["torch_compile"] is True and summary["pad_to_multiple_of"] == 8
    assert summary["compiled_graphs"] >= 1  # the steps ran through the compiled model
    assert torch.isfinite(torch.tensor(summary["train_loss"]))


@pytest.mark.slow
def test_evaluate_compiled_gives_the_eager_records(tmp_path, trained):
    """--torch_compile pads to buckets and runs the compiled encoder and model (the "eager" backend here: graph
    capture, so the compile-time paths, without inductor's C++ build): the same emotions, responses and associated
    words as the eager run, NLL within float tolerance."""
    model_dir, _ = trained
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--torch_compile", "true", "--torch_compile_backend", "eager"])):
        run([os.path.join(SCRIPTS, "evaluate.py"), "--model_name_or_path", str(model_dir), "--data", SAMPLE, "--split",
             "valid", "--output_dir", str(tmp_path / name), "--max_samples", "6", "--batch_size", "6",
             "--max_new_tokens", "6", *extra], cwd=tmp_path)
        runs[name] = [json.loads(l) for l in open(tmp_path / name / "predictions.jsonl")]
    assert json.load(open(tmp_path / "compiled" / "metrics.json"))["runtime"]["compiled_graphs"] >= 2  # encoder, model
    assert json.load(open(tmp_path / "eager" / "metrics.json"))["runtime"]["compiled_graphs"] == 0
    for eager, compiled in zip(runs["eager"], runs["compiled"]):
        for key in ("id", "predicted_emotion", "generated_response", "associations", "n_tokens"):
            assert eager[key] == compiled[key], key
        assert compiled["nll_sum"] == pytest.approx(eager["nll_sum"], rel=1e-4)


def test_evaluate_no_repeat_ngram_size_blocks_repeated_words(tmp_path, trained):
    """--no_repeat_ngram_size 1 (with --repetition_penalty): no word twice in a response (the plain greedy
    responses of this tiny model do repeat words); the settings are recorded in metrics.json."""
    model_dir, _ = trained
    responses = {}
    for name, extra in (("greedy", []), ("blocked", ["--no_repeat_ngram_size", "1", "--repetition_penalty", "1.3"])):
        run([os.path.join(SCRIPTS, "evaluate.py"), "--model_name_or_path", str(model_dir), "--data", SAMPLE, "--split",
             "valid", "--output_dir", str(tmp_path / name), "--max_samples", "8", "--max_new_tokens", "12",
             "--no_with_associations", *extra], cwd=tmp_path)
        responses[name] = [json.loads(l)["generated_response"].split() for l in open(tmp_path / name / "predictions.jsonl")]
    assert any(len(set(words)) < len(words) for words in responses["greedy"])
    assert all(len(set(words)) == len(words) for words in responses["blocked"])
    generation = json.load(open(tmp_path / "blocked" / "metrics.json"))["generation"]
    assert generation["no_repeat_ngram_size"] == 1 and generation["repetition_penalty"] == 1.3
    assert "no_repeat_ngram_size" not in json.load(open(tmp_path / "greedy" / "metrics.json"))["generation"]


def test_benchmark_on_real_batches_reports_times_by_context_and_matrix_products(tmp_path):
    """--data: random batches of a split (times over all and by the longest context); --matmul_time: the seconds in
    matrix products, the vocabulary projection's part of them, within the profiled total."""
    stdout = run([os.path.join(SCRIPTS, "benchmark.py"), "--json", "--data", SAMPLE, "--vocab_size", "400",
                  "--batch_size", "4", "--steps", "3", "--generation_runs", "1", "--new_tokens", "2", "--knowledge",
                  "false", "--inference_samples", "4", "--matmul_time", "true"], cwd=tmp_path)
    result = json.loads(stdout[stdout.index("{"):])
    assert set(result["train_step_s"]) == set(result["greedy_generate_2_tokens_s"]) == {"context_ed"}
    by_context = result["train_step_s_by_context_turns"]
    assert by_context and all(int(k) >= 1 and v > 0 for k, v in by_context.items())
    for key in ("train_step_time_in", "greedy_generate_time_in"):
        times = result[key]
        assert 0 < times["vocab_products_s"] <= times["matrix_products_s"] <= times["profiled_s"], key


def test_gpu_benchmark_script_time_boxes_each_stage_and_keeps_finished_results(tmp_path):
    """benchmark_gpu.sh (checked here with DEVICE=cpu): a stage out of time is recorded as such (exit 124) and the
    next stage still runs and writes its result; a non-empty output folder is refused."""
    out = tmp_path / "out"
    tiny = ("--vocab_size 300 --batch_size 2 --steps 1 --generation_runs 1 --context_turns 1 --new_tokens 2 "
            "--knowledge false --inference_samples 2")
    env = dict(ENV, DEVICE="cpu", STAGES="bench_fp32 bench_bf16", BENCH_ARGS=tiny, STAGE_SECONDS="120",
               PYTHON=sys.executable)
    script = os.path.join(SCRIPTS, "benchmark_gpu.sh")
    subprocess.run(["bash", script, str(out)], env=env, check=True, timeout=300)
    result = json.load(open(out / "bench_fp32.json"))
    assert result["config"]["device"] == "cpu" and result["train_step_top_level_ops"] > 0
    assert json.load(open(out / "bench_bf16.json"))["config"]["dtype"] == "bfloat16"
    assert open(out / "stages.log").read().count(": exit 0 after") == 2
    refused = subprocess.run(["bash", script, str(out)], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "is not empty" in refused.stderr
    out2 = tmp_path / "out2"  # the first stage cannot finish in 1 s; the second still runs
    env.update(STAGES="bench_fp32 train", STAGE_SECONDS="1")
    assert subprocess.run(["bash", script, str(out2)], env=env, timeout=300).returncode == 1  # one stage failed
    log = open(out2 / "stages.log").read()
    assert "== bench_fp32: exit 124" in log and "== train: skipped (no ED_FOLDER)" in log
    assert not (out2 / "bench_fp32.json").exists()
    env.update(STAGES="bench_fp32 bench_fp16")  # a misspelt stage is refused before anything runs
    refused = subprocess.run(["bash", script, str(tmp_path / "out3")], env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "unknown stage bench_fp16" in refused.stderr
    assert not (tmp_path / "out3").exists()
