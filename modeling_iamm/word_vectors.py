"""Pretrained word vectors (GloVe text format) for IAMM's embedding matrix, as the paper initialises it."""

import gzip
import logging
from typing import Optional, Tuple

import torch
from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


def load_word_vectors(
    path: str,
    tokenizer: PreTrainedTokenizerBase,
    embedding: Optional[torch.nn.Embedding] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Read a GloVe-format text file (`word v1 v2 ... vd` per line, e.g. `glove.6B.300d.txt`).

    Args:
        path: the vectors file (plain or `.gz`).
        tokenizer: the word-level tokenizer; only its words are kept.
        embedding: if given, the rows of the words found are copied into `embedding.weight` (in place).

    Returns:
        `(vectors, found)`: a `(len(tokenizer), d)` float tensor (zeros for words not in the file) and a bool
        mask of the rows that were found.

    Raises:
        ValueError naming the file and line for a malformed line (wrong number of values, non-numbers), or
        when the vectors' width differs from `embedding`'s.
    """
    vocab = tokenizer.get_vocab()
    vectors: Optional[torch.Tensor] = None
    found = torch.zeros(len(tokenizer), dtype=torch.bool)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if len(parts) < 2:
                if line.strip():
                    raise ValueError(f"{path}, line {lineno}: expected a word followed by its vector values")
                continue
            if vectors is None:
                dim = len(parts) - 1
                if embedding is not None and embedding.embedding_dim != dim:
                    raise ValueError(
                        f"{path}: vectors have {dim} dimensions but the embedding has {embedding.embedding_dim} "
                        f"(set IAMMConfig.hidden_size={dim} or use matching vectors)"
                    )
                vectors = torch.zeros(len(tokenizer), dim)
            if len(parts) - 1 != vectors.shape[1]:
                raise ValueError(
                    f"{path}, line {lineno}: expected {vectors.shape[1]} values after the word, got {len(parts) - 1}"
                )
            index = vocab.get(parts[0])
            if index is None:
                continue
            try:
                vectors[index] = torch.tensor([float(v) for v in parts[1:]])
            except ValueError:
                raise ValueError(f"{path}, line {lineno}: non-numeric vector value for word {parts[0]!r}") from None
            found[index] = True
    if vectors is None:
        raise ValueError(f"{path}: no vectors in the file")
    logger.info("%s: vectors for %d of %d vocabulary entries", path, int(found.sum()), len(tokenizer))
    if embedding is not None:
        with torch.no_grad():
            embedding.weight[found] = vectors[found].to(embedding.weight.dtype)
    return vectors, found
