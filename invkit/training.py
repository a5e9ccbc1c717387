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

Runs are directories::

    run/recipe.json                          the recipe (the typed config)
    run/checkpoints/step-00010000.safetensors   model + optimiser + RNG states + data position
    run/log.jsonl                            one line per ``log_every`` steps, every loss term
    run/samples/step-00010000.png            rows of input | G(w) | G(w, F)
    run/encoder.safetensors                  the final encoder, for ``invkit invert``

Checkpoints are written atomically; pointing :func:`train` at an existing run resumes it
exactly (model, optimiser, scheduler, RNG streams, step and data order), so an interrupted run
(even by SIGKILL) continues as if it had never stopped.

Several GPUs / nodes: launch with ``torchrun`` (``torchrun --nproc_per_node 4 -m invkit train
faces ...``); every process trains on its own shard with its own synthetic latents, gradients
are averaged by :class:`torch.nn.parallel.DistributedDataParallel`, and rank 0 writes the files.
The recipe's batch sizes are per process.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import re
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .data import ImageFolder, RealImageStream, _flatten
from .generator import Generator
from .io import atomic, tensorfile
from .io.images import save_grid
from .recipe import Recipe, RecipeError, Schedule

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "training-checkpoint"
CHECKPOINT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^step-(\d+)\.safetensors$")
#: Recipe settings that may change when a run is resumed (they do not affect the trajectory).
#: ``generator`` may name the same weights differently (a zoo name, then a path): the
#: generator's fingerprint, saved in the checkpoint, is what is checked.
RESUMABLE_CHANGES = frozenset({
    "description", "generator", "checkpoint_every", "sample_every", "log_every", "keep_last", "num_samples",
    "num_workers",
})

LossFn = Callable[..., Mapping[str, torch.Tensor]]


# =============================================================================================
# Optimisers and the learning-rate schedule
# =============================================================================================
class Lookahead:
    """Lookahead (Zhang et al. 2019) around any torch optimiser: every ``k`` inner steps the
    slow weights move ``alpha`` of the way to the fast ones and the fast weights restart there.

    With :class:`torch.optim.RAdam` inside this is the "Ranger" optimiser the official FS code
    trains with. ``param_groups`` are the inner optimiser's (so lr schedulers act on
    :attr:`inner`); :meth:`state_dict` holds the inner state, the slow weights and the counter.
    """

    def __init__(self, inner: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5):
        if k < 1 or not 0.0 < alpha <= 1.0:
            raise ValueError(f"Lookahead needs k >= 1 and 0 < alpha <= 1, got k={k}, alpha={alpha}")
        self.inner, self.k, self.alpha = inner, k, alpha
        self.counter = 0
        self.slow = [p.detach().clone() for p in self._params()]

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.inner.param_groups for p in group["params"]]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        self.inner.step()
        self.counter += 1
        if self.counter % self.k == 0:
            for fast, slow in zip(self._params(), self.slow):
                slow.add_(fast - slow, alpha=self.alpha)
                fast.copy_(slow)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "slow": [s.clone() for s in self.slow],
                "counter": self.counter, "k": self.k, "alpha": self.alpha}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        if len(state["slow"]) != len(self.slow):
            raise ValueError(f"Lookahead state has {len(state['slow'])} slow weights, expected {len(self.slow)}")
        for mine, saved in zip(self.slow, state["slow"]):
            mine.copy_(saved)
        self.counter, self.k, self.alpha = int(state["counter"]), int(state["k"]), float(state["alpha"])


def build_optimizer(params: Iterable[nn.Parameter], schedule: Schedule) -> torch.optim.Optimizer | Lookahead:
    """The optimiser named by ``schedule.optimizer`` (``"ranger"``, ``"radam"`` or ``"adam"``)."""
    params = list(params)
    kw = {"lr": schedule.lr, "betas": schedule.betas, "eps": schedule.eps, "weight_decay": schedule.weight_decay}
    if schedule.optimizer == "adam":
        return torch.optim.Adam(params, **kw)
    radam = torch.optim.RAdam(params, **kw)
    if schedule.optimizer == "radam":
        return radam
    return Lookahead(radam, k=schedule.lookahead_k, alpha=schedule.lookahead_alpha)


def torch_optimizer(optimizer: torch.optim.Optimizer | Lookahead) -> torch.optim.Optimizer:
    """The :class:`torch.optim.Optimizer` that holds the param groups (for lr schedulers)."""
    return optimizer.inner if isinstance(optimizer, Lookahead) else optimizer


