#!/usr/bin/env python
"""A/B studies of two systems' responses, the paper's human evaluation (Table 2): prepare, annotate in the browser,
judge with an LLM, import, status, report, push.

    python scripts/ab_test.py prepare --a eval/iamm/predictions.jsonl --b eval/woia/predictions.jsonl \
        --name_a IAMM --name_b w/o-IA --num_samples 100 --seed 0 --study studies/iamm-vs-woia
    python scripts/ab_test.py annotate --study studies/iamm-vs-woia --port 7860      # ...?annotator=<name>
    OPENAI_API_KEY=... python scripts/ab_test.py judge --study studies/iamm-vs-woia --model gpt-4o --temperature 0
    python scripts/ab_test.py import --study studies/iamm-vs-woia --file crowd_export.csv
    python scripts/ab_test.py status --study studies/iamm-vs-woia
    python scripts/ab_test.py report --study studies/iamm-vs-woia [--json true]
    python scripts/ab_test.py push --study studies/iamm-vs-woia --repo_id org/iamm-ab-study   # push_to_hub.py's flags

`--a`/`--b` take what this package writes (`evaluate.py`'s `predictions.jsonl`, `generate_lora.py`'s and
`prompt_openai.py`'s result files) or any JSONL/CSV with an `id` and a response; files without the dialogues
(the LLM result files) need `--data <EmpatheticDialogues source> --split <split>`. The study lives in the folder
`--study` (its store: `study.sqlite`). Every mistake is one line (`ab_test: ...`), and a refused `prepare` writes
nothing.
"""

import json
import logging
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import List, Optional

from modeling_iamm.ab_study import (
    ANNOTATOR_KINDS,
    PERSON,
    Study,
    StudyError,
    build_report,
    load_dialogues,
    parse_aspects,
    prepare_study,
    read_outputs,
    report_json,
    report_markdown,
    status_text,
    study_status,
)
from modeling_iamm.cli import parse_args, script_main

COMMANDS = ("prepare", "annotate", "judge", "import", "status", "report", "push")


@dataclass
class StudyArguments:
    study: str = field(metadata={"help": "The study folder (its store is study.sqlite)."})


@dataclass
class PrepareArguments(StudyArguments):
    a: str = field(metadata={"help": "System A's outputs (JSONL or CSV with an id and a response)."})
    b: str = field(metadata={"help": "System B's outputs."})
    name_a: str = field(default="A", metadata={"help": "System A's name (Win/Lose are from A's side)."})
    name_b: str = field(default="B", metadata={"help": "System B's name."})
    num_samples: Optional[int] = field(default=None, metadata={"help": "Pairs to draw (default: every id in common)."})
    seed: int = field(default=0, metadata={"help": "Seed of the draw, the display orders and annotators' orders."})
    data: Optional[str] = field(default=None, metadata={
        "help": "EmpatheticDialogues source (folder, file or Hub id) for the dialogues, when the files lack them."})
    split: Optional[str] = field(default=None, metadata={"help": "The split of --data the outputs answer."})
    response_field: Optional[str] = field(default=None, metadata={
        "help": "The field holding the response (default: generated_response, response, output, ...)."})
    aspects: Optional[List[str]] = field(default=None, metadata={
        "help": "Aspects asked: names of the paper's (empathy relevance fluency, the default) or name=definition."})
    title: Optional[str] = field(default=None, metadata={"help": "The study's title (default: '<A> vs <B>')."})

    def __post_init__(self):
        if self.data and not self.split:
            raise StudyError("--data needs --split (the split the outputs answer, e.g. valid or test)")


@dataclass
class AnnotateArguments(StudyArguments):
    host: str = field(default="127.0.0.1", metadata={"help": "Address to serve on (0.0.0.0: every interface)."})
    port: int = field(default=7860, metadata={"help": "Port to serve on."})
    users: Optional[str] = field(default=None, metadata={
        "help": "A file of name:password lines: annotators log in (else they give their name, e.g. ?annotator=)."})
    admin: Optional[str] = field(default=None, metadata={
        "help": "With --users: the user who sees the progress and can download everyone's answers on the page."})
    share: bool = field(default=False, metadata={"help": "Also open a public Gradio share link."})
    title: Optional[str] = field(default=None, metadata={"help": "The page's heading."})


@dataclass
class JudgeArguments(StudyArguments):
    seeds: Optional[List[int]] = field(default=None, metadata={
        "help": "Sampling seeds: one judge annotator per seed (several annotators from one model)."})
    annotator: Optional[str] = field(default=None, metadata={
        "help": "The judge's annotator name (default: judge:<model>, judge:<model>:seed<k>)."})
    retry_failed: bool = field(default=False, metadata={"help": "Send the requests recorded as failed again."})
    overwrite_output: bool = field(default=False, metadata={"help": "Discard this judge's earlier answers first."})


@dataclass
class ImportArguments(StudyArguments):
    file: str = field(metadata={
        "help": "CSV or JSONL with pair_id, annotator, aspect, choice (a, b, equal or a system's name)."})
    kind: str = field(default=PERSON, metadata={"help": f"Who answered: {' or '.join(ANNOTATOR_KINDS)}."})


@dataclass
class StatusArguments(StudyArguments):
    json: bool = field(default=False, metadata={"help": "Print JSON."})


