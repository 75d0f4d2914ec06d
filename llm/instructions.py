"""IAMM_large instructions: a dialogue and IAMM's associated words -> an LLM prompt, and the LLM's answer -> fields.

One builder (:func:`build_instruction`) makes the instruction the IAMM_large authors used (an English system
text: a role line and the rules, listing the 32 emotion labels; a user text with the fields `Dialogue context:`,
`Dialogue situation:`, `High weight words:`, `Low weight words:`), or the plain instruction without associated
words (the paper's baseline: the same text without the weight-word rule and fields). An :class:`Instruction` has
two renderings: OpenAI chat messages (:meth:`Instruction.to_messages`) and ChatGLM3's chat text
(:meth:`Instruction.to_chatglm3`, `[gMASK]sop<|system|>\\n...<|user|>\\n...<|assistant|>\\n`, a string for reading;
tokenising it is the ChatGLM3 tokenizer's job). The answer the model is taught to give is
`Emotion: <label>` newline `Response: <reply>` (:func:`format_answer`); :func:`parse_answer` reads it back.

High and low weight words (:func:`aggregate_word_weights`, then :func:`split_associated_words`):

1. Only the explicit pairs count (`utterance-situation`, `utterance-history`, `utterance-memory`): their entries
   name words of the dialogue. The implicit pairs name knowledge relations (`xReact(situation)`), and
   `selected_memory_words` carries word-selector scores, not association weights; both are left out.
2. Every keyword (with its keyword weight) and every associated word (with its association weight) of every entry
   is a candidate. A word's weight is the HIGHEST weight it received anywhere in the dialogue (all turns, heads,
   directions and pairs). Words are compared as the IAMM tokenizer wrote them (lowercased).
3. Dropped: the null memory slot `<none>`, the tokenizer's special tokens (`[CLS]`, `[UNK]`, ...), relation refs
   (`name(situation)`, `name(utterance N)`) and tokens without a letter or digit (punctuation). Stop words are
   KEPT, as in the authors' instructions.
4. Words are ranked by weight (ties: alphabetical). The first `num_high_words` (default 5) are the high weight
   words; the following ones whose weight is at least `min_low_weight` (default 0.0), at most `max_low_words`
   (default 20), are the low weight words. Each list is written in rank order, separated by `", "`.
"""

import glob
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from datasets import Dataset, DatasetDict, Features, List as ListFeature, Value, load_dataset

from modeling_iamm import EMOTION_LABELS
from modeling_iamm.tokenization import SPECIAL_TOKENS

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


@dataclass
class InstructionConfig:
    """How associated words become the `High weight words:` and `Low weight words:` fields (see module docstring).

    Args:
        num_high_words: the top-ranked words written as high weight words.
        max_low_words: at most this many of the next words are written as low weight words.
        min_low_weight: a low weight word needs at least this weight (association weights are sigmoids, in 0..1).
    """

    num_high_words: int = field(default=5, metadata={"help": "How many top-weighted associated words are 'high weight words'."})
    max_low_words: int = field(default=20, metadata={"help": "At most this many of the next words are 'low weight words'."})
    min_low_weight: float = field(default=0.0, metadata={"help": "Low weight words need at least this weight (0..1)."})

    def __post_init__(self):
        if self.num_high_words < 0:
            raise ValueError(f"num_high_words must be >= 0, got {self.num_high_words}")
        if self.max_low_words < 0:
            raise ValueError(f"max_low_words must be >= 0, got {self.max_low_words}")
        if not 0.0 <= self.min_low_weight <= 1.0:
            raise ValueError(f"min_low_weight must be in [0, 1] (weights are sigmoids), got {self.min_low_weight}")


@dataclass
class AssociatedWords:
    """The high and low weight words of one dialogue, each as `(word, weight)` in rank order."""

    high: WordWeights
    low: WordWeights


