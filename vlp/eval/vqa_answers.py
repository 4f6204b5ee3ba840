"""VQA answers: the official evaluation's normalisation, an answer vocabulary, soft targets.

`normalize_answer` is what the official VQA evaluation (GT-Vision-Lab/VQA,
`PythonEvaluationTools/vqaEvaluation/vqaEval.py`) does to a predicted answer, quirks kept:
punctuation is replaced by a space unless it touches a space or the text holds a comma
between digits (then every listed mark is deleted); at most 32 periods not followed by a
digit are deleted; the text is lower-cased, number words zero to ten (and "none") become
digits, "a", "an", "the" are dropped, and apostrophe-less contractions gain their
apostrophe. Training answers get the same treatment, as Pythia's imdb (used by VLP) did.

The answer vocabulary VLP trained with is Pythia's `answers_vqa.txt`: `build_pythia_vocab`
makes it the way Pythia's `process_answers.py` did (`pythia_answer` of each question's
`multiple_choice_answer`, kept when at least 9 questions have it, sorted, after `<unk>`);
`build_vocab` is the alternative over all annotators' answers.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vlp.errors import VLPError

DEFAULT_VOCAB_SIZE = 3129  # VLP's (and BUTD's) answer count on VQA v2
UNK = "<unk>"  # index 0 of Pythia's answer list; VLP never predicted it
PYTHIA_MIN_COUNT = 9  # the --min_freq with which Pythia built answers_vqa.txt
# Where VLP's loader and eval_vqa2.py read Pythia's answer list (under the working
# directory, as VLP's README unpacks Pythia's vocab.tar.gz).
PYTHIA_ANSWERS = Path("pythia/data/vocabs/answers_vqa.txt")

# Marks the official tool removes or turns into a space (its Python 3 list; ':' and the
# apostrophe are not among them, '.' is handled on its own below).
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
               ">", "<", "@", "`", ",", "?", "!")
_COMMA_BETWEEN_DIGITS = re.compile(r"\d,\d")
# The official pattern opens with a look-ahead that can never fail at a '.', so only
# "a period not followed by a digit" is left; it also passes re.UNICODE (32) where
# re.sub takes its count, so at most 32 periods go.
_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_LIMIT = 32

NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3",
                "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
                "nine": "9", "ten": "10"}
ARTICLES = frozenset(("a", "an", "the"))

# The official contraction table as written, including its oddities: keys with capitals
# ("Im", "Ive") never match lower-cased words, and "somebody'd" maps to "somebodyd".
_CONTRACTION_PAIRS = """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't
couldn'tve=couldn't've couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't
hadnt=hadn't hadnt've=hadn't've hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd
hed've=he'd've he'dve=he'd've hes=he's howd=how'd howll=how'll hows=how's Id've=I'd've
I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd itd've=it'd've it'dve=it'd've itll=it'll
let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've mightn'tve=mightn't've
mightve=might've mustnt=mustn't mustve=must've neednt=needn't notve=not've oclock=o'clock
oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't
shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't
shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd
somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll
somebodys=somebody's someoned=someone'd someoned've=someone'd've someone'dve=someone'd've
someonell=someone'll someones=someone's somethingd=something'd somethingd've=something'd've
something'dve=something'd've somethingll=something'll thats=that's thered=there'd
thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd
theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've
twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't
whatll=what'll whatre=what're whats=what's whatve=what've whens=when's whered=where'd
wheres=where's whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll
whos=who's whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've
wouldnt=wouldn't wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll
y'allll=y'all'll yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd
youd've=you'd've you'dve=you'd've youll=you'll youre=you're youve=you've
"""
CONTRACTIONS = dict(pair.split("=", 1) for pair in _CONTRACTION_PAIRS.split())


def strip_punctuation(text: str) -> str:
    """The official `processPunctuation`: applied to results, and to ground truth answers
    only when a question's ten answers are not all the same."""
    # Both tests look at the text as given, not at the text being rewritten.
    delete_all = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        touches_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if delete_all or touches_space else " ")
    return _PERIOD.sub("", out, count=_PERIOD_LIMIT)


def canonical_words(text: str) -> str:
    """The official `processDigitArticle`: lower-case, number words to digits, articles
    dropped, contractions restored, words joined by single spaces."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def unfold_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, ends stripped: the official tool's first step."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """An answer as the official evaluation compares it (a prediction always in the tool
    before 2021; since then prediction and ground truth alike when the ground truth
    answers differ)."""
    return canonical_words(strip_punctuation(unfold_whitespace(text)))


def soft_score(count: int, total: int) -> float:
    """VQA accuracy of an answer given by `count` of `total` annotators: the mean over the
    `total` leave-one-out subsets of min(1, matches / 3)."""
    if total <= 0:
        return 0.0
    with_it_left_out = count * min(1.0, (count - 1) / 3)  # the subsets missing a match
    without = (total - count) * min(1.0, count / 3)
    return (with_it_left_out + without) / total


def soft_scores(answers: Sequence[str]) -> dict[str, float]:
    """Soft score of every distinct answer in one question's answer list (as given)."""
    counts = Counter(answers)
    return {a: soft_score(c, len(answers)) for a, c in counts.items()}


