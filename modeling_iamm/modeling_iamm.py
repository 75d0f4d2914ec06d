"""PyTorch IAMM: the Iterative Associative Memory Model (Yang et al., ACL 2024) for empathetic response generation.

Reads like the paper: embeddings and Transformer encoders (Sec. 3.1, Eq. 1-7), the Information Association Module
with first- and second-order interaction (Eq. 8-15), the iterative memory over dialogue turns (Eq. 16-19), four
emotion heads combined as a product of probabilities (Eq. 20-25), the word selector, two decoders with a gate and a
pointer-generator (Eq. 26-35).

Models, as in transformers: `IAMMEncoderModel` is the encoder side (encoders, `IterativeAssociation` of each side,
emotion heads, word selector; what `get_encoder()` returns), `IAMMModel` the encoder-decoder without a head (adds
the two decoders and their gate), `IAMMForConditionalGeneration` adds the pointer-generator head, the losses and
`generate()`.

Shapes: B batch, T context utterances, L tokens per utterance ([CLS] first), Ls situation tokens, R relations,
Lk knowledge tokens, Lc packed context tokens, M memory slots, Ly target tokens, d hidden size, H association heads,
dh association head size, k1/k2/k3 keywords / associated words / selected memory words, S = 2*H*k1 slots per pair.

This file is copied next to the weights by `save_pretrained`; it imports only torch, transformers and
`configuration_iamm` (and the standard library), so `AutoModel.from_pretrained(folder, trust_remote_code=True)` works
without the package.
"""

import functools
import json
import math
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.utils import ModelOutput

from .configuration_iamm import IAMMConfig

# Association "refs" name a word independently of padding, so that results compare across batches:
# situation token j -> j; context token (turn t, position p) -> (t + 1) * REF_STRIDE + p;
# implicit: situation relation r -> r, utterance t relation r -> (t + 1) * R + r, offset by IMPLICIT_REF.
REF_STRIDE = 1 << 16
IMPLICIT_REF = 1 << 40
NULL_REF = -2  # the learned "nothing associated yet" memory slot
INVALID_REF = -1


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class IAMMEncoderOutput(ModelOutput):
    """What `IAMMEncoderModel` (the encoder side: encoders, iterative association, emotion heads, word selector)
    computes.

    Args:
        last_hidden_state (`(B, Lc, d)`): `H_c`, the context encoding (utterances packed, padding at the end).
        context_mask (`(B, Lc)` bool): real positions of `H_c`.
        context_ids_extended (`(B, Lc)`): extended-vocabulary ids of `H_c`'s tokens (copy source).
        memory_hidden_state (`(B, k3, d)`): `H~_m`, the selected, weighted memory slots (Eq. 26-27).
        memory_mask (`(B, k3)` bool): real selected slots.
        emotion_logits (`(B, n_emotions)`): log of the product of the heads' probabilities (Eq. 25).
        context_emotion_logits / situation_emotion_logits / memory_emotion_logits / knowledge_emotion_logits:
            each head's logits (None when its input is switched off).
        associations (`Dict[str, Tensor]`, only with `output_associations=True`): association refs and weights,
            see `IAMMEncoderModel.forward`.
    """

    last_hidden_state: Optional[torch.FloatTensor] = None
    context_mask: Optional[torch.BoolTensor] = None
    context_ids_extended: Optional[torch.LongTensor] = None
    memory_hidden_state: Optional[torch.FloatTensor] = None
    memory_mask: Optional[torch.BoolTensor] = None
    emotion_logits: Optional[torch.FloatTensor] = None
    context_emotion_logits: Optional[torch.FloatTensor] = None
    situation_emotion_logits: Optional[torch.FloatTensor] = None
    memory_emotion_logits: Optional[torch.FloatTensor] = None
    knowledge_emotion_logits: Optional[torch.FloatTensor] = None
    associations: Optional[Dict[str, torch.Tensor]] = None


@dataclass
class IAMMSeq2SeqLMOutput(ModelOutput):
    """Output of `IAMMForConditionalGeneration`.

    Args:
        loss: generation NLL (mean over real target tokens) + `emotion_loss_weight` x emotion loss.
        logits (`(B, Ly, V + n_oov)`): log of the final (pointer-generator) distribution over the extended vocabulary.
        generation_loss, emotion_loss: the two parts of `loss`.
        token_log_probs (`(B, Ly)`): log-probability of each label token (0 on padding): the per-token terms of
            `generation_loss`, for per-sample NLL / perplexity.
        emotion_logits and the per-head logits: as in `IAMMEncoderOutput`.
        associations: as in `IAMMEncoderOutput` (only with `output_associations=True`).
        cache: the decoders' `EncoderDecoderCache` (incremental decoding).
    """

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    generation_loss: Optional[torch.FloatTensor] = None
    emotion_loss: Optional[torch.FloatTensor] = None
    token_log_probs: Optional[torch.FloatTensor] = None
    emotion_logits: Optional[torch.FloatTensor] = None
    context_emotion_logits: Optional[torch.FloatTensor] = None
    situation_emotion_logits: Optional[torch.FloatTensor] = None
    memory_emotion_logits: Optional[torch.FloatTensor] = None
    knowledge_emotion_logits: Optional[torch.FloatTensor] = None
    associations: Optional[Dict[str, torch.Tensor]] = None
    cache: Optional[EncoderDecoderCache] = None


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def _timing_signal(length: int, dim: int, device, dtype) -> torch.Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    num_timescales = dim // 2
    log_increment = math.log(1.0e4) / max(num_timescales - 1, 1)
    inv_timescales = torch.exp(torch.arange(num_timescales, device=device, dtype=torch.float32) * -log_increment)
    scaled = position * inv_timescales[None, :]
    signal = torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)
    if dim % 2:
        signal = F.pad(signal, (0, 1))
    return signal.to(dtype)


_cached_timing_signal = functools.lru_cache(maxsize=16)(_timing_signal)


def sinusoidal_positions(length: int, dim: int, offset: int = 0, device=None, dtype=torch.float32) -> torch.Tensor:
    """The Transformer's timing signal, `(length, dim)`, for positions `offset .. offset + length - 1`.

    Read from a table computed once per size class (powers of two from 64), so a step issues one slice instead of
    a dozen operators; each position's values do not depend on the table's size.
    """
    if torch.compiler.is_compiling():
        return _timing_signal(offset + length, dim, device, dtype)[offset:]
    size = max(64, 1 << (offset + length - 1).bit_length())
    return _cached_timing_signal(size, dim, torch.device(device) if device is not None else None, dtype)[offset: offset + length]


def capturing() -> bool:
    """True while `torch.compile` traces the model. The forward then takes the paths without host syncs or
    data-dependent shapes (widths set by the input shapes instead of trimmed to the longest real row; every turn
    encoded, padded ones masked out), so that a train step is one graph, which CUDA graphs can replay. Same outputs
    on the real positions; eager runs keep the trimmed (cheaper on CPU) widths."""
    return torch.compiler.is_compiling()


def with_first_position(mask: torch.Tensor) -> torch.Tensor:
    """`mask (..., L)` with position 0 always real: a padded row then reads one position instead of none (an
    attention row with every key masked is NaN in some kernels). Real rows already start with [CLS]."""
    return mask | (torch.arange(mask.shape[-1], device=mask.device) == 0)


def pack(x: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Move the real entries of each row to the front: `x (B, N, ...)`, `mask (B, N)` -> `(B, N', ...)`, `(B, N')`.

    Packing makes positions independent of how much padding a batch has (batch invariance). N' is the longest
    row's real length, or N while `capturing()` (no host sync).
    """
    if capturing():
        order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices  # (B, N): real entries first, in order
        packed_mask = mask.gather(1, order)
        index = order.view(order.shape + (1,) * (x.dim() - 2)).expand_as(x)
        return torch.where(packed_mask.view(index.shape[:2] + (1,) * (x.dim() - 2)), x.gather(1, index), 0), packed_mask
    B = mask.shape[0]
    lengths = mask.sum(1)
    n = max(int(lengths.max()), 1) if B else 1
    target = mask.long().cumsum(1) - 1  # (B, N): packed index of each real entry
    rows = torch.arange(B, device=mask.device)[:, None].expand_as(mask)
    out = x.new_zeros((B, n) + tuple(x.shape[2:]))
    out[rows[mask], target[mask]] = x[mask]
    packed_mask = torch.arange(n, device=mask.device)[None, :] < lengths[:, None]
    return out, packed_mask


def stable_topk(scores: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """`topk` along the last dim whose ties go to the lower index, whatever the padding (batch invariance):
    a word repeated in a sentence has exactly equal scores."""
    values, index = torch.sort(scores, dim=-1, descending=True, stable=True)
    return values[..., :k], index[..., :k]


def masked_mean_pool(scores: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention pooling: softmax of `scores (B, N)` over real entries, weighted sum of `values (B, N, d)`."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1) * mask
    return torch.einsum("bn,bnd->bd", weights, values)


# ----------------------------------------------------------------------------------------------------------------
# Transformer blocks (pre-LayerNorm, as the authors' MoEL-style code)
# ----------------------------------------------------------------------------------------------------------------


def dropout_module(p: float) -> nn.Module:
    """`nn.Dropout(p)`, or `nn.Identity()` when p is 0: a model without dropout issues no dropout operator."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def _cached(cache: DynamicCache, layer_idx: int) -> bool:
    return layer_idx < len(cache.layers) and cache.layers[layer_idx].is_initialized


class IAMMAttention(nn.Module):
    """Multi-head scaled dot-product attention working in `num_attention_heads * attention_head_dim` dimensions."""

    def __init__(self, config: IAMMConfig):
        super().__init__()
        self.num_heads, self.head_dim = config.num_attention_heads, config.attention_head_dim
        inner = self.num_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, inner, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, inner, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, inner, bias=False)
        self.o_proj = nn.Linear(inner, config.hidden_size, bias=False)

    def _project(self, x: torch.Tensor, projections: List[nn.Linear]) -> List[torch.Tensor]:
        """x (B, N, d) through several projections as one matmul -> one (B, heads, N, head_dim) tensor each."""
        B, N, _ = x.shape
        weight = projections[0].weight if len(projections) == 1 else torch.cat([p.weight for p in projections])
        out = F.linear(x, weight).view(B, N, len(projections), self.num_heads, self.head_dim)
        return out.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: Optional[torch.Tensor] = None,
        key_mask: Optional[torch.Tensor] = None,
        causal: bool = False,
        cache: Optional[DynamicCache] = None,
        layer_idx: int = 0,
        need_weights: Union[bool, str] = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """`key_value_states` None: self-attention (over `hidden_states`, or over the cached steps and these).
        `need_weights` True returns the attention probabilities (B, heads, Lq, Lk), `"scores"` the masked scores
        before the softmax."""
        if key_value_states is None:
            q, k, v = self._project(hidden_states, [self.q_proj, self.k_proj, self.v_proj])
            if cache is not None:  # self-attention: appended to earlier steps
                k, v = cache.update(k, v, layer_idx)
        else:
            (q,) = self._project(hidden_states, [self.q_proj])
            if cache is not None and _cached(cache, layer_idx):
                # cross-attention while decoding: the encoder side's keys/values were projected at the first step
                k, v = cache.layers[layer_idx].keys, cache.layers[layer_idx].values
            else:
                k, v = self._project(key_value_states, [self.k_proj, self.v_proj])
                if cache is not None:  # stored once
                    k, v = cache.update(k, v, layer_idx)
        Lq, Lk = q.shape[2], k.shape[2]
        mask = None
        if key_mask is not None:
            mask = key_mask[:, None, None, :]  # (B, 1, 1, Lk)
        is_causal = causal and Lq > 1 and Lq == Lk and mask is None and not need_weights
        if causal and Lq > 1 and not is_causal:
            causal_mask = torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).tril(Lk - Lq)
            mask = causal_mask[None, None] if mask is None else mask & causal_mask[None, None]
        if need_weights:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, heads, Lq, Lk)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probabilities = torch.softmax(scores, dim=-1)
            out = torch.matmul(probabilities, v)
            weights = scores if need_weights == "scores" else probabilities
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        B = out.shape[0]
        out = out.transpose(1, 2).reshape(B, Lq, self.num_heads * self.head_dim)  # (B, Lq, heads * head_dim)
        return self.o_proj(out), weights


