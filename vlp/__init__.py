"""vlp: Unified Vision-Language Pre-training on today's PyTorch."""

__version__ = "0.1.0"
