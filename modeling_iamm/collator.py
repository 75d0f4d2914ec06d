"""Samples -> padded tensors for IAMM, with the extended (copy) vocabulary of See et al. (2017).

A feature is a sample of :func:`modeling_iamm.data.build_samples` (raw text), optionally already split into
words by :func:`encode_samples` (faster: done once instead of every batch), optionally with knowledge
columns (:mod:`modeling_iamm.knowledge`). The batch (B samples, T = most context utterances in the batch,
L/Ls/Lk/Ly = longest utterance/situation/knowledge text/target, R relations) holds:

=============================  ================  =========================================================
key                            shape             content
=============================  ================  =========================================================
`context_ids`                  (B, T, L) long    `[CLS]` + words of each context utterance; `[PAD]`=0 after
`context_mask`                 (B, T, L) bool    True on real tokens (a padded turn is all False)
`context_ids_extended`         (B, T, L) long    like `context_ids`, but a word outside the vocabulary gets
                                                 id `V + j`, j its index in that sample's `oov_words`
`role_ids`                     (B, T) long       `[SPK]`/`[LSN]` token id of each utterance, `[PAD]` on padded turns
`situation_ids`/`_mask`        (B, Ls)           `[CLS]` + situation words
`situation_knowledge_ids`/`_mask`  (B, R, Lk)    `[CLS]` + knowledge text of each relation for the situation
`context_knowledge_ids`/`_mask`    (B, T, R, Lk) the same for every context utterance (only with knowledge)
`decoder_input_ids`            (B, Ly) long      `[SOS]` + target words (vocabulary ids), `[PAD]` after
`decoder_attention_mask`       (B, Ly) bool      True on real decoder inputs
`labels`                       (B, Ly) long      target words + `[EOS]` in EXTENDED ids (a context OOV word is
                                                 copyable), -100 on padding
`emotion_labels`               (B,) long         emotion id (authors' order)
`oov_words`                    list of lists     per sample, the out-of-vocabulary context words, in id order
=============================  ================  =========================================================
"""

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

try:  # type hints only: the collator also runs as a checkpoint's remote code, where `datasets` may be absent
    from datasets import Dataset, DatasetDict
except ImportError:  # pragma: no cover
    Dataset = DatasetDict = Any
from transformers import PreTrainedTokenizerBase

from .configuration_iamm import RELATIONS
from .text import word_tokenize
from .tokenization import ROLE_TOKENS, check_tokenizer

IGNORE_INDEX = -100
logger = logging.getLogger(__name__)

# Length limits (in words, [CLS]/[EOS] not counted) that every script applies unless told otherwise. They cover
# EmpatheticDialogues with room to spare: its longest utterance has 145 words (valid; train: 137), its longest
# situation 149, its longest conversation 8 utterances (so at most 7 context turns), as split by
# `modeling_iamm.text.word_tokenize`; COMET generations are a few words. They exist to bound memory on other data
# (one 5,000-word utterance makes every (B, T, L) tensor of its batch that long).
LENGTH_LIMIT_NAMES = ("max_context_turns", "max_utterance_length", "max_situation_length", "max_knowledge_length",
                      "max_target_length")
DEFAULT_LENGTH_LIMITS: Dict[str, int] = {
    "max_context_turns": 16,
    "max_utterance_length": 200,
    "max_situation_length": 200,
    "max_knowledge_length": 50,
    "max_target_length": 200,
}


