"""The main job's time in bfloat16 and float32 on this machine, side by side.

Runs `vlp quickstart --precision P --out OUT/P` for each precision one after the other
(a fresh job each, unless OUT/P already holds finished stages: those are skipped and
their time not counted, so give a new --out for a timing), then prints each stage's time
in both, the totals against the 20-minute budget, and each job's key metrics.

    python bench/quickstart_time.py [--out runs/quickstart_time] [--precisions bf16 fp32]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

BUDGET_S = 20 * 60
ROW = re.compile(r"^(\w+)\s+([\d.]+)s\s*(.*)$")


def run_job(out: Path, precision: str, tiny: bool) -> tuple[dict[str, float], dict[str, str], float]:
    cmd = [sys.executable, "-m", "vlp", "quickstart", "--out", str(out), "--precision", precision]
    cmd += ["--tiny"] if tiny else []
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"vlp quickstart --precision {precision} failed (exit {done.returncode})")
    times, metrics = {}, {}
    for line in done.stdout.splitlines():
        m = ROW.match(line)
        if m and m.group(1) != "stage":
            times[m.group(1)] = float(m.group(2))
            metrics[m.group(1)] = m.group(3)
    print(done.stdout.split("\n\n")[-1], flush=True)
    return times, metrics, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/quickstart_time")
    ap.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    ap.add_argument("--tiny", action="store_true", help="the tiny job: checks the script only")
    args = ap.parse_args()
    jobs = {p: run_job(Path(args.out) / p, p, args.tiny) for p in args.precisions}
    stages = [s for s in next(iter(jobs.values()))[0] if s != "total"]
    print(f"\n{'stage':<10}" + "".join(f"{p:>10}" for p in jobs))
    for stage in stages:
        print(f"{stage:<10}" + "".join(f"{jobs[p][0].get(stage, float('nan')):>9.1f}s"
                                       for p in jobs))
    print(f"{'total':<10}" + "".join(f"{jobs[p][0]['total']:>9.1f}s" for p in jobs))
    print(f"{'wall':<10}" + "".join(f"{jobs[p][2]:>9.1f}s" for p in jobs))
    slowest = max(jobs, key=lambda p: jobs[p][0]["total"])
    total = jobs[slowest][0]["total"]
    print(f"\nslower precision: {slowest}, {total / 60:.1f} min of the {BUDGET_S // 60}-minute "
          f"budget ({total / BUDGET_S:.2f})")
    if len(jobs) == 2:
        a, b = jobs
        print(f"{b} / {a} total: {jobs[b][0]['total'] / jobs[a][0]['total']:.2f}")
    for p in jobs:
        for stage in ("caption", "scst", "vqa"):
            if stage in jobs[p][1]:
                print(f"{p} {stage}: {jobs[p][1][stage]}")


if __name__ == "__main__":
    main()
