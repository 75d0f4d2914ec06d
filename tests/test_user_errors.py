"""A user's mistake ends every script with one line naming the flag, file or field, a non-zero exit and nothing
written; and the Python API names what is wrong with a model folder, a config or a dialogue."""

import errno
import json
import os
import re
import runpy
import subprocess
import sys

import pytest
import torch
from safetensors import SafetensorError

from modeling_iamm import SAMPLE_DATA_DIR, IAMMConfig, IAMMForConditionalGeneration
from modeling_iamm.cli import one_line, user_errors
from modeling_iamm.folders import explain_disk_full, is_disk_full
from modeling_iamm.tokenization import tokenizer_fingerprint
from tests.helpers.tiny_model import IAMMModelTester

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=ROOT)
ENV.pop("IAMM_TRACEBACK", None)
DISK_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"  # safetensors' full disk


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, name), folder) for d, dirs, names in os.walk(folder)
                  for name in names + dirs)


def refusal(script, argv, folder):
    """Run scripts/<script>.py's main in-process with the working directory `folder`; return its exit message,
    checking that it is one line starting with the script's name, and that nothing was written into `folder`."""
    main = runpy.run_path(os.path.join(ROOT, "scripts", f"{script}.py"), run_name="imported")["main"]
    before = files_under(folder)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
    finally:
        os.chdir(cwd)
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith(f"{script}: ") and "\n" not in message, message
    assert files_under(folder) == before, f"{script} wrote {sorted(set(files_under(folder)) - set(before))}"
    return message


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, word_tokenizer):
    """A tiny IAMM folder as scripts/train.py saves it (weights, config, code, tokenizer)."""
    config = IAMMModelTester(vocab_size=len(word_tokenizer)).get_config(use_implicit_association=False)
    torch.manual_seed(0)
    model = IAMMForConditionalGeneration(config)
    model.config.update({"tokenizer_fingerprint": tokenizer_fingerprint(word_tokenizer)})
    folder = tmp_path_factory.mktemp("model") / "iamm"
    model.save_pretrained(folder, tokenizer=word_tokenizer)
    return folder


