"""The Python API as users call it: `predict()` and `pipeline("empathetic-response")` on a tiny model.

Length limits bound what the model sees and the record says what was cut; the tokenizer is checked as the scripts
check it; a dialogue without a situation runs without the situation head, in any batch; the pipeline batches; bad
arguments get clear errors; the quick start keeps its best epoch and never overwrites a run.
"""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import pipeline

from modeling_iamm import IAMMForConditionalGeneration, build_tokenizer
from modeling_iamm.collator import DEFAULT_LENGTH_LIMITS
from modeling_iamm.inference import (
    HIDDEN_WORDS,
    TOKENIZER_REMEDY,
    as_sample,
    distinct_words,
    predict,
    predict_dialogues,
    prediction_collator,
)
from modeling_iamm.tokenization import check_tokenizer, tokenizer_fingerprint
from tests.helpers.tiny_model import IAMMModelTester

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMITS = dict(DEFAULT_LENGTH_LIMITS, max_context_turns=4, max_utterance_length=12)
WORDS = "i was so happy when my dog came back home after days".split()  # 12 words
DIALOGUES = [
    {"turns": ["My dog died last week.", "I am so sorry.", "I miss him every day."], "situation": "my dog died"},
    ["I lost my job today."],
    {"turns": ["I passed my exam!"], "situation": "   "},  # blank: no situation
    {"turns": ["Someone stole my bike.", "Oh no!", "It was new."], "situation": "my new bike was stolen"},
    {"turns": ["the the the dog the", "the dog ?", "the the the the"]},
]


@pytest.fixture(scope="module")
def model_and_tokenizer(word_tokenizer):
    config = IAMMModelTester(vocab_size=len(word_tokenizer)).get_config(use_implicit_association=False)
    torch.manual_seed(0)
    model = IAMMForConditionalGeneration(config).eval()
    # what scripts/train.py and scripts/quickstart.py save with every model
    model.config.update({"length_limits": dict(LIMITS), "tokenizer_fingerprint": tokenizer_fingerprint(word_tokenizer)})
    return model, word_tokenizer


