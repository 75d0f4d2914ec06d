"""IAMM_large instructions: a dialogue and IAMM's associated words -> an LLM prompt, and the LLM's answer -> fields.

One builder (:func:`build_instruction`) makes the instruction the IAMM_large authors used (an English system
text: a role line and the rules, listing the 32 emotion labels; a user text with the fields `Dialogue context:`,
`Dialogue situation:`, `High weight words:`, `Low weight words:`), or the plain instruction without associated
words (the paper's baseline: the same text without the weight-word rule and fields). An :class:`Instruction` has
two renderings: OpenAI chat messages (:meth:`Instruction.to_messages`) and ChatGLM3's chat text
(:meth:`Instruction.to_chatglm3`, `[gMASK]sop<|system|>\\n...<|user|>\\n...<|assistant|>\\n`, a string for reading;
tokenising it is the ChatGLM3 tokenizer's job). The answer the model is taught to give is
`Emotion: <label>` newline `Response: <reply>` (:func:`format_answer`); :func:`parse_answer` reads it back.

Two formats (`InstructionConfig.format`, `--format` of `scripts/build_instructions.py`):

* `"authors"` -- the IAMM_large authors' run, reproduced from their released template and logged prompts: their
  wording (one text: the role line, the rules as `- ` items, their answer format
  ``Emotion: ```inferred emotion```\n Response:```reply utterance``` `` with a literal backslash-n), then the fields
  `Dialogue context: <c>\n Dialogue situation:<s>\n High weight words: <w,w> \n Low wieght words: <w,w>` (their
  spacing and spelling), all ED text lower-cased and tokenised as their data is (:func:`authors_text`:
  `did n't`, `fine ?`); one user turn in their glmtuner chat format
  (:meth:`Instruction.to_glmtuner`, `[Round 1]\n\n问：<instruction + input>\n\n答：`); the target
  `Emotion:<label>\n Response:<reply>`; weight words by a weight threshold, punctuation kept, lists of any length;
  source and target cut to 512 tokens each, the source on the right (`iamm.llm.lora`). This is the format that
  reproduces the paper's Table 3, and the one the paper's scoring rule (`iamm.llm.evaluation`) expects.
* `"iamm"` (the default, this project's): a system text with numbered rules and a user text; ChatGLM3's own chat
  template; `Emotion: <label>\nResponse: <reply>`; the top 5 / next 20 words without punctuation; the prompt cut
  from the left. Chosen for use beyond the reproduction: ChatGLM3-6B (and chat APIs) were instruction-tuned on
  their system/user/assistant template, not on glmtuner's ChatGLM-6B one; original-case text is what a user types;
  fixed-size word lists keep prompts short and comparable; cutting from the left keeps the fields and the answer cue
  (the authors' right cut drops the end of the word lists and `答：` from long prompts).

High and low weight words (:func:`aggregate_word_weights`, then :func:`split_associated_words`):

1. Only the explicit pairs count (`utterance-situation`, `utterance-history`, `utterance-memory`): their entries
   name words of the dialogue. The implicit pairs name knowledge relations (`xReact(situation)`), and
   `selected_memory_words` carries word-selector scores, not association weights; both are left out.
2. Every keyword (with its keyword weight) and every associated word (with its association weight) of every entry
   is a candidate. A word's weight is the HIGHEST weight it received anywhere in the dialogue (all turns, heads,
   directions and pairs). Words are compared as the IAMM tokenizer wrote them (lowercased).
3. Dropped: the null memory slot `<none>`, the tokenizer's special tokens (`[CLS]`, `[UNK]`, ...) and relation
   refs (`name(situation)`, `name(utterance N)`); tokens without a letter or digit (punctuation) are dropped in the
   `iamm` format and kept in the `authors` one (their lists hold `,` and `.`). Stop words are KEPT, as in the
   authors' instructions.
4. Words are ranked by weight (ties: alphabetical). High weight words: the first `num_high_words` (`iamm`
   default 5), or with `high_min_weight` set (`authors` default 0.5) every word weighing at least that. Low weight
   words: the following ones whose weight is at least `min_low_weight` (default 0.0), at most `max_low_words`
   (`iamm` default 20; `authors`: no limit). Lists are written in rank order, separated by `", "` (`iamm`) or
   `","` (`authors`). The authors' word files (their `ed_*.json`: `ed_dev.json` in their public repository,
   `ed_tst.json` in its history) could not be read for this package, so their exact rule is inferred: what their
   two logged prompts show -- 2 and 8 high weight words, 22 low weight words in the uncut one, punctuation among
   them -- is what a threshold gives and a fixed count does not.
"""

