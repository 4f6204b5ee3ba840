"""Random-read throughput of the LMDB and HDF5 region stores against an in-memory copy.

For records of 36x2048 and 100x2048 float16 features (plus VLP's 1601 float16 class
probabilities, boxes and scores), it times single-process random reads from each store
and the copy of the same bytes out of in-memory numpy arrays (the limit), all in this
run, with the files in the page cache, and prints the ratios against the targets
(LMDB >= 0.5, HDF5 >= 0.25 of the limit). Then it reads an HDF5 store of small records
`--rss-reads` times at random and prints how much the process grew.

    python bench/feature_io.py                 # under a minute on 2 cores
    python bench/feature_io.py --records 2000 --check-values
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vlp.data.features import RegionRecord, create_store, open_store  # noqa: E402

TARGETS = {"lmdb": 0.5, "h5": 0.25}
FEATURE_DIM, NUM_CLASSES = 2048, 1601


def make_records(count: int, regions: int, dim: int, classes: int, seed: int = 0):
    """Stacked arrays (the in-memory reference) and one id per record."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0, 500, (count, regions)).astype(np.float32)
    y1 = rng.uniform(0, 400, (count, regions)).astype(np.float32)
    arrays = {
        "boxes": np.stack([x1, y1, x1 + 100, y1 + 80], axis=-1),
        "features": rng.standard_normal((count, regions, dim), np.float32).astype(np.float16),
        "cls_probs": rng.random((count, regions, classes), np.float32).astype(np.float16),
        "scores": rng.random((count, regions), np.float32),
    }
    return arrays, [f"COCO_train2014_{i:012d}" for i in range(count)]


def record(arrays, i: int) -> RegionRecord:
    return RegionRecord(**{k: v[i] for k, v in arrays.items()}, image_w=640, image_h=480)


def write(path, fmt, arrays, ids) -> float:
    start = time.perf_counter()
    with create_store(path, fmt) as out:
        for i, key in enumerate(ids):
            out.put(key, record(arrays, i))
    return time.perf_counter() - start


def time_reads(read, order) -> float:
    """Seconds for reading every index in `order`."""
    start = time.perf_counter()
    for i in order:
        read(i)
    return time.perf_counter() - start


def bench_shape(regions, args, workdir) -> list[tuple]:
    arrays, ids = make_records(args.records, regions, FEATURE_DIM, NUM_CLASSES)
    record_bytes = sum(a[0].nbytes for a in arrays.values())
    stores = {}
    for fmt in ("lmdb", "h5"):
        path = os.path.join(workdir, f"r{regions}.{fmt}")
        seconds = write(path, fmt, arrays, ids)
        print(f"  wrote {args.records} records of {regions} regions to {fmt} in {seconds:.1f} s",
              flush=True)
        stores[fmt] = open_store(path, check_values=args.check_values)
        for key in ids:  # page cache warm, as in any epoch after the first
            stores[fmt][key]

    def memory(i):
        return {k: v[i].copy() for k, v in arrays.items()}

    readers = {"memory": memory,
               "lmdb": lambda i: stores["lmdb"][ids[i]],
               "h5": lambda i: stores["h5"][ids[i]]}
    rng = np.random.default_rng(1)
    times = {name: [] for name in readers}
    for _ in range(args.rounds):  # interleaved, so drift hits all three alike
        order = rng.integers(0, len(ids), args.reads)
        for name, read in readers.items():
            times[name].append(time_reads(read, order))
    rows = []
    for name in readers:
        rate = args.reads / statistics.median(times[name])
        rows.append((regions, name, rate, rate * record_bytes / 1e6, record_bytes))
    for store in stores.values():
        store.close()
    return rows


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_rss(args, workdir) -> str:
    arrays, ids = make_records(20000, 10, 64, 16, seed=2)
    path = os.path.join(workdir, "small.h5")
    write(path, "h5", arrays, ids)
    store = open_store(path)
    rng = np.random.default_rng(3)
    warm = max(args.rss_reads // 10, 1)
    for i in rng.integers(0, len(ids), warm):
        store[ids[i]]
    before = rss_mb()
    start = time.perf_counter()
    for i in rng.integers(0, len(ids), args.rss_reads - warm):
        store[ids[i]]
    seconds = time.perf_counter() - start
    after = rss_mb()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store.close()
    return (f"HDF5 memory over {args.rss_reads:,} random reads: RSS {before:.1f} MB after the "
            f"first {warm:,}, {after:.1f} MB at the end ({after - before:+.1f} MB; peak of "
            f"the whole run {peak:.0f} MB), {(args.rss_reads - warm) / seconds:,.0f} reads/s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=400, help="records per store")
    p.add_argument("--reads", type=int, default=2000, help="random reads per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported")
    p.add_argument("--rss-reads", type=int, default=1_000_000,
                   help="random reads of the memory check (0 skips it)")
    p.add_argument("--check-values", action="store_true",
                   help="also scan every feature for NaN/inf on read (off by default)")
    p.add_argument("--dir", help="where to write the stores (default: a temporary folder)")
    args = p.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="vlp-feature-io-", dir=args.dir)
    try:
        rows = []
        for regions in (36, 100):
            rows += bench_shape(regions, args, workdir)
        scan = ", every value scanned" if args.check_values else ""
        print(f"\nsingle process, random reads of {args.records} records, page cache warm, "
              f"median of {args.rounds} rounds x {args.reads} reads{scan}")
        print(f"{'record':>12} {'reader':>7} {'records/s':>10} {'MB/s':>8} {'ratio':>6} "
              f"{'target':>7}")
        limit = {r[0]: r[2] for r in rows if r[1] == "memory"}
        for regions, name, rate, mbs, nbytes in rows:
            ratio = rate / limit[regions]
            target = TARGETS.get(name)
            verdict = "" if target is None else f">={target} {'ok' if ratio >= target else 'MISS'}"
            print(f"{f'{regions}x{FEATURE_DIM}':>12} {name:>7} {rate:10.0f} {mbs:8.0f} "
                  f"{ratio:6.2f} {verdict:>7}")
        print(f"(a record is {rows[0][4] / 1e3:.0f} kB / {rows[-1][4] / 1e3:.0f} kB: "
              f"float16 features and {NUM_CLASSES} class probabilities, float32 boxes, scores)")
        if args.rss_reads:
            print(bench_rss(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
