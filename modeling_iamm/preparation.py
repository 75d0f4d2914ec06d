"""Data preparation shared by every script: ED source -> samples (+ knowledge) -> words, and the tokenizer."""

import logging
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from datasets import DatasetDict
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .collator import encode_samples
from .data import build_samples, describe, load_empathetic_dialogues
from .knowledge import KnowledgeCache, attach_knowledge
from .tokenization import build_tokenizer, check_tokenizer

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

    def __post_init__(self):
        if self.min_frequency < 1:
            raise ValueError(f"--min_frequency must be >= 1, got {self.min_frequency}")
        files = {"train": self.train_file, "valid": self.validation_file, "test": self.test_file}
        if self.data is None and not any(files.values()):
            raise ValueError("pass --data (a folder, a file or a Hub dataset id) or --train_file/--validation_file")
        if self.data is not None and any(files.values()):
            raise ValueError("pass either --data or --train_file/--validation_file/--test_file, not both")

    @property
    def source(self):
        """What :func:`load_empathetic_dialogues` reads: `data`, or the `{split: file}` mapping."""
        if self.data is not None:
            return self.data
        return {split: path for split, path in
                (("train", self.train_file), ("valid", self.validation_file), ("test", self.test_file)) if path}


def prepare_data(
    args: DataArguments, tokenizer: Optional[PreTrainedTokenizerBase] = None
) -> Tuple[DatasetDict, PreTrainedTokenizerBase]:
    """Load ED, build listener-turn samples, attach knowledge (if a cache is given), split texts into words.

    The tokenizer is, in order of preference: the one passed, the one at `args.tokenizer_name_or_path`, or a new
    one built from the `train` split (never from other splits).
    """
    conversations = load_empathetic_dialogues(args.source, splits=args.splits, skip_invalid=args.skip_invalid)
    if tokenizer is None and args.tokenizer_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name_or_path)
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
    return encode_samples(samples), tokenizer
