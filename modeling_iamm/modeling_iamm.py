"""PyTorch IAMM: the Iterative Associative Memory Model (Yang et al., ACL 2024) for empathetic response generation.

Reads like the paper: embeddings and Transformer encoders (Sec. 3.1, Eq. 1-7), the Information Association Module
with first- and second-order interaction (Eq. 8-15), the iterative memory over dialogue turns (Eq. 16-19), four
emotion heads combined as a product of probabilities (Eq. 20-25), the word selector, two decoders with a gate and a
pointer-generator (Eq. 26-35).

Shapes: B batch, T context utterances, L tokens per utterance ([CLS] first), Ls situation tokens, R relations,
Lk knowledge tokens, Lc packed context tokens, M memory slots, Ly target tokens, d hidden size, H association heads,
dh association head size, k1/k2/k3 keywords / associated words / selected memory words, S = 2*H*k1 slots per pair.

This file is copied next to the weights by `save_pretrained`; it imports only torch, transformers and
`configuration_iamm`, so `AutoModel.from_pretrained(folder, trust_remote_code=True)` works without the package.
"""

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

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
    """What `IAMMModel` (the encoder side: encoders, iterative association, emotion heads) computes.

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
            see `IAMMModel.forward`.
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


def sinusoidal_positions(length: int, dim: int, offset: int = 0, device=None, dtype=torch.float32) -> torch.Tensor:
    """The Transformer's timing signal, `(length, dim)`, for positions `offset .. offset + length - 1`."""
    position = torch.arange(offset, offset + length, device=device, dtype=torch.float32)[:, None]
    num_timescales = dim // 2
    log_increment = math.log(1.0e4) / max(num_timescales - 1, 1)
    inv_timescales = torch.exp(torch.arange(num_timescales, device=device, dtype=torch.float32) * -log_increment)
    scaled = position * inv_timescales[None, :]
    signal = torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)
    if dim % 2:
        signal = F.pad(signal, (0, 1))
    return signal.to(dtype)