S = SAMPLE_DATA_DIR
CASES = [  # script, arguments, what the line names
    ("train", ["--data", S, "--output_dir", "out", "--max_train_seconds", "nan"],
     "--max_train_seconds must be a finite number of seconds > 0, got nan"),
    ("train", ["--output_dir", "out"], "pass --data"),
    ("train", ["--data", S, "--output_dir", "out", "--per_device_train_batch_size", "many"],
     "--per_device_train_batch_size/--per-device-train-batch-size: invalid int value: 'many'"),
    ("train", ["--data", S, "--output_dir", "out", "--no_such_flag", "1"], "['--no_such_flag', '1']"),
    ("evaluate", ["--model_name_or_path", "m", "--data", S, "--output_dir", "out", "--max_new_tokens", "-1"],
     "--max_new_tokens must be a whole number >= 1, got -1"),
    ("evaluate", ["--model_name_or_path", "m", "--data", S, "--output_dir", "out", "--batch_size", "0"],
     "--batch_size must be >= 1, got 0"),
    ("evaluate", ["--model_name_or_path", "m", "--data", S, "--output_dir", "out", "--max_samples", "0"],
     "--max_samples must be >= 1"),
    ("evaluate", ["--model_name_or_path", "m", "--data", S, "--output_dir", "out", "--do_sample", "true",
                  "--top_p", "1.5"], "--top_p must be in (0, 1], got 1.5"),
    ("evaluate", ["--model_name_or_path", "m", "--data", S, "--output_dir", "out", "--repetition_penalty", "0"],
     "--repetition_penalty must be > 0, got 0.0"),
    ("evaluate", ["--model_name_or_path", "m", "--data", S], "required: --output_dir"),
    ("build_instructions", ["--model_name_or_path", "m", "--data", S, "--output_dir", "out", "--batch_size", "0"],
     "--batch_size must be >= 1, got 0"),
    ("diagnose_emotion_heads", ["--model_name_or_path", "m", "--data", S, "--batch_size", "0"],
     "--batch_size must be >= 1, got 0"),
    ("baseline_tfidf", ["--data", S, "--C", "0"], "--C must be > 0"),
    ("baseline_tfidf", ["--data", S, "--inputs", "situation+nothing"], "--inputs 'situation+nothing'"),
    ("benchmark", ["--steps", "0"], "--steps must be >= 1, got 0"),
    ("benchmark_lora", ["--dtype", "half"], "--dtype must be bfloat16, float16 or float32, got 'half'"),
    ("analyze_associations", ["--predictions", "p.jsonl", "--train_data", S, "--output_dir", "out", "--max_k", "0"],
     "--max_k must be >= 1, got 0"),
    ("analyze_associations", ["--predictions", "p.jsonl", "--train_data", S, "--output_dir", "out"],
     "--predictions p.jsonl: no such file"),
    ("average_checkpoints", ["--output_dir", "out"], "pass either --run_dir"),
    ("select_checkpoint", ["--run_dir", "nowhere"], "nowhere: no checkpoint-N folder"),
    ("results_table", ["--eval_dirs", "nowhere"], "nowhere/metrics.json: no such file"),
    ("generate_knowledge", ["--data", S, "--output_file", "k.jsonl", "--max_new_tokens", "0"],
     "--max_new_tokens must be a whole number >= 1, got 0"),
    ("generate_lora", ["--model_name_or_path", "m", "--data_dir", "d", "--top_p", "1.5"],
     "--top_p must be in (0, 1], got 1.5"),
    ("generate_lora", ["--model_name_or_path", "m", "--data_dir", "d", "--max_samples", "0"],
     "--max_samples must be >= 1, got 0"),
    ("train_lora", ["--model_name_or_path", "m", "--output_dir", "out"], "--data_dir is required"),
    ("prompt_openai", ["--instructions", "i", "--output_file", "o.jsonl", "--max_samples", "0"],
     "--max_samples must be >= 1, got 0"),
    ("evaluate_llm", ["--predictions", "none.jsonl", "--instructions", "i"], "i: no instruction data"),
    ("convert_chatglm3", ["--checkpoint_dir", "c", "--output_dir", "out", "--dtype", "half"], "--dtype 'half'"),
    ("push_to_hub", ["--kind", "model", "--folder", "f"], "required: --repo_id"),
    ("demo", ["--model_name_or_path", "m", "--port", "70000"], "--port must be in 0..65535, got 70000"),
    ("quickstart", ["--output_dir", "out", "--epochs", "0"], "--epochs must be > 0"),
    ("quickstart", ["--output_dir", "out", "--max_samples", "0"], "--max_samples must be >= 1, got 0"),
    ("ab_test", ["prepare", "--a", "a.jsonl", "--b", "b.jsonl", "--study", "s"], "a.jsonl: no such file"),
    ("ab_test", ["report", "--study", "s"], "s: no study here"),
    ("ab_test", ["judge", "--study", "s", "--seeds", "1", "1"], "s: no study here"),
    ("ab_test", ["annotate", "--study", "s", "--port", "x"], "--port: invalid int value: 'x'"),
    ("ab_test", ["compare", "--study"], "the first argument is the command"),
    ("benchmark_annotation", ["--study", "s", "--annotators", "0"], "--annotators must be >= 1"),
]


@pytest.mark.parametrize("script, argv, expected", CASES, ids=[f"{c[0]}:{c[1][-2]}" for c in CASES])
def test_every_script_refuses_a_bad_value_with_one_line_and_writes_nothing(tmp_path, capsys, script, argv, expected):
    message = refusal(script, argv, tmp_path)
    assert expected in message, message
    assert "Traceback" not in capsys.readouterr().err


def test_all_scripts_are_covered():
    scripts = {name[:-3] for name in os.listdir(os.path.join(ROOT, "scripts")) if name.endswith(".py")}
    assert scripts == {case[0] for case in CASES}  # (scripts/reference/side_by_side.py: tests/test_reference.py)