class IAMMFeedForward(nn.Module):
    """Position-wise feed-forward: two kernel-3 convolutions (causal in decoders) or two linears, ReLU between."""

    def __init__(self, config: IAMMConfig, causal: bool):
        super().__init__()
        self.conv, self.causal = config.ffn_type == "conv", causal
        d, inner = config.hidden_size, config.intermediate_size
        if self.conv:
            self.fc1, self.fc2 = nn.Conv1d(d, inner, 3), nn.Conv1d(inner, d, 3)
        else:
            self.fc1, self.fc2 = nn.Linear(d, inner), nn.Linear(inner, d)

    def _conv(self, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        """A kernel-3 convolution of x (B, N, C_in) -> (B, N, C_out), computed as one matmul over the windows.

        Same result as `conv` (whose weights are used as they are; zero padding 2 left when causal, else 1 each
        side), but much faster on CPU than a convolution with a few hundred channels.
        """
        return self._conv_padded(conv, F.pad(x, (0, 0, 2, 0) if self.causal else (0, 0, 1, 1)))

    @staticmethod
    def _conv_padded(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        """The convolution of x (B, N + 2, C_in), padding included -> (B, N, C_out)."""
        B, N = x.shape[0], x.shape[1] - 2
        c_out, c_in, _ = conv.weight.shape
        if c_in <= c_out or N <= 3:  # narrow input (or a decoding step): the 3 taps side by side, one matmul
            windows = x.unfold(1, 3, 1).reshape(B, N, -1)  # (B, N, C_in * 3): channel-major, tap-minor, as conv.weight
            return F.linear(windows, conv.weight.flatten(1), conv.bias)
        # wide input: project every position through the 3 taps at once, then add the shifted projections
        taps = F.linear(x, conv.weight.permute(2, 0, 1).reshape(3 * c_out, c_in)).view(B, N + 2, 3, c_out)
        return taps[:, 0:N, 0] + taps[:, 1 : N + 1, 1] + taps[:, 2 : N + 2, 2] + conv.bias

    def _step(self, conv: nn.Conv1d, x: torch.Tensor, cache: DynamicCache, layer_idx: int) -> torch.Tensor:
        """One decoding step of a causal conv on x (B, n, C_in). The cache keeps only the two inputs before x
        (zeros before the first step, as the convolution's padding), so a step costs the same at any length."""
        if _cached(cache, layer_idx):
            layer = cache.layers[layer_idx]
            window = torch.cat([layer.keys[:, 0], x], 1)  # (B, 2 + n, C_in)
            layer.keys = layer.values = window[:, None, -2:]  # (B, 1, 2, C_in)
        else:
            window = F.pad(x, (0, 0, 2, 0))
            cache.update(window[:, None, -2:], window[:, None, -2:], layer_idx)
        return self._conv_padded(conv, window)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                cache: Optional[DynamicCache] = None, layer_idx: int = 0) -> torch.Tensor:
        if not self.conv:
            return self.fc2(F.relu(self.fc1(x)))
        if cache is not None:
            h = F.relu(self._step(self.fc1, x, cache, layer_idx))
            return self._step(self.fc2, h, cache, layer_idx + 1)
        if mask is not None:  # padding must look like the convolution's own zero padding (batch invariance)
            x = x * mask[..., None]
        h = F.relu(self._conv(self.fc1, x))
        if mask is not None:
            h = h * mask[..., None]
        return self._conv(self.fc2, h)


class IAMMEncoderLayer(nn.Module):
    def __init__(self, config: IAMMConfig):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = IAMMAttention(config)
        self.ffn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = IAMMFeedForward(config, causal=False)
        self.dropout = dropout_module(getattr(config, "dropout", 0.0))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, query_length: Optional[int] = None) -> torch.Tensor:
        """`query_length`: compute only the first positions' outputs (their keys/values still come from all)."""
        normed = self.self_attn_layer_norm(x)
        queries = normed if query_length is None else normed[:, :query_length]
        x = x[:, : queries.shape[1]] + self.dropout(self.self_attn(queries, normed, key_mask=mask)[0])
        return x + self.dropout(self.ffn(self.ffn_layer_norm(x), mask[:, : x.shape[1]]))


