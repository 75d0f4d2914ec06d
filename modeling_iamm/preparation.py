"""Data preparation shared by every script: ED source -> samples (+ knowledge) -> words, and the tokenizer."""

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from datasets import DatasetDict
from transformers import PreTrainedTokenizerBase

from .collator import DEFAULT_LENGTH_LIMITS, LENGTH_LIMIT_NAMES, encode_samples, resolve_length_limits
from .data import build_samples, describe, load_empathetic_dialogues
from .folders import recorded_location
from .knowledge import KnowledgeCache, attach_knowledge
from .tokenization import build_tokenizer, check_tokenizer, conversation_texts, count_words, load_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class DataArguments:
    """Where the data comes from and how the vocabulary is built."""

    data: Optional[str] = field(
        default=None,
        metadata={"help": "ED source: a folder of split files (csv/jsonl/parquet), one file, or a Hub dataset id."},
    )
    train_file: Optional[str] = field(default=None, metadata={"help": "Train split file (instead of --data)."})
    validation_file: Optional[str] = field(default=None, metadata={"help": "Valid split file (instead of --data)."})
    test_file: Optional[str] = field(default=None, metadata={"help": "Test split file (instead of --data)."})
    splits: Optional[List[str]] = field(default=None, metadata={"help": "Splits to load (default: all found)."})
    skip_invalid: bool = field(
        default=False, metadata={"help": "Drop (and count) invalid conversations instead of stopping at the first."}
    )
    knowledge_file: Optional[str] = field(
        default=None,
        metadata={"help": "Knowledge cache (JSONL) from scripts/generate_knowledge.py; without it there is no knowledge."},
    )
    tokenizer_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Load this tokenizer instead of building one from the train split."}
    )
    min_frequency: int = field(default=1, metadata={"help": "Vocabulary: minimum word count in the train split."})
    max_vocab_size: Optional[int] = field(default=None, metadata={"help": "Vocabulary: maximum size."})
    max_samples: Optional[int] = field(
        default=None, metadata={"help": "Keep only the first N samples of each split (quick runs and debugging)."}
    )
    # Length limits (words; 0 = no limit). Unset: the limits saved with the model (config.length_limits), else
    # DEFAULT_LENGTH_LIMITS, which cover EmpatheticDialogues (see modeling_iamm/collator.py).
    max_context_turns: Optional[int] = field(
        default=None, metadata={"help": f"Keep the last N context utterances (0: all; default: the model's, else "
                                        f"{DEFAULT_LENGTH_LIMITS['max_context_turns']}; ED has at most 7)."}
    )
    max_utterance_length: Optional[int] = field(
        default=None, metadata={"help": f"Words kept per context utterance (0: all; default: the model's, else "
                                        f"{DEFAULT_LENGTH_LIMITS['max_utterance_length']}; ED's longest: 145)."}
    )
    max_situation_length: Optional[int] = field(
        default=None, metadata={"help": f"Words kept of the situation (0: all; default: the model's, else "
                                        f"{DEFAULT_LENGTH_LIMITS['max_situation_length']}; ED's longest: 149)."}
    )
    max_knowledge_length: Optional[int] = field(
        default=None, metadata={"help": f"Words kept per knowledge text (0: all; default: the model's, else "
                                        f"{DEFAULT_LENGTH_LIMITS['max_knowledge_length']})."}
    )
    max_target_length: Optional[int] = field(
        default=None, metadata={"help": f"Words kept of the gold response (0: all; default: the model's, else "
                                        f"{DEFAULT_LENGTH_LIMITS['max_target_length']}; ED's longest: 145)."}
    )

    def __post_init__(self):
        if self.min_frequency < 1:
            raise ValueError(f"--min_frequency must be >= 1, got {self.min_frequency}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"--max_samples must be >= 1 (leave it out for every sample), got {self.max_samples}")
        for name in LENGTH_LIMIT_NAMES:
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name} must be >= 1, or 0 for no limit, got {value}")
        files = {"train": self.train_file, "valid": self.validation_file, "test": self.test_file}
        if self.data is None and not any(files.values()):
            raise ValueError("pass --data (a folder, a file or a Hub dataset id) or --train_file/--validation_file")
        if self.data is not None and any(files.values()):
            raise ValueError("pass either --data or --train_file/--validation_file/--test_file, not both")

    def length_limits(self, saved: Optional[Mapping[str, Any]] = None) -> Dict[str, Optional[int]]:
        """The collator's length limits: the flags given, else `saved` (a model's `config.length_limits`), else
        :data:`DEFAULT_LENGTH_LIMITS`. None means no limit (a flag of 0, or a saved None)."""
        given = {name: getattr(self, name) for name in LENGTH_LIMIT_NAMES if getattr(self, name) is not None}
        return resolve_length_limits(saved, given)

    @property
    def source(self):
        """What :func:`load_empathetic_dialogues` reads: `data`, or the `{split: file}` mapping."""
        if self.data is not None:
            return self.data
        return {split: path for split, path in
                (("train", self.train_file), ("valid", self.validation_file), ("test", self.test_file)) if path}

    def source_record(self, record_folder: str) -> Dict[str, Any]:
        """What a record written into `record_folder` (`train_summary.json`, `build_info.json`) says of the data, and
        what the Hub cards state: `data` (a Hub id, or a path relative to `record_folder`, per split for split
        files; never an absolute path of this machine), `data_source` (`bundled_sample`, `local` or `hub`) and
        `max_samples`."""
        from . import SAMPLE_DATA_DIR

        source = self.source
        if isinstance(source, dict):
            data, kind = {split: recorded_location(path, record_folder) for split, path in source.items()}, "local"
        elif os.path.isdir(source) and os.path.samefile(source, SAMPLE_DATA_DIR):
            data, kind = "modeling_iamm/sample_data", "bundled_sample"
        else:
            data, kind = recorded_location(source, record_folder), "local" if os.path.exists(source) else "hub"
        return {"data": data, "data_source": kind, "max_samples": self.max_samples}


