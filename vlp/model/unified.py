"""UnifiedVLP: region + text embeddings, one BERT encoder, masked-LM, VQA and
localization heads."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vlp.errors import VLPError
from vlp.model.config import RELAX_TASK_INDEX, VLPConfig
from vlp.model.embeddings import Embeddings, RegionEmbedding
from vlp.model.encoder import Encoder, KVCache
from vlp.model.masked_lm import MaskDraws, MaskedLMHead, MaskedText, mask_text, masked_lm_loss
from vlp.model.masked_regions import Pooler, masked_region_loss
from vlp.model.masks import Layout, build_layout, check_lengths, draw_objectives, hide_regions


class UnifiedVLP(nn.Module):
    """One transformer for both objectives: the attention mask alone makes an example
    bidirectional or seq2seq (VLP, Zhou et al. 2020)."""

    def __init__(self, config: VLPConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.region = RegionEmbedding(config)
        self.encoder = Encoder(config)
        self.mlm_head = MaskedLMHead(config, self.embeddings.word_embeddings)
        self.vqa_head = None
        if config.vqa_answers:
            h = config.hidden_size
            self.vqa_head = nn.Sequential(nn.Linear(h, 2 * h), nn.ReLU(),
                                          nn.Linear(2 * h, config.vqa_answers))
        self.grounding_head = None
        if config.grounding:
            h = config.hidden_size
            # No bias after the first layer: a constant added to every region's score
            # leaves the softmax over regions as it is, so its gradient is rounding noise,
            # which Adam would scale up into steps.
            self.grounding_head = nn.Sequential(
                nn.Linear(h, h), nn.GELU(), nn.LayerNorm(h, eps=config.layer_norm_eps, bias=False),
                nn.Linear(h, 1, bias=False))
        self.centre_head = None
        if config.grounding_centre:
            h = config.hidden_size
            self.centre_head = nn.Sequential(
                nn.Linear(h, h), nn.GELU(), nn.LayerNorm(h, eps=config.layer_norm_eps),
                nn.Linear(h, 2))
        self.pooler = Pooler(config.hidden_size) if config.pooler else None
        self.apply(self._init_weights)
        if config.new_layer_init == "torch":
            # VLP built its region and answer layers after BERT's init: PyTorch's defaults.
            for part in (self.region, self.vqa_head, self.grounding_head, self.centre_head):
                for module in part.modules() if part is not None else ():
                    if isinstance(module, nn.Linear):
                        module.reset_parameters()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def grown(self, **changes) -> "UnifiedVLP":
        """A copy whose config has `changes` that add parts (vqa_answers on a model without
        a head, region_box_frequencies on one without box sines/cosines): this model's
        weights are kept, the new parts start from the usual random initialisation."""
        grown = UnifiedVLP(self.config.replace(**changes)).to(next(self.parameters()).device)
        missing, unexpected = grown.load_state_dict(self.state_dict(), strict=False)
        if unexpected:
            raise VLPError(f"changing {sorted(changes)} drops weights: {', '.join(unexpected[:10])}")
        return grown

    def restrict_output(self, ids: list[int] | None) -> None:
        """Score only the tokens `ids` in the masked-LM head (config.output_vocab; None:
        the whole vocabulary, VLP's)."""
        self.config = self.config.replace(output_vocab=ids)
        self.mlm_head.restrict(ids)

    def set_dropout(self, p: float) -> None:
        """Every dropout rate (hidden, attention, region) to `p`, config included: VLP's
        --drop_prob, which set hidden_dropout_prob and attention_probs_dropout_prob."""
        self.config = self.config.replace(hidden_dropout_prob=p, attention_probs_dropout_prob=p)
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif hasattr(module, "dropout_p"):
                module.dropout_p = p

    # -- inputs ------------------------------------------------------------------------
    def _check_regions(self, features: torch.Tensor, locations: torch.Tensor) -> None:
        c = self.config
        if features.dim() != 3 or features.shape[-1] != c.region_feature_dim:
            raise VLPError(f"region_features has shape {tuple(features.shape)}; the model "
                           f"expects [batch, regions, {c.region_feature_dim}] "
                           "(config region_feature_dim)")
        if tuple(locations.shape) != (*features.shape[:2], c.region_input_dim):
            sines = (f" + {c.region_box_dim} box sines/cosines (region_box_frequencies "
                     f"{c.region_box_frequencies})" if c.region_box_dim else "")
            raise VLPError(f"region_locations has shape {tuple(locations.shape)}; expected "
                           f"{(*features.shape[:2], c.region_input_dim)} (6 box numbers + "
                           f"region_classes {c.region_classes}{sines})")

    def embed(self, text_ids, text_lengths, region_features, region_locations, num_regions,
              s2s: torch.Tensor, sparse_words: bool = False) -> tuple[torch.Tensor, Layout]:
        """Embedded sequence [B, L, H] and its layout (see vlp.model.masks); `sparse_words`
        as Embeddings.words, for a graph that goes on through the MLM head."""
        x, layout, _ = self._embed(text_ids, text_lengths, region_features, region_locations,
                                   num_regions, s2s, sparse_words)
        return x, layout

    def _embed(self, text_ids, text_lengths, region_features, region_locations, num_regions,
               s2s, sparse_words, region_masked=None, block_masked=False):
        """embed's sequence and layout; with `region_masked` [B, R] those regions' slots
        are zero (and with `block_masked` seen by no position), and the regions' (feature,
        location) embeddings come back too (see vlp.model.masked_regions)."""
        self._check_regions(region_features, region_locations)
        b, r = region_features.shape[:2]
        check_lengths(num_regions, text_lengths, r, text_ids.shape[1], self.config)
        layout = build_layout(num_regions, text_lengths, r, text_ids.shape[1], s2s, self.config)
        c, pos = self.config, layout.position_ids
        ends = torch.tensor([c.cls_token_id, c.sep_token_id], device=text_ids.device).expand(b, 2)
        # One lookup for [CLS], [SEP] and the text: each lookup's gradient is a dense
        # vocabulary-sized table, so a second one would cost as much as a layer here.
        ids = torch.cat([ends, text_ids], 1)
        words = self.embeddings.words(ids, torch.cat([pos[:, :1], pos[:, r + 1:]], 1), sparse_words)
        locations, parts = region_locations.to(region_features.dtype), None
        if region_masked is None:
            regions = self.region(region_features, locations)
        else:
            parts = self.region.parts(region_features, locations)
            regions = (parts[0] + parts[1]).masked_fill(region_masked[..., None], 0.0)
            # VLP's loader meant to hide them from attention too, but its line
            # `input_mask[:, vis_masked_pos].fill_(0)` filled a copy: they stayed visible.
            if block_masked:
                layout = hide_regions(layout, region_masked)
        slots = torch.cat([words[:, :1], regions.to(words.dtype), words[:, 1:]], dim=1)
        return self.embeddings(slots, layout.token_type_ids), layout, parts

    def forward(self, text_ids, text_lengths, region_features, region_locations, num_regions,
                s2s: torch.Tensor | None = None, sparse_words: bool = False,
                region_masked: torch.Tensor | None = None,
                block_masked: bool = False) -> torch.Tensor:
        """Last hidden states [B, R + 2 + T, H], zero at padding. `s2s` [B] bool (default:
        all seq2seq); `sparse_words` only when the loss goes through the MLM head (see embed);
        `region_masked`, `block_masked`: regions masked (see _embed)."""
        return self.encode(text_ids, text_lengths, region_features, region_locations,
                           num_regions, s2s, sparse_words, region_masked, block_masked)[0]

    def encode(self, text_ids, text_lengths, region_features, region_locations, num_regions,
               s2s: torch.Tensor | None = None, sparse_words: bool = False,
               region_masked: torch.Tensor | None = None, block_masked: bool = False):
        """forward's hidden states, and the regions' (feature, location) embeddings that
        masked_region_loss compares (None without `region_masked`)."""
        if s2s is None:
            s2s = torch.ones(text_ids.shape[0], dtype=torch.bool, device=text_ids.device)
        x, layout, parts = self._embed(text_ids, text_lengths, region_features, region_locations,
                                       num_regions, s2s, sparse_words, region_masked,
                                       block_masked)
        return self.encoder(x, layout.mask, valid=layout.valid), parts

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """A text-only BERT forward: last hidden states [B, T, H], as transformers'
        BertModel gives for the same weights."""
        b, t = input_ids.shape
        if t > self.config.max_position_embeddings:
            raise VLPError(f"input of {t} tokens is longer than max_position_embeddings "
                           f"{self.config.max_position_embeddings}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(t, device=input_ids.device).expand(b, t)
        x = self.embeddings(self.embeddings.words(input_ids, positions), token_type_ids)
        mask = attention_mask.bool()[:, None, None, :]
        return self.encoder(x, mask)

    # -- heads and losses ----------------------------------------------------------------
    def mlm_logits(self, hidden: torch.Tensor, task_idx: torch.Tensor | int | None = None,
                   output_rows: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Vocabulary scores; `task_idx` (int or [B]) picks a --relax_projection head's
        projection (RELAX_TASK_INDEX; default seq2seq's); `output_rows` as MaskedLMHead's."""
        return self.mlm_head(hidden, task_idx, output_rows=output_rows)

    def masked_region_loss(self, hidden: torch.Tensor, parts, region_masked: torch.Tensor):
        """VLP's loss on the regions `region_masked` marks (vlp.model.masked_regions), from
        encode's hidden states and region embeddings."""
        if self.pooler is None:
            raise VLPError("this model has no pooler (config pooler is false); the masked-"
                           "region loss of --vis_mask_prob needs one")
        return masked_region_loss(parts[0], parts[1], self.pooler(hidden), region_masked)

    def vqa_logits(self, hidden: torch.Tensor, region_slots: int) -> torch.Tensor:
        """Answer scores from [CLS] * first [SEP], VLP's VQA input."""
        if self.vqa_head is None:
            raise VLPError("this model has no VQA head (config vqa_answers is 0)")
        return self.vqa_head(hidden[:, 0] * hidden[:, region_slots + 1])

    def grounding_scores(self, hidden: torch.Tensor, region_slots: int,
                         num_regions: torch.Tensor) -> torch.Tensor:
        """[B, R] float32, R = region_slots: how well each region fits the text; the lowest
        float32 value on the slots past an image's own regions."""
        if self.grounding_head is None:
            raise VLPError("this model has no localization head (config grounding is false)")
        scores = self.grounding_head(hidden[:, 1:region_slots + 1]).squeeze(-1).float()
        slot = torch.arange(region_slots, device=hidden.device)[None, :]
        return scores.masked_fill(slot >= num_regions[:, None], torch.finfo(torch.float32).min)

    def referent_centres(self, hidden: torch.Tensor, region_slots: int,
                         text_lengths: torch.Tensor) -> torch.Tensor:
        """[B, 2] float32: the centre (x, y over the image's size) of what each text refers
        to, read from its final [SEP] (the text's last position: in a seq2seq example the
        one that has seen all of it)."""
        if self.centre_head is None:
            raise VLPError("this model has no centre head (config grounding_centre is false)")
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.centre_head(hidden[rows, region_slots + 1 + text_lengths]).float()

    def pretraining_loss(self, text_ids, text_lengths, region_features, region_locations,
                         num_regions, generator: torch.Generator | None = None,
                         s2s: torch.Tensor | None = None,
                         draws: MaskDraws | None = None,
                         label_smoothing: float = 0.0,
                         drop_worst: float = 0.0,
                         region_masked: torch.Tensor | None = None,
                         block_masked: bool = False) -> dict[str, torch.Tensor]:
        """Masked LM on a batch: objectives drawn per example (s2s_prob), tokens masked
        (mask_prob, max_pred, 80/10/10). `s2s` and `draws` give those choices instead of
        drawing them from `generator`; `drop_worst` leaves out that share of the examples, the
        worst first (see masked_lm_loss). With `region_masked` those regions are masked (see
        _embed) and VLP's masked-region loss is added. Returns {"loss", "mlm_loss"}
        (+ "region_loss")."""
        if s2s is None:
            s2s = draw_objectives(text_ids.shape[0], self.config.s2s_prob, text_ids.device,
                                  generator)
        masked = mask_text(text_ids, text_lengths, self.config, generator, draws)
        hidden, parts = self.encode(masked.input_ids, text_lengths, region_features,
                                    region_locations, num_regions, s2s,
                                    sparse_words=torch.is_grad_enabled(),
                                    region_masked=region_masked, block_masked=block_masked)
        task_idx = torch.where(s2s, RELAX_TASK_INDEX["s2s"], RELAX_TASK_INDEX["bi"])
        loss = self.masked_lm_loss(hidden, masked, region_features.shape[1], label_smoothing,
                                   drop_worst, task_idx)
        out = {"loss": loss, "mlm_loss": loss.detach()}
        if region_masked is not None:
            region_loss = self.masked_region_loss(hidden, parts, region_masked)
            out.update(loss=loss + region_loss, region_loss=region_loss.detach())
        return out

    def masked_lm_loss(self, hidden: torch.Tensor, masked: MaskedText, region_slots: int,
                       label_smoothing: float = 0.0, drop_worst: float = 0.0,
                       task_idx: torch.Tensor | int | None = None):
        where = (masked.positions + region_slots + 2)[..., None].expand(-1, -1, hidden.shape[-1])
        # With an output vocabulary the softmax runs over its tokens alone.
        head = self.mlm_head
        logits = head(hidden.gather(1, where), task_idx, kept_only=True)
        return masked_lm_loss(logits, head.rows(masked.labels), masked.weights, label_smoothing,
                              drop_worst, head.row(self.config.pad_token_id))

    def new_cache(self) -> KVCache:
        return KVCache(self.config.num_hidden_layers)

    # -- cost ----------------------------------------------------------------------------
    def flops_per_step(self, batch_size: int, seq_len: int, regions: int = 0,
                       training: bool = True) -> float:
        return step_flops(self.config, batch_size, seq_len, regions, training)

    # -- checkpoints ---------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, tokenizer_dir: str | Path | None = None,
                        weights: bool = True) -> Path:
        """config.json + model.safetensors (+ the tokenizer files in `tokenizer_dir`);
        without `weights`, all but model.safetensors."""
        from vlp.model.checkpoint import save_pretrained

        return save_pretrained(self, directory, tokenizer_dir, weights)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location="cpu") -> "UnifiedVLP":
        from vlp.model.checkpoint import load_pretrained

        return load_pretrained(cls, directory, map_location)

    @classmethod
    def from_pretrained_bert(cls, path: str | Path, **config) -> "UnifiedVLP":
        """A model whose text side starts from a Hugging Face BERT directory; `config`
        overrides sizes of the parts BERT lacks (regions, VQA head, token ids...)."""
        from vlp.model.convert import from_hf_bert

        return from_hf_bert(cls, path, **config)


def step_flops(config: VLPConfig, batch_size: int, seq_len: int, regions: int = 0,
               training: bool = True) -> float:
    """Matmul FLOPs of one forward (x3 with backward): encoder over full sequences,
    attention scores included (nanoGPT's estimate_mfu accounting, 2 per multiply-add),
    plus the region MLPs over `regions` slots and the MLM head on max_pred positions."""
    c = config
    h, i, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    per_token = layers * (2 * 4 * h * h + 2 * 2 * h * i + 2 * 2 * seq_len * h)
    per_region = 2 * (c.region_feature_dim * c.region_hidden_size
                      + c.region_hidden_size * h + c.region_input_dim * h)
    scored = len(c.output_vocab) if c.output_vocab else c.vocab_size
    head = 2 * c.max_pred * (h * h * max(c.relax_projection, 1) + h * scored)
    forward = batch_size * (per_token * seq_len + per_region * regions + head)
    return forward * (3 if training else 1)
