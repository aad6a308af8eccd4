"""A run's metrics as CSV (and TensorBoard when asked), cut back to the resumed step so that a resumed
run's log is the uninterrupted one's."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)


class MetricsLog:
    """CSV files (always) and TensorBoard (when installed and enabled), written by rank 0 only."""

    def __init__(self, directory: Path, enabled: bool, tensorboard: bool, resume_step: int) -> None:
        self.enabled = enabled
        self.directory = directory
        self.writer = None
        if not enabled:
            return
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.csv", "eval.csv"):
            _truncate_csv(directory / name, resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(directory / "tensorboard"), purge_step=resume_step or None)
            except ImportError:
                LOG.warning("tensorboard is not installed (pip install tensorboard); logging to CSV only")

    def write(self, name: str, row: dict[str, Any], step: int, prefix: str) -> None:
        if not self.enabled:
            return
        path = self.directory / name
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            with path.open(newline="") as handle:
                header = next(csv.reader(handle), [])
            if header != list(row):
                new = True  # columns changed (e.g. different losses after a resume): start the file over
        with path.open("w" if new else "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{prefix}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _truncate_csv(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` (a crashed run logged steps that the resumed run will redo)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= step]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)
