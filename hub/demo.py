"""A Gradio demo of IAMM: type a situation and a dialogue (or pick an EmpatheticDialogues example) and see the
predicted emotion, each emotion head's probabilities, the listener's response and the associated words.

    from iamm.hub.demo import build_demo
    build_demo("runs/iamm").launch()          # a saved folder or a Hub id (trust_remote_code)

`scripts/demo.py` is the command line over :func:`build_demo`; :mod:`iamm.hub.space` writes a Hugging Face Space
that runs the same app. The page's logic lives in :func:`predict_for_demo` (plain Python, tested without a
browser); :func:`build_demo` only lays out the components and wires them to it.

This module imports only `modeling_iamm` (absolute imports), so a Space can ship it as a single file.
"""

import functools
import logging
import os
import random
import unicodedata
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from modeling_iamm import EMOTION_LABELS, SAMPLE_DATA_DIR
from modeling_iamm.collator import IAMMDataCollator
from modeling_iamm.inference import dialogue_sample, predict_batch
from modeling_iamm.modeling_iamm import IMPLICIT_REF, REF_STRIDE
from modeling_iamm.text import word_tokenize

logger = logging.getLogger(__name__)

HEADS = (
    ("context", "context_emotion_logits", "Context head (H_c)"),
    ("situation", "situation_emotion_logits", "Situation head (H_s)"),
    ("memory", "memory_emotion_logits", "Memory head (H_m)"),
    ("knowledge", "knowledge_emotion_logits", "Knowledge head (H~_cs)"),
)
"""The four aggregation heads of the paper (Eq. 20-24): short name, `IAMMEncoderOutput` field, page label."""

MISSING_HEAD_REASONS = {
    "situation": "the model was saved with use_situation=False (it does not read the situation)",
    "memory": "the model has no association memory (explicit and implicit association are both off)",
    "knowledge": "the model was trained without commonsense knowledge (the paper's 'w/o implicit association' "
                 "setting), so it has no knowledge head",
}

NO_SITUATION_REASON = "no situation was given, so the model left its situation head out"

SEED_RANGE = (0, 2**64 - 1)
"""The seeds torch's generator takes (`torch.manual_seed`: an unsigned 64-bit number)."""

DECODING_CHOICES = ("greedy", "beam search", "sampling")

HEATMAP_NUMBER_POINTS = 10
"""Font size of the weights written in the heat map's cells (points, at 100 dpi: 14 px when the image is shown at
its own size, which the page keeps on narrow screens)."""

ModelSource = Union[str, os.PathLike, Tuple[Any, Any]]
"""What :func:`build_demo` takes: a saved folder or Hub id, or an already loaded `(model, tokenizer)` pair."""


class DemoError(ValueError):
    """A problem with the demo's input or checkpoint, worded for the person using it."""


@dataclass
class DemoLimits:
    """How much of a dialogue the demo reads. EmpatheticDialogues contexts have at most 7 utterances of a few dozen
    words; longer input is cut (the oldest turns, the end of long utterances) and the page says so."""

    max_context_turns: int = 12
    max_utterance_words: int = 60
    max_situation_words: int = 60
    max_new_tokens: int = 100


