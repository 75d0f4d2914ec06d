import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

from modeling_iamm import (RELATIONS, IAMMDataCollator, KnowledgeArguments, KnowledgeCache, attach_knowledge,
                           build_samples, generate_knowledge, knowledge_events)
from modeling_iamm.knowledge import knowledge_text


def tiny_comet(words):
    """A randomly initialised BART speaking COMET's query format, with a locally built tokenizer."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "[GEN]"]
    vocab = {t: i for i, t in enumerate(specials + list(RELATIONS) + sorted(set(words) - set(specials)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", pad_token="<pad>",
                                        eos_token="</s>", unk_token="<unk>")
    config = BartConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, max_position_embeddings=128, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2, decoder_start_token_id=2, forced_bos_token_id=None)
    torch.manual_seed(0)
    return BartForConditionalGeneration(config).eval(), tokenizer


class CountingModel(torch.nn.Module):
    """Wraps generate() to count queries, and to crash after `crash_after` calls (a killed run)."""

    def __init__(self, model, crash_after=None):
        super().__init__()
        self.model, self.crash_after, self.queries, self.calls = model, crash_after, [], 0

    def generate(self, **inputs):
        if self.crash_after is not None and self.calls >= self.crash_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.queries.append(inputs["input_ids"].shape[0])
        return self.model.generate(**inputs)


@pytest.fixture(scope="module")
def events(sample_conversations):
    convs = sample_conversations["valid"].select(range(6))
    return convs, knowledge_events(convs)


ARGS = KnowledgeArguments(num_beams=2, num_return_sequences=2, max_new_tokens=3, batch_size=10, device="cpu")


def test_events_are_deduplicated(events):
    convs, evs = events
    total = sum(1 + len(c["utterances"]) for c in convs)
    assert len(evs) == len(set(evs)) and len(evs) < total  # situation == first utterance in ED, often


def test_generation_resumes_after_interruption_without_recomputing(tmp_path, events):
    convs, evs = events
    model, tok = tiny_comet(" ".join(evs).split())
    cache_path = str(tmp_path / "knowledge.jsonl")
    per_call = ARGS.batch_size // len(RELATIONS)

    crashing = CountingModel(model, crash_after=2)
    with pytest.raises(KeyboardInterrupt):
        generate_knowledge(evs, crashing, tok, cache_path, ARGS, progress=False)
    partial = KnowledgeCache(cache_path)
    assert len(partial) == 2 * per_call  # both finished batches survived the kill

    resumed = CountingModel(model)
    cache = generate_knowledge(evs + evs[:3], resumed, tok, cache_path, ARGS, progress=False)
    assert sum(resumed.queries) == (len(evs) - 2 * per_call) * len(RELATIONS)  # nothing recomputed
    assert len(cache) == len(evs) and set(cache.entries) == set(evs)
    lines = [json.loads(l) for l in open(cache_path)]
    assert len(lines) == len(evs)  # no duplicated rows
    entry = cache.entries[evs[0]]
    assert list(entry) == list(RELATIONS) and all(len(v) == 2 for v in entry.values())

    again = CountingModel(model)
    generate_knowledge(evs, again, tok, cache_path, ARGS, progress=False)
    assert again.calls == 0


def test_a_line_cut_by_a_kill_is_regenerated(tmp_path, events):
    _, evs = events
    model, tok = tiny_comet(" ".join(evs).split())
    cache_path = tmp_path / "k.jsonl"
    generate_knowledge(evs[:4], model, tok, str(cache_path), ARGS, progress=False)
    full = cache_path.read_text()
    cache_path.write_text(full[: len(full) - 15])  # the last line lost its end
    counting = CountingModel(model)
    cache = generate_knowledge(evs[:4], counting, tok, str(cache_path), ARGS, progress=False)
    assert sum(counting.queries) == len(RELATIONS)  # exactly the cut event
    assert len(cache) == 4 and len(cache_path.read_text().splitlines()) == 4

    cache_path.write_text("{broken\n" + cache_path.read_text())
    with pytest.raises(ValueError, match=r"k.jsonl, line 1: corrupt knowledge cache entry"):
        KnowledgeCache(str(cache_path))


def test_attach_knowledge_feeds_the_collator(events, word_tokenizer):
    convs, evs = events
    cache = {e: {r: [f"{r} of it", "none", f"{r} of it"] for r in RELATIONS} for e in evs}
    samples = attach_knowledge(build_samples(convs), cache)
    s = samples[0]
    assert s["situation_knowledge"] == [f"{r} of it" for r in RELATIONS]
    assert len(s["context_knowledge"]) == len(s["context"])
    batch = IAMMDataCollator(word_tokenizer)(list(samples.select(range(4))))
    assert batch["context_knowledge_ids"].shape[:3] == (4, batch["context_ids"].shape[1], len(RELATIONS))
    with pytest.raises(KeyError, match="run scripts/generate_knowledge.py"):
        attach_knowledge(build_samples(convs), {})


def test_knowledge_text():
    assert knowledge_text(["to eat", "none", " to eat", "", "hungry"]) == "to eat, hungry"
