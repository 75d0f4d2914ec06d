from modeling_iamm import word_tokenize
from modeling_iamm.text import clean_release_text


def test_word_tokenize_follows_the_authors_normalisation():
    # lowercase, contraction table, nltk-style clitics, every punctuation mark its own token
    assert word_tokenize("I DON'T know, it’s John's car... Shouldn't I?") == [
        "i", "do", "not", "know", ",", "it", "is", "john", "'s", "car", ".", ".", ".", "should", "n't", "i", "?",
    ]
    assert word_tokenize("I'm sure we've won't") == ["i", "am", "sure", "we", "have", "will", "not"]
    # contractions only on word boundaries
    assert word_tokenize("idon't") == ["ido", "n't"]  # no word boundary: not expanded, split as nltk does
    assert word_tokenize("   ") == []


def test_release_comma_placeholder():
    assert clean_release_text(" Today_comma_ as i left_comma_ok ") == "Today, as i left,ok"


def test_tokenizer_agrees_with_word_tokenize(word_tokenizer):
    text = "Wow, I can't believe it! That's a xylophonical surprise."
    words = word_tokenize(text)
    vocab = word_tokenizer.get_vocab()
    assert word_tokenizer(text, add_special_tokens=False).input_ids == [
        vocab.get(w, word_tokenizer.unk_token_id) for w in words
    ]
