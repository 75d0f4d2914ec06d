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

import hashlib
import json
import os
from collections import Counter
from typing import Any, Iterable, List, Optional, Union


try:  # type hints only: the tokenizer helpers also run as a checkpoint's remote code, where `datasets` may be absent
    from datasets import Dataset
except ImportError:  # pragma: no cover
    Dataset = Any
from tokenizers import Tokenizer, models
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

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
    is_dataset = hasattr(texts_or_conversations, "column_names")  # a `datasets.Dataset` of conversations
    texts = conversation_texts(texts_or_conversations) if is_dataset else texts_or_conversations
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


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
CONFIG_TOKEN_IDS = {
    "pad_token_id": PAD, "unk_token_id": UNK, "bos_token_id": SOS, "eos_token_id": EOS, "cls_token_id": CLS,
    "speaker_token_id": SPK, "listener_token_id": LSN,
}


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A short hash of the vocabulary (every token and its id): two tokenizers with the same fingerprint map every
    word to the same id. Training stores it in the model's config (`config.tokenizer_fingerprint`)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


TOKENIZER_FLAG_REMEDY = ("pass --tokenizer_name_or_path with the folder the model was trained with (its training "
                         "output_dir)")


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, config: Optional[Any] = None, source: str = "the tokenizer",
                    remedy: str = TOKENIZER_FLAG_REMEDY) -> None:
    """Raise a `ValueError` if `tokenizer` is not an IAMM word-level tokenizer (special tokens at ids 0-6), or,
    given a model `config`, if it is not the one the model was trained with: another vocabulary size, other
    special-token ids, or (when the config records one) another vocabulary fingerprint. `source` names the
    tokenizer (a folder) in the message, `remedy` what to do (default: the scripts' flag)."""
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    if ids != list(range(len(SPECIAL_TOKENS))):
        found = dict(zip(SPECIAL_TOKENS, ids))
        raise ValueError(
            f"{source} is not an IAMM word-level tokenizer: special tokens must have ids 0-6 in the order "
            f"{SPECIAL_TOKENS}, found {found}. Build one with modeling_iamm.build_tokenizer()."
        )
    if config is None:
        return
    what = remedy
    if len(tokenizer) != config.vocab_size:
        raise ValueError(
            f"{source} has {len(tokenizer)} tokens but the model was trained with a vocabulary of {config.vocab_size}: "
            f"it is another run's tokenizer, and would turn every word into the wrong id; {what}"
        )
    for name, token in CONFIG_TOKEN_IDS.items():
        expected = getattr(config, name, None)
        if expected is not None and tokenizer.convert_tokens_to_ids(token) != expected:
            raise ValueError(f"{source}: {token} has id {tokenizer.convert_tokens_to_ids(token)} but the model's "
                             f"config.{name} is {expected}; {what}")
    expected = getattr(config, "tokenizer_fingerprint", None)
    if expected is not None and tokenizer_fingerprint(tokenizer) != expected:
        raise ValueError(
            f"{source} has the model's vocabulary size but other words (vocabulary fingerprint "
            f"{tokenizer_fingerprint(tokenizer)}, the model's config.tokenizer_fingerprint is {expected}): it is "
            f"another run's tokenizer; {what}"
        )


def load_tokenizer(name_or_path: str, config: Optional[Any] = None) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained` with errors that say what to do: a folder without tokenizer files, a path
    that does not exist, or (given the model's `config`) a tokenizer the model was not trained with
    (:func:`check_tokenizer`)."""
    if os.path.isdir(name_or_path):
        if not any(os.path.isfile(os.path.join(name_or_path, name)) for name in TOKENIZER_FILES):
            raise FileNotFoundError(
                f"{name_or_path} has no tokenizer ({' or '.join(TOKENIZER_FILES)}): pass --tokenizer_name_or_path "
                f"with the folder of the tokenizer the model was trained with (scripts/train.py saves it in its "
                f"output_dir next to the model)"
            )
    elif not _could_be_hub_id(name_or_path):
        raise FileNotFoundError(f"no such folder {name_or_path!r} (and it is not a Hub id): pass the folder that holds "
                                f"tokenizer.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as e:
        raise FileNotFoundError(f"no such folder {name_or_path!r} (and it is not a Hub id you can reach: {e})") from e
    check_tokenizer(tokenizer, config, source=name_or_path)
    return tokenizer


def _could_be_hub_id(name: str) -> bool:
    """A Hub id is `name` or `owner/name`, without `.`-relative or absolute path syntax."""
    if name.startswith((".", "/", "~")) or os.sep != "/" and os.sep in name:
        return False
    return name.count("/") <= 1 and bool(name.strip())