@dataclass
class ReportArguments(StudyArguments):
    json: bool = field(default=False, metadata={"help": "Print JSON (with every pair's verdicts) instead of Markdown."})
    output_file: Optional[str] = field(default=None, metadata={"help": "Also write the report to this file."})


def llm_response(text: str) -> str:
    """The response of a raw IAMM_large answer (`Emotion: ...\\nResponse: ...`), read by iamm.llm's answer parser
    (imported on first use: files of the small model never need it)."""
    from iamm.llm.instructions import parse_answer

    return parse_answer(text).response


def prepare(args: PrepareArguments) -> None:
    aspects = parse_aspects(args.aspects)
    a = read_outputs(args.a, args.response_field, llm_response)
    b = read_outputs(args.b, args.response_field, llm_response)
    dialogues = load_dialogues(args.data, args.split) if args.data else None
    study = prepare_study(args.study, a, b, args.name_a, args.name_b, args.num_samples, args.seed, aspects,
                          dialogues, data_source=f"{args.data} ({args.split})" if args.data else None,
                          title=args.title)
    pairs = study.pairs()
    identical = sum(p.identical for p in pairs)
    skipped = {side: o.skipped for side, o in (("a", a), ("b", b)) if o.skipped}
    print(f"{study.folder}: {len(pairs)} pairs of {study.meta['ids_in_common']} ids in common ({identical} with "
          f"identical responses, recorded as ties), aspects {', '.join(study.aspect_names)}"
          + (f"; left out: {skipped}" if skipped else ""))
    print(f"next: python scripts/ab_test.py annotate --study {shlex.quote(study.folder)}")


def annotate(args: AnnotateArguments) -> None:
    from iamm.hub.annotation import launch_annotation_page, read_users

    study = Study.open(args.study)
    users = read_users(args.users) if args.users else None
    print(f"serving {study.folder} on http://{args.host}:{args.port}/"
          + ("" if users else " (annotators open it with ?annotator=<their name>)"), flush=True)
    launch_annotation_page(study, args.host, args.port, users, args.share, args.title, admin=args.admin)


def judge(args: JudgeArguments, config, argv: List[str]) -> None:
    from iamm.llm.judge import judges_for_seeds, run_judge
    from iamm.llm.openai_prompting import retry_command

    study = Study.open(args.study)
    configs = judges_for_seeds(config, args.seeds)
    if args.annotator and len(configs) > 1:
        raise StudyError("--annotator names one judge; with several --seeds the names are judge:<model>:seed<k>")
    retry = retry_command("scripts/ab_test.py", argv)
    for judge_config in configs:
        print(run_judge(study, judge_config, args.annotator, args.retry_failed, args.overwrite_output,
                        retry_command=retry))


def import_(args: ImportArguments) -> None:
    study = Study.open(args.study)
    counts = study.import_judgements(args.file, args.kind)
    print(f"imported {counts['records']} answers of {counts['annotators']} annotators from {args.file} "
          f"({counts['replaced']} replaced answers already in the store)")


def status(args: StatusArguments) -> None:
    result = study_status(Study.open(args.study))
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else status_text(result))


def report(args: ReportArguments) -> None:
    result = build_report(Study.open(args.study))
    text = report_json(result) if args.json else report_markdown(result)
    if args.output_file:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_file)), exist_ok=True)
        with open(args.output_file, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)


def push(rest: List[str]) -> None:
    """`push --study S <push_to_hub.py's flags>`: the study as a Hub dataset, through iamm.hub.push (kind `study`)."""
    from iamm.hub.push import PushArguments, PushError, push as push_folder

    if "--study" not in rest[:-1]:
        raise StudyError("push needs --study <folder>")
    i = rest.index("--study")
    study, others = rest[i + 1], rest[:i] + rest[i + 2:]
    Study.open(study)  # a folder without a study: one line here, before the Hub is asked anything
    if "--kind" in others or "--folder" in others:
        raise StudyError("push takes --study, not --kind or --folder (it publishes the study as kind 'study')")
    (args,) = parse_args((PushArguments,), ["--kind", "study", "--folder", study, *others])
    try:
        print(json.dumps(push_folder(args), indent=2))
    except PushError as error:
        raise SystemExit(str(error)) from None


@script_main("ab_test")
def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        given = f" (got {argv[0]!r})" if argv and not argv[0].startswith("-") else ""
        raise SystemExit(f"the first argument is the command: {', '.join(COMMANDS)}{given}; "
                         f"`python scripts/ab_test.py <command> --help` lists its flags")
    command, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpx2"):  # one line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        if command == "judge":
            from iamm.llm.openai_prompting import PromptingConfig

            args, config = parse_args((JudgeArguments, PromptingConfig), rest)
            judge(args, config, argv)
        elif command == "push":
            push(rest)
        else:
            arguments = {"prepare": PrepareArguments, "annotate": AnnotateArguments, "import": ImportArguments,
                         "status": StatusArguments, "report": ReportArguments}[command]
            (args,) = parse_args((arguments,), rest)
            {"prepare": prepare, "annotate": annotate, "import": import_, "status": status,
             "report": report}[command](args)
    except KeyboardInterrupt:
        raise SystemExit("interrupted; what was saved stays saved (run the same command to continue)") from None


if __name__ == "__main__":
    main()
