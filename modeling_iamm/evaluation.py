"""The paper's evaluation protocol on a split: teacher-forced NLL, greedy generation (50 tokens), emotion,
associated words; one JSONL record per sample (resumable) and the metrics of :mod:`modeling_iamm.metrics`."""

import hashlib
import json
import logging
import math
import os
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from .collator import IAMMDataCollator
from .folders import FolderLock, ensure_folder
from .inference import check_generate_kwargs, predict_batch
from .metrics import compute_metrics
from .tokenization import tokenizer_fingerprint

logger = logging.getLogger(__name__)

PREDICTIONS_NAME, METRICS_NAME, MANIFEST_NAME = "predictions.jsonl", "metrics.json", "manifest.json"
# manifest entries recorded for the reader but not compared on resume (the weights' fingerprint decides)
_INFORMATIONAL = ("model",)


class NonFiniteMetricError(ValueError):
    """A metric came out NaN or infinite (some samples have a non-finite NLL): the evaluation is not valid."""


def _key(sample: Mapping[str, Any]) -> str:
    return f"{sample['conv_id']}#{sample['turn']}"


def model_fingerprint(model) -> str:
    """A hash of what decides a model's outputs: every weight (name, dtype, shape, bytes) and the config (without
    its path and library version). Equal fingerprints: the same model, wherever it was loaded from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    config = {k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def evaluation_manifest(model, tokenizer: PreTrainedTokenizerBase, samples: Dataset, collator: IAMMDataCollator,
                        with_associations: bool, generate_kwargs: Mapping[str, Any],
                        run_info: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """What the records of an evaluation are made with; a resume must match it entry for entry.

    `run_info` adds the caller's settings (model path, data source, split, `max_samples`, ...). The batch size is
    not part of it: IAMM's outputs do not depend on the batch.
    """
    manifest: Dict[str, Any] = dict(run_info or {})
    manifest.update(
        model_fingerprint=model_fingerprint(model),
        tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
        use_situation=bool(model.config.use_situation),
        samples=len(samples),
        length_limits=collator.length_limits,
        generation=dict(sorted(generate_kwargs.items())),
        with_associations=with_associations,
    )
    return json.loads(json.dumps(manifest, default=str))  # what reading it back from disk gives


class RecordError(ValueError):
    """A line of a JSONL file of records is not a JSON record; says which file and line, and what to do (`remedy`:
    by default the advice for a resumable output file, which :meth:`with_remedy` replaces for a file that is only
    read)."""

    def __init__(self, path: str, lineno: int, reason: str, remedy: str = "move the file away to start over"):
        self.path, self.lineno, self.reason = path, lineno, reason
        super().__init__(f"{path}, line {lineno}: not a JSON record ({reason}); {remedy}")

    def with_remedy(self, remedy: str) -> "RecordError":
        return RecordError(self.path, self.lineno, self.reason, remedy)


def read_records(path: str) -> List[Dict[str, Any]]:
    """The complete records of a predictions JSONL (an unfinished last line, from a killed run, is ignored); a line
    that is not a JSON record is a :class:`RecordError`."""
    records = []
    if not os.path.exists(path):
        return records
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for lineno, line in enumerate(lines[:-1], start=1):  # the text after the last newline is never complete
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise RecordError(path, lineno, e.msg) from None
    return records


def _length_order(samples: Dataset, indices: Sequence[int], collator: IAMMDataCollator) -> List[int]:
    """`indices` sorted by padded size (context turns x longest utterance, then target length), longest first, so
    that each batch holds samples of similar size (little padding) and an out-of-memory shows at once."""
    if not indices:
        return []
    columns = samples.select_columns([c for c in ("context_words", "context", "target_words", "target")
                                      if c in samples.column_names])[list(indices)]
    turns_cap, utt_cap = collator.max_context_turns, collator.max_utterance_length
    if "context_words" in columns:
        contexts = columns["context_words"]
    else:
        contexts = [[u.split() for u in ctx] for ctx in columns["context"]]
    targets = columns["target_words"] if "target_words" in columns else [t.split() for t in columns["target"]]

    def size(k: int):
        ctx = contexts[k][-turns_cap:] if turns_cap else contexts[k]
        longest = max((len(u) for u in ctx), default=0)
        return (len(ctx) * min(longest, utt_cap or longest), len(targets[k]))

    order = sorted(range(len(indices)), key=lambda k: size(k), reverse=True)
    return [indices[k] for k in order]


@torch.no_grad()
def evaluate_records(
    model,
    tokenizer: PreTrainedTokenizerBase,
    samples: Dataset,
    batch_size: int = 32,
    with_associations: bool = True,
    skip: int = 0,
    progress: bool = True,
    collator: Optional[IAMMDataCollator] = None,
    indices: Optional[Sequence[int]] = None,
    **generate_kwargs: Any,
) -> Iterator[Dict[str, Any]]:
    """Yield one record per sample: NLL of the gold response, generated response (greedy by default), emotion,
    associations.

    The samples (`indices`, default: all from `skip` on) are batched by length (see :func:`_length_order`), so
    records come in that order; each carries its `id` (`conv_id#turn`).
    """
    collator = collator or IAMMDataCollator(tokenizer, relation_names=model.config.relation_names)
    model.eval()
    generate_kwargs.setdefault("max_new_tokens", model.config.max_new_tokens_default)
    indices = list(range(skip, len(samples))) if indices is None else list(indices)
    order = _length_order(samples, indices, collator)
    bar = tqdm(total=len(samples), initial=len(samples) - len(order), desc="Evaluating", unit="sample",
               disable=not progress)
    for start in range(0, len(order), batch_size):
        chunk = samples[order[start:start + batch_size]]  # columns -> rows
        chunk = [dict(zip(chunk, values)) for values in zip(*chunk.values())]
        prediction = predict_batch(model, tokenizer, collator, chunk, with_associations, **generate_kwargs)
        tensors = prediction.tensors
        # teacher-forced log-likelihood of the gold response (its [EOS] included), per sample, same encoder outputs
        out = model(encoder_outputs=prediction.encoder_outputs, decoder_input_ids=tensors["decoder_input_ids"],
                    labels=tensors["labels"], return_logits=False)
        nll_sums, n_tokens = (-out.token_log_probs.sum(1)).tolist(), (tensors["labels"] != -100).sum(1).tolist()
        for i, sample in enumerate(chunk):
            record = {
                "id": _key(sample),
                "conv_id": sample["conv_id"],
                "turn": sample["turn"],
                "situation": sample["situation"],
                "context": sample["context"],
                "gold_emotion": sample["emotion"],
                "predicted_emotion": prediction.emotions[i],
                "gold_response": sample["target"],
                "generated_response": prediction.responses[i],
                "nll_sum": nll_sums[i],
                "n_tokens": n_tokens[i],
            }
            if prediction.associations is not None:
                record["associations"] = prediction.associations[i]
            yield record
        bar.update(len(chunk))
    bar.close()


def check_finite_metrics(metrics: Mapping[str, Any], records: Sequence[Mapping[str, Any]] = (),
                         where: str = "evaluation") -> None:
    """Raise :class:`NonFiniteMetricError` naming every NaN/infinite metric and how many samples have a
    non-finite NLL (a NaN perplexity is a broken model or input, never a result)."""
    bad = [name for name, value in metrics.items()
           if isinstance(value, float) and not math.isfinite(value)]
    if not bad:
        return
    broken = [r.get("id", "?") for r in records if not math.isfinite(float(r.get("nll_sum", 0.0)))]
    detail = (f"; {len(broken)} of {len(records)} samples have a non-finite NLL (first: {', '.join(broken[:5])})"
              if records else "")
    raise NonFiniteMetricError(
        f"{where}: {', '.join(f'{name}={metrics[name]}' for name in bad)} is not finite{detail}. The model produced "
        f"NaN/inf scores (diverged weights, or inputs longer than it can handle: check the length limits "
        f"--max_utterance_length/--max_context_turns and the training log)"
    )


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    """The JSON object in `path`, or None if the file is missing, empty or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _check_resume(output_dir: str, manifest: Dict[str, Any]) -> None:
    manifest_path = os.path.join(output_dir, MANIFEST_NAME)
    old = _read_json(manifest_path)
    todo = "pass --overwrite_output true (overwrite=True) to replace them, or choose another --output_dir"
    if old is None:
        raise ValueError(f"{output_dir} holds predictions without a readable {MANIFEST_NAME}: it cannot be told "
                         f"what model, data and settings made them; {todo}")
    differ = [k for k in sorted(set(old) | set(manifest)) if k not in _INFORMATIONAL and old.get(k) != manifest.get(k)]
    if differ:
        lines = "; ".join(f"{k}: {old.get(k)!r} there, {manifest.get(k)!r} now" for k in differ)
        raise ValueError(f"{output_dir} holds records of another evaluation ({lines}); resuming would mix the two. "
                         f"To continue that evaluation, rerun it with its settings; otherwise {todo}")


