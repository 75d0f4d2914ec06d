#!/usr/bin/env python
"""Answer a split of the instruction data with a base model + LoRA adapter; JSONL predictions, resumable.

    python scripts/generate_lora.py --model_name_or_path models/chatglm3-6b-glm \
        --adapter_dir runs/iamm-large-lora --data_dir data/iamm_instructions --split test \
        --output_file runs/iamm-large-lora/test_predictions.jsonl --batch_size 16

Each line is `{"id": "<conv>:<turn>", "output": "<generated text>"}`, appended as it is generated, after a header
line recording the base, the adapter (path and weight hash), the data and the decoding settings. Run the same
command again to continue (a larger --max_samples extends the run): finished ids are skipped; other settings
refuse the file. Prompts are left-padded.

Decoding: on data built with `--format authors` the default is the authors' prediction run (`--decoding authors`:
sampling with top_p 0.7, temperature 0.95, top_k 50, up to 513 new tokens, the base in fp16 on a GPU), the settings
behind the paper's Table 3; sampling is seeded per batch of fixed positions (`--seed`; a resumed or extended run draws as an uninterrupted one
with the same `--batch_size`, which the file's header records).
Otherwise greedy with 128 new tokens (`--decoding greedy`). Single flags (`--max_new_tokens`, `--do_sample`,
`--temperature`, `--top_p`, `--top_k`) override the preset.
"""

import logging

from iamm.llm.lora import GenerationArguments, generate_predictions
from modeling_iamm.cli import parse_args, script_main


@script_main("generate_lora")
def main(argv=None):
    (args,) = parse_args((GenerationArguments,), argv)  # (its settings checked there, as for the Python API)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    written = generate_predictions(args)
    logging.getLogger("generate_lora").info("wrote %d predictions to %s", written, args.output_file)


if __name__ == "__main__":
    main()
