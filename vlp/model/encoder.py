"""A BERT encoder (post-LayerNorm, BERT parameter names) on scaled_dot_product_attention,
with a per-layer key/value cache for UniLM-style decoding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlp.model.config import VLPConfig
from vlp.model.dropout import Dropout, dropout_add, keep_weights


class KVCache:
    """Keys and values of the positions decoded so far, one [B, heads, S, head_dim] pair
    per layer. Beams reorder it by index; a step appends only the positions it keeps."""

    def __init__(self, num_layers: int):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers

    def __len__(self) -> int:
        first = self.layers[0]
        return 0 if first is None else first[0].shape[2]

    def get(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.layers[layer]

    def append(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        old = self.layers[layer]
        if old is not None:
            key, value = torch.cat([old[0], key], dim=2), torch.cat([old[1], value], dim=2)
        self.layers[layer] = (key, value)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (in that order), as a beam search does after each step."""
        self.layers = [None if kv is None else (kv[0].index_select(0, index),
                                                kv[1].index_select(0, index))
                       for kv in self.layers]


def explicit_attention(training: bool, device: torch.device, p: float, cache,
                       dtype: torch.dtype = torch.float32) -> bool:
    """Whether attention runs as `attention_with_dropout` when training on the CPU: with
    dropout, where scaled_dot_product_attention would take the same unfused path anyway,
    drawing its mask with torch's slower dropout; and in bfloat16 or float16 (autocast),
    where its CPU backward takes several times as long as the two batched products'."""
    return (training and device.type == "cpu" and cache is None
            and (0.0 < p < 1.0 or dtype in (torch.bfloat16, torch.float16)))


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the matrix products run in: autocast's on the CPU, else x's."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype


def scores_bias(mask: torch.Tensor, batch: int, heads: int, length: int,
                dtype: torch.dtype) -> torch.Tensor:
    """The boolean mask (broadcastable to [batch, 1, length, Lk]) as the additive bias
    [batch * heads, length, Lk] that `attention_with_dropout` adds to the scores: 0 where
    a query may attend, the dtype's lowest finite value elsewhere, so that a row with no
    visible key stays finite. Built once per forward and shared by the layers."""
    keys = mask.shape[-1]
    bias = torch.zeros((batch, 1, length, keys), dtype=dtype, device=mask.device)
    bias.masked_fill_(~mask, torch.finfo(dtype).min)
    return bias.expand(batch, heads, length, keys).reshape(batch * heads, length, keys)


def attention_with_dropout(q, k, v, bias: torch.Tensor, p: float) -> torch.Tensor:
    """scaled_dot_product_attention's computation with `dropout` on the probabilities;
    q, k, v [B, heads, L, head_dim], `bias` from `scores_bias`. Scaling and bias ride in
    the score product itself (baddbmm), one pass less each way than masking the scores."""
    b, heads, length, d = q.shape
    flat = [t.reshape(b * heads, -1, d) for t in (q, k, v)]
    scores = torch.baddbmm(bias.to(flat[0].dtype), flat[0], flat[1].transpose(1, 2),
                           alpha=d ** -0.5)
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(flat[2].dtype)
    if p == 0.0:
        return torch.bmm(probs, flat[2]).view(b, heads, length, d)
    # The 0/1 mask here, its scale 1 / (1 - p) in the product with the values.
    weights, scale = keep_weights(probs.shape, p, probs.dtype)
    out = torch.baddbmm(flat[2].new_empty(()), probs * weights, flat[2], beta=0.0, alpha=scale)
    return out.view(b, heads, length, d)


class Packed:
    """The real positions of a padded batch, for running the position-wise layers
    (projections, feed-forward, LayerNorm) on them alone: `pack` [B, L, W] -> [N, W] keeps
    the N positions where `valid` [B, L] is True, `pad` puts them back with zeros at the
    padding. Only attention mixes positions, and it runs padded, where padding is never a
    key; so the real positions' outputs are what the padded computation gives them."""

    def __init__(self, valid: torch.Tensor):
        self.batch, self.length = valid.shape
        self.index = valid.reshape(-1).nonzero().squeeze(1)

    @property
    def saves(self) -> bool:
        return self.index.numel() < self.batch * self.length

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, x.shape[-1]).index_select(0, self.index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(self.batch * self.length, x.shape[-1]).index_copy(0, self.index, x)
        return out.view(self.batch, self.length, -1)


class SelfAttention(nn.Module):
    def __init__(self, config: VLPConfig):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.dropout_p = config.attention_probs_dropout_prob

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        return x.view(b, length, self.num_heads, -1).transpose(1, 2)

    def forward(self, x, mask, cache: KVCache | None, layer: int, keep: int | None,
                packed: Packed | None = None):
        # One matmul for all three projections; the parameters keep BERT's names.
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        qkv = F.linear(x, weight, bias)
        if packed is not None:
            qkv = packed.pad(qkv)
        q, k, v = (self._heads(part) for part in qkv.chunk(3, dim=-1))
        past = cache.get(layer) if cache is not None else None
        keys = k if past is None else torch.cat([past[0], k], dim=2)
        values = v if past is None else torch.cat([past[1], v], dim=2)
        p = self.dropout_p if self.training else 0.0
        if mask.dtype != torch.bool:  # the Encoder chose the explicit path: scores_bias
            out = attention_with_dropout(q, keys, values, mask, p)
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=p)
        if cache is not None:
            cache.append(layer, k[:, :, :keep], v[:, :, :keep])
        b, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(b, length, -1)
        return out if packed is None else packed.pack(out)


class AddNorm(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): BERT's SelfOutput and Output."""

    def __init__(self, config: VLPConfig, width_in: int):
        super().__init__()
        self.dense = nn.Linear(width_in, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(dropout_add(self.dense(x), residual, self.dropout.p, self.training))


class Attention(nn.Module):
    def __init__(self, config: VLPConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = AddNorm(config, config.hidden_size)

    def forward(self, x, mask, cache, layer, keep, packed=None):
        return self.output(self.self(x, mask, cache, layer, keep, packed), x)


class Intermediate(nn.Module):
    def __init__(self, config: VLPConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = F.gelu if config.hidden_act == "gelu" else F.relu

    def forward(self, x):
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, config: VLPConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = AddNorm(config, config.intermediate_size)

    def forward(self, x, mask, cache=None, layer=0, keep=None, packed=None):
        x = self.attention(x, mask, cache, layer, keep, packed)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    """BERT's layer stack. `mask` is boolean [B, 1, L_new, L_cached + L_new], True where a
    query may attend. With a cache, the keys/values of the first `keep` new positions
    (all when None) are appended to it after each layer has used them. Without one,
    `valid` [B, L] (True at real positions) runs the position-wise layers on the real
    positions alone (see Packed); the output is zero at the others."""

    def __init__(self, config: VLPConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x, mask, cache: KVCache | None = None, keep: int | None = None,
                valid: torch.Tensor | None = None):
        attention = self.layer[0].attention.self if len(self.layer) else None
        dtype = compute_dtype(x)
        if attention is not None and explicit_attention(self.training, x.device,
                                                        attention.dropout_p, cache, dtype):
            mask = scores_bias(mask, x.shape[0], attention.num_heads, x.shape[1], dtype)
        packed = Packed(valid) if valid is not None and cache is None else None
        if packed is not None and not packed.saves:
            packed = None
        if packed is not None:
            x = packed.pack(x)
        for i, layer in enumerate(self.layer):
            x = layer(x, mask, cache, i, keep, packed)
        return x if packed is None else packed.pad(x)