@dataclass
class DemoResult:
    """Everything the page shows for one prediction (plain Python values; :func:`build_demo` renders them).

    Attributes:
        emotion: the predicted emotion (argmax of the product of the heads' probabilities, Eq. 25).
        response: the generated listener response.
        emotion_probabilities: the combined distribution, `{label: probability}`.
        head_probabilities: per head the model has (`context`, `situation`, `memory`, `knowledge`), `{label: p}`.
        missing_heads: `{head: why the model does not have it}`.
        highlights: the dialogue as `(word, weight)` spans, `weight` the total association weight of that word (summed
            over the associations that picked it; None for words none picked, and for the turn labels).
        heatmap_keywords / heatmap_words / heatmap_weights: the strongest keywords (rows), their associated words
            (columns) and the summed weights (`rows x columns`, 0 where a word is not associated with that keyword).
        notes: what the page should tell the reader (truncation, missing knowledge, ...).
        seed: the seed sampling used (None for greedy and beam search).

    A head the model has but left out for this dialogue (the situation head, when no situation was given) is in
    `missing_heads`, not in `head_probabilities`: the emotion was predicted from the other heads.
    """

    emotion: str
    response: str
    emotion_probabilities: Dict[str, float]
    head_probabilities: Dict[str, Dict[str, float]]
    missing_heads: Dict[str, str]
    highlights: List[Tuple[str, Optional[float]]]
    heatmap_keywords: List[str] = field(default_factory=list)
    heatmap_words: List[str] = field(default_factory=list)
    heatmap_weights: List[List[float]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    seed: Optional[int] = None


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def _check_hub_id(name: str) -> None:
    """A :class:`DemoError` saying `name` is no local folder, unless the Hub (or, offline, its cache) has a model of
    that id. One request with a short timeout, so a mistyped folder is named at once instead of after the download
    retries of `from_pretrained`."""
    try:
        from huggingface_hub import HfApi, constants, try_to_load_from_cache
        from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError
    except ImportError:  # without huggingface_hub transformers cannot reach the Hub either
        raise DemoError(f"{name}: folder does not exist") from None
    missing = f"{name}: folder does not exist"
    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except HFValidationError:
        raise DemoError(f"{missing} (and it is not a Hub model id)") from None
    if constants.HF_HUB_OFFLINE:
        if not cached:
            raise DemoError(f"{missing}, and no Hub model of that id is in the cache (HF_HUB_OFFLINE is set)")
        return
    try:
        HfApi(endpoint=constants.ENDPOINT).model_info(name, timeout=10)
    except RepositoryNotFoundError:
        raise DemoError(f"{missing}, and the Hub ({constants.ENDPOINT}) has no model {name} (for a private one, "
                        f"set HF_TOKEN)") from None
    except Exception as error:  # unreachable endpoint, timeout, server error: a cached copy still loads
        if not cached:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DemoError(f"{missing}, and the Hub ({constants.ENDPOINT}) could not be reached to look for a "
                            f"model of that id ({reason})") from None


def load_model(model_name_or_path: Union[str, os.PathLike], device: Optional[str] = None):
    """Load an IAMM and its tokenizer from a saved folder or a Hub id; a :class:`DemoError` naming the path if not.

    A name that is no folder here is looked up as a Hub id (`owner/name`) only when nothing local claims it: a path
    whose first folder exists (`runs/` of `runs/iamm`), an absolute, relative (`./`, `../`) or deeper path, or a
    name without an owner fails at once with "folder does not exist". The checkpoint's own code is used
    (`trust_remote_code=True`), so a folder written by `save_pretrained` loads without this package's model
    classes registered, and offline.
    """
    from transformers import AutoModel, AutoTokenizer

    name = os.fspath(model_name_or_path)
    if os.path.exists(name) and not os.path.isdir(name):
        raise DemoError(f"{name}: a file, not a folder (pass the folder train.py or save_pretrained wrote)")
    if not os.path.isdir(name):
        parts = name.split("/")
        looks_local = (os.path.isabs(name) or name.startswith(".") or "\\" in name
                       or len(parts) != 2 or os.path.isdir(parts[0]))
        if looks_local:
            raise DemoError(f"{name}: folder does not exist (pass a folder written by save_pretrained, or a Hub "
                            f"model id owner/name)")
        _check_hub_id(name)
    elif not os.path.isfile(os.path.join(name, "config.json")):
        raise DemoError(f"{name}: not an IAMM checkpoint (no config.json); pass the folder train.py wrote")
    try:
        model = AutoModel.from_pretrained(name, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as error:  # OSError (missing/offline), ValueError (wrong model type), ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DemoError(f"{name}: could not load an IAMM checkpoint ({first_line})") from error
    if getattr(model.config, "model_type", None) != "iamm":
        raise DemoError(f"{name}: a {model.config.model_type!r} model, not IAMM")
    if device:
        model.to(device)
    return model.eval(), tokenizer


def load_examples(source: Union[str, os.PathLike] = SAMPLE_DATA_DIR, split: str = "valid",
                  limit: int = 20) -> List[Dict[str, Any]]:
    """Dialogues to try, from an EmpatheticDialogues source (folder, file or Hub id; see
    `modeling_iamm.load_empathetic_dialogues`): per conversation, its last listener turn's context.

    Returns dicts with `situation`, `turns`, and the dataset's `emotion` and `response` (shown as the reference).
    """
    from modeling_iamm import build_samples, load_empathetic_dialogues

    conversations = load_empathetic_dialogues(os.fspath(source), splits=[split])
    if split not in conversations:
        raise DemoError(f"{source}: no {split!r} split (it has {', '.join(conversations) or 'none'})")
    samples = build_samples(conversations[split])
    last: Dict[str, Dict[str, Any]] = {}
    for sample in samples:
        last[sample["conv_id"]] = sample  # samples of a conversation come in turn order: keep the longest context
    examples = []
    for sample in list(last.values())[:limit]:
        examples.append({"situation": sample["situation"], "turns": list(sample["context"]),
                         "emotion": sample["emotion"], "response": sample["target"]})
    return examples


def example_title(example: Dict[str, Any], width: int = 70) -> str:
    """A one-line name for an example in the dropdown."""
    text = example.get("situation") or example["turns"][-1]
    text = text if len(text) <= width else text[: width - 3] + "..."
    return f"[{example['emotion']}] {text}" if example.get("emotion") else text


# ----------------------------------------------------------------------------------------------------------------
# Prediction (no Gradio here)
# ----------------------------------------------------------------------------------------------------------------


def parse_dialogue(text: str) -> List[str]:
    """The dialogue textbox as turns: one utterance per non-empty line, oldest first."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def generation_kwargs(decoding: str = "greedy", max_new_tokens: int = 50, num_beams: int = 4, top_p: float = 0.9,
                      temperature: float = 1.0) -> Dict[str, Any]:
    """`model.generate` arguments for a decoding choice of the page (one of :data:`DECODING_CHOICES`)."""
    if decoding == "greedy":
        return {"max_new_tokens": int(max_new_tokens), "num_beams": 1, "do_sample": False}
    if decoding == "beam search":
        return {"max_new_tokens": int(max_new_tokens), "num_beams": max(int(num_beams), 1), "do_sample": False}
    if decoding == "sampling":
        if not 0 < float(top_p) <= 1 or float(temperature) <= 0:
            raise DemoError("sampling needs 0 < top_p <= 1 and temperature > 0")
        return {"max_new_tokens": int(max_new_tokens), "num_beams": 1, "do_sample": True, "top_p": float(top_p),
                "temperature": float(temperature)}
    raise DemoError(f"unknown decoding {decoding!r}: choose one of {', '.join(DECODING_CHOICES)}")


def check_seed(seed: Any) -> int:
    """`seed` as an int in :data:`SEED_RANGE`, or a :class:`DemoError` saying which seeds the generator takes."""
    low, high = SEED_RANGE
    try:
        value = int(seed)
        whole = value == seed
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole or not low <= value <= high:
        raise DemoError(f"The seed must be a whole number from {low} to {high} (the random generator's range); "
                        f"got {seed!r}.")
    return value


def _probabilities(logits: torch.Tensor, labels: Sequence[str]) -> Dict[str, float]:
    probs = torch.softmax(logits.float(), dim=-1).tolist()
    return {label: round(p, 6) for label, p in zip(labels, probs)}


def _word_weights(associations: Dict[str, torch.Tensor], sample: int = 0) -> Dict[int, float]:
    """The total explicit association weight of every word ref of one sample: the sum of its weights over every
    association that picked it (as a keyword or an associated word; all turns, heads, pairs and directions)."""
    best: Dict[int, float] = {}
    for key in associations:
        if not (key.startswith("explicit_") and key.endswith("_keyword_refs")):
            continue
        prefix = key[: -len("_keyword_refs")]
        pairs = (
            (associations[f"{prefix}_keyword_refs"][sample], associations[f"{prefix}_keyword_weights"][sample]),
            (associations[f"{prefix}_associated_refs"][sample], associations[f"{prefix}_associated_weights"][sample]),
        )
        for refs, weights in pairs:
            for ref, weight in zip(refs.reshape(-1).tolist(), weights.reshape(-1).tolist()):
                if 0 <= ref < IMPLICIT_REF and weight > 0:
                    best[ref] = best.get(ref, 0.0) + weight
    return best


def _highlights(situation_words: List[str], turn_words: List[List[str]], roles: List[str],
                weights: Dict[int, float], special: set) -> List[Tuple[str, Optional[float]]]:
    """`(text, weight)` spans: the situation and each turn, every word coloured by its association weight.

    Refs count positions after `[CLS]` (position 0): situation word j is ref j + 1, word p of turn t is
    `(t + 1) * REF_STRIDE + p + 1`.
    """
    spans: List[Tuple[str, Optional[float]]] = []

    def add_words(words: List[str], ref_of):
        for p, word in enumerate(words):
            weight = weights.get(ref_of(p)) if word not in special else None
            spans.append((word + " ", round(weight, 4) if weight is not None else None))

    if situation_words:
        spans.append(("Situation: ", None))
        add_words(situation_words, lambda p: p + 1)
        spans.append(("\n", None))
    for t, (words, role) in enumerate(zip(turn_words, roles)):
        spans.append((f"{role.capitalize()}: ", None))
        add_words(words, lambda p, t=t: (t + 1) * REF_STRIDE + p + 1)
        spans.append(("\n", None))
    return spans


def _is_word(token: str) -> bool:
    """A token with a letter or digit (the heat map leaves punctuation out; the highlighted dialogue keeps it)."""
    return any(ch.isalnum() for ch in token)


def _heatmap(associations: Dict[str, Any], special: set, max_keywords: int = 6,
             max_words: int = 8) -> Tuple[List[str], List[str], List[List[float]]]:
    """The strongest explicit keywords and their associated words as a matrix of summed weights (a pair found
    by several heads, turns or pairs counts each time: trained models' sigmoid weights sit near 1, so the sum says
    how often and how strongly two words were associated)."""
    links: Dict[str, Dict[str, float]] = {}
    keyword_weight: Dict[str, float] = {}
    for pair in ("utterance-situation", "utterance-history", "utterance-memory"):
        for entry in associations.get(pair, []):
            keyword = entry["keyword"]
            if keyword in special or not _is_word(keyword):
                continue
            keyword_weight[keyword] = keyword_weight.get(keyword, 0.0) + entry["keyword_weight"]
            row = links.setdefault(keyword, {})
            for word, weight in entry["associated"]:
                if word in special or word == keyword or not _is_word(word):
                    continue
                row[word] = row.get(word, 0.0) + weight
    keywords = sorted((k for k in links if links[k]), key=lambda k: -keyword_weight[k])[:max_keywords]
    column_weight: Dict[str, float] = {}
    for k in keywords:
        for word, weight in links[k].items():
            column_weight[word] = column_weight.get(word, 0.0) + weight
    words = sorted(column_weight, key=lambda w: -column_weight[w])[:max_words]
    matrix = [[round(links[k].get(w, 0.0), 4) for w in words] for k in keywords]
    return keywords, words, matrix


def predict_for_demo(model, tokenizer, situation: str, dialogue: Union[str, Sequence[str]], decoding: str = "greedy",
                     max_new_tokens: int = 50, num_beams: int = 4, top_p: float = 0.9, temperature: float = 1.0,
                     seed: Optional[int] = None, limits: Optional[DemoLimits] = None,
                     collator: Optional[IAMMDataCollator] = None) -> DemoResult:
    """Predict for one dialogue as the page does: the emotion, every head's probabilities, the response and the
    associated words. `dialogue` is the textbox text (one utterance per line, the last the speaker's) or a list of
    utterances. Sampling seeds torch with `seed`, or with a new random seed when it is None (recorded in
    `DemoResult.seed` and in the notes, so a response can be drawn again). Raises :class:`DemoError` for input
    the model cannot take (no utterance)."""
    limits = limits or DemoLimits()
    turns = parse_dialogue(dialogue) if isinstance(dialogue, str) else [str(t).strip() for t in dialogue if str(t).strip()]
    if not turns:
        raise DemoError("Type the dialogue first: one utterance per line, the last one the speaker's "
                        "(or pick an example).")
    if int(max_new_tokens) < 1 or int(max_new_tokens) > limits.max_new_tokens:
        raise DemoError(f"max new tokens must be between 1 and {limits.max_new_tokens}")
    situation = (situation or "").strip()
    notes: List[str] = []
    if len(turns) > limits.max_context_turns:
        notes.append(f"The dialogue has {len(turns)} utterances; the model reads the last {limits.max_context_turns} "
                     f"(EmpatheticDialogues contexts have at most 7).")
        turns = turns[-limits.max_context_turns:]
    turn_words = [word_tokenize(t) for t in turns]
    long_turns = sum(len(w) > limits.max_utterance_words for w in turn_words)
    if long_turns:
        notes.append(f"{long_turns} utterance(s) cut to their first {limits.max_utterance_words} words.")
    turn_words = [w[: limits.max_utterance_words] for w in turn_words]
    situation_words = word_tokenize(situation)
    if len(situation_words) > limits.max_situation_words:
        notes.append(f"The situation is cut to its first {limits.max_situation_words} words.")
        situation_words = situation_words[: limits.max_situation_words]
    config = model.config
    if not config.use_situation and situation:
        notes.append("This model does not read the situation text.")
    words = [w for ws in turn_words for w in ws] + situation_words
    unknown = sum(tokenizer.convert_tokens_to_ids(w) == tokenizer.unk_token_id for w in words)
    if words and unknown / len(words) > 0.5:
        notes.append(f"{unknown} of {len(words)} words are not in the model's vocabulary (it was trained on English "
                     f"EmpatheticDialogues); it can only copy them.")

    sample = dialogue_sample([" ".join(w) for w in turn_words], " ".join(situation_words))
    sample["context_words"] = turn_words  # already split and cut: the collator uses these as they are
    sample["situation_words"] = situation_words
    sample["target_words"] = []
    if config.use_implicit_association:
        relations = len(config.relation_names)
        sample["situation_knowledge"] = [""] * relations
        sample["context_knowledge"] = [[""] * relations for _ in turn_words]
        notes.append("This model reads commonsense knowledge (COMET); the demo gives it none, so its knowledge "
                     "head and implicit associations see empty relations.")
    collator = collator or IAMMDataCollator(tokenizer, relation_names=config.relation_names)
    kwargs = generation_kwargs(decoding, max_new_tokens, num_beams, top_p, temperature)
    used_seed = None
    if kwargs["do_sample"]:
        used_seed = check_seed(seed) if seed is not None else random.SystemRandom().randrange(2**31)
        torch.manual_seed(used_seed)
        notes.append(f"Sampled with seed {used_seed}: set it as the seed to draw this response again.")
    model.eval()
    # no situation: the model's use_situation=False mode for this dialogue (an empty text would bias the situation head)
    without_situation = config.use_situation and not situation_words
    prediction = predict_batch(model, tokenizer, collator, [sample], with_associations=True,
                               use_situation=False if without_situation else None, **kwargs)
    outputs = prediction.encoder_outputs
    labels = [config.id2label[i] for i in range(len(config.id2label))]
    head_probabilities, missing = {}, {}
    for name, attribute, _ in HEADS:
        logits = getattr(outputs, attribute, None)
        if logits is None:
            missing[name] = (NO_SITUATION_REASON if name == "situation" and without_situation
                             else MISSING_HEAD_REASONS.get(name, "the model does not have it"))
        else:
            head_probabilities[name] = _probabilities(logits[0], labels)
    if without_situation:
        used = [page_label[0].lower() + page_label[1:] for name, _, page_label in HEADS if name in head_probabilities]
        heads = used[0] if len(used) == 1 else f"{', '.join(used[:-1])} and {used[-1]}"
        notes.append("No situation given: the emotion was predicted without the situation head, from the "
                     f"{heads} (the model's no-situation mode).")
    special = set(tokenizer.all_special_tokens) | {"<none>"}
    raw = outputs.associations or {}
    keywords, columns, matrix = _heatmap(prediction.associations[0], special)
    response = prediction.responses[0]
    if not response.strip():
        notes.append("The model generated an empty response (it ended at once).")
    return DemoResult(
        emotion=prediction.emotions[0],
        response=response,
        emotion_probabilities=_probabilities(outputs.emotion_logits[0], labels),
        head_probabilities=head_probabilities,
        missing_heads=missing,
        highlights=_highlights(situation_words if config.use_situation else [], turn_words,
                               sample["context_roles"], _word_weights(raw), special),
        heatmap_keywords=keywords,
        heatmap_words=columns,
        heatmap_weights=matrix,
        notes=notes,
        seed=used_seed,
    )


@functools.lru_cache(maxsize=1)
def _drawable_fonts() -> Tuple[Tuple[str, str, frozenset], ...]:
    """`(path, family, code points)` of every installed font matplotlib can draw, regular styles first (colour
    bitmap fonts such as Noto Color Emoji cannot be sized by matplotlib and are left out)."""
    from matplotlib import font_manager, ft2font

    fonts = []
    for path in sorted(font_manager.findSystemFonts()):
        try:
            font = ft2font.FT2Font(path)
            font.set_size(10, 72)
            charmap = frozenset(font.get_charmap())
        except Exception:  # unreadable, or a bitmap-only font
            continue
        fonts.append((font.style_name.lower() not in ("regular", "book"), path, font.family_name, charmap))
    return tuple((path, family, charmap) for _, path, family, charmap in sorted(fonts, key=lambda f: f[:2]))


def label_fonts(texts: Sequence[str]) -> Tuple[List[str], Callable[[str], str]]:
    """Fonts and a relabelling for drawing `texts` with matplotlib: matplotlib's default font first, then for each
    character it lacks an installed font that has it (e.g. Noto Sans CJK, Symbola for emoji). Returns the font
    family list (matplotlib falls back along it glyph by glyph) and a function that writes each character no
    installed font has as `U+XXXX`, so the label shows it is there instead of an empty box."""
    from matplotlib import font_manager, ft2font

    default_path = font_manager.findfont(font_manager.FontProperties())
    default = ft2font.FT2Font(default_path)
    covered = set(default.get_charmap())
    families = [default.family_name]
    needed = sorted({ord(ch) for text in texts for ch in text if not ch.isspace()} - covered)
    for code in needed:
        if code in covered:
            continue
        for path, family, charmap in _drawable_fonts():
            if code in charmap:
                font_manager.fontManager.addfont(path)
                covered |= charmap
                if family not in families:
                    families.append(family)
                break

    def relabel(text: str) -> str:
        out = []
        for ch in text:
            if ch.isspace() or ord(ch) in covered:
                out.append(ch)
            elif unicodedata.category(ch) in ("Mn", "Cf"):  # variation selectors, joiners: nothing to see
                continue
            else:
                out.append(f"U+{ord(ch):04X}")
        return "".join(out)

    return families, relabel


def heatmap_figure(result: DemoResult):
    """A matplotlib heat map of the result's keywords x associated words (None when there is nothing to show).

    Compact enough to read on a phone (the page scrolls it sideways there rather than shrinking it): the weights
    are written in the cells, so there is no colour bar. Words in scripts matplotlib's default font lacks (CJK,
    emoji) are drawn with an installed font that has them, else written as `U+XXXX` (see :func:`label_fonts`).
    """
    if not result.heatmap_keywords or not result.heatmap_words:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families, relabel = label_fonts(result.heatmap_keywords + result.heatmap_words)
    rows, cols = len(result.heatmap_keywords), len(result.heatmap_words)
    fig, ax = plt.subplots(figsize=(1.3 + 0.55 * cols, 1.3 + 0.42 * rows), dpi=100)
    nonzero = [w for row in result.heatmap_weights for w in row if w > 0]
    low = min(nonzero) if nonzero and max(nonzero) - min(nonzero) > 1e-3 else 0.0
    masked = [[w if w > 0 else float("nan") for w in row] for row in result.heatmap_weights]  # blank: not associated
    high = max(nonzero, default=1.0)
    ax.imshow(masked, cmap="Oranges", vmin=low, vmax=high, aspect="auto")
    ax.set_xticks(range(cols), [relabel(w) for w in result.heatmap_words], rotation=40, ha="right", fontsize=10,
                  fontfamily=families)
    ax.set_yticks(range(rows), [relabel(k) for k in result.heatmap_keywords], fontsize=10, fontfamily=families)
    title = ax.set_title("rows: keywords, columns: associated words\n(summed association weight)", fontsize=10,
                         loc="left")
    for i, row in enumerate(result.heatmap_weights):
        for j, weight in enumerate(row):
            if weight > 0:
                dark = (weight - low) / max(high - low, 1e-6) > 0.6
                ax.text(j, i, f"{weight:.1f}", ha="center", va="center", fontsize=HEATMAP_NUMBER_POINTS,
                        color="white" if dark else "black")
    fig.tight_layout()
    _fit_width(fig, title)
    plt.close(fig)
    return fig


def _fit_width(fig, text, pad_pixels: float = 6.0, tries: int = 3) -> None:
    """Widen `fig` until `text` (the heat map's title, which starts at the axes' left edge and is wider than a map of
    one or two columns) ends inside it, keeping the layout tight."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for _ in range(tries):
        renderer = FigureCanvasAgg(fig).get_renderer() if not hasattr(fig.canvas, "get_renderer") \
            else fig.canvas.get_renderer()
        overflow = text.get_window_extent(renderer).x1 + pad_pixels - fig.bbox.width
        if overflow <= 0:
            return
        width, height = fig.get_size_inches()
        fig.set_size_inches(width + overflow / fig.dpi, height)
        fig.tight_layout()


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------


def _relative(spans: List[Tuple[str, Optional[float]]]) -> List[Tuple[str, Optional[float]]]:
    """Weights rescaled to [0.2, 1] between the dialogue's weakest and strongest word, for colouring."""
    weights = [w for _, w in spans if w is not None]
    if not weights:
        return spans
    low, high = min(weights), max(weights)
    scale = (lambda w: 1.0) if high - low < 1e-6 else (lambda w: 0.2 + 0.8 * (w - low) / (high - low))
    return [(text, None if w is None else round(scale(w), 3)) for text, w in spans]


def _status_markdown(result: DemoResult) -> str:
    return "\n".join(f"- {note}" for note in result.notes) if result.notes else "Done."


def reference_markdown(example: Dict[str, Any]) -> str:
    """What the page shows under an example's dialogue: the dataset's emotion and listener response."""
    return (f"Dataset reference: emotion **{example.get('emotion', '?')}**, "
            f"response: _{example.get('response', '')}_")


DEMO_CSS = """
/* The highlighted dialogue: one turn per line. Gradio lays the words out as flex items, where the "\\n" spans
   cannot break a line; in inline flow they do (the word spans keep white-space: pre-wrap). */
#highlights .textfield { display: block; word-break: keep-all; overflow-wrap: anywhere; }
#highlights .token-container { display: inline; }
/* Phones: the heat map keeps its own size, so its numbers stay readable, and scrolls sideways. */
@media (max-width: 700px) {
  #heatmap { overflow-x: auto !important; }
  #heatmap .layout { align-items: flex-start !important; }
  #heatmap img { width: auto !important; max-width: none !important; }
}
"""
"""The page's own CSS (:func:`build_demo` builds it into the page, so `demo.launch()` needs no `css=`)."""

SCROLL_TO_RESULT_JS = """() => {
  const box = document.querySelector('#emotion'), end = document.querySelector('#response');
  if (!box || !end) return;
  const top = box.getBoundingClientRect().top, bottom = end.getBoundingClientRect().bottom;
  if (top < 0 || bottom > window.innerHeight) box.scrollIntoView({block: 'start'});
}"""
"""After a prediction: on a small screen, where the results sit under the inputs, bring them into view."""

OUTPUT_LABELS = {
    "emotion": "Predicted emotion",
    "response": "Response",
    "status": "Messages",
    "highlights": "Associated words in the dialogue",
    "heatmap": "Keywords x associated words",
    "seed": "Seed (sampling)",
    "combined": "All heads combined",
}
"""Labels of the page's outputs, which are also their names in the API (`gradio_client`'s `view_api()`)."""


def build_demo(model: ModelSource, examples: Optional[Sequence[Dict[str, Any]]] = None,
               limits: Optional[DemoLimits] = None, title: str = "IAMM: empathetic responses with associated words",
               cache_examples: Union[bool, str, None] = None):
    """The demo page (a `gr.Blocks`; call `.launch()` on it).

    Args:
        model: a saved folder or Hub id (loaded with :func:`load_model`; :class:`DemoError` if it cannot be), or a
            loaded `(model, tokenizer)` pair.
        examples: dialogues offered as clickable `gr.Examples` (dicts with `turns`, optional `situation`,
            `emotion`, `response`); default: 20 from the bundled EmpatheticDialogues sample's valid split. `[]`:
            none.
        limits: how much of a dialogue the model reads (:class:`DemoLimits`).
        title: the page's heading.
        cache_examples: `gr.Examples`' caching of the examples' (greedy) results: True (when the page starts),
            "lazy" (on first use), False, or None (default): Gradio's choice, the `GRADIO_CACHE_EXAMPLES`
            environment variable, true on a Hugging Face Space.

    The page has one API endpoint, `/predict` (`gradio_client.Client(url).predict(situation, dialogue, ...,
    api_name="/predict")`); its outputs are named by :data:`OUTPUT_LABELS` and the heads' labels, and a head the
    model does not have is not among them. A head the model left out for this dialogue (the situation head, when
    the situation is blank) gives an empty output, and the messages say the emotion was predicted without it. Sampling draws a new seed per call (returned as "Seed (sampling)")
    unless `randomize_seed=False`, when it uses `seed`.

    Components the page's tests read: `#emotion` and `#response` (textboxes), `#status` (messages),
    `#highlights` (the dialogue coloured by association weight), `#heatmap` (keywords x associated words),
    `#probs-<head>` (each head's top emotions), `#examples`, `#reference` (an example's dataset reference).
    """
    import gradio as gr

    if isinstance(model, tuple):
        model, tokenizer = model
    else:
        model, tokenizer = load_model(model)
    model.eval()
    limits = limits or DemoLimits()
    examples = list(load_examples() if examples is None else examples)
    collator = IAMMDataCollator(tokenizer, relation_names=model.config.relation_names)
    has = {name: True for name, _, _ in HEADS}
    has["situation"] = bool(model.config.use_situation)
    has["knowledge"] = bool(model.config.use_implicit_association)
    has["memory"] = bool(model.config.use_explicit_association or model.config.use_implicit_association)
    absent = [f"the {name} head ({MISSING_HEAD_REASONS[name]})" for name, present in has.items() if not present]
    heads = [(name, page_label) for name, _, page_label in HEADS if has[name]]

    with warnings.catch_warnings():  # Gradio 6 prefers launch(css=...); the page carries its CSS for any launcher
        warnings.filterwarnings("ignore", message="The parameters have been moved", category=UserWarning)
        blocks = gr.Blocks(title="IAMM demo", analytics_enabled=False, css=DEMO_CSS)
    with blocks as demo:
        gr.Markdown(
            f"# {title}\n"
            "IAMM (Yang et al., ACL 2024) reads a dialogue and the speaker's situation, associates their words "
            "iteratively, predicts the speaker's **emotion** (one of 32) and writes the listener's **response**. "
            "Type one utterance per line; the last line is the speaker's, and the model answers it."
        )
        with gr.Row():
            with gr.Column(scale=5):
                situation_box = gr.Textbox(label="Situation (optional)", lines=2, elem_id="situation",
                                           placeholder="I lost my job last week and I don't know how to tell my family.")
                dialogue_box = gr.Textbox(label="Dialogue: one utterance per line, the last is the speaker's",
                                          lines=6, elem_id="dialogue",
                                          placeholder="I got fired today.\nOh no, what happened?\nThey cut half the team.")
                with gr.Accordion("Decoding", open=False, elem_id="decoding-options"):
                    decoding_box = gr.Radio(list(DECODING_CHOICES), value="greedy", label="Decoding",
                                            elem_id="decoding")
                    max_new_tokens_box = gr.Slider(1, limits.max_new_tokens, value=50, step=1,
                                                   label="Max new tokens", elem_id="max-new-tokens")
                    num_beams_box = gr.Slider(2, 10, value=4, step=1, label="Beams (beam search)", elem_id="beams")
                    with gr.Row():
                        top_p_box = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="top_p (sampling)")
                        temperature_box = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature (sampling)")
                    with gr.Row():
                        randomize_box = gr.Checkbox(value=True, label="New seed each time (sampling)",
                                                    elem_id="randomize-seed")
                        seed_box = gr.Number(value=0, precision=0, label=OUTPUT_LABELS["seed"], elem_id="seed")
                submit = gr.Button("Predict", variant="primary", elem_id="submit")
                reference = gr.Markdown("", elem_id="reference", label="Dataset reference")
                examples_box = gr.Column(visible=bool(examples))  # filled below, once the outputs exist
            with gr.Column(scale=6):
                emotion_box = gr.Textbox(label=OUTPUT_LABELS["emotion"], elem_id="emotion", interactive=False)
                response_box = gr.Textbox(label=OUTPUT_LABELS["response"], elem_id="response", interactive=False,
                                          lines=2)
                status = gr.Markdown("", elem_id="status", label=OUTPUT_LABELS["status"])
                highlights = gr.HighlightedText(label=OUTPUT_LABELS["highlights"] + " (colour: total association "
                                                "weight, relative; none: not associated)", elem_id="highlights",
                                                show_legend=False, show_inline_category=False)
                heatmap = gr.Plot(label=OUTPUT_LABELS["heatmap"], elem_id="heatmap", format="png", show_label=False)
        gr.Markdown("### Emotion heads (top 5 of 32)" + (
            "\nNot shown: " + "; ".join(absent) + "." if absent else ""))
        with gr.Row():
            # min_width: side by side on a wide screen, one under the other on a phone (labels never squeezed)
            combined = gr.Label(num_top_classes=5, label=OUTPUT_LABELS["combined"], elem_id="probs-combined",
                                min_width=200)
            head_labels = [gr.Label(num_top_classes=5, label=page_label, elem_id=f"probs-{name}", min_width=200)
                           for name, page_label in heads]

        outputs = [emotion_box, response_box, status, highlights, heatmap, seed_box, combined, *head_labels]

        def predict(situation: str, dialogue: str, decoding: str = "greedy", max_new_tokens: int = 50,
                    num_beams: int = 4, top_p: float = 0.9, temperature: float = 1.0, seed: int = 0,
                    randomize_seed: bool = True):
            try:
                shown_seed = check_seed(seed)
            except DemoError:  # not a seed (only sampling needs one): not sent back, the page's JSON holds 64 bits
                shown_seed = None
            try:
                result = predict_for_demo(model, tokenizer, situation, dialogue, decoding, max_new_tokens, num_beams,
                                          top_p, temperature, None if randomize_seed else seed, limits, collator)
            except DemoError as error:
                gr.Warning(str(error))
                return ["", "", f"**{error}**", None, None, shown_seed, None, *[None] * len(head_labels)]
            # a head the model has but left out for this dialogue (the situation head, without a situation) gives
            # None: the messages say the emotion was predicted without it
            return [result.emotion, result.response, _status_markdown(result), _relative(result.highlights),
                    heatmap_figure(result), shown_seed if result.seed is None else result.seed,
                    result.emotion_probabilities, *[result.head_probabilities.get(name) for name, _ in heads]]

        def cached_predict(situation: str, dialogue: str, _reference: str):
            """An example's outputs as the page's defaults give them (greedy), for `gr.Examples`' cache."""
            values = predict(situation, dialogue)
            return values[:5] + values[6:]  # not the seed: an example leaves the decoding settings as they are

        if examples:
            with examples_box:
                gr.Examples(
                    [[e.get("situation", ""), "\n".join(e["turns"]), reference_markdown(e)] for e in examples],
                    inputs=[situation_box, dialogue_box, reference],
                    example_labels=[example_title(e) for e in examples],
                    label="EmpatheticDialogues examples (valid): click one", elem_id="examples",
                    outputs=[box for box in outputs if box is not seed_box], fn=cached_predict,
                    cache_examples=cache_examples, api_visibility="private",
                )
        # An example's reference belongs to its text: typing (not an example filling the boxes) clears it.
        for box in (situation_box, dialogue_box):
            box.input(None, None, reference, js="() => ''", api_visibility="private", queue=False)
        submit.click(predict, inputs=[situation_box, dialogue_box, decoding_box, max_new_tokens_box, num_beams_box,
                                      top_p_box, temperature_box, seed_box, randomize_box],
                     outputs=outputs, api_name="predict").then(None, js=SCROLL_TO_RESULT_JS)
    return demo
