"""A BERT encoder (post-LayerNorm, BERT parameter names) on scaled_dot_product_attention,
with a per-layer key/value cache for UniLM-style decoding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlp.model.config import VLPConfig
from vlp.model.dropout import Dropout, dropout


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


def attention_with_dropout(q, k, v, mask, p: float) -> torch.Tensor:
    """scaled_dot_product_attention's computation with `dropout` on the probabilities.
    With dropout on the CPU, SDPA takes this same unfused path anyway, drawing its mask
    with torch's slower dropout. A finite fill keeps a row with no visible key finite."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return dropout(scores.softmax(dim=-1, dtype=torch.float32).to(v.dtype), p) @ v


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

    def forward(self, x, mask, cache: KVCache | None, layer: int, keep: int | None):
        # One matmul for all three projections; the parameters keep BERT's names.
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        q, k, v = (self._heads(part) for part in F.linear(x, weight, bias).chunk(3, dim=-1))
        past = cache.get(layer) if cache is not None else None
        keys = k if past is None else torch.cat([past[0], k], dim=2)
        values = v if past is None else torch.cat([past[1], v], dim=2)
        p = self.dropout_p if self.training else 0.0
        if p > 0.0 and x.device.type == "cpu":
            out = attention_with_dropout(q, keys, values, mask, p)
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=p)
        if cache is not None:
            cache.append(layer, k[:, :, :keep], v[:, :, :keep])
        b, _, length, _ = out.shape
        return out.transpose(1, 2).reshape(b, length, -1)


class AddNorm(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): BERT's SelfOutput and Output."""

    def __init__(self, config: VLPConfig, width_in: int):
        super().__init__()
        self.dense = nn.Linear(width_in, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, config: VLPConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = AddNorm(config, config.hidden_size)

    def forward(self, x, mask, cache, layer, keep):
        return self.output(self.self(x, mask, cache, layer, keep), x)


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

    def forward(self, x, mask, cache=None, layer=0, keep=None):
        x = self.attention(x, mask, cache, layer, keep)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    """BERT's layer stack. `mask` is boolean [B, 1, L_new, L_cached + L_new], True where a
    query may attend. With a cache, the keys/values of the first `keep` new positions
    (all when None) are appended to it after each layer has used them."""

    def __init__(self, config: VLPConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x, mask, cache: KVCache | None = None, keep: int | None = None):
        for i, layer in enumerate(self.layer):
            x = layer(x, mask, cache, i, keep)
        return x
