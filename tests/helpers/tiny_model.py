"""One tiny IAMM for the model tests (the transformers tester pattern): a small config and synthetic batches.

The batches are built from random ids, not from the data pipeline, so a data or tokenizer bug cannot fail every
model test; they follow the collator's layout (see `modeling_iamm.collator`): `[CLS]` first in every utterance,
situation and knowledge text, `[SPK]`/`[LSN]` roles ending with the speaker, context words outside the
vocabulary as extended ids `V + j` that the labels may copy, -100 on padded labels.
"""

from typing import Any, Dict, List, Optional, Sequence

import torch

from modeling_iamm import IAMMConfig, IAMMForConditionalGeneration

PAD, UNK, SOS, EOS, CLS, SPK, LSN = range(7)
FIRST_WORD = 7


class IAMMModelTester:
    """Builds the tiny config, models and synthetic batches the model tests share.

    Args:
        vocab_size: words of the tiny vocabulary (7 special tokens included).
        utterance_length / situation_length / knowledge_length / target_length: longest texts, words only.
        config_overrides: IAMMConfig fields on top of the tiny defaults.
    """

    def __init__(self, vocab_size: int = 48, utterance_length: int = 7, situation_length: int = 6,
                 knowledge_length: int = 4, target_length: int = 6, **config_overrides: Any):
        self.vocab_size = vocab_size
        self.utterance_length = utterance_length
        self.situation_length = situation_length
        self.knowledge_length = knowledge_length
        self.target_length = target_length
        self.config_overrides = config_overrides

    def get_config(self, **overrides: Any) -> IAMMConfig:
        kwargs = dict(vocab_size=self.vocab_size, hidden_size=32, attention_head_dim=8, intermediate_size=16,
                      association_head_dim=8, num_keywords=3, num_associated_words=4, num_memory_words=3)
        kwargs.update(self.config_overrides)
        kwargs.update(overrides)
        return IAMMConfig(**kwargs)

    def create_model(self, seed: int = 0, **overrides: Any) -> IAMMForConditionalGeneration:
        torch.manual_seed(seed)
        return IAMMForConditionalGeneration(self.get_config(**overrides))

    def prepare_batch(self, turns: Sequence[int] = (1, 3, 5), seed: int = 0, knowledge: bool = True,
                      num_relations: int = 5, oov_rate: float = 0.15) -> Dict[str, Any]:
        """A collated batch with `turns[b]` context utterances for sample b (odd numbers: ED contexts end with the
        speaker). Sample b's content depends only on (seed, b, its turns), not on the other samples of the batch,
        so a sample can be run alone and inside a batch."""
        return self.collate(self.make_samples(turns, seed, knowledge, num_relations, oov_rate))

    def make_samples(self, turns: Sequence[int] = (1, 3, 5), seed: int = 0, knowledge: bool = True,
                     num_relations: int = 5, oov_rate: float = 0.15) -> List[Dict[str, Any]]:
        """The samples of `prepare_batch` before collation (to batch them in other ways with `collate`)."""
        return [self._sample(seed * 1000 + b, n, knowledge, num_relations, oov_rate) for b, n in enumerate(turns)]

    # ---- samples ------------------------------------------------------------------------------------------------
    def _words(self, rng: torch.Generator, lo: int, hi: int) -> List[int]:
        n = int(torch.randint(lo, hi + 1, (1,), generator=rng))
        return torch.randint(FIRST_WORD, self.vocab_size, (n,), generator=rng).tolist()

    def _sample(self, seed: int, n_turns: int, knowledge: bool, R: int, oov_rate: float) -> Dict[str, Any]:
        rng = torch.Generator().manual_seed(seed)
        utterances, oov_slots = [], []
        for _ in range(n_turns):
            words = self._words(rng, 2, self.utterance_length)
            # a word outside the vocabulary: its id reads [UNK]; extended id V + j (j: its index in the sample)
            oov = (torch.rand(len(words), generator=rng) < oov_rate).tolist()
            utterances.append(words)
            oov_slots.append(oov)
        sample: Dict[str, Any] = {
            "utterances": utterances,
            "oov": oov_slots,
            "situation": self._words(rng, 2, self.situation_length),
            "target": self._words(rng, 2, self.target_length),
            "copy_target": bool(torch.rand(1, generator=rng) < 0.5),
            "emotion": int(torch.randint(32, (1,), generator=rng)),
        }
        if knowledge:
            sample["situation_knowledge"] = [self._words(rng, 1, self.knowledge_length) for _ in range(R)]
            sample["context_knowledge"] = [[self._words(rng, 1, self.knowledge_length) for _ in range(R)]
                                           for _ in range(n_turns)]
        return sample

    def collate(self, samples: List[Dict[str, Any]]) -> Dict[str, Any]:
        B, V = len(samples), self.vocab_size
        knowledge = "situation_knowledge" in samples[0]
        R = len(samples[0]["situation_knowledge"]) if knowledge else 0
        T = max(len(s["utterances"]) for s in samples)
        L = 1 + max(len(u) for s in samples for u in s["utterances"])
        context_ids = torch.full((B, T, L), PAD)
        context_ids_extended = torch.full((B, T, L), PAD)
        role_ids = torch.full((B, T), PAD)
        targets, oov_words = [], []
        for b, s in enumerate(samples):
            n = len(s["utterances"])
            n_oov = 0
            for t, (words, oov) in enumerate(zip(s["utterances"], s["oov"])):
                ids = [CLS] + [UNK if o else w for w, o in zip(words, oov)]
                extended = [CLS]
                for w, o in zip(words, oov):
                    extended.append(V + n_oov if o else w)
                    n_oov += o
                context_ids[b, t, : len(ids)] = torch.tensor(ids)
                context_ids_extended[b, t, : len(ids)] = torch.tensor(extended)
                role_ids[b, t] = SPK if (n - 1 - t) % 2 == 0 else LSN
            target = list(s["target"])
            if s["copy_target"] and n_oov:
                target[0] = V  # the first OOV word of the context, copied
            targets.append(target + [EOS])
            oov_words.append([f"oov{j}" for j in range(n_oov)])
        situation_ids = self._pad([[CLS] + s["situation"] for s in samples], PAD)
        labels = self._pad(targets, -100)
        decoder_input_ids = torch.cat([torch.full((B, 1), SOS), labels[:, :-1]], 1)
        decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids == -100, PAD)
        decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids >= V, UNK)
        batch: Dict[str, Any] = {
            "context_ids": context_ids,
            "context_mask": context_ids != PAD,
            "context_ids_extended": context_ids_extended,
            "role_ids": role_ids,
            "situation_ids": situation_ids,
            "situation_mask": situation_ids != PAD,
            "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": decoder_input_ids != PAD,
            "labels": labels,
            "emotion_labels": torch.tensor([s["emotion"] for s in samples]),
        }
        if knowledge:
            Lk = 1 + self.knowledge_length
            sit = torch.full((B, R, Lk), PAD)
            ctx = torch.full((B, T, R, Lk), PAD)
            for b, s in enumerate(samples):
                for r, words in enumerate(s["situation_knowledge"]):
                    sit[b, r, : 1 + len(words)] = torch.tensor([CLS] + words)
                for t, rels in enumerate(s["context_knowledge"]):
                    for r, words in enumerate(rels):
                        ctx[b, t, r, : 1 + len(words)] = torch.tensor([CLS] + words)
            batch.update(situation_knowledge_ids=sit, situation_knowledge_mask=sit != PAD,
                         context_knowledge_ids=ctx, context_knowledge_mask=ctx != PAD)
        batch["oov_words"] = oov_words
        return batch

    @staticmethod
    def _pad(rows: List[List[int]], value: int) -> torch.Tensor:
        out = torch.full((len(rows), max(len(r) for r in rows)), value)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out


GENERATION_EXCLUDED = ("labels", "decoder_input_ids", "decoder_attention_mask", "emotion_labels")


def generation_inputs(batch: Dict[str, Any], drop: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The batch without the training-only keys (what a caller passes to `generate`)."""
    drop = GENERATION_EXCLUDED if drop is None else drop
    return {k: v for k, v in batch.items() if k not in drop}
