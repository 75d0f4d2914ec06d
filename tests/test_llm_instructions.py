"""IAMM_large instructions: the builder (both variants, both renderings), the high/low weight word rule, the answer
parser, and the instruction data built end to end from a tiny trained IAMM (cache, resume, refusal, parquet)."""

import json
import os
import subprocess
import sys

import pytest

from iamm.llm.instructions import (
    INSTRUCTION_FEATURES,
    AssociatedWords,
    InstructionConfig,
    aggregate_word_weights,
    build_instruction,
    format_answer,
    instruction_row,
    parse_answer,
    split_associated_words,
)
from modeling_iamm import EMOTION_LABELS

AUTHORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "iamm_large_authors")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "modeling_iamm", "sample_data")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_DATASETS_DISABLE_PROGRESS_BARS="1",
           OMP_NUM_THREADS="1")

CONTEXT = ["I lost my job today.", "Oh no, what happened?", "My company closed\nwithout warning."]
SITUATION = "My company shut down and I lost my job."


# ---- the authors' format, against the prompts their training log printed (fixtures: see their README) ------------
def _logged(name):
    """The text their glmtuner printed as `inputs:` (the decoded input ids), from the fixture excerpt."""
    with open(os.path.join(AUTHORS, name), encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert lines[0] == "inputs:"
    return "\n".join(lines[1:]).rstrip("\n")


# The raw ED text of the two logged samples (ED train hit:0_conv:1, turn 1; the first test sample): the authors'
# data holds it lower-cased, contractions expanded and NLTK-tokenised.
FIREWORKS = dict(context=["I remember going to see the fireworks with my best friend. It was the first time we ever "
                          "spent time alone together. Although there was a lot of people, we felt like the only "
                          "people in the world."],
                 situation="I remember going to the fireworks with my best friend. There was a lot of people, but it "
                           "only felt like us in the world.",
                 emotion="sentimental", target="Was this a friend you were in love with, or just a best friend?",
                 high=["fireworks", "spent"],
                 low="it,us,friend,,,world,see,a,although,to,we,like,only,alone,first,people,my,.,but,in,together,"
                     "remember,going".split(",")[:3] + [","] + "world,see,a,although,to,we,like,only,alone,first,"
                     "people,my,.,but,in,together,remember,going".split(","))
GUILTY = dict(context=["Yeah about 10 years ago I had a horrifying experience. It was 100% their fault but they hit "
                       "the water barrels and survived. They had no injuries but they almost ran me off the road."],
              situation="I felt guilty when I was driving home one night and a person tried to fly into my lane, and "
                        "didn't see me. I honked and they swerved back into their lane, slammed on their brakes, and "
                        "hit the water cones.",
              emotion="guilty", target="Did you suffer any injuries?",
              high="guilty,water,fault,fly,lane,experience,horrifying,road".split(","), low=["and", "night"])

DECODED_PREFIX = "[gMASK]sop "  # the two special tokens, then the space SentencePiece decodes for the dummy prefix


def _authors_prompt(sample):
    ranked = [(w, 1.0 - i / 100) for i, w in enumerate(sample["high"] + sample["low"])]
    config = InstructionConfig(format="authors", high_min_weight=1.0 - (len(sample["high"]) - 0.5) / 100)
    words = split_associated_words(ranked, config)
    assert [w for w, _ in words.high] == sample["high"] and [w for w, _ in words.low] == sample["low"]
    instruction = build_instruction(sample["context"], sample["situation"], words, format="authors")
    return instruction, format_answer(sample["emotion"], sample["target"], format="authors")


def test_authors_format_matches_their_logged_training_prompt():
    instruction, answer = _authors_prompt(FIREWORKS)
    logged = _logged("out_log_train_example.txt")
    assert answer == "Emotion:sentimental\n Response:was this a friend you were in love with , or just a best friend ?"
    # a training example is [gMASK] sop + the source cut to 510 tokens + the target (its own dummy-prefix space)
    assert logged.startswith(DECODED_PREFIX) and logged.endswith(" " + answer)
    source = logged[len(DECODED_PREFIX): -len(" " + answer)]
    ours = instruction.to_glmtuner()
    assert ours.startswith("[gMASK]sop[Round 1]\n\n问：You are an empathetic conversational agent.")
    assert ours[len("[gMASK]sop"):].startswith(source)  # their text, character for character, up to their cut
    assert source.endswith("Low wieght words: " + ",".join(FIREWORKS["low"]))  # the cut lost the answer cue
    assert ours.endswith(",".join(FIREWORKS["low"]) + "\n\n答：")
    with open(os.path.join(AUTHORS, "instruction.txt"), encoding="utf-8") as f:
        assert instruction.system == f.read()  # their released template, byte for byte


def test_authors_format_matches_their_logged_prediction_prompt():
    instruction, answer = _authors_prompt(GUILTY)
    logged = _logged("out_log_predict_example.txt")
    assert logged.startswith(DECODED_PREFIX)
    source = logged[len(DECODED_PREFIX):]
    ours = instruction.to_glmtuner()[len("[gMASK]sop"):]
    assert ours.startswith(source) and source.endswith("\n Low wieght words: and,")  # cut at 512 tokens
    assert "and did not see me" in source and "100 % their fault" in source
    assert instruction.to_messages() == [{"role": "user", "content": instruction.system + instruction.user}]
    assert "[gMASK]sop " + answer == "[gMASK]sop Emotion:guilty\n Response:did you suffer any injuries ?"  # their label


def test_authors_text_leaves_their_targets_as_they_are():
    """Their data's replies (the gold side of their released predictions) are already in the form authors_text
    produces: lower-cased, contractions of their table expanded (`did not`, never `did n't`), NLTK words."""
    from iamm.llm.instructions import authors_text

    with open(os.path.join(AUTHORS, "generated_predictions_rows.jsonl"), encoding="utf-8") as f:
        replies = [json.loads(line)["label"].split("\n Response:")[1] for line in f]
    assert [authors_text(r) for r in replies] == replies
    assert authors_text("Why didn't you? I can't, it's 5:30.") == "why did not you ? i can not , it is 5:30 ."


def test_authors_word_rule_thresholds_keep_punctuation_and_any_length():
    ranked = [("guilty", 0.9), (",", 0.8), ("water", 0.7), ("and", 0.3), (".", 0.2), ("the", 0.05)]
    words = split_associated_words(ranked, InstructionConfig(format="authors"))
    assert [w for w, _ in words.high] == ["guilty", ",", "water"]  # weight >= 0.5
    assert [w for w, _ in words.low] == ["and", ".", "the"]  # all the rest, punctuation kept, no limit
    iamm = split_associated_words(ranked, InstructionConfig())
    assert [w for w, _ in iamm.high] == ["guilty", "water", "and", "the"] and iamm.low == []
    assert InstructionConfig().num_high_words == 5 and InstructionConfig().max_low_words == 20
    with pytest.raises(ValueError, match="format must be one of"):
        InstructionConfig(format="paper")


def test_authors_rows_carry_their_format():
    sample = {"conv_id": "c", "turn": 1, "situation": "A test.", "context": ["I can't sleep!"], "emotion": "anxious",
              "target": "Why not?"}
    row = instruction_row(sample, [("sleep", 0.9), ("!", 0.1)], config=InstructionConfig(format="authors"))
    assert row["format"] == "authors" and row["answer"] == "Emotion:anxious\n Response:why not ?"
    assert row["messages"][0]["role"] == "user" and len(row["messages"]) == 1
    assert row["messages"][0]["content"].endswith("Dialogue context: i can not sleep !\n Dialogue situation:a test ."
                                                  "\n High weight words: sleep \n Low wieght words: !")
    assert "High weight words" not in row["plain_messages"][0]["content"].split("Dialogue context")[1]
    assert row["chatglm3_prompt"].startswith("[gMASK]sop[Round 1]\n\n问：") and row["chatglm3_prompt"].endswith("答：")
    assert instruction_row(sample, [("sleep", 0.9)])["format"] == "iamm"


# ---- builder ----------------------------------------------------------------------------------------------------
def test_instruction_with_associations_has_the_authors_content():
    words = AssociatedWords(high=[("job", 0.9), ("lost", 0.8)], low=[("the", 0.5), ("company", 0.4)])
    instruction = build_instruction(CONTEXT, SITUATION, words)
    system, user = instruction.system, instruction.user
    assert system.startswith("You are an empathetic listener.")
    assert 'separated by "</s>"' in system and "the last utterance is the speaker's" in system
    assert "Infer the emotion of the speaker from the dialogue history and the dialogue situation" in system
    assert "one of these 32 labels: " + ", ".join(EMOTION_LABELS) + "." in system
    assert '"High weight words" and "low weight words" are words from the dialogue history or the dialogue situation' in system
    assert system.endswith("Answer in exactly this format:\nEmotion: <label>\nResponse: <reply>")
    assert user.split("\n") == [
        "Dialogue context: I lost my job today.</s>Oh no, what happened?</s>My company closed without warning.",
        "Dialogue situation: My company shut down and I lost my job.",
        "High weight words: job, lost",
        "Low weight words: the, company",
    ]


def test_plain_instruction_is_the_same_without_weight_words():
    plain = build_instruction(CONTEXT, SITUATION, None)
    full = build_instruction(CONTEXT, SITUATION, AssociatedWords(high=[], low=[]))
    assert "weight words" not in plain.system and "weight words" not in plain.user
    assert plain.user.split("\n") == full.user.split("\n")[:2]
    assert full.user.endswith("High weight words: (none)\nLow weight words: (none)")
    # the rules are the same apart from the association rule (numbered one further on)
    assert "one of these 32 labels" in plain.system and plain.system.endswith("Response: <reply>")
    assert len(full.system.split("\n")) == len(plain.system.split("\n")) + 1


def test_renderings():
    instruction = build_instruction(CONTEXT, SITUATION, AssociatedWords(high=[("job", 0.9)], low=[]))
    assert instruction.to_messages() == [{"role": "system", "content": instruction.system},
                                         {"role": "user", "content": instruction.user}]
    text = instruction.to_chatglm3()
    assert text == f"[gMASK]sop<|system|>\n{instruction.system}<|user|>\n{instruction.user}<|assistant|>\n"
    answer = format_answer("sad", "I am sorry.\n Really.")
    assert answer == "Emotion: sad\nResponse: I am sorry. Really."
    assert instruction.to_chatglm3(answer) == text + answer
    with pytest.raises(ValueError, match="non-empty list of utterances"):
        build_instruction("one string", SITUATION)


# ---- high / low weight words ------------------------------------------------------------------------------------
ASSOCIATIONS = {
    "utterance-situation": [
        {"turn": 0, "head": 0, "keyword": "job", "keyword_side": "other", "keyword_weight": 0.70,
         "associated": [["lost", 0.95], ["the", 0.90], [".", 0.99], ["[CLS]", 0.98], ["company", 0.40]]},
        {"turn": 0, "head": 1, "keyword": "lost", "keyword_side": "utterance", "keyword_weight": 0.60,
         "associated": [["job", 0.97], ["my", 0.85], ["i", 0.30]]},
    ],
    "utterance-history": [
        {"turn": 2, "head": 0, "keyword": "closed", "keyword_side": "utterance", "keyword_weight": 0.88,
         "associated": [["happened", 0.91], ["oh", 0.20], ["lost", 0.50]]},
    ],
    "utterance-memory": [
        {"turn": 2, "head": 0, "keyword": "<none>", "keyword_side": "other", "keyword_weight": 0.99,
         "associated": [["warning", 0.45], ["[UNK]", 0.93]]},
    ],
    "implicit-utterance-situation": [
        {"turn": 0, "head": 0, "keyword": "xReact(situation)", "keyword_side": "other", "keyword_weight": 0.99,
         "associated": [["xIntent(utterance 1)", 0.99]]},
    ],
    "selected_memory_words": [["without", 0.999]],
}


def test_word_weights_take_each_words_best_weight_over_explicit_pairs_only():
    ranked = aggregate_word_weights(ASSOCIATIONS)
    assert ranked == [(".", 0.99), ("job", 0.97), ("lost", 0.95), ("happened", 0.91), ("the", 0.90),
                      ("closed", 0.88), ("my", 0.85), ("warning", 0.45), ("company", 0.40), ("i", 0.30), ("oh", 0.20)]
    # dropped: special tokens, <none>, relation refs, selector scores (punctuation is kept until the split)
    words = {w for w, _ in ranked}
    assert not words & {"[CLS]", "[UNK]", "<none>", "xReact(situation)", "xIntent(utterance 1)", "without"}


def test_split_into_high_and_low():
    ranked = aggregate_word_weights(ASSOCIATIONS)
    words = split_associated_words(ranked)  # defaults: 5 high, up to 20 low, no floor, no punctuation
    assert [w for w, _ in words.high] == ["job", "lost", "happened", "the", "closed"]
    assert [w for w, _ in words.low] == ["my", "warning", "company", "i", "oh"]  # stop words stay
    words = split_associated_words(ranked, InstructionConfig(num_high_words=2, max_low_words=3, min_low_weight=0.4))
    assert [w for w, _ in words.high] == ["job", "lost"]
    assert [w for w, _ in words.low] == ["happened", "the", "closed"]
    words = split_associated_words(ranked, InstructionConfig(num_high_words=3, max_low_words=20, min_low_weight=0.5))
    assert [w for w, _ in words.low] == ["the", "closed", "my"]
    with pytest.raises(ValueError, match="min_low_weight must be in"):
        InstructionConfig(min_low_weight=2.0)


def test_instruction_row_matches_the_schema():
    sample = {"conv_id": "hit:1_conv:2", "turn": 3, "situation": SITUATION, "context": CONTEXT, "emotion": "sad",
              "target": "I'm so sorry."}
    row = instruction_row(sample, aggregate_word_weights(ASSOCIATIONS), "devastated",
                          InstructionConfig(num_high_words=2, max_low_words=2))
    assert list(row) == list(INSTRUCTION_FEATURES)
    assert row["id"] == "hit:1_conv:2#3" and row["iamm_emotion"] == "devastated"
    assert row["high_words"] == ["job", "lost"] and row["low_words"] == ["happened", "the"]
    assert row["high_weights"] == [0.97, 0.95]
    assert "High weight words: job, lost" in row["messages"][1]["content"]
    assert "weight words" not in row["plain_messages"][1]["content"]
    assert row["chatglm3_prompt"].endswith("Low weight words: happened, the<|assistant|>\n")
    assert "High weight words" not in row["plain_chatglm3_prompt"]
    assert row["answer"] == "Emotion: sad\nResponse: I'm so sorry."


# ---- parse_answer -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, emotion, response, valid", [
    ("Emotion: sad\nResponse: I'm sorry.", "sad", "I'm sorry.", True),
    ("emotion: Sad\nresponse: I'm sorry.", "sad", "I'm sorry.", True),  # casing
    ("Sure, here you go!\nEmotion: proud\nResponse: Well done!\nHope this helps.", "proud", "Well done!\nHope this helps.", True),
    ("**Emotion:** Joyful\n**Response:** \"That is wonderful!\"", "joyful", "That is wonderful!", True),  # markdown, quotes
    ("Emotion：afraid\nResponse：Stay safe.", "afraid", "Stay safe.", True),  # full-width colons
    ("Emotion: sad Response: Oh no.", "sad", "Oh no.", True),  # one line
    ("Emotion: sad", "sad", "", True),  # no Response field
    ("Emotion: lonely\nI am here for you.", "lonely", "I am here for you.", True),  # no Response label
    ("Response: That sounds scary.", None, "That sounds scary.", False),  # no Emotion field
    ("Terrified\nResponse: That sounds scary.", "terrified", "That sounds scary.", True),  # bare label line
    ("Emotion: happy\nResponse: Yay!", None, "Yay!", False),  # not one of the 32
    ("Emotion: Feeling sad.\nResponse: Hugs.", "sad", "Hugs.", False),  # containment: one label as a word
    ("Emotion: sadness\nResponse: Hugs.", "sad", "Hugs.", False),  # containment: a word starting with a label
    ("Emotion: sad and lonely\nResponse: Hugs.", None, "Hugs.", False),  # two labels: ambiguous
    ("I hope things get better soon.", None, "I hope things get better soon.", False),  # free text
    ("", None, "", False),
])
def test_parse_answer(text, emotion, response, valid):
    parsed = parse_answer(text)
    assert (parsed.emotion, parsed.response, parsed.valid_label) == (emotion, response, valid)


