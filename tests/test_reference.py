"""The side-by-side harness with the authors' code: the inputs both sides read, and the conversion of this package's
samples into the authors' data format. Their code is not part of this project (no licence); the tests that run it
need a checkout named by IAMM_AUTHORS_SRC and skip without one."""

import json
import os
import subprocess
import sys

import pytest
import torch

from modeling_iamm.collator import encode_samples
from modeling_iamm.configuration_iamm import RELATIONS
from modeling_iamm.reference import (AUTHORS_SPECIALS, STAND_IN_KNOWLEDGE, authors_index2word, gate_summary,
                                     to_authors_data, write_stand_in_knowledge, write_text_vectors)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTHORS_SRC = os.environ.get("IAMM_AUTHORS_SRC")
needs_authors = pytest.mark.skipif(
    not AUTHORS_SRC, reason="the authors' code is not part of this project: set IAMM_AUTHORS_SRC to a checkout of "
                            "github zhouzhouyang520/IAMM (and pip install -e '.[reference]') to run these")


@pytest.fixture(scope="module")
def valid_words(sample_samples):
    return encode_samples(sample_samples["valid"].select(range(12)))


def test_their_vocabulary_holds_exactly_our_words(word_tokenizer):
    index2word = authors_index2word(word_tokenizer)
    assert [index2word[i] for i in range(7)] == [AUTHORS_SPECIALS[i] for i in range(7)]
    ours = {w for w in word_tokenizer.get_vocab() if not w.startswith("[")}
    assert set(index2word.values()) - set(AUTHORS_SPECIALS.values()) == ours
    assert sorted(index2word) == list(range(len(index2word)))  # dense ids, as their Lang expects
    # id order follows ours: a word with a lower id here has a lower id there
    vocab = word_tokenizer.get_vocab()
    words = [index2word[i] for i in range(7, len(index2word))]
    assert [vocab[w] for w in words] == sorted(vocab[w] for w in words)


def test_a_vocabulary_word_named_like_their_special_token_is_refused(word_tokenizer):
    class Clash:
        def get_vocab(self):
            return {**word_tokenizer.get_vocab(), "CLS": len(word_tokenizer)}

    with pytest.raises(ValueError, match="CLS"):
        authors_index2word(Clash())


def test_samples_convert_word_for_word_with_oov_as_unk(word_tokenizer, valid_words):
    index2word = authors_index2word(word_tokenizer)
    word2index = {w: i for i, w in index2word.items()}
    data = to_authors_data(valid_words, word2index)
    assert set(data) == {"context", "target", "emotion", "situation", "emotion_context", "utt_cs", "comet_cxt",
                         "comet_sit"}
    assert all(len(v) == len(valid_words) for v in data.values())
    saw_oov = False
    for i, sample in enumerate(valid_words):
        assert data["emotion"][i] == sample["emotion"]
        assert len(data["context"][i]) == len(sample["context_words"])
        for theirs, ours in zip(data["context"][i] + [data["target"][i], data["situation"][i]],
                                sample["context_words"] + [sample["target_words"], sample["situation_words"]]):
            assert len(theirs) == len(ours)
            for t, o in zip(theirs, ours):
                assert t == (o if o in word2index else "UNK")
                saw_oov |= o not in word2index
        # knowledge: 5 relations x 1 beam for the situation and for every context utterance
        assert len(data["comet_cxt"][i]) == len(sample["context_words"])
        for block in data["comet_cxt"][i] + [data["comet_sit"][i]]:
            assert [beams[0] for beams in block] == [STAND_IN_KNOWLEDGE[r].split() for r in RELATIONS]
    assert saw_oov, "the valid samples should contain words outside the train vocabulary (min_frequency 2)"


def test_stand_in_knowledge_is_a_cache_this_package_reads(tmp_path, sample_conversations, sample_samples):
    from modeling_iamm.knowledge import KnowledgeCache, attach_knowledge, knowledge_events

    path = str(tmp_path / "knowledge.jsonl")
    events = knowledge_events(sample_conversations)
    assert write_stand_in_knowledge(events, path) == len(set(events))
    attached = attach_knowledge(sample_samples["valid"].select(range(5)), KnowledgeCache(path))
    expected = [STAND_IN_KNOWLEDGE[r] for r in RELATIONS]
    for row in attached:
        assert row["situation_knowledge"] == expected
        assert row["context_knowledge"] == [expected] * len(row["context"])
    with pytest.raises(FileExistsError):
        write_stand_in_knowledge(events, path)


