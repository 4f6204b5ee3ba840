"""LMDB and HDF5 region stores: round trips, the mapping, bad input, workers, memory."""

import os
import pickle
import subprocess
import sys

import lmdb
import numpy as np
import pytest

from vlp.data.features import (MissingImageError, RecordError, RegionRecord, StoreError,
                               create_store, open_store)
from vlp.data.features import codec

FORMATS = {"lmdb": "regions.lmdb", "h5": "regions.h5"}


def make_record(seed: int, n: int | None = None, d: int = 16, c: int = 5) -> RegionRecord:
    rng = np.random.default_rng(seed)
    n = n or 2 + seed % 7
    x1, y1 = rng.uniform(0, 60, n), rng.uniform(0, 40, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, 40, n), y1 + rng.uniform(1, 20, n)], 1)
    return RegionRecord(boxes=boxes, features=rng.standard_normal((n, d)),
                        cls_probs=rng.dirichlet(np.ones(c), n), scores=rng.random(n),
                        image_w=100 + seed, image_h=60)


def assert_same(got: RegionRecord, want: RegionRecord) -> None:
    want = want.stored()
    for name in ("boxes", "features", "cls_probs", "scores"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert (got.image_w, got.image_h) == (want.image_w, want.image_h)


@pytest.fixture(params=sorted(FORMATS))
def fmt(request):
    return request.param


def write(path, fmt, ids, **kwargs):
    with create_store(path, fmt, **kwargs) as out:
        for i in ids:
            out.put(f"COCO_val2014_{i:012d}", make_record(i))


def test_round_trip_and_mapping(tmp_path, fmt):
    path = tmp_path / FORMATS[fmt]
    write(path, fmt, range(40), batch_size=6)
    store = open_store(path)
    assert len(store) == 40 and (store.feature_dim, store.num_classes) == (16, 5)
    assert sorted(store) == sorted(f"COCO_val2014_{i:012d}" for i in range(40))
    for i in (0, 17, 39):
        rec = store[f"COCO_val2014_{i:012d}"]
        assert_same(rec, make_record(i))
        assert rec.features.dtype == np.float16 and rec.features.flags.writeable
    assert "COCO_val2014_000000000017" in store and "COCO_val2014_000000000040" not in store
    assert 5 not in store and None not in store


def test_unknown_id_is_a_key_error_naming_id_and_store(tmp_path, fmt):
    path = tmp_path / FORMATS[fmt]
    write(path, fmt, range(3))
    store = open_store(path)
    with pytest.raises(KeyError) as err:
        store["COCO_val2014_000000000099"]
    assert isinstance(err.value, MissingImageError)
    assert str(err.value) == (f"image id 'COCO_val2014_000000000099' is not in the feature "
                              f"store {path}")
    assert store.get("nope") is None


def test_int_ids_are_their_decimal_string(tmp_path, fmt):
    path = tmp_path / FORMATS[fmt]
    with create_store(path, fmt) as out:
        out.put(391895, make_record(1))
    store = open_store(path)
    assert list(store) == ["391895"] and 391895 in store and np.int64(391895) in store
    assert_same(store[391895], make_record(1))


@pytest.mark.parametrize("bad, message", [
    (lambda r: RegionRecord(r.boxes, r.features[:, :8], r.cls_probs, r.scores, 100, 60),
     "features have 8 dims, the store holds 16"),
    (lambda r: RegionRecord(r.boxes, r.features, r.cls_probs[:, :3], r.scores, 100, 60),
     "cls_probs have 3 classes, the store holds 5"),
    (lambda r: RegionRecord(r.boxes, r.features * np.nan, r.cls_probs, r.scores, 100, 60),
     "features contain NaN"),
    (lambda r: RegionRecord(r.boxes + 500, r.features, r.cls_probs, r.scores, 100, 60),
     r"box \d .* lies outside the 100x60 image"),
    (lambda r: RegionRecord(r.boxes, r.features * 1e6, r.cls_probs, r.scores, 100, 60),
     "features contain NaN or inf"),
])
def test_writer_refuses_bad_records_and_keeps_going(tmp_path, fmt, bad, message):
    path = tmp_path / FORMATS[fmt]
    with create_store(path, fmt) as out:
        out.put("good", make_record(0))
        with pytest.raises(ValueError, match=f"image 'bad7': {message}"):
            out.put("bad7", bad(make_record(0)))
        out.put("good2", make_record(2))
    assert sorted(open_store(path)) == ["good", "good2"]


def test_resume_skips_what_is_there_and_refuses_duplicates(tmp_path, fmt):
    path = tmp_path / FORMATS[fmt]
    write(path, fmt, range(5))
    with create_store(path, fmt) as out:
        assert out.has("COCO_val2014_000000000004") and not out.has("COCO_val2014_000000000005")
        with pytest.raises(StoreError, match="already in"):
            out.put("COCO_val2014_000000000004", make_record(4))
        for i in range(10):
            if not out.has(f"COCO_val2014_{i:012d}"):
                out.put(f"COCO_val2014_{i:012d}", make_record(i))
        assert len(out) == 10
    store = open_store(path)
    assert len(store) == 10
    assert_same(store["COCO_val2014_000000000009"], make_record(9))
    store.close()
    with pytest.raises(StoreError, match="feature_dim=16, asked for 32"):
        create_store(path, fmt, feature_dim=32)


def test_an_exception_in_the_block_keeps_the_records_already_put(tmp_path, fmt):
    path = tmp_path / FORMATS[fmt]
    with pytest.raises(RuntimeError, match="boom"):
        with create_store(path, fmt, batch_size=100) as out:
            out.put("a", make_record(1))
            out.put("b", make_record(2))
            raise RuntimeError("boom")
    assert sorted(open_store(path)) == ["a", "b"]


def test_lmdb_map_grows_when_a_batch_does_not_fit(tmp_path):
    path = tmp_path / "small.lmdb"
    big = [make_record(i, n=50, d=512) for i in range(20)]  # ~1 MB against a 64 kB map
    with create_store(path, "lmdb", map_size=1 << 16, batch_size=7) as out:
        for i, rec in enumerate(big):
            out.put(str(i), rec)
    store = open_store(path)
    assert len(store) == 20
    assert_same(store["19"], big[19])


def test_records_without_classes_or_image_size(tmp_path, fmt):
    path = tmp_path / FORMATS[fmt]
    r = make_record(3)
    rec = RegionRecord(r.boxes, r.features, np.zeros((len(r.scores), 0)), r.scores)
    with create_store(path, fmt) as out:
        out.put("a", rec)
    got = open_store(path)["a"]
    assert got.cls_probs.shape == (len(r.scores), 0) and got.image_w is None
    assert_same(got, rec)


def test_stores_pickle_and_workers_open_their_own_handle(tmp_path, fmt):
    import torch.utils.data

    path = tmp_path / FORMATS[fmt]
    write(path, fmt, range(12))
    store = open_store(path)
    keys = sorted(store)
    store[keys[0]]  # the parent now holds an open handle that forked workers inherit

    class Regions(torch.utils.data.Dataset):
        def __len__(self):
            return len(keys)

        def __getitem__(self, i):
            rec = store[keys[i]]
            return os.getpid(), store._pid, rec.features.astype(np.float32)

    loader = torch.utils.data.DataLoader(Regions(), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork")
    seen = list(loader)
    assert all(pid == handle_pid != os.getpid() for pid, handle_pid, _ in seen)
    for (_, _, feats), key in zip(seen, keys):
        i = int(key[-12:])
        np.testing.assert_array_equal(feats.numpy(), make_record(i).stored().features)
    copy = pickle.loads(pickle.dumps(store))
    assert copy._handle is None and len(copy) == 12
    assert_same(copy[keys[3]], store[keys[3]])


def test_open_store_explains_what_it_found(tmp_path):
    with pytest.raises(StoreError, match="no feature store at"):
        open_store(tmp_path / "nothing")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(StoreError, match="neither an LMDB store"):
        open_store(tmp_path / "empty_dir")
    other = tmp_path / "other.h5"
    import h5py
    with h5py.File(other, "w") as f:
        f["x"] = [1]
    with pytest.raises(StoreError, match="not a vlp region store"):
        open_store(other)
    with pytest.raises(StoreError, match="non-empty directory"):
        (tmp_path / "user").mkdir()
        (tmp_path / "user" / "notes.txt").write_text("mine")
        create_store(tmp_path / "user", "lmdb")


OPEN_AND_READ = """
import sys
from vlp.data.features import open_store, StoreError
try:
    store = open_store(sys.argv[1])
    for key in store:
        store[key]
except StoreError as err:
    print("StoreError:", err)
else:
    print("read everything")
"""


def open_in_subprocess(path) -> subprocess.CompletedProcess:
    # A reader that maps past the end of a file dies of SIGBUS; keep that out of pytest.
    return subprocess.run([sys.executable, "-c", OPEN_AND_READ, str(path)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_files_fail_with_a_clear_error_not_a_crash(tmp_path, fmt, damage):
    path = tmp_path / FORMATS[fmt]
    write(path, fmt, range(30))
    target = path / "data.mdb" if fmt == "lmdb" else path
    size = os.path.getsize(target)
    if damage == "truncate":
        os.truncate(target, size // 2)
    else:
        target.write_bytes(np.random.default_rng(0).bytes(size))
    result = open_in_subprocess(path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("StoreError:") and str(path) in result.stdout
    assert "truncated" in result.stdout or damage == "garbage"


def test_lmdb_reader_reports_a_bad_record_on_disk(tmp_path):
    path = tmp_path / "regions.lmdb"
    write(path, "lmdb", range(2))
    rec = make_record(5).stored()
    rec.features[0, 0] = np.inf  # written behind the writer's back
    env = lmdb.open(str(path), max_dbs=2)
    with env.begin(write=True, db=env.open_db(b"records")) as txn:
        txn.put(b"planted", codec.encode(rec))
        txn.put(b"cut", codec.encode(rec)[:-10])
    env.close()
    store = open_store(path, check_values=True)
    with pytest.raises(RecordError, match=f"image 'planted' in {path}: features contain NaN"):
        store["planted"]
    with pytest.raises(StoreError, match="'cut' in .* is corrupt"):
        store["cut"]
    assert_same(store["COCO_val2014_000000000001"], make_record(1))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_hdf5_reads_keep_memory_flat(tmp_path):
    path = tmp_path / "many.h5"
    with create_store(path, batch_size=1000) as out:
        for i in range(5000):
            out.put(str(i), make_record(i % 50, d=32))
    store = open_store(path)
    rng = np.random.default_rng(0)
    for i in rng.integers(0, 5000, 20_000):
        store[str(i)]
    before = rss_mb()
    for i in rng.integers(0, 5000, 200_000):
        store[str(i)]
    assert rss_mb() - before < 5, f"RSS grew {rss_mb() - before:.1f} MB over 200k reads"


def test_hdf5_keeps_the_whole_records_of_a_half_written_file(tmp_path):
    import h5py

    path = tmp_path / "regions.h5"
    write(path, "h5", range(10))
    rows_of_8 = sum(make_record(i).num_regions for i in range(8))
    with h5py.File(path, "a") as f:  # as if the rows of the last two never reached disk
        f["features"].resize(rows_of_8 + 1, axis=0)
    store = open_store(path)
    assert len(store) == 8 and "COCO_val2014_000000000008" not in store
    assert_same(store["COCO_val2014_000000000007"], make_record(7))
    store.close()
    write(path, "h5", range(8, 12))
    store = open_store(path)
    assert len(store) == 12
    assert_same(store["COCO_val2014_000000000009"], make_record(9))


def test_hdf5_files_repacked_with_compression_still_read(tmp_path):
    import h5py

    path, packed = tmp_path / "regions.h5", tmp_path / "packed.h5"
    write(path, "h5", range(6))
    with h5py.File(path, "r") as src, h5py.File(packed, "w") as dst:
        dst.attrs.update(src.attrs)
        for name, ds in src.items():
            dst.create_dataset(name, data=ds[()], maxshape=ds.maxshape, compression="gzip")
    store = open_store(packed)
    assert sorted(store) == sorted(open_store(path))
    assert_same(store["COCO_val2014_000000000005"], make_record(5))


def test_two_hdf5_writers_on_one_file_are_stopped(tmp_path):
    path = tmp_path / "regions.h5"
    write(path, "h5", range(2))
    first, second = create_store(path, batch_size=1), create_store(path, batch_size=1)
    first.put("a", make_record(1))
    with pytest.raises(StoreError, match="changed under this writer"):
        second.put("b", make_record(2))
    assert sorted(open_store(path)) == ["COCO_val2014_000000000000",
                                        "COCO_val2014_000000000001", "a"]


def test_hdf5_lookups_compare_ids_not_only_their_hashes(tmp_path, monkeypatch):
    from vlp.data.features import h5_store

    path = tmp_path / "regions.h5"
    write(path, "h5", range(30), batch_size=7)
    monkeypatch.setattr(h5_store, "hash", lambda raw: 7, raising=False)  # every id collides
    store = open_store(path)
    assert_same(store["COCO_val2014_000000000012"], make_record(12))
    assert "COCO_val2014_000000000030" not in store and "COCO_val2014_00000000001" not in store
    assert list(store) == [f"COCO_val2014_{i:012d}" for i in range(30)]  # in written order


READER_MEMORY = """
import sys
from vlp.data.features import h5_store, open_store
def anon_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("RssAnon")) / 1024
before = anon_mb()
store = open_store(sys.argv[1])
store[sys.argv[2]]
print(anon_mb() - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_hdf5_reader_memory_does_not_hold_the_ids(tmp_path):
    # 30,000 ids of 500 bytes: 15 MB of ids, which the reader leaves on disk.
    path, prefix = tmp_path / "long_ids.h5", "x" * 488
    rec = make_record(1)
    with create_store(path, batch_size=5000) as out:
        for i in range(30_000):
            out.put(f"{prefix}{i:012d}", rec)
    grown = subprocess.run([sys.executable, "-c", READER_MEMORY, str(path), f"{prefix}{7:012d}"],
                           capture_output=True, text=True, timeout=120, check=True)
    assert float(grown.stdout) < 8, f"the reader grew {float(grown.stdout):.1f} MB at open"
