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

# LoRA is imported on first use: `iamm.llm.lora` imports transformers' TrainingArguments (through
# `transformers.trainer_utils`), which imports peft and bitsandbytes
# whenever they are installed (seconds, and bitsandbytes' notices); scoring and prompting need none of them.
_LORA_NAMES = ("GenerationArguments", "LoraArguments", "LoraTrainingArguments", "generate_predictions", "train_lora")


def __getattr__(name):
    if name in _LORA_NAMES or name == "lora":
        import importlib

        lora = importlib.import_module(f"{__name__}.lora")  # (`from . import lora` would ask this function again)
        return lora if name == "lora" else getattr(lora, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
