"""Region stores from 10^4 to 10^6 records: write time, random-read latency, reader memory.

For each store kind (LMDB, HDF5) and size it writes small records (8 regions of 32-d
float16 features, 4 float16 class probabilities, float32 boxes and scores, image size)
the way `vlp extract` writes (`create_store` with the dims pinned, a commit every 64
records) and times the puts. Then a fresh process per store, with the file in the page
cache, opens it with `open_store` (what training's --features opens), reads `--reads`
random ids one at a time and reports the median and p95 latency of a read and the
process's resident memory (RSS) against its own baseline after the imports. It prints
the ratios of each larger store to the smallest, read again right after it; the target
is <= 1.5x for read latency and reader RSS (reads and memory that do not grow with the
store). LMDB maps its file, so its RSS also counts the page-cache pages its reads mapped
(shared with every reader of the file); the private (anonymous) part is printed apart.

    python bench/store_scale.py                              # ~3 minutes on 2 cores
    python bench/store_scale.py --sizes 10000,100000 --kinds hdf5 --reads 5000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vlp.data.features import RegionRecord, create_store, open_store  # noqa: E402

TARGET = 1.5
REGIONS, FEATURE_DIM, NUM_CLASSES = 8, 32, 4
BATCH = 64  # vlp extract's commit_every
BLOCK = 4096  # records generated at a time
KINDS = {"lmdb": "lmdb", "hdf5": "h5", "h5": "h5"}
SUFFIX = {"lmdb": ".lmdb", "h5": ".h5"}


def key(i: int) -> str:
    return f"COCO_train2014_{i:012d}"


def make_block(start: int, count: int) -> list[RegionRecord]:
    """Records start..start+count-1, the same in every run."""
    rng = np.random.default_rng(start)
    x1 = rng.uniform(0, 500, (count, REGIONS)).astype(np.float32)
    y1 = rng.uniform(0, 380, (count, REGIONS)).astype(np.float32)
    boxes = np.stack([x1, y1, x1 + 100, y1 + 80], axis=-1)
    feats = rng.standard_normal((count, REGIONS, FEATURE_DIM), np.float32).astype(np.float16)
    cls = rng.random((count, REGIONS, NUM_CLASSES), np.float32).astype(np.float16)
    scores = rng.random((count, REGIONS), np.float32)
    return [RegionRecord(boxes[i], feats[i], cls[i], scores[i], image_w=640, image_h=480)
            for i in range(count)]


def write_store(path: str, fmt: str, count: int) -> float:
    """Seconds spent in put() and the final commit (record generation not counted)."""
    from tqdm import tqdm

    spent = 0.0
    with tqdm(total=count, unit="rec", desc=f"write {fmt} {count:,}", mininterval=2) as bar:
        with create_store(path, fmt, batch_size=BATCH, feature_dim=FEATURE_DIM,
                          num_classes=NUM_CLASSES) as out:
            for start in range(0, count, BLOCK):
                block = make_block(start, min(BLOCK, count - start))
                began = time.perf_counter()
                for i, rec in enumerate(block, start):
                    out.put(key(i), rec)
                spent += time.perf_counter() - began
                bar.update(len(block))
            began = time.perf_counter()
        spent += time.perf_counter() - began  # the commit of the last batch, on leaving
    return spent


def disk_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path)
               for n in names)


def warm_page_cache(path: str) -> None:
    """Read the store's files once, so every size is measured from the page cache."""
    files = [path] if os.path.isfile(path) else [
        os.path.join(d, n) for d, _, names in os.walk(path) for n in names]
    for name in files:
        with open(name, "rb", buffering=0) as f:
            while f.read(1 << 24):
                pass


