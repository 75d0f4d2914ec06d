"""IAMM model configuration.

This file is copied next to `config.json` when a model is saved, so that
`AutoConfig.from_pretrained(folder, trust_remote_code=True)` works without this package installed:
it imports nothing from the package.
"""

import math
from typing import List, Optional

from transformers import PretrainedConfig

# The 32 EmpatheticDialogues emotions in the authors' (MoEL/CEM/IAMM) id order.
EMOTION_LABELS: List[str] = [
    "surprised", "excited", "annoyed", "proud", "angry", "sad", "grateful", "lonely",
    "impressed", "afraid", "disgusted", "confident", "terrified", "hopeful", "anxious", "disappointed",
    "joyful", "prepared", "guilty", "furious", "nostalgic", "jealous", "anticipating", "embarrassed",
    "content", "devastated", "sentimental", "caring", "trusting", "ashamed", "apprehensive", "faithful",
]  # fmt: skip

# The five ATOMIC relations of the implicit (commonsense) branch, in the order used everywhere.
RELATIONS: List[str] = ["xIntent", "xNeed", "xWant", "xEffect", "xReact"]

# How the pointer-generator pools the heads of the copy attention (see `copy_head_pooling`).
COPY_HEAD_POOLINGS = ("probabilities", "scores")
# What the word selector reads (see `word_selector_input`).
WORD_SELECTOR_INPUTS = ("encoded", "raw")


# The type of each field (checked in `IAMMConfig.__init__`, so that a wrong value in a config.json, say
# `"hidden_size": "128"`, is refused naming the field instead of failing deep inside torch).
POSITIVE_INT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "attention_head_dim",
                       "intermediate_size", "association_heads", "association_head_dim", "num_keywords",
                       "num_associated_words", "num_memory_words", "max_new_tokens_default")
BOOL_FIELDS = ("use_explicit_association", "use_implicit_association", "use_word_selector", "use_situation",
               "use_pointer_generator", "learned_rank_weighting", "memory_norm")
FLOAT_FIELDS = ("dropout", "classifier_dropout", "layer_norm_eps", "gate_floor", "emotion_loss_weight",
                "emotion_label_smoothing")


def _check_field_types(values: dict) -> None:
    """Raise a `ValueError` naming the first field of `values` whose value has the wrong type for `IAMMConfig`."""

    def refuse(name, expected):
        value = values[name]
        raise ValueError(f"IAMMConfig.{name} must be {expected}, got {value!r} ({type(value).__name__})")

    for name in POSITIVE_INT_FIELDS:
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            refuse(name, "a whole number >= 1")
    for name in BOOL_FIELDS:
        if not isinstance(values[name], bool):
            refuse(name, "true or false")
    for name in FLOAT_FIELDS:
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            refuse(name, "a finite number")
    names = values["relation_names"]
    if names is not None and (isinstance(names, str) or not isinstance(names, (list, tuple))
                              or not all(isinstance(n, str) for n in names)):
        refuse("relation_names", "a list of relation names (strings)")
    limits = values.get("length_limits")
    if limits is not None and (not isinstance(limits, dict) or not all(
            isinstance(k, str) and (v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0))
            for k, v in limits.items())):
        refuse("length_limits", "a mapping of length limit names to words (a whole number >= 0, or null for none)")


AUTO_MAP = {
    "AutoConfig": "configuration_iamm.IAMMConfig",
    "AutoModel": "modeling_iamm.IAMMForConditionalGeneration",
    "AutoModelForSeq2SeqLM": "modeling_iamm.IAMMForConditionalGeneration",
}


# Switches added after the first released checkpoints, and the value that reproduces those checkpoints: a saved
# config.json without the key loads with this value instead of the default for new models.
LEGACY_DEFAULTS = {"memory_norm": False}


