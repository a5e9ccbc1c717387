"""The ``toy`` recipe and ``invkit demo``: the whole Feature-Style method on a domain that ships
with invkit.

Everything here runs offline on a CPU. The shipped assets (``recipes/assets``) are:

=================================== ============================================================
``toy_generator.safetensors``       a StyleGAN2 (64 px) trained on :mod:`.toy_domain` by
                                    :mod:`.toy_gan`
``toy_encoder.safetensors``         a Feature-Style encoder for it, trained with the training
                                    engine (:func:`train_encoder`, recipe ``toy``)
``toy_attributes.safetensors``      :class:`.toy_attributes.AttributeNet`, the attribute reader
                                    (judges edits; its features give the "toy-LPIPS" distance)
``toy_direction_*.safetensors``     InterFaceGAN directions fit on the encoder's own W+ codes of
                                    rendered images with their true labels, and SeFa directions
=================================== ============================================================

``docs/demo.md`` gives the commands that produce each file.

Perceptual distance: LPIPS needs ImageNet AlexNet/VGG weights that cannot be downloaded here, so
both the training objective's perceptual term and the demo's perceptual metric use
:class:`ToyPerceptual` ("toy-LPIPS": the LPIPS formula on the attribute net's features, uniform
channel weights). It is labelled as such wherever it is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..direction import Direction
from ..generator import Generator
from ..hookspecs import hookimpl
from ..io.images import make_grid, save_image
from ..recipe import EncoderSpec, Recipe, Schedule
from . import toy_attributes, toy_domain

GENERATOR_FILE = "toy_generator.safetensors"
ENCODER_FILE = "toy_encoder.safetensors"
ATTRIBUTE_NET_FILE = "toy_attributes.safetensors"
DIRECTION_PREFIX = "toy_direction_"
#: The generator layer F replaces: ``b8.conv1``, the second conv at 8x8 (64 x 8 x 8). At 64 px this
#: keeps F coarse (1/8 of the image side), leaving the finer layers to the W+ code and the edits.
TOY_K = 3
#: InterFaceGAN attributes fit for the demo (binary first).
EDIT_ATTRIBUTES = ("glasses", "smile", "yaw", "hair")
#: The direction the demo toggles glasses with: InterFaceGAN's conditional manipulation, the
#: glasses boundary made orthogonal to the other three (the plain one drags hair along).
TOGGLE_DIRECTION = "glasses_cond_smile_yaw_hair"
#: |alpha| used when a direction file records no calibrated toggle strength.
DEFAULT_TOGGLE_STRENGTH = 4.0
#: Value ranges used to put attribute changes on one scale (hues are on a circle of length 1,
#: so at most 0.5 apart).
ATTRIBUTE_RANGES = {"glasses": 1.0, "smile": 2.0, "yaw": 2.0, "x": 2.0, "y": 2.0, "size": 1.0, "hair": 1.0,
                    "skin_hue": 0.5, "bg_hue": 0.5}


# ---- assets -------------------------------------------------------------------------------------
def assets_dir() -> Path:
    """The folder of the shipped toy assets (inside the installed package)."""
    return Path(str(resources.files("invkit.recipes").joinpath("assets")))


def asset(name: str) -> Path:
    """A shipped asset's path; a clear error if the package was installed without it."""
    path = assets_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: toy asset missing (reinstall invkit, or rebuild it: see docs/demo.md)")
    return path