class IAMMEncoder(nn.Module):
    """A Transformer encoder (`Enc_u`, `Enc_ctx`, `Enc_sit`, `Enc_cs`, `Enc_m` are all of this kind)."""

    def __init__(self, config: IAMMConfig):
        super().__init__()
        self.layers = nn.ModuleList([IAMMEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, inputs_embeds: torch.Tensor, mask: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        """inputs_embeds (N, len, d) without positions, mask (N, len) -> (N, len, d), or (N, d) with `first_only`.

        `first_only` returns the first ([CLS]) position alone, and the last layer then computes only the positions
        that output depends on (3 with kernel-3 convolutions, 1 with linears): same values, far less work.
        """
        N, length, d = inputs_embeds.shape
        x = inputs_embeds + sinusoidal_positions(length, d, device=inputs_embeds.device, dtype=inputs_embeds.dtype)
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x = layer(x, mask, query_length=(3 if layer.ffn.conv else 1) if first_only and last else None)
        x = self.layer_norm(x)
        return x[:, 0] if first_only else x


class IAMMDecoderLayer(nn.Module):
    def __init__(self, config: IAMMConfig):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = IAMMAttention(config)
        self.cross_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.cross_attn = IAMMAttention(config)
        self.ffn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = IAMMFeedForward(config, causal=True)
        self.dropout = dropout_module(getattr(config, "dropout", 0.0))

    def forward(self, x, memory, memory_mask, cache=None, cache_idx=0, cross_idx=0, need_weights=False):
        self_cache = cache.self_attention_cache if cache is not None else None
        cross_cache = cache.cross_attention_cache if cache is not None else None
        attended = self.self_attn(self.self_attn_layer_norm(x), causal=True, cache=self_cache, layer_idx=cache_idx)[0]
        x = x + self.dropout(attended)
        attended, weights = self.cross_attn(
            self.cross_attn_layer_norm(x), memory, key_mask=memory_mask, cache=cross_cache, layer_idx=cross_idx,
            need_weights=need_weights,
        )
        x = x + self.dropout(attended)
        return x + self.dropout(self.ffn(self.ffn_layer_norm(x), cache=self_cache, layer_idx=cache_idx + 1)), weights


class IAMMDecoder(nn.Module):
    """A Transformer decoder (`Dec_c` over `H_c`, `Dec_a` over `H~_m`); returns the last layer's cross-attention."""

    CACHE_SLOTS_PER_LAYER = 3  # self-attention keys/values, and the last two inputs of each causal convolution

    def __init__(self, config: IAMMConfig):
        super().__init__()
        self.layers = nn.ModuleList([IAMMDecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x, memory, memory_mask, cache: Optional[EncoderDecoderCache] = None, decoder_index: int = 0,
                need_weights: Union[bool, str] = False):
        """`decoder_index` (0 for Dec_c, 1 for Dec_a) places this decoder's entries in the shared cache."""
        weights = None
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            self_idx = (decoder_index * n + i) * self.CACHE_SLOTS_PER_LAYER
            x, weights = layer(x, memory=memory, memory_mask=memory_mask, cache=cache, cache_idx=self_idx,
                               cross_idx=decoder_index * n + i, need_weights=need_weights)
        return self.layer_norm(x), weights


# ----------------------------------------------------------------------------------------------------------------
# Information Association Module (Eq. 8-15)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class AssociationOutput(ModelOutput):
    """What the Information Association Module finds for a batch of (utterance X, other sentence Y) pairs.

    Direction 0 has the keywords of Y and their associated words in X, direction 1 the keywords of X and their
    associated words in Y. Refs name words independently of padding (see `decode_association_ref`).

    Args:
        slots (`(N, S, d)`): the pair's memory slots (Eq. 15), S = 2*H*k1 (direction, head, keyword order).
        slot_mask (`(N, S)` bool): slots whose keyword exists.
        slot_refs (`(N, S)`): a slot's ref is its keyword's ref.
        first_order_scores (`(N, 2, H, L)`): each target word's association score averaged over the real source
            words (Eq. 10-11); -inf on padding. L is the longer of the two sentences.
        keyword_refs (`(N, 2, H, k1)`) / keyword_weights: the keywords and their weights.
        associated_refs (`(N, 2, H, k1, k2)`) / associated_weights: each keyword's associated words (Eq. 12-14).
    """

    slots: Optional[torch.FloatTensor] = None
    slot_mask: Optional[torch.BoolTensor] = None
    slot_refs: Optional[torch.LongTensor] = None
    first_order_scores: Optional[torch.FloatTensor] = None
    keyword_refs: Optional[torch.LongTensor] = None
    keyword_weights: Optional[torch.FloatTensor] = None
    associated_refs: Optional[torch.LongTensor] = None
    associated_weights: Optional[torch.FloatTensor] = None


ASSOCIATION_DETAILS = ("keyword_refs", "keyword_weights", "associated_refs", "associated_weights")


class KeywordSelection(NamedTuple):
    """One direction of the association module: first-order scores (N, H, Lt), the keywords (N, H, k1) and their
    associated words (N, H, k1, k2): validity, positions and weights."""

    first_order_scores: torch.Tensor
    keyword_valid: torch.Tensor
    keyword_index: torch.Tensor
    keyword_weights: torch.Tensor
    word_valid: torch.Tensor
    word_index: torch.Tensor
    word_weights: torch.Tensor


def pad_to(x: torch.Tensor, length: int, dim: int, value: Any = 0) -> torch.Tensor:
    """Pad `x` with `value` at the end of `dim` up to `length`."""
    missing = length - x.shape[dim]
    if missing <= 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [0, missing]
    return F.pad(x, pad, value=value)


class InformationAssociationModule(nn.Module):
    """Associates the words of an utterance `X` with those of another sentence `Y`, in both directions.

    Per head, association scores are scaled dot products of per-head queries and keys (Eq. 8-9). First order
    (Eq. 10-11): each target word's scores averaged over the real source words give `first_order_scores`; the k1
    best are the keywords. Second order (Eq. 12-14): for each keyword, the k2 source words it scores highest are
    its associated words; their per-head value vectors, weighted by sigmoid(score), are concatenated (k2 x dh) and
    the slot is weighted by sigmoid(keyword score). Direction 0 takes X as the source and Y as the target,
    direction 1 the reverse. The 2*H*k1 slots are projected to d (Eq. 15): they are this pair's memory slots.

    Queries, keys and values of both sentences come from one matmul, and the slots of both directions from one
    projection.

    `association_direction` picks the second-order scores: `"utterance_query"` ranks a keyword's associated words
    with the same scores that ranked the keywords (Eq. 12 read literally: queries from the source side);
    `"keyword_query"` uses the keyword as the query (the authors' code; see docs/design.md).
    """

    def __init__(self, config: IAMMConfig, num_keywords: int, num_associated_words: int):
        super().__init__()
        self.heads, self.head_dim = config.association_heads, config.association_head_dim
        self.k1, self.k2 = num_keywords, num_associated_words
        inner = self.heads * self.head_dim
        self.query = nn.Linear(config.hidden_size, inner, bias=False)
        self.key = nn.Linear(config.hidden_size, inner, bias=False)
        self.value = nn.Linear(config.hidden_size, inner, bias=False)
        self.slot_proj = nn.Linear(self.k2 * self.head_dim, config.hidden_size)  # Eq. (15)
        self.learned_rank_weighting = config.learned_rank_weighting
        if self.learned_rank_weighting:  # the authors' code: a k x k linear over the sorted top-k scores
            self.keyword_rank = nn.Linear(self.k1, self.k1)
            self.word_rank = nn.Linear(self.k2, self.k2)
        self.keyword_query = getattr(config, "association_direction", "utterance_query") == "keyword_query"

    def _weights(self, scores: torch.Tensor, valid: torch.Tensor, rank: Optional[nn.Linear], k: int) -> torch.Tensor:
        """sigmoid(score) of the selected entries (or of a learned map over their sorted scores); 0 where invalid."""
        if rank is None:  # invalid entries are -inf or real scores: where() keeps them out of values and gradients
            return torch.where(valid, torch.sigmoid(scores), 0.0)
        scores = scores.masked_fill(~valid, 0.0)
        width = scores.shape[-1]
        scores = rank(pad_to(scores, k, dim=-1))[..., :width]
        return torch.sigmoid(scores) * valid

    def _direction(self, q_source, k_target, v_source, q_target, k_source, source_mask, pair):
        """Keywords among the target words and their associated words among the source words.

        q/k/v_source (N, H, Ls, dh), q/k_target (N, H, Lt, dh), source_mask (N, Ls), pair (N, 1, Ls, Lt): True
        where both words are real. Returns the slot features before the projection (N, H, k1, k2 * dh) and the
        selection (`KeywordSelection`), padded to k1 / k2.
        """
        N, H, Ls, dh = q_source.shape
        Lt = k_target.shape[2]
        scores = torch.matmul(q_source, k_target.transpose(-1, -2)) / math.sqrt(dh)  # (N, H, Ls, Lt), Eq. (8-9)
        # First order, Eq. (10-11): mean over the real source words of each target word's scores. A target word
        # with no real source word (or padding) cannot be a keyword.
        n_source = pair.sum(2).clamp(min=1)  # (N, 1, Lt): real source words (for real target words)
        first_order_scores = torch.where(pair, scores, 0.0).sum(2) / n_source  # (N, H, Lt)
        first_order_scores = torch.where(pair.any(2), first_order_scores, float("-inf"))
        k1 = min(self.k1, Lt)
        keyword_scores, keyword_index = stable_topk(first_order_scores, k1)  # (N, H, k1)
        keyword_valid = keyword_scores != float("-inf")  # masked entries are -inf
        # Second order, Eq. (12-14): for each keyword, the source words it scores highest.
        if self.keyword_query:  # the keyword's query against the source words' keys
            keyword_queries = q_target.gather(2, keyword_index[..., None].expand(-1, -1, -1, dh))  # (N, H, k1, dh)
            second_order_scores = torch.matmul(keyword_queries, k_source.transpose(-1, -2)) / math.sqrt(dh)
            second_order_scores = torch.where(source_mask.view(N, 1, 1, Ls), second_order_scores, float("-inf"))
        else:  # the scores that ranked the keywords, read from the keyword's column
            transposed = torch.where(pair, scores, float("-inf")).transpose(2, 3)  # (N, H, Lt, Ls)
            second_order_scores = transposed.gather(2, keyword_index[..., None].expand(-1, -1, -1, Ls))  # (N, H, k1, Ls)
        k2 = min(self.k2, Ls)
        word_scores, word_index = stable_topk(second_order_scores, k2)  # (N, H, k1, k2)
        word_valid = (word_scores != float("-inf")) & keyword_valid[..., None]
        keyword_weights = self._weights(keyword_scores, keyword_valid, getattr(self, "keyword_rank", None), self.k1)
        word_weights = self._weights(word_scores, word_valid, getattr(self, "word_rank", None), self.k2)
        values = v_source.gather(2, word_index.reshape(N, H, k1 * k2, 1).expand(-1, -1, -1, dh))  # (N, H, k1*k2, dh)
        values = values.view(N, H, k1, k2, dh) * word_weights[..., None]
        values = pad_to(values, self.k2, 3).reshape(N, H, k1, self.k2 * dh)  # (N, H, k1, k2 * dh)
        features = pad_to(values * keyword_weights[..., None], self.k1, 2)  # (N, H, k1, k2 * dh)
        # pad to k1 keywords / k2 words when the sentences are shorter than that
        selection = KeywordSelection(
            first_order_scores=first_order_scores,
            keyword_valid=pad_to(keyword_valid, self.k1, 2, False),
            keyword_index=pad_to(keyword_index, self.k1, 2),
            keyword_weights=pad_to(keyword_weights, self.k1, 2),
            word_valid=pad_to(pad_to(word_valid, self.k2, 3, False), self.k1, 2, False),
            word_index=pad_to(pad_to(word_index, self.k2, 3), self.k1, 2),
            word_weights=pad_to(pad_to(word_weights, self.k2, 3), self.k1, 2),
        )
        return features, selection

    def forward(self, utterance: torch.Tensor, utterance_mask: torch.Tensor, utterance_refs: Optional[torch.Tensor],
                other: torch.Tensor, other_mask: torch.Tensor, other_refs: Optional[torch.Tensor],
                output_details: bool = True) -> AssociationOutput:
        """Associate `utterance (N, Lx, d)` with `other (N, Ly, d)`; masks and refs are `(N, Lx)` / `(N, Ly)`.

        Without `output_details` (training), only `slots` and `slot_mask` are computed."""
        N, Lx, _ = utterance.shape
        H, dh = self.heads, self.head_dim
        # queries, keys and values of both sentences in one matmul
        projection = torch.cat([self.query.weight, self.key.weight, self.value.weight])  # (3 * H * dh, d)
        qkv = F.linear(torch.cat([utterance, other], 1), projection)  # (N, Lx + Ly, 3 * H * dh)
        qkv = qkv.view(N, -1, 3, H, dh).permute(2, 0, 3, 1, 4)  # (3, N, H, Lx + Ly, dh)
        (qx, kx, vx), (qy, ky, vy) = qkv[:, :, :, :Lx].unbind(0), qkv[:, :, :, Lx:].unbind(0)
        pair = utterance_mask.view(N, 1, Lx, 1) & other_mask.view(N, 1, 1, -1)  # (N, 1, Lx, Ly): both words real
        # direction 0: keywords of Y, associated words in X; direction 1: keywords of X, associated words in Y
        features_y, keywords_y = self._direction(qx, ky, vx, qy, kx, utterance_mask, pair)
        features_x, keywords_x = self._direction(qy, kx, vy, qx, ky, other_mask, pair.transpose(2, 3))
        slots = self.slot_proj(torch.stack([features_y, features_x], 1))  # (N, 2, H, k1, d), Eq. (15)
        slot_mask = torch.stack([keywords_y.keyword_valid, keywords_x.keyword_valid], 1).reshape(N, -1)  # (N, S)
        slots = slots.reshape(N, slot_mask.shape[1], -1)  # (N, S, d)
        if not output_details:
            return AssociationOutput(slots=slots, slot_mask=slot_mask)

        def refs(table: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
            """table (N, L), index (N, H, ...) -> the refs of the indexed words, INVALID_REF where not valid."""
            return table.gather(1, index.reshape(N, -1)).view(index.shape).masked_fill(~valid, INVALID_REF)

        keyword_refs = torch.stack([refs(other_refs, keywords_y.keyword_index, keywords_y.keyword_valid),
                                    refs(utterance_refs, keywords_x.keyword_index, keywords_x.keyword_valid)], 1)
        both = (keywords_y, keywords_x)
        length = max(Lx, other.shape[1])
        return AssociationOutput(
            slots=slots,
            slot_mask=slot_mask,
            slot_refs=keyword_refs.reshape(N, -1),
            first_order_scores=torch.stack([pad_to(k.first_order_scores, length, 2, float("-inf")) for k in both], 1),
            keyword_refs=keyword_refs,  # (N, 2, H, k1)
            keyword_weights=torch.stack([k.keyword_weights for k in both], 1),
            associated_refs=torch.stack([refs(utterance_refs, keywords_y.word_index, keywords_y.word_valid),
                                         refs(other_refs, keywords_x.word_index, keywords_x.word_valid)], 1),
            associated_weights=torch.stack([k.word_weights for k in both], 1),  # (N, 2, H, k1, k2)
        )


# ----------------------------------------------------------------------------------------------------------------
# Iterative association over the turns of a dialogue (Eq. 16-18)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class IterativeAssociationOutput(ModelOutput):
    """The memory one side (explicit: words, implicit: relation summaries) accumulates over a dialogue.

    Args:
        memory (`(B, M, d)`): V of this side: the learned null slot, then for each turn its utterance-situation,
            utterance-history and utterance-memory slots (Eq. 16-18). Slots of padded turns are masked.
        memory_mask (`(B, M)` bool) / memory_refs (`(B, M)`): real slots, and each slot's keyword ref.
        associations (`Dict[str, Tensor]`): per pair type (`situation`, `history`, `memory`) and detail
            (`keyword_refs`, ...), `"{pair}_{detail}"` shaped `(B, T, 2, H, k1[, k2])`.
    """

    memory: Optional[torch.FloatTensor] = None
    memory_mask: Optional[torch.BoolTensor] = None
    memory_refs: Optional[torch.LongTensor] = None
    associations: Optional[Dict[str, torch.Tensor]] = None


class IterativeAssociation(nn.Module):
    """Runs the Information Association Module over the utterances of a dialogue, in order, on one side.

    For utterance i: the pairs (U_i, situation), (U_i, U_1..U_{i-1}) and (U_i, memory), whose slots join the memory
    (Eq. 16-18). The first two pairs do not depend on the memory: they run for every turn at once, in one batched
    call of the (shared) context module. Only the memory pair runs turn by turn. The memory starts with one learned
    "nothing associated yet" slot, so it is never empty.

    With `memory_norm`, the memory pair reads the memory through a LayerNorm (as the paper's pre-LayerNorm blocks
    read their inputs): without it, memory slots are built from the values of memory slots, grow with every turn
    and overflow on long dialogues (see docs/design.md). Normalising the memory it reads, not the slots it writes,
    keeps the keyword weights (Eq. 14) in the slots' scale.
    """

    def __init__(self, config: IAMMConfig, num_keywords: int, num_associated_words: int):
        super().__init__()
        # (registration order = parameter order, which saved optimizer states depend on: keep it)
        self.context_association = InformationAssociationModule(config, num_keywords, num_associated_words)
        self.memory_association = InformationAssociationModule(config, num_keywords, num_associated_words)
        self.null_slot = nn.Parameter(torch.zeros(config.hidden_size))
        self.memory_norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                            if getattr(config, "memory_norm", False) else None)

    def forward(self, units: torch.Tensor, unit_mask: torch.Tensor, unit_refs: torch.Tensor,
                situation: Optional[torch.Tensor] = None, situation_mask: Optional[torch.Tensor] = None,
                situation_refs: Optional[torch.Tensor] = None, output_associations: bool = True,
                ) -> IterativeAssociationOutput:
        """units (B, T, U, d): each utterance's units (all False in `unit_mask (B, T, U)` on padded turns);
        situation (B, Ls, d): the situation's units, or None. Without `output_associations` (training), the output
        has no refs and no associations."""
        B, T, U, d = units.shape
        device = units.device
        # (U_i, situation) and (U_i, U_1..U_{i-1}) for every turn that has units, as one batch of P * n pairs
        if capturing():  # every turn (a turn without units finds no keyword: its slots are masked)
            rows = torch.arange(B * T, device=device)
        else:
            rows = unit_mask.any(-1).flatten().nonzero().squeeze(1)  # (n,): turns with units, as b * T + t
        sample, turn = rows // T, rows % T
        utterances = units.reshape(B * T, U, d).index_select(0, rows)  # (n, U, d)
        utterance_mask = unit_mask.reshape(B * T, U).index_select(0, rows)
        earlier = torch.arange(T, device=device).repeat_interleave(U)[None, :] < turn[:, None]  # (n, T*U)
        history = units.reshape(B, T * U, d).index_select(0, sample)  # (n, T*U, d): every unit of the dialogue...
        history_mask = unit_mask.reshape(B, T * U).index_select(0, sample) & earlier  # ...those of earlier turns
        others, other_masks, pairs = [history], [history_mask], ["history"]
        if situation is not None:
            others.insert(0, situation.index_select(0, sample))
            other_masks.insert(0, situation_mask.index_select(0, sample))
            pairs.insert(0, "situation")
        P, n = len(pairs), rows.shape[0]
        length = max(o.shape[1] for o in others)
        refs = None
        if output_associations:
            other_refs = [unit_refs.reshape(B, T * U).index_select(0, sample)]
            if situation is not None:
                other_refs.insert(0, situation_refs.index_select(0, sample))
            refs = (unit_refs.reshape(B * T, U).index_select(0, rows).repeat(P, 1),
                    torch.cat([pad_to(r, length, 1, INVALID_REF) for r in other_refs]))
        context_pairs = self.context_association(
            utterance=utterances.repeat(P, 1, 1),
            utterance_mask=utterance_mask.repeat(P, 1),
            utterance_refs=refs[0] if refs else None,
            other=torch.cat([pad_to(o, length, 1) for o in others]),
            other_mask=torch.cat([pad_to(m, length, 1, False) for m in other_masks]),
            other_refs=refs[1] if refs else None,
            output_details=output_associations,
        )  # rows: pair-major, then turn

        def per_turn(x: torch.Tensor, fill: Any) -> torch.Tensor:
            """(P * n, ...) -> (B, T, P, ...): back in place, `fill` on turns without units."""
            x = x.view((P, n) + tuple(x.shape[1:]))
            full = x.new_full((P, B * T) + tuple(x.shape[2:]), fill).index_copy(1, rows, x)
            return full.view((P, B, T) + tuple(x.shape[2:])).movedim(0, 2)

        S = context_pairs.slots.shape[1]
        context_slots = per_turn(context_pairs.slots, 0.0)  # (B, T, P, S, d)
        context_slot_mask = per_turn(context_pairs.slot_mask, False)  # (B, T, P, S)
        associations: Dict[str, torch.Tensor] = {}
        if output_associations:
            context_slot_refs = per_turn(context_pairs.slot_refs, INVALID_REF)
            for key in ASSOCIATION_DETAILS:
                value = per_turn(getattr(context_pairs, key), INVALID_REF if "refs" in key else 0)
                associations.update({f"{pair}_{key}": value[:, :, p] for p, pair in enumerate(pairs)})  # (B, T, 2, H, k1[, k2])

        # (U_i, memory): sequential over turns, batched over the samples
        memory = self.null_slot.to(units.dtype)[None, None, :].expand(B, 1, d)
        memory_mask = torch.ones(B, 1, dtype=torch.bool, device=device)
        memory_refs = torch.full((B, 1), NULL_REF, dtype=torch.long, device=device) if output_associations else None
        no_slots = AssociationOutput(slots=units.new_zeros(B, S, d), slot_mask=torch.zeros(B, S, dtype=torch.bool, device=device),
                                     slot_refs=torch.full((B, S), INVALID_REF, dtype=torch.long, device=device))
        memory_pairs: List[AssociationOutput] = []
        for t in range(T):
            out = no_slots
            if t > 0:
                out = self.memory_association(
                    utterance=units[:, t], utterance_mask=unit_mask[:, t],
                    utterance_refs=unit_refs[:, t] if output_associations else None,
                    other=memory if self.memory_norm is None else self.memory_norm(memory),
                    other_mask=memory_mask, other_refs=memory_refs, output_details=output_associations,
                )
                memory_pairs.append(out)
            # this turn's slots join the memory: situation pair, history pair, memory pair (Eq. 16-18)
            memory = torch.cat([memory, context_slots[:, t].reshape(B, P * S, d), out.slots], 1)
            memory_mask = torch.cat([memory_mask, context_slot_mask[:, t].reshape(B, P * S), out.slot_mask], 1)
            if output_associations:
                memory_refs = torch.cat([memory_refs, context_slot_refs[:, t].reshape(B, P * S), out.slot_refs], 1)
        if memory_pairs and output_associations:  # turn 0 has no memory pair
            for key in ASSOCIATION_DETAILS:
                first = getattr(memory_pairs[0], key)
                empty = first.new_full(first.shape, INVALID_REF if "refs" in key else 0)
                associations[f"memory_{key}"] = torch.stack([empty] + [getattr(o, key) for o in memory_pairs], 1)
        return IterativeAssociationOutput(memory=memory, memory_mask=memory_mask, memory_refs=memory_refs,
                                          associations=associations)


# ----------------------------------------------------------------------------------------------------------------
# Emotion heads and word selector
# ----------------------------------------------------------------------------------------------------------------


class AggregationHead(nn.Module):
    """Attention pooling over a sequence, then a small MLP to emotion logits (Eq. 20-24).

    The pooling score is `w . h` (`emotion_pooling="linear"`) or the authors' `v . tanh(W h + b)` (`"tanh"`).
    Neither has a bias of its own: under the softmax it would be a no-op.
    """

    def __init__(self, config: IAMMConfig):
        super().__init__()
        d = config.hidden_size
        self.score = nn.Linear(d, 1, bias=False)
        self.pooling_proj = nn.Linear(d, d) if getattr(config, "emotion_pooling", "linear") == "tanh" else None
        self.dense = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, config.num_labels)
        self.dropout = dropout_module(getattr(config, "classifier_dropout", 0.0))

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scored = hidden_states if self.pooling_proj is None else torch.tanh(self.pooling_proj(hidden_states))
        pooled = masked_mean_pool(self.score(scored).squeeze(-1), hidden_states, mask)  # (B, d)
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(pooled)))))


