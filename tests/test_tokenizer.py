import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from modeling_iamm import SPECIAL_TOKENS, build_tokenizer, load_word_vectors
from modeling_iamm.text import word_tokenize


def test_round_trip_through_auto_tokenizer(tmp_path, word_tokenizer):
    word_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, PreTrainedTokenizerFast)
    assert loaded.get_vocab() == word_tokenizer.get_vocab()
    assert loaded.convert_ids_to_tokens(list(range(7))) == SPECIAL_TOKENS
    assert (loaded.pad_token_id, loaded.unk_token_id, loaded.bos_token_id, loaded.eos_token_id, loaded.cls_token_id) == (0, 1, 2, 3, 4)
    text = "I can't believe my dog ate the whole cake, it's crazy!"
    assert loaded(text).input_ids == word_tokenizer(text).input_ids
    assert loaded.decode(loaded(text).input_ids) == " ".join(
        w if w in word_tokenizer.get_vocab() else "[UNK]" for w in word_tokenize(text)
    )


def test_vocabulary_from_training_text_only():
    train = ["the cat sat", "the cat ran", "a dog"]
    tok = build_tokenizer(train)
    vocab = tok.get_vocab()
    assert len(tok) == len(SPECIAL_TOKENS) + 6
    assert (vocab["cat"], vocab["the"], vocab["a"]) == (7, 8, 9)  # most frequent first, ties alphabetical
    assert tok("the zebra").input_ids == [vocab["the"], tok.unk_token_id]
    assert len(build_tokenizer(train, min_frequency=2)) == len(SPECIAL_TOKENS) + 2
    assert len(build_tokenizer(train, max_vocab_size=9)) == 9
    with pytest.raises(ValueError, match="min_frequency"):
        build_tokenizer(train, min_frequency=0)


def test_glove_vectors_fill_known_words(tmp_path):
    tok = build_tokenizer(["the cat sat on the mat"])
    path = tmp_path / "glove.txt"
    path.write_text("the 0.1 0.2 0.3\nzebra 9 9 9\ncat -1 0 1\n")
    emb = torch.nn.Embedding(len(tok), 3)
    before = emb.weight.detach().clone()
    vectors, found = load_word_vectors(str(path), tok, emb)
    vocab = tok.get_vocab()
    assert found.sum() == 2 and found[vocab["the"]] and found[vocab["cat"]]
    assert torch.allclose(emb.weight[vocab["cat"]], torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.equal(emb.weight[vocab["sat"]], before[vocab["sat"]])  # not in the file: untouched

    bad = tmp_path / "bad.txt"
    bad.write_text("the 0.1 0.2 0.3\ncat 0.1 0.2\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 2: expected 3 values after the word, got 2"):
        load_word_vectors(str(bad), tok)
