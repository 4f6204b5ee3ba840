"""The Java tools pycocoevalcap ships: the PTB tokenizer, METEOR 1.5 and SPICE 1.0.

They are run from pycocoevalcap's own jars with its flags, with three changes: every
process gets a time limit (no hangs), text goes in and out as UTF-8 whatever the locale
(non-ASCII captions survive), and temporary files go to the system temp directory rather
than into site-packages. SPICE runs only when the Stanford CoreNLP jars it needs are
already present: pycocoevalcap would download them on first use, which is never attempted.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Sequence

from coco_caption.ptb import PUNCTUATIONS, clean_caption
from vlp.errors import VLPError

_JAVA_OPTS = ["-Dfile.encoding=UTF-8", "-Djava.awt.headless=true"]


def package_dir() -> Path:
    import pycocoevalcap  # noqa: F401  (only to locate its jars)
    return Path(next(iter(pycocoevalcap.__path__)))


def java() -> str:
    path = shutil.which("java")
    if path is None:
        raise VLPError("java not found on PATH: install Java 8+ or evaluate with --no-java")
    return path


def ptb_tokenize(captions: Sequence[str], timeout: float = 600.0) -> list[str]:
    """coco-caption's tokenization of captions read in this order, one per line."""
    if not captions:
        return []
    jar = package_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    with tempfile.TemporaryDirectory(prefix="coco_caption-") as tmp:
        path = Path(tmp) / "captions.txt"
        path.write_text("\n".join(clean_caption(c) for c in captions), encoding="utf-8")
        cmd = [java(), *_JAVA_OPTS, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", "-encoding", "utf-8", str(path)]
        out = _run(cmd, "PTB tokenizer", timeout)
    lines = out.decode("utf-8").split("\n")[:len(captions)]
    if len(lines) < len(captions):
        raise VLPError(f"PTB tokenizer returned {len(lines)} lines for {len(captions)} captions")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)
            for line in lines]


def _run(cmd: list[str], what: str, timeout: float, cwd: str | None = None) -> bytes:
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise VLPError(f"{what} took longer than {timeout:.0f} s; stopped") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        raise VLPError(f"{what} failed (exit {proc.returncode}): {tail[0]}")
    return proc.stdout


class _Lines:
    """Reads a process's stdout lines on a thread, so a read can time out."""

    def __init__(self, stream):
        self.queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in iter(stream.readline, b""):
            self.queue.put(line)
        self.queue.put(None)

    def get(self, timeout: float) -> str:
        try:
            line = self.queue.get(timeout=timeout)
        except queue.Empty:
            raise VLPError(f"METEOR gave no answer within {timeout:.0f} s; stopped") from None
        if line is None:
            raise VLPError("METEOR stopped unexpectedly")
        return line.decode("utf-8").strip()


def meteor(candidates: Sequence[str], references: Sequence[Sequence[str]],
           timeout: float = 120.0) -> tuple[float, list[float]]:
    """(corpus METEOR, per-image METEOR) from METEOR 1.5, as coco-caption asks for it."""
    jar = package_dir() / "meteor" / "meteor-1.5.jar"
    cmd = [java(), *_JAVA_OPTS, "-Xmx2G", "-jar", str(jar), "-", "-", "-stdio", "-l", "en",
           "-norm"]
    proc = subprocess.Popen(cmd, cwd=str(jar.parent), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        lines = _Lines(proc.stdout)
        stats = []
        for cand, refs in zip(candidates, references):
            # '|||' separates fields in METEOR's protocol, so it cannot appear in a caption.
            fields = [r.replace("|||", "") for r in refs] + [cand.replace("|||", "")]
            _send(proc, "SCORE ||| " + " ||| ".join(f.replace("  ", " ") for f in fields))
            stats.append(lines.get(timeout))
        _send(proc, "EVAL ||| " + " ||| ".join(stats))
        per_image = [float(lines.get(timeout)) for _ in stats]
        return float(lines.get(timeout)), per_image
    finally:
        proc.kill()
        proc.wait()


def _send(proc: subprocess.Popen, line: str) -> None:
    proc.stdin.write((line + "\n").encode("utf-8"))
    proc.stdin.flush()


def spice_missing() -> str | None:
    """Why SPICE cannot run here, or None when it can."""
    lib = package_dir() / "spice" / "lib"
    needed = [lib / "stanford-corenlp-3.6.0.jar", lib / "stanford-corenlp-3.6.0-models.jar"]
    absent = [p.name for p in needed if not p.is_file()]
    if absent:
        return (f"needs {' and '.join(absent)} in {lib} (pycocoevalcap downloads them from "
                "nlp.stanford.edu on first use; copy them there to enable SPICE)")
    return None


def spice(candidates: Sequence[str], references: Sequence[Sequence[str]],
          timeout: float = 3600.0) -> tuple[float, list[float]]:
    """(mean SPICE F-score, per-image SPICE F-score); call only when spice_missing() is None."""
    jar = package_dir() / "spice" / "spice-1.0.jar"
    entries = [{"image_id": i, "test": c, "refs": list(r)}
               for i, (c, r) in enumerate(zip(candidates, references))]
    with tempfile.TemporaryDirectory(prefix="coco_caption-spice-") as tmp:
        src, out = os.path.join(tmp, "in.json"), os.path.join(tmp, "out.json")
        with open(src, "w", encoding="utf-8") as f:
            json.dump(entries, f)
        _run([java(), *_JAVA_OPTS, "-Xmx8G", "-jar", str(jar), src, "-out", out, "-subset",
              "-silent"], "SPICE", timeout, cwd=str(jar.parent))
        with open(out, encoding="utf-8") as f:
            results = {item["image_id"]: item["scores"] for item in json.load(f)}
    per_image = [_float(results[i]["All"]["f"]) for i in range(len(entries))]
    valid = [s for s in per_image if s == s]
    return (sum(valid) / len(valid) if valid else float("nan")), per_image


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