def prepare_data(
    args: DataArguments, tokenizer: Optional[PreTrainedTokenizerBase] = None, return_train_word_counts: bool = False
):
    """Load ED, build listener-turn samples, attach knowledge (if a cache is given), split texts into words.

    The tokenizer is, in order of preference: the one passed, the one at `args.tokenizer_name_or_path`, or a new
    one built from the `train` split (never from other splits).

    Returns:
        `(samples, tokenizer)`, and with `return_train_word_counts` also the word counts of the train split's
        conversations (each situation and utterance once; None without a train split).
    """
    conversations = load_empathetic_dialogues(args.source, splits=args.splits, skip_invalid=args.skip_invalid)
    if tokenizer is None and args.tokenizer_name_or_path:
        tokenizer = load_tokenizer(args.tokenizer_name_or_path)
    if tokenizer is None:
        if "train" not in conversations:
            raise ValueError(f"{args.source}: no train split to build the vocabulary from; pass --tokenizer_name_or_path")
        tokenizer = build_tokenizer(conversations["train"], args.min_frequency, args.max_vocab_size)
    check_tokenizer(tokenizer)
    samples = build_samples(conversations)
    if args.max_samples is not None:
        samples = DatasetDict({k: v.select(range(min(args.max_samples, v.num_rows))) for k, v in samples.items()})
    if args.knowledge_file:
        samples = attach_knowledge(samples, KnowledgeCache(args.knowledge_file))
    logger.info("samples per split: %s; vocabulary: %d", describe(samples), len(tokenizer))
    if return_train_word_counts:
        counts = count_words(conversation_texts(conversations["train"])) if "train" in conversations else None
        return encode_samples(samples), tokenizer, counts
    return encode_samples(samples), tokenizer
