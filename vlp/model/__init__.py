"""The unified vision-language model: embeddings, encoder with K/V cache, masks, heads."""

from vlp.model.config import VLPConfig
from vlp.model.encoder import KVCache
from vlp.model.masked_lm import MaskDraws, MaskedText, mask_text
from vlp.model.masks import Layout, build_layout, draw_objectives
from vlp.model.unified import UnifiedVLP

__all__ = ["KVCache", "Layout", "MaskDraws", "MaskedText", "UnifiedVLP", "VLPConfig", "build_layout",
           "draw_objectives", "mask_text"]
