"""Running a trained IAMM on samples: emotion, response and associated words, as plain Python records."""

from typing import Any, Dict, Iterable, Iterator, List, Optional

import torch
from transformers import PreTrainedTokenizerBase

from .collator import IAMMDataCollator, decode_extended
from .modeling_iamm import decode_associations

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


@torch.no_grad()
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
    device = next(model.parameters()).device
    id2label = model.config.id2label
    batch_samples: List[Dict[str, Any]] = []

    def run(chunk):
        batch = collator(chunk)
        tensors = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        inputs = {k: v for k, v in tensors.items() if k not in GENERATION_EXCLUDE}
        encoder_outputs = model.get_encoder()(
            **{k: v for k, v in inputs.items() if k != "oov_words"}, output_associations=with_associations
        )
        generated = model.generate(**inputs, encoder_outputs=encoder_outputs, **generate_kwargs)
        emotions = encoder_outputs.emotion_logits.argmax(-1).tolist()
        associations = None
        if with_associations:
            associations = decode_associations(encoder_outputs.associations, tensors, tokenizer, model.config)
        for i, sample in enumerate(chunk):
            record = {
                "conv_id": sample.get("conv_id"),
                "emotion": id2label[emotions[i]],
                "response": decode_extended(generated[i, 1:].tolist(), tokenizer, batch["oov_words"][i]),
            }
            if associations is not None:
                record["associations"] = associations[i]
            yield record

    for sample in samples:
        batch_samples.append(sample)
        if len(batch_samples) == batch_size:
            yield from run(batch_samples)
            batch_samples = []
    if batch_samples:
        yield from run(batch_samples)

