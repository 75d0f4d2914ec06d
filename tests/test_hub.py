"""Publishing to and loading from the Hub, against a local Hub-compatible server (tests/helpers/hub_server.py), and the
`empathetic-response` pipeline.

Client code runs in subprocesses: huggingface_hub reads HF_ENDPOINT at import time, and this test session is offline.
The loading process cannot import `modeling_iamm`, so the model and the pipeline come from the pushed remote code.
"""

import json
import os
import re
import runpy
import shutil
import subprocess
import sys

import pytest
import torch

from tests.helpers.hub_server import FakeHub

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUSH = os.path.join(ROOT, "scripts", "push_to_hub.py")
SAMPLE = os.path.join(ROOT, "modeling_iamm", "sample_data")
TINY = ["--preset", "tiny", "--data", SAMPLE, "--use_cpu", "true", "--max_samples", "64", "--disable_tqdm", "true"]
DIALOGUES = [["I lost my job today."],
             {"turns": ["My dog died last week.", "I am so sorry.", "I miss him every day."], "situation": "my dog died"}]
MODEL_FILES = {"README.md", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "train_summary.json", "configuration_iamm.py", "modeling_iamm.py",
               "pipeline_iamm.py", "inference.py", "collator.py", "text.py", "tokenization.py", ".iamm_push.json"}


def client_env(hub: FakeHub, home) -> dict:
    env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_test_token", HF_HOME=str(home), OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", HF_DATASETS_DISABLE_PROGRESS_BARS="1", PYTHONPATH=ROOT)
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(key, None)
    return env


def run_push(hub, home, *args):
    """scripts/push_to_hub.py in a process of its own, against the server; returns its JSON summary."""
    proc = subprocess.run([sys.executable, PUSH, *args], env=client_env(hub, home), capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])


@pytest.fixture(scope="module")
def hub():
    server = FakeHub().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "iamm"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"), *TINY, "--output_dir", str(out)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (out / "predictions.jsonl").write_text("{}\n")  # must never be published
    return out


def run_evaluate(model_dir, output_dir, *args):
    """scripts/evaluate.py on the bundled sample's valid split: the metrics.json and manifest.json a user has."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"), "--model_name_or_path",
                           str(model_dir), "--data", SAMPLE, "--split", "valid", "--max_new_tokens", "8",
                           "--output_dir", str(output_dir), *args],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return output_dir / "metrics.json"


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
    """The trained model's metrics.json (greedy) as scripts/evaluate.py writes it, with its manifest.json."""
    return run_evaluate(trained, tmp_path_factory.mktemp("eval") / "valid")


@pytest.fixture(scope="module")
def local(trained):
    from transformers import AutoTokenizer

    from modeling_iamm import IAMMForConditionalGeneration

    return IAMMForConditionalGeneration.from_pretrained(trained).eval(), AutoTokenizer.from_pretrained(trained)


# ---- folders and cards (no server) ------------------------------------------------------------------------------
def test_refuses_incomplete_folders(tmp_path):
    from iamm.hub.folders import IncompleteFolderError, check_adapter_folder, check_model_folder, dataset_splits

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "iamm", "auto_map": {
        "AutoModel": "modeling_iamm.IAMMForConditionalGeneration"}}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(IncompleteFolderError) as err:
        check_model_folder(str(tmp_path))
    message = str(err.value)
    for missing in ("model weights (model.safetensors)", "pytorch_model.bin", "tokenizer file tokenizer.json",
                    "remote code modeling_iamm.py"):
        assert missing in message, message
    with pytest.raises(IncompleteFolderError, match="adapter_model.safetensors"):
        check_adapter_folder(str(tmp_path))
    with pytest.raises(IncompleteFolderError, match="data/<split>.parquet"):
        dataset_splits(str(tmp_path))


