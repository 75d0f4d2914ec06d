"""A Gradio demo of IAMM: type a situation and a dialogue (or pick an EmpatheticDialogues example) and see the
predicted emotion, each emotion head's probabilities, the listener's response and the associated words.

    from iamm.hub.demo import build_demo
    build_demo("runs/iamm").launch()          # a saved folder or a Hub id (trust_remote_code)

`scripts/demo.py` is the command line over :func:`build_demo`; :mod:`iamm.hub.space` writes a Hugging Face Space
that runs the same app. The page's logic lives in :func:`predict_for_demo` (plain Python, tested without a
browser); :func:`build_demo` only lays out the components and wires them to it.

This module imports only `modeling_iamm` (absolute imports), so a Space can ship it as a single file.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

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

DECODING_CHOICES = ("greedy", "beam search", "sampling")

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


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def load_model(model_name_or_path: Union[str, os.PathLike], device: Optional[str] = None):
    """Load an IAMM and its tokenizer from a saved folder or a Hub id; a :class:`DemoError` naming the path if not.

    The checkpoint's own code is used (`trust_remote_code=True`), so a folder written by `save_pretrained` loads
    without this package's model classes registered, and offline.
    """
    from transformers import AutoModel, AutoTokenizer

    name = os.fspath(model_name_or_path)
    looks_local = os.path.isabs(name) or name.startswith(".") or os.path.exists(name) or name.count("/") > 1
    if looks_local and not os.path.isdir(name):
        raise DemoError(f"{name}: no such folder (pass a folder written by save_pretrained, or a Hub model id)")
    if os.path.isdir(name) and not os.path.isfile(os.path.join(name, "config.json")):
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
                     seed: Optional[int] = 0, limits: Optional[DemoLimits] = None,
                     collator: Optional[IAMMDataCollator] = None) -> DemoResult:
    """Predict for one dialogue as the page does: the emotion, every head's probabilities, the response and the
    associated words. `dialogue` is the textbox text (one utterance per line, the last the speaker's) or a list of
    utterances. Raises :class:`DemoError` for input the model cannot take (no utterance)."""
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
    if kwargs["do_sample"] and seed is not None:
        torch.manual_seed(int(seed))
    model.eval()
    # no situation: the model's use_situation=False mode for this dialogue (an empty text would bias the situation head)
    without_situation = config.use_situation and not situation_words
    if without_situation:
        notes.append("No situation given: the model reads the dialogue without one (no situation head).")
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
    )


def heatmap_figure(result: DemoResult):
    """A matplotlib heat map of the result's keywords x associated words (None when there is nothing to show)."""
    if not result.heatmap_keywords or not result.heatmap_words:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(result.heatmap_keywords), len(result.heatmap_words)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * cols, 0.9 + 0.45 * rows), dpi=100)
    nonzero = [w for row in result.heatmap_weights for w in row if w > 0]
    low = min(nonzero) if nonzero and max(nonzero) - min(nonzero) > 1e-3 else 0.0
    masked = [[w if w > 0 else float("nan") for w in row] for row in result.heatmap_weights]  # blank: not associated
    high = max(nonzero, default=1.0)
    image = ax.imshow(masked, cmap="Oranges", vmin=low, vmax=high, aspect="auto")
    ax.set_xticks(range(cols), result.heatmap_words, rotation=40, ha="right", fontsize=9)
    ax.set_yticks(range(rows), result.heatmap_keywords, fontsize=9)
    ax.set_title("keywords x associated words (punctuation left out)", fontsize=9)
    ax.set_xlabel("associated words")
    ax.set_ylabel("keywords")
    for i, row in enumerate(result.heatmap_weights):
        for j, weight in enumerate(row):
            if weight > 0:
                dark = (weight - low) / max(high - low, 1e-6) > 0.6
                ax.text(j, i, f"{weight:.1f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="summed weight")
    fig.tight_layout()
    plt.close(fig)
    return fig


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


def build_demo(model: ModelSource, examples: Optional[Sequence[Dict[str, Any]]] = None,
               limits: Optional[DemoLimits] = None, title: str = "IAMM: empathetic responses with associated words"):
    """The demo page (a `gr.Blocks`; call `.launch()` on it).

    Args:
        model: a saved folder or Hub id (loaded with :func:`load_model`; :class:`DemoError` if it cannot be), or a
            loaded `(model, tokenizer)` pair.
        examples: dialogues for the example dropdown (dicts with `turns`, optional `situation`, `emotion`,
            `response`); default: 20 from the bundled EmpatheticDialogues sample's valid split. `[]`: none.
        limits: how much of a dialogue the model reads (:class:`DemoLimits`).
        title: the page's heading.

    Components the page's tests read: `#emotion` and `#response` (textboxes), `#status` (messages),
    `#highlights` (the dialogue coloured by association weight), `#heatmap` (keywords x associated words),
    `#probs-<head>` (each head's top emotions).
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
    titles = [example_title(e) for e in examples]
    by_title = dict(zip(titles, examples))
    has = {name: True for name, _, _ in HEADS}
    has["situation"] = bool(model.config.use_situation)
    has["knowledge"] = bool(model.config.use_implicit_association)
    has["memory"] = bool(model.config.use_explicit_association or model.config.use_implicit_association)
    absent = [f"the {name} head ({MISSING_HEAD_REASONS[name]})" for name, present in has.items() if not present]

    with gr.Blocks(title="IAMM demo", analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {title}\n"
            "IAMM (Yang et al., ACL 2024) reads a dialogue and the speaker's situation, associates their words "
            "iteratively, predicts the speaker's **emotion** (one of 32) and writes the listener's **response**. "
            "Type one utterance per line; the last line is the speaker's, and the model answers it."
        )
        with gr.Row():
            with gr.Column(scale=5):
                example_box = gr.Dropdown(choices=titles, value=None, label="EmpatheticDialogues example (valid)",
                                          elem_id="example", visible=bool(examples), interactive=True)
                situation_box = gr.Textbox(label="Situation (optional)", lines=2, elem_id="situation",
                                           placeholder="I lost my job last week and I don't know how to tell my family.")
                dialogue_box = gr.Textbox(label="Dialogue: one utterance per line, the last is the speaker's",
                                          lines=6, elem_id="dialogue",
                                          placeholder="I got fired today.\nOh no, what happened?\nThey cut half the team.")
                with gr.Accordion("Decoding", open=False):
                    decoding_box = gr.Radio(list(DECODING_CHOICES), value="greedy", label="Decoding",
                                            elem_id="decoding")
                    max_new_tokens_box = gr.Slider(1, limits.max_new_tokens, value=50, step=1,
                                                   label="Max new tokens", elem_id="max-new-tokens")
                    num_beams_box = gr.Slider(2, 10, value=4, step=1, label="Beams (beam search)")
                    with gr.Row():
                        top_p_box = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="top_p (sampling)")
                        temperature_box = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature (sampling)")
                        seed_box = gr.Number(value=0, precision=0, label="Seed (sampling)")
                submit = gr.Button("Predict", variant="primary", elem_id="submit")
                reference = gr.Markdown("", elem_id="reference")
            with gr.Column(scale=6):
                emotion_box = gr.Textbox(label="Predicted emotion", elem_id="emotion", interactive=False)
                response_box = gr.Textbox(label="Response", elem_id="response", interactive=False, lines=2)
                status = gr.Markdown("", elem_id="status")
                highlights = gr.HighlightedText(label="Associated words in the dialogue (colour: total association "
                                                      "weight, relative; none: not associated)", elem_id="highlights",
                                                show_legend=False, show_inline_category=False)
                heatmap = gr.Plot(label="Keywords x associated words (summed association weights)", elem_id="heatmap",
                                  format="png", show_label=False)
        gr.Markdown("### Emotion heads (top 5 of 32)" + (
            "\nNot shown: " + "; ".join(absent) + "." if absent else ""))
        with gr.Row():
            combined = gr.Label(num_top_classes=5, label="Combined (product of the heads)", elem_id="probs-combined")
            head_labels = {name: gr.Label(num_top_classes=5, label=page_label, elem_id=f"probs-{name}",
                                          visible=has[name]) for name, _, page_label in HEADS}

        outputs = [emotion_box, response_box, status, highlights, heatmap, combined, *head_labels.values()]

        def run(situation, dialogue, decoding, max_new_tokens, num_beams, top_p, temperature, seed):
            try:
                result = predict_for_demo(model, tokenizer, situation, dialogue, decoding, max_new_tokens, num_beams,
                                          top_p, temperature, seed, limits, collator)
            except DemoError as error:
                gr.Warning(str(error))
                return ["", "", f"**{error}**", None, None, None, *[None] * len(head_labels)]
            return [result.emotion, result.response, _status_markdown(result), _relative(result.highlights),
                    heatmap_figure(result), result.emotion_probabilities,
                    *[result.head_probabilities.get(name) for name in head_labels]]

        def fill(title_chosen):
            example = by_title.get(title_chosen)
            if example is None:
                return gr.skip(), gr.skip(), ""
            return (example.get("situation", ""), "\n".join(example["turns"]),
                    f"Dataset reference: emotion **{example.get('emotion', '?')}**, "
                    f"response: _{example.get('response', '')}_")

        example_box.change(fill, inputs=example_box, outputs=[situation_box, dialogue_box, reference])
        inputs = [situation_box, dialogue_box, decoding_box, max_new_tokens_box, num_beams_box, top_p_box,
                  temperature_box, seed_box]
        submit.click(run, inputs=inputs, outputs=outputs, api_name="predict")
    return demo
