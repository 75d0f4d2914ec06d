"""Running the authors' IAMM code (github zhouzhouyang520/IAMM) beside this package on identical inputs.

The authors' repository has no licence, so nothing of it is part of this package: a user who has a copy passes its
path, and :class:`AuthorsCode` imports it from there. What this module does:

- converts this package's samples (already split into words by :func:`modeling_iamm.collator.encode_samples`) into
  the data dictionary their `Dataset` reads (:func:`to_authors_data`), with their vocabulary object built from this
  package's tokenizer (:func:`authors_index2word`): same samples, same word normalisation, same vocabulary;
- writes one word-vector file that both sides start from (:func:`write_text_vectors`: GloVe text format, read by
  this package's `--word_vectors` and by their `--emb_file`);
- writes a knowledge stand-in that both sides read (:func:`write_stand_in_knowledge`): COMET generations are not
  available, so every situation and utterance gets the same constant text per relation;
- trains their model with its own `train_one_batch` (their Noam optimiser, batch 16) in a loop that saves a resumable
  state, and evaluates it with this package's metric code (:func:`modeling_iamm.metrics.compute_metrics`):
  emotion accuracy, both perplexity estimators, Dist-1/2 of greedy responses, each emotion head alone, and the
  decoders' gate (their `rs_logit_linear`, Eq. 30).

Where their code cannot take our inputs unchanged, the conversion says so (`AUTHORS_DATA_NOTES`).
"""

import json
import logging
import math
import os
import random
import sys
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import torch

from .configuration_iamm import RELATIONS
from .tokenization import SPECIAL_TOKENS

logger = logging.getLogger(__name__)

# Their special tokens and ids (src/utils/config.py): the words of their vocabulary come after these seven.
AUTHORS_SPECIALS: Dict[int, str] = {0: "UNK", 1: "PAD", 2: "EOS", 3: "SOS", 4: "USR", 5: "SYS", 6: "CLS"}
AUTHORS_PAD_ID = 1

# The knowledge stand-in: two ordinary ED words per relation, the same for every event. Their loader drops the words
# "to" and "none" and every out-of-vocabulary word from knowledge texts, and reads an xReact text without [CLS] (an
# empty or one-word xReact is masked out of their memory), so the stand-in avoids all of those.
STAND_IN_KNOWLEDGE: Dict[str, str] = {
    "xIntent": "help others",
    "xNeed": "some time",
    "xWant": "feel better",
    "xEffect": "gets tired",
    "xReact": "happy sad",
}

AUTHORS_DATA_NOTES = (
    "their pointer-generator has no extended vocabulary (their vocabulary was built from all three splits, so no "
    "word of theirs is ever out of vocabulary): words outside this package's train vocabulary are given to their "
    "code as UNK, and only this package's model can copy them",
    "their collate function sorts each batch by the number of context utterances; predictions are put back in "
    "sample order",
)


# ---------------------------------------------------------------------------------------------------------------
# Inputs shared by both sides (no authors' code needed)
# ---------------------------------------------------------------------------------------------------------------


def authors_index2word(tokenizer) -> Dict[int, str]:
    """Their vocabulary (`Lang.index2word`) holding exactly this tokenizer's words: their seven special tokens,
    then every non-special word of `tokenizer` in id order."""
    vocab = tokenizer.get_vocab()
    words = [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if w not in SPECIAL_TOKENS]
    clashes = sorted(set(words) & set(AUTHORS_SPECIALS.values()))
    if clashes:
        raise ValueError(f"the vocabulary has words that are special tokens in the authors' code: {clashes}")
    index2word = dict(AUTHORS_SPECIALS)
    for word in words:
        index2word[len(index2word)] = word
    return index2word


def _in_vocab(words: Sequence[str], vocab: Mapping[str, int]) -> List[str]:
    return [w if w in vocab else "UNK" for w in words]


