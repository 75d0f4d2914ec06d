"""iamm: the Iterative Associative Memory Model (Yang et al., ACL 2024) for empathetic response generation."""

import logging
import os

from .collator import IAMMDataCollator, decode_extended, encode_samples
from .configuration_iamm import EMOTION_LABELS, RELATIONS, IAMMConfig
from .data import EDFormatError, SkipReport, build_samples, describe, load_empathetic_dialogues
from .knowledge import KnowledgeArguments, KnowledgeCache, attach_knowledge, generate_knowledge, knowledge_events
from .text import normalize, word_tokenize
from .tokenization import SPECIAL_TOKENS, build_tokenizer
from .word_vectors import load_word_vectors

# bitsandbytes (which peft imports, and transformers' Trainer imports peft, whenever they are installed) looks for
# optional kernels while it is imported (through the `kernels` package), and both log notices about them before a
# script has set up logging, which Python prints bare on stderr: above every message of every script. As libraries
# should, they get a NullHandler: their messages go where the application's logging configuration sends them (after
# `logging.basicConfig`, to stderr).
for _name in ("bitsandbytes", "kernels"):
    logging.getLogger(_name).addHandler(logging.NullHandler())
del _name

SAMPLE_DATA_DIR = os.path.join(os.path.dirname(__file__), "sample_data")
"""A small bundled EmpatheticDialogues sample (600 train / 120 valid conversations; CC BY-NC 4.0)."""

__version__ = "0.1.0"

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM  # noqa: E402
from transformers.pipelines import PIPELINE_REGISTRY  # noqa: E402

from .modeling_iamm import (  # noqa: E402
    AssociationOutput,
    IAMMEncoderModel,
    IAMMEncoderOutput,
    IAMMForConditionalGeneration,
    IAMMModel,
    IAMMPreTrainedModel,
    IAMMSeq2SeqLMOutput,
    IAMMSeq2SeqModelOutput,
    InformationAssociationModule,
    IterativeAssociation,
    IterativeAssociationOutput,
)
from .pipeline_iamm import EmpatheticResponsePipeline  # noqa: E402

AutoConfig.register("iamm", IAMMConfig)
AutoModel.register(IAMMConfig, IAMMForConditionalGeneration)
AutoModelForSeq2SeqLM.register(IAMMConfig, IAMMForConditionalGeneration)
# save_pretrained copies configuration_iamm.py and modeling_iamm.py next to the weights (remote code)
IAMMConfig.register_for_auto_class()
IAMMForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
# pipeline("empathetic-response", model=..., tokenizer=...) with the in-package classes
PIPELINE_REGISTRY.register_pipeline("empathetic-response", pipeline_class=EmpatheticResponsePipeline, pt_model=AutoModel)