# ---- the recipe ---------------------------------------------------------------------------------
def toy_recipe() -> Recipe:
    """The ``toy`` recipe: a small IResNet encoder at 64 px for the shipped toy generator.

    The objective is the paper's (MSE on synthetic images for G(w), perceptual term on both
    reconstructions, feature term), with the perceptual network swapped for :class:`ToyPerceptual`
    by :func:`toy_loss` (pass ``loss=toy_loss`` to the engine, as :func:`train_encoder` does).
    """
    from ..losses import LossWeights

    return Recipe(
        name="toy",
        generator=str(assets_dir() / GENERATOR_FILE),
        k=TOY_K,
        description="procedural cartoon faces, 64 px StyleGAN2 shipped with invkit (the demo domain)",
        loss=LossWeights(mse=1.0, lpips=0.2, feature=0.01, identity=0.0, parsing=0.0),
        schedule=Schedule(batch_real=4, batch_synthetic=4, epochs=3, iters_per_epoch=800, lr=5e-4,
                          lr_drop_epochs=1, lr_drop_factor=10.0, optimizer="ranger"),
        encoder=EncoderSpec(depths=(1, 1, 1, 1), widths=(32, 48, 64, 96), stem_width=16, input_size=64,
                            pool_size=3),
        blend_warmup_steps=200,
        checkpoint_every=250,
        sample_every=250,
        log_every=25,
        keep_last=2,
        num_samples=8,
        seed=0,
        num_workers=0,
    )


class ToyPerceptual(nn.Module):
    """"toy-LPIPS": the LPIPS formula on :class:`toy_attributes.AttributeNet` features.

    Drop-in for :class:`invkit.lpips.LPIPS` in :class:`invkit.losses.FeatureStyleLoss`:
    ``forward(x, y) -> [B]`` for images in [-1, 1], frozen, ``min_size`` 16 px.
    """

    min_size = 16

    def __init__(self, net: toy_attributes.AttributeNet):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> ToyPerceptual:
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"toy-LPIPS needs equal shapes, got {list(x.shape)} and {list(y.shape)}")
        if x.shape[-1] != toy_domain.RESOLUTION:  # the net reads 64 px; the pyramid levels are brought back
            size = (toy_domain.RESOLUTION, toy_domain.RESOLUTION)
            x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
            y = nn.functional.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return toy_attributes.feature_distance(self.net, x, y)


def load_attribute_net(path: str | os.PathLike | None = None) -> toy_attributes.AttributeNet:
    return toy_attributes.load_attribute_net(path or asset(ATTRIBUTE_NET_FILE))


def toy_loss(generator: Generator, recipe: Recipe, attribute_net: str | os.PathLike | None = None) -> nn.Module:
    """The paper's objective with toy-LPIPS as its perceptual network (2 pyramid levels: 64, 32 px)."""
    from ..losses import FeatureStyleLoss

    return FeatureStyleLoss(ToyPerceptual(load_attribute_net(attribute_net)), recipe.loss, lpips_scales=2)


def train_encoder(out: str | os.PathLike, generator: str | os.PathLike | None = None,
                  attribute_net: str | os.PathLike | None = None, max_steps: int | None = None,
                  overrides: list[str] | None = None, progress: bool = True):
    """Train the toy encoder with the training engine (resumes a run in ``out``).

    Real images are the rendered training seeds ``0 .. 19999`` (never the held-out ones).
    Returns the engine's ``TrainResult``; the encoder is exported to ``out/encoder.safetensors``.
    """
    from ..loading import load_generator
    from ..training import train

    recipe = toy_recipe()
    if generator is not None:
        recipe = recipe.with_overrides([f"generator={generator}"])
    if overrides:
        recipe = recipe.with_overrides(overrides)
    G = load_generator(recipe.generator)
    data = toy_domain.ToyFaces(20_000, 0, cache=True, with_attributes=False)
    return train(recipe, data, G, out, loss=lambda g, r: toy_loss(g, r, attribute_net), device="cpu",
                 progress=progress, max_steps=max_steps, report=lambda m: print(m, flush=True))


