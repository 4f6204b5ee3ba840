"""The model configuration: one dataclass, saved as config.json in every checkpoint."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from vlp.errors import VLPError

# Written into config.json so a directory of some other model is recognised as such.
ARCHITECTURE = "UnifiedVLP"

# Segment (token type) ids of VLP's `--new_segment_ids` scheme: bidirectional examples
# use 0/1 (image block/text), seq2seq examples 4/5; 2 and 3 were UniLM's left-to-right
# and right-to-left types, kept so the table has VLP's six rows.
SIX_TYPE_IDS = {"bi": (0, 1), "s2s": (4, 5)}
# The legacy scheme: image block 0, text 1 whatever the objective.
TWO_TYPE_IDS = {"bi": (0, 1), "s2s": (0, 1)}

# VLP's task index of an example, which picks its projection in a --relax_projection
# masked-LM head (UniLM's numbering: 1 and 2 were its left-to-right and right-to-left).
RELAX_TASK_INDEX = {"bi": 0, "s2s": 3}

_ACTIVATIONS = ("gelu", "relu")
# 2^16 * pi cycles per image is already far below a pixel's width at any image size.
MAX_BOX_FREQUENCIES = 16


NEW_LAYER_INITS = ("torch", "bert")

# How a region slot takes in where its box is: "vlp", VLP's box+class vector summed with the
# feature MLP; "normed", that sum and a box embedding each layer-normalised on its own.
REGION_LOCATIONS = ("vlp", "normed")


@dataclass
class VLPConfig:
    """Sizes and defaults of a UnifiedVLP model; everything needed to rebuild it."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    # 6: VLP's --new_segment_ids scheme; 2: the legacy BERT scheme.
    type_vocab_size: int = 6
    # VLP's BERT used 1e-5 everywhere; BERT checkpoints were trained with 1e-12.
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    # Regions: feature dim D, detector classes C (background included), the most
    # regions per image, and the width of the feature MLP's hidden layer. None means D,
    # VLP's BUTD setting, where that layer starts from the detector's fc7.
    region_feature_dim: int = 2048
    region_classes: int = 1601
    max_regions: int = 100
    region_hidden_size: int | None = None
    # Sine/cosine features of each box's centre and size at this many octaves, through a
    # Linear -> ReLU of their own into the region slot; 0 (VLP) gives the slot only the
    # box+class vector.
    region_box_frequencies: int = 0
    # "vlp": the box+class vector and the box sines/cosines' layer (if any) are summed with
    # the feature MLP. "normed": the box's centre and size (with their sines/cosines at
    # region_box_frequencies octaves) -> Linear -> LayerNorm, added to LayerNorm(feature
    # MLP + box+class vector), so the box weighs as much as what the region shows.
    region_location: str = "vlp"
    # Answer classes of the VQA head on [CLS] * first [SEP]; 0 = no VQA head.
    vqa_answers: int = 0
    # A localization head: each region slot's output -> MLP -> one score, the region the
    # text refers to scoring highest (vlp.train.grounding); False = no such head.
    grounding: bool = False
    # A centre head: the output at the expression's final [SEP], read left to right
    # (seq2seq) -> MLP -> the referent's box centre (x, y over the image's width and
    # height); the region nearest that centre is the one the text refers to
    # (`--grounding_objective centre`); False = no such head.
    grounding_centre: bool = False
    # VLP's --relax_projection: the masked-LM head's transform has this many projections
    # (VLP used 4), one per task index (seq2seq 3, bidirectional 0); 0 or 1: one.
    relax_projection: int = 0
    # BERT's pooler (dense + tanh on [CLS]), which VLP's masked-region loss
    # (--vis_mask_prob) adds to each masked region's location embedding.
    pooler: bool = False
    # How the layers BERT lacks (regions, VQA head) start: "torch", PyTorch's default, as
    # VLP created them after BERT's init; "bert", BERT's normal(0, initializer_range).
    new_layer_init: str = "bert"
    # The tokens the masked-LM head scores (sorted ids, [PAD] and [SEP] among them); None,
    # VLP's, scores the whole vocabulary. Training's softmax runs over these alone and
    # decoding never emits another token (`vlp train --output_vocab train`).
    output_vocab: list[int] | None = None
    pad_token_id: int = 0
    cls_token_id: int = 101
    sep_token_id: int = 102
    mask_token_id: int = 103
    # Masked LM and objective mix (VLP's --mask_prob, --max_pred, --s2s_prob, --bi_prob).
    mask_prob: float = 0.15
    max_pred: int = 3
    s2s_prob: float = 1.0
    bi_prob: float = 0.0

    def __post_init__(self):
        if self.region_hidden_size is None:
            self.region_hidden_size = self.region_feature_dim
        self.validate()

    @property
    def region_loc_dim(self) -> int:
        """Width of the box + class vector: 6 box numbers and C class probabilities."""
        return self.region_classes + 6

    @property
    def region_box_dim(self) -> int:
        """Width of the box's sine/cosine features (0 without them): centre x, y, width
        and height, then sin and cos of each at 2^k * pi for k < region_box_frequencies."""
        f = self.region_box_frequencies
        return 4 * (1 + 2 * f) if f or self.region_location == "normed" else 0

    @property
    def region_box_octaves(self) -> int | None:
        """What the data side appends to each region's box+class vector: None, nothing;
        F, the box's centre and size with their sines/cosines at F octaves."""
        return self.region_box_frequencies if self.region_box_dim else None

    @property
    def region_input_dim(self) -> int:
        """Width of the per-region location input: the box+class vector, then the box's
        sine/cosine features when the model has them."""
        return self.region_loc_dim + self.region_box_dim

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def segment_ids(self) -> dict[str, tuple[int, int]]:
        return SIX_TYPE_IDS if self.type_vocab_size >= 6 else TWO_TYPE_IDS

    def validate(self) -> None:
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings", "region_feature_dim",
                    "max_regions", "region_hidden_size", "max_pred")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise VLPError(f"model config: {name} must be at least 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise VLPError(f"model config: hidden_size {self.hidden_size} is not a multiple of "
                           f"num_attention_heads {self.num_attention_heads}")
        if self.type_vocab_size not in (2, 6):
            raise VLPError(f"model config: type_vocab_size must be 2 (legacy) or 6 "
                           f"(VLP's new segment ids), got {self.type_vocab_size}")
        if self.hidden_act not in _ACTIVATIONS:
            raise VLPError(f"model config: hidden_act {self.hidden_act!r} is not one of "
                           f"{', '.join(_ACTIVATIONS)}")
        for name in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise VLPError(f"model config: {name} {getattr(self, name)} is outside the "
                               f"vocabulary (vocab_size {self.vocab_size})")
        if self.output_vocab is not None:
            self._check_output_vocab()
        if self.new_layer_init not in NEW_LAYER_INITS:
            raise VLPError(f"model config: new_layer_init {self.new_layer_init!r} is not one "
                           f"of {', '.join(NEW_LAYER_INITS)}")
        if self.region_classes < 0 or self.vqa_answers < 0 or self.relax_projection < 0:
            raise VLPError("model config: region_classes, vqa_answers and relax_projection "
                           "must be >= 0")
        if self.relax_projection > 1 and self.relax_projection <= max(RELAX_TASK_INDEX.values()):
            raise VLPError(f"model config: relax_projection {self.relax_projection} has no "
                           f"projection for task index {max(RELAX_TASK_INDEX.values())} "
                           "(seq2seq); VLP used 4")
        if self.region_location not in REGION_LOCATIONS:
            raise VLPError(f"model config: region_location {self.region_location!r} is not one "
                           f"of {', '.join(REGION_LOCATIONS)}")
        if not 0 <= self.region_box_frequencies <= MAX_BOX_FREQUENCIES:
            raise VLPError(f"model config: region_box_frequencies must be between 0 and "
                           f"{MAX_BOX_FREQUENCIES}, got {self.region_box_frequencies}")
        for name in ("mask_prob", "s2s_prob", "bi_prob", "hidden_dropout_prob",
                     "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise VLPError(f"model config: {name} must be between 0 and 1, "
                               f"got {getattr(self, name)}")
        if abs(self.s2s_prob + self.bi_prob - 1.0) > 1e-6:
            raise VLPError(f"model config: s2s_prob + bi_prob must be 1, got "
                           f"{self.s2s_prob} + {self.bi_prob}")
        if self.max_regions + 3 > self.max_position_embeddings:
            raise VLPError(f"model config: max_regions {self.max_regions} leaves no text "
                           f"positions in max_position_embeddings {self.max_position_embeddings}")

    def _check_output_vocab(self) -> None:
        ids = self.output_vocab
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise VLPError("model config: output_vocab must be a list of token ids or null")
        if ids != sorted(set(ids)) or not ids or ids[0] < 0 or ids[-1] >= self.vocab_size:
            raise VLPError(f"model config: output_vocab must be sorted distinct token ids "
                           f"within the vocabulary (vocab_size {self.vocab_size})")
        absent = [n for n in ("pad_token_id", "sep_token_id") if getattr(self, n) not in ids]
        if absent:
            raise VLPError(f"model config: output_vocab lacks {' and '.join(absent)}")

    def to_dict(self) -> dict:
        return {"architecture": ARCHITECTURE, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "VLPConfig":
        data = dict(data)
        arch = data.pop("architecture", None)
        if arch != ARCHITECTURE:
            raise VLPError(f"{source}: architecture is {arch!r}, expected {ARCHITECTURE!r} "
                           "(for a Hugging Face BERT directory use `vlp convert-checkpoint "
                           "--from hf-bert`)")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise VLPError(f"{source}: unknown model config keys {unknown}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "VLPConfig":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise VLPError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise VLPError(f"{path}: expected a JSON object")
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes) -> "VLPConfig":
        """A copy with `changes`; unknown names are an error naming them."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise VLPError(f"unknown model config keys {unknown}")
        return dataclasses.replace(self, **changes)