class StepDrop:
    """lr factor 1 before ``drop_step``, ``1 / factor`` from then on (a callable object, so
    :class:`torch.optim.lr_scheduler.LambdaLR` saves it in its state dict)."""

    def __init__(self, drop_step: int, factor: float):
        self.drop_step, self.factor = drop_step, factor

    def __call__(self, step: int) -> float:
        return 1.0 if step < self.drop_step else 1.0 / self.factor


def build_scheduler(optimizer: torch.optim.Optimizer | Lookahead, schedule: Schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """The paper's step schedule, stepped once per optimiser step: ``lr`` until
    ``schedule.lr_drop_step``, then ``lr / lr_drop_factor``."""
    return torch.optim.lr_scheduler.LambdaLR(
        torch_optimizer(optimizer), StepDrop(schedule.lr_drop_step, schedule.lr_drop_factor)
    )


@torch.no_grad()
def centralize_gradients(params: Iterable[nn.Parameter]) -> None:
    """Gradient centralisation (Yong et al. 2020): remove the mean over all but the first
    dimension from every gradient with more than one dimension."""
    for p in params:
        if p.grad is not None and p.grad.ndim > 1:
            p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.ndim)), keepdim=True))


# =============================================================================================
# Nested state <-> (tensors, JSON)
# =============================================================================================
def flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Split a nested state (optimizer / scheduler state dicts) into JSON and named tensors.

    Tensors are stored in ``tensors`` under ``prefix.path`` and replaced by
    ``{"__tensor__": name}``; tuples and dicts with non-string keys are tagged so that
    :func:`unflatten_state` restores them exactly.
    """
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach()
        return {"__tensor__": prefix}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: flatten_state(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} at {prefix} in a checkpoint")


def unflatten_state(doc: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The inverse of :func:`flatten_state`."""
    if isinstance(doc, dict):
        if "__tensor__" in doc:
            return tensors[doc["__tensor__"]]
        if "__items__" in doc:
            return {_json_key(k): unflatten_state(v, tensors) for k, v in doc["__items__"]}
        if "__tuple__" in doc:
            return tuple(unflatten_state(v, tensors) for v in doc["__tuple__"])
        return {k: unflatten_state(v, tensors) for k, v in doc.items()}
    if isinstance(doc, list):
        return [unflatten_state(v, tensors) for v in doc]
    return doc


def _json_key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


# =============================================================================================
# RNG states
# =============================================================================================
def capture_rng(engine: torch.Generator) -> dict[str, torch.Tensor | Any]:
    """This process's RNG streams: the engine's generator, torch's CPU and CUDA generators,
    numpy's and Python's (all as uint8 tensors or JSON-able values)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "engine": engine.get_state(),
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.uint32).view(np.uint8).copy()),
        "numpy_rest": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _python_state_to_json(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: Mapping[str, Any], engine: torch.Generator) -> None:
    engine.set_state(state["engine"])
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().view(np.uint32)
    name, pos, has_gauss, cached = state["numpy_rest"]
    np.random.set_state((name, keys, pos, has_gauss, cached))
    random.setstate(_python_state_from_json(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _python_state_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_json(doc: list) -> tuple:
    version, internal, gauss = doc
    return (version, tuple(internal), gauss)


# =============================================================================================
# Checkpoint files
# =============================================================================================
def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step-{step:08d}.safetensors"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint in a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint whose header reads back (an unreadable one is reported and
    skipped, though atomic writes should make that impossible)."""
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            if tensorfile.read_meta(path).get("kind") == CHECKPOINT_KIND:
                return path
        except tensorfile.FileFormatError as exc:
            log.warning("%s", exc)
    return None


@dataclass
class TrainingState:
    """What a checkpoint holds, rebuilt into Python objects.

    Attributes:
        step: optimiser steps completed.
        model: the encoder's state dict.
        optimizer: the optimiser's state dict (a :class:`Lookahead` dict for ranger).
        scheduler: the lr scheduler's state dict.
        rng: per-rank RNG states (``rng[rank]`` as from :func:`capture_rng`).
        data: per-rank real-image stream positions.
        recipe: the run's recipe.
        meta: the rest of the JSON document (generator fingerprint, encoder config, ...).
    """

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: list[dict[str, Any]]
    data: list[dict[str, int] | None]
    recipe: Recipe
    meta: dict[str, Any]