# ---- directions ---------------------------------------------------------------------------------
@torch.no_grad()
def encode_in_batches(encoder, images: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ws [N, num_ws, w_dim], F [N, C, H, W])`` for ``images [N, 3, 64, 64]``."""
    encoder.eval()
    ws, feats = [], []
    for i in range(0, len(images), batch):
        w, f = encoder.encode(images[i:i + batch])
        ws.append(w)
        feats.append(f)
    return torch.cat(ws), torch.cat(feats)


def fit_directions(G: Generator, encoder, n: int = 2000, seed_offset: int = 0, log=print) -> list[Direction]:
    """InterFaceGAN directions for :data:`EDIT_ATTRIBUTES` on the encoder's W+ codes of ``n``
    rendered training images (true labels from the renderer), the glasses direction conditioned
    on the other three (:data:`TOGGLE_DIRECTION`), and the top 5 SeFa directions.

    Binary labels use every code; continuous ones the InterFaceGAN protocol (the clearest 10 %
    at each end). The demo still measures how much every other attribute moves under the
    conditioned edit (conditioning on three boundaries does not pin the other five attributes).
    """
    from .. import plugins
    from ..editors.interfacegan import condition

    ds = toy_domain.ToyFaces(n, seed_offset)
    items = [ds[i] for i in range(n)]
    images = torch.stack([x for x, _ in items])
    labels = torch.stack([a for _, a in items])
    ws, _ = encode_in_batches(encoder, images)
    interfacegan = plugins.editors().get("interfacegan").obj()
    out = []
    for name in EDIT_ATTRIBUTES:
        col = labels[:, toy_domain.ATTRIBUTE_NAMES.index(name)]
        ratio = 0.5 if name in toy_domain.BINARY_ATTRIBUTES else 0.1
        (d,) = interfacegan.fit(ws, col, name, generator_fingerprint=G.fingerprint(), space="w+", ratio=ratio)
        log(f"interfacegan {name}: validation accuracy {d.stats['val_accuracy']:.3f}")
        out.append(d)
    out.append(condition(out[0], out[1:]))
    sefa = plugins.editors().get("sefa").obj()
    out.extend(sefa.fit(G, top=5, space="w+"))
    return out


def load_directions(folder: Path | None = None) -> dict[str, Direction]:
    folder = folder or assets_dir()
    found = {}
    for path in sorted(folder.glob(f"{DIRECTION_PREFIX}*.safetensors")):
        d = Direction.load(path)
        found[d.name] = d
    if not found:
        raise FileNotFoundError(f"{folder}: no {DIRECTION_PREFIX}*.safetensors direction files")
    return found


# ---- the demo -----------------------------------------------------------------------------------
def _predict(net: toy_attributes.AttributeNet, images: torch.Tensor) -> dict[str, torch.Tensor]:
    return net.predict(images.clamp(-1, 1))


def _attribute_change(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean absolute change of every predicted attribute, divided by its range (hues circular)."""
    out = {}
    for name, rng in ATTRIBUTE_RANGES.items():
        diff = (after[name] - before[name]).abs()
        if name.endswith("hue"):
            diff = torch.minimum(diff, 1 - diff)
        out[name] = float(diff.mean() / rng)
    return out


def measure_glasses_edit(G: Generator, inversion, direction: Direction, net: toy_attributes.AttributeNet,
                         strength: float) -> dict[str, Any]:
    """Add glasses where the reconstruction has none and remove them where it has some; report
    the flip rate (judged by the attribute net) and how far every other attribute moved."""
    from ..editing import edit

    rec = G.synthesize_from(inversion.k, inversion.features, inversion.ws)
    before = _predict(net, rec)
    has = before["glasses"] > 0.5
    alpha = torch.where(has, -strength, strength).float()
    edited = edit(G, inversion, direction, alpha)
    after = _predict(net, edited)
    flipped = (after["glasses"] > 0.5) != has
    change = _attribute_change(before, after)
    others = {k: v for k, v in change.items() if k != "glasses"}
    return {"strength": strength, "flip_rate": float(flipped.float().mean()),
            "glasses_change": change["glasses"], "max_other_change": max(others.values()),
            "other_changes": others, "edited": edited}


