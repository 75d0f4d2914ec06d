"""Model, adapter and dataset cards for the Hub, built with `huggingface_hub.ModelCard`/`DatasetCard`.

The templates are Jinja strings in this module (so they ship with the package); the YAML metadata (licence,
`model-index` with the evaluation results, `base_model`, dataset `configs`) comes from the card data objects.
"""

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

ED_HUB_ID = "facebook/empathetic_dialogues"
DATA_LICENSE = "cc-by-nc-4.0"
PAPER = ("Yang et al., *An Iterative Associative Memory Model for Empathetic Response Generation*, ACL 2024 "
         "(https://aclanthology.org/2024.acl-long.170/)")

MODEL_METRICS = (
    # (metrics.json key, metric type, metric name)
    ("emotion_accuracy_x100", "accuracy", "Emotion accuracy (x100)"),
    ("ppl_paper", "perplexity", "Perplexity (paper's estimator: exp of the mean per-sample NLL)"),
    ("ppl_corpus", "perplexity", "Perplexity (corpus estimator: exp of total NLL / total tokens)"),
    ("dist1_x100", "dist-1", "Dist-1 (x100)"),
    ("dist2_x100", "dist-2", "Dist-2 (x100)"),
)

MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

IAMM, the Iterative Associative Memory Model of {{ paper }}, for EmpatheticDialogues-style dialogues (see
"Training data" for what it was trained on). Given a dialogue (the speaker's utterances and the listener's earlier
turns) and, optionally, the speaker's situation, it predicts the speaker's emotion (32 labels), generates an
empathetic listener response, and returns the words it associated across the utterances, the situation and its
memory.

## Intended use and limits

Research on empathetic response generation and on interpretable associations; not a counselling or mental-health
tool. The model is small (one-layer encoders and decoders, a word-level vocabulary built from the training split),
answers in lowercase English, and knows only the words of its training data (others are copied from the context
or become `[UNK]`). The training data is licensed CC BY-NC 4.0, so these weights are for non-commercial use
(`license: cc-by-nc-4.0`); the code (`*.py` in this repository) is Apache-2.0.

## Setting

{{ setting }}

## Training data

{{ training_data }}

## Hyperparameters

| parameter | value |
| --- | --- |
{% for name, value in hyperparameters %}| {{ name }} | {{ value }} |
{% endfor %}
## Evaluation

{{ evaluation }}

## Usage

The model code and the `empathetic-response` pipeline ship with the weights (`trust_remote_code=True`).

```python
{{ usage }}
```

The pipeline takes a dialogue (a list of utterances, the last one the speaker's, or
`{"turns": [...], "situation": "..."}`) or a list of them (run in batches of `batch_size`, default 16), passes
generation arguments (`num_beams`, `do_sample`, `top_p`, `max_new_tokens`, ...) to `generate`, and returns per
dialogue `emotion`, `emotion_scores`, `head_probabilities` (context/situation/memory/knowledge heads), `response`,
`situation` (`"without_situation"` when the dialogue has none: the situation head is then left out), `truncated`
(what the model's saved length limits cut; `length_limits={...}` changes them) and `associated_words`.

## Citation

{{ paper }}
"""

ADAPTER_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A LoRA adapter for `{{ base_model }}`: the IAMM_large setting of {{ paper }}, where an LLM is fine-tuned on
empathetic-dialogue instructions. {{ instruction_format }}

## Intended use and limits

Research on empathetic response generation; not a counselling or mental-health tool. The instructions are built
from EmpatheticDialogues (CC BY-NC 4.0), so the adapter is for non-commercial use. The base model's own licence
applies to the base weights.

## Adapter

| parameter | value |
| --- | --- |
{% for name, value in adapter_settings %}| {{ name }} | {{ value }} |
{% endfor %}
## Usage

```python
{{ usage }}
```
"""

DATASET_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ pretty_name }}

Instructions for the IAMM_large setting of {{ paper }}: one record per listener turn of EmpatheticDialogues
({{ source_url }}), with the dialogue, the emotion label, the gold response and the words that a trained IAMM
associated, turned into instructions with and without those words.

## Columns

