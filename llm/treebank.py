"""Penn-Treebank word splitting as NLTK's `word_tokenize` does it: the tokenisation of the IAMM_large authors' Dist.

The authors computed Dist-1/2 (Table 3) over `nltk.tokenize.word_tokenize(response)`: sentence splitting, then NLTK's
improved Treebank tokenizer on each sentence. This module follows the same rules without depending on NLTK (whose
sentence splitter needs a model downloaded at run time):

* sentences end after `.`, `?` or `!` (with any closing quotes or brackets) followed by white space; a period right
  after a word is therefore split off mid-text too (`"ok. so"` -> `ok . so`), as the sentence splitter makes it a
  sentence end, except after an ellipsis, after a single letter (`"i. it was"`), and after a number followed by a
  lower-case word or punctuation (`"1. i have"`), as NLTK's Punkt splitter decides without a trained model. Unlike
  its English model, no abbreviation list is consulted (`mr. smith` is split);
* per sentence, the Treebank rules: opening double quotes become "``" and closing ones "''"; `, : ; @ # $ % & ? ! *`,
  brackets, `--`, dashes and `...` become tokens of their own (a comma or colon followed by a digit stays: `3,36`);
  the sentence-final period is split off; clitics are split (`can't` -> `ca n't`, `it's` -> `it 's`,
  `you'll` -> `you 'll`, `cannot` -> `can not`, `gonna` -> `gon na`); case is kept.
"""

import re
from typing import List, Pattern, Sequence, Tuple

Rule = Tuple[Pattern, str]

_SENTENCE_END = re.compile(r"(?<=[.?!])([\]\)}>\"'»”’]*)\s+(?=(\S?))")
_INITIAL = re.compile(r"(?:^|\s)[^\W\d]\.$")
_NUMBER = re.compile(r"(?:^|\s)-?[\.,]?\d[\d,\.-]*\.$")
_ELLIPSIS = re.compile(r"\.\.$")

_STARTING_QUOTES: Sequence[Rule] = (
    (re.compile(r"([«“‘„]|[`]+)"), r" \1 "),
    (re.compile(r'^"'), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1 "),
)
_PUNCTUATION: Sequence[Rule] = (
    (re.compile(r"([^\.])(\.)([\]\)}>\"'»”’ ]*)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[\u2012-\u2015]"), r" \g<0> "),
    (re.compile(r"([^\.])(\.)([\]\)}>\"']*)\s*$"), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]"), r" \g<0> "),
    (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> "),
    (re.compile(r"--"), r" -- "),
)
_ENDING_QUOTES: Sequence[Rule] = (
    (re.compile(r"([»”’])"), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
)
_CONTRACTIONS: Sequence[Pattern] = tuple(re.compile(p) for p in (
    r"(?i)\b(can)(not)\b", r"(?i)\b(d)('ye)\b", r"(?i)\b(gim)(me)\b", r"(?i)\b(gon)(na)\b", r"(?i)\b(got)(ta)\b",
    r"(?i)\b(lem)(me)\b", r"(?i)\b(more)('n)\b", r"(?i)\b(wan)(na)(?=\s)", r"(?i) ('t)(is)\b", r"(?i) ('t)(was)\b",
))


def _ends_sentence(before: str, next_char: str) -> bool:
    """Whether the text `before` a candidate break (ending in `.`/`?`/`!`) ends a sentence, given the next character
    (the sentence splitter's rules without a trained model)."""
    if not before.endswith(".") or not next_char:
        return True
    if _ELLIPSIS.search(before):  # "wait... what"
        return False
    continues = next_char.islower() or next_char in ";:,.!?"
    if _INITIAL.search(before):  # "i. it was": a single letter, unless a digit follows
        return not (continues or next_char.isupper())
    if _NUMBER.search(before):  # "4 and 1. i have"
        return not continues
    return True


def split_sentences(text: str) -> List[str]:
    """Split at `.`/`?`/`!` (plus closing quotes or brackets) followed by white space, except after an ellipsis and
    after a single letter or a number followed by a lower-case word or punctuation; empty pieces are dropped."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if not _ends_sentence(text[start: match.start()], match.group(2)):
            continue
        pieces.append(text[start: match.start(1) + len(match.group(1))])
        start = match.end()
    pieces.append(text[start:])
    return [p for p in pieces if p.strip()]


def _treebank_sentence(text: str) -> List[str]:
    for pattern, replacement in (*_STARTING_QUOTES, *_PUNCTUATION):
        text = pattern.sub(replacement, text)
    text = f" {text} "
    for pattern, replacement in _ENDING_QUOTES:
        text = pattern.sub(replacement, text)
    for pattern in _CONTRACTIONS:
        text = pattern.sub(r" \1 \2 ", text)
    return text.split()


def treebank_word_tokenize(text: str) -> List[str]:
    """The words `nltk.tokenize.word_tokenize(text)` gives (see the module docstring for the one difference).

    >>> treebank_word_tokenize("oh ok. so you can't go ?")
    ['oh', 'ok', '.', 'so', 'you', 'ca', "n't", 'go', '?']
    """
    return [word for sentence in split_sentences(text) for word in _treebank_sentence(sentence)]