def _html_table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


@torch.no_grad()
def run_demo(out_dir: str | os.PathLike = "invkit-demo", n_eval: int = 64, n_show: int = 6,
             log: Callable[[str], None] = print, assets: Path | None = None) -> dict[str, Any]:
    """Invert held-out procedural images with the shipped models, edit and mix them, and write
    ``out_dir/report.html`` with its PNGs. Returns the measured numbers (also in
    ``out_dir/metrics.json``).

    Args:
        out_dir: where the report goes (created; existing files of the same names are replaced
            atomically, nothing else is touched).
        n_eval: held-out images for the metrics table.
        n_show: images shown in the pictures.
        assets: a folder with the toy assets (default: the shipped ones).
    """
    from ..editing import edit_strip, mix
    from ..fs_encoder import load_encoder
    from ..inversion import Inversion
    from ..loading import load_generator

    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folder = assets or assets_dir()

    def path(name: str) -> Path:
        p = folder / name
        if not p.is_file():
            raise FileNotFoundError(f"{p}: toy asset missing (see docs/demo.md to rebuild it)")
        return p

    G = load_generator(path(GENERATOR_FILE))
    encoder = load_encoder(path(ENCODER_FILE), generator=G)
    net = load_attribute_net(path(ATTRIBUTE_NET_FILE))
    directions = load_directions(folder)
    perceptual = ToyPerceptual(net)
    log(f"loaded generator {G.fingerprint()} ({G.resolution} px, K = {encoder.k}), encoder, "
        f"{len(directions)} directions from {folder}")

    # Held-out images: rendered by the procedural renderer (never generated by G), seeds the
    # generator, encoder and attribute net never saw.
    held = toy_domain.held_out(n_eval)
    images = torch.stack([held[i][0] for i in range(n_eval)])
    truth = torch.stack([held[i][1] for i in range(n_eval)])
    ws, feats = encode_in_batches(encoder, images)
    inv = Inversion(ws, feats, encoder.k, G.fingerprint())
    rec_w = G.synthesize(ws)
    rec_wf = G.synthesize_from(encoder.k, feats, ws)

    def metrics(rec: torch.Tensor) -> dict[str, float]:
        return {"mse": float((rec.clamp(-1, 1) - images).square().mean()),
                "toy_lpips": float(perceptual(rec.clamp(-1, 1), images).mean())}

    m_w, m_wf = metrics(rec_w), metrics(rec_wf)
    results: dict[str, Any] = {"n_eval": n_eval, "k": encoder.k, "G(w)": m_w, "G(w,F)": m_wf,
                               "perceptual_metric": "toy-LPIPS (LPIPS formula on the toy attribute net's "
                                                    "features, uniform channel weights; not AlexNet LPIPS)"}
    log(f"reconstruction on {n_eval} held-out rendered images:")
    log(f"  {'':8s} {'MSE':>8s} {'toy-LPIPS':>10s}")
    log(f"  {'G(w)':8s} {m_w['mse']:8.4f} {m_w['toy_lpips']:10.4f}")
    log(f"  {'G(w,F)':8s} {m_wf['mse']:8.4f} {m_wf['toy_lpips']:10.4f}")

    # Attribute read-back on the reconstructions: glasses accuracy against the true labels.
    pred_wf = _predict(net, rec_wf)
    pred_in = _predict(net, images)
    g_idx = toy_domain.ATTRIBUTE_NAMES.index("glasses")
    results["glasses_accuracy"] = {
        "input": float(((pred_in["glasses"] > 0.5).float() == truth[:, g_idx]).float().mean()),
        "G(w,F)": float(((pred_wf["glasses"] > 0.5).float() == truth[:, g_idx]).float().mean()),
    }

    pictures: list[tuple[str, str, str]] = []

    def picture(name: str, grid: torch.Tensor, title: str, caption: str) -> None:
        save_image(grid, out / name)
        pictures.append((name, title, caption))

    show = slice(0, n_show)
    rows = torch.stack([images[show], rec_w[show], rec_wf[show]], 1).flatten(0, 1)
    picture("reconstruction.png", make_grid(rows.clamp(-1, 1), ncol=3), "Inversion",
            "each row: held-out rendered input | G(w) (W+ code only) | G(w, F) (W+ code and feature code)")

    # The binary attribute: glasses on where absent, off where present.
    glasses = directions.get(TOGGLE_DIRECTION)
    # Every direction is unit length in W+, so one scale serves the toggle and all strips: the
    # calibrated glasses toggle strength, the step the (w, F) edit needs to change an attribute.
    strength = _glasses_strength(glasses) if glasses is not None else DEFAULT_TOGGLE_STRENGTH
    if glasses is not None:
        g = measure_glasses_edit(G, inv, glasses, net, strength)
        edited = g.pop("edited")
        results["glasses_edit"] = g
        log(f"InterFaceGAN glasses edit, conditioned on smile, yaw, hair (|alpha| = {strength:g}): flip rate {g['flip_rate']:.2f}; "
            f"glasses moved {g['glasses_change']:.2f} of its range, other attributes at most "
            f"{g['max_other_change']:.2f}")
        pair = torch.stack([images[show], rec_wf[show], edited[show]], 1).flatten(0, 1)
        picture("edit_glasses.png", make_grid(pair.clamp(-1, 1), ncol=3), "InterFaceGAN: glasses",
                "input | G(w, F) | glasses toggled (added where absent, removed where present) along the "
                "glasses boundary conditioned on smile, yaw and hair; paper Eq. 1")

    sub = Inversion(ws[show], feats[show], encoder.k, G.fingerprint())
    strengths = [-strength, -strength / 2, 0.0, strength / 2, strength]
    for name in EDIT_ATTRIBUTES[1:]:
        d = directions.get(name)
        if d is None:
            continue
        strip = edit_strip(G, sub, d, strengths)
        picture(f"edit_{name}.png", make_grid(strip.flatten(0, 1).clamp(-1, 1), ncol=len(strengths)),
                f"InterFaceGAN: {name}", f"alpha = {', '.join(f'{s:g}' for s in strengths)} (middle: G(w, F))")
    sefa_names = sorted(n for n in directions if n.startswith("sefa_"))[:3]
    for name in sefa_names:
        strip = edit_strip(G, sub, directions[name], strengths)
        picture(f"edit_{name}.png", make_grid(strip.flatten(0, 1).clamp(-1, 1), ncol=len(strengths)),
                f"SeFa: {name}", f"alpha = {', '.join(f'{s:g}' for s in strengths)} (unsupervised direction)")

    # Style mixing: A's feature code with B's W+ code.
    a = Inversion(ws[show], feats[show], encoder.k, G.fingerprint())
    perm = torch.roll(torch.arange(n_show), 1)
    b = Inversion(ws[perm], feats[perm], encoder.k, G.fingerprint())
    ab, _ = mix(G, a, b)
    rows = torch.stack([images[show], images[perm], ab], 1).flatten(0, 1)
    picture("mixing.png", make_grid(rows.clamp(-1, 1), ncol=3), "Style mixing",
            "A | B | G(w_B, F_A): A's coarse structure (feature code) with B's styles for the layers after K")

    results["seconds"] = time.time() - t0
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    report = _write_report(out, results, pictures)
    log(f"report: {report.resolve()}  ({results['seconds']:.1f} s)")
    results["report"] = str(report)
    return results


