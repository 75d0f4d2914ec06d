"""Text normalisation and word tokenisation: the ONE place where the project turns text into words.

The authors of IAMM (following MoEL/CEM) lowercase every sentence, expand a fixed list of contractions
by string replacement and split with `nltk.word_tokenize`. nltk's tokenizer needs a data download
(`punkt_tab`) that is not available offline, so this module reproduces its behaviour with the
`tokenizers` library instead, which has no data dependency and runs in Rust:

1. NFKC unicode normalisation, typographic apostrophes (’ ‘) become `'`, lowercase.
2. The authors' contraction list is expanded on word boundaries (`don't` -> `do not`, ...).
3. Words are split with the pattern :data:`WORD_PATTERN`: runs of letters/digits/underscore are words,
   `n't` and `'s`/`'ll`/`'re`... are split off as nltk does (`shouldn't` -> `should n't`,
   `john's` -> `john 's`), and every other punctuation character is its own token (`...` -> `. . .`,
   `3.5` -> `3 . 5`; nltk would keep these together).

The same normaliser and pre-tokenizer objects are installed in the word-level tokenizer
(:mod:`modeling_iamm.tokenization`), so `tokenizer(text)` and :func:`word_tokenize` always agree, and the
metrics (Dist-n) count the same words the model sees.
"""

from functools import lru_cache
from typing import Dict, List

from tokenizers import Regex, normalizers, pre_tokenizers

# The authors' contraction table (MoEL/CEM `word_pairs`), applied after lowercasing.
CONTRACTIONS: Dict[str, str] = {
    "it's": "it is",
    "don't": "do not",
    "doesn't": "does not",
    "didn't": "did not",
    "you'd": "you would",
    "you're": "you are",
    "you'll": "you will",
    "i'm": "i am",
    "they're": "they are",
    "that's": "that is",
    "what's": "what is",
    "couldn't": "could not",
    "i've": "i have",
    "we've": "we have",
    "can't": "cannot",
    "i'd": "i would",
    "aren't": "are not",
    "isn't": "is not",
    "wasn't": "was not",
    "weren't": "were not",
    "won't": "will not",
    "there's": "there is",
    "there're": "there are",
}

# A word, nltk-style clitics, or a single punctuation character.
WORD_PATTERN = r"\w+(?=n't)|n't|\w+|'\w+|[^\w\s]"

# ED's CSV release writes commas inside fields as this placeholder.
COMMA_PLACEHOLDER = "_comma_"


def build_normalizer() -> normalizers.Normalizer:
    """Return the `tokenizers` normaliser used by the project (unicode, apostrophes, lowercase, contractions)."""
    steps = [
        normalizers.NFKC(),
        normalizers.Replace("\u2019", "'"),
        normalizers.Replace("\u2018", "'"),
        normalizers.Lowercase(),
    ]
    steps += [normalizers.Replace(Regex(rf"\b{k}\b"), v) for k, v in CONTRACTIONS.items()]
    return normalizers.Sequence(steps)


def build_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Return the `tokenizers` pre-tokenizer that splits normalised text into words (see :data:`WORD_PATTERN`)."""
    return pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True)


@lru_cache(maxsize=1)
def _pipeline():
    return build_normalizer(), build_pre_tokenizer()


def normalize(text: str) -> str:
    """Normalise a sentence (unicode, apostrophes, lowercase, contraction expansion)."""
    return _pipeline()[0].normalize_str(text)


def word_tokenize(text: str) -> List[str]:
    """Split a raw sentence into the normalised words the model and the metrics use.

    >>> word_tokenize("I don't know, it's John's car...")
    ['i', 'do', 'not', 'know', ',', 'it', 'is', 'john', "'s", 'car', '.', '.', '.']
    """
    normalizer, pre_tokenizer = _pipeline()
    return [word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]


def clean_release_text(text: str) -> str:
    """Undo the ED CSV release's escaping: `_comma_` back to `,`, surrounding whitespace stripped."""
    return text.replace(COMMA_PLACEHOLDER, ",").strip()
