"""The knowledge stage: COMET-style commonsense inferences for every situation and utterance (the paper's
implicit information), generated in batches, de-duplicated, cached on disk and resumable.

For each distinct event text (a situation or an utterance) and each relation (xIntent, xNeed, xWant, xEffect,
xReact), a seq2seq model that speaks COMET-ATOMIC-2020's query format `"{event} {relation} [GEN]"` generates
`num_return_sequences` inferences with beam search (paper: 5 beams, 5 returns). Each finished event is
appended to a JSONL cache as ONE line (`{"event": ..., "knowledge": {relation: [inferences]}}`), flushed and
fsynced, so a killed run loses at most the batch in flight; re-running skips every event already in the
cache. A line cut off by a kill (the last one) is detected and dropped before appending again.

:func:`attach_knowledge` then adds the columns the collator reads: `situation_knowledge` (R texts) and
`context_knowledge` (T x R texts), each relation's inferences joined into one text.
"""

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from datasets import Dataset, DatasetDict
from tqdm.auto import tqdm

from .configuration_iamm import RELATIONS

logger = logging.getLogger(__name__)

DEFAULT_COMET_MODEL = "mismayil/comet-bart-ai2"
KNOWLEDGE_COLUMNS = ("situation_knowledge", "context_knowledge")


@dataclass
class KnowledgeArguments:
    """Options of the knowledge stage (also the CLI of `scripts/generate_knowledge.py`)."""

    model_name_or_path: str = field(
        default=DEFAULT_COMET_MODEL,
        metadata={"help": "Hub id or folder of a COMET-style seq2seq model (AutoModelForSeq2SeqLM)."},
    )
    relations: List[str] = field(default_factory=lambda: list(RELATIONS), metadata={"help": "Relations to generate."})
    num_beams: int = field(default=5, metadata={"help": "Beam width (paper: 5)."})
    num_return_sequences: int = field(default=5, metadata={"help": "Inferences kept per relation (paper: 5)."})
    max_new_tokens: int = field(default=24, metadata={"help": "Longest inference, in model tokens."})
    batch_size: int = field(default=64, metadata={"help": "Queries (event x relation) per generate() call."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "torch device."})
    dtype: str = field(default="float32", metadata={"help": "Model dtype: float32, bfloat16 or float16."})

    def __post_init__(self):
        from .inference import check_generate_kwargs  # (inference imports the model; knowledge is imported first)

        check_generate_kwargs({"num_beams": self.num_beams, "num_return_sequences": self.num_return_sequences,
                               "max_new_tokens": self.max_new_tokens}, prefix="--")
        if self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"num_return_sequences ({self.num_return_sequences}) cannot exceed num_beams ({self.num_beams})"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


class KnowledgeCache:
    """Append-only JSONL cache: one line per finished event, `{"event": str, "knowledge": {relation: [str]}}`."""

    def __init__(self, path: str):
        self.path = path
        self.entries: Dict[str, Dict[str, List[str]]] = {}
        if os.path.exists(path):
            self._load()

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            data = f.read()
        offset = good_end = 0
        for lineno, raw in enumerate(data.split(b"\n"), start=1):
            end = offset + len(raw) + 1
            if end > len(data):  # no newline after it: the last line, unfinished (or empty)
                if raw.strip():
                    logger.warning("%s: dropping an unfinished last line (interrupted run); it will be regenerated", self.path)
                break
            if raw.strip():
                try:
                    entry = json.loads(raw)
                    self.entries[entry["event"]] = dict(entry["knowledge"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise ValueError(
                        f"{self.path}, line {lineno}: corrupt knowledge cache entry ({e}); fix or remove that line"
                    ) from None
            offset = good_end = end
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)

    def __contains__(self, event: str) -> bool:
        return event in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entries: Dict[str, Dict[str, List[str]]]) -> None:
        """Append finished events durably (flush + fsync), so an interruption never loses them."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for event, knowledge in entries.items():
                f.write(json.dumps({"event": event, "knowledge": knowledge}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries.update(entries)


def knowledge_events(conversations: Dataset | DatasetDict) -> List[str]:
    """Every distinct situation and utterance text, in first-seen order (each is generated once)."""
    splits = conversations.values() if isinstance(conversations, DatasetDict) else [conversations]
    seen: Dict[str, None] = {}
    for ds in splits:
        for situation, utterances in zip(ds["situation"], ds["utterances"]):
            seen.setdefault(situation)
            for u in utterances:
                seen.setdefault(u)
    return list(seen)


def comet_query(event: str, relation: str) -> str:
    """COMET-ATOMIC-2020's query format."""
    return f"{event} {relation} [GEN]"


