"""`vlp serve` under load next to the same calls in-process, in one run.

--requests (200) caption and ask requests, alternating, over the bundle's example images
(its ToyWorld test images, or --images) and a few questions: first called in this process
one after another through the server's own model code (BundleModels, decoding included),
then sent by --threads (8) client threads to `vlp serve` in its own process on 127.0.0.1.
Prints requests/s, p50/p95 latency, the server's rate over the in-process rate (target
>= 0.8: HTTP, multipart and JSON cost little next to the models), and checks that every
response equals the in-process result. Without --bundle it uses runs/quickstart when it
holds a bundle, else builds the tiny one (`vlp quickstart --tiny`, minutes) in a temporary
directory.

    python bench/serve.py [--bundle runs/quickstart] [--requests 200] [--threads 8]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from feature_extraction.images import decode_rgb_bytes
from vlp.bundle import load_bundle
from vlp.serve import BundleModels
from vlp.serve.models import example_images

QUESTIONS = ("what color is the circle", "how many shapes are there", "is there a square",
             "what shape is left of the triangle")


def find_bundle(given: str | None, tmp: str) -> Path:
    if given:
        return Path(given)
    if Path("runs/quickstart/bundle.json").is_file():
        return Path("runs/quickstart")
    out = Path(tmp) / "tiny"
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "vlp", "quickstart", "--tiny", "--out", str(out)],
                         capture_output=True, text=True, timeout=1800)
    if run.returncode:
        sys.exit(f"vlp quickstart --tiny failed:\n{run.stderr[-3000:]}")
    print(f"built the tiny bundle in {time.perf_counter() - start:.0f} s ({out})")
    return out


def workload(images: list[tuple[str, bytes]], count: int) -> list[dict]:
    """Request i: a caption (even i) or a question (odd i) about image i mod len(images)."""
    jobs = []
    for i in range(count):
        name, data = images[i % len(images)]
        question = QUESTIONS[(i // 2) % len(QUESTIONS)] if i % 2 else None
        jobs.append({"name": name, "data": data, "question": question})
    return jobs


def in_process(models: BundleModels, job: dict) -> dict:
    pixels = decode_rgb_bytes(job["data"])
    if job["question"] is None:
        return models.caption(pixels, models.beam_size).result()
    return models.ask(pixels, job["question"], 3).result()


def multipart(job: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
              f'filename="{job["name"]}"\r\nContent-Type: application/octet-stream\r\n\r\n'
              ).encode() + job["data"] + b"\r\n"]
    if job["question"] is not None:
        parts.append((f'--{boundary}\r\nContent-Disposition: form-data; name="question"'
                      f'\r\n\r\n{job["question"]}\r\n').encode())
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def send(url: str, job: dict) -> tuple[dict, float]:
    body, kind = multipart(job)
    route = "api/caption" if job["question"] is None else "api/ask"
    request = urllib.request.Request(url + route, data=body, headers={"Content-Type": kind})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        result = json.loads(response.read())
    return result, time.perf_counter() - start


def start_server(bundle: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vlp", "serve", "--bundle", str(bundle),
                                 "--port", "0"], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"vlp serve: (http://\S+/)", log.read_text())
        if found:
            return proc, found[1]
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"vlp serve did not start: {log.read_text()}")


def percentiles(seconds: list[float]) -> str:
    p50, p95 = np.percentile(np.asarray(seconds) * 1000, [50, 95])
    return f"p50 {p50:.0f} ms, p95 {p95:.0f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="bundle directory (default: runs/quickstart, else a tiny one)")
    p.add_argument("--images", nargs="*", default=[], help="image files (default: the bundle's "
                   "ToyWorld test images)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--threads", type=int, default=8)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = find_bundle(args.bundle, tmp)
        images = ([(Path(f).name, Path(f).read_bytes()) for f in args.images] or
                  [(ex.name, ex.data) for ex in example_images(bundle, count=8)])
        if not images:
            sys.exit(f"{bundle}: no ToyWorld test images; pass --images FILE ...")
        jobs = workload(images, args.requests)
        models = BundleModels(load_bundle(bundle))
        for job in jobs[:4]:
            in_process(models, job)  # warm-up
        start = time.perf_counter()
        expected, own = [], []
        for job in jobs:
            t0 = time.perf_counter()
            expected.append(json.loads(json.dumps(in_process(models, job))))
            own.append(time.perf_counter() - t0)
        sequential = time.perf_counter() - start
        print(f"bundle {bundle}, {len(images)} images, {args.requests} requests "
              f"(half caption at beam {models.beam_size}, half ask)")
        print(f"in-process, one after another: {args.requests / sequential:.2f} requests/s "
              f"({sequential:.1f} s), {percentiles(own)}")
        models.close()
        del models
        proc, url = start_server(bundle, Path(tmp) / "serve.log")
        try:
            served, wall = load(url, jobs, args.threads)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    results = [r for r, _ in served]
    correct = sum(r == e for r, e in zip(results, expected))
    rate = args.requests / wall
    print(f"server, {args.threads} client threads: {rate:.2f} requests/s ({wall:.1f} s), "
          f"latency {percentiles([s for _, s in served])}")
    print(f"ratio server / in-process: {rate * sequential / args.requests:.2f} (target >= 0.8)")
    print(f"responses equal to the in-process results: {correct}/{args.requests}")
    if correct != args.requests:
        sys.exit(1)


def load(url: str, jobs: list[dict], threads: int) -> tuple[list[tuple[dict, float]], float]:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda job: send(url, job), jobs[:threads]))  # warm-up
        start = time.perf_counter()
        served = list(pool.map(lambda job: send(url, job), jobs))
    return served, time.perf_counter() - start


if __name__ == "__main__":
    main()