| column | type | content |
| --- | --- | --- |
{% for name, type, content in columns %}| `{{ name }}` | {{ type }} | {{ content }} |
{% endfor %}
## Source and licence

Derived from EmpatheticDialogues (Rashkin et al., 2019), licensed CC BY-NC 4.0; this derivative keeps that licence
(non-commercial use only). {{ source_data }}

## Splits

| split | records |
| --- | ---: |
{% for split, count in counts %}| {{ split }} | {{ count }} |
{% endfor %}
## Processing

{{ processing }}

## Associations

{{ associations_source }}

## Usage

```python
from datasets import load_dataset

instructions = load_dataset("{{ repo_id }}")
print(instructions["{{ example_split }}"][0]["{{ example_column }}"])
```
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def knowledge_setting(config: Dict[str, Any]) -> str:
    """Say, in a sentence per switch, which parts of IAMM this configuration uses (the paper's ablations)."""
    implicit = config.get("use_implicit_association", True)
    lines = [
        "- explicit association (words of utterances, situation, history): "
        + ("on" if config.get("use_explicit_association", True) else "OFF (ablation: without explicit association)"),
        "- implicit association (COMET knowledge of the situation and utterances): "
        + ("on" if implicit else "OFF: trained without commonsense knowledge, the paper's \"w/o implicit "
                                  "association\" ablation (Table 1), not the full IAMM"),
        "- word selector and association decoder: "
        + ("on" if config.get("use_word_selector", True) else "OFF (ablation: without word selector)"),
        "- situation text read: " + ("yes" if config.get("use_situation", True) else "no"),
        "- pointer-generator (copy from the context): " + ("on" if config.get("use_pointer_generator", True) else "off"),
    ]
    return "\n".join(lines)


def model_hyperparameters(config: Dict[str, Any], summary: Dict[str, Any]) -> List[List[str]]:
    """Rows `[name, value]` of the model's size and training, from config.json and train_summary.json."""
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "attention_head_dim", "intermediate_size",
            "association_heads", "association_head_dim", "num_keywords", "num_associated_words", "num_memory_words",
            "vocab_size", "ffn_type", "emotion_loss_weight")
    rows = [[k, _fmt(config[k])] for k in keys if k in config]
    average = config.get("checkpoint_average")  # scripts/average_checkpoints.py
    if average and average.get("steps"):
        steps = average["steps"]
        rows.append(["weights", f"mean of {len(steps)} checkpoints, steps {', '.join(map(str, steps))}"])
    for key in ("global_step", "train_loss", "best_checkpoint", "best_metric", "vocabulary", "samples",
                "train_seconds"):
        if summary.get(key) is not None:
            value = checkpoint_name(summary[key]) if key == "best_checkpoint" else _fmt(summary[key])
            rows.append([f"training: {key}", value])
    return rows


def is_local_path(name: str) -> bool:
    """Whether a recorded model name is a path rather than a Hub id `namespace/name` (for records that do not say)."""
    return os.path.exists(name) or name.startswith(("/", ".", "~")) or name.count("/") != 1


def checkpoint_name(name: str, hub_id: bool = False) -> str:
    """How a card names a checkpoint: a link for a Hub id, else "local checkpoint" with the folder's last part
    (a path of the machine that trained it means nothing to a reader)."""
    if hub_id:
        return f"[{name}](https://huggingface.co/{name})"
    return f"local checkpoint `{os.path.basename(os.path.normpath(str(name)))}`"


def decoding_description(generation: Dict[str, Any]) -> str:
    """The decoding of an evaluation in words, from its generation arguments (`metrics.json`'s `generation`)."""
    beams = int(generation.get("num_beams") or 1)
    if generation.get("do_sample"):
        knobs = [f"{k} {generation[k]}" for k in ("top_p", "top_k", "temperature") if generation.get(k) is not None]
        text = "sampling" + (f" ({', '.join(knobs)})" if knobs else "")
    elif beams > 1:
        text = f"beam search ({beams} beams)"
    else:
        text = "greedy decoding"
    extras = [f"at most {generation['max_new_tokens']} new tokens"] if generation.get("max_new_tokens") else []
    if generation.get("no_repeat_ngram_size"):
        extras.append(f"no repeated {generation['no_repeat_ngram_size']}-grams")
    if generation.get("repetition_penalty") not in (None, 1.0):
        extras.append(f"repetition penalty {generation['repetition_penalty']}")
    if (generation.get("num_return_sequences") or 1) > 1:
        extras.append(f"{generation['num_return_sequences']} responses per sample, Dist-n over the first")
    return text + (f", {', '.join(extras)}" if extras else "")