import glob
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from datasets import Dataset, DatasetDict, Features, List as ListFeature, Value, load_dataset

from modeling_iamm import EMOTION_LABELS
from modeling_iamm.text import CONTRACTIONS
from modeling_iamm.tokenization import SPECIAL_TOKENS

from .treebank import treebank_word_tokenize

WordWeights = List[Tuple[str, float]]

EXPLICIT_PAIRS = ("utterance-situation", "utterance-history", "utterance-memory")
"""The pair types of `extract_associations` whose words are dialogue words (the only ones used)."""

NULL_WORD = "<none>"
_RELATION_REF = re.compile(r"^\w+\((situation|utterance \d+)\)$")

UTTERANCE_SEPARATOR = "</s>"

ROLE_LINE = ("You are an empathetic listener. Read the dialogue between a speaker and a listener below and "
             "continue it as the listener.")
RULES = (
    f'The dialogue context is a list of utterances, oldest first, separated by "{UTTERANCE_SEPARATOR}"; '
    "speaker and listener take turns, and the last utterance is the speaker's.",
    "Infer the emotion of the speaker from the dialogue history and the dialogue situation.",
    "The emotion must be exactly one of these 32 labels: " + ", ".join(EMOTION_LABELS) + ".",
    "Then write the listener's empathetic response to the last utterance.",
)
ASSOCIATION_RULE = (
    '"High weight words" and "low weight words" are words from the dialogue history or the dialogue situation '
    "that an associative memory model found to be associated with each other; high weight words are the most "
    "strongly associated. Associate these words with each other to understand the speaker's feelings and "
    "experience, and use them to infer the emotion and write the response."
)
FORMAT_RULE = "Answer in exactly this format:\nEmotion: <label>\nResponse: <reply>"

# The IAMM_large authors' instruction, word for word (their template and logged prompts; `\\n` is a literal
# backslash-n in their text). The association rule is left out for the plain variant.
AUTHORS_ROLE_LINE = ("You are an empathetic conversational agent. You need to simulate a listener based on the dialogue "
                     "history to converse with the speaker.")
AUTHORS_RULES = (
    'The "Dialogue context" is the dialogue history between the speaker and listener, with their utterances '
    f"separated by {UTTERANCE_SEPARATOR}.",
    'The "Dialogue situation" is the scenario where the dialogue is taking place. When provided, you need to infer '
    "the emotional context from the situation to generate appropriate responses.",
    "To better conduct empathetic dialogue, you need to infer and understand the emotions in the conversation, and "
    "generate fitting responses based on dialogue history, situation (if available), and inferred emotions.",
    "The inferred emotion can only be selected from the following. Do not generate any keywords besides these:```"
    + ",".join(EMOTION_LABELS) + "```",
    "The response format to follow: Emotion: ```inferred emotion```\\n Response:```reply utterance```",
)
AUTHORS_ASSOCIATION_RULE = (
    "High weight words and low weight words refer to terms from the dialogue history or dialogue situation that are "
    "relevant. In order to more deeply understand the dialogue and situation, you need to associate these words to "
    "comprehend the expressed emotions and content more precisely and thoroughly, predict emotions more accurately, "
    "and formulate higher quality responses."
)
AUTHORS_ANSWER_SEPARATOR = "\n "


INSTRUCTION_FORMATS = ("iamm", "authors")