@dataclass
class SelectedMemory(ModelOutput):
    """The word selector's choice: `hidden_state (B, k3, d)` (`H~_m`), `mask (B, k3)`, and the chosen slots'
    positions in the memory `index (B, k3)` and scores `weights (B, k3)`."""

    hidden_state: Optional[torch.FloatTensor] = None
    mask: Optional[torch.BoolTensor] = None
    index: Optional[torch.LongTensor] = None
    weights: Optional[torch.FloatTensor] = None


class WordSelector(nn.Module):
    """Scores each memory slot with sigmoid(w . H_m), keeps the top k3 and scales them by their scores (Eq. 26-27)."""

    def __init__(self, config: IAMMConfig):
        super().__init__()
        self.score = nn.Linear(config.hidden_size, 1)
        self.k3 = config.num_memory_words

    def forward(self, memory: torch.Tensor, mask: torch.Tensor) -> SelectedMemory:
        scores = torch.sigmoid(self.score(memory).squeeze(-1)).masked_fill(~mask, -1.0)  # (B, M)
        k = min(self.k3, memory.shape[1])
        top_scores, top_index = stable_topk(scores, k)  # (B, k)
        valid = top_scores >= 0
        selected = memory.gather(1, top_index[..., None].expand(-1, -1, memory.shape[-1]))
        selected = selected * (top_scores * valid)[..., None]  # (B, k, d)
        return SelectedMemory(hidden_state=pad_to(selected, self.k3, 1), mask=pad_to(valid, self.k3, 1, False),
                              index=pad_to(top_index, self.k3, 1), weights=pad_to(top_scores.clamp(min=0), self.k3, 1))


# ----------------------------------------------------------------------------------------------------------------
# Pretrained base
# ----------------------------------------------------------------------------------------------------------------


# Weight names of checkpoints saved before the iterative association was a module of its own (regex -> name).
# `from_pretrained` renames them; `save_pretrained` of a model loaded from such a checkpoint writes them back
# under the names it read (transformers reverses the mapping), which every version reads.
LEGACY_KEY_MAPPING = {
    r"(explicit|implicit)_context_association\.": r"\1_association.context_association.",
    r"(explicit|implicit)_memory_association\.": r"\1_association.memory_association.",
    r"(explicit|implicit)_null_slot": r"\1_association.null_slot",
}