def model_eval_results(metrics: Dict[str, Any], dataset_split: str, dataset_name: str = "EmpatheticDialogues"
                       ) -> List[EvalResult]:
    """`EvalResult`s (the card's `model-index`) from a `metrics.json` of `scripts/evaluate.py`."""
    results = []
    for key, metric_type, metric_name in MODEL_METRICS:
        if metrics.get(key) is None:
            continue
        results.append(EvalResult(
            task_type="text-generation", task_name="Empathetic response generation", dataset_type=ED_HUB_ID,
            dataset_name=dataset_name, dataset_split=dataset_split, metric_type=metric_type,
            metric_name=metric_name, metric_value=round(float(metrics[key]), 4),
        ))
    return results


def revision_argument(revision: Optional[str]) -> str:
    """`, revision="..."` for a usage snippet (a Python string literal), or nothing for `main`."""
    return f", revision={json.dumps(revision)}" if revision and revision != "main" else ""


def model_usage(repo_id: str, revision: Optional[str] = None) -> str:
    """The usage snippet of the model card (loads the model and runs the pipeline from the Hub)."""
    rev = revision_argument(revision)
    return (
        "from transformers import AutoModel, AutoTokenizer, pipeline\n\n"
        f'model = AutoModel.from_pretrained("{repo_id}"{rev}, trust_remote_code=True)\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}"{rev}, trust_remote_code=True)\n'
        f'chat = pipeline("empathetic-response", model="{repo_id}"{rev}, trust_remote_code=True)\n'
        'result = chat({"turns": ["I finally passed my driving test after three tries!"],\n'
        '               "situation": "I passed my driving test."})\n'
        'print(result["emotion"], "->", result["response"])\n'
        'print(result["associated_words"]["memory_words"])\n'
        'result = chat(["I passed my exam!"])  # no situation: the situation head is left out\n'
        'print(result["situation"], sorted(result["head_probabilities"]))'
    )


BUNDLED_SAMPLE = "the EmpatheticDialogues sample bundled with iamm (`modeling_iamm/sample_data`)"


def data_source(name: Any, kind: Optional[str] = None) -> Optional[str]:
    """A recorded data source in words: the bundled sample, a Hub dataset link, or "a local copy" with the folder's
    last part (a path of the machine that built something means nothing to a reader). `kind` is the recorded
    `data_source` (`bundled_sample`, `hub`, `local`) when there is one. None when nothing was recorded."""
    if isinstance(name, dict):  # one file per split
        names = [os.path.basename(str(path)) for path in name.values()]
        return f"local files {', '.join(f'`{n}`' for n in names)}" if names else None
    if not name:
        return None
    name = str(name)
    if kind == "bundled_sample" or os.path.normpath(name).endswith(os.path.join("modeling_iamm", "sample_data")):
        return BUNDLED_SAMPLE
    if kind == "hub" or (kind is None and not is_local_path(name)):
        return f"[{name}](https://huggingface.co/datasets/{name})"
    return f"a local copy (`{os.path.basename(os.path.normpath(name))}`)"


def max_samples_text(max_samples: Any) -> str:
    """`, the first N samples of each split (--max_samples N)` when a run was limited, else nothing."""
    return (f", only the first {max_samples} samples of each split (`--max_samples {max_samples}`)"
            if max_samples else "")


