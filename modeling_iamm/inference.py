"""Running a trained IAMM on samples: emotion, response and associated words, as plain Python records."""

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import torch
from transformers import PreTrainedTokenizerBase

from .collator import IAMMDataCollator, decode_extended, resolve_length_limits
from .modeling_iamm import IAMM_ENCODER_INPUTS, NULL_WORD, decode_associations
from .tokenization import SPECIAL_TOKENS, check_tokenizer

HIDDEN_WORDS = frozenset(SPECIAL_TOKENS) | {NULL_WORD}
"""Words the user-facing views of associations leave out: the tokenizer's special tokens and the null memory slot."""

TOKENIZER_REMEDY = ("load the tokenizer saved with the model (AutoTokenizer.from_pretrained(<the model's folder>)), "
                    "or pass the folder of the tokenizer it was trained with")
"""What the tokenizer check tells a Python caller to do (the scripts name their --tokenizer_name_or_path flag)."""

WITH_SITUATION, WITHOUT_SITUATION = "with_situation", "without_situation"
"""A prediction's `situation` field: the situation was read, or the dialogue had none (or the model reads none) and
the model ran in its `use_situation=False` mode for that dialogue."""

Dialogue = Union[Sequence[str], Dict[str, Any]]
"""A dialogue to predict for: its utterances (oldest first, the last one the speaker's), or a dict with `turns`
(or `context`), optional `situation` and optional `roles`."""


DIALOGUE_KEYS = ("turns", "context", "situation", "roles", "conv_id")
"""The keys a dialogue given as a dict may have (`turns`, or its alias `context`, is required)."""


def _check_text(text: Any, what: str) -> str:
    """`text` if it is a string that can be written as UTF-8; else a `TypeError`/`ValueError` naming `what`."""
    if not isinstance(text, str):
        raise TypeError(f"{what} is {type(text).__name__} ({text!r:.40}), not text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} holds {text[e.start:e.end]!r} at position {e.start}, which is not text (a lone "
                         f"surrogate: bytes that were not UTF-8, decoded with errors='surrogateescape'); decode the "
                         f"input with its real encoding") from None
    return text


def dialogue_sample(turns: Sequence[str], situation: str = "", roles: Optional[Sequence[str]] = None,
                    conv_id: Optional[str] = None) -> Dict[str, Any]:
    """Turn a dialogue of your own into an IAMM sample (what :func:`predict` and the collator take).

    Args:
        turns: the utterances (strings), oldest first; the last one is the speaker's (the model answers it as the
            listener).
        situation: the speaker's situation text (ED's `prompt`); empty if unknown.
        roles: `"speaker"`/`"listener"` per utterance; default: alternating, ending with `"speaker"`.
        conv_id: an id carried into the prediction record.

    The sample has no gold response and no gold emotion (`emotion_id` is -100), so it is for prediction only. An
    utterance or situation that is not a string is a `TypeError`, one that is not valid text (a lone surrogate) a
    `ValueError`, each naming the utterance.
    """
    if isinstance(turns, str):
        raise TypeError("turns must be a list of utterances, not one string: wrap it as [text]")
    if not isinstance(turns, (list, tuple)):
        raise TypeError(f"turns must be a list of utterances (strings), got {type(turns).__name__} ({turns!r:.40})")
    turns = [_check_text(t, f"utterance {i}") for i, t in enumerate(turns)]
    situation = _check_text("" if situation is None else situation, "the situation")
    if not turns or not any(t.strip() for t in turns):
        raise ValueError("a dialogue needs at least one non-empty utterance (the speaker's last turn)")
    if roles is None:
        roles = ["speaker" if (len(turns) - 1 - i) % 2 == 0 else "listener" for i in range(len(turns))]
    roles = list(roles)
    if len(roles) != len(turns):
        raise ValueError(f"{len(turns)} utterances but {len(roles)} roles")
    bad = [r for r in roles if r not in ("speaker", "listener")]
    if bad:
        raise ValueError(f"roles must be 'speaker' or 'listener', got {bad[0]!r}")
    return {"conv_id": conv_id, "situation": situation, "context": turns, "context_roles": roles,
            "target": "", "emotion": "", "emotion_id": -100}