@dataclass
class InstructionConfig:
    """The instruction format and how associated words become the weight-word fields (see module docstring).

    Args:
        format: `"iamm"` (this project's) or `"authors"` (the IAMM_large authors' run).
        num_high_words: the top-ranked words written as high weight words (`iamm` default 5).
        high_min_weight: instead, every word weighing at least this is a high weight word (`authors` default 0.5).
        max_low_words: at most this many of the next words are written as low weight words (`iamm` default 20;
            `authors`: no limit).
        min_low_weight: a low weight word needs at least this weight (association weights are sigmoids, in 0..1).
        keep_punctuation: keep punctuation tokens among the words (`authors` default True, `iamm` False).
    """

    format: str = field(default="iamm", metadata={"help": "iamm (this project's format) or authors (the paper's run)."})
    num_high_words: Optional[int] = field(default=None, metadata={
        "help": "How many top-weighted associated words are 'high weight words' (iamm default 5)."})
    high_min_weight: Optional[float] = field(default=None, metadata={
        "help": "Instead: every word weighing at least this is a high weight word (authors default 0.5)."})
    max_low_words: Optional[int] = field(default=None, metadata={
        "help": "At most this many of the next words are 'low weight words' (iamm default 20, authors: no limit)."})
    min_low_weight: float = field(default=0.0, metadata={"help": "Low weight words need at least this weight (0..1)."})
    keep_punctuation: Optional[bool] = field(default=None, metadata={
        "help": "Keep punctuation among the words (authors default true, iamm false)."})

    def __post_init__(self):
        if self.format not in INSTRUCTION_FORMATS:
            raise ValueError(f"format must be one of {INSTRUCTION_FORMATS}, got {self.format!r}")
        authors = self.format == "authors"
        if self.num_high_words is None and self.high_min_weight is None:
            if authors:
                self.high_min_weight = 0.5
            else:
                self.num_high_words = 5
        if self.max_low_words is None and not authors:
            self.max_low_words = 20
        if self.keep_punctuation is None:
            self.keep_punctuation = authors
        if self.num_high_words is not None and self.num_high_words < 0:
            raise ValueError(f"num_high_words must be >= 0, got {self.num_high_words}")
        if self.max_low_words is not None and self.max_low_words < 0:
            raise ValueError(f"max_low_words must be >= 0, got {self.max_low_words}")
        for name in ("min_low_weight", "high_min_weight"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] (weights are sigmoids), got {value}")


@dataclass
class AssociatedWords:
    """The high and low weight words of one dialogue, each as `(word, weight)` in rank order."""

    high: WordWeights
    low: WordWeights


def is_dialogue_word(token: str, special_tokens: Collection[str] = frozenset(SPECIAL_TOKENS),
                     keep_punctuation: bool = False) -> bool:
    """Whether an association ref's text is a dialogue word worth showing (rule 3 of the module docstring)."""
    if not token.strip() or token == NULL_WORD or token in special_tokens or _RELATION_REF.match(token):
        return False
    return keep_punctuation or is_word(token)


def is_word(token: str) -> bool:
    """Whether a token has a letter or digit (is not punctuation)."""
    return any(ch.isalnum() for ch in token)


def aggregate_word_weights(associations: Mapping[str, Any], special_tokens: Iterable[str] = SPECIAL_TOKENS) -> WordWeights:
    """Each dialogue word's best weight over all explicit association entries, ranked (rules 1-4, without the split;
    punctuation is kept here and dropped by :func:`split_associated_words` when the format wants).

    `associations` is one sample's dict from `IAMMForConditionalGeneration.extract_associations` (or
    `modeling_iamm.inference.predict(..., with_associations=True)`).
    """
    special = set(special_tokens)
    best: Dict[str, float] = {}

    def consider(word: str, weight: float) -> None:
        if is_dialogue_word(word, special, keep_punctuation=True) and weight > best.get(word, float("-inf")):
            best[word] = float(weight)

    for pair in EXPLICIT_PAIRS:
        for entry in associations.get(pair, ()):
            consider(entry["keyword"], entry["keyword_weight"])
            for word, weight in entry["associated"]:
                consider(word, weight)
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))


