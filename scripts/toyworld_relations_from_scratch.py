"""Can a transformer learn ToyWorld's left/right questions from perfect inputs at all?

A small transformer (torch.nn.TransformerEncoder, no pretraining) reads one token per
drawn shape (an embedding of its exact category plus an MLP of its box, no detector)
and the question's words, and answers from its first token. It trains on position
questions alone, or on position questions and as many "Where is the X?" grid questions
about the same kind of scenes, and prints the accuracy on held-out position questions.
Scenes and questions come from ToyWorld's own generator, without answer noise.

    python scripts/toyworld_relations_from_scratch.py [--questions 10000] [--steps 3000] \\
        [--box_frequencies 8] [--mix position position+where]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from vlp.data.features import RegionRecord, box_sinusoids
from vlp.data.toyworld.language import pick, refer, region, tokenize
from vlp.data.toyworld.scene import COLORS, MAX_OBJECTS, SHAPES, SIZES, sample_scene
from vlp.data.toyworld.vqa import Question, ask

IMAGE_SIZE = 128
CATEGORIES = [f"{z} {c} {s}" for z in SIZES for c in COLORS for s in SHAPES]
CELLS = [" ".join(w for w in (row, col) if w) or "center"
         for row in ("top", "", "bottom") for col in ("left", "", "right")]
# A grid answer is a class of its own: "left" the cell is not "left" of another shape.
ANSWERS = ["left", "right", "above", "below", *(f"cell {c}" for c in CELLS)]
TEXT_SLOTS = 20


def position_question(shapes, rng) -> Question | None:
    """ToyWorld's own left/right or above/below question about two shapes, if any."""
    for _ in range(20):
        found = [q for q in ask(shapes, rng, IMAGE_SIZE, k=1) if q.kind == "position"]
        if found:
            return found[0]
    return None


def where_question(shapes, rng) -> Question | None:
    """ "Where is the X?" about one shape its scene can name: its cell of a 3x3 grid."""
    target = pick(rng, shapes)
    name = refer(target, shapes)
    if name is None:
        return None
    return Question("where", f"Where is the {name}?", f"cell {region(target, IMAGE_SIZE)}",
                    "where is the", "other")


def questions(count: int, seed: int, where: bool) -> list:
    """(shapes, Question) pairs: one position question per scene that has one, and with
    `where` a grid question about one of its shapes, until there are `count`."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        shapes = sample_scene(rng, IMAGE_SIZE)
        q = position_question(shapes, rng)
        if q is None:
            continue
        out.append((shapes, q))
        if where and (w := where_question(shapes, rng)) is not None:
            out.append((shapes, w))
    return out[:count]


def box_inputs(shapes, frequencies: int) -> np.ndarray:
    """[n, 4(1 + 2F)]: the region slot's box sines/cosines (vlp.data.features), exact boxes."""
    n = len(shapes)
    record = RegionRecord(boxes=np.array([s.box for s in shapes], np.float32),
                          features=np.zeros((n, 0), np.float16),
                          cls_probs=np.zeros((n, 0), np.float16), scores=np.ones(n, np.float32),
                          image_w=IMAGE_SIZE, image_h=IMAGE_SIZE)
    return box_sinusoids(record, frequencies)


def tensors(pairs: list, vocab: dict[str, int], frequencies: int) -> list[torch.Tensor]:
    b, d = len(pairs), 4 * (1 + 2 * frequencies)
    category = np.zeros((b, MAX_OBJECTS), np.int64)  # 0: no shape
    boxes = np.zeros((b, MAX_OBJECTS, d), np.float32)
    words = np.zeros((b, TEXT_SLOTS), np.int64)  # 0: padding
    answer = np.zeros(b, np.int64)
    for i, (shapes, q) in enumerate(pairs):
        category[i, :len(shapes)] = [CATEGORIES.index(s.category) + 1 for s in shapes]
        boxes[i, :len(shapes)] = box_inputs(shapes, frequencies)
        ids = [vocab[w] for w in tokenize(q.question)]
        words[i, :len(ids)] = ids
        answer[i] = ANSWERS.index(q.answer)
    return [torch.from_numpy(a) for a in (category, boxes, words, answer)]


class Reader(nn.Module):
    def __init__(self, vocab_size: int, box_dim: int, hidden: int = 128, layers: int = 4):
        super().__init__()
        self.category = nn.Embedding(len(CATEGORIES) + 1, hidden)
        self.box = nn.Sequential(nn.Linear(box_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.word = nn.Embedding(vocab_size, hidden)
        self.position = nn.Embedding(TEXT_SLOTS, hidden)
        self.segment = nn.Embedding(2, hidden)
        self.first = nn.Parameter(torch.randn(hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(hidden, 4, 4 * hidden, 0.0, activation="gelu",
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers)
        self.head = nn.Linear(hidden, len(ANSWERS))

    def forward(self, category, boxes, words):
        b = category.shape[0]
        shapes = self.category(category) + self.box(boxes) + self.segment.weight[0]
        text = (self.word(words) + self.position(torch.arange(words.shape[1]))[None]
                + self.segment.weight[1])
        x = torch.cat([self.first.expand(b, 1, -1), shapes, text], 1)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool), category == 0, words == 0], 1)
        return self.head(self.encoder(x, src_key_padding_mask=pad)[:, 0])


def accuracy(model: Reader, data: list[torch.Tensor]) -> float:
    with torch.no_grad():
        return (model(*data[:3]).argmax(1) == data[3]).float().mean().item()


def run(mix: str, args) -> tuple[float, float]:
    train = questions(args.questions, args.seed, where=mix == "position+where")
    test = questions(1000, args.seed + 1, where=False)
    words = sorted({w for _, q in train + test for w in tokenize(q.question)})
    vocab = {w: i + 1 for i, w in enumerate(words)}
    train_t, test_t = (tensors(p, vocab, args.box_frequencies) for p in (train, test))
    torch.manual_seed(args.seed)
    model = Reader(len(vocab) + 1, train_t[1].shape[-1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    for _ in tqdm(range(args.steps), desc=mix, leave=False):
        rows = torch.randint(0, len(train), (64,), generator=generator)
        loss = nn.functional.cross_entropy(model(*(t[rows] for t in train_t[:3])), train_t[3][rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seen = [t[:1000] for t in train_t]
    return accuracy(model, test_t), accuracy(model, seen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=10000, help="training questions in all")
    ap.add_argument("--steps", type=int, default=3000, help="AdamW steps of 64 questions")
    ap.add_argument("--box_frequencies", type=int, default=8)
    ap.add_argument("--mix", nargs="+", default=["position", "position+where"],
                    choices=["position", "position+where"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.box_frequencies < 1:
        ap.error(f"--box_frequencies must be 1 or more (the box input is its sines/cosines), "
                 f"got {args.box_frequencies}")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    for mix in args.mix:
        test, train = run(mix, args)
        print(f"{mix:15s}: held-out position questions {100 * test:.1f}%, "
              f"first 1,000 training questions {100 * train:.1f}%", flush=True)


if __name__ == "__main__":
    main()
