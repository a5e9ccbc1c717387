"""The `Editor` interface: something that produces editing `Direction`s for a generator.

How a direction is *applied* is the same for every editor (paper Eq. 1, :func:`invkit.edit`);
editors differ in how they find directions (SeFa from weights, InterFaceGAN from labelled
codes, GANSpace from PCA of sampled w, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from .direction import Direction

#: What an :class:`EditorInput` can be, and what ``invkit directions NAME`` passes to ``fit``.
INPUT_KINDS = {
    "generator": "--NAME/-g CHECKPOINT (with --adapter, --device): a loaded invkit.Generator",
    "codes": "--NAME FILE (codes.safetensors from `invkit invert`): an invkit.Inversion",
    "labels": "--NAME CSV with --attribute COLUMN: list[float], one per code of the editor's "
              "'codes' input (NaN where unlabelled)",
    "directions": "--NAME FILE [FILE ...]: list[invkit.Direction]",
    "rows": "--NAME 0-3,7: list[int] of ws rows (None when not given)",
    "int": "--NAME N: int",
    "float": "--NAME X: float",
    "str": "--NAME TEXT: str (restricted to `choices` when given)",
    "flag": "--NAME: True when given, else the default (False)",
}


@dataclass(frozen=True)
class EditorInput:
    """One keyword argument of :meth:`Editor.fit`, as the command line offers it.

    ``invkit directions NAME`` builds its options from the editor's ``inputs``: the option is
    ``--`` + ``name`` with ``_`` -> ``-``, the value is converted according to ``kind`` (see
    :data:`INPUT_KINDS`), and an option that is not given is not passed, so ``fit``'s own
    default applies (``default`` is only shown in the help).

    Attributes:
        name: the ``fit`` keyword.
        kind: one of :data:`INPUT_KINDS`.
        help: one line for ``--help``.
        required: the command refuses to run without it.
        default: shown in the help.
        choices: allowed values (kind "str").
    """

    name: str
    kind: str = "str"
    help: str = ""
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"editor input {self.name!r}: unknown kind {self.kind!r} "
                             f"(one of {', '.join(INPUT_KINDS)})")


class Editor(ABC):
    """Produces directions. ``name`` is the registry name; ``fit`` takes editor-specific inputs
    (a generator, codes and labels, ...) as keyword arguments and returns directions that carry
    the generator's fingerprint. ``inputs`` declares those keywords for the command line
    (``invkit directions NAME``); docs/plugins.md has an example."""

    name: str = ""
    inputs: tuple[EditorInput, ...] = ()

    @abstractmethod
    def fit(self, **inputs: Any) -> list[Direction]:
        """Compute directions from the editor's inputs."""