def run_evaluation(
    model,
    tokenizer: PreTrainedTokenizerBase,
    samples: Dataset,
    output_dir: str,
    batch_size: int = 32,
    with_associations: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    extra_metrics: Optional[Dict[str, Any]] = None,
    collator: Optional[IAMMDataCollator] = None,
    run_info: Optional[Mapping[str, Any]] = None,
    **generate_kwargs: Any,
) -> Dict[str, Any]:
    """Evaluate `samples`, writing `predictions.jsonl` (one record per sample, appended and flushed as it goes,
    finally in the samples' order), `manifest.json` (what the records are made with, see
    :func:`evaluation_manifest`) and `metrics.json` into `output_dir`.

    An interrupted run resumes where it stopped, only with the same model, tokenizer, data and settings (else a
    `ValueError` says which differ); a finished one (a readable `metrics.json`) is never overwritten unless
    `overwrite=True`. Non-finite metrics raise :class:`NonFiniteMetricError` (and write no `metrics.json`).

    One evaluation at a time writes into `output_dir`: it holds the folder's lock (:class:`~.folders.FolderLock`)
    from before it reads anything there until it returns, and a second one raises
    :class:`~.folders.FolderLockedError` naming the holder. With `num_return_sequences > 1` a record keeps every
    response (a list) and Dist-n is computed over the first response of each sample.
    """
    check_generate_kwargs(generate_kwargs)  # before anything is written, the folder included
    ensure_folder(output_dir)
    with FolderLock(output_dir, "evaluation"):
        return _run_evaluation(model, tokenizer, samples, output_dir, batch_size, with_associations, overwrite,
                               progress, extra_metrics, collator, run_info, **generate_kwargs)