@pytest.mark.slow
def test_model_card_metadata_and_setting(trained, evaluated, tmp_path):
    from huggingface_hub import ModelCard

    from iamm.hub.cards import build_model_card
    from iamm.hub.folders import IncompleteFolderError, check_metrics

    metrics = check_metrics(str(evaluated), str(trained), None)
    written = json.loads(evaluated.read_text())
    assert metrics["split"] == written["split"] == "valid"
    card = build_model_card("org/iamm", {"model_type": "iamm", "use_implicit_association": False, "hidden_size": 300},
                            {"global_step": 20, "implicit_association": False,
                             "best_checkpoint": "runs/iamm/checkpoint-20"}, metrics)
    reloaded = ModelCard(str(card))
    assert reloaded.data.license == "cc-by-nc-4.0"
    values = {(r.metric_type, r.metric_name.split(" (")[0]): r.metric_value for r in reloaded.data.eval_results}
    assert values[("accuracy", "Emotion accuracy")] == round(written["emotion_accuracy_x100"], 4)
    assert values[("dist-2", "Dist-2")] == round(written["dist2_x100"], 4)
    assert {r.metric_value for r in reloaded.data.eval_results if r.metric_type == "perplexity"} == {
        round(written["ppl_paper"], 4), round(written["ppl_corpus"], 4)}
    assert all(r.dataset_split == "valid" for r in reloaded.data.eval_results)  # the split metrics.json records
    assert (f"On the valid split of the EmpatheticDialogues sample bundled with iamm ({written['samples']} samples), "
            "greedy decoding, at most 8 new tokens") in card.text
    assert {r.dataset_name for r in reloaded.data.eval_results} == {"EmpatheticDialogues (the sample bundled with iamm)"}
    assert "w/o implicit association" in card.text and "paper's estimator" in card.text
    assert "local checkpoint `checkpoint-20`" in card.text and "runs/iamm" not in card.text
    assert "https://aclanthology.org/2024.acl-long.170/" in card.text
    assert "mean of" not in card.text
    # an averaged model (scripts/average_checkpoints.py) says which checkpoints its weights are the mean of
    averaged = build_model_card("org/iamm", {"model_type": "iamm", "checkpoint_average": {"steps": [4800, 5600]}},
                                {}, metrics)
    assert "mean of 2 checkpoints, steps 4800, 5600" in averaged.text

    # beam search is described as such
    beams = check_metrics(str(run_evaluate(trained, tmp_path / "beams", "--num_beams", "2")), str(trained), None)
    assert f"({beams['samples']} samples), beam search (2 beams)" in build_model_card("org/iamm", {}, {}, beams).text
    # the first N samples are not the split: refused
    subset = run_evaluate(trained, tmp_path / "subset", "--max_samples", "8")
    with pytest.raises(IncompleteFolderError, match="only the first 8 samples of the valid split"):
        check_metrics(str(subset), str(trained), None)
    # the same weights evaluated without the situation head are still these weights
    check_metrics(str(run_evaluate(trained, tmp_path / "nosit", "--use_situation", "false")), str(trained), None)

    # refused: a split that contradicts the file, any JSON that is not evaluate.py's, metrics of another model
    with pytest.raises(IncompleteFolderError, match="contradicts .* 'valid' split"):
        check_metrics(str(evaluated), str(trained), "test")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(IncompleteFolderError, match="not a metrics.json of scripts/evaluate.py: it lacks a positive"):
        check_metrics(str(other), str(trained), None)
    changed = tmp_path / "changed"
    shutil.copytree(trained, changed)
    from modeling_iamm import IAMMForConditionalGeneration

    model = IAMMForConditionalGeneration.from_pretrained(changed)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    model.save_pretrained(changed)
    with pytest.raises(IncompleteFolderError, match="measured another model"):
        check_metrics(str(evaluated), str(changed), None)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(evaluated, lone / "metrics.json")
    with pytest.raises(IncompleteFolderError, match="no manifest.json beside it"):
        check_metrics(str(lone / "metrics.json"), str(trained), None)