# ---- end to end on a tiny trained IAMM --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "iamm"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--preset", "tiny", "--data",
                           SAMPLE, "--use_cpu", "true", "--max_samples", "64", "--disable_tqdm", "true", "--output_dir",
                           str(out)], cwd=out.parent, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(out)


@pytest.fixture(scope="module")
def loaded(trained):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(trained, trust_remote_code=True), AutoTokenizer.from_pretrained(trained)


@pytest.mark.slow
def test_build_instructions_script_end_to_end(trained, tmp_path):
    from datasets import load_dataset

    out = tmp_path / "instr"
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "build_instructions.py"), "--model_name_or_path", trained,
           "--data", SAMPLE, "--splits", "valid", "--output_dir", str(out), "--max_samples", "12", "--batch_size", "5",
           "--num_high_words", "3", "--max_low_words", "6", "--disable_tqdm", "true"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = load_dataset("parquet", data_files={"valid": str(out / "data" / "valid-00000-of-00001.parquet")})["valid"]
    assert data.num_rows == 12 and data.features == INSTRUCTION_FEATURES
    for row in data:
        assert 1 <= len(row["high_words"]) <= 3 and len(row["low_words"]) <= 6
        assert row["high_weights"] == sorted(row["high_weights"], reverse=True)
        assert min(row["high_weights"]) >= max(row["low_weights"] or [0])
        assert row["iamm_emotion"] in EMOTION_LABELS and row["emotion"] in EMOTION_LABELS
        assert "High weight words: " + ", ".join(row["high_words"]) in row["messages"][1]["content"]
        assert row["answer"].startswith(f"Emotion: {row['emotion']}\nResponse: ")
    # the cache: a header and one line per sample
    lines = (out / "associations" / "valid.jsonl").read_text().splitlines()
    assert "__header__" in json.loads(lines[0]) and len(lines) == 13
    # the same build again, in process: nothing is recomputed; other word-split settings are refused
    from transformers import AutoModel, AutoTokenizer

    from iamm.llm.associations import build_instruction_data
    from modeling_iamm.collator import IAMMDataCollator
    from modeling_iamm.preparation import DataArguments, prepare_data

    model, tokenizer = AutoModel.from_pretrained(trained, trust_remote_code=True), AutoTokenizer.from_pretrained(trained)
    data_args = DataArguments(data=SAMPLE, splits=["valid"], max_samples=12)
    samples, _ = prepare_data(data_args, tokenizer)
    collator = IAMMDataCollator(tokenizer, relation_names=model.config.relation_names,
                                **data_args.length_limits(getattr(model.config, "length_limits", None)))
    seen = []
    hook = model.get_encoder().register_forward_hook(lambda *a: seen.append(1))
    build_instruction_data(model, tokenizer, dict(samples), str(out), InstructionConfig(num_high_words=3, max_low_words=6), progress=False,
                           collator=collator)
    hook.remove()
    assert seen == []
    rebuilt = load_dataset("parquet", data_files={"valid": str(out / "data" / "valid-00000-of-00001.parquet")})["valid"]
    assert rebuilt.to_list() == data.to_list()
    with pytest.raises(ValueError, match=r"was built with other settings \(num_high_words: 3 there, 4 now"):
        build_instruction_data(model, tokenizer, dict(samples), str(out), InstructionConfig(num_high_words=4, max_low_words=6), progress=False,
                               collator=collator)