def incomplete_file_reason(path: str) -> Optional[str]:
    """Why the weights file `path` (safetensors, or a torch zip file: `.bin`, `.pt`, `.pth`) is unreadable, saying
    by how much a truncated one is short; None if it looks complete. A save cut by a kill or a full disk leaves such
    files; `from_pretrained` checks a folder's weights with it, and the scripts every file of a checkpoint."""
    size = os.path.getsize(path)
    if path.endswith(".safetensors"):
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes: too short for a safetensors file (it is truncated)"
            n = int.from_bytes(head, "little")
            if 8 + n > size:  # (never read more than the file holds: a corrupt length could say terabytes)
                return f"{size} bytes where its header alone announces {8 + n}: it is truncated"
            raw = f.read(n)
        try:
            header = json.loads(raw)
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):
            return "its safetensors header is corrupt"
        expected = 8 + n + end
        if size < expected:
            return f"{size} bytes where its header announces {expected} ({expected - size} bytes missing): it is truncated"
        if size > expected:
            return f"{size} bytes where its header announces {expected}: it is corrupt"
        return None
    if path.endswith((".pt", ".pth", ".bin")):
        try:
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            return f"not a complete torch file ({e}): it is truncated or corrupt"
    return None


def first_incomplete_file(folder: str, accept: Optional[Callable[[str], bool]] = None) -> Optional[Tuple[str, str]]:
    """`(path, why)` of the first file of `folder` (by name; only names `accept` takes) that
    :func:`incomplete_file_reason` finds truncated or corrupt; None if there is none."""
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if (accept is None or accept(name)) and os.path.isfile(path):
            why = incomplete_file_reason(path)
            if why is not None:
                return path, why
    return None


class IncompleteWeightsError(Exception):
    """A weights file of a model folder is truncated or corrupt; the message names it and how much is missing.

    Neither an `OSError` nor a `ValueError` on purpose: `pipeline()` retries a load that raised one of those with its
    other model classes and reports their tracebacks instead of the message."""


def check_weight_files(folder: str) -> None:
    """Raise :class:`IncompleteWeightsError` naming the first weights file of the model folder `folder`
    (`*.safetensors`, `pytorch_model*.bin`) that is truncated or corrupt (see :func:`incomplete_file_reason`);
    nothing for a Hub id."""
    if not isinstance(folder, (str, os.PathLike)) or not os.path.isdir(folder):
        return
    found = first_incomplete_file(folder, lambda name: name.endswith(".safetensors")
                                  or (name.startswith("pytorch_model") and name.endswith(".bin")))
    if found is not None:
        path, why = found
        raise IncompleteWeightsError(f"{path}: {why}. The save that wrote it was cut short (a kill or a full disk): "
                                     f"save the model again, or load another checkpoint")


def rename_legacy_weights(module, state_dict, prefix, *args) -> None:
    """A `load_state_dict` pre-hook: weights of `module` saved under earlier names get today's names."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        name = key[len(prefix):]
        for pattern, replacement in LEGACY_KEY_MAPPING.items():
            name = re.sub(pattern, replacement, name)
        if prefix + name != key:
            state_dict[prefix + name] = state_dict.pop(key)


class IAMMPreTrainedModel(PreTrainedModel):
    config_class = IAMMConfig
    base_model_prefix = "model"
    main_input_name = "context_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["IAMMEncoderModel"]

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; weights saved under the names of earlier versions are renamed, and a
        truncated weights file in a local folder is refused naming it and how much is missing
        (:func:`check_weight_files`)."""
        kwargs.setdefault("key_mapping", LEGACY_KEY_MAPPING)
        folder = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        if isinstance(folder, (str, os.PathLike)):
            check_weight_files(os.path.join(folder, kwargs.get("subfolder") or ""))
        return super().from_pretrained(*args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Xavier-uniform for every matrix (the authors' initialisation), zero biases, unit LayerNorms."""
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Embedding)):
            nn.init.xavier_uniform_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, IterativeAssociation):
            nn.init.normal_(module.null_slot, std=0.02)


# ----------------------------------------------------------------------------------------------------------------
# The encoder side: encoders + iterative association + emotion heads + word selector (generate()'s encoder)
# ----------------------------------------------------------------------------------------------------------------


