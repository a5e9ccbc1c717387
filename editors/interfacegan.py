"""InterFaceGAN: a linear boundary in latent space separates an attribute (Shen et al., 2020).

Given latent codes and one label per code, a linear classifier is fit; the unit normal of its
separating hyperplane is the editing direction (moving along it raises the classifier's
score). The sampling protocol follows the paper: sort the codes by label score, keep only the
clearest ``ratio`` at each end (top = positives, bottom = negatives), shuffle, split each side
into train/validation (``split``), and report the validation accuracy. Binary labels (exactly two
distinct values) use every labelled code, each class being one side.

Two classifiers are implemented on numpy + scipy (no scikit-learn), see :func:`fit_linear`:

* ``"svm"`` (default; the paper uses a linear SVM): L2-regularised, squared hinge loss
  ``½‖θ‖² + C Σ max(0, 1 − yᵢ θ·zᵢ)²`` (scikit-learn's ``LinearSVC`` objective), minimised in the
  primal by exact generalised Newton steps;
* ``"logistic"``: L2-regularised logistic regression, ``½‖θ‖² + C Σ log(1 + exp(−yᵢ θ·zᵢ))``.

Conditional manipulation (:func:`condition`) removes from a direction its components along other
boundaries, ``n₁ − (n₁ᵀn₂)n₂`` for one and the least-squares projection onto the orthogonal
complement of their span for several, so that editing one attribute leaves the others' scores
unchanged to first order.

The codes should be the ones the edit will be applied to: for Feature-Style editing, the
encoder's own W+ codes written by ``invkit invert`` (fitting on mapping-network samples gives
directions that transfer poorly to encoder codes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy.optimize import minimize

from invkit.direction import Direction, Space
from invkit.editor import Editor
from invkit.hookspecs import hookimpl
from invkit.inversion import Inversion

METHODS = ("svm", "logistic")


# ---- sampling protocol ------------------------------------------------------------------------
@dataclass
class Split:
    """Indices into the labelled codes: train/val positives (y = 1) and negatives (y = 0), plus the
    unused middle (``remaining``) of continuous scores with its median-threshold labels."""

    train: np.ndarray
    train_y: np.ndarray
    val: np.ndarray
    val_y: np.ndarray
    remaining: np.ndarray
    remaining_y: np.ndarray


def sample_split(scores: np.ndarray, ratio: float = 0.02, split: float = 0.7, seed: int = 0) -> Split:
    """The InterFaceGAN sampling protocol over ``scores [N]`` (NaN = unlabelled, skipped).

    Args:
        scores: one label per code; binary (two distinct values) or continuous.
        ratio: for continuous scores, how many codes to take from each end: a fraction of the
            labelled codes when < 1, a count when >= 1 (the paper keeps 2% of 500k samples).
        split: fraction of each side used for training; the rest validates.
        seed: shuffling seed.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not 0 < split < 1:
        raise ValueError(f"split must be in (0, 1), got {split}")
    labelled = np.flatnonzero(~np.isnan(scores))
    values = np.unique(scores[labelled])
    if len(values) < 2:
        raise ValueError(f"labels need at least two distinct values, got {values.tolist()}")
    rng = np.random.default_rng(seed)
    remaining = np.array([], dtype=np.int64)
    if len(values) == 2:
        pos = labelled[scores[labelled] == values[1]]
        neg = labelled[scores[labelled] == values[0]]
    else:
        n_side = int(ratio) if ratio >= 1 else int(round(ratio * len(labelled)))
        n_side = min(n_side, len(labelled) // 2)
        order = labelled[np.argsort(-scores[labelled], kind="stable")]
        pos, neg = order[:n_side], order[len(order) - n_side:]
        remaining = order[n_side:len(order) - n_side]
    for side, what in ((pos, "positive"), (neg, "negative")):
        if len(side) < 2 or int(len(side) * split) < 1 or len(side) - int(len(side) * split) < 1:
            raise ValueError(
                f"only {len(side)} {what} codes (of {len(labelled)} labelled) for a train/validation split; "
                f"label more codes or raise --ratio (now {ratio})"
            )
    pos, neg = rng.permutation(pos), rng.permutation(neg)
    np_, nn_ = int(len(pos) * split), int(len(neg) * split)
    train = np.concatenate([pos[:np_], neg[:nn_]])
    val = np.concatenate([pos[np_:], neg[nn_:]])
    train_y = np.concatenate([np.ones(np_), np.zeros(nn_)])
    val_y = np.concatenate([np.ones(len(pos) - np_), np.zeros(len(neg) - nn_)])
    remaining_y = (scores[remaining] > np.median(scores[labelled])).astype(np.float64)
    return Split(train, train_y, val, val_y, remaining, remaining_y)


# ---- linear classifiers -----------------------------------------------------------------------
#: The exact Newton step solves a dense system of min(n, D + 1) unknowns; above this size the fit
#: falls back to L-BFGS (same objective, slower to converge, no dense matrix).
NEWTON_MAX_SYSTEM = 6000


def fit_linear(
    x: np.ndarray, y: np.ndarray, method: str = "svm", C: float = 1.0, solver: str = "auto",
    tol: float = 1e-9, max_iter: int = 100,
) -> tuple[np.ndarray, float]:
    """Fit ``sign(n·x + b)`` to labels ``y`` in {0, 1}; returns ``(n [D], b)`` (n not normalised).

    Objective (``θ = (n, b)``, ``zᵢ = (xᵢ − x̄, 1)``, ``sᵢ = ±1``)::

        ½‖θ‖² + C Σᵢ ℓ(sᵢ zᵢ·θ),   ℓ(m) = max(0, 1 − m)²  ("svm")  or  log(1 + e⁻ᵐ)  ("logistic")

    The codes are centred and the intercept is a constant feature of value 1, regularised with
    the weights (scikit-learn's ``LinearSVC`` / ``LogisticRegression(solver="liblinear")``
    convention); centring keeps that regularisation from pulling the boundary.

    ``solver="newton"`` takes exact (generalised) Newton steps with a backtracking line search;
    the step solves ``(I + C Zᵀ diag(ℓ'') Z) d = −g`` directly when ``D + 1 <= n`` and through the
    Woodbury identity in the n x n kernel ``Z Zᵀ`` otherwise (W+ codes: D = 18 x 512 is far more
    than the number of labelled images), so it converges in a handful of steps either way.
    ``"lbfgs"`` minimises the same objective with scipy's L-BFGS-B; ``"auto"`` picks Newton unless
    its system would exceed :data:`NEWTON_MAX_SYSTEM` unknowns.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    x = np.asarray(x, dtype=np.float64)
    s = np.where(np.asarray(y) > 0.5, 1.0, -1.0)
    mean = x.mean(axis=0)
    z = np.hstack([x - mean, np.ones((len(x), 1))])
    if solver == "auto":
        solver = "newton" if min(z.shape) <= NEWTON_MAX_SYSTEM else "lbfgs"
    if solver == "newton":
        theta = _newton(z, s, method, C, tol, max_iter)
    elif solver == "lbfgs":
        theta = _lbfgs(z, s, method, C, max_iter=20 * max_iter)
    else:
        raise ValueError(f"unknown solver {solver!r}; choose auto, newton or lbfgs")
    n, b = theta[:-1], float(theta[-1])
    return n, b - float(n @ mean)


def _loss_terms(margin: np.ndarray, method: str) -> tuple[float, np.ndarray, np.ndarray]:
    """``(Σ ℓ(m), ℓ'(m), ℓ''(m))`` of the per-sample loss (generalised second derivative for the
    squared hinge)."""
    if method == "svm":
        slack = np.maximum(0.0, 1.0 - margin)
        return float(slack @ slack), -2.0 * slack, 2.0 * (slack > 0)
    p_wrong = _sigmoid(-margin)
    return float(np.logaddexp(0.0, -margin).sum()), -p_wrong, p_wrong * (1.0 - p_wrong)


def _objective(theta: np.ndarray, z: np.ndarray, s: np.ndarray, method: str, C: float):
    loss, d1, d2 = _loss_terms(s * (z @ theta), method)
    grad = theta + C * (z.T @ (s * d1))
    return 0.5 * float(theta @ theta) + C * loss, grad, d2


def _newton(z: np.ndarray, s: np.ndarray, method: str, C: float, tol: float, max_iter: int) -> np.ndarray:
    n, p = z.shape
    kernel = z @ z.T if p > n else None
    theta = np.zeros(p)
    f, g, d2 = _objective(theta, z, s, method, C)
    g0 = max(float(np.linalg.norm(g)), 1e-30)
    for _ in range(max_iter):
        if np.linalg.norm(g) <= tol * g0:
            break
        if kernel is None:
            hessian = np.eye(p) + C * (z.T * d2) @ z
            step = -scipy.linalg.solve(hessian, g, assume_a="pos")
        else:
            r = np.sqrt(C * d2)
            inner = np.eye(n) + r[:, None] * kernel * r[None, :]
            step = -(g - z.T @ (r * scipy.linalg.solve(inner, r * (z @ g), assume_a="pos")))
        slope = float(g @ step)
        if slope >= 0:  # rounding has left no descent direction: we are at the optimum
            break
        t = 1.0
        while True:
            f_new, g_new, d2_new = _objective(theta + t * step, z, s, method, C)
            if f_new <= f + 1e-4 * t * slope or t < 1e-10:
                break
            t *= 0.5
        theta = theta + t * step
        f, g, d2 = f_new, g_new, d2_new
    return theta


def _lbfgs(z: np.ndarray, s: np.ndarray, method: str, C: float, max_iter: int) -> np.ndarray:
    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        f, g, _ = _objective(theta, z, s, method, C)
        return f, g

    res = minimize(fun, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": 1e-9, "ftol": 1e-14})
    return res.x


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -t))


def accuracy(x: np.ndarray, y: np.ndarray, n: np.ndarray, b: float) -> float:
    """Fraction of ``x [m, D]`` classified as ``y`` by ``n·x + b > 0`` (NaN when m = 0)."""
    if len(y) == 0:
        return float("nan")
    return float(((x @ n + b > 0) == (np.asarray(y) > 0.5)).mean())


# ---- conditional manipulation -----------------------------------------------------------------
def project_orthogonal(primal: torch.Tensor, conditions: Sequence[torch.Tensor]) -> torch.Tensor:
    """``primal`` with its components along ``conditions`` removed, unit length.

    For one unit condition ``c`` this is ``(p − (pᵀc)c) / ‖·‖``; for several it is ``p − Cβ`` with
    ``β`` the least-squares solution of ``Cβ ≈ p`` (``C`` = conditions as columns), which is the
    projection onto the orthogonal complement of their span even when they are not orthogonal
    to each other. Shapes are flattened; the result has ``primal``'s shape and dtype.
    """
    p = primal.detach().reshape(-1).double()
    cols = torch.stack([c.detach().reshape(-1).double() for c in conditions], dim=1)
    if cols.shape[0] != p.shape[0]:
        raise ValueError(f"cannot condition a direction of size {p.shape[0]} on one of size {cols.shape[0]}")
    beta = torch.linalg.lstsq(cols, p.unsqueeze(1)).solution
    r = p - (cols @ beta).squeeze(1)
    norm = r.norm()
    if norm < 1e-8 * p.norm().clamp_min(1e-30):
        raise ValueError("the direction lies in the span of the conditioning directions; nothing is left")
    return (r / norm).reshape(primal.shape).to(primal.dtype)


def condition(direction: Direction, others: Sequence[Direction]) -> Direction:
    """A copy of ``direction`` made orthogonal to every direction in ``others`` (same space,
    shape and generator), named ``<name>_cond_<other names>``."""
    if not others:
        raise ValueError("condition on at least one direction")
    for o in others:
        if o.space != direction.space or o.vector.shape != direction.vector.shape:
            raise ValueError(
                f"cannot condition {direction.space.upper()} direction {direction.name!r} "
                f"{list(direction.vector.shape)} on {o.space.upper()} direction {o.name!r} {list(o.vector.shape)}"
            )
        if o.generator_fingerprint != direction.generator_fingerprint:
            raise ValueError(
                f"direction {o.name!r} belongs to generator {o.generator_fingerprint}, "
                f"{direction.name!r} to {direction.generator_fingerprint}"
            )
    vec = project_orthogonal(direction.vector, [o.vector for o in others])
    names = [o.name for o in others]
    stats = dict(direction.stats, conditioned_on=names,
                 cosine_to_primal=float((vec.double() * direction.vector.double()).sum()))
    layers = list(direction.layers)
    if direction.space == "w+":
        # the projection can reach rows the other boundaries use, so the edit must be allowed there
        restricted = direction.layers and all(o.layers for o in others)
        layers = sorted(set(direction.layers).union(*(o.layers for o in others))) if restricted else []
    return Direction(vec, direction.space, f"{direction.name}_cond_{'_'.join(names)}", direction.editor,
                     direction.generator_fingerprint, layers, direction.attribute, stats)


# ---- the editor -------------------------------------------------------------------------------
def code_matrix(ws: torch.Tensor, space: Space, rows: list[int]) -> np.ndarray:
    """Codes as classifier inputs ``[N, D]``: the chosen ws rows flattened (W+), or their mean (W).

    ``ws`` is ``[N, num_ws, w_dim]``, or ``[N, w_dim]`` for plain W codes.
    """
    if ws.ndim == 2:
        if space != "w":
            raise ValueError(f"codes of shape {list(ws.shape)} are W codes; a {space.upper()} boundary needs [N, num_ws, w_dim]")
        return ws.detach().double().cpu().numpy()
    sel = ws.detach().double().cpu()[:, rows]
    return (sel.mean(dim=1) if space == "w" else sel.reshape(len(sel), -1)).numpy()


class InterFaceGANEditor(Editor):
    """A direction per attribute from labelled latent codes (linear SVM by default)."""

    name = "interfacegan"

    def fit(
        self,
        codes: Inversion | torch.Tensor,
        labels: Sequence[float] | np.ndarray | torch.Tensor,
        attribute: str = "attribute",
        *,
        generator_fingerprint: str | None = None,
        space: Space = "w+",
        layers: Sequence[int] | None = None,
        method: str = "svm",
        C: float = 1.0,
        ratio: float = 0.02,
        split: float = 0.7,
        seed: int = 0,
        condition_on: Sequence[Direction] = (),
    ) -> list[Direction]:
        """Fit the boundary of ``attribute``.

        Args:
            codes: an :class:`Inversion` (its ``ws`` and generator fingerprint are used) or a
                tensor ``[N, num_ws, w_dim]`` / ``[N, w_dim]`` with ``generator_fingerprint``.
            labels: ``[N]`` scores aligned with the codes; NaN marks an unlabelled code.
            space: "w+" (the chosen rows flattened; the default, and what Feature-Style editing
                should use) or "w" (the mean of the chosen rows, exact for mapping-network codes).
            layers: the ws rows to fit on and edit (all rows when None).
            method / C: "svm" (default) or "logistic", and the inverse regularisation strength.
            ratio / split / seed: the sampling protocol (:func:`sample_split`).
            condition_on: directions of other attributes to stay orthogonal to.

        Returns:
            ``[boundary]``, or ``[boundary, conditioned boundary]`` when ``condition_on`` is given.
            Stats: ``val_accuracy`` (the number to check), ``train_accuracy``,
            ``remaining_accuracy``, sample counts and the settings.
        """
        if space not in ("w", "w+"):
            raise ValueError(f"InterFaceGAN boundaries are fit in W or W+, not {space!r}")
        if isinstance(codes, Inversion):
            ws, fp = codes.ws, codes.generator_fingerprint
        else:
            ws, fp = torch.as_tensor(codes), generator_fingerprint
            if not fp:
                raise ValueError("codes given as a tensor need generator_fingerprint=G.fingerprint()")
        if ws.ndim not in (2, 3):
            raise ValueError(f"codes must be [N, num_ws, w_dim] or [N, w_dim], got {list(ws.shape)}")
        scores = np.asarray(torch.as_tensor(labels, dtype=torch.float64).cpu()).ravel()
        if len(scores) != len(ws):
            raise ValueError(f"{len(scores)} labels for {len(ws)} codes")
        num_ws = ws.shape[1] if ws.ndim == 3 else 1
        rows = sorted(set(int(i) for i in layers)) if layers is not None else list(range(num_ws))
        if ws.ndim == 3 and any(not 0 <= i < num_ws for i in rows):
            raise ValueError(f"ws rows {rows} out of range 0..{num_ws - 1}")

        x = code_matrix(ws, space, rows)
        sp = sample_split(scores, ratio, split, seed)
        n, b = fit_linear(x[sp.train], sp.train_y, method, C)
        norm = float(np.linalg.norm(n))
        if norm == 0:
            raise ValueError(f"the {method} fit found no boundary for {attribute!r} (all weights zero)")
        stats = {
            "method": method, "C": C, "ratio": ratio, "split": split, "seed": seed,
            "train_accuracy": accuracy(x[sp.train], sp.train_y, n, b),
            "val_accuracy": accuracy(x[sp.val], sp.val_y, n, b),
            "remaining_accuracy": accuracy(x[sp.remaining], sp.remaining_y, n, b),
            "n_train": len(sp.train), "n_val": len(sp.val), "n_remaining": len(sp.remaining),
            "bias": b / norm,
        }
        unit = torch.from_numpy(n / norm).float()
        if space == "w+":
            vec = torch.zeros(num_ws, ws.shape[2])
            vec[rows] = unit.reshape(len(rows), ws.shape[2])
        else:
            vec = unit
        layers_meta = rows if ws.ndim == 3 else []
        primal = Direction(vec, space, attribute, self.name, fp, layers_meta, attribute, stats)
        if not condition_on:
            return [primal]
        conditioned = condition(primal, list(condition_on))
        conditioned.stats.update(_refit_stats(conditioned, ws, sp), primal_val_accuracy=stats["val_accuracy"])
        return [primal, conditioned]


def _refit_stats(d: Direction, ws: torch.Tensor, sp: Split) -> dict[str, float]:
    """The accuracies of a conditioned direction *itself* as a classifier: codes projected on
    it, thresholded halfway between the two training classes' mean projections."""
    if d.space == "w+" and ws.ndim == 3:
        rows = list(d.layers) or list(range(ws.shape[1]))
        x = code_matrix(ws, "w+", rows)
        n = d.vector[rows].reshape(-1).double().numpy()
    else:
        x = code_matrix(ws, "w", list(d.layers) or list(range(ws.shape[1] if ws.ndim == 3 else 1)))
        n = d.vector.reshape(-1).double().numpy()
    proj = x[sp.train] @ n
    y = np.asarray(sp.train_y) > 0.5
    b = -float(proj[y].mean() + proj[~y].mean()) / 2 if y.any() and (~y).any() else 0.0
    return {"train_accuracy": accuracy(x[sp.train], sp.train_y, n, b),
            "val_accuracy": accuracy(x[sp.val], sp.val_y, n, b),
            "remaining_accuracy": accuracy(x[sp.remaining], sp.remaining_y, n, b), "bias": b}


@hookimpl
def register_editors(register):
    register("interfacegan", InterFaceGANEditor,
             description="linear boundary of a labelled attribute (InterFaceGAN, linear SVM)")
