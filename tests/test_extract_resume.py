"""`vlp extract` killed with SIGKILL and run again ends with the store of a run never
stopped."""

import os
import signal
import subprocess
import sys
import time

import numpy as np

from extract_fixtures import saved_tiny_detector, write_images
from vlp.data.features import open_store

# Extract with one record per commit; the writer prints the count after each commit and
# dawdles, so that the parent can kill the child in the middle of a batch.
CHILD = """
import sys, time
from feature_extraction import (ExtractSettings, RegionExtractor, extract_regions,
                                from_directory, load_detector)
from vlp.data.features.lmdb_store import LmdbWriter

write = LmdbWriter._write_batch

def announced(self, items):
    write(self, items)
    print("committed", self._count_committed(), flush=True)
    time.sleep(0.1)

LmdbWriter._write_batch = announced
images, detector, out = sys.argv[1:4]
model, _ = load_detector(detector)
extractor = RegionExtractor(model, ExtractSettings(min_boxes=2, max_boxes=6))
report = extract_regions(from_directory(images), extractor, out, batch_size=3, workers=0,
                         commit_every=1, progress=False)
print("done", report.written, flush=True)
"""


def run_child(images, detector, out, kill_at=None):
    """Run the child; with kill_at, SIGKILL it once that many records are committed."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(images), str(detector),
                              str(out)], stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    deadline = time.monotonic() + 120
    for line in child.stdout:
        if kill_at is not None and line.startswith("committed") and \
                int(line.split()[1]) >= kill_at:
            os.kill(child.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline
    child.stdout.close()
    return child.wait()


def test_killed_then_rerun_equals_uninterrupted(tmp_path):
    images = tmp_path / "images"
    write_images(images, 14, sizes=((64, 48), (72, 40), (48, 64)))
    detector = saved_tiny_detector(tmp_path / "det", seed=3)
    whole, resumed = tmp_path / "whole.lmdb", tmp_path / "resumed.lmdb"
    assert run_child(images, detector, whole) == 0
    # 4 = one record into the second batch of 3: the rerun redoes that batch whole.
    assert run_child(images, detector, resumed, kill_at=4) == -signal.SIGKILL
    with open_store(resumed) as partial:
        assert 4 <= len(partial) < 14
    assert run_child(images, detector, resumed) == 0
    with open_store(whole) as a, open_store(resumed) as b:
        assert sorted(a) == sorted(b) and len(a) == 14
        for key in a:
            x, y = a[key], b[key]
            assert (x.image_w, x.image_h) == (y.image_w, y.image_h)
            for field in ("boxes", "features", "cls_probs", "scores"):
                np.testing.assert_allclose(getattr(x, field), getattr(y, field),
                                           rtol=1e-3, atol=1e-4, err_msg=f"{key} {field}")