def test_a_config_file_is_read_as_the_command_line_and_a_bad_value_in_it_named(tmp_path):
    from modeling_iamm.cli import parse_args
    from modeling_iamm.preparation import DataArguments
    from modeling_iamm.training import IAMMTrainingArguments

    (tmp_path / "run.yaml").write_text(f"data: {S}\noutput_dir: out\nlearning_rate: 1e-3\nmax_steps: 5\n"
                                       f"use_cpu: true\n")
    _, training = parse_args((DataArguments, IAMMTrainingArguments), [str(tmp_path / "run.yaml")])
    assert training.learning_rate == 0.001 and training.max_steps == 5  # (YAML reads 1e-3 as text)
    (tmp_path / "bad.yaml").write_text(f"data: {S}\noutput_dir: out\nmax_steps: many\n")
    assert refusal("train", ["bad.yaml"], tmp_path) == "train: bad.yaml: max_steps: invalid int value 'many'"
    (tmp_path / "list.yaml").write_text("- data\n")
    assert refusal("train", ["list.yaml"], tmp_path) == ("train: list.yaml: expected a mapping of flag names to "
                                                         "values, got list")


def test_a_bug_keeps_its_traceback_and_iamm_traceback_shows_a_refusals(monkeypatch):
    with pytest.raises(SystemExit, match="^x: --y must be >= 1$"):
        with user_errors("x"):
            raise ValueError("--y must be >= 1")
    with pytest.raises(KeyError):  # not a user mistake: the traceback stays
        with user_errors("x"):
            raise KeyError("bug")
    monkeypatch.setenv("IAMM_TRACEBACK", "1")
    with pytest.raises(ValueError, match="--y"):
        with user_errors("x"):
            raise ValueError("--y must be >= 1")
    assert one_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "a.csv")) == \
        "a.csv: No such file or directory"
    assert one_line(ValueError("first line\n  second line")) == "first line second line"


def test_data_errors_name_the_flag_and_never_advise_skipping_where_it_cannot_help(tmp_path, model_dir):
    header = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags\n"
    good = "hit:0_conv:0,1,sad,my dog died,1,I miss my dog,,\nhit:0_conv:0,2,sad,my dog died,2,I am sorry,,\n"
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.csv").write_text(header + good + "hit:1_conv:1,1,gloomy,rain,1,It rains,,\n"
                                                  "hit:1_conv:1,2,gloomy,rain,2,Oh no,,\n")
    argv = ["--model_name_or_path", str(model_dir), "--test_file", str(data / "test.csv"), "--split", "test",
            "--output_dir", "out", "--max_new_tokens", "2"]
    message = refusal("evaluate", argv, tmp_path)
    assert "field 'context': unknown emotion 'gloomy'" in message
    assert "pass --skip_invalid true to drop the conversation" in message and "skip_invalid=True" not in message
    (data / "test.csv").write_bytes((header + good).encode() + "hit:1_conv:1,1,sad,caf\xe9,1,x,,\n".encode("latin-1"))
    for extra in ([], ["--skip_invalid", "true"]):
        message = refusal("evaluate", argv + extra, tmp_path)
        assert "test.csv, line 4, field 'encoding': not UTF-8 text (byte b'\\xe9' at column 23)" in message
        assert "Convert the file to UTF-8" in message and "pass --skip_invalid" not in message
        assert "skip_invalid=True" not in message
    assert files_under(tmp_path) == ["data", os.path.join("data", "test.csv")]


def test_evaluation_refuses_generation_settings_before_writing(tmp_path, model_dir, word_tokenizer):
    from modeling_iamm.evaluation import run_evaluation
    from modeling_iamm.preparation import DataArguments, prepare_data

    data, _ = prepare_data(DataArguments(data=SAMPLE_DATA_DIR, splits=["valid"], max_samples=2), word_tokenizer)
    model = IAMMForConditionalGeneration.from_pretrained(model_dir)
    for bad in ({"max_new_tokens": -1}, {"do_sample": True, "top_p": 1.5}, {"temperature": 0.0, "do_sample": True}):
        with pytest.raises(ValueError, match=f"{next(k for k in bad if k != 'do_sample')} must be"):
            run_evaluation(model, word_tokenizer, data["valid"], str(tmp_path / "eval"), progress=False, **bad)
        assert not (tmp_path / "eval").exists()  # no folder, no manifest.json, no empty predictions.jsonl