def split_associated_words(word_weights: Sequence[Tuple[str, float]], config: Optional[InstructionConfig] = None
                           ) -> AssociatedWords:
    """Split ranked `(word, weight)` pairs (from :func:`aggregate_word_weights`) into high and low weight words."""
    config = config or InstructionConfig()
    ranked = sorted(((str(w), float(x)) for w, x in word_weights if config.keep_punctuation or is_word(str(w))),
                    key=lambda item: (-item[1], item[0]))
    if config.high_min_weight is not None:
        n_high = sum(1 for _, x in ranked if x >= config.high_min_weight)
    else:
        n_high = config.num_high_words
    low = [(w, x) for w, x in ranked[n_high:] if x >= config.min_low_weight]
    return AssociatedWords(high=ranked[:n_high], low=low[: config.max_low_words])


# ---- the instruction --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    """An instruction as a system text (role line and rules) and a user text (the dialogue's fields).

    In the `authors` format the two are one user turn: `system` is their instruction text (ending in a blank line)
    and `user` their input fields, sent concatenated.
    """

    system: str
    user: str
    format: str = "iamm"

    def to_messages(self) -> List[Dict[str, str]]:
        """Chat messages: `[{"role": "system", ...}, {"role": "user", ...}]`; in the authors' format one user
        message with the instruction and the input."""
        if self.format == "authors":
            return [{"role": "user", "content": self.system + self.user}]
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    def to_chatglm3(self, answer: Optional[str] = None) -> str:
        """The chat prompt as text, ending where the answer starts (or with `answer` appended): ChatGLM3's format,
        `[gMASK]sop<|system|>\\n...<|user|>\\n...<|assistant|>\\n`, or in the authors' format their glmtuner one
        (:meth:`to_glmtuner`)."""
        if self.format == "authors":
            return self.to_glmtuner(answer)
        text = f"[gMASK]sop<|system|>\n{self.system}<|user|>\n{self.user}<|assistant|>\n"
        return text + answer if answer is not None else text

    def to_glmtuner(self, answer: Optional[str] = None) -> str:
        """The authors' glmtuner chat text: `[gMASK]sop` (the tokenizer's two special tokens) then the source
        :func:`glmtuner_source` (or with `answer` appended)."""
        text = "[gMASK]sop" + glmtuner_source(self.system + self.user)
        return text + answer if answer is not None else text


def glmtuner_source(query: str) -> str:
    """The source text of one user turn in the authors' glmtuner template: `[Round 1]\\n\\n问：<query>\\n\\n答：`."""
    return f"[Round 1]\n\n问：{query}\n\n答："


def authors_text(text: str) -> str:
    """ED text as the authors' data holds it (MoEL/CEM's preprocessing): lower-cased, the contractions of
    :data:`modeling_iamm.text.CONTRACTIONS` replaced as plain substrings, split into NLTK words, joined by spaces
    (`"I didn't know, shouldn't I?"` -> `"i did not know , should n't i ?"`)."""
    text = _one_line(text).lower()
    for contraction, expansion in CONTRACTIONS.items():
        text = text.replace(contraction, expansion)
    return " ".join(treebank_word_tokenize(text))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def build_instruction(context: Sequence[str], situation: str, associated: Optional[AssociatedWords] = None,
                      format: str = "iamm") -> Instruction:
    """The IAMM_large instruction for a dialogue; without `associated`, the plain instruction (no weight words).

    Args:
        context: the utterances, oldest first (the last one the speaker's); newlines inside are flattened.
        situation: the speaker's situation text.
        associated: high and low weight words (:func:`split_associated_words`); None for the plain variant.
        format: `"iamm"` or `"authors"` (module docstring).
    """
    if isinstance(context, str) or not context:
        raise ValueError("context must be a non-empty list of utterances")
    if format == "authors":
        return _authors_instruction(context, situation, associated)
    if format != "iamm":
        raise ValueError(f"format must be one of {INSTRUCTION_FORMATS}, got {format!r}")
    rules = list(RULES[:3]) + ([ASSOCIATION_RULE] if associated is not None else []) + [RULES[3], FORMAT_RULE]
    system = ROLE_LINE + "\nRules:\n" + "\n".join(f"{i}. {rule}" for i, rule in enumerate(rules, start=1))
    fields = [
        "Dialogue context: " + UTTERANCE_SEPARATOR.join(_one_line(u) for u in context),
        "Dialogue situation: " + _one_line(situation),
    ]
    if associated is not None:
        fields += [
            "High weight words: " + (", ".join(w for w, _ in associated.high) or "(none)"),
            "Low weight words: " + (", ".join(w for w, _ in associated.low) or "(none)"),
        ]
    return Instruction(system=system, user="\n".join(fields))


