"""invkit: style-based GAN inversion and editing around the Feature-Style encoder.

The public API::

    G = invkit.load_generator("ffhq.pkl")              # any adapter, found by plugins
    ws = G.mapping(z, truncation_psi=0.7)             # [B, num_ws, w_dim]
    img = G.synthesize(ws)                            # [B, 3, R, R] in ~[-1, 1]
    F = G.features_at(5, ws)                          # layer-5 activation
    img = G.synthesize_from(5, F, ws)                 # the FS reconstruction G(w, F)
    res = invkit.project(G, images, space="w+f", steps=500, perceptual=d)   # optimisation baseline
"""

from __future__ import annotations

from . import plugins  # noqa: F401  (invkit.plugins.editors(), ... after import invkit)
from .plugins import list_editors, list_generators, list_recipes

__version__ = "0.1.0"

# Every name whose module imports torch is imported on first use, so ``import invkit`` (and
# ``invkit --version``) stays fast; docs/performance.md has the numbers.
_LAZY = {
    "Direction": "invkit.direction",
    "Editor": "invkit.editor",
    "EditorInput": "invkit.editor",
    "Encoder": "invkit.encoder",
    "Generator": "invkit.generator",
    "LayerInfo": "invkit.generator",
    "StyleAffine": "invkit.generator",
    "Inversion": "invkit.inversion",
    "load_generator": "invkit.loading",
    "save_generator": "invkit.loading",
    "load_encoder": "invkit.fs_encoder",
    "FeatureStyleEncoder": "invkit.fs_encoder",
    "save_encoder": "invkit.fs_encoder",
    "FeatureStyleLoss": "invkit.losses",
    "LossWeights": "invkit.losses",
    "edit": "invkit.editing",
    "mix": "invkit.editing",
    "edit_codes": "invkit.editing",
    "edit_strip": "invkit.editing",
    "Recipe": "invkit.recipe",
    "get_recipe": "invkit.recipe",
    "train": "invkit.training",
    "project": "invkit.projection",
    "ProjectionSettings": "invkit.projection",
    # invkit.exporter, not invkit.export: importing a submodule named like the function would
    # rebind invkit.export to the module.
    "export": "invkit.exporter",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'invkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "list_editors",
    "list_generators",
    "list_recipes",
    "__version__",
    *_LAZY,
]
