"""Training logs: a text log per rank, jsonl metrics and TensorBoard from the main rank."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

METRICS_FILE = "log.jsonl"


def text_logger(output_dir: Path, log_file: str, rank: int) -> logging.Logger:
    """Append-only log per rank (rank 0: log_file; rank k: <stem>.rank<k><suffix>), so
    ranks and reruns never overwrite each other."""
    name = log_file if rank == 0 else f"{Path(log_file).stem}.rank{rank}{Path(log_file).suffix}"
    logger = logging.getLogger(f"vlp.train.rank{rank}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    handler = logging.FileHandler(Path(output_dir) / name, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s rank%(rank)s %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(_RankFilter(rank))
    logger.addHandler(handler)
    return logger


class _RankFilter(logging.Filter):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record):
        record.rank = self.rank
        return True


class MetricsLog:
    """jsonl lines and TensorBoard scalars; a no-op on ranks other than the main one."""

    def __init__(self, output_dir: Path, tb_dir: Path | None, enabled: bool):
        self.enabled = enabled
        self.path = Path(output_dir) / METRICS_FILE
        self.tb = None
        if enabled and tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(tb_dir))

    def drop_after(self, step: int) -> None:
        """Forget lines past `step`: a resumed run logs those steps again."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, float) and math.isfinite(v) else v)
                 for k, v in values.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(output_dir: Path) -> list[dict]:
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