def to_authors_data(samples: Iterable[Mapping[str, Any]], word2index: Mapping[str, int],
                    knowledge: Optional[Mapping[str, str]] = None) -> Dict[str, list]:
    """This package's listener-turn samples (with `*_words` columns) as the data dictionary of their `Dataset`.

    Args:
        samples: rows with `context_words`, `target_words`, `situation_words` and `emotion`.
        word2index: their vocabulary's `word2index` (from :func:`authors_index2word`); other words become "UNK".
        knowledge: relation -> stand-in text (default :data:`STAND_IN_KNOWLEDGE`), given to every situation and
            utterance as one beam, split on spaces.

    Returns:
        `{"context": [[words per utterance]], "target", "situation": [words], "emotion": [label],
        "emotion_context": [[]], "utt_cs", "comet_cxt", "comet_sit"}` in sample order; `comet_cxt[i][t][r]` is the
        beams of relation r for utterance t, `comet_sit[i][r]` those of the situation.
    """
    knowledge = dict(STAND_IN_KNOWLEDGE if knowledge is None else knowledge)
    per_relation = [[knowledge[r].split()] for r in RELATIONS]  # R relations x 1 beam x words
    data: Dict[str, list] = {k: [] for k in ("context", "target", "emotion", "situation", "emotion_context",
                                             "utt_cs", "comet_cxt", "comet_sit")}
    for s in samples:
        context = [_in_vocab(u, word2index) for u in s["context_words"]]
        data["context"].append(context)
        data["target"].append(_in_vocab(s["target_words"], word2index))
        data["situation"].append(_in_vocab(s["situation_words"], word2index))
        data["emotion"].append(s["emotion"])
        data["emotion_context"].append([])
        data["utt_cs"].append(per_relation)
        data["comet_cxt"].append([per_relation for _ in context])
        data["comet_sit"].append(per_relation)
    return data


