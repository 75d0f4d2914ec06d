#!/usr/bin/env python
"""Serve the IAMM demo page (Gradio) for a saved folder or a Hub model id.

    python scripts/demo.py --model_name_or_path runs/iamm                  # http://127.0.0.1:7860
    python scripts/demo.py --model_name_or_path user/iamm --host 0.0.0.0 --port 8080
    python scripts/demo.py --model_name_or_path runs/iamm --examples_from path/to/ed   # examples from your ED copy

The page (iamm.hub.demo) shows the predicted emotion, each emotion head's probabilities, the response and the
associated words. A checkpoint that cannot be loaded stops the script with one line naming it.
"""

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from modeling_iamm import SAMPLE_DATA_DIR
from modeling_iamm.cli import check_min, parse_args, script_main


@dataclass
class DemoArguments:
    model_name_or_path: str = field(metadata={"help": "Saved folder (save_pretrained / train.py) or Hub id of an IAMM."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to serve on (0.0.0.0: every interface)."})
    port: int = field(default=7860, metadata={"help": "Port to serve on."})
    share: bool = field(default=False, metadata={"help": "Ask Gradio for a public *.gradio.live link (needs internet)."})
    examples_from: str = field(
        default=SAMPLE_DATA_DIR,
        metadata={"help": "EmpatheticDialogues source (folder, file or Hub dataset id) to pick examples from; "
                          "default: the bundled sample. 'none': no examples."},
    )
    examples_split: str = field(default="valid", metadata={"help": "Split of --examples_from to pick examples from."})
    num_examples: int = field(default=20, metadata={"help": "How many examples the dropdown offers."})
    device: Optional[str] = field(default=None, metadata={"help": "torch device (default: where the model loads, CPU)."})

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        check_min("--num_examples", self.num_examples, 0)


@script_main("demo")
def main(argv=None):
    (args,) = parse_args((DemoArguments,), argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from iamm.hub.demo import build_demo, load_examples, load_model

    model, tokenizer = load_model(args.model_name_or_path, args.device)  # (a DemoError: one line, by script_main)
    try:
        examples = ([] if args.examples_from.lower() == "none"
                    else load_examples(args.examples_from, args.examples_split, args.num_examples))
    except (FileNotFoundError, ValueError, OSError) as error:  # an ED source that cannot be read
        sys.exit(f"--examples_from {args.examples_from}: {str(error).splitlines()[0]}")
    demo = build_demo((model, tokenizer), examples=examples)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, ssr_mode=False)


if __name__ == "__main__":
    main()