def _authors_instruction(context: Sequence[str], situation: str, associated: Optional[AssociatedWords]) -> Instruction:
    # (utterances joined by " </s> ": both logged prompts have a one-utterance context, so the spacing around the
    # separator is not attested; everything else is as logged)
    rules = list(AUTHORS_RULES) + ([AUTHORS_ASSOCIATION_RULE] if associated is not None else [])
    system = AUTHORS_ROLE_LINE + "\n" + "\n".join(f"- {rule}" for rule in rules) + "\n\n"
    user = ("Dialogue context: " + f" {UTTERANCE_SEPARATOR} ".join(authors_text(u) for u in context)
            + "\n Dialogue situation:" + authors_text(situation))
    if associated is not None:
        user += ("\n High weight words: " + ",".join(w for w, _ in associated.high)
                 + " \n Low wieght words: " + ",".join(w for w, _ in associated.low))
    return Instruction(system=system, user=user, format="authors")


def format_answer(emotion: str, response: str, format: str = "iamm") -> str:
    """The answer the instruction asks for (the fine-tuning target): `Emotion: <label>\\nResponse: <reply>`, or in
    the authors' format `Emotion:<label>\\n Response:<reply>` with the reply as :func:`authors_text`."""
    if format == "authors":
        return f"Emotion:{emotion}{AUTHORS_ANSWER_SEPARATOR}Response:{authors_text(response)}"
    return f"Emotion: {emotion}\nResponse: {_one_line(response)}"


# ---- the instruction data set -----------------------------------------------------------------------------------
_MESSAGES = ListFeature({"role": Value("string"), "content": Value("string")})

INSTRUCTION_FEATURES = Features({
    "id": Value("string"),  # "<conv_id>#<turn>", one row per listener turn
    "conv_id": Value("string"),
    "turn": Value("int32"),  # index of the gold response in the conversation
    "situation": Value("string"),
    "context": ListFeature(Value("string")),
    "emotion": Value("string"),  # gold label (one of the 32)
    "target": Value("string"),  # gold listener response
    "iamm_emotion": Value("string"),  # the emotion IAMM predicted
    "high_words": ListFeature(Value("string")),
    "high_weights": ListFeature(Value("float32")),
    "low_words": ListFeature(Value("string")),
    "low_weights": ListFeature(Value("float32")),
    "messages": _MESSAGES,  # system + user, with associated words
    "plain_messages": _MESSAGES,  # system + user, without (the baseline)
    "chatglm3_prompt": Value("string"),  # chat text of `messages` up to the answer (ChatGLM3's; glmtuner's if authors)
    "plain_chatglm3_prompt": Value("string"),
    "answer": Value("string"),  # format_answer(emotion, target): the fine-tuning target
    "format": Value("string"),  # "iamm" or "authors" (InstructionConfig.format)
})
"""The columns of an instruction data set (every split), in order."""

OPTIONAL_COLUMNS = {"format": "iamm"}
"""Columns that data sets built before they existed lack, with the value those rows have."""


def sample_id(sample: Mapping[str, Any]) -> str:
    """The key of a listener-turn sample: `"<conv_id>#<turn>"` (as in IAMM's evaluation records)."""
    return f"{sample['conv_id']}#{sample['turn']}"