def resolve_length_limits(saved: Optional[Mapping[str, Optional[int]]] = None,
                          overrides: Optional[Mapping[str, Optional[int]]] = None) -> Dict[str, Optional[int]]:
    """The length limits to apply: `overrides` (a limit given as None or 0: no limit), else `saved` (a model's
    `config.length_limits`, written by the training scripts), else :data:`DEFAULT_LENGTH_LIMITS`. An unknown
    name in `overrides` is an error."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(LENGTH_LIMIT_NAMES))
    if unknown:
        raise ValueError(f"unknown length limit {unknown[0]!r}: the limits are {', '.join(LENGTH_LIMIT_NAMES)}")
    saved = dict(saved or {})
    limits: Dict[str, Optional[int]] = {}
    for name in LENGTH_LIMIT_NAMES:
        if name in overrides:
            value = overrides[name]
        else:
            value = saved[name] if name in saved else DEFAULT_LENGTH_LIMITS[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"length limit {name} must be a whole number >= 1, or None/0 for no limit, got {value!r}")
        limits[name] = value or None
    return limits


def _words_of_batch(batch: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
    out: Dict[str, List[Any]] = {
        "situation_words": [word_tokenize(s) for s in batch["situation"]],
        "context_words": [[word_tokenize(u) for u in ctx] for ctx in batch["context"]],
        "target_words": [word_tokenize(t) for t in batch["target"]],
    }
    if "situation_knowledge" in batch:
        out["situation_knowledge_words"] = [[word_tokenize(k) for k in rels] for rels in batch["situation_knowledge"]]
        out["context_knowledge_words"] = [
            [[word_tokenize(k) for k in rels] for rels in ctx] for ctx in batch["context_knowledge"]
        ]
    return out


def encode_samples(samples: Dataset | DatasetDict, num_proc: Optional[int] = None) -> Dataset | DatasetDict:
    """Split every text field of the samples into words once (adds `*_words` columns the collator reads)."""
    return samples.map(_words_of_batch, batched=True, num_proc=num_proc, desc="Splitting samples into words")


def _pad(rows: Sequence[Sequence[int]], value: int, length: Optional[int] = None) -> torch.Tensor:
    length = max((len(r) for r in rows), default=0) if length is None else length
    out = torch.full((len(rows), max(length, 1)), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


@dataclass
class IAMMDataCollator:
    """Pads IAMM samples into tensors (see the module docstring for every key).

    Args:
        tokenizer: the word-level tokenizer (:func:`modeling_iamm.build_tokenizer`).
        max_context_turns: keep only the last N context utterances (None: all; ED has at most 7).
        max_utterance_length / max_situation_length / max_knowledge_length / max_target_length: keep at most
            this many words of each text (the first ones), `[CLS]`/`[EOS]` not counted. None: no limit.
        relation_names: knowledge relations, in the model's order.
        return_oov_words: include the per-sample OOV word lists (needed to decode copied words back to text).
        return_truncation: include `truncated`, per sample a dict `{limit name: words dropped}` (turns dropped for
            `max_context_turns`; empty when nothing was cut), so that a prediction can say what it did not read.
        pad_to_multiple_of: pad every length (L, Ls, Lk, Ly) up to a multiple of this, so that a few tensor shapes
            cover a whole dataset (what `torch.compile` and CUDA graphs want: fewer recompilations and captures).
            Outputs do not change: the model masks padding and is batch invariant. None: pad to the longest.

    Every cut is counted in `truncated` (texts cut, per limit name; `max_context_turns` counts samples whose oldest
    turns were dropped) and logged as a warning the first time it happens for each limit; :meth:`truncation_report`
    gives the totals. :data:`DEFAULT_LENGTH_LIMITS` are the limits the scripts use.
    """

    tokenizer: PreTrainedTokenizerBase
    max_context_turns: Optional[int] = None
    max_utterance_length: Optional[int] = None
    max_situation_length: Optional[int] = None
    max_knowledge_length: Optional[int] = None
    max_target_length: Optional[int] = None
    relation_names: Sequence[str] = tuple(RELATIONS)
    return_oov_words: bool = True
    return_truncation: bool = False
    pad_to_multiple_of: Optional[int] = None
    truncated: Counter = field(default_factory=Counter, init=False, repr=False)

    def __post_init__(self):
        for name in LENGTH_LIMIT_NAMES:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"IAMMDataCollator: {name} must be >= 1 or None (no limit), got {value}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"IAMMDataCollator: pad_to_multiple_of must be >= 1 or None, got {self.pad_to_multiple_of}")
        check_tokenizer(self.tokenizer)
        self.vocab: Dict[str, int] = self.tokenizer.get_vocab()
        self.vocab_size = len(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id
        self.unk_id = self.tokenizer.unk_token_id
        self.cls_id = self.tokenizer.cls_token_id
        self.sos_id = self.tokenizer.bos_token_id
        self.eos_id = self.tokenizer.eos_token_id
        self.role_ids = {role: self.vocab[token] for role, token in ROLE_TOKENS.items()}

    @property
    def length_limits(self) -> Dict[str, Optional[int]]:
        """The limits this collator applies, by name (None: no limit)."""
        return {name: getattr(self, name) for name in LENGTH_LIMIT_NAMES}

    def _padded(self, length: int) -> int:
        """`length`, rounded up to `pad_to_multiple_of`."""
        m = self.pad_to_multiple_of
        return length if m is None else -(-length // m) * m

    def truncation_report(self) -> Dict[str, int]:
        """How many texts each limit cut so far (turn limit: samples), only the limits that cut something."""
        return {name: n for name, n in self.truncated.items() if n}

    def _count(self, name: str, n: int = 1, cut: Optional[Counter] = None, dropped: int = 0) -> None:
        if self.truncated[name] == 0:
            logger.warning("IAMMDataCollator: truncating to %s=%s (first time; totals are reported at the end)",
                           name, getattr(self, name))
        self.truncated[name] += n
        if cut is not None:
            cut[name] += dropped

    # ---- words -> ids ----------------------------------------------------------------------------------
    def _ids(self, words: Sequence[str], limit: Optional[int], limit_name: Optional[str] = None,
             cut: Optional[Counter] = None) -> List[int]:
        if limit is not None and len(words) > limit:
            if limit_name is not None:
                self._count(limit_name, cut=cut, dropped=len(words) - limit)
            words = words[:limit]
        return [self.vocab.get(w, self.unk_id) for w in words]

    def _cls_ids(self, words: Sequence[str], limit: Optional[int], limit_name: Optional[str] = None,
                 cut: Optional[Counter] = None) -> List[int]:
        return [self.cls_id] + self._ids(words, limit, limit_name, cut)

    @staticmethod
    def _words(feature: Dict[str, Any], name: str, text_key: str):
        words = feature.get(name)
        if words is not None:
            return words
        if text_key not in feature:
            raise KeyError(f"IAMMDataCollator: a sample has neither '{name}' nor '{text_key}'")
        value = feature[text_key]
        if isinstance(value, str):
            return word_tokenize(value)
        if value and isinstance(value[0], str):
            return [word_tokenize(v) for v in value]
        return [[word_tokenize(v) for v in inner] for inner in value]

    def __call__(self, features: List[Dict[str, Any]]) -> Dict[str, Any]:
        B = len(features)
        contexts, roles, situations, targets = [], [], [], []
        cuts = [Counter() for _ in features]  # per sample: words (turns) each limit dropped
        for f, cut in zip(features, cuts):
            ctx = self._words(f, "context_words", "context")
            ctx_roles = list(f["context_roles"])
            if len(ctx) == 0:
                raise ValueError(f"sample {f.get('conv_id', '?')}: the context is empty; a sample needs at least the "
                                 "speaker's utterance")
            if len(ctx) != len(ctx_roles):
                raise ValueError(
                    f"sample {f.get('conv_id', '?')}: {len(ctx)} context utterances but {len(ctx_roles)} context_roles"
                )
            if ctx_roles[-1] != "speaker":
                raise ValueError(
                    f"sample {f.get('conv_id', '?')}: the context ends with a {ctx_roles[-1]!r} turn; IAMM answers "
                    f"the speaker's last utterance as the listener, so the last role must be 'speaker' (drop the "
                    f"listener's last turn, or fix the roles)"
                )
            if self.max_context_turns is not None and len(ctx) > self.max_context_turns:
                self._count("max_context_turns", cut=cut, dropped=len(ctx) - self.max_context_turns)
                ctx, ctx_roles = ctx[-self.max_context_turns :], ctx_roles[-self.max_context_turns :]
            contexts.append(ctx)
            roles.append(ctx_roles)
            situations.append(self._words(f, "situation_words", "situation"))
            targets.append(self._words(f, "target_words", "target"))

        T = max(len(c) for c in contexts)
        L = self._padded(1 + max(len(u[: self.max_utterance_length] if self.max_utterance_length else u)
                                 for c in contexts for u in c))
        context_ids = torch.full((B, T, L), self.pad_id, dtype=torch.long)
        context_ids_extended = torch.full((B, T, L), self.pad_id, dtype=torch.long)
        role_ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        decoder_inputs, labels, oov_words = [], [], []
        for b, (ctx, ctx_roles, target) in enumerate(zip(contexts, roles, targets)):
            oov: Dict[str, int] = {}
            for t, (utterance, role) in enumerate(zip(ctx, ctx_roles)):
                if role not in self.role_ids:
                    raise ValueError(f"sample {features[b].get('conv_id', '?')}: unknown role {role!r}")
                ids = self._cls_ids(utterance, self.max_utterance_length, "max_utterance_length", cuts[b])
                # Extended vocabulary (See et al., 2017): each distinct OOV word of the context gets V + j.
                extended = [self.cls_id] + [
                    i if i != self.unk_id else self.vocab_size + oov.setdefault(w, len(oov))
                    for w, i in zip(utterance, ids[1:])
                ]
                context_ids[b, t, : len(ids)] = torch.as_tensor(ids)
                context_ids_extended[b, t, : len(ids)] = torch.as_tensor(extended)
                role_ids[b, t] = self.role_ids[role]
            target_ids = self._ids(target, self.max_target_length, "max_target_length", cuts[b])
            target_words = target[: len(target_ids)]
            decoder_inputs.append([self.sos_id] + target_ids)
            labels.append(
                [self.vocab_size + oov[w] if i == self.unk_id and w in oov else i for w, i in zip(target_words, target_ids)]
                + [self.eos_id]
            )
            oov_words.append(sorted(oov, key=oov.get))

        situation_rows = [self._cls_ids(s, self.max_situation_length, "max_situation_length", cut)
                          for s, cut in zip(situations, cuts)]
        situation_ids = _pad(situation_rows, self.pad_id, self._padded(max(len(r) for r in situation_rows)))
        Ly = self._padded(max(len(r) for r in decoder_inputs))
        decoder_input_ids = _pad(decoder_inputs, self.pad_id, Ly)
        batch: Dict[str, Any] = {
            "context_ids": context_ids,
            "context_mask": context_ids != self.pad_id,
            "context_ids_extended": context_ids_extended,
            "role_ids": role_ids,
            "situation_ids": situation_ids,
            "situation_mask": situation_ids != self.pad_id,
            "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": decoder_input_ids != self.pad_id,
            "labels": _pad(labels, IGNORE_INDEX, Ly),
            "emotion_labels": torch.as_tensor([int(f["emotion_id"]) for f in features], dtype=torch.long),
        }
        if self._has_knowledge(features):
            batch.update(self._knowledge(features, [len(c) for c in contexts], T, cuts))
        if self.return_oov_words:
            batch["oov_words"] = oov_words
        if self.return_truncation:
            batch["truncated"] = [dict(cut) for cut in cuts]
        return batch

    # ---- knowledge ------------------------------------------------------------------------------------
    def _has_knowledge(self, features: List[Dict[str, Any]]) -> bool:
        has = ["situation_knowledge" in f or "situation_knowledge_words" in f for f in features]
        if any(has) and not all(has):
            raise ValueError("IAMMDataCollator: some samples of the batch have knowledge columns and others do not")
        return all(has)

    def _knowledge(self, features: List[Dict[str, Any]], n_turns: List[int], T: int,
                   cuts: Sequence[Counter]) -> Dict[str, torch.Tensor]:
        R = len(self.relation_names)
        sit_rows, ctx_rows = [], []
        for f, n, cut in zip(features, n_turns, cuts):
            sit = self._words(f, "situation_knowledge_words", "situation_knowledge")
            ctx = self._words(f, "context_knowledge_words", "context_knowledge")[-n:]
            if len(sit) != R or any(len(rels) != R for rels in ctx):
                raise ValueError(
                    f"sample {f.get('conv_id', '?')}: knowledge must have {R} relations ({', '.join(self.relation_names)}) "
                    f"for the situation and each utterance"
                )
            sit_rows.append([self._cls_ids(k, self.max_knowledge_length, "max_knowledge_length", cut) for k in sit])
            ctx_rows.append([[self._cls_ids(k, self.max_knowledge_length, "max_knowledge_length", cut) for k in rels]
                             for rels in ctx])
        Lk = max(len(k) for rows in sit_rows for k in rows)
        Lk = self._padded(max([Lk] + [len(k) for rows in ctx_rows for rels in rows for k in rels]))
        sit_ids = torch.full((len(features), R, Lk), self.pad_id, dtype=torch.long)
        ctx_ids = torch.full((len(features), T, R, Lk), self.pad_id, dtype=torch.long)
        for b, (sit, ctx) in enumerate(zip(sit_rows, ctx_rows)):
            for r, ids in enumerate(sit):
                sit_ids[b, r, : len(ids)] = torch.as_tensor(ids)
            for t, rels in enumerate(ctx):
                for r, ids in enumerate(rels):
                    ctx_ids[b, t, r, : len(ids)] = torch.as_tensor(ids)
        return {
            "situation_knowledge_ids": sit_ids,
            "situation_knowledge_mask": sit_ids != self.pad_id,
            "context_knowledge_ids": ctx_ids,
            "context_knowledge_mask": ctx_ids != self.pad_id,
        }


def decode_extended(ids: Sequence[int], tokenizer: PreTrainedTokenizerBase, oov_words: Sequence[str],
                    skip_special_tokens: bool = True) -> str:
    """Turn extended-vocabulary ids (a generated response) back into text, copied OOV words included.

    Decoding stops at `[EOS]`; with `skip_special_tokens` the other special tokens are dropped, except `[UNK]`
    (a word the model could neither generate nor copy stays visible).
    """
    vocab_size = len(tokenizer)
    skip = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id} if skip_special_tokens else set()
    words = []
    for i in ids:
        i = int(i)
        if i == tokenizer.eos_token_id and skip_special_tokens:
            break
        if i >= vocab_size:
            j = i - vocab_size
            words.append(oov_words[j] if j < len(oov_words) else tokenizer.unk_token)
        elif i not in skip:
            words.append(tokenizer.convert_ids_to_tokens(i))
    return " ".join(words)