def as_sample(dialogue: Dialogue, index: int = 0) -> Dict[str, Any]:
    """A :data:`Dialogue` (list of turns or dict) or an ED sample as an IAMM sample. A dict with a key a dialogue does
    not have (a misspelt `"situaton"`) is refused, naming it: the value would be silently ignored."""
    if isinstance(dialogue, dict):
        if "context_roles" in dialogue:  # already a sample (from build_samples or dialogue_sample)
            return dialogue
        unknown = sorted(set(dialogue) - set(DIALOGUE_KEYS), key=str)
        if unknown:
            import difflib

            close = [m for k in unknown for m in difflib.get_close_matches(str(k), DIALOGUE_KEYS, n=1)]
            raise ValueError(f"dialogue {index}: unknown key(s) {unknown}"
                             + (f" (did you mean {close[0]!r}?)" if close else "")
                             + "; a dialogue dict has 'turns' and optionally 'situation', 'roles', 'conv_id'")
        turns = dialogue.get("turns", dialogue.get("context"))
        if turns is None:
            raise KeyError(f"dialogue {index}: a dict needs 'turns' (the utterances); got keys {sorted(dialogue)}")
        try:
            return dialogue_sample(turns, dialogue.get("situation", ""), dialogue.get("roles"),
                                   dialogue.get("conv_id", str(index)))
        except (TypeError, ValueError) as e:
            raise type(e)(f"dialogue {index}: {e}") from None
    if not isinstance(dialogue, (list, tuple)):
        raise TypeError(f"dialogue {index} is {type(dialogue).__name__} ({dialogue!r:.40}): a dialogue is a list of "
                        f"utterances (strings) or a dict with 'turns'")
    try:
        return dialogue_sample(dialogue, conv_id=str(index))
    except (TypeError, ValueError) as e:
        raise type(e)(f"dialogue {index}: {e}") from None


def distinct_words(entries: Iterable[Sequence[Any]], hidden: Iterable[str] = HIDDEN_WORDS) -> List[List[Any]]:
    """`[word, weight]` pairs as a user reads them: each word once with its best weight, strongest first, without the
    `hidden` words (special tokens, the null memory slot)."""
    hidden = set(hidden)
    best: Dict[str, float] = {}
    for word, weight in entries:
        if word not in hidden and (word not in best or weight > best[word]):
            best[word] = weight
    return [[w, weight] for w, weight in sorted(best.items(), key=lambda item: -item[1])]


def compact_associations(associations: Dict[str, Any], keywords_per_pair: int = 3,
                         words_per_keyword: int = 3) -> Dict[str, Any]:
    """A short view of one dialogue's associated words (`decode_associations` output): per pair type the strongest
    distinct keywords, each with its best associated words and weights; and the memory words the selector kept
    (:func:`distinct_words`). Special tokens and the null memory slot are left out everywhere."""
    view: Dict[str, Any] = {"keywords": {}, "memory_words": []}
    for pair, entries in associations.items():
        if pair == "selected_memory_words":
            view["memory_words"] = distinct_words(entries)
            continue
        seen, kept = set(HIDDEN_WORDS), []
        for entry in sorted(entries, key=lambda e: -e["keyword_weight"]):
            if entry["keyword"] in seen:
                continue
            seen.add(entry["keyword"])
            associated = distinct_words(entry["associated"])[:words_per_keyword]
            kept.append({"keyword": entry["keyword"], "weight": entry["keyword_weight"], "associated": associated})
            if len(kept) == keywords_per_pair:
                break
        view["keywords"][pair] = kept
    return view


