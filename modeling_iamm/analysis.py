"""Analyses of the associated words in an evaluation JSONL (the paper's Appendix C), drawn with matplotlib.

* `topk_statistics`: for the k most attended associated words of each sample (k = 1..K, ranked by association
  weight), the average emotion intensity and IDF of those words, beside the average over all context words.
* `association_matrix`: for one dialogue, which utterance words associate with which situation/history words.

Emotion intensity: the absolute VADER valence of a word divided by 4 (0 = neutral, 1 = strongest), from the
lexicon shipped in the `vaderSentiment` package (MIT licence; `pip install iamm[analysis]`). IDF: log(N / df) over
the training split's utterances and situations (N documents), words as :func:`modeling_iamm.text.word_tokenize`
splits them.
"""

import math
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .text import word_tokenize

EXPLICIT_PAIRS = ("utterance-situation", "utterance-history", "utterance-memory")


def vader_intensity() -> Dict[str, float]:
    """Word -> emotion intensity in [0, 1] (|VADER valence| / 4)."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as e:
        raise ImportError("emotion intensity needs the vaderSentiment package: pip install 'iamm[analysis]'") from e
    return {word: min(abs(valence) / 4.0, 1.0) for word, valence in SentimentIntensityAnalyzer().lexicon.items()}


def inverse_document_frequency(documents: Iterable[str]) -> Tuple[Dict[str, float], float]:
    """IDF of every word over `documents`, and the IDF given to unseen words (log N / 1)."""
    df: Counter = Counter()
    n = 0
    for document in documents:
        n += 1
        df.update(set(word_tokenize(document)))
    if n == 0:
        raise ValueError("no documents to compute IDF from")
    return {word: math.log(n / count) for word, count in df.items()}, math.log(n)


def ranked_associated_words(associations: Dict[str, list], pairs: Sequence[str] = EXPLICIT_PAIRS) -> List[str]:
    """A sample's associated words, most attended first (each word once, at its highest weight)."""
    best: Dict[str, float] = {}
    for pair in pairs:
        for entry in associations.get(pair, []):
            for word, weight in entry["associated"]:
                if word not in best or weight > best[word]:
                    best[word] = weight
    return sorted(best, key=lambda w: -best[w])


def topk_statistics(records: Sequence[dict], intensity: Dict[str, float], idf: Dict[str, float], unseen_idf: float,
                    max_k: int = 10, alphabetic_only: bool = True) -> Dict[str, List[float]]:
    """Average intensity and IDF of the top-k associated words (k = 1..max_k), and of all context words."""

    def keep(word: str) -> bool:
        return word.isalpha() if alphabetic_only else True

    sums = {"intensity": [0.0] * max_k, "idf": [0.0] * max_k, "count": [0] * max_k}
    all_intensity, all_idf, all_count = 0.0, 0.0, 0
    for record in records:
        words = [w for w in ranked_associated_words(record.get("associations", {})) if keep(w)]
        for k in range(max_k):
            for word in words[: k + 1]:
                sums["intensity"][k] += intensity.get(word, 0.0)
                sums["idf"][k] += idf.get(word, unseen_idf)
                sums["count"][k] += 1
        for utterance in record["context"] + [record["situation"]]:
            for word in word_tokenize(utterance):
                if keep(word):
                    all_intensity += intensity.get(word, 0.0)
                    all_idf += idf.get(word, unseen_idf)
                    all_count += 1
    if not all_count or not sums["count"][0]:
        raise ValueError("no associated words in the records (were they written with associations?)")
    return {
        "k": list(range(1, max_k + 1)),
        "topk_intensity": [s / max(c, 1) for s, c in zip(sums["intensity"], sums["count"])],
        "topk_idf": [s / max(c, 1) for s, c in zip(sums["idf"], sums["count"])],
        "all_words_intensity": all_intensity / all_count,
        "all_words_idf": all_idf / all_count,
    }


def association_matrix(record: dict, pairs: Sequence[str] = ("utterance-situation", "utterance-history")):
    """For one dialogue: utterance words (rows) x situation/history words (columns), cell = strongest association.

    Returns `(row_words, column_words, matrix)`; rows/columns in first-seen order, weights in [0, 1].
    """
    cells: Dict[Tuple[str, str], float] = {}
    for pair in pairs:
        for entry in record.get("associations", {}).get(pair, []):
            for word, weight in entry["associated"]:
                strength = weight * entry["keyword_weight"]
                if entry["keyword_side"] == "utterance":
                    key = (entry["keyword"], word)  # an utterance keyword and the other sentence's words
                else:
                    key = (word, entry["keyword"])  # the other sentence's keyword and the utterance's words
                cells[key] = max(cells.get(key, 0.0), strength)
    rows = list(dict.fromkeys(r for r, _ in cells))
    columns = list(dict.fromkeys(c for _, c in cells))
    matrix = [[cells.get((r, c), 0.0) for c in columns] for r in rows]
    return rows, columns, matrix


def plot_topk(stats: Dict[str, list], path: str, title: Optional[str] = None) -> None:
    """Two panels (intensity, IDF) of the top-k averages against the all-words average; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "intensity", "emotion intensity (|VADER valence| / 4)"), (axes[1], "idf", "IDF")):
        ax.plot(stats["k"], stats[f"topk_{key}"], marker="o", label="top-k associated words")
        ax.axhline(stats[f"all_words_{key}"], color="gray", linestyle="--", label="all context words")
        ax.set_xlabel("k (most attended associated words)")
        ax.set_ylabel(f"average {label}")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_association_matrix(rows: List[str], columns: List[str], matrix: List[List[float]], path: str,
                            title: Optional[str] = None) -> None:
    """Heat map of `association_matrix`; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows or not columns:
        raise ValueError("no associations to draw for this dialogue")
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(columns) + 2), max(3, 0.3 * len(rows) + 1.5)))
    image = ax.imshow(matrix, cmap="viridis", aspect="auto", vmin=0)
    ax.set_xticks(range(len(columns)), columns, rotation=90)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("situation / history words")
    ax.set_ylabel("utterance words")
    fig.colorbar(image, ax=ax, label="association strength")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
