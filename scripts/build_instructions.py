#!/usr/bin/env python
"""Build IAMM_large instruction data: a trained IAMM's associated words for every listener turn -> instructions.

    python scripts/build_instructions.py --model_name_or_path runs/iamm --data path/to/ed --splits train valid test \
        --output_dir instructions/ed
    python scripts/build_instructions.py ... --num_high_words 5 --max_low_words 20 --max_samples 100
    python scripts/build_instructions.py ... --format authors --output_dir instructions/ed_authors

`--format iamm` (default) is this project's instruction format; `--format authors` is the IAMM_large authors'
(their wording, glmtuner chat format, answer `Emotion:<label>\n Response:<reply>`, lower-cased tokenised ED text,
weight words by threshold with punctuation): the one that reproduces the paper's Table 3. See
`iamm.llm.instructions`.

Writes `associations/<split>.jsonl` (the cached associated words), `data/<split>-00000-of-00001.parquet` (load with
`iamm.llm.instructions.load_instruction_dataset` or `datasets.load_dataset("parquet", ...)`) and
`build_info.json` (the settings, the IAMM checkpoint, the data source and `--max_samples`). An interrupted run
continues where it stopped (finished samples are not recomputed);
`--overwrite_output true` starts over.
"""

import logging
from dataclasses import dataclass, field

import torch
from transformers import AutoModel, AutoTokenizer

from iamm.llm.associations import build_instruction_data
from iamm.llm.instructions import InstructionConfig
from modeling_iamm.cli import parse_args, script_main
from modeling_iamm.collator import IAMMDataCollator
from modeling_iamm.preparation import DataArguments, prepare_data
from modeling_iamm.tokenization import check_tokenizer
from modeling_iamm.training import load_model


@dataclass
class BuildInstructionsArguments:
    model_name_or_path: str = field(metadata={"help": "Saved folder or Hub id of a trained IAMM (tokenizer included)."})
    output_dir: str = field(metadata={"help": "Where the association caches and the instruction data set go."})
    batch_size: int = field(default=64, metadata={"help": "Samples per encoder call."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "torch device."})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16."})
    overwrite_output: bool = field(default=False, metadata={"help": "Discard the caches and data in output_dir first."})
    trust_remote_code: bool = field(default=True, metadata={"help": "Load the checkpoint's own code (Hub ids)."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bars."})

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"--dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


@script_main("build_instructions")
def main(argv=None):
    args, config, data_args = parse_args((BuildInstructionsArguments, InstructionConfig, DataArguments), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = load_model(args.model_name_or_path, model_class=AutoModel, dtype=getattr(torch, args.dtype),
                       trust_remote_code=args.trust_remote_code).to(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    check_tokenizer(tokenizer, model.config, args.model_name_or_path)
    if model.config.use_implicit_association and not data_args.knowledge_file:
        raise SystemExit(f"{args.model_name_or_path} uses knowledge (implicit association): pass --knowledge_file "
                         "(from scripts/generate_knowledge.py)")
    samples, _ = prepare_data(data_args, tokenizer)
    # the length limits the model was trained with (unless overridden by flags), as in scripts/evaluate.py
    collator = IAMMDataCollator(tokenizer, relation_names=model.config.relation_names,
                                **data_args.length_limits(getattr(model.config, "length_limits", None)))
    paths = build_instruction_data(model, tokenizer, dict(samples), args.output_dir, config, args.batch_size,
                                   args.overwrite_output, args.model_name_or_path, progress=not args.disable_tqdm,
                                   collator=collator, data_info=data_args.source_record(args.output_dir))
    for split, path in paths.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