class IAMMEncoderModel(IAMMPreTrainedModel):
    """Encodes a dialogue, runs the iterative association over its utterances, predicts the emotion and selects the
    memory slots the association decoder reads. `IAMMForConditionalGeneration.get_encoder()` returns it."""

    def __init__(self, config: IAMMConfig):
        super().__init__(config)
        d = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.embed_scale = math.sqrt(d)
        self.embed_dropout = dropout_module(getattr(config, "dropout", 0.0))  # no parameters: order unaffected
        self.utterance_encoder = IAMMEncoder(config)  # Enc_u, Eq. (1)
        self.context_encoder = IAMMEncoder(config)  # Enc_ctx, Eq. (2)
        self.situation_encoder = IAMMEncoder(config) if config.use_situation else None  # Enc_sit, Eq. (3)
        # (registration order = parameter order, which saved optimizer states depend on: keep it)
        has_memory = config.use_explicit_association or config.use_implicit_association  # else: no memory at all
        self.memory_encoder = IAMMEncoder(config) if has_memory else None  # Enc_m, Eq. (19)
        self.context_emotion_head = AggregationHead(config)  # shared by H_c and H_s
        self.memory_emotion_head = AggregationHead(config) if has_memory else None
        if config.use_explicit_association:  # words of utterances, situation and memory
            # utterance-situation and utterance-history pairs share one module (as the authors' code)
            self.explicit_association = IterativeAssociation(config, config.num_keywords, config.num_associated_words)
        if config.use_implicit_association:  # relation summaries of the knowledge, so k1, k2 <= R
            self.knowledge_encoder = IAMMEncoder(config)  # Enc_cs, Eq. (4-5)
            self.knowledge_context_encoder = IAMMEncoder(config)  # Eq. (6-7)
            self.knowledge_emotion_head = AggregationHead(config)
            self.implicit_association = IterativeAssociation(
                config, min(config.num_keywords, config.num_relations), min(config.num_associated_words, config.num_relations)
            )
        if config.use_word_selector:
            self.word_selector = WordSelector(config)
        # torch's load_state_dict (Trainer's resume) reads the weight names of earlier versions too
        self.register_load_state_dict_pre_hook(rename_legacy_weights)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings scaled by sqrt(d) (then `config.dropout`); ids past the vocabulary (copied OOV words) read
        as [UNK]."""
        ids = ids.masked_fill(ids >= self.config.vocab_size, self.config.unk_token_id)
        return self.embed_dropout(self.embed_tokens(ids) * self.embed_scale)

    # ---- 1. encoding (Eq. 1-7) ----------------------------------------------------------------------------------
    def encode_context(self, context_ids, context_mask, role_ids, turn_mask):
        """Enc_u on each real utterance on its own, then Enc_ctx over all of them, packed (Eq. 1-2).

        Returns the word + role embeddings `(B, T, L, d)` (the units of the explicit association), `H_c (B, Lc, d)`
        and its mask `(B, Lc)`.
        """
        B, T, L = context_ids.shape
        words = self.embed(context_ids) + self.embed(role_ids)[:, :, None, :]  # (B, T, L, d): word + role
        if capturing():  # every turn, padded ones too
            mask = with_first_position(context_mask).reshape(B * T, L)
            encoded = self.utterance_encoder(words.reshape(B * T, L, -1), mask)
            encoded = torch.where(turn_mask[:, :, None, None], encoded.view(words.shape), 0.0)  # (B, T, L, d)
        else:
            encoded = torch.zeros_like(words)
            encoded[turn_mask] = self.utterance_encoder(words[turn_mask], context_mask[turn_mask])  # (n_real_turns, L, d)
        packed, packed_mask = pack(encoded.reshape(B, T * L, -1), context_mask.reshape(B, T * L))
        return words, self.context_encoder(packed, packed_mask), packed_mask

    def encode_knowledge(self, situation_knowledge_ids, situation_knowledge_mask, context_knowledge_ids,
                         context_knowledge_mask, turn_mask):
        """Enc_cs on every relation text of the situation and of the real utterances, in one batch; its [CLS]
        vector is that relation's summary (Eq. 4-5). Returns the situation block (B, R, d) (None without it) and
        the utterance blocks (B, T, R, d), zeros on padded turns."""
        B, T, R, Lk = context_knowledge_ids.shape
        if capturing():  # every turn, padded ones too
            texts = [context_knowledge_ids.flatten(0, 2)]  # (B * T * R, Lk)
            masks = [with_first_position(context_knowledge_mask).flatten(0, 2)]
        else:
            texts = [context_knowledge_ids[turn_mask].flatten(0, 1)]  # (n_real_turns * R, Lk)
            masks = [context_knowledge_mask[turn_mask].flatten(0, 1)]
        if situation_knowledge_ids is not None:
            texts.append(situation_knowledge_ids.flatten(0, 1))  # (B * R, Lk')
            masks.append(situation_knowledge_mask.flatten(0, 1))
        length = max(t.shape[1] for t in texts)
        ids = torch.cat([pad_to(t, length, 1, self.config.pad_token_id) for t in texts])
        summaries = self.knowledge_encoder(self.embed(ids), torch.cat([pad_to(m, length, 1, False) for m in masks]),
                                           first_only=True)  # (n_texts, d)
        n_context = texts[0].shape[0]
        if capturing():
            blocks = torch.where(turn_mask[:, :, None, None], summaries[:n_context].view(B, T, R, -1), 0.0)
        else:
            blocks = summaries.new_zeros(B, T, R, summaries.shape[-1])
            blocks[turn_mask] = summaries[:n_context].view(-1, R, summaries.shape[-1])
        situation_block = summaries[n_context:].view(B, R, -1) if situation_knowledge_ids is not None else None
        return situation_block, blocks

    def forward(
        self,
        context_ids: torch.LongTensor,
        context_mask: Optional[torch.BoolTensor] = None,
        role_ids: Optional[torch.LongTensor] = None,
        context_ids_extended: Optional[torch.LongTensor] = None,
        situation_ids: Optional[torch.LongTensor] = None,
        situation_mask: Optional[torch.BoolTensor] = None,
        situation_knowledge_ids: Optional[torch.LongTensor] = None,
        situation_knowledge_mask: Optional[torch.BoolTensor] = None,
        context_knowledge_ids: Optional[torch.LongTensor] = None,
        context_knowledge_mask: Optional[torch.BoolTensor] = None,
        output_associations: bool = False,
        return_dict: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        use_situation: Optional[bool] = None,
    ) -> IAMMEncoderOutput:
        r"""
        Args:
            context_ids (`(B, T, L)`): `[CLS]` + words of each context utterance (see `IAMMDataCollator`).
            context_mask (`(B, T, L)` bool): real tokens. Defaults to `context_ids != pad`.
            role_ids (`(B, T)`): `[SPK]`/`[LSN]` token id of each utterance.
            context_ids_extended (`(B, T, L)`): extended-vocabulary ids (copy source); defaults to `context_ids`.
            situation_ids / situation_mask (`(B, Ls)`): `[CLS]` + situation words.
            situation_knowledge_ids / _mask (`(B, R, Lk)`), context_knowledge_ids / _mask (`(B, T, R, Lk)`):
                `[CLS]` + knowledge text per relation (needed when `use_implicit_association`).
            output_associations: also return the associations: a dict with, for each pair type
                (`explicit_situation`, `explicit_history`, `explicit_memory`, `implicit_*`), `*_keyword_refs`
                `(B, T, 2, H, k1)`, `*_keyword_weights`, `*_associated_refs` `(B, T, 2, H, k1, k2)` and
                `*_associated_weights` (direction 0: keywords of the other sentence, associated words in the
                utterance; 1: keywords of the utterance), and `selected_memory_refs`/`_weights` `(B, k3)`.
                Refs name words independently of padding (see `decode_association_ref`).
            return_dict: False returns the output's fields as a tuple (`ModelOutput.to_tuple()`).
            output_attentions / output_hidden_states: IAMM returns neither; True is an error (generate() passes
                the generation config's False).
            use_situation: False reads no situation for this call (the model's `use_situation=False` mode: no
                situation encoder, situation emotion head, utterance-situation pairs or situation knowledge), for
                dialogues that have none. None: `config.use_situation`. True needs a model saved with the situation.
        """
        if output_attentions or output_hidden_states:
            raise ValueError("IAMM does not return attention weights or per-layer hidden states "
                             "(output_attentions / output_hidden_states must be False)")
        config = self.config
        pad = config.pad_token_id
        # ---- inputs
        if role_ids is None:
            raise ValueError("IAMM needs role_ids (the [SPK]/[LSN] id of each utterance)")
        context_mask = (context_ids != pad) if context_mask is None else context_mask.bool()
        if context_ids_extended is None:
            context_ids_extended = context_ids
        B, T, L = context_ids.shape
        turn_mask = context_mask[:, :, 0]  # (B, T): real utterances
        if capturing():  # checked on the device, without a host sync
            torch._assert_async(turn_mask[:, 0].all(), "every sample needs at least one context utterance")
        elif not turn_mask[:, 0].all():
            raise ValueError("every sample needs at least one context utterance, in context_ids[:, 0]")
        if use_situation is None:
            use_situation = config.use_situation
        elif use_situation and not config.use_situation:
            raise ValueError("this IAMM was saved with use_situation=False: it has no situation encoder to read one")
        if use_situation and situation_ids is None:
            raise ValueError("this IAMM reads the situation: pass situation_ids (or use_situation=False)")
        if use_situation:
            situation_mask = (situation_ids != pad) if situation_mask is None else situation_mask.bool()
        if config.use_implicit_association and context_knowledge_ids is None:
            raise ValueError(
                "use_implicit_association=True needs knowledge inputs (situation_knowledge_ids, context_knowledge_ids): "
                "generate them with scripts/generate_knowledge.py, or set use_implicit_association=False"
            )

        # ---- 1. explicit encoding, Eq. (1-3)
        words, hidden_context, packed_mask = self.encode_context(context_ids, context_mask, role_ids, turn_mask)
        packed_ids, _ = pack(context_ids_extended.reshape(B, T * L), context_mask.reshape(B, T * L))  # (B, Lc)
        hidden_situation = None
        if use_situation:
            situation_words = self.embed(situation_ids)  # (B, Ls, d)
            hidden_situation = self.situation_encoder(situation_words, situation_mask)  # H_s: (B, Ls, d)

        # ---- 2. iterative association, Eq. (8-19); V = V_explicit ++ V_implicit
        sides: List[Tuple[str, IterativeAssociationOutput]] = []
        if config.use_explicit_association:
            device = context_ids.device
            word_mask = context_mask.clone()
            word_mask[:, :, 0] = False  # [CLS] is not a word
            word_refs = situation_refs = situation_word_mask = None
            if output_associations:
                word_refs = ((torch.arange(T, device=device)[:, None] + 1) * REF_STRIDE
                             + torch.arange(L, device=device))[None].expand(B, T, L)  # (B, T, L)
            if use_situation:
                situation_word_mask = situation_mask.clone()
                situation_word_mask[:, 0] = False
                if output_associations:
                    situation_refs = torch.arange(situation_ids.shape[1], device=device)[None].expand(B, -1)
            sides.append(("explicit", self.explicit_association(
                units=words, unit_mask=word_mask, unit_refs=word_refs,
                situation=situation_words if use_situation else None, situation_mask=situation_word_mask,
                situation_refs=situation_refs, output_associations=output_associations,
            )))
        hidden_knowledge = knowledge_mask = None
        if config.use_implicit_association:
            R = config.num_relations
            if context_knowledge_mask is None:
                context_knowledge_mask = context_knowledge_ids != pad
            if situation_knowledge_mask is None and situation_knowledge_ids is not None:
                situation_knowledge_mask = situation_knowledge_ids != pad
            situation_block, blocks = self.encode_knowledge(
                situation_knowledge_ids if use_situation else None,
                situation_knowledge_mask.bool() if use_situation else None,
                context_knowledge_ids, context_knowledge_mask.bool(), turn_mask,
            )  # (B, R, d), (B, T, R, d): Eq. (4-5)
            device = blocks.device
            block_refs = situation_block_refs = None
            if output_associations:
                block_refs = IMPLICIT_REF + (torch.arange(T, device=device)[:, None] + 1) * R + torch.arange(R, device=device)
                block_refs = block_refs[None].expand(B, T, R)
                situation_block_refs = (IMPLICIT_REF + torch.arange(R, device=device))[None].expand(B, R)
            sides.append(("implicit", self.implicit_association(
                units=blocks, unit_mask=turn_mask[:, :, None].expand(B, T, R), unit_refs=block_refs,
                situation=situation_block,
                situation_mask=torch.ones(B, R, dtype=torch.bool, device=device) if use_situation else None,
                situation_refs=situation_block_refs if use_situation else None,
                output_associations=output_associations,
            )))
            # Eq. (6-7): the situation block and the LAST REAL utterance's block, encoded together
            last = turn_mask.long().sum(1) - 1  # (B,)
            last_block = blocks[torch.arange(B, device=device), last]  # (B, R, d)
            knowledge_input = torch.cat([situation_block, last_block], 1) if use_situation else last_block
            knowledge_mask = torch.ones(knowledge_input.shape[:2], dtype=torch.bool, device=device)
            hidden_knowledge = self.knowledge_context_encoder(knowledge_input, knowledge_mask)  # H~_cs
        associations = {f"{side}_{key}": value for side, out in sides for key, value in out.associations.items()}

        # H_m = Enc_m(V), V packed (only real slots), Eq. (19)
        hidden_memory = memory_mask = memory_refs = None
        if sides:
            slot_mask = torch.cat([out.memory_mask for _, out in sides], 1)
            memory, memory_mask = pack(torch.cat([out.memory for _, out in sides], 1), slot_mask)
            if output_associations:
                memory_refs, _ = pack(torch.cat([out.memory_refs for _, out in sides], 1), slot_mask)
            hidden_memory = self.memory_encoder(memory, memory_mask)  # (B, M, d)

        # ---- 3. emotion, Eq. (20-25): the product of the heads' probabilities
        if use_situation:  # H_c and H_s share a head: one call over both
            length = max(hidden_context.shape[1], hidden_situation.shape[1])
            both = self.context_emotion_head(
                torch.cat([pad_to(hidden_context, length, 1), pad_to(hidden_situation, length, 1)]),
                torch.cat([pad_to(packed_mask, length, 1, False), pad_to(situation_mask, length, 1, False)]),
            )
            head_logits = {"context": both[:B], "situation": both[B:]}
        else:
            head_logits = {"context": self.context_emotion_head(hidden_context, packed_mask)}
        if hidden_memory is not None:
            head_logits["memory"] = self.memory_emotion_head(hidden_memory, memory_mask)
        if hidden_knowledge is not None:
            head_logits["knowledge"] = self.knowledge_emotion_head(hidden_knowledge, knowledge_mask)
        emotion_logits = sum(torch.log_softmax(v, dim=-1) for v in head_logits.values())

        # ---- 4. word selector, Eq. (26-27): H~_m for the association decoder
        selected = None
        if config.use_word_selector:  # the paper selects from H_m, the authors' code from the raw slots
            raw = config.word_selector_input == "raw"
            selected = self.word_selector(memory if raw else hidden_memory, memory_mask)
        if selected is not None and output_associations:
            associations["selected_memory_refs"] = memory_refs.gather(1, selected.index).masked_fill(~selected.mask, INVALID_REF)
            associations["selected_memory_weights"] = selected.weights * selected.mask

        output = IAMMEncoderOutput(
            last_hidden_state=hidden_context,
            context_mask=packed_mask,
            context_ids_extended=packed_ids,
            memory_hidden_state=selected.hidden_state if selected is not None else None,
            memory_mask=selected.mask if selected is not None else None,
            emotion_logits=emotion_logits,
            context_emotion_logits=head_logits["context"],
            situation_emotion_logits=head_logits.get("situation"),
            memory_emotion_logits=head_logits.get("memory"),
            knowledge_emotion_logits=head_logits.get("knowledge"),
            associations=associations if output_associations else None,
        )
        return output if return_dict is None or return_dict else output.to_tuple()


# ----------------------------------------------------------------------------------------------------------------
# IAMMModel: the encoder side, the two decoders and their gate (Eq. 28-30)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class IAMMSeq2SeqModelOutput(ModelOutput):
    """Output of `IAMMModel`.

    Args:
        last_hidden_state (`(B, Ly, d)`): O, the gated mix of the two decoders' outputs (Eq. 30).
        copy_attention (`(B, Ly, Lc)`): `Dec_c`'s last cross-attention over `H_c`, mean over heads (the copy
            distribution of the pointer-generator); None without it.
        encoder_outputs (`IAMMEncoderOutput`): what the encoder side computed.
        cache: the decoders' `EncoderDecoderCache` (incremental decoding).
    """

    last_hidden_state: Optional[torch.FloatTensor] = None
    copy_attention: Optional[torch.FloatTensor] = None
    encoder_outputs: Optional[IAMMEncoderOutput] = None
    cache: Optional[EncoderDecoderCache] = None


class IAMMModel(IAMMPreTrainedModel):
    """The IAMM encoder-decoder without the output head: the encoder side (`IAMMEncoderModel`), the decoders
    `Dec_c` (over `H_c`) and `Dec_a` (over `H~_m`) and their gate.

    The encoder side is the attribute `model` (not `encoder`) so that weight names (`model.*`) stay those of
    checkpoints saved by earlier versions.
    """

    def __init__(self, config: IAMMConfig):
        super().__init__(config)
        self._build_encoder_decoder(config)
        self.post_init()

    def _build_encoder_decoder(self, config: IAMMConfig) -> None:
        self.model = IAMMEncoderModel(config)
        self.context_decoder = IAMMDecoder(config)  # Dec_c, attends to H_c
        if config.use_word_selector:
            self.association_decoder = IAMMDecoder(config)  # Dec_a, attends to H~_m
            self.gate = nn.Linear(2 * config.hidden_size, 1)  # g = sigmoid(w [O_c; O_m])

    def get_encoder(self) -> IAMMEncoderModel:
        return self.model

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def decode(self, decoder_input_ids: torch.LongTensor, encoder_outputs: IAMMEncoderOutput,
               cache: Optional[EncoderDecoderCache] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Both decoders and the gate: the output states O (B, t, d) and Dec_c's copy attention (B, t, Lc)."""
        past = cache.self_attention_cache.get_seq_length() if cache is not None else 0
        x = self.model.embed(decoder_input_ids)  # (B, t, d)
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], offset=past, device=x.device, dtype=x.dtype)
        pool_scores = self.config.copy_head_pooling == "scores"
        need_weights = ("scores" if pool_scores else True) if self.config.use_pointer_generator else False
        out_c, copy_attention = self.context_decoder(
            x, memory=encoder_outputs.last_hidden_state, memory_mask=encoder_outputs.context_mask, cache=cache,
            decoder_index=0, need_weights=need_weights,
        )
        out = out_c
        if self.config.use_word_selector:
            out_m, _ = self.association_decoder(
                x, memory=encoder_outputs.memory_hidden_state, memory_mask=encoder_outputs.memory_mask, cache=cache,
                decoder_index=1,
            )
            gate = torch.sigmoid(self.gate(torch.cat([out_c, out_m], dim=-1)))  # (B, t, 1), Eq. (30)
            floor = getattr(self.config, "gate_floor", 0.0)
            if floor:  # each decoder keeps at least `floor` of the output
                gate = floor + (1 - 2 * floor) * gate
            out = gate * out_c + (1 - gate) * out_m
        if copy_attention is not None:
            if pool_scores:  # the softmax of the heads' mean scores (B, heads, t, Lc) -> (B, t, Lc)
                scores = copy_attention.float().mean(1).clamp(min=torch.finfo(torch.float32).min)
                copy_attention = torch.softmax(scores, dim=-1).to(copy_attention.dtype)
            else:  # the mean of the heads' distributions (B, heads, t, Lc) -> (B, t, Lc)
                copy_attention = copy_attention.mean(1)
        return out, copy_attention

    def forward(
        self,
        context_ids: Optional[torch.LongTensor] = None,
        context_mask: Optional[torch.BoolTensor] = None,
        role_ids: Optional[torch.LongTensor] = None,
        context_ids_extended: Optional[torch.LongTensor] = None,
        situation_ids: Optional[torch.LongTensor] = None,
        situation_mask: Optional[torch.BoolTensor] = None,
        situation_knowledge_ids: Optional[torch.LongTensor] = None,
        situation_knowledge_mask: Optional[torch.BoolTensor] = None,
        context_knowledge_ids: Optional[torch.LongTensor] = None,
        context_knowledge_mask: Optional[torch.BoolTensor] = None,
        decoder_input_ids: Optional[torch.LongTensor] = None,
        encoder_outputs: Optional[IAMMEncoderOutput] = None,
        cache: Optional[EncoderDecoderCache] = None,
        use_cache: Optional[bool] = None,
        output_associations: bool = False,
    ) -> IAMMSeq2SeqModelOutput:
        """Inputs as `IAMMEncoderModel.forward`, plus `decoder_input_ids (B, Ly)` (`[SOS]` + target words),
        a precomputed `encoder_outputs`, and `cache`/`use_cache` for incremental decoding."""
        if encoder_outputs is None:
            encoder_outputs = self.model(
                context_ids=context_ids, context_mask=context_mask, role_ids=role_ids,
                context_ids_extended=context_ids_extended, situation_ids=situation_ids, situation_mask=situation_mask,
                situation_knowledge_ids=situation_knowledge_ids, situation_knowledge_mask=situation_knowledge_mask,
                context_knowledge_ids=context_knowledge_ids, context_knowledge_mask=context_knowledge_mask,
                output_associations=output_associations,
            )
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        if not use_cache:
            cache = None
        hidden, copy_attention = self.decode(decoder_input_ids, encoder_outputs, cache)
        return IAMMSeq2SeqModelOutput(last_hidden_state=hidden, copy_attention=copy_attention,
                                      encoder_outputs=encoder_outputs, cache=cache)


