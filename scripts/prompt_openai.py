#!/usr/bin/env python
"""Prompt an OpenAI-compatible chat model with an IAMM_large instruction set (GPT-3.5 rows of the paper's Table 3).

    export OPENAI_API_KEY=...   # and OPENAI_BASE_URL for another OpenAI-compatible server
    python scripts/prompt_openai.py --instructions instructions/ed --split test --variant associations \
        --output_file llm_runs/gpt35_assoc.jsonl --model gpt-3.5-turbo --temperature 0 --concurrency 8
    python scripts/prompt_openai.py ... --variant plain --output_file llm_runs/gpt35_plain.jsonl
    python scripts/prompt_openai.py ... --max_requests 500 --max_tokens 256 --max_total_tokens 400000   # budgets

Results are appended as they arrive; re-running the same command sends only what is missing (failed samples too
with --retry_failed true; the summary prints that command). Rate limits (429) pause all workers and do not use up
a sample's attempts; --max_total_tokens caps the tokens of the output file over all runs. The summary (counts,
tokens, cost estimate) is printed and written to
`<output_file without .jsonl>.summary.json`. Then: scripts/evaluate_llm.py.
"""

import logging
import sys
from dataclasses import dataclass, field
from typing import Optional

from iamm.llm.instructions import load_instruction_dataset
from iamm.llm.openai_prompting import VARIANTS, PromptingConfig, retry_command, run_prompting
from modeling_iamm.cli import check_min, parse_args, script_main


@dataclass
class PromptOpenAIArguments:
    instructions: str = field(metadata={"help": "Instruction data set folder (scripts/build_instructions.py)."})
    output_file: str = field(metadata={"help": "Results JSONL (continued if it exists)."})
    split: str = field(default="test", metadata={"help": "Split of the instruction data set to send."})
    variant: str = field(default="associations", metadata={"help": "associations (messages) or plain (plain_messages)."})
    max_samples: Optional[int] = field(default=None, metadata={"help": "Only the first N rows of the split."})
    retry_failed: bool = field(default=False, metadata={"help": "Send the samples recorded as failed again."})
    overwrite_output: bool = field(default=False, metadata={"help": "Discard output_file's results first."})

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"--variant must be one of {sorted(VARIANTS)}, got {self.variant!r}")
        check_min("--max_samples", self.max_samples)


@script_main("prompt_openai")
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args, config = parse_args((PromptOpenAIArguments, PromptingConfig), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpx2"):  # one line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        rows = load_instruction_dataset(args.instructions, [args.split])[args.split]
        if args.max_samples is not None:
            rows = rows.select(range(min(args.max_samples, len(rows))))
        summary = run_prompting(rows.to_list(), args.output_file, config, args.variant, args.split,
                                args.retry_failed, args.overwrite_output, retry_command=retry_command("scripts/prompt_openai.py", argv))
    except KeyboardInterrupt:
        print("interrupted: the answers received so far are saved; re-run the same command to continue",
              file=sys.stderr)
        raise SystemExit(130)
    print(summary)


if __name__ == "__main__":
    main()
