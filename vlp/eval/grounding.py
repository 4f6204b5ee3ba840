"""Does a captioner read the image? The reference captions of a split, scored token by
token with their own image's regions and with another image's.

Each reference token's log-probability given the tokens before it comes from the
decoding steps that beam search takes (vlp.decode.caption_log_probs), so it is the
probability decoding sees. `gain`, own minus other in nats per token, is what the regions
are worth to the model: 0 for one that ignores them, a language model of captions. The
other image is the next distinct image of the split, so every caption is scored once
with regions that are not its image's.

    from vlp.eval.grounding import score_references
    g = score_references(model, captions, store, tokenizer, regions=100)
    print(g.summary())
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from vlp.data.captions import Caption
from vlp.data.region_text import pad_regions, region_inputs
from vlp.data.tokens import tokenize
from vlp.decode import caption_log_probs
from vlp.errors import VLPError
from vlp.model.decoding import decoding_steps


@dataclass(frozen=True)
class Grounding:
    own: float        # mean log-prob per reference token, with the caption's image's regions
    other: float      # the same with another image's regions
    tokens: int       # reference tokens scored (each caption's end token included)
    captions: int
    truncated: int    # captions cut to max_length tokens (their end token kept)

    @property
    def gain(self) -> float:
        """Nats per token that the image's regions are worth to the model."""
        return self.own - self.other

    def as_dict(self) -> dict:
        return {**asdict(self), "gain": self.gain}

    def summary(self) -> str:
        return (f"the image is worth {self.gain:.3f} nats/token ({self.captions} reference "
                f"captions: {self.own:.3f} with their own regions, {self.other:.3f} with "
                "another image's)")


def other_images(keys: list[str]) -> dict[str, str]:
    """Each distinct key -> the next distinct key in order of first appearance (cyclic)."""
    distinct = list(dict.fromkeys(keys))
    if len(distinct) < 2:
        raise VLPError(f"scoring with another image's regions needs two images or more; "
                       f"the captions have {len(distinct)}")
    return dict(zip(distinct, distinct[1:] + distinct[:1]))


@torch.no_grad()
def score_references(model, captions: list[Caption], store, tokenizer, regions: int,
                     box_norm: str = "auto", max_length: int = 20, batch_size: int = 64,
                     device: torch.device | str = "cpu", progress: bool = False) -> Grounding:
    """Mean log-prob per token of `captions` with their images' regions (from `store`)
    and with another image's. A caption keeps its first max_length - 1 word pieces and
    the end token, as decoding with --max_tgt_length max_length would produce it."""
    if not captions:
        raise VLPError("no reference captions to score")
    other = other_images([c.image_key for c in captions])
    pieces = tokenize(tokenizer, [c.text for c in captions])
    sep, pad = model.config.sep_token_id, model.config.pad_token_id
    box_frequencies = model.config.region_box_octaves
    was_training = model.training
    model.eval()
    sums, tokens, truncated = {"own": 0.0, "other": 0.0}, 0, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(captions), desc="score references", unit="caption",
                   dynamic_ncols=True)
    try:
        for start in range(0, len(captions), batch_size):
            rows = range(start, min(start + batch_size, len(captions)))
            texts = [np.append(pieces[i][:max_length - 1], sep) for i in rows]
            truncated += sum(len(pieces[i]) > max_length - 1 for i in rows)
            lengths = torch.tensor([len(t) for t in texts])
            ids = torch.full((len(texts), int(lengths.max())), pad, dtype=torch.long)
            for row, t in enumerate(texts):
                ids[row, :len(t)] = torch.from_numpy(t.astype(np.int64))
            ids, lengths = ids.to(device), lengths.to(device)
            for name, keys in (("own", [captions[i].image_key for i in rows]),
                               ("other", [other[captions[i].image_key] for i in rows])):
                examples = []
                for key in keys:
                    features, locations = region_inputs(store[key], regions, box_norm,
                                                        box_frequencies)
                    examples.append({"features": features, "locations": locations})
                feats, locs, n = (t.to(device) for t in pad_regions(examples))
                steps = decoding_steps(model, feats, locs, n, ids.shape[1])
                sums[name] += float(caption_log_probs(steps, ids, lengths).sum())
            tokens += int(lengths.sum())
            if bar is not None:
                bar.update(len(rows))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    return Grounding(sums["own"] / tokens, sums["other"] / tokens, tokens, len(captions),
                     truncated)