def save_checkpoint(path: str | os.PathLike, state: TrainingState) -> Path:
    """Write one checkpoint file atomically (safetensors tensors + JSON document)."""
    tensors: dict[str, torch.Tensor] = {}
    for k, v in state.model.items():
        tensors[f"model.{k}"] = v.detach()
    doc = {
        "kind": CHECKPOINT_KIND,
        "step": state.step,
        "recipe": state.recipe.to_dict(),
        "optimizer": flatten_state(state.optimizer, "optimizer", tensors),
        "scheduler": flatten_state(state.scheduler, "scheduler", tensors),
        "rng": [flatten_state(r, f"rng.{i}", tensors) for i, r in enumerate(state.rng)],
        "data": state.data,
        **state.meta,
    }
    # safetensors refuses tensors sharing memory (e.g. a state tensor aliasing a parameter)
    seen: set[int] = set()
    for k, t in tensors.items():
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen:
            tensors[k] = t.clone()
        seen.add(ptr)
    return tensorfile.save(path, tensors, doc)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> TrainingState:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    tensors, doc = tensorfile.load(path, kind=CHECKPOINT_KIND)
    model = {k[len("model."):]: v.to(device) for k, v in tensors.items() if k.startswith("model.")}
    doc = dict(doc)
    try:
        recipe = Recipe.from_dict(doc.pop("recipe"))
    except (KeyError, RecipeError) as exc:
        raise tensorfile.FileFormatError(f"{path}: bad recipe in checkpoint ({exc})") from None
    state = TrainingState(
        step=int(doc.pop("step")),
        model=model,
        optimizer=unflatten_state(doc.pop("optimizer"), tensors),
        scheduler=unflatten_state(doc.pop("scheduler"), tensors),
        rng=[unflatten_state(r, tensors) for r in doc.pop("rng")],
        data=doc.pop("data"),
        recipe=recipe,
        meta={k: v for k, v in doc.items() if k not in ("kind", "format_version")},
    )
    return state


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest checkpoints; returns what was deleted."""
    found = list_checkpoints(run_dir)
    doomed = [p for _, p in found[:-keep_last]] if keep_last > 0 else []
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


# =============================================================================================
# Distributed plumbing
# =============================================================================================
@dataclass
class DistContext:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str | torch.device | None = None) -> DistContext:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``PORT`` in the environment), or run single-process when there is none.

    The backend is NCCL on CUDA and gloo on the CPU; the device defaults to ``cuda:LOCAL_RANK``
    when CUDA is available.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and world > 1:
        device = torch.device("cuda", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                device_id=device if device.type == "cuda" else None)
        owns = True
    return DistContext(rank, world, local, device, owns)


def _all_gather(ctx: DistContext, obj: Any) -> list[Any]:
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def _any(ctx: DistContext, flag: bool) -> bool:
    """True when ``flag`` is set on any rank (every rank must call this)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return bool(t.item() > 0)


# =============================================================================================
# Logging and progress
# =============================================================================================
class JsonlLog:
    """Append-only JSON-lines log; on resume, lines beyond the resumed step are dropped (that
    part of the interrupted run is replayed and logged again)."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.exists():
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
            atomic.write_text(path, "".join(f"{line}\n" for line in kept))
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


@contextmanager
def _progress(enabled: bool, total: int, start: int) -> Iterator[Callable[..., None]]:
    """A rich progress bar (steps, losses, ETA); yields ``update(step, text)``."""
    if not enabled:
        yield lambda step, text=None: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
        console=Console(stderr=True), refresh_per_second=2,
    )
    with progress:
        task = progress.add_task("train", total=total, completed=start, losses="")

        def update(step: int, text: str | None = None) -> None:
            if text is None:
                progress.update(task, completed=step)
            else:
                progress.update(task, completed=step, losses=text)

        yield update


class _StopFlag:
    """SIGINT/SIGTERM request a clean stop (a checkpoint at the next step boundary)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


# =============================================================================================
# The trainer
# =============================================================================================
@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    step: int
    encoder: nn.Module
    interrupted: bool = False
    last_losses: dict[str, float] | None = None