def test_cards_state_what_was_recorded(tmp_path):
    """Training data, a ChatGLM3 base and a dataset's source as their records have them, and no more; the published
    build_info.json names no folder of this machine."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from iamm.hub.cards import build_adapter_card, build_model_card
    from iamm.hub.folders import adapter_base_model
    from iamm.hub.push import PushArguments, stage

    summary = {"samples": {"train": 64, "valid": 64}, "vocabulary": 900}
    text = build_model_card("org/iamm", {}, summary).text
    assert "Which data this checkpoint was trained on was not recorded" in text and "train 64, valid 64 samples (one per listener turn) and a vocabulary of 900" in text
    assert "trained on EmpatheticDialogues" not in text
    assert build_model_card("org/iamm", {}, summary).data.datasets is None  # nor in the metadata
    recorded = dict(summary, data="modeling_iamm/sample_data", data_source="bundled_sample", max_samples=64)
    card = build_model_card("org/iamm", {}, recorded)
    assert ("The EmpatheticDialogues sample bundled with iamm (`modeling_iamm/sample_data`), only the first 64 "
            "samples of each split (`--max_samples 64`)") in card.text
    assert card.data.datasets == ["facebook/empathetic_dialogues"]
    assert build_model_card("org/iamm", {}, dict(summary, data="org/ed", data_source="hub")).data.datasets == ["org/ed"]

    # a ChatGLM3 base is ChatGLM3-6B only when the converted folder has its size
    adapter = {"base_model_name_or_path": str(tmp_path / "glm"), "peft_type": "LORA", "r": 4}
    training = {"instruction_column": "messages"}
    for (layers, hidden), says in (((2, 64), "a ChatGLM3-architecture model with 2 layers of width 64 (not "
                                              "ChatGLM3-6B, which has 28 of 4096)"), ((28, 4096), "ChatGLM3-6B")):
        (tmp_path / "glm").mkdir(exist_ok=True)
        (tmp_path / "glm" / "config.json").write_text(json.dumps(
            {"model_type": "glm", "converted_from": "chatglm3", "num_hidden_layers": layers, "hidden_size": hidden}))
        base = adapter_base_model(str(tmp_path), adapter, "org/glm")
        card = build_adapter_card("org/lora", adapter, training, base).text
        assert f"The base is {says} in transformers' own `glm` layout (`org/glm`)" in card, card

    # a dataset built from the first 8 samples of the bundled sample, by a checkpoint of this machine
    folder = tmp_path / "instructions"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["c1#1"], "messages": ["hi"]}), folder / "data" / "train.parquet")
    info = {"format": "iamm", "model": str(tmp_path / "runs" / "iamm"), "model_source": "local",
            "data": "../../ed-copy", "data_source": "local", "max_samples": 8, "counts": {"train": 1}}
    (folder / "build_info.json").write_text(json.dumps(info))
    staging = tmp_path / "staging"
    staging.mkdir()
    stage(PushArguments(kind="dataset", folder=str(folder), repo_id="org/instructions"), str(staging))
    card = (staging / "README.md").read_text()
    assert "Built from a local copy (`ed-copy`), only the first 8 samples of each split (`--max_samples 8`)." in card
    assert "local checkpoint `iamm`" in card and str(tmp_path) not in card
    published = json.loads((staging / "build_info.json").read_text())
    assert published == dict(info, model="iamm", data="ed-copy")
    del info["data"], info["data_source"], info["max_samples"]  # a folder built before they were recorded
    (folder / "build_info.json").write_text(json.dumps(info))
    shutil.rmtree(staging)
    staging.mkdir()
    stage(PushArguments(kind="dataset", folder=str(folder), repo_id="org/instructions"), str(staging))
    assert "whether it was limited to the first samples of each split, were not recorded" in (
        staging / "README.md").read_text()


# ---- the pipeline with the in-package classes ------------------------------------------------------------------
@pytest.mark.slow
def test_pipeline_in_package_matches_predict(local):
    from transformers import pipeline

    from modeling_iamm.inference import predict

    model, tokenizer = local
    chat = pipeline("empathetic-response", model=model, tokenizer=tokenizer)
    single = chat(DIALOGUES[1], max_new_tokens=10)
    batch = chat(DIALOGUES, max_new_tokens=10, top_k=None)
    assert isinstance(single, dict) and isinstance(batch, list) and len(batch) == 2
    reference = list(predict(model, tokenizer, DIALOGUES, max_new_tokens=10))
    for dialogue, out, ref in zip(DIALOGUES, batch, reference):
        assert out["emotion"] == ref["emotion"] and out["response"] == ref["response"]
        assert len(out["emotion_scores"]) == 32 and abs(sum(out["emotion_scores"].values()) - 1) < 1e-3
        # no knowledge head here; no situation head for the dialogue without a situation
        with_situation = isinstance(dialogue, dict) and bool(dialogue.get("situation"))
        assert out["situation"] == ("with_situation" if with_situation else "without_situation")
        assert set(out["head_probabilities"]) == {"context", "memory"} | ({"situation"} if with_situation else set())
    assert single["response"] == batch[1]["response"] and len(single["emotion_scores"]) == 5
    assert single["associated_words"]["memory_words"], single["associated_words"]
    beams = chat(DIALOGUES[1], num_beams=3, num_return_sequences=2, max_new_tokens=6)
    assert isinstance(beams["response"], list) and len(beams["response"]) == 2
    assert beams["emotion"] == single["emotion"]  # beam search must not disturb the emotion rows


# ---- push and load through the server -------------------------------------------------------------------------
CLIENT = r'''
import importlib.abc, json, sys

class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "modeling_iamm" or name.startswith(("modeling_iamm.", "iamm")):
            raise ImportError(f"{name} is deliberately not importable in this process")

sys.meta_path.insert(0, _Refuse())
import torch
from transformers import AutoModel, pipeline

batch_file, card_file, out_file, dialogues = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
results = {}
model = AutoModel.from_pretrained("org/iamm", trust_remote_code=True).eval()
results["module"] = type(model).__module__
batch = torch.load(batch_file)
with torch.no_grad():
    out = model(**batch)
results["logits"], results["emotion_logits"] = out.logits, out.emotion_logits
results["generated"] = model.generate(**batch, max_new_tokens=12)
chat = pipeline("empathetic-response", model="org/iamm", trust_remote_code=True)
results["pipeline_class"] = type(chat).__module__
results["single"] = chat(dialogues[1], max_new_tokens=10)
results["batch"] = chat(dialogues, max_new_tokens=10)
results["beams"] = chat(dialogues[1], num_beams=3, num_return_sequences=2, max_new_tokens=6)
snippet = open(card_file).read()
exec(snippet, {})
torch.save(results, out_file)
'''


def card_snippet(readme: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 1, readme
    return blocks[0]


@pytest.mark.slow
def test_push_model_then_load_in_a_fresh_process(hub, trained, evaluated, local, tmp_path, sample_samples):
    from huggingface_hub import ModelCard

    from modeling_iamm import IAMMDataCollator
    from modeling_iamm.inference import predict

    # save_pretrained (through train.py) already ships the pipeline; the push does not have to add it
    assert (trained / "pipeline_iamm.py").exists() and (trained / "inference.py").exists()
    assert "empathetic-response" in json.loads((trained / "config.json").read_text())["custom_pipelines"]
    result = run_push(hub, tmp_path / "home", "--kind", "model", "--folder", str(trained), "--repo_id", "org/iamm",
                      "--metrics_file", str(evaluated), "--private", "true")
    files = hub.files("org/iamm")
    assert set(files) == MODEL_FILES == set(result["files"])  # no checkpoint-*, training_args.bin, predictions
    assert files["model.safetensors"] == (trained / "model.safetensors").read_bytes()
    assert hub.repo("org/iamm").private and hub.commit_count("org/iamm") == 2  # the initial commit + the push
    config = json.loads(files["config.json"])
    assert config["custom_pipelines"]["empathetic-response"]["impl"] == "pipeline_iamm.EmpatheticResponsePipeline"
    readme = files["README.md"].decode()
    card = ModelCard(readme)
    assert card.data.license == "cc-by-nc-4.0" and card.data.model_name == "iamm"
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy", "perplexity", "dist-1", "dist-2"}
    assert {r.dataset_split for r in card.data.eval_results} == {"valid"}
    assert "trust_remote_code=True" in card_snippet(readme).split("AutoTokenizer.from_pretrained")[1].split("\n")[0]
    # the training data as train.py recorded it (train_summary.json: the bundled sample, --max_samples 64)
    assert ("The EmpatheticDialogues sample bundled with iamm (`modeling_iamm/sample_data`), only the first 64 "
            "samples of each split (`--max_samples 64`)") in card.text
    (tmp_path / "snippet.py").write_text(card_snippet(readme))

    model, tokenizer = local
    collator = IAMMDataCollator(tokenizer)
    batch = collator([sample_samples["valid"][i] for i in range(4)])
    batch.pop("oov_words")
    torch.save(batch, tmp_path / "batch.pt")
    proc = subprocess.run([sys.executable, "-c", CLIENT, str(tmp_path / "batch.pt"), str(tmp_path / "snippet.py"),
                           str(tmp_path / "out.pt"), json.dumps(DIALOGUES)],
                          env=client_env(hub, tmp_path / "home"), capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, stdin=subprocess.DEVNULL)  # a "run the custom code? [y/N]" prompt fails
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert not hub.unhandled, hub.unhandled
    remote = torch.load(tmp_path / "out.pt", weights_only=False)
    assert "transformers_modules" in remote["module"] and "transformers_modules" in remote["pipeline_class"]
    with torch.no_grad():
        out = model(**batch)
        generated = model.generate(**batch, max_new_tokens=12)
    torch.testing.assert_close(remote["logits"], out.logits)
    torch.testing.assert_close(remote["emotion_logits"], out.emotion_logits)
    assert torch.equal(remote["generated"], generated)
    reference = list(predict(model, tokenizer, DIALOGUES, max_new_tokens=10))
    assert [r["response"] for r in remote["batch"]] == [r["response"] for r in reference]
    assert [r["emotion"] for r in remote["batch"]] == [r["emotion"] for r in reference]
    assert remote["single"]["response"] == reference[1]["response"]
    assert len(remote["beams"]["response"]) == 2
    assert "->" in proc.stdout  # the card's snippet printed its result
    assert "without_situation ['context', 'memory']" in proc.stdout  # and ran a dialogue without a situation


@pytest.fixture
def push_here(hub, monkeypatch):
    """Push in this process (faster than the CLI): the session is offline, so lift that for the local server only."""
    import huggingface_hub.constants

    from iamm.hub.push import PushArguments, push

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def run(folder, repo_id, kind="model", **kwargs):
        return push(PushArguments(kind=kind, folder=None if folder is None else str(folder), repo_id=repo_id,
                                  endpoint=hub.endpoint, token="hf_test_token", **kwargs))

    return run


@pytest.mark.slow
def test_push_twice_updates_in_place_and_a_failed_commit_is_retried(hub, trained, tmp_path, push_here):
    from iamm.hub.push import PushError

    folder = tmp_path / "iamm"
    shutil.copytree(trained, folder)
    first = push_here(folder, "org/iamm-twice")
    commits = hub.commit_count("org/iamm-twice")
    again = push_here(folder, "org/iamm-twice")
    assert again["commit"] == first["commit"] and hub.commit_count("org/iamm-twice") == commits  # nothing changed

    # a changed file and a dropped one: one new commit, the repo mirrors the folder
    summary = json.loads((folder / "train_summary.json").read_text())
    (folder / "train_summary.json").write_text(json.dumps(dict(summary, note="updated")))
    (folder / "generation_config.json").unlink()
    push_here(folder, "org/iamm-twice")
    files = hub.files("org/iamm-twice")
    assert hub.commit_count("org/iamm-twice") == commits + 1
    assert set(files) == MODEL_FILES - {"generation_config.json"}
    assert json.loads(files["train_summary.json"])["note"] == "updated"

    # a commit the server refuses (a status the client does not retry): clear error, nothing changed
    (folder / "train_summary.json").write_text(json.dumps(dict(summary, note="second update")))
    before = hub.files("org/iamm-twice")
    hub.fail_next("commit", status=507)
    with pytest.raises(PushError) as err:
        push_here(folder, "org/iamm-twice")
    message = str(err.value)
    assert "507" in message and "Run the same command again" in message
    assert message.split("(or holds other versions): ")[1].startswith("train_summary.json.")  # only what is missing
    assert hub.files("org/iamm-twice") == before and hub.commit_count("org/iamm-twice") == commits + 1
    push_here(folder, "org/iamm-twice")
    assert hub.commit_count("org/iamm-twice") == commits + 2
    assert json.loads(hub.files("org/iamm-twice")["train_summary.json"])["note"] == "second update"

    # one 500 on the commit: huggingface_hub retries it; exactly one new commit, files once, on a new branch
    hub.fail_next("commit", status=500)
    push_here(folder, "org/iamm-twice", revision="dev", commit_message="to dev")
    repo = hub.repo("org/iamm-twice")
    assert repo.commits[repo.branches["dev"]].title == "to dev"
    assert hub.commit_count("org/iamm-twice", revision="dev") == commits + 3
    assert hub.files("org/iamm-twice", revision="dev").keys() == hub.files("org/iamm-twice").keys()
    assert 'revision="dev"' in hub.files("org/iamm-twice", revision="dev")["README.md"].decode()


@pytest.mark.slow
def test_files_others_added_are_kept_unless_asked(hub, trained, tmp_path, push_here):
    from huggingface_hub import HfApi

    folder = tmp_path / "iamm"
    shutil.copytree(trained, folder)
    push_here(folder, "org/iamm-shared")
    api = HfApi(endpoint=hub.endpoint, token="hf_test_token")
    api.upload_file(path_or_fileobj=b"onnx bytes", path_in_repo="model.onnx", repo_id="org/iamm-shared")
    api.upload_file(path_or_fileobj=b"# notes", path_in_repo="notes/usage.py", repo_id="org/iamm-shared")
    api.upload_file(path_or_fileobj=b"# endpoint", path_in_repo="handler.py", repo_id="org/iamm-shared")
    (folder / "generation_config.json").unlink()  # a file our push made and no longer has: deleted
    result = push_here(folder, "org/iamm-shared")
    files = hub.files("org/iamm-shared")
    assert result["deleted"] == ["generation_config.json"] and "generation_config.json" not in files
    assert result["kept"] == ["handler.py", "model.onnx", "notes/usage.py"] and files["model.onnx"] == b"onnx bytes"
    # an adapter pushed by mistake into the model's repository would replace its tokenizer files: refused
    from iamm.hub.push import PushError

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base", "peft_type": "LORA"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    (adapter / "tokenizer.json").write_text("{}")
    with pytest.raises(PushError, match=r"holds a model \(.iamm_push.json records a model push\), not an adapter"):
        push_here(adapter, "org/iamm-shared", kind="adapter", instruction_format="messages")
    assert "tokenizer.json" in hub.files("org/iamm-shared") and hub.files("org/iamm-shared")["model.onnx"]
    result = push_here(folder, "org/iamm-shared", delete_unmanaged=True)
    assert result["deleted"] == ["handler.py", "model.onnx", "notes/usage.py"] and result["kept"] == []
    assert set(hub.files("org/iamm-shared")) == MODEL_FILES - {"generation_config.json"}


def run_push_failing(hub, home, *args, env=None):
    """scripts/push_to_hub.py expected to refuse: returns its last stderr line (the message), checks there is no
    traceback and that nothing was sent to the server."""
    before = len(hub.requests)
    proc = subprocess.run([sys.executable, PUSH, *args], env=env or client_env(hub, home), capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    sent = [r for r in hub.requests[before:] if not r.startswith(("GET ", "HEAD "))]  # reads are not uploads
    assert not sent, sent
    return proc.stderr.strip().splitlines()[-1]


def refused_here(hub, monkeypatch, *args):
    """scripts/push_to_hub.py's main in this process (faster than a subprocess), against the local server, expected
    to refuse before any upload: returns its one-line message and checks that nothing was sent."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    main = runpy.run_path(PUSH, run_name="imported")["main"]
    before = len(hub.requests)
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--endpoint", hub.endpoint, "--token", "hf_test_token"])
    message = exit_info.value.code
    assert isinstance(message, str) and "\n" not in message, message
    sent = [r for r in hub.requests[before:] if not r.startswith(("GET ", "HEAD "))]  # reads are not uploads
    assert not sent, sent
    return message


