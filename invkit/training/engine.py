"""The Feature-Style encoder training engine.

One optimisation step (paper Sec. 3.3, with the official code's bugs fixed):

1. a batch of ``batch_real`` real images and ``batch_synthetic`` synthetic ones, drawn on the
   fly as ``G(mapping(z))`` from random ``z`` with per-layer noise from
   :meth:`Generator.sample_noise`. The *same* noise is passed back to G when reconstructing the
   synthetic half (so G(w) can reproduce them exactly); the real half gets fresh random noise;
2. ``(w, F) = E(x)``; two reconstructions ``G(w)`` and ``G(w, F)`` (F replaces layer K,
   optionally blended into G's own activation with a weight that rises linearly from 0 to 1
   over ``recipe.blend_warmup_steps``); the feature target ``G_K(w)`` is computed without
   gradient;
3. the loss module returns every term and ``"total"``; only the encoder receives gradients
   (the generator and the loss's auxiliary networks are frozen, ``requires_grad=False``);
   BatchNorm stays in train mode for the whole run.

The schedule (:class:`invkit.recipe.Schedule`) defaults to the paper's: batch 2 + 2, 12 epochs
of 10k steps, lr 1e-4 divided by 10 for the last 2 epochs, Ranger (RAdam + Lookahead, with
gradient centralisation).

The run folder, resuming and several processes: see :mod:`invkit.training`.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data import ImageFolder, RealImageStream, _flatten
from ..generator import Generator
from ..io.images import save_grid
from ..recipe import Recipe, RecipeError
from .checkpoints import (
    TrainingState,
    capture_rng,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng,
    save_checkpoint,
)
from .defaults import default_encoder, default_loss, encoder_config, is_factory
from .distributed import DistContext, all_gather, any_rank, setup_distributed
from .logging import JsonlLog, StopFlag, log_line, progress_bar
from .optim import build_optimizer, build_scheduler, centralize_gradients

log = logging.getLogger(__name__)

#: Recipe settings that may change when a run is resumed (they do not affect the trajectory).
#: ``generator`` may name the same weights differently (a zoo name, then a path): the
#: generator's fingerprint, saved in the checkpoint, is what is checked.
RESUMABLE_CHANGES = frozenset({
    "description", "generator", "checkpoint_every", "sample_every", "log_every", "keep_last", "num_samples",
    "num_workers",
})

LossFn = Callable[..., Mapping[str, torch.Tensor]]


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    step: int
    encoder: nn.Module
    interrupted: bool = False
    last_losses: dict[str, float] | None = None
    #: the signal that stopped the run (``signal.SIGINT`` / ``SIGTERM``), 0 when none did
    stop_signal: int = 0
    #: the inference encoder file this call wrote (None: stopped early, not rank 0, not savable)
    encoder_file: Path | None = None


def blend_at(step: int, warmup_steps: int) -> float:
    """F's blend weight at ``step``: rises linearly from ``1 / warmup`` to 1 (1 without warm-up)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