def test_quickstart_on_a_used_folder_offers_only_its_own_flags(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_text("an earlier run")
    message = refusal("quickstart", ["--output_dir", "out"], tmp_path)
    assert message == ("quickstart: out is not empty: pass --overwrite_output_dir true to start over (the old run is "
                       "moved aside, not mixed in), or choose another --output_dir")


def test_a_truncated_weights_file_is_named_with_what_is_missing_by_the_api_and_the_scripts(tmp_path, model_dir):
    from transformers import pipeline

    from modeling_iamm.modeling_iamm import IncompleteWeightsError

    cut = tmp_path / "cut"
    cut.mkdir()
    for name in os.listdir(model_dir):
        (cut / name).write_bytes((model_dir / name).read_bytes())
    weights = cut / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[:-1000])
    why = rf"{size - 1000} bytes where its header announces {size} \(1000 bytes missing\): it is truncated"
    with pytest.raises(Exception) as error:  # the pipeline's code as saved with the model (the README's call)
        pipeline("empathetic-response", model=str(cut), trust_remote_code=True)
    assert type(error.value).__name__ == "IncompleteWeightsError"  # (the class of the folder's copy of the code)
    assert re.match(rf"{re.escape(str(weights))}: {why}\. The save that wrote it was cut short", str(error.value))
    with pytest.raises(IncompleteWeightsError, match=why):
        IAMMForConditionalGeneration.from_pretrained(str(cut))
    message = refusal("evaluate", ["--model_name_or_path", str(cut), "--data", S, "--output_dir", "out"], tmp_path)
    assert message.startswith(f"evaluate: {weights}: ") and f"{size - 1000} bytes where its header" in message


def test_config_fields_of_the_wrong_type_are_named(tmp_path, model_dir):
    for field, value, expected in [("hidden_size", "128", "a whole number >= 1, got '128' (str)"),
                                   ("use_situation", "false", "true or false, got 'false' (str)"),
                                   ("dropout", float("nan"), "a finite number, got nan (float)"),
                                   ("length_limits", "lots", "a mapping of length limit names to words")]:
        with pytest.raises(ValueError, match=rf"^IAMMConfig\.{field} must be {re.escape(expected)}"):
            IAMMConfig(**{field: value})
    IAMMConfig(length_limits={"max_context_turns": 16, "max_target_length": None})  # what train.py saves
    edited = tmp_path / "edited"
    edited.mkdir()
    for name in os.listdir(model_dir):
        (edited / name).write_bytes((model_dir / name).read_bytes())
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**config, "length_limits": "lots"}))
    message = refusal("evaluate", ["--model_name_or_path", str(edited), "--data", S, "--output_dir", "out"], tmp_path)
    assert message.startswith("evaluate: IAMMConfig.length_limits must be a mapping"), message


# ---- a full disk -----------------------------------------------------------------------------------------------


def test_a_full_disk_is_recognised_whichever_writer_fails():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"))
    assert is_disk_full(SafetensorError(DISK_FULL))  # what safetensors raised when a tmpfs filled up
    assert not is_disk_full(SafetensorError("Error while serializing: I/O error: Permission denied (os error 13)"))
    with pytest.raises(OSError, match=r"no space left on the disk while writing x \(.* SafetensorError: Error while"):
        with explain_disk_full("x"):
            raise SafetensorError(DISK_FULL)


def test_a_full_disk_while_weights_are_written_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch,
                                                                                  word_tokenizer):
    import transformers.modeling_utils

    run = tmp_path / "run"
    for i in (1, 2):  # two checkpoints of a run, to average
        model = IAMMModelTester(vocab_size=len(word_tokenizer)).create_model(seed=i)
        model.save_pretrained(run / f"checkpoint-{i}", tokenizer=word_tokenizer)

    def full_disk(*args, **kwargs):
        raise SafetensorError(DISK_FULL)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)
    message = refusal("average_checkpoints", ["--run_dir", "run", "--output_dir", "average"], tmp_path)
    assert re.fullmatch(r"average_checkpoints: no space left on the disk while writing average \([\d.]+ MiB free "
                        rf"there; SafetensorError: {re.escape(DISK_FULL)}\)", message), message

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", no_space)
    message = refusal("average_checkpoints", ["--run_dir", "run", "--output_dir", "average"], tmp_path)
    assert message.startswith("average_checkpoints: no space left on the disk while writing average (")
    with pytest.raises(SystemExit, match=rf"^x: no space left on the disk \(SafetensorError: {re.escape(DISK_FULL)}\)$"):
        with user_errors("x"):  # a writer no script wraps: still one line
            raise SafetensorError(DISK_FULL)


