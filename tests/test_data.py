import csv
import gzip
import json
import os

import pytest
from datasets import Dataset, DatasetDict

from modeling_iamm import EDFormatError, build_samples, describe, load_empathetic_dialogues
from modeling_iamm.data import RELEASE_COLUMNS

from .conftest import SHARED_ED


def _utterance_rows(conversations):
    for conv in conversations:
        for i, text in enumerate(conv["utterances"], start=1):
            yield {"conv_id": conv["conv_id"], "utterance_idx": i, "context": conv["emotion"],
                   "prompt": conv["situation"], "speaker_idx": i % 2, "utterance": text, "selfeval": "", "tags": ""}


def write_release_csv(path, conversations):
    """The original release's writer: no quoting, commas as _comma_."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(RELEASE_COLUMNS) + "\n")
        for row in _utterance_rows(conversations):
            f.write(",".join(str(row[c]).replace(",", "_comma_") for c in RELEASE_COLUMNS) + "\n")


def write_quoted_csv(path, conversations):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RELEASE_COLUMNS)
        writer.writeheader()
        writer.writerows(_utterance_rows(conversations))


def write_jsonl(path, rows):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def conversation_rows(conversations):
    return [{"conv_id": c["conv_id"], "emotion": c["emotion"], "situation": c["situation"],
             "turns": [{"utterance_idx": i + 1, "speaker": s, "text": t}
                       for i, (s, t) in enumerate(zip(c["speakers"], c["utterances"]))]} for c in conversations]


@pytest.fixture(scope="module")
def reference(sample_conversations):
    return sample_conversations["valid"].select(range(40))


def test_every_format_gives_the_same_conversations(tmp_path, reference, monkeypatch):
    convs = list(reference)
    expected = reference.to_list()
    assert any("," in c["situation"] for c in convs), "the sample must exercise _comma_ decoding"

    write_release_csv(tmp_path / "release_valid.csv", convs)
    write_quoted_csv(tmp_path / "quoted_valid.csv", convs)
    write_jsonl(str(tmp_path / "utt_valid.jsonl"), _utterance_rows(convs))
    write_jsonl(str(tmp_path / "conv_valid.jsonl.gz"), conversation_rows(convs))
    Dataset.from_list(list(_utterance_rows(convs))).to_parquet(str(tmp_path / "utt_valid.parquet"))
    hub_dir = tmp_path / "hub" / "data"
    hub_dir.mkdir(parents=True)
    Dataset.from_list(list(_utterance_rows(convs))).to_parquet(str(hub_dir / "validation-00000-of-00001.parquet"))

    for name in ["release_valid.csv", "quoted_valid.csv", "utt_valid.jsonl", "conv_valid.jsonl.gz", "utt_valid.parquet"]:
        loaded = load_empathetic_dialogues({"valid": str(tmp_path / name)})
        assert loaded["valid"].to_list() == expected, name
    # Hub-style folder: data/validation-*.parquet, split renamed to "valid"
    assert load_empathetic_dialogues(str(tmp_path / "hub"))["valid"].to_list() == expected

    # A Hub id goes through datasets.load_dataset and the same row parser.
    calls = []

    def fake_load_dataset(name, **kwargs):
        calls.append((name, kwargs))
        return DatasetDict({"validation": Dataset.from_list(list(_utterance_rows(convs)))})

    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    from_hub = load_empathetic_dialogues("someone/empathetic_dialogues", revision="main")
    assert calls == [("someone/empathetic_dialogues", {"revision": "main"})]
    assert from_hub["valid"].to_list() == expected


def test_samples_one_per_listener_turn(reference):
    samples = build_samples(reference)
    expected = sum(len(c["utterances"]) // 2 for c in reference)
    assert samples.num_rows == expected
    s = samples[0]
    conv = reference[0]
    assert s["context"] == conv["utterances"][:1] and s["target"] == conv["utterances"][1]
    assert s["context_roles"] == ["speaker"]
    assert all(roles[-1] == "speaker" for roles in samples["context_roles"])
    three = samples.filter(lambda r: len(r["context"]) == 3)[0]
    assert three["context_roles"] == ["speaker", "listener", "speaker"]


@pytest.mark.skipif(not os.path.isdir(SHARED_ED), reason="shared ED data not present")
def test_counts_on_the_shared_data():
    conversations = load_empathetic_dialogues(SHARED_ED)
    assert describe(conversations) == {"train": 19533, "valid": 2770}
    assert describe(build_samples(conversations)) == {"train": 40254, "valid": 5738}


HEADER = ",".join(RELEASE_COLUMNS)
GOOD = "hit:1_conv:2,1,afraid,I was scared_comma_ really,7,it was dark,,\nhit:1_conv:2,2,afraid,I was scared_comma_ really,8,oh no,,\n"


@pytest.mark.parametrize(
    "body, line, field, text",
    [
        ("hit:9_conv:9,1,afraid,situation,7,hello,,\nhit:9_conv:9,2,afraid,situation\n", 3, "line", "broken CSV line"),
        ("hit:9_conv:9,1,cheerful,situation,7,hello,,\n", 2, "context", "unknown emotion 'cheerful'"),
        ("hit:9_conv:9,1,afraid,situation,7,hello,,\nhit:9_conv:9,2,afraid,situation,8,  ,,\n", 3, "utterance", "empty text"),
        ("hit:9_conv:9,x,afraid,situation,7,hello,,\n", 2, "utterance_idx", "expected an integer"),
        ("hit:9_conv:9,1,afraid,,7,hello,,\n", 2, "prompt", "empty text"),
    ],
)
def test_bad_csv_rows_name_file_line_and_field(tmp_path, body, line, field, text):
    path = tmp_path / "train.csv"
    path.write_text(HEADER + "\n" + GOOD + body)
    with pytest.raises(EDFormatError) as err:
        load_empathetic_dialogues(str(path))
    e = err.value
    assert (e.source, e.location, e.field) == (str(path), f"line {line + 2}", field)
    assert str(path) in str(e) and f"line {line + 2}" in str(e) and text in str(e)

    loaded, report = load_empathetic_dialogues(str(path), skip_invalid=True, return_report=True)
    assert loaded["train"]["conv_id"] == ["hit:1_conv:2"]  # the good conversation is kept
    assert report.total == 1 and text.split(" '")[0] in str(report)


def test_bad_jsonl_rows(tmp_path):
    rows = [
        {"conv_id": "a", "emotion": "sad", "situation": "s", "turns": [{"utterance_idx": 1, "text": "x"}]},
        {"conv_id": "b", "situation": "s", "turns": [{"utterance_idx": 1, "text": "x"}]},
        {"conv_id": "c", "emotion": "sad", "situation": "s", "turns": [{"utterance_idx": 1, "text": ""}]},
    ]
    path = str(tmp_path / "valid.jsonl")
    write_jsonl(path, rows)
    with open(path, "a") as f:
        f.write("{not json\n")
    with pytest.raises(EDFormatError, match=r"valid.jsonl, line 2, field 'emotion': missing"):
        load_empathetic_dialogues(path)
    loaded, report = load_empathetic_dialogues(path, skip_invalid=True, return_report=True)
    assert loaded["valid"]["conv_id"] == ["a"]
    assert report.total == 3
    assert any("line 3 (turn 0), field 'text': empty text" in e for e in report.examples)
    assert any("line 4, field 'line': invalid JSON" in e for e in report.examples)


def test_missing_split_is_a_clear_error(sample_conversations):
    from modeling_iamm import SAMPLE_DATA_DIR

    with pytest.raises(ValueError, match=r"split\(s\) \['test'\] not found"):
        load_empathetic_dialogues(SAMPLE_DATA_DIR, splits=["test"])