def is_dialogue_word(token: str, special_tokens: Collection[str] = frozenset(SPECIAL_TOKENS)) -> bool:
    """Whether an association ref's text is a dialogue word worth showing (rule 3 of the module docstring)."""
    if token == NULL_WORD or token in special_tokens or _RELATION_REF.match(token):
        return False
    return any(ch.isalnum() for ch in token)


def aggregate_word_weights(associations: Mapping[str, Any], special_tokens: Iterable[str] = SPECIAL_TOKENS) -> WordWeights:
    """Each dialogue word's best weight over all explicit association entries, ranked (rules 1-4, without the split).

    `associations` is one sample's dict from `IAMMForConditionalGeneration.extract_associations` (or
    `modeling_iamm.inference.predict(..., with_associations=True)`).
    """
    special = set(special_tokens)
    best: Dict[str, float] = {}

    def consider(word: str, weight: float) -> None:
        if is_dialogue_word(word, special) and weight > best.get(word, float("-inf")):
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
    ranked = sorted(((str(w), float(x)) for w, x in word_weights), key=lambda item: (-item[1], item[0]))
    high = ranked[: config.num_high_words]
    low = [(w, x) for w, x in ranked[config.num_high_words:] if x >= config.min_low_weight][: config.max_low_words]
    return AssociatedWords(high=high, low=low)


# ---- the instruction --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    """An instruction as a system text (role line and rules) and a user text (the dialogue's fields)."""

    system: str
    user: str

    def to_messages(self) -> List[Dict[str, str]]:
        """OpenAI-style chat messages: `[{"role": "system", ...}, {"role": "user", ...}]`."""
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    def to_chatglm3(self, answer: Optional[str] = None) -> str:
        """ChatGLM3's chat format as text, ending where the assistant's answer starts (or with `answer` appended)."""
        text = f"[gMASK]sop<|system|>\n{self.system}<|user|>\n{self.user}<|assistant|>\n"
        return text + answer if answer is not None else text


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def build_instruction(context: Sequence[str], situation: str, associated: Optional[AssociatedWords] = None
                      ) -> Instruction:
    """The IAMM_large instruction for a dialogue; without `associated`, the plain instruction (no weight words).

    Args:
        context: the utterances, oldest first (the last one the speaker's); newlines inside are flattened.
        situation: the speaker's situation text.
        associated: high and low weight words (:func:`split_associated_words`); None for the plain variant.
    """
    if isinstance(context, str) or not context:
        raise ValueError("context must be a non-empty list of utterances")
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


def format_answer(emotion: str, response: str) -> str:
    """The answer the instruction asks for (the fine-tuning target): `Emotion: <label>\\nResponse: <reply>`."""
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
    "chatglm3_prompt": Value("string"),  # ChatGLM3 chat text of `messages`, up to "<|assistant|>\n"
    "plain_chatglm3_prompt": Value("string"),
    "answer": Value("string"),  # format_answer(emotion, target): the fine-tuning target
})
"""The columns of an instruction data set (every split), in order."""


def sample_id(sample: Mapping[str, Any]) -> str:
    """The key of a listener-turn sample: `"<conv_id>#<turn>"` (as in IAMM's evaluation records)."""
    return f"{sample['conv_id']}#{sample['turn']}"


def instruction_row(sample: Mapping[str, Any], word_weights: Sequence[Tuple[str, float]], iamm_emotion: str = "",
                    config: Optional[InstructionConfig] = None) -> Dict[str, Any]:
    """One row of :data:`INSTRUCTION_FEATURES` from an ED sample (`modeling_iamm.build_samples`) and its ranked
    associated words (:func:`aggregate_word_weights`)."""
    associated = split_associated_words(word_weights, config)
    with_words = build_instruction(sample["context"], sample["situation"], associated)
    plain = build_instruction(sample["context"], sample["situation"], None)
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
        "answer": format_answer(sample["emotion"], sample["target"]),
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
    for split, ds in data.items():
        absent = [c for c in (columns or INSTRUCTION_FEATURES) if c not in ds.column_names]
        if absent:
            raise ValueError(f"{available[split]}: not an instruction data set, columns {absent} are missing")
    return data
