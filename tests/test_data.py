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


# ---- defects of the loader that silently cut, duplicated or mixed data -------------------------------------


def _load_error(path, **kwargs):
    with pytest.raises(EDFormatError) as err:
        load_empathetic_dialogues(str(path), **kwargs)
    return err.value


def test_an_unescaped_comma_in_release_text_is_an_error_not_a_cut_text(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(HEADER + "\n" + GOOD + "hit:9_conv:9,1,afraid,situation,7,well, I think so, really,,\n")
    e = _load_error(path)
    assert (e.location, e.field) == ("line 4", "utterance") and "not written as _comma_" in str(e)
    path.write_text(HEADER + "\n" + GOOD + "hit:9_conv:9,1,afraid,dark, cold night,7,hello,,\n")
    assert (_load_error(path).location, _load_error(path).field) == ("line 4", "prompt")
    # the test split's 9th column (inline label candidates) is not a comma in the text
    path.write_text(HEADER + "\n" + GOOD + "hit:9_conv:9,1,afraid,situation,7,hello,5|5|5_2|2|5,,a|b\n")
    assert load_empathetic_dialogues(str(path))["train"]["utterances"][1] == ["hello"]


@pytest.mark.parametrize("tail, location", [
    ("hit:9_conv:9,1,afraid,situation,7,hello ther", "line 4"),  # cut after 6 fields, no newline
    ("hit:9_conv:9,1,afraid,situation,7,hello,,\nhit:9_conv:9,2,afraid,situation,8,hi,", "line 5"),  # 7 fields
])
def test_a_cut_last_release_line_is_an_error(tmp_path, tail, location):
    path = tmp_path / "train.csv"
    path.write_text(HEADER + "\n" + GOOD + tail)
    e = _load_error(path)
    assert e.location == location and "the line is cut" in str(e)


def test_a_quoted_csv_cut_inside_a_quoted_field_or_short_of_values_is_an_error(tmp_path):
    path = tmp_path / "train.csv"
    head = HEADER + '\nhit:1_conv:2,1,afraid,"I was scared, really",7,"it was dark",,\n'
    path.write_text(head + 'hit:1_conv:2,2,afraid,"I was scared, really",8,"oh no, tha')
    assert "quoted field is not closed" in str(_load_error(path))
    path.write_text(head + 'hit:1_conv:2,2,afraid,"I was scared, really",8,"oh no"\n')
    e = _load_error(path)
    assert e.location == "line 3" and "6 of 8 values" in str(e)


def test_two_files_for_one_split_are_refused(tmp_path, reference):
    convs = list(reference)[:3]
    write_release_csv(tmp_path / "train.csv", convs)
    write_jsonl(str(tmp_path / "train.jsonl"), conversation_rows(convs))
    with pytest.raises(ValueError, match=r"split 'train' has several files \(train.csv, train.jsonl\)"):
        load_empathetic_dialogues(str(tmp_path))
    # Hub shards of one split are read together
    shards = tmp_path / "hub" / "data"
    shards.mkdir(parents=True)
    for k, part in enumerate([convs[:2], convs[2:]]):
        Dataset.from_list(list(_utterance_rows(part))).to_parquet(str(shards / f"train-0000{k}-of-00002.parquet"))
    assert load_empathetic_dialogues(str(tmp_path / "hub"))["train"].num_rows == 3


def test_a_broken_jsonl_line_drops_its_whole_conversation_once(tmp_path, reference):
    convs = list(reference)[:3]
    rows = [json.dumps(r) for r in _utterance_rows(convs)]
    broken = rows[1][:-5]  # the second turn of the first conversation, cut
    path = tmp_path / "valid.jsonl"
    path.write_text("\n".join(rows[:1] + [broken] + rows[2:]) + "\n")
    loaded, report = load_empathetic_dialogues(str(path), skip_invalid=True, return_report=True)
    assert loaded["valid"]["conv_id"] == [c["conv_id"] for c in convs[1:]]
    assert report.total == 1 and "invalid JSON" in str(report)
    # a missing turn that cannot be attributed is still found: the numbering has a gap
    path.write_text("\n".join(rows[:1] + rows[2:]) + "\n")
    e = _load_error(path)
    assert e.field == "utterance_idx" and "lacks utterance_idx [2]" in str(e)


def test_inconsistent_emotion_and_speaker_are_errors(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(HEADER + "\n" + GOOD.replace("2,afraid", "2,sad"))
    e = _load_error(path)
    assert (e.location, e.field) == ("line 3", "context") and "differs from 'afraid'" in str(e)
    rows = [{"conv_id": "a", "emotion": "sad", "situation": "s", "turns": [
        {"utterance_idx": 1, "speaker": "speaker", "text": "x"}, {"utterance_idx": 2, "speaker": "speaker", "text": "y"}]}]
    write_jsonl(str(tmp_path / "valid.jsonl"), rows)
    e = _load_error(tmp_path / "valid.jsonl")
    assert (e.location, e.field) == ("line 1 (turn 1)", "speaker") and "the listener's turn" in str(e)
    utterance_rows = [{"conv_id": "a", "utterance_idx": 1, "emotion": "sad", "prompt": "s", "utterance": "x",
                       "speaker": "listener"}]
    write_jsonl(str(tmp_path / "test.jsonl"), utterance_rows)
    assert _load_error(tmp_path / "test.jsonl").field == "speaker"


def test_non_utf8_header_only_and_fully_skipped_files_name_the_file(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes((HEADER + "\n" + GOOD).encode() + "hit:9_conv:9,1,afraid,caf\xe9,7,hello,,\n".encode("latin-1"))
    e = _load_error(path)
    assert (e.source, e.location, e.field) == (str(path), "line 4", "encoding") and "not UTF-8" in str(e)
    path.write_text(HEADER + "\n")
    assert "no conversation in the file" in str(_load_error(path))
    path.write_text(HEADER + "\nhit:9_conv:9,1,cheerful,situation,7,hello,,\n")
    e = _load_error(path, skip_invalid=True)
    assert e.source == str(path) and "all 1 conversation(s) are invalid" in str(e) and "cheerful" in str(e)


@pytest.mark.parametrize("writer", [write_release_csv, write_quoted_csv])
def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path, reference, writer):
    convs = list(reference)[:3]
    writer(tmp_path / "plain.csv", convs)
    path = tmp_path / "train.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.csv").read_bytes())  # as spreadsheet exports write it
    loaded = load_empathetic_dialogues(str(path))["train"]
    assert loaded["conv_id"] == [c["conv_id"] for c in convs]
    assert loaded["utterances"] == [c["utterances"] for c in convs]
    jsonl = tmp_path / "valid.jsonl"
    write_jsonl(str(jsonl), conversation_rows(convs))
    jsonl.write_bytes(b"\xef\xbb\xbf" + jsonl.read_bytes())
    assert load_empathetic_dialogues(str(jsonl))["valid"]["conv_id"] == [c["conv_id"] for c in convs]


