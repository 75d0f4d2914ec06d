"""The word-level tokenizer of IAMM: a real `PreTrainedTokenizerFast`, built from the training split only.

Its normaliser and pre-tokenizer are the project's (:mod:`modeling_iamm.text`), so `tokenizer(text)` gives the
ids of :func:`modeling_iamm.text.word_tokenize`'s words. Ids 0-6 are the special tokens, in this order:

==========  ===================================================================
`[PAD]`     padding (id 0; the model's masks rely on it)
`[UNK]`     a word outside the vocabulary (the pointer-generator can still copy it, see the collator)
`[SOS]`     start of a response (decoder start token)
`[EOS]`     end of a response
`[CLS]`     first token of every encoded sequence (its encoding summarises the sequence)
`[SPK]`     role of the speaker (who wrote the situation); its embedding is the speaker role embedding
`[LSN]`     role of the listener
==========  ===================================================================

Save it with `save_pretrained` and load it with `AutoTokenizer.from_pretrained` like any other tokenizer.
"""

from collections import Counter
from typing import Iterable, List, Optional, Union

from datasets import Dataset
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from .text import build_normalizer, build_pre_tokenizer, word_tokenize

PAD, UNK, SOS, EOS, CLS, SPK, LSN = "[PAD]", "[UNK]", "[SOS]", "[EOS]", "[CLS]", "[SPK]", "[LSN]"
SPECIAL_TOKENS: List[str] = [PAD, UNK, SOS, EOS, CLS, SPK, LSN]
ROLE_TOKENS = {"speaker": SPK, "listener": LSN}


def count_words(texts: Iterable[str]) -> Counter:
    """Count the normalised words of `texts` (see :func:`modeling_iamm.text.word_tokenize`)."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(word_tokenize(text))
    return counts


def conversation_texts(conversations: Dataset) -> Iterable[str]:
    """Every situation and utterance of a conversation dataset, each once."""
    for situation, utterances in zip(conversations["situation"], conversations["utterances"]):
        yield situation
        yield from utterances


def build_tokenizer(
    texts_or_conversations: Union[Dataset, Iterable[str]],
    min_frequency: int = 1,
    max_vocab_size: Optional[int] = None,
) -> PreTrainedTokenizerFast:
    """Build the word-level tokenizer from training text.

    Args:
        texts_or_conversations: the TRAINING split's conversations (as returned by
            :func:`modeling_iamm.data.load_empathetic_dialogues`) or any iterable of sentences. Never include
            validation or test text: their words would leak into the vocabulary.
        min_frequency: words seen fewer times become `[UNK]`.
        max_vocab_size: keep at most this many entries, special tokens included (most frequent words first).

    Returns:
        a `PreTrainedTokenizerFast`; words are ordered by decreasing frequency (ties alphabetically), so the
        result is the same for the same text.
    """
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    if max_vocab_size is not None and max_vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"max_vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {max_vocab_size}")
    texts = conversation_texts(texts_or_conversations) if isinstance(texts_or_conversations, Dataset) else texts_or_conversations
    counts = count_words(texts)
    words = sorted((w for w, c in counts.items() if c >= min_frequency and w not in SPECIAL_TOKENS),
                   key=lambda w: (-counts[w], w))
    if max_vocab_size is not None:
        words = words[: max_vocab_size - len(SPECIAL_TOKENS)]
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.normalizer = build_normalizer()
    backend.pre_tokenizer = build_pre_tokenizer()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=SOS,
        eos_token=EOS,
        cls_token=CLS,
        additional_special_tokens=[SPK, LSN],
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )


def check_tokenizer(tokenizer: PreTrainedTokenizerFast) -> None:
    """Raise if `tokenizer` does not have IAMM's special tokens at ids 0-6 (e.g. a foreign tokenizer was passed)."""
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    if ids != list(range(len(SPECIAL_TOKENS))):
        found = dict(zip(SPECIAL_TOKENS, ids))
        raise ValueError(
            f"not an IAMM word-level tokenizer: special tokens must have ids 0-6 in the order {SPECIAL_TOKENS}, "
            f"found {found}. Build one with modeling_iamm.build_tokenizer()."
        )