def test_vectors_file_is_read_by_our_loader_with_full_coverage(tmp_path, word_tokenizer):
    from modeling_iamm.word_vectors import load_word_vectors

    words = list(word_tokenizer.get_vocab())
    a, b = str(tmp_path / "a.txt"), str(tmp_path / "b.txt")
    write_text_vectors(a, words, dim=300, seed=3)
    write_text_vectors(b, words, dim=300, seed=3)
    assert open(a).read() == open(b).read()  # seeded: both sides can be given the same file again
    embedding = torch.nn.Embedding(len(word_tokenizer), 300)
    _, found, report = load_word_vectors(a, word_tokenizer, embedding, return_report=True)
    assert report["dim"] == 300 and report["vocab_coverage"] == 1.0
    first = open(a).readline().split()
    row = word_tokenizer.convert_tokens_to_ids(first[0])
    assert torch.allclose(embedding.weight[row], torch.tensor([float(x) for x in first[1:]]), atol=1e-6)
    with pytest.raises(FileExistsError):
        write_text_vectors(a, words)


def test_gate_summary_weighs_the_association_decoder_by_one_minus_g():
    report = gate_summary(torch.tensor([0.0, 0.0, 30.0, -30.0]))
    assert report["gate_mean"] == pytest.approx(0.5, abs=1e-5)
    assert report["association_decoder_weight_mean"] == pytest.approx(0.5, abs=1e-5)
    assert report["share_tokens_gate_above_0.999"] == 0.25


def _driver():
    import importlib.util

    spec = importlib.util.spec_from_file_location("side_by_side", os.path.join(ROOT, "scripts", "reference",
                                                                               "side_by_side.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("flags, message", [
    (["--eval_at", "5", "--max_steps", "4"], "eval_at"),
    (["--variants", "theirs"], "unknown"),
    (["--max_seconds", "nan"], "max_seconds"),
])
def test_the_driver_refuses_bad_settings(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=f"^side_by_side: .*{message}"):
        _driver().main(["--authors_src", str(tmp_path), "--data", str(tmp_path), "--output_dir",
                        str(tmp_path / "out"), *flags])
    assert not (tmp_path / "out").exists()


def test_each_variant_of_ours_is_the_paper_run_with_one_part_swapped(tmp_path):
    """The driver's train.py command of every variant of this package, parsed as train.py parses it: the shared
    settings are the same, and each swap changes exactly its own architecture field."""
    from modeling_iamm.cli import parse_args
    from modeling_iamm.preparation import DataArguments
    from modeling_iamm.training import IAMMTrainingArguments, ModelArguments

    driver = _driver()
    parsed = {}
    for variant in driver.OUR_VARIANTS:
        args = driver.SideBySideArguments(authors_src=str(tmp_path), data=str(tmp_path), output_dir=str(tmp_path),
                                          variant=variant, seed=2)
        cmd = driver.our_train_command(args)
        data, model, training = parse_args((DataArguments, ModelArguments, IAMMTrainingArguments), cmd[2:])
        assert training.seed == 2 and training.max_steps == 3000 and training.output_dir.endswith(f"{variant}-seed2")
        parsed[variant] = (data.knowledge_file is not None,
                           {**model.config_kwargs(), "use_implicit_association": model.use_implicit_association})
    base_knowledge, base = parsed["ours"]
    swapped = {"ours_woIA": {"use_implicit_association": False}, "ours_copy_scores": {"copy_head_pooling": "scores"},
               "ours_no_copy": {"use_pointer_generator": False}, "ours_k15": {"num_memory_words": 15},
               "ours_raw_memory": {"word_selector_input": "raw"}}
    assert set(swapped) == set(driver.OUR_VARIANTS) - {"ours"}
    for variant, change in swapped.items():
        knowledge, kwargs = parsed[variant]
        assert knowledge == (variant != "ours_woIA") and base_knowledge
        assert {k: v for k, v in kwargs.items() if base.get(k) != v} == change, variant


