"""IAMM_large: LLM instructions built from IAMM's associated words, LoRA fine-tuning and prompting.

Installed as `iamm.llm`.
"""

from .instructions import (  # noqa: E402
    INSTRUCTION_FEATURES,
    InstructionConfig,
    ParsedAnswer,
    build_instruction,
    load_instruction_dataset,
    parse_answer,
)