@pytest.mark.slow
def test_bad_inputs_are_one_line_before_any_upload(hub, trained, tmp_path, monkeypatch):
    home = tmp_path / "home"
    model = ["--kind", "model", "--folder", str(trained)]
    line = refused_here(hub, monkeypatch, *model, "--repo_id", "org/my model")
    assert line.startswith("push_to_hub: --repo_id must be a Hub id") and "'org/my model'" in line
    line = refused_here(hub, monkeypatch, *model, "--repo_id", "org/iamm", "--metrics_file", str(tmp_path / "nope.json"))
    assert "--metrics_file" in line and "nope.json does not exist" in line
    line = refused_here(hub, monkeypatch, "--kind", "model", "--folder", "runs/iamm", "--repo_id", "org/iamm")
    assert "--folder runs/iamm does not exist" in line
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    line = refused_here(hub, monkeypatch, "--kind", "model", "--folder", str(adapter), "--repo_id", "org/iamm")
    assert "push it with --kind adapter" in line
    no_token = {k: v for k, v in client_env(hub, home).items() if k != "HF_TOKEN"}
    line = run_push_failing(hub, home, *model, "--repo_id", "org/iamm", env=no_token)
    assert "no Hub token: set HF_TOKEN" in line and "--token" in line
    line = run_push_failing(hub, home, *model, "--repo_id", "org/iamm", "--token", "hf_refused")
    assert "refused the token (401)" in line
    closed = dict(client_env(hub, home), HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens on port 9
    line = run_push_failing(hub, home, *model, "--repo_id", "org/iamm", env=closed)
    assert "could not reach the Hub at http://127.0.0.1:9" in line and "nothing was uploaded" in line
    # a branch name git (and the Hub) would refuse is refused here, before any request
    for revision in ("../evil", "dev branch", "refs/heads/x.lock", "-f"):
        line = refused_here(hub, monkeypatch, *model, "--repo_id", "org/iamm-revision", f"--revision={revision}")
        assert line.startswith(f"push_to_hub: --revision {revision!r} is not a valid branch name: "), line
    assert ("model", "org/iamm-revision") not in hub.repos
    # a folder where the tokenizer file belongs: one line naming it
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken, ignore=shutil.ignore_patterns("checkpoint-*"))
    (broken / "tokenizer.json").unlink()
    (broken / "tokenizer.json").mkdir()
    line = refused_here(hub, monkeypatch, "--kind", "model", "--folder", str(broken), "--repo_id", "org/iamm")
    assert line == f"push_to_hub: {broken / 'tokenizer.json'} is a folder, not a file: a push expects the file " \
                   "tokenizer.json there (remove or rename the folder)"


