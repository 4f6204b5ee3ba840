"""Region selection (bottom-up-attention semantics) on hand-written proposals."""

import torch

from feature_extraction.regions import select_regions

A = [0.0, 0.0, 10.0, 10.0]
A_SHIFTED = [1.0, 0.0, 11.0, 10.0]  # IoU with A = 90 / 110 = 0.82
FAR = [50.0, 50.0, 60.0, 60.0]


def boxes(rows):
    """[R, C, 4]: every class gets the proposal's own box unless a row lists per class."""
    out = []
    for row, classes in rows:
        out.append(row if isinstance(row[0], list) else [row] * classes)
    return torch.tensor(out)


def pick(class_boxes, probs, conf=0.2, nms=0.3, lo=1, hi=10, agnostic=None):
    s = select_regions(class_boxes, torch.tensor(probs), conf=conf, nms_iou=nms,
                       min_boxes=lo, max_boxes=hi, agnostic_nms=agnostic)
    return s.index.tolist(), s.label.tolist(), [round(v, 4) for v in s.score.tolist()]


def test_nms_is_per_class():
    # Two overlapping proposals: same best class -> the weaker is suppressed.
    same = pick(boxes([(A, 3), (A_SHIFTED, 3)]), [[0.1, 0.8, 0.1], [0.15, 0.7, 0.15]])
    assert same == ([0], [1], [0.8])
    # Different classes -> both kept, best first.
    other = pick(boxes([(A, 3), (A_SHIFTED, 3)]), [[0.1, 0.8, 0.1], [0.1, 0.2, 0.7]])
    assert other == ([0, 1], [1, 2], [0.8, 0.7])


def test_a_proposal_suppressed_in_its_top_class_keeps_its_next_class():
    # Proposal 1 loses class 1 to proposal 0, but survives in class 2 with 0.3.
    probs = [[0.05, 0.9, 0.05], [0.1, 0.6, 0.3]]
    assert pick(boxes([(A, 3), (A_SHIFTED, 3)]), probs) == ([0, 1], [1, 2], [0.9, 0.3])


def test_class_specific_boxes_decide_overlap():
    # Same class, but the class-1 boxes of the two proposals do not overlap.
    per_class = boxes([([A, A, A], 3), ([A, FAR, A], 3)])
    assert pick(per_class, [[0.1, 0.8, 0.1], [0.1, 0.7, 0.2]]) == ([0, 1], [1, 1], [0.8, 0.7])


def test_conf_then_min_boxes_fill_with_best_remaining():
    probs = [[0.5, 0.5, 0.0], [0.9, 0.1, 0.0], [0.85, 0.0, 0.15], [0.95, 0.05, 0.0]]
    far = boxes([([i * 20.0, 0, i * 20 + 10, 10], 3) for i in range(4)])
    assert pick(far, probs, conf=0.2, lo=1) == ([0], [1], [0.5])
    # min_boxes 3: the two next-best proposals fill in, by their best class score.
    assert pick(far, probs, conf=0.2, lo=3) == ([0, 2, 1], [1, 2, 1], [0.5, 0.15, 0.1])
    # never more than there are proposals
    assert len(pick(far, probs, conf=0.2, lo=9)[0]) == 4


def test_fillers_come_after_survivors_even_if_suppressed_ones_score_higher():
    # Proposal 1 (0.85) is suppressed by proposal 0 (0.9); proposal 2 (0.1) survives.
    rows = boxes([(A, 2), (A_SHIFTED, 2), (FAR, 2)])
    probs = [[0.1, 0.9], [0.15, 0.85], [0.9, 0.1]]
    assert pick(rows, probs, conf=0.5, lo=3) == ([0, 2, 1], [1, 1, 1], [0.9, 0.1, 0.85])


def test_max_boxes_caps_confident_regions():
    far = boxes([([i * 20.0, 0, i * 20 + 10, 10], 2) for i in range(5)])
    probs = [[1 - p, p] for p in (0.3, 0.9, 0.5, 0.7, 0.6)]
    assert pick(far, probs, conf=0.2, lo=1, hi=3) == ([1, 3, 4], [1, 1, 1], [0.9, 0.7, 0.6])


def test_background_never_counts():
    # The background column is the largest but is never a region's class.
    far = boxes([(A, 3), (FAR, 3)])
    index, label, score = pick(far, [[0.9, 0.06, 0.04], [0.97, 0.01, 0.02]], lo=2)
    assert index == [0, 1] and label == [1, 2] and score == [0.06, 0.02]


def test_agnostic_nms_keeps_one_region_per_object_seen_as_two_classes():
    # One object, two proposals of different best classes: per-class NMS keeps both ...
    rows = boxes([(A, 3), (A_SHIFTED, 3), (FAR, 3)])
    probs = [[0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.1, 0.1, 0.8]]
    assert pick(rows, probs) == ([0, 2, 1], [1, 2, 2], [0.8, 0.8, 0.7])
    # ... the cross-class NMS drops the weaker one; a distant region of the same class stays.
    assert pick(rows, probs, agnostic=0.5) == ([0, 2], [1, 2], [0.8, 0.8])
    # Boxes overlapping less than its IoU are two objects.
    assert pick(rows, probs, agnostic=0.9) == ([0, 2, 1], [1, 2, 2], [0.8, 0.8, 0.7])


def test_agnostic_nms_suppressed_regions_only_fill_up_to_min_boxes():
    rows = boxes([(A, 3), (A_SHIFTED, 3), (FAR, 3)])
    probs = [[0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.85, 0.1, 0.05]]
    assert pick(rows, probs, agnostic=0.5, lo=1) == ([0], [1], [0.8])
    # Proposal 1 (0.7) repeats proposal 0's object: it fills in after proposal 2, an
    # unconfident region of its own place, as per-class NMS orders what it suppressed.
    assert pick(rows, probs, agnostic=0.5, lo=3) == ([0, 2, 1], [1, 1, 2], [0.8, 0.1, 0.7])
