"""Caption decoding: greedy, VLP's beam search and sampling over UniLM [MASK]-slot steps.

    from vlp.decode import CaptionGenerator, SearchSettings
    gen = CaptionGenerator(model, SearchSettings(eos_id=sep_id, beam_size=3))
    hyps = gen.generate(region_features, region_locations, num_regions)
"""

from __future__ import annotations

import torch

from vlp.decode.search import (Hypothesis, Samples, SearchSettings, beam_search,
                               beam_search_n_best, caption_log_probs, greedy, sample)
from vlp.errors import VLPError
from vlp.model.decoding import decoding_steps


class CaptionGenerator:
    """Holds the model and the search settings; `use_cache=False` recomputes the whole
    sequence every step (same output, for checking and timing)."""

    def __init__(self, model, settings: SearchSettings, use_cache: bool = True):
        self.model, self.s, self.use_cache = model, settings, use_cache

    def _steps(self, region_features, region_locations, num_regions, mask_lengths=None):
        return decoding_steps(self.model, region_features, region_locations, num_regions,
                              self.s.max_length, self.use_cache, mask_lengths)

    def generate(self, region_features, region_locations, num_regions,
                 mask_lengths=None) -> list[Hypothesis]:
        """The best caption per image (beam search when beam_size > 1, else greedy);
        `mask_lengths` as vlp.model.decoding's (VLP's SCST layout)."""
        return [best[0] for best in self.generate_n_best(region_features, region_locations,
                                                         num_regions, 1, mask_lengths)]

    def generate_n_best(self, region_features, region_locations, num_regions, n: int,
                        mask_lengths=None) -> list[list[Hypothesis]]:
        """The `n` best captions per image, best first (n <= beam_size; greedy gives one)."""
        if n > max(self.s.beam_size, 1):
            raise VLPError(f"{n} best captions need a beam of at least {n} "
                           f"(beam size {self.s.beam_size})")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                steps = self._steps(region_features, region_locations, num_regions, mask_lengths)
                rows = region_features.shape[0]
                if self.s.beam_size > 1:
                    return beam_search_n_best(steps, rows, self.s, n)
                return [[hyp] for hyp in greedy(steps, rows, self.s)]
        finally:
            self.model.train(was_training)

    def sample(self, region_features, region_locations, num_regions, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0, generator=None, mask_lengths=None,
               after_end: int = 0) -> Samples:
        """One sampled caption per image, in the model's current mode and grad setting;
        `mask_lengths` and `after_end` as decoding_steps' and search.sample's."""
        steps = self._steps(region_features, region_locations, num_regions, mask_lengths)
        return sample(steps, region_features.shape[0], self.s, temperature, top_k, top_p,
                      self.model.config.pad_token_id, generator, after_end,
                      self.model.mlm_head.kept)


__all__ = ["CaptionGenerator", "Hypothesis", "Samples", "SearchSettings", "beam_search",
           "beam_search_n_best", "caption_log_probs", "greedy", "sample"]