@pytest.mark.slow
def test_a_connection_dropped_on_every_commit_is_one_line_naming_the_files(hub, trained, tmp_path):
    from tests.helpers.hub_server import DROP

    hub.fail_next("commit", times=20, status=DROP)
    try:
        proc = subprocess.run([sys.executable, PUSH, "--kind", "model", "--folder", str(trained), "--repo_id",
                               "org/iamm-dropped"], env=client_env(hub, tmp_path / "home"), capture_output=True,
                              text=True, timeout=300, cwd=ROOT)
    finally:
        hub.failures["commit"] = []
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("push_to_hub: pushing") and "RemoteProtocolError" in line, line
    assert "does not hold these files of this push" in line and "model.safetensors" in line and "config.json" in line
    assert hub.commit_count("org/iamm-dropped") == 1  # the repository was created; nothing was committed


@pytest.mark.slow
def test_space_push_writes_the_page_without_pins(hub, tmp_path, push_here):
    import yaml

    result = push_here(None, "org/iamm-demo", kind="space", space_model="org/iamm")
    files = hub.files("org/iamm-demo", "space")
    assert result["repo_type"] == "space" and {"app.py", "requirements.txt", "README.md", "iamm_demo.py"} <= set(files)
    assert "MODEL_ID = 'org/iamm'" in files["app.py"].decode()
    requirements = files["requirements.txt"].decode().split()
    assert requirements and not any("==" in r for r in requirements), requirements
    assert "transformers<6,>=5.0" in requirements or "transformers>=5.0,<6" in requirements
    front = yaml.safe_load(files["README.md"].decode().split("---")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py"


ADAPTER_CLIENT = r'''
import sys
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

base_dir, ids_file, out_file = sys.argv[1:4]
base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
model = PeftModel.from_pretrained(base, "org/iamm-lora").eval()
with torch.no_grad():
    logits = model(input_ids=torch.load(ids_file)).logits
torch.save({"logits": logits}, out_file)
'''


@pytest.mark.slow
def test_adapter_round_trip(hub, tmp_path, push_here):
    from huggingface_hub import ModelCard
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from iamm.hub.folders import IncompleteFolderError

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    base = LlamaForCausalLM(config).eval()
    base.save_pretrained(tmp_path / "base")
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.peft_config["default"].base_model_name_or_path = str(tmp_path / "base")  # as training records it
    lora.save_pretrained(tmp_path / "lora")
    (tmp_path / "lora" / "optimizer.pt").write_bytes(b"never pushed")
    ids = torch.randint(0, 64, (2, 7))
    torch.save(ids, tmp_path / "ids.pt")
    with torch.no_grad():
        expected = lora(input_ids=ids).logits

    # a local base model and no record of the training column: both must be named before anything is sent
    with pytest.raises(IncompleteFolderError, match="instruction_format"):
        push_here(tmp_path / "lora", "org/iamm-lora", kind="adapter")
    with pytest.raises(IncompleteFolderError, match="a folder of this machine, as its base model: pass --base_model"):
        push_here(tmp_path / "lora", "org/iamm-lora", kind="adapter", instruction_format="plain_messages")
    with pytest.raises(IncompleteFolderError, match="THUDM/chatglm3-6b is ChatGLM3 in its remote-code layout"):
        push_here(tmp_path / "lora", "org/iamm-lora", kind="adapter", instruction_format="plain_messages",
                  base_model="THUDM/chatglm3-6b")
    # a lora_args.json of an older train_lora.py: the training machine's absolute paths
    recorded = {"model_name_or_path": str(tmp_path / "base"), "tokenizer_name_or_path": str(tmp_path / "base"),
                "data_dir": str(tmp_path / "instructions"), "instruction_column": "plain_messages", "max_length": 64}
    (tmp_path / "lora" / "lora_args.json").write_text(json.dumps(recorded))
    push_here(tmp_path / "lora", "org/iamm-lora", kind="adapter", base_model="org/tiny-llama",
              dataset_repo="org/iamm-instructions")
    files = hub.files("org/iamm-lora")
    assert set(files) == {"README.md", "adapter_config.json", "adapter_model.safetensors", "lora_args.json",
                          ".iamm_push.json"}
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == "org/tiny-llama"
    assert str(tmp_path) not in files["lora_args.json"].decode()  # no path of this machine is published
    assert json.loads(files["lora_args.json"]) == dict(recorded, model_name_or_path="org/tiny-llama",
                                                       tokenizer_name_or_path="org/tiny-llama",
                                                       data_dir="org/iamm-instructions")
    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == "org/tiny-llama" and card.data.library_name == "peft"
    assert "`plain_messages` column" in card.text and str(tmp_path) not in card.text

    proc = subprocess.run([sys.executable, "-c", ADAPTER_CLIENT, str(tmp_path / "base"), str(tmp_path / "ids.pt"),
                           str(tmp_path / "out.pt")], env=client_env(hub, tmp_path / "home"), capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt", weights_only=False)["logits"], expected)