class IAMMConfig(PretrainedConfig):
    r"""
    Configuration of an IAMM model. Defaults follow the paper's Appendix A (Yang et al., ACL 2024).

    Args:
        vocab_size (`int`, *optional*, defaults to 23714):
            Size of the word vocabulary (the tokenizer's `len(tokenizer)`).
        hidden_size (`int`, *optional*, defaults to 300):
            `d`, the width of embeddings and of every encoder/decoder.
        num_hidden_layers (`int`, *optional*, defaults to 1):
            Transformer blocks in each encoder and each decoder.
        num_attention_heads (`int`, *optional*, defaults to 2):
            Attention heads of each Transformer block.
        attention_head_dim (`int`, *optional*, defaults to 20):
            Width of one attention head (keys, queries and values), so attention works in
            `num_attention_heads * attention_head_dim` = 40 dimensions.
        intermediate_size (`int`, *optional*, defaults to 50):
            Width of the feed-forward sub-layer.
        ffn_type (`str`, *optional*, defaults to `"conv"`):
            `"conv"` (kernel-3 convolutions, as the authors' code; causal in the decoders) or `"linear"`.
        association_heads (`int`, *optional*, defaults to 2):
            `H`, heads of the Information Association Module.
        association_head_dim (`int`, *optional*, defaults to 20):
            `d_h`, width of one association head.
        num_keywords (`int`, *optional*, defaults to 5):
            `k1`, keywords kept per sentence by first-order interaction.
        num_associated_words (`int`, *optional*, defaults to 15):
            `k2`, associated words kept per keyword by second-order interaction.
        num_memory_words (`int`, *optional*, defaults to 5):
            `k3`, memory slots the word selector keeps for decoding.
        relation_names (`List[str]`, *optional*, defaults to the five ATOMIC relations):
            Knowledge relations of the implicit branch (`xIntent, xNeed, xWant, xEffect, xReact`).
        use_explicit_association (`bool`, *optional*, defaults to `True`):
            Associate words of utterances with the situation, the history and the memory. Off = the
            paper's "w/o explicit association" ablation.
        use_implicit_association (`bool`, *optional*, defaults to `True`):
            Use commonsense knowledge (encoders, association and emotion head). Off = "w/o implicit
            association"; required when the data has no knowledge columns. With both associations off there is
            no memory (no memory encoder, memory emotion head or word selector): the "without any association"
            model, which needs `use_word_selector=False`.
        use_word_selector (`bool`, *optional*, defaults to `True`):
            Keep the word selector and the association decoder with its gate. Off = "w/o word selector".
        use_situation (`bool`, *optional*, defaults to `True`):
            Read the situation text. Off drops the situation encoder's input everywhere (a variant the paper
            lacks: IAMM is the only model of its Table 1 that reads the situation).
        use_pointer_generator (`bool`, *optional*, defaults to `True`):
            Mix a copy distribution over the context tokens into the output (See et al., 2017).
        learned_rank_weighting (`bool`, *optional*, defaults to `False`):
            Pass the sorted top-k association scores through a learned `k x k` linear before the sigmoid
            (the authors' code) instead of the plain sigmoid of the score (the paper).
        memory_norm (`bool`, *optional*, defaults to `True`):
            The utterance-memory pair reads the memory through a LayerNorm. Without it, memory slots built from
            memory slots grow with every turn and overflow on long dialogues. A saved config without this key
            (written before the option existed) loads as `False`, so older checkpoints compute what they did.
        emotion_pooling (`str`, *optional*, defaults to `"linear"`):
            Attention-pooling score of the emotion heads: `"linear"` (`w . h`) or `"tanh"` (`v . tanh(W h + b)`,
            the authors' code).
        association_direction (`str`, *optional*, defaults to `"utterance_query"`):
            Second-order scores of the association module: `"utterance_query"` ranks a keyword's associated words
            with the scores that ranked the keywords (Eq. 12 read literally), `"keyword_query"` uses the keyword as
            the query (the authors' code and the paper's prose).
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the word embeddings and on the output of every attention and feed-forward sub-layer of the
            encoders and decoders, before the residual sum. The paper and the authors' code use none; it is a
            regulariser to set, not part of the reproduced model.
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the pooled vector and the hidden layer of every emotion head (none in the paper).
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the layer norms.
        gate_floor (`float`, *optional*, defaults to 0.0):
            Smallest share of each decoder in the output (Eq. 30): `g = gate_floor + (1 - 2 gate_floor) *
            sigmoid(w [O_c; O_a] + b)`, so that the association decoder always contributes and is trained. 0.0 is the
            paper's gate, which on ED saturates at g = 1 (the context decoder alone) early in training. In [0, 0.5).
        word_selector_input (`str`, *optional*, defaults to `"encoded"`):
            What the word selector (Eq. 26-27) scores and hands to the association decoder: `"encoded"`, the memory
            encoder's output `H_m` (the paper), or `"raw"`, the memory slots before that encoder (the authors' code).
            The memory emotion head reads `H_m` either way.
        copy_head_pooling (`str`, *optional*, defaults to `"probabilities"`):
            How the copy distribution of the pointer-generator (Eq. 31-35) is made from the heads of `Dec_c`'s last
            cross-attention. `"probabilities"`: the mean of the heads' attention distributions. `"scores"`: the
            softmax of the heads' mean attention scores (a normalised geometric mean of their distributions, sharper
            where the heads disagree), which is what the authors' code computes.
        emotion_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the emotion loss beside the generation loss.
        emotion_label_smoothing (`float`, *optional*, defaults to 0.0):
            Label smoothing of every emotion head's cross-entropy (none in the paper): the target puts this much
            probability mass uniformly over the emotions, which bounds how far a head pushes the logits of a
            training sample it already classifies.
        pad_token_id, unk_token_id, bos_token_id, eos_token_id, cls_token_id, speaker_token_id,
        listener_token_id (`int`):
            Ids of the special tokens of the word-level tokenizer (`[PAD]`=0, `[UNK]`=1, `[SOS]`=2,
            `[EOS]`=3, `[CLS]`=4, `[SPK]`=5, `[LSN]`=6). Role embeddings are the embeddings of `[SPK]`/`[LSN]`.
        max_new_tokens_default (`int`, *optional*, defaults to 50):
            Length limit of greedy decoding in the paper's evaluation protocol.
    """

    model_type = "iamm"

    def __init__(
        self,
        vocab_size: int = 23714,
        hidden_size: int = 300,
        num_hidden_layers: int = 1,
        num_attention_heads: int = 2,
        attention_head_dim: int = 20,
        intermediate_size: int = 50,
        ffn_type: str = "conv",
        association_heads: int = 2,
        association_head_dim: int = 20,
        num_keywords: int = 5,
        num_associated_words: int = 15,
        num_memory_words: int = 5,
        relation_names: Optional[List[str]] = None,
        use_explicit_association: bool = True,
        use_implicit_association: bool = True,
        use_word_selector: bool = True,
        use_situation: bool = True,
        use_pointer_generator: bool = True,
        learned_rank_weighting: bool = False,
        memory_norm: bool = True,
        emotion_pooling: str = "linear",
        association_direction: str = "utterance_query",
        dropout: float = 0.0,
        classifier_dropout: float = 0.0,
        layer_norm_eps: float = 1e-6,
        gate_floor: float = 0.0,
        copy_head_pooling: str = "probabilities",
        word_selector_input: str = "encoded",
        emotion_loss_weight: float = 1.0,
        emotion_label_smoothing: float = 0.0,
        pad_token_id: int = 0,
        unk_token_id: int = 1,
        bos_token_id: int = 2,
        eos_token_id: int = 3,
        cls_token_id: int = 4,
        speaker_token_id: int = 5,
        listener_token_id: int = 6,
        max_new_tokens_default: int = 50,
        **kwargs,
    ):
        _check_field_types({**locals(), "length_limits": kwargs.get("length_limits")})
        if ffn_type not in ("conv", "linear"):
            raise ValueError(f"IAMMConfig.ffn_type must be 'conv' or 'linear', got {ffn_type!r}")
        if emotion_pooling not in ("linear", "tanh"):
            raise ValueError(f"IAMMConfig.emotion_pooling must be 'linear' or 'tanh', got {emotion_pooling!r}")
        if association_direction not in ("utterance_query", "keyword_query"):
            raise ValueError("IAMMConfig.association_direction must be 'utterance_query' or 'keyword_query', "
                             f"got {association_direction!r}")
        for name, value in (("dropout", dropout), ("classifier_dropout", classifier_dropout),
                            ("emotion_label_smoothing", emotion_label_smoothing)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"IAMMConfig.{name} must be in [0, 1), got {value}")
        if not 0.0 <= gate_floor < 0.5:
            raise ValueError(f"IAMMConfig.gate_floor must be in [0, 0.5), got {gate_floor}")
        if copy_head_pooling not in COPY_HEAD_POOLINGS:
            raise ValueError(f"IAMMConfig.copy_head_pooling must be one of {COPY_HEAD_POOLINGS}, "
                             f"got {copy_head_pooling!r}")
        if word_selector_input not in WORD_SELECTOR_INPUTS:
            raise ValueError(f"IAMMConfig.word_selector_input must be one of {WORD_SELECTOR_INPUTS}, "
                             f"got {word_selector_input!r}")
        if emotion_loss_weight < 0:
            raise ValueError(f"IAMMConfig.emotion_loss_weight must be >= 0, got {emotion_loss_weight}")
        # keys of earlier versions that nothing read (configs that have them still load)
        kwargs.pop("max_position_embeddings", None)
        kwargs.pop("init_std", None)
        if not (use_explicit_association or use_implicit_association) and use_word_selector:
            raise ValueError(
                "IAMMConfig: without explicit and implicit association there is no memory to select words from: "
                "set use_word_selector=False as well (the 'without any association' model)."
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.attention_head_dim = attention_head_dim
        self.intermediate_size = intermediate_size
        self.ffn_type = ffn_type
        self.association_heads = association_heads
        self.association_head_dim = association_head_dim
        self.num_keywords = num_keywords
        self.num_associated_words = num_associated_words
        self.num_memory_words = num_memory_words
        self.relation_names = list(relation_names) if relation_names is not None else list(RELATIONS)
        self.use_explicit_association = use_explicit_association
        self.use_implicit_association = use_implicit_association
        self.use_word_selector = use_word_selector
        self.use_situation = use_situation
        self.use_pointer_generator = use_pointer_generator
        self.learned_rank_weighting = learned_rank_weighting
        self.memory_norm = memory_norm
        self.emotion_pooling = emotion_pooling
        self.association_direction = association_direction
        self.dropout = dropout
        self.classifier_dropout = classifier_dropout
        self.layer_norm_eps = layer_norm_eps
        self.gate_floor = gate_floor
        self.copy_head_pooling = copy_head_pooling
        self.word_selector_input = word_selector_input
        self.emotion_loss_weight = emotion_loss_weight
        self.emotion_label_smoothing = emotion_label_smoothing
        self.unk_token_id = unk_token_id
        self.cls_token_id = cls_token_id
        self.speaker_token_id = speaker_token_id
        self.listener_token_id = listener_token_id
        self.max_new_tokens_default = max_new_tokens_default
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = dict(enumerate(EMOTION_LABELS))
            kwargs["label2id"] = {label: i for i, label in enumerate(EMOTION_LABELS)}
        # `save_pretrained` ships this file and modeling_iamm.py; these entries let the Auto classes find them
        # (AutoModel also gives the full model: it returns emotion, response and associated words).
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        kwargs.setdefault("is_encoder_decoder", True)
        kwargs.setdefault("decoder_start_token_id", bos_token_id)
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(
            pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs
        )

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """A saved config that predates a switch gets the behaviour it was saved with (the switch off)."""
        config_dict = dict(config_dict)
        for key, old_value in LEGACY_DEFAULTS.items():
            config_dict.setdefault(key, old_value)
        return super().from_dict(config_dict, **kwargs)

    @property
    def num_relations(self) -> int:
        return len(self.relation_names)

    @property
    def num_emotions(self) -> int:
        return self.num_labels
