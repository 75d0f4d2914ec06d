#!/usr/bin/env python
"""LoRA / QLoRA fine-tuning of a causal LM on IAMM_large's instruction data (Trainer; `accelerate launch` works).

    python scripts/train_lora.py --model_name_or_path models/chatglm3-6b-glm --data_dir data/iamm_instructions \
        --output_dir runs/iamm-large-lora --fp16 true
    python scripts/train_lora.py ... --instruction_column plain_messages   # the ablation without associated words
    python scripts/train_lora.py ... --load_in_4bit true --bf16 true        # QLoRA (NF4, double quantisation)
    python scripts/train_lora.py ... --resume_from_checkpoint true          # continue an interrupted run

Defaults are the authors' run: LoRA r=8 (alpha 32, dropout 0.1) on the query/key/value projection, lr 1e-3 cosine
without warm-up, batch 12 x 2 accumulation, 3 epochs, base in 8 bits when CUDA is available. On data built with
`--format authors` the q/k/v adapter is fused as theirs on ChatGLM3's `query_key_value` (one input projection shared
by q, k and v: 1,949,696 trainable parameters on ChatGLM3-6B); `--qkv_adapter separate` puts one adapter on each
projection (the default for `--format iamm` data). The output folder holds the adapter, the
tokenizer and `lora_args.json` (plus `merged/` with `--merge true`).
"""

import logging
import os
import sys

import transformers  # transformers.set_seed is read after modeling_iamm is imported, which quiets bitsandbytes

from iamm.llm.lora import LoraArguments, LoraTrainingArguments, load_training_data, train_lora
from modeling_iamm.cli import parse_args, script_main


@script_main("train_lora")
def main(argv=None):
    lora_args, training_args = parse_args((LoraArguments, LoraTrainingArguments), argv)
    load_training_data(lora_args, training_args)  # a missing data set or split stops here, before any work
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if training_args.process_index == 0 else logging.WARNING)
    out = training_args.output_dir
    if (os.path.isdir(out) and os.listdir(out) and not training_args.resume_from_checkpoint
            and not training_args.overwrite_output_dir):
        sys.exit(f"{out} is not empty: pass --resume_from_checkpoint true to continue that run, or "
                 "--overwrite_output_dir true to start over")
    transformers.set_seed(training_args.seed)
    metrics = train_lora(lora_args, training_args)
    logging.getLogger("train_lora").info("done: %s", metrics)


if __name__ == "__main__":
    main()
