"""ToyWorld: a synthetic dataset in the real COCO, Conceptual Captions and VQA v2 formats.

Scenes of 1-4 coloured shapes, drawn reproducibly from a seed, with Karpathy-format
captions, COCO detection annotations, CC-style alt-text for pretraining and VQA v2
questions with ten noisy human answers each. See `generate`.
"""

from vlp.data.toyworld.formats import MANIFEST
from vlp.data.toyworld.generate import ToyWorldConfig, generate

__all__ = ["MANIFEST", "ToyWorldConfig", "generate"]
