#!/usr/bin/env python
"""Generate COMET knowledge (xIntent, xNeed, xWant, xEffect, xReact) for every situation and utterance of ED.

Resumable: re-run the same command after an interruption and it continues where it stopped.

    python scripts/generate_knowledge.py --data path/to/ed --output_file knowledge/ed_comet.jsonl \
        --model_name_or_path mismayil/comet-bart-ai2 --device cuda --dtype bfloat16 --batch_size 256
"""

from dataclasses import dataclass, field

from modeling_iamm.cli import parse_args, script_main
from modeling_iamm.data import load_empathetic_dialogues
from modeling_iamm.knowledge import KnowledgeArguments, generate_knowledge, knowledge_events, load_comet


@dataclass
class Arguments:
    data: str = field(metadata={"help": "ED source: folder of split files, one file, or a Hub dataset id."})
    output_file: str = field(metadata={"help": "Knowledge cache (JSONL); appended to, never overwritten."})
    skip_invalid: bool = field(default=False, metadata={"help": "Drop (and count) invalid conversations."})


@script_main("generate_knowledge")
def main(argv=None):
    args, kargs = parse_args((Arguments, KnowledgeArguments), argv)
    conversations = load_empathetic_dialogues(args.data, skip_invalid=args.skip_invalid)
    events = knowledge_events(conversations)
    model, tokenizer = load_comet(kargs)
    cache = generate_knowledge(events, model, tokenizer, args.output_file, kargs)
    print(f"{args.output_file}: knowledge for {len(cache)} events ({len(events)} in {args.data})")


if __name__ == "__main__":
    main()
