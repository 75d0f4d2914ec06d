"""The paper's evaluation protocol on a split: teacher-forced NLL, greedy generation (50 tokens), emotion,
associated words; one JSONL record per sample (resumable) and the metrics of :mod:`modeling_iamm.metrics`."""

import json
import logging
import os
from typing import Any, Dict, Iterator, List, Optional

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from .collator import IAMMDataCollator
from .inference import predict_batch
from .metrics import compute_metrics

logger = logging.getLogger(__name__)


def _key(sample: Dict[str, Any]) -> str:
    return f"{sample['conv_id']}#{sample['turn']}"


def read_records(path: str) -> List[Dict[str, Any]]:
    """The complete records of a predictions JSONL (an unfinished last line, from a killed run, is ignored)."""
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
                raise ValueError(f"{path}, line {lineno}: not a JSON record ({e.msg}); move the file away to start over") from None
    return records


@torch.no_grad()
def evaluate_records(
    model,
    tokenizer: PreTrainedTokenizerBase,
    samples: Dataset,
    batch_size: int = 32,
    with_associations: bool = True,
    skip: int = 0,
    progress: bool = True,
    **generate_kwargs: Any,
) -> Iterator[Dict[str, Any]]:
    """Yield one record per sample (from `skip` on): NLL of the gold response, greedy response, emotion, associations."""
    collator = IAMMDataCollator(tokenizer, relation_names=model.config.relation_names)
    model.eval()
    generate_kwargs.setdefault("max_new_tokens", model.config.max_new_tokens_default)
    bar = tqdm(total=len(samples), initial=skip, desc="Evaluating", unit="sample", disable=not progress)
    for start in range(skip, len(samples), batch_size):
        chunk = [samples[i] for i in range(start, min(start + batch_size, len(samples)))]
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
    **generate_kwargs: Any,
) -> Dict[str, Any]:
    """Evaluate `samples`, writing `predictions.jsonl` (one record per sample, appended and flushed as it goes)
    and `metrics.json` into `output_dir`. An interrupted run resumes where it stopped; a finished one is never
    overwritten unless `overwrite=True`."""
    os.makedirs(output_dir, exist_ok=True)
    predictions_path = os.path.join(output_dir, "predictions.jsonl")
    metrics_path = os.path.join(output_dir, "metrics.json")
    if overwrite:
        for path in (predictions_path, metrics_path):
            if os.path.exists(path):
                os.remove(path)
    done = read_records(predictions_path)
    if done:
        expected = [_key(samples[i]) for i in range(min(len(done), len(samples)))]
        if len(done) > len(samples) or [r["id"] for r in done] != expected:
            raise ValueError(
                f"{predictions_path} holds records of other samples (different split, data or order): "
                f"pass overwrite=True (--overwrite_output true) or another output directory"
            )
        if len(done) == len(samples) and os.path.exists(metrics_path):
            raise FileExistsError(f"{output_dir} already holds a finished evaluation; pass --overwrite_output true to redo it")
        logger.warning("%s: resuming after %d of %d samples", predictions_path, len(done), len(samples))
        with open(predictions_path, "rb+") as f:  # drop an unfinished last line before appending
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)
    with open(predictions_path, "a", encoding="utf-8") as f:
        for record in evaluate_records(model, tokenizer, samples, batch_size, with_associations, skip=len(done),
                                       progress=progress, **generate_kwargs):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
    metrics = compute_metrics(read_records(predictions_path))
    metrics["generation"] = dict(generate_kwargs)
    metrics.update(extra_metrics or {})
    with open(metrics_path, "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


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
