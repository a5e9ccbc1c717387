"""``report.json`` of the inverting commands (``invkit invert``, ``invkit project``), and the one
way they time an image.

Timing: the seconds from a batch of decoded images to its reconstructions (inversion or
optimisation, then synthesis), CUDA synchronised at both ends, divided by the batch's images.
Model loading, reading and writing files, and one-time setup (the projection's mapping
statistics, reported apart as ``setup_seconds``) are excluded. ``seconds_per_image`` is the
mean over the images that were inverted, also across resumed runs.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

REPORT_FILE = "report.json"
TIMING = ("inversion (encoding or optimisation) + synthesis of each batch, CUDA-synchronised, divided by "
          "its images; model loading, file reading and writing, and setup excluded")


@contextmanager
def batch_timer(device: str | torch.device, images: int):
    """``with batch_timer(device, n) as timing: ...``; afterwards ``timing["per_image"]`` holds
    the block's seconds divided by ``n``."""
    device = torch.device(device)
    timing: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    yield timing
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timing["per_image"] = (time.perf_counter() - start) / max(1, images)


class RunReport:
    """Per-image seconds and losses, skipped files and failed images of one inverting run."""

    def __init__(self, command: str, generator_source: str, G, device: str, inverter: dict[str, Any]):
        self.head = {"command": command, "device": str(device), "inverter": inverter,
                     "generator": {"source": str(generator_source), "fingerprint": G.fingerprint(),
                                   "resolution": G.resolution}}
        self.images: dict[str, dict[str, Any]] = {}
        self.skipped: list[dict[str, str]] = []
        self.failed: dict[str, str] = {}
        self.setup_seconds = 0.0

    def add(self, name: str, seconds: float, losses: dict[str, float] | None = None) -> None:
        self.images[name] = {"seconds": seconds, "losses": dict(losses or {})}

    def skip(self, path: Path, error: str) -> None:
        self.skipped.append({"file": str(path), "error": error})

    def to_dict(self) -> dict[str, Any]:
        secs = [v["seconds"] for v in self.images.values()]
        return {**self.head, "n_images": len(self.images),
                "seconds_per_image": sum(secs) / len(secs) if secs else None,
                "seconds_total": sum(secs), "setup_seconds": self.setup_seconds, "timing": TIMING,
                "images": self.images, "skipped": self.skipped, "failed": self.failed}

    def write(self, path: str | Path) -> Path:
        from .eval import write_report

        return write_report(path, self.to_dict())