def _run_evaluation(model, tokenizer, samples, output_dir, batch_size, with_associations, overwrite, progress,
                    extra_metrics, collator, run_info, **generate_kwargs) -> Dict[str, Any]:
    collator = collator or IAMMDataCollator(tokenizer, relation_names=model.config.relation_names)
    generate_kwargs.setdefault("max_new_tokens", model.config.max_new_tokens_default)
    predictions_path = os.path.join(output_dir, PREDICTIONS_NAME)
    metrics_path = os.path.join(output_dir, METRICS_NAME)
    manifest_path = os.path.join(output_dir, MANIFEST_NAME)
    manifest = evaluation_manifest(model, tokenizer, samples, collator, with_associations, generate_kwargs, run_info)
    if overwrite:
        for path in (predictions_path, metrics_path, manifest_path):
            if os.path.exists(path):
                os.remove(path)
    keys = [_key(row) for row in samples.select_columns(["conv_id", "turn"])]
    done = read_records(predictions_path)
    if done or os.path.exists(metrics_path):
        _check_resume(output_dir, manifest)
        done_ids = [r.get("id") for r in done]
        unknown = sorted(set(done_ids) - set(keys))
        if unknown or len(set(done_ids)) != len(done_ids):
            raise ValueError(
                f"{predictions_path} holds records of other samples or twice the same ({unknown[:3] or 'duplicates'}): "
                f"pass overwrite=True (--overwrite_output true) or another output directory"
            )
        finished = _read_json(metrics_path)
        if len(done) == len(samples) and finished is not None and finished.get("samples") == len(samples):
            raise FileExistsError(f"{output_dir} already holds a finished evaluation; pass --overwrite_output true to redo it")
        if os.path.exists(metrics_path):
            logger.warning("%s is empty or unreadable: the evaluation is not finished; completing it", metrics_path)
            os.remove(metrics_path)
        logger.warning("%s: resuming after %d of %d samples", predictions_path, len(done), len(samples))
        with open(predictions_path, "rb+") as f:  # drop an unfinished last line before appending
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)
    else:
        with open(manifest_path, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
    done_ids = {r["id"] for r in done}
    todo = [i for i, key in enumerate(keys) if key not in done_ids]
    start, graphs_before = time.perf_counter(), compiled_graphs()
    with open(predictions_path, "a", encoding="utf-8") as f:
        for record in evaluate_records(model, tokenizer, samples, batch_size, with_associations, progress=progress,
                                       collator=collator, indices=todo, **generate_kwargs):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
    seconds = time.perf_counter() - start
    records = _in_order(read_records(predictions_path), keys, predictions_path)
    metrics = compute_metrics(records)
    check_finite_metrics(metrics, records, where=predictions_path)
    metrics["generation"] = dict(generate_kwargs)
    if (generate_kwargs.get("num_return_sequences") or 1) > 1:
        metrics["dist_over"] = "the first response of each sample (predictions.jsonl keeps them all)"
    metrics["length_limits"] = collator.length_limits
    metrics["truncated"] = collator.truncation_report()
    # throughput of this invocation (a resumed run: of the samples it evaluated), model loading not counted, and
    # the graphs torch.compile built meanwhile (0 for an eager model)
    metrics["runtime"] = {"evaluated_samples": len(todo), "seconds": round(seconds, 3),
                          "samples_per_second": round(len(todo) / seconds, 2) if seconds > 0 else None,
                          "compiled_graphs": compiled_graphs() - graphs_before}
    if metrics["truncated"]:
        logger.warning("length limits cut %s (texts per limit; turns: samples) in this run", metrics["truncated"])
    metrics.update(extra_metrics or {})
    with open(metrics_path, "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


def compiled_graphs() -> int:
    """How many graphs torch.compile (Dynamo) built in this process so far, recompilations included."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _in_order(records: List[Dict[str, Any]], keys: List[str], path: str) -> List[Dict[str, Any]]:
    """Rewrite `path` with its records in the samples' order (atomically) and return them in that order."""
    by_id = {r["id"]: r for r in records}
    missing = [k for k in keys if k not in by_id]
    if missing:
        raise RuntimeError(f"{path}: records missing for {len(missing)} samples (first: {missing[0]})")
    ordered = [by_id[k] for k in keys]
    if [r["id"] for r in records] != keys:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered)
        os.replace(tmp, path)
    return ordered


def results_table(runs: Dict[str, Dict[str, Any]]) -> str:
    """A Markdown table of evaluation results, one row per run: `runs` maps a run name to its `metrics.json`
    content, optionally with a `"train"` entry holding the run's `train_summary.json` (steps and best checkpoint)."""
    header = ("| run | steps trained | best checkpoint | Acc | PPL (paper) | PPL (corpus) | Dist-1 | Dist-2 |\n"
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    rows = [header]
    for name, metrics in runs.items():
        train = metrics.get("train") or {}
        best = train.get("best_checkpoint")
        rows.append(
            f"| {name} | {train.get('global_step', '')} | {os.path.basename(best) if best else ''} | "
            f"{metrics['emotion_accuracy_x100']:.2f} | {metrics['ppl_paper']:.2f} | {metrics['ppl_corpus']:.2f} | "
            f"{metrics['dist1_x100']:.2f} | {metrics['dist2_x100']:.2f} |"
        )
    return "\n".join(rows)