@pytest.fixture(scope="module")
def chat(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    return pipeline("empathetic-response", model=model, tokenizer=tokenizer)


class EncoderCalls:
    """Records the `context_ids` shape of every encoder call."""

    def __init__(self, model):
        self.shapes = []
        self.handle = model.get_encoder().register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.shapes.append(tuple(kwargs["context_ids"].shape))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def one(model, tokenizer, dialogue, **kwargs):
    kwargs.setdefault("max_new_tokens", 3)
    return next(iter(predict(model, tokenizer, [dialogue], **kwargs)))


# ---- length limits ---------------------------------------------------------------------------------------------
def test_saved_length_limits_bound_the_batch_and_the_record_says_what_was_cut(model_and_tokenizer, chat):
    model, tokenizer = model_and_tokenizer
    many_turns = [" ".join(WORDS)] * 41  # 41 turns of 12 words
    long_utterance = [" ".join(WORDS * 25)]  # one utterance of 300 words
    with EncoderCalls(model) as calls:
        turns_record = one(model, tokenizer, many_turns)
        long_record = one(model, tokenizer, long_utterance)
        lifted = one(model, tokenizer, long_utterance, length_limits={"max_utterance_length": None})
        piped = chat(long_utterance, max_new_tokens=3, length_limits={"max_utterance_length": 20})
    # [CLS] + at most 12 words, at most 4 turns: what the model saved, not what the caller sent
    assert calls.shapes[:2] == [(1, 4, 13), (1, 1, 13)]
    assert turns_record["truncated"] == {"max_context_turns": 37}
    assert long_record["truncated"] == {"max_utterance_length": 288}
    # the caller changes a limit: None lifts it (the whole utterance is read), a number replaces it
    assert calls.shapes[2] == (1, 1, 301) and lifted["truncated"] == {}
    assert calls.shapes[3] == (1, 1, 21) and piped["truncated"] == {"max_utterance_length": 280}
    with pytest.raises(ValueError, match="unknown length limit 'max_words'"):
        predict(model, tokenizer, [["hi"]], length_limits={"max_words": 3})


# ---- tokenizer check ---------------------------------------------------------------------------------------------
def test_a_tokenizer_that_is_not_the_models_is_refused_with_the_scripts_message(model_and_tokenizer, sample_conversations):
    model, tokenizer = model_and_tokenizer
    smaller = build_tokenizer(sample_conversations["train"], min_frequency=3)
    same_size = build_tokenizer([f"w{i}" for i in range(model.config.vocab_size - 7)])
    assert len(smaller) != len(tokenizer) and len(same_size) == len(tokenizer)
    for wrong, core in ((smaller, "tokens but the model was trained with a vocabulary of"),
                        (same_size, "has the model's vocabulary size but other words")):
        with pytest.raises(ValueError) as scripts_error:  # what scripts/evaluate.py applies
            check_tokenizer(wrong, model.config)
        with pytest.raises(ValueError) as api_error:
            predict(model, wrong, [["I lost my job today."]])
        with pytest.raises(ValueError) as pipeline_error:
            pipeline("empathetic-response", model=model, tokenizer=wrong)
        scripts_message = str(scripts_error.value)
        assert core in scripts_message
        for error in (api_error, pipeline_error):  # the same check and words; the remedy names no CLI flag
            assert str(error.value) == scripts_message.replace(scripts_message.split("; ")[-1], TOKENIZER_REMEDY)


# ---- a missing situation ---------------------------------------------------------------------------------------
def test_a_dialogue_without_situation_runs_without_the_situation_head_in_any_batch(model_and_tokenizer, chat):
    model, tokenizer = model_and_tokenizer
    batched = list(predict(model, tokenizer, DIALOGUES, max_new_tokens=5))
    alone = [one(model, tokenizer, d, max_new_tokens=5) for d in DIALOGUES]
    assert [r["situation"] for r in batched] == ["with_situation", "without_situation", "without_situation",
                                                 "with_situation", "without_situation"]
    for b, a in zip(batched, alone):
        assert (b["emotion"], b["response"], b["situation"]) == (a["emotion"], a["response"], a["situation"])
        # (a pair type no turn of the batch has is absent; one this dialogue lacks in a bigger batch is empty)
        assert {k: v for k, v in b["associations"].items() if v} == {k: v for k, v in a["associations"].items() if v}
    # without a situation the dialogue gets what the model's own use_situation=False mode gives it
    config = model.config.to_dict()
    config["use_situation"] = False
    without = IAMMForConditionalGeneration(type(model.config).from_dict(config)).eval()
    missing, _ = without.load_state_dict(model.state_dict(), strict=False)
    assert not missing
    reference = list(predict(without, tokenizer, DIALOGUES, max_new_tokens=5))
    for b, r in zip(batched, reference):
        if b["situation"] == "without_situation":
            assert (b["emotion"], b["response"]) == (r["emotion"], r["response"])
    # the pipeline: no situation head, and the same emotion probabilities whatever the batch
    piped = chat(DIALOGUES, max_new_tokens=5, top_k=None, batch_size=3)
    piped_alone = [chat(d, max_new_tokens=5, top_k=None) for d in DIALOGUES]
    for p, q, b in zip(piped, piped_alone, batched):
        assert p["situation"] == b["situation"] and p["emotion"] == b["emotion"]
        assert ("situation" in p["head_probabilities"]) == (b["situation"] == "with_situation")
        assert p["emotion_scores"] == pytest.approx(q["emotion_scores"], abs=1e-4)


def test_memory_words_are_distinct_and_never_special(model_and_tokenizer, chat):
    assert distinct_words([["the", 0.67], ["the", 0.69], ["<none>", 0.33], ["[UNK]", 0.5], ["dog", 0.1],
                           ["[PAD]", 0.9]]) == [["the", 0.69], ["dog", 0.1]]
    model, tokenizer = model_and_tokenizer
    records = list(predict(model, tokenizer, DIALOGUES, max_new_tokens=3))
    views = chat(DIALOGUES, max_new_tokens=3)
    # what the model's selector kept has repeats and the null slot here: the user's views must not
    raw = predict_dialogues(model, tokenizer, prediction_collator(model, tokenizer), [as_sample(d) for d in DIALOGUES],
                            max_new_tokens=3)
    raw_words = [[w for w, _ in p.associations["selected_memory_words"]] for p in raw]
    assert any(len(set(words)) < len(words) for words in raw_words) and any("<none>" in words for words in raw_words)
    assert records[0]["associations"]["selected_memory_words"] and records[3]["associations"]["selected_memory_words"]
    for record, view in zip(records, views):
        for words in (record["associations"]["selected_memory_words"], view["associated_words"]["memory_words"]):
            listed = [w for w, _ in words]
            assert len(listed) == len(set(listed)) and not set(listed) & HIDDEN_WORDS, words
        for kept in view["associated_words"]["keywords"].values():
            for entry in kept:
                assert entry["keyword"] not in HIDDEN_WORDS
                assert not {w for w, _ in entry["associated"]} & HIDDEN_WORDS


# ---- the pipeline batches ----------------------------------------------------------------------------------------
def test_pipeline_batch_size_batches_like_predict(model_and_tokenizer, chat):
    model, tokenizer = model_and_tokenizer
    dialogues = [d for d in DIALOGUES if isinstance(d, dict) and d.get("situation", "").strip()] * 5  # 10
    reference = list(predict(model, tokenizer, dialogues, max_new_tokens=4))
    with EncoderCalls(model) as calls:
        default = chat(dialogues, max_new_tokens=4)
    assert len(calls.shapes) == 1 and calls.shapes[0][0] == 10  # one batch of 10 (default batch size 16)
    with EncoderCalls(model) as calls:
        fours = chat(dialogues, max_new_tokens=4, batch_size=4)
    assert [shape[0] for shape in calls.shapes] == [4, 4, 2]
    for a, b, ref in zip(default, fours, reference):
        assert a["emotion"] == b["emotion"] == ref["emotion"] and a["response"] == b["response"] == ref["response"]


# ---- clear errors ------------------------------------------------------------------------------------------------
def test_bad_calls_get_clear_errors(model_and_tokenizer, chat):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ValueError, match="no dialogue given"):
        chat([])
    with pytest.raises(ValueError, match="num_beams must be a whole number >= 1, got 0"):
        chat(["I lost my job."], num_beams=0)
    with pytest.raises(ValueError, match="num_beams must be a whole number >= 1, got 0"):
        predict(model, tokenizer, [["I lost my job."]], num_beams=0)
    with pytest.raises(ValueError, match="top_k must be a whole number >= 1"):
        chat(["I lost my job."], top_k=0)
    assert len(chat(["I lost my job."], top_k=1, max_new_tokens=2)["emotion_scores"]) == 1
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got 1.5"):
        chat(["I lost my job."], do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match=r"temperature must be > 0, got -1"):
        predict(model, tokenizer, [["I lost my job."]], do_sample=True, temperature=-1)  # (checked at the call)


