#!/usr/bin/env python
"""Convert a ChatGLM3 checkpoint (THUDM/chatglm3-6b format) into a standard transformers `glm` folder.

    python scripts/convert_chatglm3.py --checkpoint_dir path/to/chatglm3-6b --output_dir models/chatglm3-6b-glm
    python scripts/convert_chatglm3.py --checkpoint_dir ... --output_dir ... --dtype bfloat16

The output (safetensors weights, GlmConfig, generation config, fast tokenizer with ChatGLM3's chat template when
the input has `tokenizer.model`) loads with `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained`, without `trust_remote_code`. Input shards are read one at a time.
"""

import logging
from dataclasses import dataclass, field
from typing import Optional

import torch

from iamm.llm.chatglm3 import convert_chatglm3
from modeling_iamm.cli import parse_args, script_main


@dataclass
class ConvertArguments:
    """Arguments of `convert_chatglm3.py`."""

    checkpoint_dir: str = field(metadata={"help": "ChatGLM3 folder: config.json (model_type chatglm), weights "
                                                  "(.bin or .safetensors, with or without index), tokenizer.model"})
    output_dir: str = field(metadata={"help": "Where to write the transformers folder (must be empty or absent)"})
    dtype: Optional[str] = field(default=None, metadata={"help": "Cast weights to float16, bfloat16 or float32 "
                                                                 "(default: keep the stored dtype)"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty output_dir"})

    def __post_init__(self):
        if self.dtype not in (None, "float16", "bfloat16", "float32"):
            raise ValueError(f"--dtype {self.dtype!r}: choose float16, bfloat16 or float32")


@script_main("convert_chatglm3")
def main(argv=None):
    (args,) = parse_args((ConvertArguments,), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    out = convert_chatglm3(args.checkpoint_dir, args.output_dir,
                           dtype=getattr(torch, args.dtype) if args.dtype else None, overwrite=args.overwrite_output_dir)
    print(out)


if __name__ == "__main__":
    main()