# ---- the command line as users run it --------------------------------------------------------------------------


@pytest.mark.slow  # two interpreters started as users start the scripts
def test_scripts_print_one_line_without_bitsandbytes_notices(tmp_path):
    """As users run them: scripts/evaluate_llm.py imports neither peft nor bitsandbytes and its refusal is the only
    line on stderr, with advice for scoring; a script that imports transformers' Trainer (and so peft, bitsandbytes
    and kernels, which log notices while they are imported) prints its one line too."""
    from datasets import Dataset

    from iamm.llm.instructions import INSTRUCTION_FEATURES, instruction_row, save_instruction_split

    row = instruction_row({"conv_id": "c0", "turn": 1, "situation": "s", "context": ["hello"], "emotion": "sad",
                           "target": "hi"}, [("word", 0.9)])
    save_instruction_split(Dataset.from_list([row], features=INSTRUCTION_FEATURES), str(tmp_path / "instr"), "test")
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": "c0#1", "output": "Emotion: sad"}) + "\nthis is not json\n")
    as_a_program = ("import runpy, sys\n"  # the script run as `python scripts/evaluate_llm.py ...`, then a look
                    "sys.argv = sys.argv[1:]\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nfinally:\n"
                    "    print(sorted(m for m in ('peft', 'bitsandbytes') if m in sys.modules))\n")
    commands = {
        "evaluate_llm": ["-c", as_a_program, os.path.join(ROOT, "scripts", "evaluate_llm.py"), "--predictions",
                         str(preds), "--instructions", str(tmp_path / "instr")],
        "train": [os.path.join(ROOT, "scripts", "train.py"), "--data", SAMPLE_DATA_DIR, "--output_dir",
                  str(tmp_path / "run"), "--max_train_seconds", "nan"],
    }
    procs = {name: subprocess.Popen([sys.executable, *argv], env=ENV, cwd=tmp_path, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, argv in commands.items()}
    results = {name: (*proc.communicate(timeout=300), proc.returncode) for name, proc in procs.items()}
    for name, (out, err, code) in results.items():
        assert code == 1 and len(err.splitlines()) == 1, (name, err)
    out, err, _ = results["evaluate_llm"]
    assert err.startswith(f"evaluate_llm: {preds}, line 2: not a JSON record (Expecting value); scoring only reads")
    assert "move the file away" not in err and out.strip() == "[]"  # neither peft nor bitsandbytes was imported
    assert results["train"][1].startswith("train: --max_train_seconds must be a finite number")
    assert sorted(os.listdir(tmp_path)) == ["instr", "preds.jsonl"]


def test_a_refusal_after_the_output_folder_was_made_takes_it_back(tmp_path):
    """train.py makes its output folder before it reads the data: a bad data file still leaves nothing behind."""
    (tmp_path / "train.jsonl").write_text('{"conv_id": "x", "turns": [\n')  # cut off
    message = refusal("train", ["--train_file", "train.jsonl", "--output_dir", "out", "--use_cpu", "true"], tmp_path)
    assert "train.jsonl" in message and not (tmp_path / "out").exists()


def test_the_data_source_a_record_names_is_never_a_path_of_this_machine(tmp_path):
    from modeling_iamm.preparation import DataArguments

    (tmp_path / "ed").mkdir()
    (tmp_path / "ed" / "train.csv").write_text("")
    run = str(tmp_path / "runs" / "iamm")
    assert DataArguments(data=str(tmp_path / "ed"), max_samples=5).source_record(run) == {
        "data": "../../ed", "data_source": "local", "max_samples": 5}
    assert DataArguments(train_file=str(tmp_path / "ed" / "train.csv")).source_record(run) == {
        "data": {"train": "../../ed/train.csv"}, "data_source": "local", "max_samples": None}
    assert DataArguments(data="org/empathetic_dialogues").source_record(run)["data"] == "org/empathetic_dialogues"
    assert DataArguments(data="org/empathetic_dialogues").source_record(run)["data_source"] == "hub"
    assert DataArguments(data=SAMPLE_DATA_DIR).source_record(run)["data_source"] == "bundled_sample"