def measure_reads(path: str, count: int, reads: int) -> dict:
    """Run the reader in a fresh process (see `reader_main`) and return its figures."""
    cmd = [sys.executable, os.path.abspath(__file__), "--reader", path,
           "--count", str(count), "--reads", str(reads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"reader of {path} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_mb() -> dict:
    """Resident memory of this process: total, anonymous and file-backed, MB."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[name] = int(value.split()[0]) / 1024
    return {"rss": fields["VmRSS"], "anon": fields["RssAnon"],
            "file": fields["RssFile"] + fields.get("RssShmem", 0.0)}


def time_reads(store, keys) -> np.ndarray:
    """Nanoseconds of each read."""
    times = np.empty(len(keys), np.int64)
    clock = time.perf_counter_ns
    for j, k in enumerate(keys):
        t = clock()
        store[k]
        times[j] = clock() - t
    return times


def reader_main(path: str, count: int, reads: int) -> dict:
    """Open `path`, read `reads` random ids and time each read, then the same ids again
    (their pages now mapped); memory before opening and after the first pass."""
    import h5py  # noqa: F401  both readers' libraries, so every baseline is the same
    import lmdb  # noqa: F401
    from vlp.data.features import h5_store, lmdb_store  # noqa: F401

    keys = [key(int(i)) for i in np.random.default_rng(7).integers(0, count, reads)]
    base = memory_mb()
    began = time.perf_counter()
    store = open_store(path)
    store[keys[0]]  # the first read opens this process's handle
    opened = time.perf_counter() - began
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = time_reads(store, keys)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    after = memory_mb()
    again = time_reads(store, keys)
    store.close()
    return {"open_ms": opened * 1e3, "median_us": float(np.median(times)) / 1e3,
            "p95_us": float(np.percentile(times, 95)) / 1e3, "faults": faults / reads,
            "again_us": float(np.median(again)) / 1e3, "base": base, "after": after}


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def bench_kind(fmt: str, args, workdir: str) -> list[dict]:
    """Every size of one store kind, smallest first. The smallest store stays until the
    end and is read again right after each larger one: each ratio compares two readers
    run back to back, whatever else the machine is doing."""
    sizes = sorted(args.sizes)
    paths = [os.path.join(workdir, f"regions{n}{SUFFIX[fmt]}") for n in sizes]
    rows = []
    for count, path in zip(sizes, paths):
        write_s = write_store(path, fmt, count)
        size = disk_bytes(path)
        warm_page_cache(path)
        row = dict(kind=fmt, count=count, write_us=write_s / count * 1e6, mb=size / 1e6,
                   **measure_reads(path, count, args.reads))
        if rows:
            warm_page_cache(paths[0])
            row["reference"] = measure_reads(paths[0], sizes[0], args.reads)
            if not args.keep:
                remove(path)  # one large store on disk at a time
        rows.append(row)
    if not args.keep:
        remove(paths[0])
    return rows


HEADER = (f"{'store':>5} {'records':>9} {'write':>8} {'size':>7} {'open':>7} {'read p50':>9} "
          f"{'p95':>7} {'faults':>7} {'again':>6} {'RSS':>6} {'+RSS':>6} {'+anon':>6} "
          f"{'+file':>6}")
UNITS = (f"{'':>5} {'':>9} {'us/rec':>8} {'MB':>7} {'ms':>7} {'us':>9} {'us':>7} "
         f"{'/read':>7} {'us':>6} {'MB':>6} {'MB':>6} {'MB':>6} {'MB':>6}")


def table_line(r: dict) -> str:
    a, b = r["after"], r["base"]
    return (f"{r['kind']:>5} {r['count']:>9,} {r['write_us']:8.1f} {r['mb']:7.0f} "
            f"{r['open_ms']:7.1f} {r['median_us']:9.1f} {r['p95_us']:7.1f} {r['faults']:7.2f} "
            f"{r['again_us']:6.1f} {a['rss']:6.1f} "
            f"{a['rss'] - b['rss']:+6.1f} {a['anon'] - b['anon']:+6.1f} "
            f"{a['file'] - b['file']:+6.1f}")


def ratio_lines(rows: list[dict]) -> list[str]:
    """Each larger store against the smallest one, read again right after it."""
    lines = []
    for r in rows:
        ref = r.get("reference")
        if ref is None:
            continue
        figures = {"read p50": (r["median_us"], ref["median_us"], "us"),
                   "read p95": (r["p95_us"], ref["p95_us"], "us"),
                   "p50 again": (r["again_us"], ref["again_us"], "us"),
                   "reader RSS": (r["after"]["rss"], ref["after"]["rss"], "MB"),
                   "private RSS": (r["after"]["anon"], ref["after"]["anon"], "MB")}
        small = min(x["count"] for x in rows if x["kind"] == r["kind"])
        lines.append(f"{r['kind']:>5} {r['count']:,} / {small:,} records:")
        for name, (big, base, unit) in figures.items():
            x = big / base
            lines.append(f"      {name:<12} {x:5.2f}x {'ok' if x <= TARGET else 'MISS':<4} "
                         f"({big:.1f} vs {base:.1f} {unit})")
    return lines


def report(rows: list[dict], args) -> None:
    print(f"\n{REGIONS} regions x {FEATURE_DIM}-d float16 + {NUM_CLASSES} classes per record, "
          f"commits of {BATCH}; {args.reads:,} random reads in a fresh process per store, "
          "page cache warm; faults: minor page faults per read; again: p50 of the same "
          "reads repeated, their pages mapped; +RSS is over the reader's baseline after its "
          "imports (+anon: private memory, +file: mapped file pages)")
    print(HEADER)
    print(UNITS)
    for r in rows:
        print(table_line(r))
    print(f"ratios (target <= {TARGET}x; the smallest store re-read right after each larger "
          "one; private RSS: the anonymous part of RSS, without the mapped file pages)")
    for line in ratio_lines(rows):
        print(line)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000",
                   help="records per store, comma-separated")
    p.add_argument("--kinds", default="lmdb,hdf5", help="store kinds: lmdb, hdf5")
    p.add_argument("--reads", type=int, default=20000, help="random reads per store")
    p.add_argument("--workdir", help="where to make the temporary folder for the stores "
                   "(default: the system temp folder); it is deleted at the end")
    p.add_argument("--keep", action="store_true", help="keep the stores (and their folder)")
    p.add_argument("--reader", help=argparse.SUPPRESS)  # internal: the reader process
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = [k for k in args.kinds.split(",") if k not in KINDS]
    if unknown:
        p.error(f"--kinds: {', '.join(unknown)}? choose from lmdb, hdf5")
    args.kinds = list(dict.fromkeys(KINDS[k] for k in args.kinds.split(",")))
    args.sizes = [int(s) for s in args.sizes.split(",")]
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.reader:
        print(json.dumps(reader_main(args.reader, args.count, args.reads)))
        return 0
    workdir = tempfile.mkdtemp(prefix="vlp-store-scale-", dir=args.workdir)
    rows = []
    try:
        for fmt in args.kinds:
            rows += bench_kind(fmt, args, workdir)
    finally:
        if args.keep:
            print(f"stores kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