# ----------------------------------------------------------------------------------------------------------------
# The head: pointer-generator (Eq. 31-35)
# ----------------------------------------------------------------------------------------------------------------


class PointerGenerator(nn.Module):
    """Mixes the vocabulary softmax with a copy distribution over the context tokens (See et al., 2017):
    `p(w) = p_gen * softmax(W O)[w] + (1 - p_gen) * sum_{j: source_j = w} copy_attention_j`, with
    `p_gen = sigmoid(w_gen . O)`."""

    def __init__(self, config: IAMMConfig):
        super().__init__()
        self.vocab_size = config.vocab_size
        self.output_projection = nn.Linear(config.hidden_size, config.vocab_size)
        self.p_gen = nn.Linear(config.hidden_size, 1) if config.use_pointer_generator else None

    def forward(self, hidden: torch.Tensor, copy_attention: Optional[torch.Tensor], source_ids: torch.Tensor,
                extended_size: int) -> torch.Tensor:
        """hidden (B, Ly, d), copy_attention (B, Ly, Lc), source_ids (B, Lc) -> log-probs (B, Ly, extended_size)."""
        vocab_logits = self.output_projection(hidden)
        if self.p_gen is None:
            return F.pad(torch.log_softmax(vocab_logits, dim=-1), (0, extended_size - vocab_logits.shape[-1]),
                         value=torch.finfo(vocab_logits.dtype).min)
        p_gen = torch.sigmoid(self.p_gen(hidden))  # (B, Ly, 1)
        vocab_probs = torch.softmax(vocab_logits, dim=-1) * p_gen
        probs = F.pad(vocab_probs, (0, extended_size - vocab_probs.shape[-1]))  # (B, Ly, V + n_oov)
        copy_probs = copy_attention * (1 - p_gen)
        index = source_ids[:, None, :].expand(-1, hidden.shape[1], -1)
        if not torch.is_grad_enabled():  # decoding: the same arithmetic in place (saves three (B, t, V) passes)
            return probs.scatter_add_(2, index, copy_probs).clamp_(min=1e-12).log_()
        probs = probs.scatter_add(2, index, copy_probs)
        return torch.log(probs.clamp(min=1e-12))

    def target_log_probs(self, hidden: torch.Tensor, copy_attention: Optional[torch.Tensor], source_ids: torch.Tensor,
                         targets: torch.Tensor) -> torch.Tensor:
        """log p(target) only (B, Ly): the same values as `forward(...).gather(targets)` (computed in float32 under
        autocast), without materialising the (B, Ly, V) distribution three more times (what a training step needs)."""
        vocab_logits = self.output_projection(hidden)  # (B, Ly, V)
        targets = targets.clamp(min=0)
        in_vocab = targets < self.vocab_size
        # log softmax(W O)[target] = -cross_entropy (log_softmax + nll_loss): its backward writes fewer (B*Ly, V)
        # tensors than a gather + logsumexp would; under autocast it runs in float32
        log_vocab = -F.cross_entropy(vocab_logits.flatten(0, 1), targets.clamp(max=self.vocab_size - 1).flatten(),
                                     reduction="none").view_as(targets)  # (B, Ly)
        if self.p_gen is None:
            return log_vocab.masked_fill(~in_vocab, math.log(1e-12))
        p_gen = torch.sigmoid(self.p_gen(hidden)).squeeze(-1)  # (B, Ly)
        copy = (copy_attention * (source_ids[:, None, :] == targets[..., None])).sum(-1)  # (B, Ly)
        probs = p_gen * log_vocab.exp() * in_vocab + (1 - p_gen) * copy
        return torch.log(probs.clamp(min=1e-12))