class Trainer:
    """One training run; see the module docstring. Build it with :func:`train` (or directly
    for finer control: ``Trainer(...).run()``)."""

    def __init__(
        self,
        recipe: Recipe,
        generator: Generator,
        run_dir: str | os.PathLike,
        data: Any = None,
        encoder: nn.Module | Callable[[Generator, Recipe], nn.Module] | None = None,
        loss: nn.Module | LossFn | Callable[[Generator, Recipe], LossFn] | None = None,
        ctx: DistContext | None = None,
        progress: bool = True,
        resume: bool | None = None,
        max_steps: int | None = None,
        report: Callable[[str], None] | None = None,
    ):
        self.ctx = ctx or DistContext()
        self.device = self.ctx.device
        self.run_dir = Path(run_dir)
        self.progress = progress and self.ctx.is_main
        self.report = report or (lambda msg: log.warning("%s", msg))
        self.G = generator.to(self.device).eval().requires_grad_(False)

        existing = latest_checkpoint(self.run_dir, self.report)
        if existing is not None and resume is False:
            raise FileExistsError(f"{self.run_dir}: holds a run already (resume it, or choose another folder)")
        self.resume_from = existing if resume is not False else None
        checkpoint = load_checkpoint(self.resume_from, self.device) if self.resume_from else None
        if checkpoint is not None:
            recipe = self._check_resumable(checkpoint, recipe)
        self.recipe = recipe
        self.schedule = recipe.schedule
        self.total_steps = recipe.schedule.total_steps
        self.stop_step = min(self.total_steps, max_steps) if max_steps is not None else self.total_steps

        # the encoder: identical initialisation on every rank (DDP also broadcasts rank 0's)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            if encoder is None:
                encoder = default_encoder(self.G, recipe)
            elif not isinstance(encoder, nn.Module):
                encoder = encoder(self.G, recipe)
        self.encoder = encoder.to(self.device).train()
        if loss is None:
            loss = default_loss(self.G, recipe)
        elif not isinstance(loss, nn.Module) and is_factory(loss):
            loss = loss(self.G, recipe)
        self.loss_fn = loss
        if isinstance(loss, nn.Module):
            loss.to(self.device).eval().requires_grad_(False)

        self.model: nn.Module = self.encoder
        if self.ctx.distributed:
            self.model = DistributedDataParallel(self.encoder, broadcast_buffers=True, device_ids=(
                [self.device.index] if self.device.type == "cuda" else None))
        self.optimizer = build_optimizer(self.encoder.parameters(), self.schedule)
        self.scheduler = build_scheduler(self.optimizer, self.schedule)
        self.rng = torch.Generator().manual_seed(recipe.seed * 1000 + self.ctx.rank)
        self.step = 0
        self._iter_samples: list[torch.Tensor] | None = None
        self._sums: dict[str, torch.Tensor] = {}  # loss sums since the last log line
        self._count = 0

        br = self.schedule.batch_real
        self.stream: RealImageStream | None = None
        if br > 0:
            if data is None:
                raise ValueError(f"recipe {recipe.name!r} needs real images (schedule.batch_real={br}); pass data")
            source = data
            if isinstance(data, (str, os.PathLike)):
                source = ImageFolder(data, recipe.preprocess, self.G.resolution, report=self.report)
            self.stream = RealImageStream(source, br, seed=recipe.seed, rank=self.ctx.rank,
                                          world_size=self.ctx.world_size,
                                          num_workers=recipe.num_workers if isinstance(source, ImageFolder) else 0,
                                          device=self.device)
        if checkpoint is not None:
            self._restore(checkpoint)

    # ---- resume ------------------------------------------------------------------------------
    def _check_resumable(self, checkpoint: TrainingState, recipe: Recipe) -> Recipe:
        saved = checkpoint.recipe
        changed = {k: v for k, v in saved.diff(recipe).items() if k not in RESUMABLE_CHANGES}
        if changed:
            lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise RecipeError(f"{self.run_dir}: cannot resume with a different recipe ({lines}); "
                              f"use another --out folder for a new run")
        fp = checkpoint.meta.get("generator_fingerprint")
        if fp and fp != self.G.fingerprint():
            raise ValueError(f"{self.resume_from}: trained for generator {fp}, but this generator is "
                             f"{self.G.fingerprint()}")
        return recipe

    def _restore(self, state: TrainingState) -> None:
        self.encoder.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.step = state.step
        if len(state.rng) == self.ctx.world_size:
            restore_rng(state.rng[self.ctx.rank], self.rng)
        else:
            self.report(f"{self.resume_from}: saved by {len(state.rng)} process(es), resumed by "
                        f"{self.ctx.world_size}: random streams restart, the run is no longer bit-exact")
            self.rng.manual_seed(self.recipe.seed * 1000 + self.ctx.rank + 7919 * state.step)
        if self.stream is not None and state.data and self.ctx.rank < len(state.data) and state.data[self.ctx.rank]:
            self.stream.load_state_dict(state.data[self.ctx.rank])
        pending = state.meta.get("log_pending") or []
        if self.ctx.rank < len(pending) and pending[self.ctx.rank]:
            mine = pending[self.ctx.rank]
            self._count = int(mine["count"])
            self._sums = {n: torch.tensor(v, dtype=torch.float32) for n, v in mine["sums"].items()}

    # ---- one step ----------------------------------------------------------------------------
    def make_batch(self) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """``(images [B, 3, R, R], noise, synthetic_mask [B] bool)``: real images first (with
        fresh noise), then synthetic ones (with the noise that made them)."""
        br, bs = self.schedule.batch_real, self.schedule.batch_synthetic
        G = self.G
        images, noises = [], []
        if br > 0:
            real = next(self.stream)
            if real.shape[1:] != (G.img_channels, G.resolution, G.resolution):
                raise ValueError(
                    f"real images are {list(real.shape[1:])} but the generator makes "
                    f"[{G.img_channels}, {G.resolution}, {G.resolution}]; adjust preprocess.resize/pad_to"
                )
            if self.recipe.preprocess.hflip:
                flip = torch.rand(br, generator=self.rng) < 0.5
                real = torch.where(flip.to(self.device)[:, None, None, None], real.flip(-1), real)
            images.append(real)
            noises.append(G.sample_noise(br, self.rng))
        if bs > 0:
            z = torch.randn(bs, G.z_dim, generator=self.rng).to(self.device)
            noise = G.sample_noise(bs, self.rng)
            with torch.no_grad():
                ws = G.mapping(z, truncation_psi=self.schedule.truncation_psi)
                images.append(G.synthesize(ws, noise_mode=noise if noise else "none"))
            noises.append(noise)
        x = torch.cat(images)
        noise = [torch.cat(parts) for parts in zip(*noises)] if noises and noises[0] else []
        mask = torch.tensor([False] * br + [True] * bs, device=self.device)
        return x, noise, mask

    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimiser step; returns every loss term (detached)."""
        G, k = self.G, self.recipe.k
        self.model.train()  # BatchNorm learns throughout (the official code froze it after epoch 1)
        x, noise, mask = self.make_batch()
        noise_arg = noise if noise else "none"
        ws, feats = self.model(x)
        rec_w = G.synthesize(ws, noise_mode=noise_arg)
        blend = blend_at(self.step, self.recipe.blend_warmup_steps)
        feats_target, rec_wf = None, rec_w  # a W+-only encoder (F None): the G(w, F) terms use G(w)
        if feats is not None:
            with torch.no_grad():
                feats_target = G.features_at(k, ws.detach(), noise_mode=noise_arg)
            rec_wf = G.synthesize_from(k, feats, ws, noise_mode=noise_arg, blend=blend)
        losses = dict(self.loss_fn(x, rec_w, rec_wf, feats, feats_target, mask))
        total = losses["total"]
        if not torch.isfinite(total):
            terms = ", ".join(f"{n}={v.item():.4g}" for n, v in losses.items())
            raise FloatingPointError(f"non-finite loss at step {self.step} ({terms})")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.schedule.optimizer == "ranger" and self.schedule.grad_centralization:
            centralize_gradients(self.encoder.parameters())
        if self.schedule.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), self.schedule.grad_clip)
        self.last_lr = self.scheduler.get_last_lr()[0]  # the lr this step used
        self.last_blend = blend
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {n: v.detach() for n, v in losses.items()}

    # ---- checkpoints and samples -------------------------------------------------------------
    def state(self) -> TrainingState:
        """The current training state (every rank must call this: RNG states are gathered)."""
        rng = all_gather(self.ctx, capture_rng(self.rng))
        data = all_gather(self.ctx, self.stream.state_dict() if self.stream else None)
        # the loss sums since the last log line, so the first line after a resume is the same
        pending = all_gather(self.ctx, {"count": self._count,
                                         "sums": {n: float(v) for n, v in self._sums.items()}})
        return TrainingState(
            step=self.step,
            model={k: v.detach().cpu() for k, v in self.encoder.state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=rng,
            data=data,
            recipe=self.recipe,
            meta={"generator_fingerprint": self.G.fingerprint(), "world_size": self.ctx.world_size,
                  "encoder": encoder_config(self.encoder), "log_pending": pending},
        )

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0) and prune old ones; every rank must call this."""
        state = self.state()
        if not self.ctx.is_main:
            return None
        path = save_checkpoint(checkpoint_path(self.run_dir, self.step), state)
        prune_checkpoints(self.run_dir, self.recipe.keep_last)
        return path

    def sample_batch(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The fixed sample set: the first real images and seeded synthetic ones (drawn from
        their own generator, so sampling never disturbs the training streams)."""
        n = self.recipe.num_samples
        n_real = min(n // 2 if self.schedule.batch_synthetic > 0 else n, self._num_real_available())
        n_syn = n - n_real if self.schedule.batch_synthetic > 0 or n_real == 0 else 0
        gen = torch.Generator().manual_seed(self.recipe.seed + 2**20)
        images, noises = [], []
        if n_real > 0:
            images.append(torch.stack([self._real_item(i) for i in range(n_real)]).to(self.device))
            noises.append(self.G.sample_noise(n_real, gen))
        if n_syn > 0:
            z = torch.randn(n_syn, self.G.z_dim, generator=gen).to(self.device)
            noise = self.G.sample_noise(n_syn, gen)
            ws = self.G.mapping(z, truncation_psi=self.schedule.truncation_psi)
            images.append(self.G.synthesize(ws, noise_mode=noise if noise else "none"))
            noises.append(noise)
        noise = [torch.cat(p) for p in zip(*noises)] if noises and noises[0] else []
        return torch.cat(images), noise

    def _num_real_available(self) -> int:
        if self.stream is None:
            return 0
        src = self.stream.source
        return len(src) if self.stream.map_style else self.recipe.num_samples

    def _real_item(self, i: int) -> torch.Tensor:
        src = self.stream.source
        if self.stream.map_style:
            item = src[i]
            return item[0] if isinstance(item, (tuple, list)) else item
        if self._iter_samples is None:  # the first items of an iterable source, read once
            self._iter_samples = [t.float() for t in itertools.islice(_flatten(iter(src)), self.recipe.num_samples)]
        return self._iter_samples[i]

    @torch.no_grad()
    def write_samples(self) -> Path | None:
        """A PNG grid, one row per sample image: input | G(w) | G(w, F) (rank 0; encoder in eval
        mode, then back to train mode)."""
        if not self.ctx.is_main or self.recipe.num_samples == 0:
            return None
        x, noise = self.sample_batch()
        noise_arg = noise if noise else "none"
        self.encoder.eval()
        try:
            ws, feats = self.encoder(x)
            rec_w = self.G.synthesize(ws, noise_mode=noise_arg)
            rec_wf = self.G.synthesize_from(self.recipe.k, feats, ws, noise_mode=noise_arg,
                                            blend=blend_at(self.step - 1, self.recipe.blend_warmup_steps))
        finally:
            self.encoder.train()
        rows = torch.stack([x, rec_w, rec_wf], dim=1).flatten(0, 1).clamp(-1, 1).cpu()
        return save_grid(rows, self.run_dir / "samples" / f"step-{self.step:08d}.png", ncol=3)

    def export_encoder(self) -> Path | None:
        """Save the encoder for inference (``run/encoder.safetensors``, loadable with
        ``invkit.load_encoder``); other encoder classes are exported when they have a
        ``save(path)`` method."""
        if not self.ctx.is_main:
            return None
        path = self.run_dir / "encoder.safetensors"
        from ..fs_encoder import FeatureStyleEncoder, save_encoder

        if isinstance(self.encoder, FeatureStyleEncoder):
            return save_encoder(self.encoder, path)
        saver = getattr(self.encoder, "save", None)
        if saver is None:
            return None
        saver(path)
        return path

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        r = self.recipe
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            r.save(self.run_dir / "recipe.json")
        if self.step >= self.stop_step:
            self._finish()
            return TrainResult(self.run_dir, self.step, self.encoder)
        if self.resume_from is not None and self.ctx.is_main:
            self.report(f"resuming {self.run_dir} at step {self.step} ({self.resume_from.name})")
        jlog = JsonlLog(self.run_dir / "log.jsonl", self.step) if self.ctx.is_main else None
        last: dict[str, float] | None = None
        t0, steps0 = time.time(), self.step
        interrupted = False
        stop_signal = 0
        try:
            with StopFlag() as stop, progress_bar(self.progress, self.stop_step, self.step) as update:
                while self.step < self.stop_step:
                    losses = self.train_step()
                    for name, value in losses.items():
                        self._sums[name] = self._sums.get(name, 0) + value.float().cpu()
                    self._count += 1
                    step = self.step
                    if step % r.log_every == 0 or step == self.total_steps:
                        # the mean of every term over the steps since the last line, over all ranks
                        last = self._reduce({n: v / self._count for n, v in self._sums.items()})
                        if jlog is not None:
                            elapsed = time.time() - t0
                            jlog.write({"step": step, "epoch": (step - 1) // self.schedule.iters_per_epoch,
                                        "lr": self.last_lr, "blend": self.last_blend, "steps": self._count,
                                        "sec_per_step": elapsed / max(1, step - steps0), **last})
                        self._sums, self._count = {}, 0
                        update(step, log_line(step, self.total_steps, last, self.last_lr,
                                              (time.time() - t0) / max(1, step - steps0), r.loss))
                    else:
                        update(step)
                    if step % r.sample_every == 0:
                        self.write_samples()
                    if any_rank(self.ctx, stop.requested):
                        interrupted, stop_signal = True, stop.signum or signal.SIGINT
                        break
                    if step % r.checkpoint_every == 0 and step != self.stop_step:
                        self.save()
        finally:
            if jlog is not None:
                jlog.close()
        self._finish(interrupted)
        if interrupted and self.ctx.is_main:
            self.report(f"stopped at step {self.step}; checkpoint written, run again to resume")
        return TrainResult(self.run_dir, self.step, self.encoder, interrupted, last, int(stop_signal),
                           self.exported)

    exported: Path | None = None

    def _finish(self, interrupted: bool = False) -> None:
        if not list_checkpoints(self.run_dir) or list_checkpoints(self.run_dir)[-1][0] != self.step:
            self.save()
        if self.ctx.distributed:
            # every rank's BatchNorm statistics moved during its last forward; adopt rank 0's, as
            # DDP itself does at the start of every forward, so all ranks end identical
            for buf in self.encoder.buffers():
                dist.broadcast(buf, src=0)
        if not interrupted and self.step >= self.total_steps:
            self.write_samples()
            self.exported = self.export_encoder()

    def _reduce(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        names = sorted(values)
        vec = torch.stack([values[n].reshape(()) for n in names])
        if self.ctx.distributed:
            vec = vec.to(self.device if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(vec)
            vec = vec / self.ctx.world_size
        return {n: float(v) for n, v in zip(names, vec.cpu())}


def train(
    recipe: Recipe,
    data: Any,
    generator: Generator | str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "runs/train",
    *,
    encoder: nn.Module | Callable[[Generator, Recipe], nn.Module] | None = None,
    loss: nn.Module | LossFn | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    resume: bool | None = None,
    max_steps: int | None = None,
    report: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or resume training) a Feature-Style encoder.

    Args:
        recipe: the configuration (see :class:`invkit.recipe.Recipe`).
        data: real images: a folder, a map-style :class:`~torch.utils.data.Dataset` or any
            iterable of ``[3, R, R]`` / ``[B, 3, R, R]`` tensors in [-1, 1] (e.g. a procedural
            image generator); None when ``recipe.schedule.batch_real`` is 0.
        generator: a :class:`Generator`, or a checkpoint path / zoo name; default
            ``recipe.generator``.
        out_dir: the run folder; an existing run there is resumed.
        encoder: an encoder module (``forward(x) -> (ws, F)``) or a factory
            ``(generator, recipe) -> module``; default the Feature-Style encoder of
            ``recipe.encoder``.
        loss: ``loss(x, rec_w, rec_wf, feats, feats_target, synthetic_mask) -> {"total", ...}``
            or a factory ``(generator, recipe) -> loss``; default the paper's objective with
            ``recipe.loss``.
        device: default ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.
        progress: show a rich progress bar (rank 0).
        resume: None resumes when ``out_dir`` holds a run; False refuses to touch one; True is
            the same as None.
        max_steps: stop after this step (a checkpoint is written) although the schedule
            goes on; running again continues.
        report: receives one-line messages (bad images, resume notices); default: logging.

    Under ``torchrun`` every process calls this; the process group is joined (and left) here.
    """
    ctx = setup_distributed(device)
    try:
        if not isinstance(generator, Generator):
            from ..loading import load_generator

            generator = load_generator(generator or recipe.generator, device=ctx.device)
        trainer = Trainer(recipe, generator, out_dir, data, encoder=encoder, loss=loss, ctx=ctx,
                          progress=progress, resume=resume, max_steps=max_steps, report=report)
        return trainer.run()
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()