def model_training_data(summary: Dict[str, Any]) -> str:
    """The model card's training data: the source and sample limit `train_summary.json` records (`data`,
    `data_source`, `max_samples`), else a statement that they were not recorded, with the sample counts it has."""
    samples = summary.get("samples") or {}
    counts = (f"{', '.join(f'{k} {v}' for k, v in samples.items())} samples (one per listener turn)"
              if samples else "")
    vocabulary = (f"a vocabulary of {summary['vocabulary']} words built from the training split only"
                  if summary.get("vocabulary") else "")
    details = " and ".join(part for part in (counts, vocabulary) if part)
    source = data_source(summary.get("data"), summary.get("data_source"))
    if source:
        return (f"{source[0].upper()}{source[1:]}{max_samples_text(summary.get('max_samples'))}"
                + (f": {details}" if details else "") + ". EmpatheticDialogues is licensed CC BY-NC 4.0.")
    return ("Which data this checkpoint was trained on was not recorded (its train_summary.json names no data "
            "source)" + (f"; it records {details}" if details else "") + ". The model reads EmpatheticDialogues-"
            "format dialogues; EmpatheticDialogues is licensed CC BY-NC 4.0.")


def build_model_card(repo_id: str, config: Dict[str, Any], summary: Dict[str, Any],
                     metrics: Optional[Dict[str, Any]] = None, revision: Optional[str] = None) -> ModelCard:
    """The model card of an IAMM checkpoint (config.json, train_summary.json, optionally a `metrics.json` of
    evaluate.py checked by `iamm.hub.folders.check_metrics`, which records its `split` and `generation`)."""
    model_name = repo_id.split("/")[-1]
    eval_split = metrics["split"] if metrics else None
    bundled = bool(metrics) and metrics.get("data") == "bundled sample"
    dataset_name = "EmpatheticDialogues (the sample bundled with iamm)" if bundled else "EmpatheticDialogues"
    eval_results = model_eval_results(metrics, eval_split, dataset_name) if metrics else None
    recorded = summary.get("data_source")  # the metadata names training data only when it was recorded
    datasets = [summary["data"]] if recorded == "hub" else [ED_HUB_ID] if recorded else None
    card_data = ModelCardData(
        language="en", license=DATA_LICENSE, library_name="transformers", pipeline_tag="text-generation",
        tags=["iamm", "empathetic-dialogues", "emotion-recognition", "custom_code"], datasets=datasets,
        model_name=model_name, eval_results=eval_results,
        metrics=sorted({r.metric_type for r in eval_results}) if eval_results else None,
    )
    if metrics:
        evaluation = (
            f"On the {eval_split} split{' of the EmpatheticDialogues sample bundled with iamm' if bundled else ''} "
            f"({metrics['samples']} samples), "
            f"{decoding_description(metrics.get('generation') or {})}: "
            + "; ".join(f"{name} {float(metrics[key]):.2f}" for key, _, name in MODEL_METRICS
                        if metrics.get(key) is not None)
            + ". Perplexity is reported with both estimators; the paper's Table 1 uses the per-sample one. "
              "Dist-n counts distinct n-grams over all generated responses, with the model's word tokenisation."
        )
    else:
        evaluation = "No evaluation results were given when this checkpoint was published."
    training_data = model_training_data(summary)
    if not config.get("use_implicit_association", True) or summary.get("implicit_association") is False:
        training_data += " No commonsense knowledge (COMET) was used."
    return ModelCard.from_template(
        card_data, template_str=MODEL_CARD_TEMPLATE, model_name=model_name, paper=PAPER,
        setting=knowledge_setting(config), training_data=training_data,
        hyperparameters=model_hyperparameters(config, summary), evaluation=evaluation,
        usage=model_usage(repo_id, revision),
    )


INSTRUCTION_FORMATS = {
    "messages": "It was trained on the `messages` column: instructions that include the words IAMM associated "
                "(high- and low-weight words), as in the paper's IAMM_large.",
    "plain_messages": "It was trained on the `plain_messages` column: the same instructions without the associated "
                      "words (the paper's plain fine-tuning baseline).",
}

DATA_FORMATS = {
    "authors": "The instructions follow the IAMM_large authors' format (their wording, one glmtuner user turn, "
               "answers `Emotion:<label>\\n Response:<reply>`), which reproduces the paper.",
    "iamm": "The instructions follow this package's own format (a system and a user turn in the base model's chat "
            "template, answers `Emotion: <label>\\nResponse: <reply>`).",
}