def test_interrupted_extraction_resumes_without_recomputing(loaded, sample_samples, tmp_path):
    from iamm.llm.associations import cache_associations, sample_id

    model, tokenizer = loaded
    samples = [sample_samples["valid"][i] for i in range(20)]
    path = str(tmp_path / "assoc.jsonl")

    def stop_after_two_batches(n, calls=[]):
        calls.append(n)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache_associations(model, tokenizer, samples, path, batch_size=4, progress=False, on_batch=stop_after_two_batches)
    with open(path, "a") as f:
        f.write('{"id": "half a line')  # as if killed while writing
    assert len(open(path).read().splitlines()) == 1 + 8 + 1

    seen = []
    hook = model.get_encoder().register_forward_hook(lambda mod, args, kwargs, out: seen.append(kwargs["context_ids"].shape[0]),
                                                     with_kwargs=True)
    try:
        resumed = cache_associations(model, tokenizer, samples, path, batch_size=4, progress=False)
        assert sum(seen) == 12  # only the 12 samples not cached yet went through the encoder
        seen.clear()
        again = cache_associations(model, tokenizer, samples, path, batch_size=4, progress=False)
        assert seen == [] and again == resumed  # nothing left to compute
    finally:
        hook.remove()
    assert list(resumed) == [sample_id(s) for s in samples]
    lines = open(path).read().splitlines()
    assert len(lines) == 21 and all(json.loads(line) for line in lines)
    # the resumed cache equals a fresh run in one batch (the model is batch-independent)
    fresh = cache_associations(model, tokenizer, samples, str(tmp_path / "fresh.jsonl"), batch_size=20, progress=False)
    for key in fresh:
        assert dict(fresh[key]["words"]) == pytest.approx(dict(resumed[key]["words"]), abs=2e-3)
        assert fresh[key]["iamm_emotion"] == resumed[key]["iamm_emotion"]


def test_cache_of_another_checkpoint_or_text_is_refused(loaded, sample_samples, tmp_path):
    import torch

    from iamm.llm.associations import cache_associations

    model, tokenizer = loaded
    samples = [sample_samples["valid"][i] for i in range(3)]
    path = str(tmp_path / "assoc.jsonl")
    cache_associations(model, tokenizer, samples, path, progress=False)
    changed = [dict(samples[0], situation=samples[0]["situation"] + " Not the same."), *samples[1:]]
    with pytest.raises(ValueError, match=r"sample .*#1 was cached for another dialogue text"):
        cache_associations(model, tokenizer, changed, path, progress=False)
    weight = next(model.parameters())  # another checkpoint: one weight differs
    with torch.no_grad():
        weight.add_(1e-3)
    try:
        with pytest.raises(ValueError, match=r"made with other settings \(model_fingerprint: file has"):
            cache_associations(model, tokenizer, samples, path, progress=False)
        assert len(cache_associations(model, tokenizer, samples, path, overwrite=True, progress=False)) == 3
    finally:
        with torch.no_grad():
            weight.sub_(1e-3)