def load_comet(args: KnowledgeArguments):
    """Load the COMET model and tokenizer named in `args` onto `args.device` in `args.dtype`."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model_name_or_path, dtype=getattr(torch, args.dtype))
    return model.to(args.device).eval(), tokenizer


@torch.no_grad()
def generate_knowledge(
    events: Sequence[str],
    model,
    tokenizer,
    cache_path: str,
    args: Optional[KnowledgeArguments] = None,
    progress: bool = True,
) -> KnowledgeCache:
    """Generate the knowledge of every event not yet in the cache at `cache_path`; return the full cache.

    Events already cached are never recomputed; duplicates in `events` are generated once.
    """
    args = args or KnowledgeArguments()
    cache = KnowledgeCache(cache_path)
    todo = [e for e in dict.fromkeys(events) if e not in cache]
    logger.info("knowledge: %d events, %d cached, %d to generate", len(set(events)), len(set(events)) - len(todo), len(todo))
    per_call = max(1, args.batch_size // len(args.relations))
    device = next(model.parameters()).device
    bar = tqdm(total=len(todo), desc="Generating knowledge", unit="event", disable=not progress)
    for start in range(0, len(todo), per_call):
        chunk = todo[start : start + per_call]
        queries = [comet_query(e, r) for e in chunk for r in args.relations]
        inputs = tokenizer(queries, return_tensors="pt", padding=True, truncation=True, max_length=128).to(device)
        outputs = model.generate(
            **inputs,
            num_beams=args.num_beams,
            num_return_sequences=args.num_return_sequences,
            max_new_tokens=args.max_new_tokens,
            do_sample=False,
            early_stopping=True,
        )
        texts = tokenizer.batch_decode(outputs, skip_special_tokens=True)
        n, R = args.num_return_sequences, len(args.relations)
        # texts: (len(chunk) * R * n,) ordered by event, then relation, then beam
        cache.add(
            {
                event: {rel: [t.strip() for t in texts[(i * R + r) * n : (i * R + r + 1) * n]] for r, rel in enumerate(args.relations)}
                for i, event in enumerate(chunk)
            }
        )
        bar.update(len(chunk))
    bar.close()
    return cache


def knowledge_text(inferences: Iterable[str]) -> str:
    """One relation's inferences as one text: empty and "none" dropped, duplicates removed, joined by ", "."""
    kept = [t for t in dict.fromkeys(s.strip() for s in inferences) if t and t.lower() != "none"]
    return ", ".join(kept)


def attach_knowledge(samples: Dataset | DatasetDict, cache: KnowledgeCache | Dict[str, Dict[str, List[str]]],
                     relations: Sequence[str] = tuple(RELATIONS)) -> Dataset | DatasetDict:
    """Add `situation_knowledge` (R texts) and `context_knowledge` (T x R texts) to listener-turn samples."""
    entries = cache.entries if isinstance(cache, KnowledgeCache) else cache

    def lookup(event: str) -> List[str]:
        if event not in entries:
            raise KeyError(
                f"no knowledge for {event[:80]!r}: run scripts/generate_knowledge.py on this data first "
                f"(or train without knowledge: use_implicit_association=False)"
            )
        knowledge = entries[event]
        missing = [r for r in relations if r not in knowledge]
        if missing:
            raise KeyError(f"knowledge of {event[:80]!r} lacks relation(s) {missing}")
        return [knowledge_text(knowledge[r]) for r in relations]

    def add(batch):
        return {
            "situation_knowledge": [lookup(s) for s in batch["situation"]],
            "context_knowledge": [[lookup(u) for u in ctx] for ctx in batch["context"]],
        }

    return samples.map(add, batched=True, desc="Attaching knowledge")
