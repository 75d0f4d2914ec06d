"""Running a trained IAMM on samples: emotion, response and associated words, as plain Python records."""

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional

import torch
from transformers import PreTrainedTokenizerBase

from .collator import IAMMDataCollator, decode_extended
from .modeling_iamm import IAMM_ENCODER_INPUTS, decode_associations

GENERATION_EXCLUDE = ("labels", "decoder_input_ids", "decoder_attention_mask", "emotion_labels")


def top_associations(associations: Dict[str, Any], per_pair: int = 3) -> Dict[str, List[str]]:
    """A short view of `extract_associations` output: per pair type, the strongest keywords with their best
    associated words, as `"keyword -> word1, word2 (weight)"` strings; and the selected memory words."""
    view: Dict[str, List[str]] = {}
    for pair, entries in associations.items():
        if pair == "selected_memory_words":
            view[pair] = [f"{w} ({weight:.2f})" for w, weight in entries]
            continue
        best = sorted(entries, key=lambda e: -e["keyword_weight"])
        seen, lines = set(), []
        for e in best:
            if e["keyword"] in seen:
                continue
            seen.add(e["keyword"])
            words = ", ".join(w for w, _ in e["associated"][:3])
            lines.append(f"{e['keyword']} -> {words} ({e['keyword_weight']:.2f})")
            if len(lines) == per_pair:
                break
        view[pair] = lines
    return view


@dataclass
class BatchPrediction:
    """What one collated batch gives: its tensors (on the model's device), the encoder outputs, and per sample
    the predicted emotion label, the generated response (copied OOV words as text) and the associated words."""

    tensors: Dict[str, Any]
    encoder_outputs: Any
    emotions: List[str]
    responses: List[str]
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
    generated = model.generate(**{k: v for k, v in tensors.items() if k not in GENERATION_EXCLUDE},
                               encoder_outputs=encoder_outputs, **generate_kwargs)
    id2label = model.config.id2label
    return BatchPrediction(
        tensors=tensors,
        encoder_outputs=encoder_outputs,
        emotions=[id2label[i] for i in encoder_outputs.emotion_logits.argmax(-1).tolist()],
        responses=[decode_extended(generated[i, 1:].tolist(), tokenizer, batch["oov_words"][i])
                   for i in range(len(samples))],
        associations=(decode_associations(encoder_outputs.associations, tensors, tokenizer, model.config)
                      if with_associations else None),
    )


def predict(
    model,
    tokenizer: PreTrainedTokenizerBase,
    samples: Iterable[Dict[str, Any]],
    collator: Optional[IAMMDataCollator] = None,
    batch_size: int = 16,
    with_associations: bool = True,
    **generate_kwargs: Any,
) -> Iterator[Dict[str, Any]]:
    """Yield, per sample: the predicted emotion, the generated response and (optionally) the associated words.

    `generate_kwargs` go to `model.generate` (default: greedy, the model's `max_new_tokens`).
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

    for sample in samples:
        chunk.append(sample)
        if len(chunk) == batch_size:
            yield from run(chunk)
            chunk = []
    if chunk:
        yield from run(chunk)