def test_the_driver_trains_evaluates_and_resumes_our_side(tmp_path):
    """The one command on our side alone (tiny preset, a few samples): it writes the evaluations and the table; a
    rerun finds everything done and recomputes nothing."""
    from modeling_iamm import SAMPLE_DATA_DIR

    out = tmp_path / "sbs"
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "reference", "side_by_side.py"), "--authors_src",
           str(tmp_path), "--data", SAMPLE_DATA_DIR, "--output_dir", str(out), "--variants", "ours_woIA",
           "--seeds", "1", "--max_steps", "4", "--warmup", "2", "--eval_at", "2", "4", "--greedy_samples", "3",
           "--our_preset", "tiny", "--max_samples", "16", "--eval_batch_size", "8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((out / "side_by_side.json").read_text())
    rows = result["table"]["ours_woIA"]
    assert set(rows) == {"2", "4"} and rows["4"]["seeds"] == [1]
    step2 = json.loads((out / "eval" / "ours_woIA-seed1-step2.json").read_text())
    step4 = json.loads((out / "eval" / "ours_woIA-seed1-step4.json").read_text())
    assert step2["greedy_samples"] == 3 and step4["greedy_samples"] == step4["samples"] == 16  # the last: all
    assert 0.0 <= step4["association_decoder_weight_mean"] <= 1.0
    assert f"| ours_woIA | 4 | 1 | {step4['emotion_accuracy_x100']:.2f} | {step4['ppl_paper']:.2f} |" in proc.stdout
    mtime = os.path.getmtime(out / "eval" / "ours_woIA-seed1-step4.json")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "starting" not in again.stderr
    assert os.path.getmtime(out / "eval" / "ours_woIA-seed1-step4.json") == mtime
    # gathering runs of several invocations (in this process: it trains nothing): the `ours` runs do not exist and
    # are not started, every evaluation written is in the record as written
    driver = _driver()
    driver.main(cmd[2:] + ["--collect_only", "--variants", "ours_woIA", "ours", "--seeds", "1", "2"])
    assert not (out / "runs" / "ours-seed1").exists()
    result = json.loads((out / "side_by_side.json").read_text())
    assert set(result["table"]) == {"ours_woIA"} and result["table"]["ours_woIA"]["4"]["seeds"] == [1]
    assert result["evaluations"] == {"ours_woIA-seed1-step2": step2, "ours_woIA-seed1-step4": step4}
    with pytest.raises(SystemExit, match="holds no evaluations"):
        driver.main(["--authors_src", str(tmp_path), "--data", SAMPLE_DATA_DIR, "--output_dir", str(tmp_path / "none"),
                     "--collect_only"])


@needs_authors
def test_their_dataset_and_batches_hold_our_words(word_tokenizer, valid_words):
    from modeling_iamm.reference import AuthorsCode

    code = AuthorsCode(AUTHORS_SRC)
    vocab = code.vocabulary(authors_index2word(word_tokenizer))
    dataset = code.dataset(to_authors_data(valid_words, vocab.word2index), vocab)
    batch = code.collate([dataset[i] for i in range(len(valid_words))])
    for row, index in enumerate(batch["sample_index"]):
        sample = valid_words[index]
        first = [vocab.index2word[int(t)] for t in batch["input_batch"][row, 0] if int(t) != 1]
        assert first == ["CLS"] + [w if w in vocab.word2index else "UNK" for w in sample["context_words"][0]]
        target = [vocab.index2word[int(t)] for t in batch["target_batch"][row] if int(t) != 1]
        assert target == [w if w in vocab.word2index else "UNK" for w in sample["target_words"]] + ["EOS"]
        assert batch["program_txt"][row] == sample["emotion"]


@needs_authors
def test_their_model_trains_resumes_and_is_evaluated_with_our_metrics(tmp_path, word_tokenizer, valid_words):
    from modeling_iamm.reference import AuthorsCode, evaluate_authors, train_authors

    code = AuthorsCode(AUTHORS_SRC)
    vocab = code.vocabulary(authors_index2word(word_tokenizer))
    dataset = code.dataset(to_authors_data(valid_words, vocab.word2index), vocab)
    run = str(tmp_path / "authors")
    first = train_authors(code, dataset, run, max_steps=2, save_at=[2], seed=1, warmup=2, batch_size=4, state_every=1)
    assert first["finished"] and os.path.exists(os.path.join(run, "checkpoint-2.pt"))
    again = train_authors(code, dataset, run, max_steps=2, save_at=[2], seed=1, warmup=2, batch_size=4)
    assert again["steps"] == 2  # a finished run resumes to nothing
    report = evaluate_authors(code, os.path.join(run, "checkpoint-2.pt"), dataset, list(valid_words), batch_size=4,
                              greedy_samples=2)
    assert report["samples"] == len(valid_words) and report["greedy_samples"] == 2
    assert report["ppl_paper"] > 1 and 0 <= report["association_decoder_weight_mean"] <= 1
