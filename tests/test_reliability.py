"""Failure modes of the scripts and their package code: resumed evaluations that would mix runs, overwritten runs
whose checkpoints survive, unbounded lengths, unhelpful errors, NaN metrics."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import EvalPrediction

from modeling_iamm import SAMPLE_DATA_DIR, IAMMDataCollator, build_tokenizer
from modeling_iamm.cli import parse_dtype
from modeling_iamm.evaluation import NonFiniteMetricError, check_finite_metrics
from modeling_iamm.tokenization import check_tokenizer, load_tokenizer
from modeling_iamm.training import (IAMMTrainingArguments, check_checkpoint_files, compute_eval_metrics, load_model,
                                    prepare_output_dir)

TINY = ["--preset", "tiny", "--data", SAMPLE_DATA_DIR, "--use_cpu", "true", "--max_samples", "32",
        "--disable_tqdm", "true", "--max_steps", "4", "--save_steps", "2", "--report_to", "none"]


def train(argv):
    from scripts.train import main

    main(TINY + argv)


def evaluate(model_dir, out, *extra):
    from scripts.evaluate import main

    main(["--model_name_or_path", str(model_dir), "--data", SAMPLE_DATA_DIR, "--split", "valid", "--output_dir",
          str(out), "--max_samples", "12", "--batch_size", "5", "--max_new_tokens", "6", *extra])
    return [json.loads(line) for line in open(os.path.join(out, "predictions.jsonl"))]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "iamm"
    train(["--output_dir", str(out), "--max_utterance_length", "12"])
    return out


# ---- 1. resumed evaluations --------------------------------------------------------------------------------


def test_resume_refuses_other_settings_and_model_and_completes_with_the_same(tmp_path, model_dir):
    out = tmp_path / "eval"
    records = evaluate(model_dir, out)
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["length_limits"]["max_utterance_length"] == 12  # the limits saved by train.py
    assert manifest["generation"]["num_beams"] == 1 and manifest["max_samples"] == 12
    # interrupted after 4 records
    lines = open(out / "predictions.jsonl").read().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(lines[:4]))
    os.remove(out / "metrics.json")
    with pytest.raises(SystemExit, match=r"^evaluate: .*another evaluation \(generation: .*'num_beams': 1.* there, "
                                         r".*'num_beams': 3"):
        evaluate(model_dir, out, "--num_beams", "3")
    with pytest.raises(SystemExit, match=r"max_samples: 12 there, 10 now"):
        from scripts.evaluate import main

        main(["--model_name_or_path", str(model_dir), "--data", SAMPLE_DATA_DIR, "--output_dir", str(out),
              "--max_samples", "10", "--max_new_tokens", "6"])
    with pytest.raises(SystemExit, match=r"use_situation: True there, False now"):
        evaluate(model_dir, out, "--use_situation", "false")
    # another model (same path layout, one weight changed)
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    weights = load_file(other / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SystemExit, match=r"model_fingerprint: '\w+' there, '\w+' now"):
        evaluate(other, out)
    assert len(open(out / "predictions.jsonl").read().splitlines()) == 4  # nothing was appended by the refusals
    # an empty metrics.json is not a finished evaluation; the same settings resume and give the same records
    (out / "metrics.json").write_text("")
    resumed = evaluate(model_dir, out)
    assert [r["id"] for r in resumed] == [r["id"] for r in records]
    assert [r["predicted_emotion"] for r in resumed] == [r["predicted_emotion"] for r in records]
    assert json.load(open(out / "metrics.json"))["samples"] == 12
    with pytest.raises(SystemExit, match="^evaluate: .* already holds a finished evaluation"):
        evaluate(model_dir, out)
    # --overwrite_output starts over with the new settings
    evaluate(model_dir, out, "--num_beams", "3", "--overwrite_output", "true")
    assert json.load(open(out / "manifest.json"))["generation"]["num_beams"] == 3


def test_beam_search_and_sampling_keep_each_samples_emotion(tmp_path, model_dir):
    greedy = evaluate(model_dir, tmp_path / "greedy")
    beams = evaluate(model_dir, tmp_path / "beams", "--num_beams", "3")
    sampled = evaluate(model_dir, tmp_path / "sampled", "--do_sample", "true", "--num_return_sequences", "1")
    emotions = [r["predicted_emotion"] for r in greedy]
    assert len(set(emotions)) >= 1 and len(emotions) == 12
    assert [r["predicted_emotion"] for r in beams] == emotions
    assert [r["predicted_emotion"] for r in sampled] == emotions
    assert all(isinstance(r["generated_response"], str) for r in beams + sampled)
    assert [r["nll_sum"] for r in beams] == pytest.approx([r["nll_sum"] for r in greedy], rel=1e-4)


def test_records_keep_the_samples_order_although_batches_are_sorted_by_length(tmp_path, model_dir):
    from datasets import load_dataset  # noqa: F401  (datasets is what the script uses)

    records = evaluate(model_dir, tmp_path / "eval")
    from modeling_iamm.preparation import DataArguments, prepare_data

    data, _ = prepare_data(DataArguments(data=SAMPLE_DATA_DIR, splits=["valid"], max_samples=12),
                           load_tokenizer(str(model_dir)))
    assert [r["id"] for r in records] == [f"{s['conv_id']}#{s['turn']}" for s in data["valid"]]


# ---- 2. overwrite ------------------------------------------------------------------------------------------


def test_overwrite_output_dir_moves_the_old_run_and_its_checkpoints_aside(tmp_path):
    out = tmp_path / "run"
    train(["--output_dir", str(out)])
    old = load_file(out / "model.safetensors")
    assert (out / "checkpoint-4").is_dir()
    train(["--output_dir", str(out), "--overwrite_output_dir", "true", "--max_steps", "2", "--seed", "1"])
    assert not (out / "checkpoint-4").exists()  # a later --resume_from_checkpoint cannot continue the old run
    assert json.load(open(out / "train_summary.json"))["global_step"] == 2
    aside = [p for p in os.listdir(tmp_path) if p.startswith("run.replaced-")]
    assert len(aside) == 1 and (tmp_path / aside[0] / "checkpoint-4").is_dir()
    assert torch.equal(load_file(tmp_path / aside[0] / "model.safetensors")[next(iter(old))], old[next(iter(old))])
    with pytest.raises(SystemExit, match="is not empty"):
        prepare_output_dir(str(out), overwrite=False, resume=None)
    with pytest.raises(ValueError, match="contradict"):
        IAMMTrainingArguments(output_dir=str(out), overwrite_output_dir=True, resume_from_checkpoint="true", use_cpu=True)


# ---- 4. length limits --------------------------------------------------------------------------------------


def test_length_limits_bound_the_batch_and_count_cuts(word_tokenizer):
    collator = IAMMDataCollator(word_tokenizer, max_utterance_length=150, max_target_length=150, max_context_turns=2)
    huge = " ".join(["word"] * 5000)
    sample = {"conv_id": "x", "situation": "s", "context": ["a b", huge, "c"], "context_roles": ["speaker", "listener", "speaker"],
              "target": huge, "emotion_id": 0}
    batch = collator([sample, dict(sample, context=["a"], context_roles=["speaker"])])
    assert batch["context_ids"].shape == (2, 2, 151) and batch["labels"].shape == (2, 151)
    assert collator.truncation_report() == {"max_context_turns": 1, "max_utterance_length": 1, "max_target_length": 2}
    with pytest.raises(ValueError, match="max_target_length must be >= 1"):
        IAMMDataCollator(word_tokenizer, max_target_length=0)


def test_data_arguments_resolve_limits_flag_then_saved_then_default():
    from modeling_iamm.collator import DEFAULT_LENGTH_LIMITS
    from modeling_iamm.preparation import DataArguments

    args = DataArguments(data="x", max_utterance_length=30, max_target_length=0)
    limits = args.length_limits({"max_situation_length": 40, "max_utterance_length": 99})
    assert limits["max_utterance_length"] == 30 and limits["max_target_length"] is None
    assert limits["max_situation_length"] == 40
    assert limits["max_context_turns"] == DEFAULT_LENGTH_LIMITS["max_context_turns"]


# ---- 5/8. errors that say what to fix ----------------------------------------------------------------------


def test_tokenizer_errors(tmp_path, model_dir, word_tokenizer):
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens_map.json", "checkpoint-*"))
    with pytest.raises(SystemExit, match="^evaluate: .*has no tokenizer .* pass --tokenizer_name_or_path"):
        evaluate(bare, tmp_path / "e1")
    assert not (tmp_path / "e1").exists()  # the output folder it made is gone again
    # --tokenizer_name_or_path is used: with the right tokenizer the bare folder evaluates
    assert len(evaluate(bare, tmp_path / "e2", "--tokenizer_name_or_path", str(model_dir))) == 12
    # another run's tokenizer is refused, by vocabulary size, and by fingerprint when the size is the same
    other = tmp_path / "other_tok"
    word_tokenizer.save_pretrained(other)
    with pytest.raises(SystemExit, match=r"tokens but the model was trained with a vocabulary of"):
        evaluate(bare, tmp_path / "e3", "--tokenizer_name_or_path", str(other))
    model = load_model(str(model_dir))
    same_size = build_tokenizer([f"w{i}" for i in range(model.config.vocab_size - 7)])
    assert len(same_size) == model.config.vocab_size
    with pytest.raises(ValueError, match="other words .*fingerprint"):
        check_tokenizer(same_size, model.config)
    with pytest.raises(FileNotFoundError, match=r"no such folder 'runs/nope' \(and it is not a Hub id you can reach"):
        load_model("runs/nope")
    with pytest.raises(FileNotFoundError, match=r"no such folder '\./nope'"):
        load_tokenizer("./nope")


def test_truncated_checkpoint_files_are_named_with_the_previous_checkpoint(tmp_path, model_dir):
    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    check_checkpoint_files(str(run / "checkpoint-4"))  # intact: no error
    path = run / "checkpoint-4" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"checkpoint-4/model.safetensors: .* truncated\. resume from the previous "
                                         r"checkpoint instead \(--resume_from_checkpoint .*checkpoint-2\)"):
        load_model(str(run / "checkpoint-4"))
    optimizer = run / "checkpoint-2" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:50])
    with pytest.raises(SystemExit, match=r"^train: .*checkpoint-2/optimizer.pt: not a complete torch file"):
        train(["--output_dir", str(run), "--resume_from_checkpoint", str(run / "checkpoint-2")])


def test_dtype_names_and_fp16_on_cpu():
    assert parse_dtype("bf16") is parse_dtype("bfloat16") is torch.bfloat16
    assert parse_dtype("FP16") is torch.float16 and parse_dtype("fp32") is torch.float32
    with pytest.raises(ValueError, match=r"--dtype 'half' is not one of: float32, fp32, bfloat16, bf16"):
        parse_dtype("half")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--fp16 true needs a CUDA GPU"):
            IAMMTrainingArguments(output_dir="x", fp16=True, use_cpu=True)


# ---- 6. non-finite metrics ---------------------------------------------------------------------------------


def test_non_finite_metrics_fail_loudly():
    stats = torch.tensor([[3.0, 2, 1], [float("nan"), 2, 1], [4.0, 3, 0]])
    with pytest.raises(ValueError, match=r"eval_ppl=nan.* is not finite: 1 of 3 samples have a non-finite NLL"):
        compute_eval_metrics(EvalPrediction(predictions=stats.numpy(), label_ids=torch.tensor([1, 1, 0]).numpy()))
    finite = compute_eval_metrics(EvalPrediction(predictions=stats[[0, 2]].numpy(), label_ids=torch.tensor([1, 0]).numpy()))
    assert math.isfinite(finite["ppl"])
    records = [{"id": "a#1", "nll_sum": 1.0}, {"id": "b#1", "nll_sum": float("nan")}]
    with pytest.raises(NonFiniteMetricError, match=r"ppl_paper=nan is not finite; 1 of 2 samples .*\(first: b#1\)"):
        check_finite_metrics({"ppl_paper": float("nan"), "dist1_x100": 3.0}, records)
    check_finite_metrics({"ppl_paper": 3.0}, records[:1])


# ---- 7. one evaluation per folder --------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
HOLD_LOCK = ("import sys; from modeling_iamm.folders import FolderLock; FolderLock(sys.argv[1], 'evaluation').acquire(); "
             "print('locked', flush=True); sys.stdin.read()")


def test_a_second_evaluation_into_a_busy_folder_stops_naming_the_holder(tmp_path, model_dir, caplog):
    out = tmp_path / "eval"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=ROOT, env=ENV, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run(
            [sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"), "--model_name_or_path", str(model_dir),
             "--data", SAMPLE_DATA_DIR, "--split", "valid", "--output_dir", str(out), "--max_samples", "4"],
            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert second.returncode != 0 and "Traceback" not in second.stderr
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith(f"evaluate: {out} is in use by another evaluation: pid {holder.pid} on ")
        assert sorted(os.listdir(out)) == [".lock"]  # the second run wrote nothing
    finally:
        holder.kill()  # SIGKILL: its lock file stays behind, naming a process that no longer runs
        holder.wait()
    assert json.loads((out / ".lock").read_text())["pid"] == holder.pid
    with caplog.at_level("WARNING"):
        records = evaluate(model_dir, out)
    assert f"taking over the lock left by pid {holder.pid}" in caplog.text
    assert len(records) == 12 and (out / "metrics.json").exists()
    assert not (out / ".lock").exists()  # released at the end
    with pytest.raises(SystemExit, match="finished evaluation"):
        evaluate(model_dir, out)
    assert not (out / ".lock").exists()  # released when the run fails too


def test_folder_lock_nests_in_one_process_and_without_flock_checks_the_pid(tmp_path, monkeypatch):
    from modeling_iamm import folders

    with folders.FolderLock(str(tmp_path), "evaluation"):
        with folders.FolderLock(str(tmp_path), "evaluation"):  # run_evaluation inside the script's lock
            pass
        assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()
    monkeypatch.setattr(folders, "fcntl", None)  # no flock: the pid in the file decides
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = __import__("socket").gethostname()
    (tmp_path / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": host, "started": "then"}))
    with folders.FolderLock(str(tmp_path)):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": host, "started": "then"}))
    with pytest.raises(folders.FolderLockedError, match=rf"pid {os.getppid()} on {host}, started then"):
        folders.FolderLock(str(tmp_path)).acquire()


def test_output_dir_that_is_a_file_is_one_clear_line(tmp_path, model_dir):
    path = tmp_path / "a_file"
    path.write_text("x")
    with pytest.raises(SystemExit, match=rf"--output_dir {path} is a file, not a folder"):
        evaluate(model_dir, path)
    with pytest.raises(SystemExit, match=rf"--output_dir {path} is a file, not a folder"):
        train(["--output_dir", str(path)])
    assert path.read_text() == "x"


# ---- 8. several responses per sample ------------------------------------------------------------------------


def test_several_responses_per_sample_are_kept_and_dist_counts_the_first(tmp_path, model_dir):
    from modeling_iamm.metrics import distinct_n

    out = tmp_path / "beams"
    records = evaluate(model_dir, out, "--num_beams", "2", "--num_return_sequences", "2")
    assert all(isinstance(r["generated_response"], list) and len(r["generated_response"]) == 2 for r in records)
    metrics = json.load(open(out / "metrics.json"))
    first = [r["generated_response"][0] for r in records]
    assert metrics["dist1_x100"] == pytest.approx(100 * distinct_n(first, 1))
    assert metrics["dist2_x100"] == pytest.approx(100 * distinct_n(first, 2))
    assert "first response" in metrics["dist_over"] and metrics["samples"] == 12
    with pytest.raises(SystemExit, match="--num_return_sequences 3 needs --num_beams >= 3 or --do_sample true"):
        evaluate(model_dir, tmp_path / "refused", "--num_beams", "2", "--num_return_sequences", "3")
    assert not (tmp_path / "refused").exists()  # refused before any work
    with pytest.raises(SystemExit, match="--num_beams must be a whole number >= 1, got 0"):
        evaluate(model_dir, tmp_path / "refused", "--num_beams", "0")


# ---- 9. interrupted, finished and budgeted training runs ---------------------------------------------------


def test_resume_skips_incomplete_checkpoints_saying_which_and_why(tmp_path, model_dir, caplog):
    from modeling_iamm.training import resolve_resume_checkpoint

    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    state = run / "checkpoint-4" / "trainer_state.json"
    state.rename(tmp_path / "state.json")  # killed while writing checkpoint-4: its last file is missing
    with caplog.at_level("WARNING"):
        assert resolve_resume_checkpoint(str(run), "true") == str(run / "checkpoint-2")
    assert f"skipping {run / 'checkpoint-4'}, which is incomplete (it has no trainer_state.json" in caplog.text
    with pytest.raises(ValueError, match=r"checkpoint-4: the checkpoint is incomplete \(it has no trainer_state.json.*"
                                         r"resume from .*checkpoint-2 instead"):
        resolve_resume_checkpoint(str(run), str(run / "checkpoint-4"))
    state.write_text((tmp_path / "state.json").read_text()[:-40])  # cut while writing it
    assert "trainer_state.json is cut" in str(pytest.raises(ValueError, resolve_resume_checkpoint, str(run),
                                                            str(run / "checkpoint-4")).value)
    (tmp_path / "state.json").rename(state)
    weights = run / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # cut while writing the weights
    caplog.clear()
    with caplog.at_level("WARNING"):
        train(["--output_dir", str(run), "--max_utterance_length", "12", "--resume_from_checkpoint", "true"])
    assert "skipping" in caplog.text and "model.safetensors: " in caplog.text and "truncated" in caplog.text
    summary = json.load(open(run / "train_summary.json"))
    assert summary["global_step"] == 4 and summary["stopped_by"] == "max_steps"
    a, b = load_file(model_dir / "model.safetensors"), load_file(run / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)  # the same run as the uninterrupted one
    (run / "checkpoint-2" / "trainer_state.json").unlink()
    (run / "checkpoint-4" / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match=r"no complete checkpoint in .*checkpoint-4: it has no trainer_state.json.*"
                                         r"checkpoint-2: it has no"):
        resolve_resume_checkpoint(str(run), True)


def test_resuming_a_finished_run_trains_nothing(tmp_path, caplog):
    run = tmp_path / "run"
    args = ["--output_dir", str(run), "--max_steps", "6", "--save_steps", "3"]  # 1.5 epochs of 32 samples
    train(args)
    final, summary = (run / "model.safetensors").read_bytes(), (run / "train_summary.json").read_text()
    with caplog.at_level("WARNING"):
        train(args + ["--resume_from_checkpoint", "true"])
    assert "nothing to train: " in caplog.text and "global step 6, the end of --max_steps 6" in caplog.text
    assert (run / "model.safetensors").read_bytes() == final and (run / "train_summary.json").read_text() == summary
    assert sorted(p for p in os.listdir(run) if p.startswith("checkpoint-")) == ["checkpoint-3", "checkpoint-6"]
    # killed after its last checkpoint, before the final save (the summary is an earlier stop's, at step 3): the
    # resume saves the final model and trains nothing
    (run / "model.safetensors").unlink()
    (run / "train_summary.json").write_text(json.dumps(dict(json.loads(summary), global_step=3)))
    train(args + ["--resume_from_checkpoint", "true"])
    assert sorted(p for p in os.listdir(run) if p.startswith("checkpoint-")) == ["checkpoint-3", "checkpoint-6"]
    a, b = load_file(run / "checkpoint-6" / "model.safetensors"), load_file(run / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.load(open(run / "train_summary.json"))["global_step"] == 6


def test_time_budget_is_checked_logged_and_recorded(tmp_path, model_dir, caplog):
    for bad in ("nan", "inf", "-1"):
        with pytest.raises(ValueError, match=r"--max_train_seconds must be a finite number of seconds > 0, got"):
            IAMMTrainingArguments(output_dir=str(tmp_path), max_train_seconds=float(bad), use_cpu=True)
    assert json.load(open(model_dir / "train_summary.json"))["stopped_by"] == "max_steps"
    with caplog.at_level("WARNING"):
        train(["--output_dir", str(tmp_path / "budget"), "--max_train_seconds", "0.001"])
    summary = json.load(open(tmp_path / "budget" / "train_summary.json"))
    assert summary["stopped_by"] == "time_budget" and summary["global_step"] == 1
    assert "--max_train_seconds 0.001 reached after" in caplog.text and "stopping at step 1 of 4" in caplog.text
    assert (tmp_path / "budget" / "checkpoint-1").is_dir()  # the stop point is a checkpoint


def test_max_samples_must_keep_a_sample():
    from modeling_iamm.preparation import DataArguments

    with pytest.raises(ValueError, match=r"--max_samples must be >= 1 \(leave it out for every sample\), got 0"):
        DataArguments(data="x", max_samples=0)


def test_a_full_disk_says_so_and_the_run_resumes_past_the_cut_checkpoint(tmp_path, monkeypatch):
    import errno

    from modeling_iamm.folders import explain_disk_full

    save = torch.save

    def full_disk_at_step_4(obj, path, *args, **kwargs):
        if "checkpoint-4" in str(path):  # what torch's zip writer raises when a write comes up short
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return save(obj, path, *args, **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(torch, "save", full_disk_at_step_4)
    with pytest.raises(SystemExit, match=rf"train: no space left on the disk while writing {run / 'checkpoint-4'} "
                                         r"\([\d.]+ MiB free there; RuntimeError: .*unexpected pos.*\)\. Free space"):
        train(["--output_dir", str(run)])
    monkeypatch.setattr(torch, "save", save)
    train(["--output_dir", str(run), "--resume_from_checkpoint", "true"])  # skips the cut checkpoint-4
    assert json.load(open(run / "train_summary.json"))["global_step"] == 4
    with pytest.raises(OSError, match="no space left on the disk while writing x"):
        with explain_disk_full("x"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(RuntimeError, match="another failure"):  # other errors pass unchanged
        with explain_disk_full("x"):
            raise RuntimeError("another failure")


def test_a_full_disk_while_the_safetensors_weights_are_written_says_so_and_the_run_resumes(tmp_path, monkeypatch):
    import transformers.modeling_utils
    from safetensors import SafetensorError

    save = transformers.modeling_utils.safe_save_file
    full = "Error while serializing: I/O error: No space left on device (os error 28)"  # safetensors on a full disk

    def full_disk_at_step_4(tensors, filename, *args, **kwargs):
        if "checkpoint-4" in str(filename):
            raise SafetensorError(full)
        return save(tensors, filename, *args, **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk_at_step_4)
    with pytest.raises(SystemExit) as exit_info:
        train(["--output_dir", str(run)])
    message = exit_info.value.code
    assert message.startswith(f"train: no space left on the disk while writing {run / 'checkpoint-4'} (")
    assert f"SafetensorError: {full}). Free space" in message and "\n" not in message
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save)
    train(["--output_dir", str(run), "--resume_from_checkpoint", "true"])  # skips the cut checkpoint-4
    assert json.load(open(run / "train_summary.json"))["global_step"] == 4