def top_associations(associations: Dict[str, Any], per_pair: int = 3) -> Dict[str, List[str]]:
    """:func:`compact_associations` as text: per pair type `"keyword -> word1, word2, word3 (weight)"` lines; and
    the selected memory words as `"word (weight)"`."""
    view = compact_associations(associations, keywords_per_pair=per_pair)
    lines: Dict[str, List[str]] = {
        pair: [f"{k['keyword']} -> {', '.join(w for w, _ in k['associated'])} ({k['weight']:.2f})" for k in kept]
        for pair, kept in view["keywords"].items()
    }
    if "selected_memory_words" in associations:
        lines["selected_memory_words"] = [f"{w} ({weight:.2f})" for w, weight in view["memory_words"]]
    return lines


GENERATION_COUNTS = ("num_beams", "num_return_sequences", "max_new_tokens", "num_beam_groups")
GENERATION_RANGES = {  # name: (lowest, highest, whether the lowest is allowed)
    "top_p": (0.0, 1.0, False), "typical_p": (0.0, 1.0, False), "min_p": (0.0, 1.0, True),
    "temperature": (0.0, None, False), "repetition_penalty": (0.0, None, False),
}
GENERATION_WHOLE = ("top_k", "no_repeat_ngram_size", "min_new_tokens")  # whole numbers >= 0


def check_generate_kwargs(generate_kwargs: Mapping[str, Any], prefix: str = "") -> None:
    """Raise a `ValueError` naming the argument (as `prefix + name`: `--top_p` for the scripts) when a setting of
    `generate()` is out of range: a count that is not a whole number >= 1 (0 beams would fail deep inside
    generation), a sampling setting outside its range (`top_p` 1.5 would be accepted and silently mean 1)."""
    for name in GENERATION_COUNTS:
        value = generate_kwargs.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{prefix}{name} must be a whole number >= 1, got {value!r}")
    for name in GENERATION_WHOLE:
        value = generate_kwargs.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{prefix}{name} must be a whole number >= 0, got {value!r}")
    for name, (low, high, low_allowed) in GENERATION_RANGES.items():
        value = generate_kwargs.get(name)
        if value is None:
            continue
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value < low or (value == low and not low_allowed) or (high is not None and value > high)):
            bounds = f"{'[' if low_allowed else '('}{low:g}, {high:g}]" if high is not None else f"> {low:g}"
            raise ValueError(f"{prefix}{name} must be {'in ' if high is not None else ''}{bounds}, got {value!r}")


def has_situation(sample: Mapping[str, Any]) -> bool:
    """True when a sample has a situation to read (a non-blank `situation`, or `situation_words`)."""
    words = sample.get("situation_words")
    if words is not None:
        return len(words) > 0
    return bool(str(sample.get("situation") or "").strip())


def prediction_collator(model, tokenizer: PreTrainedTokenizerBase,
                        length_limits: Optional[Mapping[str, Optional[int]]] = None) -> IAMMDataCollator:
    """The collator :func:`predict` and the pipeline use: the model's saved length limits
    (`config.length_limits`, else :data:`~modeling_iamm.collator.DEFAULT_LENGTH_LIMITS`), each replaced by
    `length_limits[name]` when given (None or 0: no limit), reporting per sample what it cut."""
    limits = resolve_length_limits(getattr(model.config, "length_limits", None), length_limits)
    return IAMMDataCollator(tokenizer, relation_names=model.config.relation_names, return_truncation=True, **limits)


def check_model_tokenizer(model, tokenizer: PreTrainedTokenizerBase) -> None:
    """The tokenizer check of the scripts (:func:`~modeling_iamm.tokenization.check_tokenizer`: vocabulary size,
    special-token ids, vocabulary fingerprint), with a remedy worded for Python callers."""
    check_tokenizer(tokenizer, model.config, remedy=TOKENIZER_REMEDY)