def write_stand_in_knowledge(events: Iterable[str], path: str, knowledge: Optional[Mapping[str, str]] = None) -> int:
    """Write a knowledge cache (:class:`modeling_iamm.knowledge.KnowledgeCache` format) giving every event the
    stand-in texts. Returns the number of events. Refuses to replace an existing file."""
    knowledge = dict(STAND_IN_KNOWLEDGE if knowledge is None else knowledge)
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists")
    n = 0
    tmp = path + ".partial"
    with open(tmp, "w", encoding="utf-8") as f:
        for event in dict.fromkeys(events):
            f.write(json.dumps({"event": event, "knowledge": {r: [knowledge[r]] for r in RELATIONS}},
                               ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def write_text_vectors(path: str, words: Iterable[str], dim: int = 300, std: float = 0.01, seed: int = 0) -> int:
    """Write N(0, std^2) vectors (seeded) for `words` as a GloVe text file (`word v1 ... vdim` per line): the one
    initialisation that both sides read. Returns the number of vectors. Words with whitespace are skipped."""
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists")
    rng = np.random.default_rng(seed)
    n = 0
    tmp = path + ".partial"
    with open(tmp, "w", encoding="utf-8") as f:
        for word in words:
            if not word or any(c.isspace() for c in word):
                continue
            f.write(word + " " + " ".join(f"{x:.6f}" for x in rng.normal(0.0, std, dim)) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def gate_summary(gate_logits: torch.Tensor) -> Dict[str, float]:
    """Statistics of the decoders' gate over real target tokens: `g = sigmoid(logit)` weighs the context decoder,
    `1 - g` the association decoder (Eq. 30)."""
    g = torch.sigmoid(gate_logits.float())
    return {
        "gate_logit_mean": round(gate_logits.float().mean().item(), 3),
        "gate_mean": round(g.mean().item(), 5),
        "association_decoder_weight_mean": round((1 - g).mean().item(), 5),
        "share_tokens_gate_above_0.999": round((g > 0.999).float().mean().item(), 4),
    }


# ---------------------------------------------------------------------------------------------------------------
# The authors' code, imported from a path the user gives
# ---------------------------------------------------------------------------------------------------------------


class AuthorsCode:
    """Their IAMM imported from `src` (a checkout of github zhouzhouyang520/IAMM) with their training flags
    (`--model iamm --pointer_gen --word_topk 5 --ctx_topk 15 --cs_topk 5`, as their run.sh).

    Their modules read `sys.argv` at import and open `data/NRCDict.json` relative to the working directory; their
    `select_topk` calls `.cuda()`, which is made a no-op on CPU. nltk's stopword list (used only by their COMET
    preprocessing, never here) is replaced by an empty one so that no nltk data download is needed.
    """

    def __init__(self, src: str, device: str = "cpu", emb_file: Optional[str] = None):
        src = os.path.abspath(src)
        if not os.path.isfile(os.path.join(src, "src", "models", "IAMM", "model.py")):
            raise FileNotFoundError(f"{src}: not a checkout of the authors' IAMM code (no src/models/IAMM/model.py)")
        self.src, self.device = src, device
        argv = ["main.py", "--model", "iamm", "--pointer_gen", "--word_topk", "5", "--ctx_topk", "15",
                "--cs_topk", "5"] + (["--cuda"] if device.startswith("cuda") else [])
        saved_argv, saved_cwd = sys.argv, os.getcwd()
        sys.argv = argv
        os.chdir(src)
        sys.path.insert(0, src)
        try:
            if not hasattr(np, "float"):
                np.float = float  # their timing signal uses the removed numpy alias
            import nltk.corpus

            class _NoStopwords:
                def words(self, lang):
                    return []

            nltk.corpus.stopwords = _NoStopwords()
            if not device.startswith("cuda"):
                torch.Tensor.cuda = lambda self, *a, **k: self  # their select_topk hard-codes .cuda()
            from src.utils import config
            from src.utils.constants import MAP_EMO
            from src.utils.data import loader
            from src.models.IAMM.model import IAMM
        finally:
            sys.argv = saved_argv
            os.chdir(saved_cwd)
        config.emb_file = emb_file  # None: their random init (N(0, 0.01^2)); a file: those vectors
        config.save_path = config.model_path = os.path.join(saved_cwd, ".authors_iamm_unused")
        self.config, self.loader, self.IAMM, self.MAP_EMO = config, loader, IAMM, MAP_EMO

    def vocabulary(self, index2word: Mapping[int, str]):
        return self.loader.Lang(dict(index2word))

    def dataset(self, data: Dict[str, list], vocab):
        """Their `Dataset`, whose items also carry `sample_index` (their collate sorts every batch)."""
        base = self.loader.Dataset

        class IndexedDataset(base):
            def __getitem__(self, index):
                item = super().__getitem__(index)
                item["sample_index"] = index
                return item

        return IndexedDataset(data, vocab)

    def collate(self, items: List[Dict[str, Any]]) -> Dict[str, Any]:
        batch = self.loader.collate_fn(items)  # sorts `items` in place
        batch["sample_index"] = [it["sample_index"] for it in items]
        return batch

    def new_model(self, vocab, warmup: int):
        """Their model, initialised as their main.py does (Xavier-uniform for every matrix except the embedding,
        which holds their `--emb_file` vectors), with the Noam warm-up set to `warmup`."""
        from torch.nn.init import xavier_uniform_

        cwd = os.getcwd()
        os.chdir(self.src)  # their model reads no file at construction, but keep their relative paths valid
        try:
            model = self.IAMM(vocab, decoder_number=32)
        finally:
            os.chdir(cwd)
        model.to(self.config.device)
        for name, p in model.named_parameters():
            if p.dim() > 1 and (name != "embedding.lut.weight" and self.config.pretrain_emb):
                xavier_uniform_(p)
        model.optimizer.warmup = warmup
        return model


def _save_atomic(obj: Any, path: str) -> None:
    tmp = path + ".partial"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _epoch_order(n: int, seed: int, epoch: int) -> List[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def train_authors(code: AuthorsCode, dataset, output_dir: str, max_steps: int, save_at: Sequence[int],
                  seed: int, warmup: int, batch_size: int = 16, state_every: int = 100,
                  max_seconds: Optional[float] = None, vocab=None) -> Dict[str, Any]:
    """Train their model with their `train_one_batch`, resumably.

    Every `state_every` steps (and at each step in `save_at`, and when `max_seconds` runs out) the whole state
    (weights, Adam moments, Noam step, data position, random states) is written to `output_dir/state.pt`; a rerun
    continues from it. The model weights at each step of `save_at` go to `output_dir/checkpoint-<step>.pt`. The data
    order is a seeded permutation per epoch. Returns a summary (steps done, seconds per 1,000 steps, whether the run
    is finished).
    """
    os.makedirs(output_dir, exist_ok=True)
    state_path = os.path.join(output_dir, "state.pt")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = code.new_model(vocab if vocab is not None else dataset.vocab, warmup)
    step, epoch, position, seconds = 0, 0, 0, 0.0
    if os.path.exists(state_path):
        state = torch.load(state_path, map_location=code.config.device, weights_only=False)
        model.load_state_dict(state["model"])
        model.optimizer.optimizer.load_state_dict(state["optimizer"])
        model.optimizer._step = state["noam_step"]
        step, epoch, position, seconds = state["step"], state["epoch"], state["position"], state["seconds"]
        random.setstate(state["python_rng"])
        np.random.set_state(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        logger.info("%s: resuming the authors' model at step %d", output_dir, step)
    if step >= max_steps:
        return {"steps": step, "finished": True, "seconds": round(seconds, 1),
                "seconds_per_1000_steps": round(1000 * seconds / max(step, 1), 1)}

    def save_state():
        _save_atomic({"model": model.state_dict(), "optimizer": model.optimizer.optimizer.state_dict(),
                      "noam_step": model.optimizer._step, "step": step, "epoch": epoch, "position": position,
                      "seconds": seconds, "python_rng": random.getstate(), "numpy_rng": np.random.get_state(),
                      "torch_rng": torch.get_rng_state()}, state_path)

    model.train()
    model.is_eval = False
    order = _epoch_order(len(dataset), seed, epoch)
    started = time.time()
    log_every, losses = 100, []
    while step < max_steps:
        if position >= len(order):
            epoch, position = epoch + 1, 0
            order = _epoch_order(len(dataset), seed, epoch)
        indices = order[position:position + batch_size]
        batch = code.collate([dataset[i] for i in indices])
        t = time.time()
        loss, ppl, emo_loss, acc, _, _ = model.train_one_batch(batch, step)
        seconds += time.time() - t
        if not math.isfinite(loss):
            raise FloatingPointError(f"{output_dir}: the authors' model's loss is {loss} at step {step + 1}")
        losses.append((loss, emo_loss, acc))
        step, position = step + 1, position + len(indices)
        if step % log_every == 0:
            l, e, a = (float(np.mean([x[k] for x in losses])) for k in range(3))
            logger.info("authors step %d: generation loss %.3f, emotion loss %.3f, batch accuracy %.3f, lr %.2e",
                        step, l, e, a, model.optimizer._rate)
            losses = []
        if step in save_at:
            _save_atomic({"model": model.state_dict(), "step": step}, os.path.join(output_dir, f"checkpoint-{step}.pt"))
        out_of_time = max_seconds is not None and time.time() - started > max_seconds
        if step % state_every == 0 or step in save_at or step == max_steps or out_of_time:
            save_state()
        if out_of_time and step < max_steps:
            logger.warning("%s: time budget of %.0f s spent at step %d; rerun to continue", output_dir, max_seconds, step)
            break
    return {"steps": step, "finished": step >= max_steps, "seconds": round(seconds, 1),
            "seconds_per_1000_steps": round(1000 * seconds / max(step, 1), 1)}


@torch.no_grad()
def evaluate_authors(code: AuthorsCode, checkpoint: str, dataset, samples: Sequence[Mapping[str, Any]],
                     batch_size: int = 64, greedy_samples: Optional[int] = None, max_dec_step: int = 50,
                     vocab=None) -> Dict[str, Any]:
    """Evaluate their model at `checkpoint` with this package's metric code.

    Teacher-forced over every sample (their `train_one_batch(train=False)`): each sample's mean token NLL (the gold
    response and its EOS), the emotion their model predicts (argmax of the SUM of the four heads' logits, as their
    code), each head alone, and the gate of Eq. 30 over the real target tokens. Greedy responses (their
    `decoder_greedy_batch`, `max_dec_step` tokens) for the first `greedy_samples` samples (None: all) give Dist-1/2.
    """
    from .metrics import distinct_n, emotion_accuracy, perplexities

    model = code.new_model(vocab if vocab is not None else dataset.vocab, warmup=1)
    state = torch.load(checkpoint, map_location=code.config.device, weights_only=False)
    model.load_state_dict(state["model"])
    model.eval()
    model.is_eval = True
    captured: Dict[str, Any] = {}
    original_forward = model.forward

    def forward(batch):
        captured["outputs"] = original_forward(batch)
        return captured["outputs"]

    model.forward = forward
    hook = model.rs_logit_linear.register_forward_hook(lambda m, i, o: captured.update(gate=o))
    n = len(samples)
    nll = [0.0] * n
    n_tokens = [0] * n
    heads = {name: [None] * n for name in ("sum_of_logits", "context", "situation", "memory", "knowledge")}
    gate_logits = []
    try:
        for start in range(0, n, batch_size):
            batch = code.collate([dataset[i] for i in range(start, min(start + batch_size, n))])
            per_sample_loss, *_ = model.train_one_batch(batch, 0, train=False)
            (_, _, _, _, ctx_logits, sit_logits, emo_logits, memory_logits, knowledge_logits, _, _) = captured["outputs"]
            target = batch["target_batch"]
            real = target.ne(AUTHORS_PAD_ID)
            gate_logits.append(captured["gate"].squeeze(-1)[real].float().cpu())
            for j, index in enumerate(batch["sample_index"]):
                count = int(real[j].sum())
                n_tokens[index] = count
                nll[index] = float(per_sample_loss[j]) * count
                for name, logits in (("sum_of_logits", emo_logits), ("context", ctx_logits),
                                     ("situation", sit_logits), ("memory", memory_logits),
                                     ("knowledge", knowledge_logits)):
                    heads[name][index] = code.MAP_EMO[int(logits[j].argmax())]
        responses: Dict[int, str] = {}
        m = n if greedy_samples is None else min(greedy_samples, n)
        for start in range(0, m, batch_size):
            batch = code.collate([dataset[i] for i in range(start, min(start + batch_size, m))])
            sentences = model.decoder_greedy_batch(batch, max_dec_step=max_dec_step)
            for index, sentence in zip(batch["sample_index"], sentences):
                responses[index] = sentence[0].strip()
    finally:
        hook.remove()
        model.forward = original_forward
    gold = [s["emotion"] for s in samples]
    ppl = perplexities(nll, n_tokens)
    report = {
        "samples": n,
        "emotion_accuracy_x100": round(100 * emotion_accuracy(heads["sum_of_logits"], gold), 2),
        "ppl_paper": round(ppl["ppl_paper"], 3),
        "ppl_corpus": round(ppl["ppl_corpus"], 3),
        "greedy_samples": m,
        "dist1_x100": round(100 * distinct_n([responses[i] for i in sorted(responses)], 1), 3),
        "dist2_x100": round(100 * distinct_n([responses[i] for i in sorted(responses)], 2), 3),
    }
    report.update({f"acc_{name}_head_alone": round(100 * emotion_accuracy(pred, gold), 2)
                   for name, pred in heads.items() if name != "sum_of_logits"})
    report.update(gate_summary(torch.cat(gate_logits)))
    report["examples"] = [{"context": samples[i]["context"], "gold_response": samples[i]["target"],
                           "generated_response": responses[i]} for i in sorted(responses)[:5]]
    return report


@torch.no_grad()
def evaluate_ours(model, tokenizer, samples, collator, batch_size: int = 64,
                  greedy_samples: Optional[int] = None, max_new_tokens: int = 50) -> Dict[str, Any]:
    """The same report as :func:`evaluate_authors` for this package's model: accuracy and both perplexities over
    every sample (teacher-forced), Dist-1/2 of greedy responses of the first `greedy_samples` samples (None: all),
    each emotion head alone and the gate (:func:`modeling_iamm.diagnostics.emotion_heads_and_gate`)."""
    from .diagnostics import emotion_heads_and_gate
    from .evaluation import evaluate_records
    from .metrics import distinct_n, emotion_accuracy, perplexities

    records = list(evaluate_records(model, tokenizer, samples, batch_size, with_associations=False, progress=False,
                                    collator=collator, max_new_tokens=1))
    m = len(samples) if greedy_samples is None else min(greedy_samples, len(samples))
    greedy = list(evaluate_records(model, tokenizer, samples, batch_size, with_associations=False, progress=False,
                                   collator=collator, indices=range(m), max_new_tokens=max_new_tokens))
    ppl = perplexities([r["nll_sum"] for r in records], [r["n_tokens"] for r in records])
    responses = [r["generated_response"] for r in sorted(greedy, key=lambda r: (r["conv_id"], r["turn"]))]
    report = {
        "samples": len(records),
        "emotion_accuracy_x100": round(100 * emotion_accuracy([r["predicted_emotion"] for r in records],
                                                              [r["gold_emotion"] for r in records]), 2),
        "ppl_paper": round(ppl["ppl_paper"], 3),
        "ppl_corpus": round(ppl["ppl_corpus"], 3),
        "greedy_samples": m,
        "dist1_x100": round(100 * distinct_n(responses, 1), 3),
        "dist2_x100": round(100 * distinct_n(responses, 2), 3),
    }
    diagnosis = emotion_heads_and_gate(model, collator, samples, batch_size)
    report.update({k: v for k, v in diagnosis.items() if k.startswith("acc_") and k != "acc_product_of_heads"})
    if "gate_mean" in diagnosis:
        report.update({"gate_logit_mean": diagnosis["gate_logit_mean"], "gate_mean": diagnosis["gate_mean"],
                       "association_decoder_weight_mean": round(1 - diagnosis["gate_mean"], 5),
                       "share_tokens_gate_above_0.999": diagnosis["share_tokens_gate_above_0.999"]})
    report["examples"] = [{"context": r["context"], "gold_response": r["gold_response"],
                           "generated_response": r["generated_response"]} for r in greedy[:5]]
    return report