class AnswerVocab:
    """The K answers a classifier predicts: index <-> normalised answer string."""

    def __init__(self, answers: Sequence[str]):
        self.answers = list(answers)
        self.index = {a: i for i, a in enumerate(self.answers)}
        if len(self.index) != len(self.answers):
            dupes = sorted(a for a, c in Counter(self.answers).items() if c > 1)
            raise VLPError(f"answer vocabulary repeats {len(dupes)} answers: {dupes[:10]}")
        if len(self.answers) <= self.first_answer:
            raise VLPError("the answer vocabulary is empty (or holds only <unk>)")

    @property
    def first_answer(self) -> int:
        """Index of the first answer a prediction may be: 1 when the list starts with
        `<unk>` (Pythia's, and VLP took the argmax over logits[:, 1:] + 1), else 0."""
        return 1 if self.answers and self.answers[0] == UNK else 0

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: str) -> bool:
        return answer in self.index

    def __getitem__(self, i: int) -> str:
        return self.answers[i]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"answers": self.answers}, indent=0) + "\n",
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> AnswerVocab:
        """Read a vocabulary saved by `save`, a JSON list, or a text file with one answer
        a line (Pythia's answers_vqa.txt, which VLP used)."""
        path = Path(path)
        if not path.is_file():
            raise VLPError(f"{path}: no such answer vocabulary file")
        text = path.read_text(encoding="utf-8")
        if path.suffix != ".json":
            return cls([line.strip() for line in text.splitlines() if line.strip()])
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise VLPError(f"{path}: not valid JSON ({err})") from None
        answers = data.get("answers") if isinstance(data, dict) else data
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise VLPError(f"{path}: expected {{\"answers\": [strings]}} or a JSON list "
                           "of strings")
        return cls(answers)


def count_answers(answer_lists: Iterable[Sequence[str]]) -> Counter:
    """How often each normalised answer occurs over all annotators' answers."""
    counts: Counter = Counter()
    for answers in answer_lists:
        counts.update(normalize_answer(a) for a in answers)
    return counts


def build_vocab(answer_lists: Iterable[Sequence[str]], size: int = DEFAULT_VOCAB_SIZE,
                min_count: int = 1) -> AnswerVocab:
    """The `size` most frequent normalised answers (empty answers excluded); ties go to the
    alphabetically first, so the result depends only on the counts."""
    if size < 1:
        raise VLPError(f"answer vocabulary size must be at least 1, got {size}")
    counts = count_answers(answer_lists)
    counts.pop("", None)
    ranked = sorted((a for a, c in counts.items() if c >= min_count),
                    key=lambda a: (-counts[a], a))
    if not ranked:
        raise VLPError("no answers to build a vocabulary from")
    return AnswerVocab(ranked[:size])


def pythia_answer(text: str) -> str:
    """Pythia's `preprocess_answer`, with which it built answers_vqa.txt: the official
    punctuation and word steps, then commas deleted (none are left by then)."""
    return canonical_words(strip_punctuation(text)).replace(",", "")


def build_pythia_vocab(consensus: Iterable[tuple[int, str]],
                       min_count: int = PYTHIA_MIN_COUNT) -> AnswerVocab:
    """Pythia's answers_vqa.txt rule (VLP's answer list) from (question id,
    multiple_choice_answer) pairs: each answer processed by `pythia_answer`, kept when it is
    the answer of at least `min_count` distinct questions, empty ones dropped, sorted, with
    `<unk>` at index 0."""
    questions: dict[str, set] = {}
    for question_id, answer in consensus:
        questions.setdefault(pythia_answer(answer), set()).add(question_id)
    kept = sorted(a.strip() for a, ids in questions.items()
                  if len(ids) >= min_count and a.strip())
    if not kept:
        raise VLPError(f"no multiple_choice_answer is that of {min_count} or more training "
                       "questions; lower --answer_min_count")
    return AnswerVocab([UNK] + kept)


@dataclass
class TargetStats:
    """What the vocabulary could not represent, for the trainer's log."""
    questions: int = 0
    answers: int = 0
    answers_out_of_vocab: int = 0
    questions_without_target: int = 0

    def summary(self) -> str:
        share = 100 * self.answers_out_of_vocab / max(self.answers, 1)
        return (f"{self.answers_out_of_vocab} of {self.answers} answers ({share:.1f}%) are "
                f"outside the answer vocabulary; {self.questions_without_target} of "
                f"{self.questions} questions have no target")


def soft_targets(answers: Sequence[str], vocab: AnswerVocab,
                 stats: TargetStats | None = None) -> dict[int, float]:
    """{vocabulary index: soft score} for one question; answers are normalised first and
    those outside the vocabulary get no target (counted in `stats`)."""
    normalised = [normalize_answer(a) for a in answers]
    targets = {}
    for answer, score in soft_scores(normalised).items():
        if answer in vocab.index:
            targets[vocab.index[answer]] = score
    if stats is not None:
        stats.questions += 1
        stats.answers += len(normalised)
        stats.answers_out_of_vocab += sum(a not in vocab.index for a in normalised)
        stats.questions_without_target += not targets
    return targets


def build_targets(answer_lists: Iterable[Sequence[str]], vocab: AnswerVocab
                  ) -> tuple[list[dict[int, float]], TargetStats]:
    """Soft targets for many questions, with the count of what fell outside `vocab`."""
    stats = TargetStats()
    return [soft_targets(a, vocab, stats) for a in answer_lists], stats
