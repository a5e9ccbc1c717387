"""What ``invkit ui`` serves: the models, directions, samples and preprocessing named on its
command line, found the way every other command finds them.

* No ``--generator`` / ``--encoder``: the models a recipe ships (``toy`` by default, the demo's),
  found through the plugin registry (``pretrained``), with its ``directions()`` and
  ``samples(n)`` when the registry entry has them (docs/plugins.md).
* ``--directions DIR``: every direction file in DIR. Without it, the recipe's directions when
  they belong to the generator, else SeFa directions computed on the spot by the registered
  ``sefa`` editor, each with the default strength of ``invkit directions``.
* The encoder's recipe (``--recipe``, the recipe ``-e`` names, or a training run's
  ``recipe.json``) decides the preprocessing of uploads: FFHQ alignment for face recipes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from .. import plugins
from ..direction import Direction
from ..editing import fill_strengths, mapped_codes
from ..recipe import Preprocess, Recipe, get_recipe
from .session import MAX_PIXELS, MAX_SLIDERS, Session

#: The recipe whose models ``invkit ui`` serves when none are named.
DEFAULT_RECIPE = "toy"
#: Sample images taken from a recipe that offers them.
N_SAMPLES = 8
#: SeFa directions computed when no directions are given.
SEFA_TOP = 5


def load_session(generator: str | os.PathLike | None = None, encoder: str | os.PathLike | None = None,
                 directions: str | os.PathLike | None = None, recipe: str | None = None,
                 align: Literal["auto", "ffhq", "none"] = "auto", max_pixels: int = MAX_PIXELS,
                 device: str = "cpu", log: Callable[[str], None] = print) -> Session:
    """A :class:`Session` for the command line's choices (module docstring).

    Args:
        generator, encoder: anything ``-g`` / ``-e`` take elsewhere (paths, zoo names, recipe
            names, training runs); both or neither (then the models of ``recipe``, default
            :data:`DEFAULT_RECIPE`).
        directions: a folder of direction files (``.safetensors``).
        recipe: the encoder's recipe (preprocessing, samples, directions); default: the recipe
            ``encoder`` names or the run folder it comes from, if any.
        align: "auto" (as the recipe says; none without a recipe), "ffhq" or "none".
        max_pixels: the pixel limit of uploads.

    Raises:
        ValueError, FileNotFoundError, CheckpointError: one line (the command prints it).
    """
    from ..fs_encoder import load_encoder
    from ..loading import load_generator

    if (generator is None) != (encoder is None):
        raise ValueError("give both --generator and --encoder, or neither (the models of a recipe, default "
                         f"{DEFAULT_RECIPE!r})")
    if generator is None:
        recipe = recipe or DEFAULT_RECIPE
        generator = encoder = recipe
    recipe_name, config = _recipe_of(encoder, recipe)
    entry = plugins.recipes().get(recipe_name).obj if recipe_name in plugins.recipes() else None

    log(f"loading generator {generator} and encoder {encoder}")
    G = load_generator(generator, device=device)
    E = load_encoder(encoder, G, device=device)
    found = _directions(G, directions, entry, log)
    samples = list(getattr(entry, "samples", lambda n: [])(N_SAMPLES)) if entry is not None else []
    preprocess = config.preprocess if config is not None else Preprocess()
    if align != "auto":
        preprocess = Preprocess(**{**vars(preprocess), "align": align})
    where = f"recipe {recipe_name}" if recipe_name else "no recipe"
    description = (f"generator {Path(str(generator)).name} ({G.resolution} px, fingerprint {G.fingerprint()}), "
                   f"encoder {Path(str(encoder)).name} (K = {E.k}), {where}; uploads: "
                   + ("FFHQ-aligned" if preprocess.align == "ffhq" else "centre-cropped, not aligned"))
    return Session(G, E, found, samples, preprocess, max_pixels, description=description)


def _recipe_of(encoder: str | os.PathLike, recipe: str | None) -> tuple[str | None, Recipe | None]:
    """``(registered recipe name or None, Recipe config or None)`` of the encoder."""
    if recipe is not None:
        return (recipe if recipe in plugins.recipes() else None), get_recipe(recipe)
    if str(encoder) in plugins.recipes():
        return str(encoder), get_recipe(str(encoder))
    run_recipe = Path(encoder) / "recipe.json"  # a training run folder records its recipe
    if run_recipe.is_file():
        config = get_recipe(run_recipe)
        return (config.name if config.name in plugins.recipes() else None), config
    return None, None


def _directions(G, folder: str | os.PathLike | None, entry: Any, log: Callable[[str], None]) -> list[Direction]:
    """The page's directions (module docstring), each with a strength."""
    if folder is not None:
        found = read_directions(folder)
        fill_strengths(found, mapped_codes(G))
        log(f"{len(found)} directions from {folder}")
        return found
    offered = list(getattr(entry, "directions", lambda: [])()) if entry is not None else []
    if offered and all(d.generator_fingerprint == G.fingerprint() for d in offered):
        log(f"{len(offered)} directions shipped with the recipe")
        return offered[:MAX_SLIDERS]
    editor = plugins.editors().get("sefa").obj()
    found = editor.fit(generator=G, top=SEFA_TOP, space="w+")
    fill_strengths(found, mapped_codes(G))
    log(f"no directions given: {len(found)} SeFa directions computed from the generator's weights")
    return found


def read_directions(folder: str | os.PathLike) -> list[Direction]:
    """Every direction file (``*.safetensors``) in ``folder``, in file-name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder of direction files")
    # Direction.load refuses anything else (codes, encoders, corrupt files) naming the file.
    found = [Direction.load(path) for path in sorted(folder.glob("*.safetensors"))]
    if not found:
        raise FileNotFoundError(f"{folder}: no direction files (*.safetensors)")
    if len(found) > MAX_SLIDERS:
        raise ValueError(f"{folder}: {len(found)} directions; the page shows at most {MAX_SLIDERS}")
    return found
