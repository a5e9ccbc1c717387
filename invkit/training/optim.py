"""Optimisers and the learning-rate schedule of the training engine.

The paper's defaults: Ranger (:class:`torch.optim.RAdam` inside :class:`Lookahead`, with
gradient centralisation) and a step schedule that divides the learning rate once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..recipe import Schedule


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