CHATGLM3_6B_SIZE = {"layers": 28, "hidden_size": 4096}
"""ChatGLM3-6B's depth and width (its config: `num_layers` 28, `hidden_size` 4096)."""


def chatglm3_base(base: Dict[str, Any]) -> str:
    """How an adapter card names a ChatGLM3 base: ChatGLM3-6B only when the recorded base has its size (or, when
    the base's config is not on this machine, when its recorded Hub id says so); otherwise the recorded size."""
    size = base.get("size")
    if size:
        if size == CHATGLM3_6B_SIZE:
            return "ChatGLM3-6B"
        return (f"a ChatGLM3-architecture model with {size['layers']} layers of width {size['hidden_size']} (not "
                f"ChatGLM3-6B, which has {CHATGLM3_6B_SIZE['layers']} of {CHATGLM3_6B_SIZE['hidden_size']})")
    recorded = base.get("recorded") or ""
    if recorded and not is_local_path(recorded):
        return f"ChatGLM3 (`{recorded}`)"
    return "a ChatGLM3 model (its size was not recorded)"


def build_adapter_card(repo_id: str, adapter_config: Dict[str, Any], training: Dict[str, Any],
                       base: Dict[str, Any], dataset_repo: Optional[str] = None,
                       revision: Optional[str] = None) -> ModelCard:
    """The card of a LoRA adapter trained on IAMM instructions.

    Args:
        adapter_config: the adapter's `adapter_config.json`.
        training: what it was trained on (`iamm.hub.folders.adapter_training`: `instruction_column`, `data_format`).
        base: its base model (`iamm.hub.folders.adapter_base_model`: `hub_id`, `chatglm3`).
    """
    column = training["instruction_column"]
    if column not in INSTRUCTION_FORMATS:
        raise ValueError(f"instruction column must be one of {sorted(INSTRUCTION_FORMATS)}, got {column!r}")
    base_model = base["hub_id"]
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        language="en", license=DATA_LICENSE, library_name="peft", base_model=base_model,
        pipeline_tag="text-generation", tags=["lora", "peft", "iamm", "empathetic-dialogues"],
        datasets=[dataset_repo] if dataset_repo else [ED_HUB_ID], model_name=model_name,
    )
    keys = ("peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "task_type", "bias")
    settings = [[k, _fmt(adapter_config[k])] for k in keys if adapter_config.get(k) is not None]
    settings.append(["instruction column", column])
    if training.get("data_format"):
        settings.append(["instruction format", training["data_format"]])
    lora_args = training.get("lora_args") or {}
    for key in ("qkv_adapter", "max_length", "max_source_length", "max_target_length", "max_train_samples"):
        if lora_args.get(key) is not None:
            settings.append([key, _fmt(lora_args[key])])
    description = INSTRUCTION_FORMATS[column]
    if training.get("data_format") in DATA_FORMATS:
        description += " " + DATA_FORMATS[training["data_format"]]
    rev = revision_argument(revision)
    usage = (
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'base = AutoModelForCausalLM.from_pretrained("{base_model}")\n'
        f'model = PeftModel.from_pretrained(base, "{repo_id}"{rev})'
    )
    if base.get("chatglm3"):
        description += (
            f" The base is {chatglm3_base(base)} in transformers' own `glm` layout (`{base_model}`): ChatGLM3's "
            "remote-code model (THUDM/chatglm3-6b) has other module names, so convert it first with this package's "
            "`python scripts/convert_chatglm3.py --checkpoint_dir <chatglm3 folder> --output_dir <glm folder>` "
            "(or load the converted folder published as the base model).")
    return ModelCard.from_template(
        card_data, template_str=ADAPTER_CARD_TEMPLATE, model_name=model_name, base_model=base_model, paper=PAPER,
        instruction_format=description, adapter_settings=settings, usage=usage,
    )


COLUMN_CONTENTS = {
    "id": "`<conv_id>#<turn>`, one record per listener turn",
    "conv_id": "the EmpatheticDialogues conversation",
    "turn": "index of the gold response in the conversation",
    "situation": "the speaker's situation",
    "context": "the dialogue before the response, oldest first",
    "emotion": "the gold emotion label (one of 32)",
    "target": "the gold listener response",
    "iamm_emotion": "the emotion IAMM predicted",
    "high_words": "associated words with high weights",
    "high_weights": "their weights",
    "low_words": "associated words with low weights",
    "low_weights": "their weights",
    "messages": "the instruction with the associated words (chat messages)",
    "plain_messages": "the same instruction without them",
    "chatglm3_prompt": "`messages` as the ChatGLM3 chat text up to the answer",
    "plain_chatglm3_prompt": "`plain_messages` as the ChatGLM3 chat text",
    "answer": "the fine-tuning target (emotion and response)",
    "format": "the instruction format (`iamm` or `authors`)",
}
"""What each column that `scripts/build_instructions.py` writes holds (the card lists the columns the data has)."""

PROCESSING = {
    "iamm": "Text is normalised as the IAMM model sees it: NFKC, typographic apostrophes made plain, lowercase, the "
            "authors' contraction list expanded, and ED's `_comma_` placeholder turned back into commas.",
    "authors": "Text is lower-cased and tokenised as in the IAMM_large authors' data files (`did n't`, ` ?`; "
               "`iamm.llm.instructions.authors_text`).",
}


def size_category(n: int) -> str:
    """The Hub's `size_categories` bucket for `n` records."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def build_dataset_card(repo_id: str, counts: Dict[str, int], data_files: Dict[str, str],
                       columns: List[Tuple[str, str]], build_info: Optional[Dict[str, Any]] = None) -> DatasetCard:
    """The card of the instruction dataset: splits and counts, `configs` for `load_dataset`, the columns the data
    has (`iamm.hub.folders.dataset_columns`), the IAMM checkpoint the associations come from."""
    card_data = DatasetCardData(
        language=["en"], license=DATA_LICENSE, task_categories=["text-generation"], source_datasets=[ED_HUB_ID],
        size_categories=size_category(sum(counts.values())), pretty_name="IAMM instructions (EmpatheticDialogues)",
        tags=["iamm", "empathetic-dialogues", "instructions"],
        configs=[{"config_name": "default",
                  "data_files": [{"split": split, "path": path} for split, path in data_files.items()]}],
    )
    if build_info:
        model = build_info.get("model")
        source_kind = build_info.get("model_source")  # absent in folders built before it was recorded
        hub_id = source_kind == "hub" if source_kind else bool(model) and not is_local_path(model)
        source = checkpoint_name(model, hub_id=hub_id) if model else "not recorded"
        settings = {k: v for k, v in build_info.items()
                    if k not in ("model", "model_source", "data", "data_source", "max_samples")}
        associations_source = (
            f"The associated words come from the IAMM checkpoint {source}. Build settings:\n\n"
            f"```json\n{json.dumps(settings, indent=2, sort_keys=True)}\n```"
        )
    else:
        associations_source = ("The folder held no `build_info.json`: which IAMM checkpoint produced the "
                               "associations was not recorded.")
    recorded_data = data_source((build_info or {}).get("data"), (build_info or {}).get("data_source"))
    if recorded_data:
        source_data = (f"Built from {recorded_data}"
                       + max_samples_text((build_info or {}).get("max_samples")) + ".")
    else:
        source_data = ("Which copy of EmpatheticDialogues it was built from, and whether it was limited to the first "
                       "samples of each split, were not recorded (`build_info.json` predates them).")
    data_format = (build_info or {}).get("format")
    processing = PROCESSING.get(data_format, "How the text was processed was not recorded (no build_info.json).")
    rows = [(name, dtype, COLUMN_CONTENTS.get(name, "")) for name, dtype in columns]
    names = [name for name, _ in columns]
    example_split = next(iter(data_files))
    example_column = "messages" if "messages" in names else names[0]
    return DatasetCard.from_template(
        card_data, template_str=DATASET_CARD_TEMPLATE, pretty_name=card_data.pretty_name, paper=PAPER,
        source_url=f"https://huggingface.co/datasets/{ED_HUB_ID}", counts=sorted(counts.items()),
        associations_source=associations_source, repo_id=repo_id, columns=rows, processing=processing,
        example_split=example_split, example_column=example_column, source_data=source_data,
    )
