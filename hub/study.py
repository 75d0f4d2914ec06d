"""Publishing an A/B study (:mod:`modeling_iamm.ab_study`) as a Hub dataset: its pairs, every answer, the LLM
judges' raw answers, the report and a card.

`scripts/ab_test.py push` and `scripts/push_to_hub.py --kind study --folder <study>` both come here through
:mod:`iamm.hub.push` (one commit, the same checks and failure reports as every push). The dataset has three
configurations (`pairs`, `judgements`, `judge_outputs`, each one parquet file), `report.md`, `report.json` and
`study.json` (the settings), written by :func:`modeling_iamm.ab_study.export_study`; people are published as
`annotator-1`, `annotator-2`, ... unless `anonymize` is off.
"""

import os
from typing import Any, Dict, List, Tuple

from huggingface_hub import DatasetCard, DatasetCardData

from modeling_iamm.ab_study import Study, export_study

from .cards import DATA_LICENSE, ED_HUB_ID, PAPER, size_category

CONFIGS = ("pairs", "judgements", "judge_outputs")

TABLE_CONTENTS = {
    "pairs": "one row per pair: the dialogue (`context`, `context_roles`, `situation`), `response_a` and "
             "`response_b`, `shown_first` (the system annotators saw as Response 1), `identical` (a tie nobody was "
             "asked about) and the dataset's `gold_response` (never shown)",
    "judgements": "one row per annotator x pair x aspect: `choice` is `a`, `b` or `equal` (system terms), `kind` "
                  "`person` or `judge`, `source` how it was collected (`page`, `import`, `judge`)",
    "judge_outputs": "the LLM judges' raw answers, one per pair and display order, with the verdicts read from them "
                     "(null: unreadable)",
}

STUDY_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ pretty_name }}

An A/B study of two systems' empathetic responses, in the manner of the human evaluation of {{ paper }} (Table 2):
for each pair (the same dialogue answered by **{{ name_a }}** and by **{{ name_b }}**), annotators said per aspect
which response is better, or neither. Annotators saw "Response 1" and "Response 2" in an order drawn per pair (seed
{{ seed }}), never the systems' names.

## Aspects

{% for aspect in aspects %}- **{{ aspect.name }}**: {{ aspect.definition }}
{% endfor %}
## Results

{{ report }}

## Data

| configuration | rows | content |
| --- | ---: | --- |
{% for name, rows, content in tables %}| `{{ name }}` | {{ rows }} | {{ content }} |
{% endfor %}
{{ people_note }}

Sources of the two systems' responses (file names and SHA-256 of the files the study was prepared from):

| system | file | responses | sha256 |
| --- | --- | ---: | --- |
{% for name, source in sources %}| {{ name }} | `{{ source.file }}` | {{ source.responses }} | `{{ source.sha256[:16] }}...` |
{% endfor %}
`study.json` records every setting; `report.json` the numbers above with every pair's verdict.

## Usage

```python
from datasets import load_dataset

pairs = load_dataset("{{ repo_id }}", "pairs", split="train")
answers = load_dataset("{{ repo_id }}", "judgements", split="train")
```

## Licence

The dialogues come from EmpatheticDialogues (Rashkin et al., 2019, {{ source_url }}), licensed CC BY-NC 4.0; this
dataset keeps that licence (non-commercial use only).
"""


def build_study_card(repo_id: str, info: Dict[str, Any], report_md: str, counts: Dict[str, int]) -> DatasetCard:
    """The dataset card of a published study, from what `export_study` wrote (`study.json`, `report.md`)."""
    configs = [{"config_name": name, "data_files": [{"split": "train", "path": f"data/{name}-*.parquet"}]}
               for name in CONFIGS if counts.get(name)]
    title = info.get("title") or f"{info['name_a']} vs {info['name_b']}"
    card_data = DatasetCardData(
        language=["en"], license=DATA_LICENSE, source_datasets=[ED_HUB_ID], task_categories=["text-generation"],
        size_categories=size_category(counts.get("judgements", 0)), pretty_name=f"A/B study: {title}",
        tags=["iamm", "human-evaluation", "pairwise-comparison", "empathetic-dialogues"], configs=configs,
    )
    people = info["annotators"]
    people_note = (f"{people['people']} people and {people['judges']} LLM judge(s) answered. "
                   + ("People are named `annotator-1`, `annotator-2`, ... in the order of their first answer."
                      if people["anonymized"] else "People appear under the names they annotated with."))
    report_body = report_md.split("\n", 2)[2].strip() if report_md.startswith("# ") else report_md
    sources: List[Tuple[str, Dict[str, Any]]] = [(info[f"name_{side}"], info["sources"][side]) for side in ("a", "b")]
    return DatasetCard.from_template(
        card_data, template_str=STUDY_CARD_TEMPLATE, pretty_name=card_data.pretty_name, paper=PAPER,
        name_a=info["name_a"], name_b=info["name_b"], seed=info["seed"], aspects=info["aspects"], report=report_body,
        tables=[(name, counts[name], TABLE_CONTENTS[name]) for name in CONFIGS if counts.get(name)],
        people_note=people_note, sources=sources, repo_id=repo_id,
        source_url=f"https://huggingface.co/datasets/{ED_HUB_ID}",
    )


def stage_study(folder: str, staging: str, repo_id: str, anonymize: bool = True) -> DatasetCard:
    """Export the study in `folder` into `staging` and return its card."""
    study = Study.open(folder)  # (a folder without a study: one line, before anything is sent)
    info = export_study(study, staging, anonymize=anonymize)
    with open(os.path.join(staging, "report.md"), encoding="utf-8") as f:
        report_md = f.read()
    return build_study_card(repo_id, info, report_md, info["counts"])

