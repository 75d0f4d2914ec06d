"""Running a trained IAMM on samples: emotion, response and associated words, as plain Python records."""

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import torch
from transformers import PreTrainedTokenizerBase

from .collator import IAMMDataCollator, decode_extended
from .modeling_iamm import IAMM_ENCODER_INPUTS, decode_associations



Dialogue = Union[Sequence[str], Dict[str, Any]]
"""A dialogue to predict for: its utterances (oldest first, the last one the speaker's), or a dict with `turns`
(or `context`), optional `situation` and optional `roles`."""


def dialogue_sample(turns: Sequence[str], situation: str = "", roles: Optional[Sequence[str]] = None,
                    conv_id: Optional[str] = None) -> Dict[str, Any]:
    """Turn a dialogue of your own into an IAMM sample (what :func:`predict` and the collator take).

    Args:
        turns: the utterances, oldest first; the last one is the speaker's (the model answers it as the listener).
        situation: the speaker's situation text (ED's `prompt`); empty if unknown.
        roles: `"speaker"`/`"listener"` per utterance; default: alternating, ending with `"speaker"`.
        conv_id: an id carried into the prediction record.

    The sample has no gold response and no gold emotion (`emotion_id` is -100), so it is for prediction only.
    """
    if isinstance(turns, str):
        raise TypeError("turns must be a list of utterances, not one string: wrap it as [text]")
    turns = [str(t) for t in turns]
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
    return {"conv_id": conv_id, "situation": situation or "", "context": turns, "context_roles": roles,
            "target": "", "emotion": "", "emotion_id": -100}


def as_sample(dialogue: Dialogue, index: int = 0) -> Dict[str, Any]:
    """A :data:`Dialogue` (list of turns or dict) or an ED sample as an IAMM sample."""
    if isinstance(dialogue, dict):
        if "context_roles" in dialogue:  # already a sample (from build_samples or dialogue_sample)
            return dialogue
        turns = dialogue.get("turns", dialogue.get("context"))
        if turns is None:
            raise KeyError(f"dialogue {index}: a dict needs 'turns' (the utterances); got keys {sorted(dialogue)}")
        return dialogue_sample(turns, dialogue.get("situation", ""), dialogue.get("roles"),
                               dialogue.get("conv_id", str(index)))
    return dialogue_sample(dialogue, conv_id=str(index))


def compact_associations(associations: Dict[str, Any], keywords_per_pair: int = 3,
                         words_per_keyword: int = 3) -> Dict[str, Any]:
    """A short view of one dialogue's associated words (`decode_associations` output): per pair type the strongest
    distinct keywords, each with its best associated words and weights; and the memory words the selector kept."""
    view: Dict[str, Any] = {"keywords": {}, "memory_words": []}
    for pair, entries in associations.items():
        if pair == "selected_memory_words":
            view["memory_words"] = [[w, weight] for w, weight in entries]
            continue
        seen, kept = set(), []
        for entry in sorted(entries, key=lambda e: -e["keyword_weight"]):
            if entry["keyword"] in seen:
                continue
            seen.add(entry["keyword"])
            kept.append({"keyword": entry["keyword"], "weight": entry["keyword_weight"],
                         "associated": [[w, weight] for w, weight in entry["associated"][:words_per_keyword]]})
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


@dataclass
class BatchPrediction:
    """What one collated batch gives: its tensors (on the model's device), the encoder outputs, and per sample
    the predicted emotion label, the generated response (copied OOV words as text; a list of them with
    `num_return_sequences > 1`) and the associated words."""

    tensors: Dict[str, Any]
    encoder_outputs: Any
    emotions: List[str]
    responses: List[Any]
    associations: Optional[List[Dict[str, Any]]]


@torch.no_grad()
def predict_batch(model, tokenizer: PreTrainedTokenizerBase, collator: IAMMDataCollator, samples: List[Dict[str, Any]],
                  with_associations: bool = True, **generate_kwargs: Any) -> BatchPrediction:
    """Encode a batch once, then predict the emotion and generate from the same encoder outputs."""
    batch = collator(samples)
    device = next(model.parameters()).device
    tensors = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    encoder_outputs = model.get_encoder()(
        **{k: v for k, v in tensors.items() if k in IAMM_ENCODER_INPUTS}, output_associations=with_associations
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
    )


def predict(
    model,
    tokenizer: PreTrainedTokenizerBase,
    samples: Iterable[Dialogue],
    collator: Optional[IAMMDataCollator] = None,
    batch_size: int = 16,
    with_associations: bool = True,
    **generate_kwargs: Any,
) -> Iterator[Dict[str, Any]]:
    """Yield, per sample: the predicted emotion, the generated response and (optionally) the associated words.

    `samples` are ED samples (:func:`modeling_iamm.build_samples`) or dialogues of your own: a list of utterances
    (`["I lost my job today."]`) or `{"turns": [...], "situation": "..."}` (see :func:`dialogue_sample`).
    `generate_kwargs` go to `model.generate` (default: greedy, the model's `max_new_tokens`); with
    `num_return_sequences > 1`, `response` is a list.
    """
    collator = collator or IAMMDataCollator(tokenizer, relation_names=model.config.relation_names)
    model.eval()
    chunk: List[Dict[str, Any]] = []

    def run(chunk):
        prediction = predict_batch(model, tokenizer, collator, chunk, with_associations, **generate_kwargs)
        for i, sample in enumerate(chunk):
            record = {"conv_id": sample.get("conv_id"), "emotion": prediction.emotions[i],
                      "response": prediction.responses[i]}
            if prediction.associations is not None:
                record["associations"] = prediction.associations[i]
            yield record

    for index, sample in enumerate(samples):
        chunk.append(as_sample(sample, index))
        if len(chunk) == batch_size:
            yield from run(chunk)
            chunk = []
    if chunk:
        yield from run(chunk)