def _glasses_strength(direction: Direction) -> float:
    """The |alpha| of the glasses toggle: twice the distance of the average code to the boundary
    range of the training codes, stored when the direction was fit (default 4)."""
    return float(direction.stats.get("demo_strength", DEFAULT_TOGGLE_STRENGTH))


def _write_report(out: Path, results: dict[str, Any], pictures: list[tuple[str, str, str]]) -> Path:
    m_w, m_wf = results["G(w)"], results["G(w,F)"]
    table = _html_table(
        [["G(w)", f"{m_w['mse']:.4f}", f"{m_w['toy_lpips']:.4f}"],
         ["G(w, F)", f"{m_wf['mse']:.4f}", f"{m_wf['toy_lpips']:.4f}"]],
        ["reconstruction", "MSE", "toy-LPIPS"])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>invkit demo</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}img{image-rendering:pixelated;"
        "width:100%;max-width:40em}table{border-collapse:collapse}td,th{border:1px solid #999;padding:.3em .8em}"
        "</style></head><body>",
        "<h1>invkit demo: Feature-Style inversion and editing</h1>",
        f"<p>{results['n_eval']} held-out procedural faces (rendered, never generated by the GAN) were "
        f"encoded into a W+ code w and a feature code F at generator layer K = {results['k']}.</p>",
        table,
        f"<p>Perceptual metric: {html.escape(results['perceptual_metric'])}.</p>",
    ]
    if "glasses_edit" in results:
        g = results["glasses_edit"]
        parts.append(
            f"<p>Glasses edit (|alpha| = {g['strength']:g}): the attribute net judges the glasses flipped on "
            f"{100 * g['flip_rate']:.0f}% of images; glasses moved {g['glasses_change']:.2f} of its range, "
            f"the other attributes at most {g['max_other_change']:.2f}.</p>")
    for name, title, caption in pictures:
        parts.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(caption)}</p><img src='{name}' alt='{name}'>")
    parts.append("</body></html>")
    path = out / "report.html"
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(parts), encoding="utf-8")
    return path


