"""IAMM_large: LLM instructions built from IAMM's associated words, LoRA fine-tuning and prompting.

Installed as `iamm.llm`.
"""

from .instructions import (
    INSTRUCTION_FEATURES,
    InstructionConfig,
    ParsedAnswer,
    build_instruction,
    load_instruction_dataset,
    parse_answer,
)
from .chatglm3 import chatglm3_config_to_glm, convert_chatglm3, load_chatglm3, load_chatglm3_tokenizer
from .lora import GenerationArguments, LoraArguments, LoraTrainingArguments, generate_predictions, train_lora
