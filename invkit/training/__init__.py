"""Training a Feature-Style encoder: the engine and what it needs around it.

* :mod:`.engine`: :class:`Trainer` (one optimisation step, the loop) and :func:`train`;
* :mod:`.optim`: Ranger (RAdam + :class:`Lookahead`), gradient centralisation, the lr schedule;
* :mod:`.checkpoints`: checkpoint files (model + optimiser + RNG states + data position);
* :mod:`.distributed`: the ``torchrun`` process group (:class:`DistContext`);
* :mod:`.logging`: the JSON-lines log, the progress bar, clean stops on SIGINT/SIGTERM.

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

from .checkpoints import (
    TrainingState,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from .distributed import DistContext, setup_distributed
from .engine import Trainer, TrainResult, blend_at, train
from .optim import Lookahead, StepDrop, build_optimizer, build_scheduler, centralize_gradients

__all__ = [
    "DistContext", "Lookahead", "StepDrop", "TrainResult", "Trainer", "TrainingState", "blend_at",
    "build_optimizer", "build_scheduler", "centralize_gradients", "checkpoint_path", "latest_checkpoint",
    "list_checkpoints", "load_checkpoint", "prune_checkpoints", "save_checkpoint", "setup_distributed", "train",
]