def blend_at(step: int, warmup_steps: int) -> float:
    """F's blend weight at ``step``: rises linearly from ``1 / warmup`` to 1 (1 without warm-up)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def default_encoder(generator: Generator, recipe: Recipe) -> nn.Module:
    """The Feature-Style encoder for ``generator`` described by ``recipe.encoder``."""
    from .fs_encoder import FeatureStyleEncoder

    return FeatureStyleEncoder.for_generator(generator, recipe.k, **recipe.encoder.kwargs())


def default_loss(generator: Generator, recipe: Recipe) -> nn.Module:
    """The paper's objective with ``recipe.loss`` as weights and ``recipe.loss_networks`` as its
    auxiliary networks (ArcFace and the face parser only when their weight is non-zero)."""
    from .losses import FeatureStyleLoss
    from .nets.lpips import LPIPS

    nets = recipe.loss_networks
    arcface = parser = None
    if recipe.loss.identity > 0:
        from .nets.arcface import ArcFace

        arcface = ArcFace.from_file(nets.arcface) if Path(nets.arcface).is_file() else ArcFace.from_zoo(nets.arcface)
    if recipe.loss.parsing > 0:
        from .nets.bisenet import BiSeNet

        parser = BiSeNet.from_file(nets.parser) if Path(nets.parser).is_file() else BiSeNet.from_zoo(nets.parser)
    return FeatureStyleLoss(LPIPS(nets.lpips_net, trunk=nets.lpips_trunk), recipe.loss, arcface=arcface,
                            parser=parser, lpips_scales=nets.lpips_scales)


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

        existing = latest_checkpoint(self.run_dir)
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
        elif not isinstance(loss, nn.Module) and _is_factory(loss):
            loss = loss(self.G, recipe)
        self.loss_fn = loss
        if isinstance(loss, nn.Module):
            loss.to(self.device).eval().requires_grad_(False)

        self.model: nn.Module = self.encoder
        if self.ctx.distributed:
            self.model = DistributedDataParallel(
                self.encoder, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=True,
            )
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
        with torch.no_grad():
            feats_target = G.features_at(k, ws.detach(), noise_mode=noise_arg)
        blend = blend_at(self.step, self.recipe.blend_warmup_steps)
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
        rng = _all_gather(self.ctx, capture_rng(self.rng))
        data = _all_gather(self.ctx, self.stream.state_dict() if self.stream else None)
        # the loss sums since the last log line, so the first line after a resume is the same
        pending = _all_gather(self.ctx, {"count": self._count,
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
                  "encoder": _encoder_config(self.encoder), "log_pending": pending},
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
        from .fs_encoder import FeatureStyleEncoder, save_encoder

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
        try:
            with _StopFlag() as stop, _progress(self.progress, self.stop_step, self.step) as update:
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
                        update(step, "  ".join(f"{n} {v:.4f}" for n, v in last.items()))
                    else:
                        update(step)
                    if step % r.sample_every == 0:
                        self.write_samples()
                    if _any(self.ctx, stop.requested):
                        interrupted = True
                        break
                    if step % r.checkpoint_every == 0 and step != self.stop_step:
                        self.save()
        finally:
            if jlog is not None:
                jlog.close()
        self._finish(interrupted)
        if interrupted and self.ctx.is_main:
            self.report(f"stopped at step {self.step}; checkpoint written, run again to resume")
        return TrainResult(self.run_dir, self.step, self.encoder, interrupted, last)

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
            self.export_encoder()

    def _reduce(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        names = sorted(values)
        vec = torch.stack([values[n].reshape(()) for n in names])
        if self.ctx.distributed:
            vec = vec.to(self.device if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(vec)
            vec = vec / self.ctx.world_size
        return {n: float(v) for n, v in zip(names, vec.cpu())}


def _is_factory(obj: Any) -> bool:
    """A ``(generator, recipe) -> loss`` factory rather than a loss function: plain callables
    that take exactly two positional parameters."""
    import inspect

    try:
        params = [p for p in inspect.signature(obj).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return len(params) == 2


def _encoder_config(encoder: nn.Module) -> dict[str, Any]:
    config = getattr(encoder, "config", None)
    if callable(config):
        config = config()
    try:
        json.dumps(config)
    except TypeError:
        return {}
    return config if isinstance(config, dict) else {}


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
            from .loading import load_generator

            generator = load_generator(generator or recipe.generator, device=ctx.device)
        trainer = Trainer(recipe, generator, out_dir, data, encoder=encoder, loss=loss, ctx=ctx,
                          progress=progress, resume=resume, max_steps=max_steps, report=report)
        return trainer.run()
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


__all__ = [
    "Lookahead", "StepDrop", "TrainResult", "Trainer", "TrainingState", "blend_at", "build_optimizer",
    "build_scheduler", "centralize_gradients", "checkpoint_path", "latest_checkpoint", "list_checkpoints",
    "load_checkpoint", "prune_checkpoints", "save_checkpoint", "setup_distributed", "train",
]