class ToyRecipeFactory:
    """What the ``toy`` registry entry holds: calling it gives the :class:`Recipe`; ``demo`` runs
    the demo (``invkit demo`` looks for that attribute on the entry, so the core never imports
    this module by name)."""

    def __call__(self) -> Recipe:
        return toy_recipe()

    @staticmethod
    def demo(out_dir: str | os.PathLike = "invkit-demo", log: Callable[[str], None] = print, **kwargs) -> dict[str, Any]:
        return run_demo(out_dir, log=log, **kwargs)


@hookimpl
def register_recipes(register):
    register("toy", ToyRecipeFactory(), description="procedural cartoon faces (64 px); `invkit demo` runs it")


# ---- command line (asset production) ------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m invkit.recipes.toy", description="produce the toy assets")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train-encoder", help="train the toy encoder with the training engine")
    t.add_argument("--out", required=True)
    t.add_argument("--generator", help="default: the shipped toy generator")
    t.add_argument("--attribute-net", help="default: the shipped attribute net")
    t.add_argument("--max-steps", type=int)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("overrides", nargs="*", help="recipe overrides key=value")
    b = sub.add_parser("build-assets", help="GAN run checkpoint -> generator, encoder, directions in an assets folder")
    b.add_argument("--gan-run", required=True, help="a toy_gan run folder (its checkpoint.safetensors)")
    b.add_argument("--work", default="runs/toy_encoder", help="encoder training run folder")
    b.add_argument("--assets", default=str(assets_dir()), help="where the files go (default: the package's)")
    b.add_argument("--threads", type=int, default=1)
    d = sub.add_parser("fit-directions", help="InterFaceGAN + SeFa directions for a generator/encoder pair")
    d.add_argument("--generator", required=True)
    d.add_argument("--encoder", required=True)
    d.add_argument("--out", required=True, help="folder for the direction files")
    d.add_argument("--n", type=int, default=2000)
    d.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.cmd == "build-assets":
        build_assets(Path(args.gan_run), Path(args.work), Path(args.assets))
        return 0
    if args.cmd == "train-encoder":
        result = train_encoder(args.out, args.generator, args.attribute_net, args.max_steps, args.overrides,
                               progress=False)
        print(f"stopped at step {result.step}; encoder in {Path(args.out) / 'encoder.safetensors'}")
        return 0
    paths = write_directions(Path(args.generator), Path(args.encoder), Path(args.out), args.n)
    print("\n".join(str(x) for x in paths))
    return 0