def instruction_row(sample: Mapping[str, Any], word_weights: Sequence[Tuple[str, float]], iamm_emotion: str = "",
                    config: Optional[InstructionConfig] = None) -> Dict[str, Any]:
    """One row of :data:`INSTRUCTION_FEATURES` from an ED sample (`modeling_iamm.build_samples`) and its ranked
    associated words (:func:`aggregate_word_weights`)."""
    config = config or InstructionConfig()
    associated = split_associated_words(word_weights, config)
    with_words = build_instruction(sample["context"], sample["situation"], associated, config.format)
    plain = build_instruction(sample["context"], sample["situation"], None, config.format)
    return {
        "id": sample_id(sample),
        "conv_id": sample["conv_id"],
        "turn": int(sample["turn"]),
        "situation": sample["situation"],
        "context": list(sample["context"]),
        "emotion": sample["emotion"],
        "target": sample["target"],
        "iamm_emotion": iamm_emotion,
        "high_words": [w for w, _ in associated.high],
        "high_weights": [x for _, x in associated.high],
        "low_words": [w for w, _ in associated.low],
        "low_weights": [x for _, x in associated.low],
        "messages": with_words.to_messages(),
        "plain_messages": plain.to_messages(),
        "chatglm3_prompt": with_words.to_chatglm3(),
        "plain_chatglm3_prompt": plain.to_chatglm3(),
        "answer": format_answer(sample["emotion"], sample["target"], config.format),
        "format": config.format,
    }


# ---- reading answers back ---------------------------------------------------------------------------------------
@dataclass
class ParsedAnswer:
    """An LLM answer read back: the emotion label (one of the 32, or None), the response text, and whether the
    emotion field was exactly a label (`valid_label`)."""

    emotion: Optional[str]
    response: str
    valid_label: bool


_LABELS = set(EMOTION_LABELS)
_EMOTION_FIELD = re.compile(r"emotion\s*:\s*(.*?)\s*(?=response\s*:|\n|$)", re.IGNORECASE | re.DOTALL)
_RESPONSE_FIELD = re.compile(r"response\s*:\s*(.*)", re.IGNORECASE | re.DOTALL)
_TRIM = " \t\r\n\"'`*_.,;!()[]{}<>"


def _normalise_answer(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "")  # full-width colon "：" -> ":"
    return re.sub(r"\*\*|__", "", text)  # markdown bold


def match_label(text: Optional[str]) -> Tuple[Optional[str], bool]:
    """The label an emotion text names, and whether the text WAS that label.

    Exact: the text, lowercased and trimmed of quotes, brackets, asterisks and punctuation, is one of the 32 labels
    -> `(label, True)`. Lenient containment (the text is not a label): if exactly one label is a whole word of the
    text (`"Feeling sad."` -> sad), or else exactly one label starts a word of the text (`"sadness"` -> sad), that
    label with `False`. Anything else (no label, or two different ones: `"sad and lonely"`) -> `(None, False)`.
    """
    if text is None:
        return None, False
    cleaned = text.strip().lower().strip(_TRIM)
    if cleaned in _LABELS:
        return cleaned, True
    words = re.findall(r"[a-z]+", cleaned)
    whole = {w for w in words if w in _LABELS}
    if len(whole) == 1:
        return whole.pop(), False
    if whole:
        return None, False
    prefixed = {label for label in EMOTION_LABELS for w in words if w.startswith(label)}
    return (prefixed.pop(), False) if len(prefixed) == 1 else (None, False)


def strict_label(text: str) -> Optional[str]:
    """The label of an answer's `Emotion:` field when that field IS one of the 32 labels, else None.

    The normalisation is fixed: Unicode NFKC, markdown bold removed, the field name in any case, and the field's
    text lower-cased and trimmed of surrounding white space, quotes, backticks, brackets, asterisks and punctuation
    (`"**Emotion**: Sad."` -> `sad`, `"Emotion: ```sad```"` -> `sad`). Anything else is no label: no `Emotion:`
    field, `"not sad, just tired"`, `"Sadness"`, `"sad, lonely"`.
    """
    match = _EMOTION_FIELD.search(_normalise_answer(text))
    label, exact = match_label(match.group(1) if match else None)
    return label if exact else None


