"""Shared fixtures: where the reference vectors are, and how their absence is handled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def _vectors_root() -> Path:
    return Path(os.environ.get("INVKIT_VECTORS", REPO.parent / "shared" / "vectors"))


@pytest.fixture(scope="session")
def vectors_root() -> Path:
    """``$INVKIT_VECTORS`` (default ``../shared/vectors`` beside the repository).

    Outside CI a missing folder skips the test with the reason; in CI (``CI=true``) it fails,
    because the equivalence tests are the adapters' proof of correctness.
    """
    root = _vectors_root()
    if not root.is_dir():
        msg = f"reference vectors not found at {root} (set INVKIT_VECTORS)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


def load_reference(root: Path, family: str, part: str) -> dict:
    """``<root>/<family>/public/<family>_public_<part>.pt`` read with ``weights_only=True``."""
    path = root / family / "public" / f"{family}_public_{part}.pt"
    if not path.is_file():
        msg = f"reference file missing: {path}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return torch.load(path, map_location="cpu", weights_only=True)


def pytest_configure(config):
    # The test models are tiny: one thread is faster than two for them, and far faster when
    # the machine is busy (thread hand-offs dominate).
    torch.set_num_threads(int(os.environ.get("INVKIT_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
