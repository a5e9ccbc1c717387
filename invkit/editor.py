"""The `Editor` interface: something that produces editing `Direction`s for a generator.

How a direction is *applied* is the same for every editor (paper Eq. 1, :func:`invkit.edit`);
editors differ in how they find directions (SeFa from weights, InterFaceGAN from labelled
codes, GANSpace from PCA of sampled w, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from .direction import Direction


class Editor(ABC):
    """Produces directions. ``name`` is the registry name; ``fit`` takes editor-specific inputs
    (a generator, codes and labels, ...) as keyword arguments and returns directions that carry
    the generator's fingerprint."""

    name: str = ""

    @abstractmethod
    def fit(self, **inputs: Any) -> list[Direction]:
        """Compute directions from the editor's inputs."""