def parse_answer(text: str) -> ParsedAnswer:
    """Read an `Emotion: <label>` / `Response: <reply>` answer, robustly.

    Field names are matched in any case, anywhere in the text (extra text before or after is ignored), with ASCII
    or full-width colons and with markdown bold removed. The emotion is the text after the first `Emotion:` up to
    the end of that line or a `Response:` on the same line; without an `Emotion:` field, a short first line before
    `Response:` (`"Sad\\nResponse: ..."`) is taken as the emotion text. The label comes from :func:`match_label`
    (exact, else lenient containment; outside the 32 -> None, `valid_label=False`).
    The response is everything after the first `Response:` (quotes and surrounding spaces removed); without that
    field, the text with the `Emotion:` line removed.
    """
    text = _normalise_answer(text)
    emotion_match = _EMOTION_FIELD.search(text)
    response_match = _RESPONSE_FIELD.search(text, emotion_match.end() if emotion_match else 0)
    emotion_text: Optional[str] = emotion_match.group(1) if emotion_match else None
    if emotion_text is None and response_match:
        before = text[: response_match.start()].strip().splitlines()
        if len(before) == 1 and len(before[0].split()) <= 3:
            emotion_text = before[0]
    if response_match:
        response = response_match.group(1)
    elif emotion_match:
        line_end = text.find("\n", emotion_match.end())
        response = text[: emotion_match.start()] + ("" if line_end < 0 else text[line_end:])
    else:
        response = text
    emotion, valid = match_label(emotion_text)
    return ParsedAnswer(emotion=emotion, response=response.strip().strip("\"'").strip(), valid_label=valid)


# ---- saving and loading ------------------------------------------------------------------------------------------
def parquet_path(output_dir: str, split: str) -> str:
    """Where a split of an instruction data set is saved (the Hub's `data/<split>-00000-of-00001.parquet` layout)."""
    return os.path.join(output_dir, "data", f"{split}-00000-of-00001.parquet")


def save_instruction_split(dataset: Dataset, output_dir: str, split: str) -> str:
    """Write one split as parquet (to a temporary name first, so a killed write never leaves a partial file)."""
    path = parquet_path(output_dir, split)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    dataset.to_parquet(path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def load_instruction_dataset(path: str, splits: Optional[Sequence[str]] = None,
                             columns: Optional[Sequence[str]] = None) -> DatasetDict:
    """Load an instruction data set saved by `scripts/build_instructions.py` (a folder) as a `DatasetDict`.

    Equivalent to `datasets.load_dataset("parquet", data_files={split: <folder>/data/<split>*.parquet})`: the
    split files may be named `<split>.parquet` or sharded as the Hub names them (`<split>-00000-of-00001.parquet`);
    the columns are checked against `columns` (default: every column of :data:`INSTRUCTION_FEATURES`).
    """
    available: Dict[str, List[str]] = {}
    for file in sorted(glob.glob(os.path.join(path, "data", "*.parquet"))):
        available.setdefault(os.path.basename(file)[: -len(".parquet")].split("-")[0], []).append(file)
    if not available:
        raise FileNotFoundError(f"{path}: no instruction data (data/<split>.parquet or data/<split>-*.parquet); build "
                                "it with scripts/build_instructions.py")
    wanted = list(splits) if splits is not None else sorted(available)
    missing = [s for s in wanted if s not in available]
    if missing:
        raise ValueError(f"{path}: split(s) {missing} not built; available: {sorted(available)}")
    data = load_dataset("parquet", data_files={s: available[s] for s in wanted})
    for split, ds in list(data.items()):
        for column, value in OPTIONAL_COLUMNS.items():
            if column not in ds.column_names:
                data[split] = ds = ds.add_column(column, [value] * len(ds))
        absent = [c for c in (columns or INSTRUCTION_FEATURES) if c not in ds.column_names]
        if absent:
            raise ValueError(f"{available[split]}: not an instruction data set, columns {absent} are missing")
    return data