def write_directions(generator: Path, encoder_path: Path, out: Path, n: int = 2000,
                     attribute_net: str | os.PathLike | None = None) -> list[Path]:
    """Fit the demo's directions (:func:`fit_directions`) and write them as
    ``out/toy_direction_<name>.safetensors``."""
    from ..fs_encoder import load_encoder
    from ..loading import load_generator

    G = load_generator(generator)
    encoder = load_encoder(encoder_path, generator=G)
    directions = fit_directions(G, encoder, n)
    glasses = next(d for d in directions if d.name == TOGGLE_DIRECTION)
    glasses.stats["demo_strength"] = _toggle_strength(G, encoder, glasses, attribute_net)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{DIRECTION_PREFIX}*.safetensors"):
        old.unlink()  # directions of a previous generator would be refused by the new one anyway
    return [d.save(out / f"{DIRECTION_PREFIX}{d.name}.safetensors") for d in directions]


def build_assets(gan_run: Path, work: Path, assets: Path) -> None:
    """The whole asset chain after GAN training: export the EMA generator, train the encoder with
    the engine (resuming ``work`` if it holds a run for the same generator), fit the directions.
    The attribute net in ``assets`` is used (and kept)."""
    import shutil

    from . import toy_gan

    assets.mkdir(parents=True, exist_ok=True)
    generator = toy_gan.export_checkpoint(gan_run, assets / GENERATOR_FILE)
    print(f"generator: {generator}", flush=True)
    result = train_encoder(work, generator, assets / ATTRIBUTE_NET_FILE, progress=False)
    exported = Path(work) / "encoder.safetensors"
    if result.interrupted or not exported.is_file():
        raise RuntimeError(f"{work}: encoder training stopped at step {result.step}; run build-assets again to resume")
    shutil.copyfile(exported, assets / ENCODER_FILE)
    print(f"encoder: {assets / ENCODER_FILE}", flush=True)
    for p in write_directions(generator, assets / ENCODER_FILE, assets, attribute_net=assets / ATTRIBUTE_NET_FILE):
        print(f"direction: {p}", flush=True)


#: Candidate |alpha| values for the glasses toggle, tried in order by :func:`_toggle_strength`.
TOGGLE_STRENGTHS = tuple(float(a) for a in range(4, 49, 2))


@torch.no_grad()
def _toggle_strength(G: Generator, encoder, direction: Direction, attribute_net: str | os.PathLike | None = None,
                     n: int = 256, target: float = 0.9) -> float:
    """The smallest |alpha| of :data:`TOGGLE_STRENGTHS` at which the full feature-code edit (paper
    Eq. 1, as the demo applies it) toggles glasses on ``target`` of ``n`` *training* seeds, as
    judged by the attribute net (if none does, the one that toggles most).

    Calibrated on the edit itself rather than on distances in W+: F carries part of the glasses
    at K, so the (w, F) edit needs a larger step than a w-only edit would (on the shipped models
    about 3x). Held-out seeds are never used here; the demo measures on those.
    """
    from ..inversion import Inversion

    ds = toy_domain.ToyFaces(n, 5_000_000)
    images = torch.stack([ds[i][0] for i in range(n)])
    ws, feats = encode_in_batches(encoder, images)
    inversion = Inversion(ws, feats, encoder.k, G.fingerprint())
    net = load_attribute_net(attribute_net)
    rates = {}
    for strength in TOGGLE_STRENGTHS:
        rates[strength] = measure_glasses_edit(G, inversion, direction, net, strength)["flip_rate"]
        if rates[strength] >= target:
            return strength
    return max(rates, key=rates.get)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