class IAMMForConditionalGeneration(IAMMModel, GenerationMixin):
    """IAMM with its response generator: `IAMMModel` (encoder side, `Dec_c`/`Dec_a`, gate) and the
    pointer-generator head. Returns the emotion, the response distribution and (optionally) the associations."""

    _tied_weights_keys = {}

    def __init__(self, config: IAMMConfig):
        IAMMPreTrainedModel.__init__(self, config)
        self._build_encoder_decoder(config)
        self.generator = PointerGenerator(config)
        self.post_init()
        self.generation_config.max_new_tokens = config.max_new_tokens_default

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the decoders make their own EncoderDecoderCache (it also holds the causal-conv inputs)

    def save_pretrained(self, save_directory, *args, tokenizer=None, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the tokenizer when given (a folder that loads on its own) and the
        `empathetic-response` pipeline's remote code, named in the config's `custom_pipelines`."""
        import importlib

        try:  # imported by name: a remote-code copy loaded without the pipeline file still saves
            importlib.import_module(".pipeline_iamm", __package__).ship_pipeline(self.config, save_directory)
        except ModuleNotFoundError:
            pass
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if tokenizer is not None:
            tokenizer.save_pretrained(save_directory)
        return result

    def generate(self, *args, **kwargs):
        """`GenerationMixin.generate`, taking a whole collated batch.

        Keys that only training uses (`labels`, `emotion_labels`, `decoder_attention_mask`, and
        `decoder_input_ids` when it came with `labels`) are dropped. Precomputed `encoder_outputs` are copied
        before generation: beam search and sampling with several returns expand them row-wise, and the caller's
        object (its emotion logits included) must keep one row per dialogue.
        """
        if kwargs.get("labels") is not None:
            kwargs.pop("decoder_input_ids", None)
        for key in TRAINING_ONLY_INPUTS:
            kwargs.pop(key, None)
        encoder_outputs = kwargs.get("encoder_outputs")
        if encoder_outputs is not None:
            kwargs["encoder_outputs"] = type(encoder_outputs)(**encoder_outputs)
        oov_words = kwargs.pop("oov_words", None)
        if oov_words is not None and kwargs.get("extended_vocab_size") is None:
            # one int for every decoding step (a compiled step then sees a size, not a list of lists to specialise on)
            kwargs["extended_vocab_size"] = self.extended_vocab_size(oov_words)
        return super().generate(*args, **kwargs)

    def extended_vocab_size(self, oov_words: List[List[str]]) -> int:
        """The vocabulary plus the most OOV words of a sample (the collator's `oov_words`): the copy vocabulary."""
        return self.config.vocab_size + max([len(words) for words in oov_words] + [0])

    def get_output_embeddings(self) -> nn.Linear:
        return self.generator.output_projection

    def forward(
        self,
        context_ids: Optional[torch.LongTensor] = None,
        context_mask: Optional[torch.BoolTensor] = None,
        role_ids: Optional[torch.LongTensor] = None,
        context_ids_extended: Optional[torch.LongTensor] = None,
        situation_ids: Optional[torch.LongTensor] = None,
        situation_mask: Optional[torch.BoolTensor] = None,
        situation_knowledge_ids: Optional[torch.LongTensor] = None,
        situation_knowledge_mask: Optional[torch.BoolTensor] = None,
        context_knowledge_ids: Optional[torch.LongTensor] = None,
        context_knowledge_mask: Optional[torch.BoolTensor] = None,
        decoder_input_ids: Optional[torch.LongTensor] = None,
        decoder_attention_mask: Optional[torch.BoolTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        emotion_labels: Optional[torch.LongTensor] = None,
        encoder_outputs: Optional[IAMMEncoderOutput] = None,
        cache: Optional[EncoderDecoderCache] = None,
        use_cache: Optional[bool] = None,
        output_associations: bool = False,
        return_logits: Optional[bool] = None,
        oov_words: Optional[List[List[str]]] = None,
        extended_vocab_size: Optional[int] = None,
        return_dict: Optional[bool] = None,
    ) -> IAMMSeq2SeqLMOutput:
        r"""
        Inputs as `IAMMEncoderModel.forward`, plus:
            decoder_input_ids (`(B, Ly)`): `[SOS]` + target words. Built from `labels` when not given.
            decoder_attention_mask: not read (decoding is causal and padding comes last; the loss reads `labels`).
            labels (`(B, Ly)`): target + `[EOS]` in extended ids, -100 on padding.
            emotion_labels (`(B,)`): gold emotion ids.
            encoder_outputs: a precomputed `IAMMEncoderOutput` (generate() passes it).
            cache / use_cache: incremental decoding (generate() passes them).
            return_logits: materialise `logits`. Default: yes, except in training mode with labels, where the loss
                is computed from the target columns alone (same value, much less work) and `logits` is None.
            oov_words: the collator's OOV word lists: they size the extended vocabulary of `logits`
                (`V + the most OOV words of a sample`) without reading `context_ids_extended` back from the device.
            extended_vocab_size: that size itself (generate() passes it to every decoding step instead of the lists).
            return_dict: False returns the output's fields as a tuple (`ModelOutput.to_tuple()`).
        """
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("pass decoder_input_ids or labels")
            decoder_input_ids = self.shift_labels(labels)
        outputs = super().forward(
            context_ids=context_ids, context_mask=context_mask, role_ids=role_ids,
            context_ids_extended=context_ids_extended, situation_ids=situation_ids, situation_mask=situation_mask,
            situation_knowledge_ids=situation_knowledge_ids, situation_knowledge_mask=situation_knowledge_mask,
            context_knowledge_ids=context_knowledge_ids, context_knowledge_mask=context_knowledge_mask,
            decoder_input_ids=decoder_input_ids, encoder_outputs=encoder_outputs, cache=cache, use_cache=use_cache,
            output_associations=output_associations,
        )
        encoder_outputs = outputs.encoder_outputs
        hidden, copy_attention = outputs.last_hidden_state, outputs.copy_attention
        source_ids = encoder_outputs.context_ids_extended
        if return_logits is None:
            return_logits = not (self.training and labels is not None)
        logits = None
        if return_logits:
            if extended_vocab_size is not None:
                extended_size = extended_vocab_size
            elif oov_words is not None:
                extended_size = self.extended_vocab_size(oov_words)
            else:
                extended_size = max(self.config.vocab_size, int(source_ids.max()) + 1)
            logits = self.generator(hidden, copy_attention, source_ids, extended_size)  # (B, Ly, V + n_oov)

        loss = generation_loss = emotion_loss = token_log_probs = None
        if labels is not None:
            targets = labels
            if not self.config.use_pointer_generator:  # no copying: OOV targets are [UNK]
                targets = targets.masked_fill(targets >= self.config.vocab_size, self.config.unk_token_id)
            real = targets != -100
            if logits is not None:
                target_log_probs = logits.gather(2, targets.clamp(min=0)[..., None]).squeeze(-1)
            else:
                target_log_probs = self.generator.target_log_probs(hidden, copy_attention, source_ids, targets)
            # masked_fill, not `* real`: a -inf log-probability at a padded position would turn into NaN
            token_log_probs = target_log_probs.masked_fill(~real, 0.0)
            generation_loss = -token_log_probs.sum() / real.sum()  # token NLL, mean over real tokens
            loss = generation_loss
        if emotion_labels is not None:
            heads = [encoder_outputs.context_emotion_logits, encoder_outputs.situation_emotion_logits,
                     encoder_outputs.memory_emotion_logits, encoder_outputs.knowledge_emotion_logits]
            heads = torch.stack([h for h in heads if h is not None])  # (n_heads, B, n_emotions)
            # Eq. (25): the sum of the heads' cross-entropies (mean over the batch)
            emotion_loss = F.cross_entropy(
                heads.flatten(0, 1), emotion_labels.repeat(heads.shape[0]),
                label_smoothing=getattr(self.config, "emotion_label_smoothing", 0.0),
            ) * heads.shape[0]
            if loss is not None:
                loss = loss + self.config.emotion_loss_weight * emotion_loss
        output = IAMMSeq2SeqLMOutput(
            loss=loss,
            logits=logits,
            generation_loss=generation_loss,
            emotion_loss=emotion_loss,
            token_log_probs=token_log_probs,
            emotion_logits=encoder_outputs.emotion_logits,
            context_emotion_logits=encoder_outputs.context_emotion_logits,
            situation_emotion_logits=encoder_outputs.situation_emotion_logits,
            memory_emotion_logits=encoder_outputs.memory_emotion_logits,
            knowledge_emotion_logits=encoder_outputs.knowledge_emotion_logits,
            associations=encoder_outputs.associations,
            cache=outputs.cache if use_cache else None,
        )
        return output if return_dict is None or return_dict else output.to_tuple()

    def shift_labels(self, labels: torch.LongTensor) -> torch.LongTensor:
        """`[SOS]` + labels[:-1], with padding and copied OOV ids turned into `[PAD]`/`[UNK]`."""
        shifted = labels.new_full(labels.shape, self.config.pad_token_id)
        shifted[:, 0] = self.config.decoder_start_token_id
        shifted[:, 1:] = labels[:, :-1]
        shifted = shifted.masked_fill(shifted == -100, self.config.pad_token_id)
        return shifted.masked_fill(shifted >= self.config.vocab_size, self.config.unk_token_id)

    # ---- associated words as text --------------------------------------------------------------------------------
    @torch.no_grad()
    def extract_associations(self, batch: Dict[str, Any], tokenizer, min_weight: float = 0.0) -> List[Dict[str, Any]]:
        """The associated words IAMM found for each dialogue of a collated batch, as text with weights.

        Returns, per sample, a dict with one list per pair type (`utterance-situation`, `utterance-history`,
        `utterance-memory`, and `implicit-*` with relation names when knowledge is used), each entry
        `{"turn", "head", "keyword", "keyword_side", "keyword_weight", "associated": [[word, weight], ...]}`,
        and `"selected_memory_words"`: the memory slots the word selector kept, as `[keyword, weight]`.
        """
        was_training = self.training
        self.eval()
        inputs = {k: v for k, v in batch.items() if k in IAMM_ENCODER_INPUTS}
        out = self.model(**inputs, output_associations=True)
        if was_training:
            self.train()
        return decode_associations(out.associations, batch, tokenizer, self.config, min_weight)


IAMM_ENCODER_INPUTS = (
    "context_ids", "context_mask", "role_ids", "context_ids_extended", "situation_ids", "situation_mask",
    "situation_knowledge_ids", "situation_knowledge_mask", "context_knowledge_ids", "context_knowledge_mask",
)

TRAINING_ONLY_INPUTS = ("labels", "emotion_labels", "decoder_attention_mask")
"""Batch keys that `generate()` drops (`decoder_input_ids` too, when it comes with `labels`)."""

PAIR_NAMES = {"situation": "utterance-situation", "history": "utterance-history", "memory": "utterance-memory"}

NULL_WORD = "<none>"
"""How the memory's learned null slot (a slot that names no word) reads as text."""


def decode_association_ref(ref: int, sample: int, batch: Dict[str, Any], tokenizer, config: IAMMConfig) -> str:
    """The text a ref names: a situation/context word (copied OOV words included), a relation, or the null slot."""
    if ref == NULL_REF:
        return NULL_WORD
    if ref >= IMPLICIT_REF:
        ref -= IMPLICIT_REF
        source, relation = divmod(ref, config.num_relations)
        where = "situation" if source == 0 else f"utterance {source}"
        return f"{config.relation_names[relation]}({where})"
    if ref < REF_STRIDE:
        token = int(batch["situation_ids"][sample, ref])
    else:
        turn, position = divmod(ref, REF_STRIDE)
        ids = batch.get("context_ids_extended", batch["context_ids"])
        token = int(ids[sample, turn - 1, position])
    if token >= len(tokenizer):
        oov = batch.get("oov_words")
        j = token - len(tokenizer)
        return oov[sample][j] if oov is not None and j < len(oov[sample]) else tokenizer.unk_token
    return tokenizer.convert_ids_to_tokens(token)


def decode_associations(associations: Dict[str, torch.Tensor], batch: Dict[str, Any], tokenizer, config: IAMMConfig,
                        min_weight: float = 0.0) -> List[Dict[str, Any]]:
    """Turn `IAMMEncoderModel(..., output_associations=True).associations` into text (see `extract_associations`)."""
    B = batch["context_ids"].shape[0]
    results: List[Dict[str, Any]] = [dict() for _ in range(B)]
    for side in ("explicit", "implicit"):
        for pair, name in PAIR_NAMES.items():
            key = f"{side}_{pair}"
            if f"{key}_keyword_refs" not in associations:
                continue
            kw_refs = associations[f"{key}_keyword_refs"].tolist()  # (B, T, 2, H, k1)
            kw_w = associations[f"{key}_keyword_weights"].tolist()
            as_refs = associations[f"{key}_associated_refs"].tolist()  # (B, T, 2, H, k1, k2)
            as_w = associations[f"{key}_associated_weights"].tolist()
            label = name if side == "explicit" else f"implicit-{name}"
            for b in range(B):
                entries = []
                for t, per_turn in enumerate(kw_refs[b]):
                    for direction, per_dir in enumerate(per_turn):
                        for h, per_head in enumerate(per_dir):
                            for k, ref in enumerate(per_head):
                                if ref == INVALID_REF or kw_w[b][t][direction][h][k] < min_weight:
                                    continue
                                words = [
                                    [decode_association_ref(r, b, batch, tokenizer, config), round(w, 4)]
                                    for r, w in zip(as_refs[b][t][direction][h][k], as_w[b][t][direction][h][k])
                                    if r != INVALID_REF and w >= min_weight
                                ]
                                entries.append({
                                    "turn": t,
                                    "head": h,
                                    "keyword": decode_association_ref(ref, b, batch, tokenizer, config),
                                    "keyword_side": "other" if direction == 0 else "utterance",
                                    "keyword_weight": round(kw_w[b][t][direction][h][k], 4),
                                    "associated": words,
                                })
                results[b][label] = entries
    if "selected_memory_refs" in associations:
        refs, weights = associations["selected_memory_refs"].tolist(), associations["selected_memory_weights"].tolist()
        for b in range(B):
            results[b]["selected_memory_words"] = [
                [decode_association_ref(r, b, batch, tokenizer, config), round(w, 4)]
                for r, w in zip(refs[b], weights[b]) if r != INVALID_REF
            ]
    return results
