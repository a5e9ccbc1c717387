"""The demo's editing directions: fit, calibrate and measure them with the attribute net.

Every direction file the demo ships records a calibrated ``strength`` (``Direction.strength``),
measured on *training* seeds with the full Feature-Style edit (paper Eq. 1), never on the
held-out seeds the demo reports on:

* the glasses toggle: the smallest |alpha| that flips glasses on ``toggle_target`` of the
  training images, as judged by the attribute net;
* InterFaceGAN attribute directions: the |alpha| that moves their attribute by ``attribute_target``
  of its range on average (both signs together);
* SeFa directions (no attribute): two standard deviations of the encoder's codes along them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..direction import Direction
from ..editing import edit, spread_strength
from ..generator import Generator
from ..inversion import Inversion
from . import toy_attributes, toy_domain

DIRECTION_PREFIX = "toy_direction_"
#: InterFaceGAN attributes shipped as demo directions (binary first).
EDIT_ATTRIBUTES = ("glasses", "smile", "yaw", "hair")
#: Attributes the glasses toggle is made orthogonal to (InterFaceGAN's conditional manipulation).
CONDITION_ATTRIBUTES = ("smile", "yaw", "hair", "x", "y", "size")
#: The direction the demo toggles glasses with.
TOGGLE_DIRECTION = "glasses_cond_" + "_".join(CONDITION_ATTRIBUTES)
#: Value ranges that put attribute changes on one scale (hues live on a circle of length 1).
ATTRIBUTE_RANGES = {"glasses": 1.0, "smile": 2.0, "yaw": 2.0, "x": 2.0, "y": 2.0, "size": 1.0, "hair": 1.0,
                    "skin_hue": 0.5, "bg_hue": 0.5}
#: Training seeds used for calibration (away from the encoder's 0..19999 and the held-out range).
CALIBRATION_FIRST_SEED = 5_000_000
#: Candidate strengths tried by the calibration, in order.
STRENGTH_GRID = tuple(float(a) for a in np.round(np.geomspace(0.25, 48, 48), 3))


@torch.no_grad()
def invert_in_batches(encoder, images: torch.Tensor, batch: int = 64) -> Inversion:
    """:meth:`Encoder.invert` of ``images [N, 3, 64, 64]`` (in [-1, 1]) ``batch`` at a time."""
    return Inversion.cat([encoder.invert(images[i:i + batch], [str(j) for j in range(i, min(i + batch, len(images)))])
                          for i in range(0, len(images), batch)])


def rendered(n: int, first_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [n, 3, 64, 64] in [-1, 1], attributes [n, A])`` of seeds ``first_seed ..``."""
    ds = toy_domain.ToyFaces(n, first_seed)
    items = [ds[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), torch.stack([a for _, a in items])


def predict(net: toy_attributes.AttributeNet, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The attribute net's readings of ``images`` (clamped to [-1, 1]), one ``[N]`` per name."""
    return net.predict(images.clamp(-1, 1))


def attribute_change(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean absolute change of every predicted attribute, as a fraction of its range (hues circular)."""
    out = {}
    for name, rng in ATTRIBUTE_RANGES.items():
        diff = (after[name] - before[name]).abs()
        if name.endswith("hue"):
            diff = torch.minimum(diff, 1 - diff)
        out[name] = float(diff.mean() / rng)
    return out


@torch.no_grad()
def reconstruction_readings(G: Generator, inversion: Inversion, net: toy_attributes.AttributeNet) -> dict[str, torch.Tensor]:
    """The attribute net's readings of the reconstructions ``G(w, F)`` (what edits are measured from)."""
    return predict(net, G.synthesize_from(inversion.k, inversion.features, inversion.ws))


@torch.no_grad()
def measure_toggle(G: Generator, inversion: Inversion, direction: Direction, net: toy_attributes.AttributeNet,
                   strength: float, before: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Add glasses where the reconstruction has none, remove them where it has some (|alpha| =
    ``strength``); the flip rate and how far every attribute moved, judged by the attribute net.
    ``edited`` holds the images ``[N, 3, 64, 64]``. ``before``: :func:`reconstruction_readings`,
    when the caller already has them."""
    before = reconstruction_readings(G, inversion, net) if before is None else before
    has = before["glasses"] > 0.5
    edited = edit(G, inversion, direction, torch.where(has, -strength, strength).float())
    after = predict(net, edited)
    change = attribute_change(before, after)
    others = {k: v for k, v in change.items() if k != "glasses"}
    return {"strength": strength, "flip_rate": float(((after["glasses"] > 0.5) != has).float().mean()),
            "glasses_change": change["glasses"], "max_other_change": max(others.values()),
            "other_changes": others, "edited": edited}


@torch.no_grad()
def measure_strip(G: Generator, inversion: Inversion, direction: Direction, net: toy_attributes.AttributeNet,
                  strength: float, before: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """How far each attribute moves between alpha = -strength and +strength (mean of the two
    half-moves from the reconstruction, as a fraction of its range; ``before`` as in
    :func:`measure_toggle`)."""
    rec = reconstruction_readings(G, inversion, net) if before is None else before
    plus = attribute_change(rec, predict(net, edit(G, inversion, direction, strength)))
    minus = attribute_change(rec, predict(net, edit(G, inversion, direction, -strength)))
    return {k: (plus[k] + minus[k]) / 2 for k in plus}


def calibrate_toggle(G: Generator, inversion: Inversion, direction: Direction, net: toy_attributes.AttributeNet,
                     target: float) -> tuple[float, float]:
    """``(strength, flip rate)``: the smallest strength of :data:`STRENGTH_GRID` whose toggle flips
    ``target`` of the images, or the one that flips most when none does."""
    rates, before = {}, reconstruction_readings(G, inversion, net)
    for s in STRENGTH_GRID:
        rates[s] = measure_toggle(G, inversion, direction, net, s, before)["flip_rate"]
        if rates[s] >= target:
            return s, rates[s]
    best = max(rates, key=rates.get)
    return best, rates[best]


def calibrate_attribute(G: Generator, inversion: Inversion, direction: Direction,
                        net: toy_attributes.AttributeNet, target: float) -> tuple[float, float]:
    """``(strength, move)``: the smallest strength of :data:`STRENGTH_GRID` at which
    ``direction.attribute`` moves by ``target`` of its range on average (the largest tried when
    none does), and the move measured there."""
    moved, before = 0.0, reconstruction_readings(G, inversion, net)
    for s in STRENGTH_GRID:
        moved = measure_strip(G, inversion, direction, net, s, before)[direction.attribute]
        if moved >= target:
            return s, moved
    return STRENGTH_GRID[-1], moved


@torch.no_grad()
def labelled_samples(G: Generator, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """InterFaceGAN's training set: ``(w [n, w_dim], attributes [n, A])``, the mapping codes of
    ``n`` latents drawn with ``seed`` and the renderer attributes those latents stand for in a
    generator fit by :mod:`.toy_fit` (columns as ``toy_domain.ATTRIBUTE_NAMES``)."""
    from .toy_fit import latent_to_attributes

    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    return G.mapping(z)[:, 0], toy_domain.attributes_to_tensor(latent_to_attributes(z))


def fit_directions(G: Generator, encoder, net: toy_attributes.AttributeNet, n: int = 2000,
                   n_boundary: int = 4000, n_calibrate: int = 256, toggle_target: float = 0.98,
                   attribute_target: float = 0.3, log: Callable[[str], None] = print) -> list[Direction]:
    """InterFaceGAN directions for :data:`EDIT_ATTRIBUTES`, the glasses direction conditioned on
    :data:`CONDITION_ATTRIBUTES` (:data:`TOGGLE_DIRECTION`), and the top 5 SeFa directions;
    each with its calibrated ``strength`` (module docstring).

    The boundaries follow InterFaceGAN's own protocol, a linear SVM in W on ``n_boundary`` of the
    generator's mapping codes (:func:`labelled_samples`), labelled with the attributes their
    latents stand for (glasses: every code; continuous attributes: the clearest 10 % at each
    end). Labelling the same codes with the attribute net's readings of ``G(w)`` gave a glasses
    toggle that flipped 90 % of the calibration faces instead of 97 %; boundaries fit on the
    encoder's codes of renders (the previous release) flipped at most 85 %. The encoder's codes of
    ``n`` rendered training images give the SeFa strengths.
    """
    from .. import plugins
    from ..editors.interfacegan import condition

    sample_ws, labels = labelled_samples(G, n_boundary)
    interfacegan = plugins.editors().get("interfacegan").obj()
    fitted: dict[str, Direction] = {}
    for name in dict.fromkeys(EDIT_ATTRIBUTES + CONDITION_ATTRIBUTES):
        col = labels[:, toy_domain.ATTRIBUTE_NAMES.index(name)]
        ratio = 0.5 if name in toy_domain.BINARY_ATTRIBUTES else 0.1
        (d,) = interfacegan.fit(sample_ws, col, name, generator_fingerprint=G.fingerprint(), space="w", ratio=ratio)
        log(f"interfacegan {name}: validation accuracy {d.stats['val_accuracy']:.3f}")
        fitted[name] = d
    toggle = condition(fitted["glasses"], [fitted[a] for a in CONDITION_ATTRIBUTES])
    sefa = plugins.editors().get("sefa").obj().fit(G, top=5, space="w+")

    ws = invert_in_batches(encoder, rendered(n, 0)[0]).ws
    cal_images, _ = rendered(n_calibrate, CALIBRATION_FIRST_SEED)
    cal = invert_in_batches(encoder, cal_images)
    out = [fitted[a] for a in EDIT_ATTRIBUTES] + [toggle] + sefa
    for d in out:
        if d.editor == "sefa":
            d.strength = spread_strength(d, ws)
            d.stats["strength_rule"] = "2 std of the encoder's training codes along the direction"
        elif d.attribute in toy_domain.BINARY_ATTRIBUTES:
            d.strength, rate = calibrate_toggle(G, cal, d, net, toggle_target)
            d.stats["strength_rule"] = (f"smallest |alpha| toggling {toggle_target:.0%} of {n_calibrate} training "
                                        f"images, else the one toggling most; toggled {rate:.1%}")
            d.stats["calibration_flip_rate"] = rate
        else:
            d.strength, moved = calibrate_attribute(G, cal, d, net, attribute_target)
            d.stats["strength_rule"] = (f"smallest alpha moving {d.attribute} by {attribute_target:.0%} of its range "
                                        f"on {n_calibrate} training images, else the largest tried; moved {moved:.1%}")
            d.stats["calibration_move"] = moved
        log(f"{d.name}: strength {d.strength:g} ({d.stats['strength_rule']})")
    return out


def write_directions(generator: str | os.PathLike, encoder_path: str | os.PathLike, out: str | os.PathLike,
                     attribute_net: str | os.PathLike | None = None, n: int = 2000,
                     log: Callable[[str], None] = print) -> list[Path]:
    """Fit the demo's directions (:func:`fit_directions`) and write them as
    ``out/toy_direction_<name>.safetensors`` (older direction files there are removed: they
    belong to another generator and would be refused)."""
    from ..fs_encoder import load_encoder
    from ..loading import load_generator
    from .toy import load_attribute_net

    G = load_generator(generator)
    encoder = load_encoder(encoder_path, generator=G)
    directions = fit_directions(G, encoder, load_attribute_net(attribute_net), n, log=log)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{DIRECTION_PREFIX}*.safetensors"):
        old.unlink()
    return [d.save(out / f"{DIRECTION_PREFIX}{d.name}.safetensors") for d in directions]


def load_directions(folder: str | os.PathLike) -> dict[str, Direction]:
    """Every ``toy_direction_*.safetensors`` in ``folder``, by direction name."""
    found = {}
    for path in sorted(Path(folder).glob(f"{DIRECTION_PREFIX}*.safetensors")):
        d = Direction.load(path)
        found[d.name] = d
    if not found:
        raise FileNotFoundError(f"{folder}: no {DIRECTION_PREFIX}*.safetensors direction files")
    return found