def test_split_names_ignore_case_so_two_cases_of_one_split_are_refused(tmp_path, reference):
    convs = list(reference)[:3]
    write_release_csv(tmp_path / "Train.csv", convs)
    assert list(load_empathetic_dialogues(str(tmp_path))) == ["train"]  # not a split named "Train"
    write_release_csv(tmp_path / "train.csv", convs)
    if len(os.listdir(tmp_path)) < 2:
        pytest.skip("case-insensitive file system: Train.csv and train.csv are one file")
    with pytest.raises(ValueError, match=r"split 'train' has several files \(Train.csv, train.csv\)"):
        load_empathetic_dialogues(str(tmp_path))


def test_an_utterance_ending_with_an_unescaped_comma_keeps_it(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(HEADER + "\n" + GOOD + "hit:9_conv:9,1,afraid,situation,7,well then,,,\n"
                    + "hit:9_conv:9,2,afraid,situation,8,oh no,,5|5|5_2|2|5,\n")
    loaded = load_empathetic_dialogues(str(path))["train"]
    assert loaded["utterances"][1] == ["well then,", "oh no,"]
    # a comma inside the text stays an error; the test split's 9th column is still read as label candidates
    path.write_text(HEADER + "\n" + GOOD + "hit:9_conv:9,1,afraid,situation,7,well, then,,,\n")
    assert (_load_error(path).location, _load_error(path).field) == ("line 4", "utterance")
    path.write_text(HEADER + "\n" + GOOD + "hit:9_conv:9,1,afraid,situation,7,hello,5|5|5_2|2|5,,\n"
                    + "hit:9_conv:9,2,afraid,situation,8,hi,,,a|b\n")
    assert load_empathetic_dialogues(str(path))["train"]["utterances"][1] == ["hello", "hi"]


def test_skip_invalid_that_drops_everything_does_not_suggest_skip_invalid(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(HEADER + "\nhit:9_conv:9,1,cheerful,situation,7,hello,,\n")
    e = _load_error(path, skip_invalid=True)
    assert "skip_invalid=True" not in str(e) and "skip_invalid dropped them all" in str(e)
    assert "line 2, field 'context': unknown emotion 'cheerful'" in str(e)
    assert "pass skip_invalid=True" in str(_load_error(path))  # without it, the hint stays