def test_dialogues_that_are_not_what_a_dialogue_is_are_named(model_and_tokenizer, chat):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ValueError, match=r"^dialogue 0: unknown key\(s\) \['situaton'\] \(did you mean 'situation'\?\)"):
        chat({"turns": ["My dog died."], "situaton": "my dog died"})  # would run without its situation
    with pytest.raises(TypeError, match=r"^dialogue 0: utterance 1 is int \(123\), not text$"):
        chat(["hello", 123])
    with pytest.raises(TypeError, match=r"^dialogue 0 is int \(123\): a dialogue is a list of utterances"):
        chat([123, None])
    with pytest.raises(TypeError, match=r"^dialogue 1: utterance 0 is NoneType \(None\), not text$"):
        chat([["I lost my job."], [None]])
    with pytest.raises(TypeError, match=r"^dialogue 0: the situation is int"):
        list(predict(model, tokenizer, [{"turns": ["hi"], "situation": 5}]))
    with pytest.raises(ValueError, match=r"^dialogue 0: utterance 0 holds '\\udcff' at position 3, which is not text"):
        chat(["caf\udcff"])  # bytes decoded with errors="surrogateescape"
    with pytest.raises(ValueError, match=r"^dialogue 0: the situation holds '\\udcff'"):
        chat({"turns": ["hi"], "situation": "\udcff"})
    assert chat({"turns": ["My dog died."], "situation": "my dog died", "conv_id": "a"},
                max_new_tokens=2)["situation"] == "with_situation"


# ---- the quick start -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_quickstart_keeps_the_best_epoch_and_never_overwrites_a_run(tmp_path):
    out = tmp_path / "quick"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [sys.executable, os.path.join(ROOT, "scripts", "quickstart.py"), "--output_dir", str(out), "--epochs", "3",
               "--hidden_size", "16", "--max_samples", "48", "--show", "1"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    evaluations = [(log["eval_ppl"], log["step"]) for log in state["log_history"] if "eval_ppl" in log]
    assert len(evaluations) == 3
    best = os.path.basename(state["best_model_checkpoint"])
    assert best == f"checkpoint-{min(evaluations)[1]}"
    saved, kept = load_file(out / "model.safetensors"), load_file(out / best / "model.safetensors")
    assert saved.keys() == kept.keys() and all(torch.equal(saved[k], kept[k]) for k in saved)
    # what a model card states of its training data: the bundled sample, cut to 48 samples, no path of this machine
    summary = json.loads((out / "train_summary.json").read_text())
    assert (summary["data"], summary["data_source"], summary["max_samples"]) == (
        "modeling_iamm/sample_data", "bundled_sample", 48)
    assert summary["samples"] == {"train": 48, "valid": 48} and str(tmp_path) not in json.dumps(summary)
    # a second run into the same folder is refused, and the first run is left as it was
    before = sorted(p.name for p in out.iterdir())
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode != 0 and "is not empty" in again.stderr and "--overwrite_output_dir true" in again.stderr
    assert "Traceback" not in again.stderr and sorted(p.name for p in out.iterdir()) == before