def pack(x: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Move the real entries of each row to the front: `x (B, N, ...)`, `mask (B, N)` -> `(B, N', ...)`, `(B, N')`.

    Packing makes positions independent of how much padding a batch has (batch invariance).
    """
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

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        return x.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, N, head_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: Optional[torch.Tensor] = None,
        key_mask: Optional[torch.Tensor] = None,
        causal: bool = False,
        cache: Optional[DynamicCache] = None,
        layer_idx: int = 0,
        need_weights: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        q = self._split(self.q_proj(hidden_states))
        if key_value_states is not None and cache is not None and _cached(cache, layer_idx):
            # cross-attention while decoding: the encoder side's keys/values were projected at the first step
            k, v = cache.layers[layer_idx].keys, cache.layers[layer_idx].values
        else:
            kv = hidden_states if key_value_states is None else key_value_states
            k, v = self._split(self.k_proj(kv)), self._split(self.v_proj(kv))
            if cache is not None:  # self-attention: appended to earlier steps; cross-attention: stored once
                k, v = cache.update(k, v, layer_idx)
        Lq, Lk = q.shape[2], k.shape[2]
        mask = None
        if key_mask is not None:
            mask = key_mask[:, None, None, :]  # (B, 1, 1, Lk)
        if causal and Lq > 1:
            causal_mask = torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).tril(Lk - Lq)
            mask = causal_mask[None, None] if mask is None else mask & causal_mask[None, None]
        if need_weights:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, heads, Lq, Lk)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1)
            out = torch.matmul(weights, v)
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
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
        """A kernel-3 convolution of x (B, N, C_in) -> (B, N, C_out), computed with matmuls.

        Same result as `conv` (whose weights are used as they are; zero padding 2 left when causal, else 1 each
        side), but much faster on CPU than a convolution with a few hundred channels.
        """
        x = F.pad(x, (0, 0, 2, 0) if self.causal else (0, 0, 1, 1))
        N = x.shape[1] - 2
        c_out, c_in, _ = conv.weight.shape
        if c_in <= c_out:  # narrow input: gather the 3 taps of each position, one matmul
            windows = torch.cat([x[:, 0:N], x[:, 1 : N + 1], x[:, 2 : N + 2]], dim=-1)  # (B, N, 3 * C_in)
            weight = conv.weight.permute(0, 2, 1).reshape(c_out, 3 * c_in)  # tap-major, matching the windows
            return F.linear(windows, weight, conv.bias)
        # wide input: project every position through the 3 taps at once, then add the shifted projections
        taps = F.linear(x, conv.weight.permute(2, 0, 1).reshape(3 * c_out, c_in))  # (B, N + 2, 3 * C_out)
        taps = taps.view(x.shape[0], N + 2, 3, c_out)
        return taps[:, 0:N, 0] + taps[:, 1 : N + 1, 1] + taps[:, 2 : N + 2, 2] + conv.bias

    def _step(self, conv: nn.Conv1d, x: torch.Tensor, cache: DynamicCache, layer_idx: int) -> torch.Tensor:
        """One decoding step of a causal conv: its inputs at t-2, t-1 come from the cache."""
        history, _ = cache.update(x[:, None], x[:, None], layer_idx)  # (B, 1, t, C_in)
        return self._conv(conv, history[:, 0, -(x.shape[1] + 2) :])[:, -x.shape[1] :]

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

    def forward(self, x: torch.Tensor, mask: torch.Tensor, query_length: Optional[int] = None) -> torch.Tensor:
        """`query_length`: compute only the first positions' outputs (their keys/values still come from all)."""
        normed = self.self_attn_layer_norm(x)
        queries = normed if query_length is None else normed[:, :query_length]
        x = x[:, : queries.shape[1]] + self.self_attn(queries, normed, key_mask=mask)[0]
        return x + self.ffn(self.ffn_layer_norm(x), mask[:, : x.shape[1]])


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

    def forward(self, x, memory, memory_mask, cache=None, cache_idx=0, cross_idx=0, need_weights=False):
        self_cache = cache.self_attention_cache if cache is not None else None
        cross_cache = cache.cross_attention_cache if cache is not None else None
        x = x + self.self_attn(self.self_attn_layer_norm(x), causal=True, cache=self_cache, layer_idx=cache_idx)[0]
        attended, weights = self.cross_attn(
            self.cross_attn_layer_norm(x), memory, key_mask=memory_mask, cache=cross_cache, layer_idx=cross_idx,
            need_weights=need_weights,
        )
        x = x + attended
        return x + self.ffn(self.ffn_layer_norm(x), cache=self_cache, layer_idx=cache_idx + 1), weights


class IAMMDecoder(nn.Module):
    """A Transformer decoder (`Dec_c` over `H_c`, `Dec_a` over `H~_m`); returns the last layer's cross-attention."""

    CACHE_SLOTS_PER_LAYER = 3  # self-attention keys/values, and the inputs of the two causal convolutions

    def __init__(self, config: IAMMConfig):
        super().__init__()
        self.layers = nn.ModuleList([IAMMDecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x, memory, memory_mask, cache: Optional[EncoderDecoderCache] = None, decoder_index: int = 0,
                need_weights: bool = False):
        """`decoder_index` (0 for Dec_c, 1 for Dec_a) places this decoder's entries in the shared cache."""
        weights = None
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            self_idx = (decoder_index * n + i) * self.CACHE_SLOTS_PER_LAYER
            x, weights = layer(x, memory, memory_mask, cache, self_idx, decoder_index * n + i, need_weights)
        return self.layer_norm(x), weights


# ----------------------------------------------------------------------------------------------------------------
# Information Association Module (Eq. 8-15)
# ----------------------------------------------------------------------------------------------------------------


class InformationAssociationModule(nn.Module):
    """Associates the words of an utterance `X` with those of another sentence `Y`, in both directions.

    Per head, `association_scores[h, i, j]` scores X-word i against Y-word j (scaled dot products, Eq. 8-9).
    First order (Eq. 10-11): each Y word's scores averaged over the real X words give `first_order_scores`; the
    k1 best are the keywords of Y. Second order (Eq. 12-14): for each keyword, the k2 X words it scores highest
    are its associated words; their per-head value vectors, weighted by sigmoid(score), are concatenated
    (k2 x dh) and the slot is weighted by sigmoid(keyword score). The other direction swaps X and Y. The 2*H*k1
    slots are projected to d (Eq. 15): they are this pair's memory slots.
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

    def _heads(self, proj: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        N, length, _ = x.shape
        return proj(x).view(N, length, self.heads, self.head_dim).transpose(1, 2)  # (N, H, len, dh)

    def _weights(self, scores: torch.Tensor, valid: torch.Tensor, rank: Optional[nn.Linear], k: int) -> torch.Tensor:
        """sigmoid(score) of the selected entries (or of a learned map over their sorted scores); 0 where invalid."""
        scores = scores.masked_fill(~valid, 0.0)
        if rank is not None:
            width = scores.shape[-1]
            scores = rank(F.pad(scores, (0, k - width)))[..., :width]
        return torch.sigmoid(scores) * valid

    def _direction(self, q_src, k_tgt, v_src, src_mask, tgt_mask):
        """Keywords among the target words, their associated words among the source words.

        q_src/v_src: (N, H, Ls, dh), k_tgt: (N, H, Lt, dh), masks (N, Ls)/(N, Lt).
        """
        N, H, Ls, dh = q_src.shape
        Lt = k_tgt.shape[2]
        neg_inf = float("-inf")
        association_scores = torch.matmul(q_src, k_tgt.transpose(-1, -2)) / math.sqrt(dh)  # (N, H, Ls, Lt)
        pair_mask = src_mask[:, None, :, None] & tgt_mask[:, None, None, :]
        # First order, Eq. (10-11): mean over the real source words of each target word's scores.
        n_src = src_mask.sum(1).clamp(min=1)[:, None, None]
        first_order_scores = association_scores.masked_fill(~pair_mask, 0.0).sum(2) / n_src  # (N, H, Lt)
        first_order_scores = first_order_scores.masked_fill(~tgt_mask[:, None, :], neg_inf)
        first_order_scores = first_order_scores.masked_fill(~src_mask.any(1)[:, None, None], neg_inf)
        k1 = min(self.k1, Lt)
        keyword_scores, keyword_index = stable_topk(first_order_scores, k1)  # (N, H, k1)
        keyword_valid = torch.isfinite(keyword_scores)
        # Second order, Eq. (12-14): for each keyword, the source words it scores highest.
        masked_scores = association_scores.masked_fill(~pair_mask, neg_inf)
        second_order_scores = masked_scores.gather(3, keyword_index[:, :, None, :].expand(N, H, Ls, k1))
        second_order_scores = second_order_scores.transpose(2, 3)  # (N, H, k1, Ls)
        k2 = min(self.k2, Ls)
        word_scores, word_index = stable_topk(second_order_scores, k2)  # (N, H, k1, k2)
        word_valid = torch.isfinite(word_scores) & keyword_valid[..., None]
        keyword_weights = self._weights(keyword_scores, keyword_valid, getattr(self, "keyword_rank", None), self.k1)
        word_weights = self._weights(word_scores, word_valid, getattr(self, "word_rank", None), self.k2)
        values = v_src[:, :, None, :, :].expand(N, H, k1, Ls, dh)
        values = values.gather(3, word_index[..., None].expand(N, H, k1, k2, dh))  # (N, H, k1, k2, dh)
        values = values * word_weights[..., None]
        values = F.pad(values, (0, 0, 0, self.k2 - k2)).reshape(N, H, k1, self.k2 * dh)  # (N, H, k1, k2 * dh)
        slots = self.slot_proj(values * keyword_weights[..., None])  # (N, H, k1, d)
        # pad to k1 keywords / k2 words when the sentences are shorter than that
        pad1, pad2 = self.k1 - k1, self.k2 - k2
        slots = F.pad(slots, (0, 0, 0, pad1))
        keyword_valid = F.pad(keyword_valid, (0, pad1), value=False)
        keyword_index = F.pad(keyword_index, (0, pad1), value=0)
        keyword_weights = F.pad(keyword_weights, (0, pad1))
        word_index = F.pad(word_index, (0, pad2, 0, pad1), value=0)
        word_weights = F.pad(word_weights, (0, pad2, 0, pad1))
        word_valid = F.pad(word_valid, (0, pad2, 0, pad1), value=False)
        return slots, keyword_valid, keyword_index, keyword_weights, word_index, word_weights, word_valid

    def forward(self, x, x_mask, y, y_mask, x_refs, y_refs):
        """Associate `x (N, Lx, d)` (the utterance) with `y (N, Ly, d)`.

        Returns `(slots (N, S, d), slot_mask (N, S), slot_refs (N, S), details)`: S = 2*H*k1 slots, the
        first H*k1 for the keywords of Y (associated words in X), the next H*k1 for the keywords of X. A slot's ref
        is its keyword's ref; `details` holds keyword/associated refs and weights, shaped (N, 2, H, k1[, k2]).
        """
        qx, kx, vx = self._heads(self.query, x), self._heads(self.key, x), self._heads(self.value, x)
        qy, ky, vy = self._heads(self.query, y), self._heads(self.key, y), self._heads(self.value, y)
        out_y = self._direction(qx, ky, vx, x_mask, y_mask)  # keywords of Y, associated words in X
        out_x = self._direction(qy, kx, vy, y_mask, x_mask)  # keywords of X, associated words in Y
        N = x.shape[0]

        def refs(table, index):  # table (N, L), index (N, H, ...) -> refs (N, H, ...)
            flat = index.reshape(N, -1)
            return table.gather(1, flat).view(index.shape)

        keyword_refs, word_refs, keyword_w, word_w = [], [], [], []
        for (slots, kv, ki, kw, wi, ww, wv), kw_table, w_table in ((out_y, y_refs, x_refs), (out_x, x_refs, y_refs)):
            keyword_refs.append(refs(kw_table, ki).masked_fill(~kv, INVALID_REF))
            word_refs.append(refs(w_table, wi).masked_fill(~wv, INVALID_REF))
            keyword_w.append(kw)
            word_w.append(ww)
        slots = torch.cat([out_y[0], out_x[0]], dim=1).reshape(N, -1, x.shape[-1])  # (N, 2 * H * k1, d)
        slot_mask = torch.cat([out_y[1], out_x[1]], dim=1).reshape(N, -1)
        details = {
            "keyword_refs": torch.stack(keyword_refs, 1),  # (N, 2, H, k1)
            "keyword_weights": torch.stack(keyword_w, 1),
            "associated_refs": torch.stack(word_refs, 1),  # (N, 2, H, k1, k2)
            "associated_weights": torch.stack(word_w, 1),
        }
        return slots, slot_mask, details["keyword_refs"].reshape(N, -1), details


# ----------------------------------------------------------------------------------------------------------------
# Emotion heads and word selector
# ----------------------------------------------------------------------------------------------------------------


class AggregationHead(nn.Module):
    """Attention pooling over a sequence, then a small MLP to emotion logits (Eq. 20-24)."""

    def __init__(self, config: IAMMConfig):
        super().__init__()
        self.score = nn.Linear(config.hidden_size, 1, bias=False)  # a bias would be a no-op under the softmax
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = masked_mean_pool(self.score(hidden_states).squeeze(-1), hidden_states, mask)  # (B, d)
        return self.out_proj(torch.tanh(self.dense(pooled)))


class WordSelector(nn.Module):
    """Scores each memory slot with sigmoid(w . H_m), keeps the top k3 and scales them by their scores (Eq. 26-27)."""

    def __init__(self, config: IAMMConfig):
        super().__init__()
        self.score = nn.Linear(config.hidden_size, 1)
        self.k3 = config.num_memory_words

    def forward(self, memory: torch.Tensor, mask: torch.Tensor):
        scores = torch.sigmoid(self.score(memory).squeeze(-1)).masked_fill(~mask, -1.0)  # (B, M)
        k = min(self.k3, memory.shape[1])
        top_scores, top_index = stable_topk(scores, k)  # (B, k)
        valid = top_scores >= 0
        selected = memory.gather(1, top_index[..., None].expand(-1, -1, memory.shape[-1]))
        selected = selected * (top_scores * valid)[..., None]  # (B, k, d)
        pad = self.k3 - k
        return (F.pad(selected, (0, 0, 0, pad)), F.pad(valid, (0, pad), value=False),
                F.pad(top_index, (0, pad)), F.pad(top_scores.clamp(min=0), (0, pad)))


# ----------------------------------------------------------------------------------------------------------------
# Pretrained base
# ----------------------------------------------------------------------------------------------------------------


class IAMMPreTrainedModel(PreTrainedModel):
    config_class = IAMMConfig
    base_model_prefix = "model"
    main_input_name = "context_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["IAMMModel"]

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
        elif isinstance(module, IAMMModel):
            for null in (module.explicit_null_slot, module.implicit_null_slot):
                if null is not None:
                    nn.init.normal_(null, std=0.02)


# ----------------------------------------------------------------------------------------------------------------
# IAMMModel: encoders + iterative association + emotion heads (the "encoder" of generate())
# ----------------------------------------------------------------------------------------------------------------


class IAMMModel(IAMMPreTrainedModel):
    """Encodes a dialogue, runs the iterative association over its utterances, and predicts the emotion.

    The memory of each side starts with one learned "nothing associated yet" slot, so it is never empty (a
    context of one utterance without a situation would otherwise have nothing to associate with).
    """

    def __init__(self, config: IAMMConfig):
        super().__init__(config)
        d = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.embed_scale = math.sqrt(d)
        self.utterance_encoder = IAMMEncoder(config)  # Enc_u, Eq. (1)
        self.context_encoder = IAMMEncoder(config)  # Enc_ctx, Eq. (2)
        self.situation_encoder = IAMMEncoder(config) if config.use_situation else None  # Enc_sit, Eq. (3)
        # (registration order = parameter order, which saved optimizer states depend on: keep it)
        has_memory = config.use_explicit_association or config.use_implicit_association  # else: no memory at all
        self.memory_encoder = IAMMEncoder(config) if has_memory else None  # Enc_m, Eq. (19)
        self.context_emotion_head = AggregationHead(config)  # shared by H_c and H_s
        self.memory_emotion_head = AggregationHead(config) if has_memory else None
        self.explicit_null_slot = self.implicit_null_slot = None
        if config.use_explicit_association:
            self.explicit_context_association = InformationAssociationModule(
                config, config.num_keywords, config.num_associated_words
            )  # utterance-situation and utterance-history pairs share it (as the authors' code)
            self.explicit_memory_association = InformationAssociationModule(
                config, config.num_keywords, config.num_associated_words
            )
            self.explicit_null_slot = nn.Parameter(torch.zeros(d))
        if config.use_implicit_association:
            k = min(config.num_keywords, config.num_relations)
            k2 = min(config.num_associated_words, config.num_relations)
            self.knowledge_encoder = IAMMEncoder(config)  # Enc_cs, Eq. (4-5)
            self.knowledge_context_encoder = IAMMEncoder(config)  # Eq. (6-7)
            self.knowledge_emotion_head = AggregationHead(config)
            self.implicit_context_association = InformationAssociationModule(config, k, k2)
            self.implicit_memory_association = InformationAssociationModule(config, k, k2)
            self.implicit_null_slot = nn.Parameter(torch.zeros(d))
        if config.use_word_selector:
            self.word_selector = WordSelector(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings scaled by sqrt(d); ids past the vocabulary (copied OOV words) read as [UNK]."""
        ids = ids.masked_fill(ids >= self.config.vocab_size, self.config.unk_token_id)
        return self.embed_tokens(ids) * self.embed_scale

    # ---- 1. encoding -------------------------------------------------------------------------------------------
    def _encode_utterances(self, words: torch.Tensor, mask: torch.Tensor, turn_mask: torch.Tensor) -> torch.Tensor:
        """Enc_u on each real utterance on its own: (B, T, L, d) -> (B, T, L, d) (zeros on padded turns)."""
        encoded = torch.zeros_like(words)
        encoded[turn_mask] = self.utterance_encoder(words[turn_mask], mask[turn_mask])  # (n_real_turns, L, d)
        return encoded

    def _encode_knowledge(self, sit_ids, sit_mask, ctx_ids, ctx_mask, turn_mask):
        """Enc_cs on every relation text; its [CLS] vector is that relation's summary (Eq. 4-5).

        Returns the situation block (B, R, d) and the utterance blocks (B, T, R, d).
        """
        B, T, R, Lk = ctx_ids.shape
        sit_summary = self.knowledge_encoder(self.embed(sit_ids.flatten(0, 1)), sit_mask.flatten(0, 1), first_only=True)
        real = ctx_ids[turn_mask]  # (n_real_turns, R, Lk)
        ctx_summary = self.knowledge_encoder(self.embed(real.flatten(0, 1)), ctx_mask[turn_mask].flatten(0, 1), first_only=True)
        blocks = sit_summary.new_zeros(B, T, R, sit_summary.shape[-1])
        blocks[turn_mask] = ctx_summary.view(-1, R, ctx_summary.shape[-1])
        return sit_summary.view(B, R, -1), blocks

    # ---- 2. iterative association -----------------------------------------------------------------------------
    def _associate(self, context_module, memory_module, null_slot, units, unit_mask, unit_refs, other, other_mask,
                   other_refs, turn_mask):
        """Run the iterative association of one side (explicit: words, implicit: relation summaries).

        units (B, T, U, d): each utterance's units; other (B, Lo, d): the situation's units (or None).
        Returns the memory V of this side (B, M, d), its mask and slot refs, and the per-pair details.
        """
        B, T, U, d = units.shape
        real = turn_mask  # (B, T)
        x, x_mask, x_refs = units[real], unit_mask[real], unit_refs[real]  # (n, U, d): every real utterance at once
        b_index = torch.arange(B, device=units.device)[:, None].expand(B, T)[real]  # (n,)
        t_index = torch.arange(T, device=units.device)[None, :].expand(B, T)[real]
        S = 2 * context_module.heads * context_module.k1
        per_turn: Dict[str, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        details: Dict[str, Dict[str, torch.Tensor]] = {}

        def scatter(slots, mask, refs):  # (n, S, ...) -> (B, T, S, ...), zeros/False on padded turns
            full = slots.new_zeros((B, T) + tuple(slots.shape[1:]))
            full[real] = slots
            full_mask = mask.new_zeros(B, T, S)
            full_mask[real] = mask
            full_refs = refs.new_full((B, T, S), INVALID_REF)
            full_refs[real] = refs
            return full, full_mask, full_refs

        def keep(name, det):
            out = {}
            for key, value in det.items():
                full = value.new_full((B, T) + tuple(value.shape[1:]), INVALID_REF if "refs" in key else 0)
                full[real] = value
                out[key] = full
            details[name] = out

        # (U_i, situation) for every utterance at once
        if other is not None:
            slots, mask, refs, det = context_module(x, x_mask, other[b_index], other_mask[b_index], x_refs, other_refs[b_index])
            per_turn["situation"] = scatter(slots, mask, refs)
            keep("situation", det)
        # (U_i, U_1..U_{i-1}) for every utterance at once: the history is every unit of an earlier turn
        history = units.reshape(B, T * U, d)[b_index]  # (n, T*U, d)
        unit_turn = torch.arange(T, device=units.device).repeat_interleave(U)  # (T*U,)
        history_mask = unit_mask.reshape(B, T * U)[b_index] & (unit_turn[None, :] < t_index[:, None])
        history_refs = unit_refs.reshape(B, T * U)[b_index]
        slots, mask, refs, det = context_module(x, x_mask, history, history_mask, x_refs, history_refs)
        per_turn["history"] = scatter(slots, mask, refs)
        keep("history", det)

        # (U_i, memory): sequential over turns, batched over the samples
        null = null_slot.to(units.dtype)[None, None, :].expand(B, 1, d)
        memory = [null]
        memory_mask = [torch.ones(B, 1, dtype=torch.bool, device=units.device)]
        memory_refs = [torch.full((B, 1), NULL_REF, dtype=torch.long, device=units.device)]
        mem_slots = units.new_zeros(B, T, S, d)
        mem_mask = torch.zeros(B, T, S, dtype=torch.bool, device=units.device)
        mem_refs = torch.full((B, T, S), INVALID_REF, dtype=torch.long, device=units.device)
        mem_details: List[Dict[str, torch.Tensor]] = []
        for t in range(T):
            if t > 0:
                y, y_mask, y_refs = torch.cat(memory, 1), torch.cat(memory_mask, 1), torch.cat(memory_refs, 1)
                slots, mask, refs, det = memory_module(
                    units[:, t], unit_mask[:, t] & real[:, t, None], y, y_mask & real[:, t, None], unit_refs[:, t], y_refs
                )
                mem_slots[:, t], mem_mask[:, t], mem_refs[:, t] = slots, mask, refs
                mem_details.append(det)
            # this turn's slots join the memory: situation pair, history pair, memory pair (Eq. 16-18)
            for name in ("situation", "history"):
                if name in per_turn:
                    memory.append(per_turn[name][0][:, t])
                    memory_mask.append(per_turn[name][1][:, t])
                    memory_refs.append(per_turn[name][2][:, t])
            memory.append(mem_slots[:, t])
            memory_mask.append(mem_mask[:, t])
            memory_refs.append(mem_refs[:, t])
        if mem_details:
            first = mem_details[0]
            details["memory"] = {
                key: torch.stack(
                    [first[key].new_full(first[key].shape, INVALID_REF if "refs" in key else 0)] + [d_[key] for d_ in mem_details], 1
                )
                for key in first
            }  # (B, T, 2, H, k1[, k2])
        return torch.cat(memory, 1), torch.cat(memory_mask, 1), torch.cat(memory_refs, 1), details

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
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
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
        """
        config = self.config
        pad = config.pad_token_id
        if context_mask is None:
            context_mask = context_ids != pad
        context_mask = context_mask.bool()
        if context_ids_extended is None:
            context_ids_extended = context_ids
        if role_ids is None:
            raise ValueError("IAMMModel needs role_ids (the [SPK]/[LSN] id of each utterance)")
        B, T, L = context_ids.shape
        turn_mask = context_mask[:, :, 0]  # (B, T): real utterances
        if not turn_mask[:, 0].all():
            raise ValueError("every sample needs at least one context utterance, in context_ids[:, 0]")
        use_situation = config.use_situation and situation_ids is not None
        if config.use_situation and situation_ids is None:
            raise ValueError("this IAMM reads the situation: pass situation_ids (or set config.use_situation=False)")
        if use_situation and situation_mask is None:
            situation_mask = situation_ids != pad
        if config.use_implicit_association and context_knowledge_ids is None:
            raise ValueError(
                "use_implicit_association=True needs knowledge inputs (situation_knowledge_ids, context_knowledge_ids): "
                "generate them with scripts/generate_knowledge.py, or set use_implicit_association=False"
            )

        # ---- 1. explicit encoding: Eq. (1-3)
        words = self.embed(context_ids) + self.embed(role_ids)[:, :, None, :]  # (B, T, L, d): word + role
        encoded_utterances = self._encode_utterances(words, context_mask, turn_mask)
        hidden_context, packed_mask = pack(encoded_utterances.reshape(B, T * L, -1), context_mask.reshape(B, T * L))
        hidden_context = self.context_encoder(hidden_context, packed_mask)  # H_c: (B, Lc, d)
        packed_ids, _ = pack(context_ids_extended.reshape(B, T * L), context_mask.reshape(B, T * L))  # (B, Lc)
        hidden_situation = None
        if use_situation:
            situation_mask = situation_mask.bool()
            hidden_situation = self.situation_encoder(self.embed(situation_ids), situation_mask)  # H_s: (B, Ls, d)

        # ---- 2. iterative association: Eq. (8-19)
        word_mask = context_mask.clone()
        word_mask[:, :, 0] = False  # [CLS] is not a word
        word_refs = (torch.arange(T, device=context_ids.device)[:, None] + 1) * REF_STRIDE + torch.arange(L, device=context_ids.device)
        word_refs = word_refs[None].expand(B, T, L)  # (B, T, L)
        memories, memory_masks, memory_refs, associations = [], [], [], {}
        if config.use_explicit_association:
            sit_words = sit_mask = sit_refs = None
            if use_situation:
                sit_words = self.embed(situation_ids)  # (B, Ls, d)
                sit_mask = situation_mask.clone()
                sit_mask[:, 0] = False
                sit_refs = torch.arange(situation_ids.shape[1], device=context_ids.device)[None].expand(B, -1)
            memory, mask, refs, details = self._associate(
                self.explicit_context_association, self.explicit_memory_association, self.explicit_null_slot,
                words, word_mask, word_refs, sit_words, sit_mask, sit_refs, turn_mask,
            )
            memories.append(memory)
            memory_masks.append(mask)
            memory_refs.append(refs)
            associations.update({f"explicit_{pair}_{k}": v for pair, det in details.items() for k, v in det.items()})

        hidden_knowledge = knowledge_mask = None
        if config.use_implicit_association:
            R = config.num_relations
            if context_knowledge_mask is None:
                context_knowledge_mask = context_knowledge_ids != pad
            if situation_knowledge_mask is None and situation_knowledge_ids is not None:
                situation_knowledge_mask = situation_knowledge_ids != pad
            sit_block, blocks = self._encode_knowledge(
                situation_knowledge_ids, situation_knowledge_mask.bool(), context_knowledge_ids,
                context_knowledge_mask.bool(), turn_mask,
            )  # (B, R, d), (B, T, R, d)
            block_mask = turn_mask[:, :, None].expand(B, T, R)
            block_refs = IMPLICIT_REF + (torch.arange(T, device=blocks.device)[:, None] + 1) * R + torch.arange(R, device=blocks.device)
            sit_block_refs = (IMPLICIT_REF + torch.arange(R, device=blocks.device))[None].expand(B, R)
            memory, mask, refs, details = self._associate(
                self.implicit_context_association, self.implicit_memory_association, self.implicit_null_slot,
                blocks, block_mask, block_refs[None].expand(B, T, R),
                sit_block if use_situation else None,
                torch.ones(B, R, dtype=torch.bool, device=blocks.device) if use_situation else None,
                sit_block_refs if use_situation else None, turn_mask,
            )
            memories.append(memory)
            memory_masks.append(mask)
            memory_refs.append(refs)
            associations.update({f"implicit_{pair}_{k}": v for pair, det in details.items() for k, v in det.items()})
            # Eq. (6-7): the situation block and the LAST REAL utterance's block, encoded together
            last = turn_mask.long().sum(1) - 1  # (B,)
            last_block = blocks[torch.arange(B, device=blocks.device), last]  # (B, R, d)
            knowledge_input = torch.cat([sit_block, last_block], 1) if use_situation else last_block
            knowledge_mask = torch.ones(knowledge_input.shape[:2], dtype=torch.bool, device=blocks.device)
            hidden_knowledge = self.knowledge_context_encoder(knowledge_input, knowledge_mask)  # H~_cs

        # V = V_explicit ++ V_implicit, packed (only real slots), encoded: H_m = Enc_m(V), Eq. (19)
        hidden_memory = memory_mask = None
        if memories:
            memory, memory_mask = pack(torch.cat(memories, 1), torch.cat(memory_masks, 1))
            packed_memory_refs, _ = pack(torch.cat(memory_refs, 1), torch.cat(memory_masks, 1))
            hidden_memory = self.memory_encoder(memory, memory_mask)  # (B, M, d)

        # ---- 3. emotion: Eq. (20-25), product of the heads' probabilities
        head_logits = {"context": self.context_emotion_head(hidden_context, packed_mask)}
        if use_situation:
            head_logits["situation"] = self.context_emotion_head(hidden_situation, situation_mask)
        if hidden_memory is not None:
            head_logits["memory"] = self.memory_emotion_head(hidden_memory, memory_mask)
        if hidden_knowledge is not None:
            head_logits["knowledge"] = self.knowledge_emotion_head(hidden_knowledge, knowledge_mask)
        emotion_logits = sum(torch.log_softmax(v, dim=-1) for v in head_logits.values())

        # ---- 4a. word selector: Eq. (26-27)
        selected = selected_mask = None
        if config.use_word_selector:
            selected, selected_mask, selected_index, selected_weights = self.word_selector(hidden_memory, memory_mask)
            associations["selected_memory_refs"] = packed_memory_refs.gather(1, selected_index).masked_fill(~selected_mask, INVALID_REF)
            associations["selected_memory_weights"] = selected_weights * selected_mask

        return IAMMEncoderOutput(
            last_hidden_state=hidden_context,
            context_mask=packed_mask,
            context_ids_extended=packed_ids,
            memory_hidden_state=selected,
            memory_mask=selected_mask,
            emotion_logits=emotion_logits,
            context_emotion_logits=head_logits["context"],
            situation_emotion_logits=head_logits.get("situation"),
            memory_emotion_logits=head_logits.get("memory"),
            knowledge_emotion_logits=head_logits.get("knowledge"),
            associations=associations if output_associations else None,
        )


# ----------------------------------------------------------------------------------------------------------------
# Generation: two decoders, gate, pointer-generator (Eq. 28-35)
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
        """log p(target) only (B, Ly): the same values as `forward(...).gather(targets)`, without materialising
        the (B, Ly, V) distribution three more times (what a training step needs)."""
        vocab_logits = self.output_projection(hidden)  # (B, Ly, V)
        targets = targets.clamp(min=0)
        in_vocab = targets < self.vocab_size
        target_logits = vocab_logits.gather(2, targets.clamp(max=self.vocab_size - 1)[..., None]).squeeze(-1)
        log_vocab = target_logits - torch.logsumexp(vocab_logits, dim=-1)  # (B, Ly)
        if self.p_gen is None:
            return log_vocab.masked_fill(~in_vocab, math.log(1e-12))
        p_gen = torch.sigmoid(self.p_gen(hidden)).squeeze(-1)  # (B, Ly)
        copy = (copy_attention * (source_ids[:, None, :] == targets[..., None])).sum(-1)  # (B, Ly)
        probs = p_gen * log_vocab.exp() * in_vocab + (1 - p_gen) * copy
        return torch.log(probs.clamp(min=1e-12))


class IAMMForConditionalGeneration(IAMMPreTrainedModel, GenerationMixin):
    """IAMM with its response generator: `IAMMModel`, the decoders `Dec_c`/`Dec_a`, the gate and the pointer-generator."""

    _tied_weights_keys = {}

    def __init__(self, config: IAMMConfig):
        super().__init__(config)
        self.model = IAMMModel(config)
        self.context_decoder = IAMMDecoder(config)  # Dec_c, attends to H_c
        if config.use_word_selector:
            self.association_decoder = IAMMDecoder(config)  # Dec_a, attends to H~_m
            self.gate = nn.Linear(2 * config.hidden_size, 1)  # g = sigmoid(w [O_c; O_m])
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

        Keys that only training uses (`labels`, `emotion_labels`, `decoder_attention_mask`, `oov_words`, and
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
        return super().generate(*args, **kwargs)

    def get_encoder(self) -> IAMMModel:
        return self.model

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.generator.output_projection

    def _decode(self, decoder_input_ids, encoder_outputs: IAMMEncoderOutput, cache: Optional[EncoderDecoderCache]):
        """Both decoders and the gate: the output states O (B, t, d) and Dec_c's copy attention (B, t, Lc)."""
        past = cache.self_attention_cache.get_seq_length() if cache is not None else 0
        x = self.model.embed(decoder_input_ids)  # (B, t, d)
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], offset=past, device=x.device, dtype=x.dtype)
        need_copy = self.config.use_pointer_generator
        out_c, copy_attention = self.context_decoder(
            x, encoder_outputs.last_hidden_state, encoder_outputs.context_mask, cache, 0, need_weights=need_copy
        )
        out = out_c
        if self.config.use_word_selector:
            out_m, _ = self.association_decoder(
                x, encoder_outputs.memory_hidden_state, encoder_outputs.memory_mask, cache, 1
            )
            gate = torch.sigmoid(self.gate(torch.cat([out_c, out_m], dim=-1)))  # (B, t, 1)
            out = gate * out_c + (1 - gate) * out_m
        copy_attention = copy_attention.mean(1) if copy_attention is not None else None  # (B, t, Lc): mean over heads
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
        decoder_attention_mask: Optional[torch.BoolTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        emotion_labels: Optional[torch.LongTensor] = None,
        encoder_outputs: Optional[IAMMEncoderOutput] = None,
        cache: Optional[EncoderDecoderCache] = None,
        use_cache: Optional[bool] = None,
        output_associations: bool = False,
        return_logits: Optional[bool] = None,
        oov_words: Optional[List[List[str]]] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
    ) -> IAMMSeq2SeqLMOutput:
        r"""
        Inputs as `IAMMModel.forward`, plus:
            decoder_input_ids (`(B, Ly)`): `[SOS]` + target words. Built from `labels` when not given.
            labels (`(B, Ly)`): target + `[EOS]` in extended ids, -100 on padding.
            emotion_labels (`(B,)`): gold emotion ids.
            encoder_outputs: a precomputed `IAMMEncoderOutput` (generate() passes it).
            cache / use_cache: incremental decoding (generate() passes them).
            return_logits: materialise `logits`. Default: yes, except in training mode with labels, where the loss
                is computed from the target columns alone (same value, much less work) and `logits` is None.
            oov_words: the collator's OOV word lists (unused here; kept so batches pass through unchanged).
        """
        if encoder_outputs is None:
            encoder_outputs = self.model(
                context_ids, context_mask, role_ids, context_ids_extended, situation_ids, situation_mask,
                situation_knowledge_ids, situation_knowledge_mask, context_knowledge_ids, context_knowledge_mask,
                output_associations=output_associations,
            )
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("pass decoder_input_ids or labels")
            decoder_input_ids = self.shift_labels(labels)
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        if not use_cache:
            cache = None
        hidden, copy_attention = self._decode(decoder_input_ids, encoder_outputs, cache)
        source_ids = encoder_outputs.context_ids_extended
        if return_logits is None:
            return_logits = not (self.training and labels is not None)
        logits = None
        if return_logits:
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
            generation_loss = -target_log_probs[real].mean()  # token NLL, mean over real tokens
            # masked_fill, not `* real`: a -inf log-probability at a padded position would turn into NaN
            token_log_probs = target_log_probs.masked_fill(~real, 0.0)
            loss = generation_loss
        if emotion_labels is not None:
            heads = [encoder_outputs.context_emotion_logits, encoder_outputs.situation_emotion_logits,
                     encoder_outputs.memory_emotion_logits, encoder_outputs.knowledge_emotion_logits]
            emotion_loss = sum(F.cross_entropy(h, emotion_labels) for h in heads if h is not None)  # Eq. (25)
            if loss is not None:
                loss = loss + self.config.emotion_loss_weight * emotion_loss
        return IAMMSeq2SeqLMOutput(
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
            cache=cache if use_cache else None,
        )

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

TRAINING_ONLY_INPUTS = ("labels", "emotion_labels", "decoder_attention_mask", "oov_words")
"""Batch keys that `generate()` drops (`decoder_input_ids` too, when it comes with `labels`)."""

PAIR_NAMES = {"situation": "utterance-situation", "history": "utterance-history", "memory": "utterance-memory"}


def decode_association_ref(ref: int, sample: int, batch: Dict[str, Any], tokenizer, config: IAMMConfig) -> str:
    """The text a ref names: a situation/context word (copied OOV words included), a relation, or the null slot."""
    if ref == NULL_REF:
        return "<none>"
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
    """Turn `IAMMModel(..., output_associations=True).associations` into text (see `extract_associations`)."""
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