@dataclass
class BatchPrediction:
    """What one collated batch gives: its tensors (on the model's device), the encoder outputs, and per sample
    the predicted emotion label, the generated response (copied OOV words as text; a list of them with
    `num_return_sequences > 1`), the associated words and (with a collator that reports them) what the length
    limits cut."""

    tensors: Dict[str, Any]
    encoder_outputs: Any
    emotions: List[str]
    responses: List[Any]
    associations: Optional[List[Dict[str, Any]]]
    truncated: Optional[List[Dict[str, int]]] = None


@torch.no_grad()
def predict_batch(model, tokenizer: PreTrainedTokenizerBase, collator: IAMMDataCollator, samples: List[Dict[str, Any]],
                  with_associations: bool = True, use_situation: Optional[bool] = None,
                  **generate_kwargs: Any) -> BatchPrediction:
    """Encode a batch once, then predict the emotion and generate from the same encoder outputs. `use_situation=False`
    runs the whole batch without its situations (see `IAMMEncoderModel.forward`)."""
    check_generate_kwargs(generate_kwargs)
    batch = collator(samples)
    truncated = batch.pop("truncated", None)
    device = next(model.parameters()).device
    tensors = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    encoder_kwargs = {} if use_situation is None else {"use_situation": use_situation}
    encoder_outputs = model.get_encoder()(
        **{k: v for k, v in tensors.items() if k in IAMM_ENCODER_INPUTS}, output_associations=with_associations,
        **encoder_kwargs,
    )
    generated = model.generate(**tensors, encoder_outputs=encoder_outputs, **generate_kwargs)
    id2label = model.config.id2label
    n = generate_kwargs.get("num_return_sequences") or 1  # generate() returns the n sequences of a sample together
    texts = [decode_extended(row[1:].tolist(), tokenizer, batch["oov_words"][r // n]) for r, row in enumerate(generated)]
    return BatchPrediction(
        tensors=tensors,
        encoder_outputs=encoder_outputs,
        emotions=[id2label[i] for i in encoder_outputs.emotion_logits.argmax(-1).tolist()],
        responses=texts if n == 1 else [texts[i * n:(i + 1) * n] for i in range(len(samples))],
        associations=(decode_associations(encoder_outputs.associations, batch, tokenizer, model.config)
                      if with_associations else None),
        truncated=truncated,
    )


HEADS = ("context", "situation", "memory", "knowledge")
"""The emotion aggregation heads (Eq. 20-24), by the name of the encoding each one pools."""


@dataclass
class DialoguePrediction:
    """One dialogue's prediction: the emotion, its logits (the product of the heads, Eq. 25) and each active head's
    logits (CPU, float32), the response, the associated words, `situation` (:data:`WITH_SITUATION` or
    :data:`WITHOUT_SITUATION`) and `truncated` (`{length limit: words dropped}`, turns for `max_context_turns`; None
    with a collator made without `return_truncation`)."""

    emotion: str
    emotion_logits: torch.Tensor
    head_logits: Dict[str, torch.Tensor]
    response: Any
    associations: Optional[Dict[str, Any]]
    situation: str
    truncated: Optional[Dict[str, int]] = None


def predict_dialogues(model, tokenizer: PreTrainedTokenizerBase, collator: IAMMDataCollator,
                      samples: List[Dict[str, Any]], with_associations: bool = True,
                      **generate_kwargs: Any) -> List[DialoguePrediction]:
    """Predict for a batch of samples, each dialogue with its situation when it has one, and without the situation
    (the model's `use_situation=False` mode: no situation head, no utterance-situation pairs, no situation
    knowledge) when it has none: an empty text would reach the situation head as a constant input that favours one
    label. The two kinds run as separate sub-batches, so a dialogue gets the same prediction in any batch."""
    reads = bool(model.config.use_situation)
    groups = {True: [i for i, s in enumerate(samples) if reads and has_situation(s)]}
    groups[False] = [i for i in range(len(samples)) if i not in set(groups[True])]
    results: List[Optional[DialoguePrediction]] = [None] * len(samples)
    for with_situation, indices in groups.items():
        if not indices:
            continue
        prediction = predict_batch(model, tokenizer, collator, [samples[i] for i in indices], with_associations,
                                   use_situation=None if with_situation or not reads else False, **generate_kwargs)
        out = prediction.encoder_outputs
        emotion_logits = out.emotion_logits.float().cpu()
        heads = {head: logits.float().cpu() for head in HEADS
                 if (logits := getattr(out, f"{head}_emotion_logits", None)) is not None}
        for row, i in enumerate(indices):
            results[i] = DialoguePrediction(
                emotion=prediction.emotions[row],
                emotion_logits=emotion_logits[row],
                head_logits={head: logits[row] for head, logits in heads.items()},
                response=prediction.responses[row],
                associations=prediction.associations[row] if prediction.associations is not None else None,
                situation=WITH_SITUATION if with_situation else WITHOUT_SITUATION,
                truncated=prediction.truncated[row] if prediction.truncated is not None else None,
            )
    return results


def predict(
    model,
    tokenizer: PreTrainedTokenizerBase,
    samples: Iterable[Dialogue],
    collator: Optional[IAMMDataCollator] = None,
    batch_size: int = 16,
    with_associations: bool = True,
    length_limits: Optional[Mapping[str, Optional[int]]] = None,
    **generate_kwargs: Any,
) -> Iterator[Dict[str, Any]]:
    """Yield, per sample: the predicted emotion, the generated response and (optionally) the associated words.

    `samples` are ED samples (:func:`modeling_iamm.build_samples`) or dialogues of your own: a list of utterances
    (`["I lost my job today."]`) or `{"turns": [...], "situation": "..."}` (see :func:`dialogue_sample`).
    `generate_kwargs` go to `model.generate` (default: greedy, the model's `max_new_tokens`); with
    `num_return_sequences > 1`, `response` is a list.

    The tokenizer must be the model's (checked as the scripts check it). Texts are cut to the model's saved length
    limits (`config.length_limits`; `length_limits={"max_utterance_length": 500, ...}` changes one, None lifts it);
    a record's `truncated` says what was cut (`{limit: words dropped}`, turns for `max_context_turns`). A dialogue
    without a situation runs without the situation head (`situation`: `"without_situation"`, see
    :func:`predict_dialogues`). `associations["selected_memory_words"]` lists each word once, special tokens left
    out (:func:`distinct_words`).
    """
    check_model_tokenizer(model, tokenizer)
    check_generate_kwargs(generate_kwargs)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if collator is None:
        collator = prediction_collator(model, tokenizer, length_limits)
    elif length_limits is not None:
        raise ValueError("pass length_limits or a collator (which has its own limits), not both")
    model.eval()
    return _records(model, tokenizer, samples, collator, batch_size, with_associations, generate_kwargs)


def _records(model, tokenizer: PreTrainedTokenizerBase, samples: Iterable[Dialogue], collator: IAMMDataCollator,
             batch_size: int, with_associations: bool, generate_kwargs: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """:func:`predict`'s records, batch by batch (its checks done)."""
    chunk: List[Dict[str, Any]] = []

    def run(chunk):
        predictions = predict_dialogues(model, tokenizer, collator, chunk, with_associations, **generate_kwargs)
        for sample, prediction in zip(chunk, predictions):
            record = {"conv_id": sample.get("conv_id"), "emotion": prediction.emotion,
                      "response": prediction.response, "situation": prediction.situation,
                      "truncated": prediction.truncated}
            if prediction.associations is not None:
                associations = dict(prediction.associations)
                if "selected_memory_words" in associations:
                    associations["selected_memory_words"] = distinct_words(associations["selected_memory_words"])
                record["associations"] = associations
            yield record

    for index, sample in enumerate(samples):
        chunk.append(as_sample(sample, index))
        if len(chunk) == batch_size:
            yield from run(chunk)
            chunk = []
    if chunk:
        yield from run(chunk)
