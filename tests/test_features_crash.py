"""A writer killed with SIGKILL: committed records survive intact, the interrupted ones
leave no trace, and the store reopens and resumes."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vlp.data.features import RegionRecord, create_store, open_store

FORMATS = {"lmdb": "regions.lmdb", "h5": "regions.h5"}

# The child writes record i (content fixed by i) and prints i once put() has returned;
# with batch_size=1 that means committed. With PENDING set it then queues two records
# without committing and waits to be killed.
WRITER = """
import sys, time
import numpy as np
from vlp.data.features import RegionRecord, create_store

def record(i):
    rng = np.random.default_rng(i)
    n = 20 + i % 30
    x1, y1 = rng.uniform(0, 50, n), rng.uniform(0, 50, n)
    return RegionRecord(boxes=np.stack([x1, y1, x1 + 10, y1 + 10], 1),
                        features=rng.standard_normal((n, 256)),
                        cls_probs=rng.random((n, 33)), scores=rng.random(n),
                        image_w=100, image_h=100)

path, fmt, batch, pending = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
with create_store(path, fmt, batch_size=batch) as out:
    i = len(out)
    while True:
        out.put(f"img{i}", record(i))
        if len(out._pending) == 0:
            print(i, flush=True)
        if pending and i >= 5 and len(out._pending) == 2:
            print("pending", flush=True)
            time.sleep(600)
        i += 1
"""


def record(i: int) -> RegionRecord:
    rng = np.random.default_rng(i)
    n = 20 + i % 30
    x1, y1 = rng.uniform(0, 50, n), rng.uniform(0, 50, n)
    return RegionRecord(boxes=np.stack([x1, y1, x1 + 10, y1 + 10], 1),
                        features=rng.standard_normal((n, 256)), cls_probs=rng.random((n, 33)),
                        scores=rng.random(n), image_w=100, image_h=100)


def run_and_kill(path, fmt, batch=1, pending=False, after_lines=8, timeout=60):
    """Start the writer, SIGKILL it once it has printed `after_lines` lines (or the
    'pending' marker); returns the last committed index it reported."""
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), fmt, str(batch),
                              "1" if pending else "0"], stdout=subprocess.PIPE, text=True)
    last, lines, deadline = -1, 0, time.monotonic() + timeout
    try:
        for line in child.stdout:
            if line.strip() == "pending":
                break
            last, lines = int(line), lines + 1
            if lines >= after_lines or time.monotonic() > deadline:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    # Lines the child printed before the kill but this loop had not read yet.
    for line in child.stdout:
        if line.strip() != "pending":
            last = int(line)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return last


def check_store(path, at_least: int, at_most: int) -> int:
    store = open_store(path)
    ids = sorted(int(key[3:]) for key in store)
    assert ids == list(range(len(ids))), "records are not the committed prefix"
    assert at_least <= len(ids) <= at_most, (len(ids), at_least, at_most)
    for i in ids:
        got, want = store[f"img{i}"], record(i).stored()
        assert np.array_equal(got.features, want.features)
        assert np.array_equal(got.cls_probs, want.cls_probs)
        assert np.array_equal(got.boxes, want.boxes)
    store.close()
    return len(ids)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_killed_mid_write_keeps_every_committed_record(tmp_path, fmt):
    path = tmp_path / FORMATS[fmt]
    total = 0
    # Killed right after a commit was reported, the child is inside the next put:
    # that record is either wholly there (its commit finished first) or absent.
    for after in (3, 11, 25):
        last = run_and_kill(path, fmt, after_lines=after)
        total = check_store(path, at_least=last + 1, at_most=last + 2)
    with create_store(path, fmt) as out:
        assert len(out) == total and out.has(f"img{total - 1}") and not out.has(f"img{total}")
        out.put(f"img{total}", record(total))
    check_store(path, at_least=total + 1, at_most=total + 1)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_killed_with_a_batch_queued_leaves_no_trace_of_it(tmp_path, fmt):
    path = tmp_path / FORMATS[fmt]
    last = run_and_kill(path, fmt, batch=3, pending=True)
    # batches of 3 committed 0-5; records 6 and 7 were queued when the kill came
    assert last == 5
    check_store(path, at_least=6, at_most=6)
