"""Linear SVMs for the probes: one objective, two solvers.

Every problem ``p`` is liblinear's L2-regularised, squared-hinge ("L2-loss") SVM with a
regularised bias, as scikit-learn's ``LinearSVC(penalty="l2", loss="squared_hinge",
intercept_scaling=1)`` solves it::

    min_w  1/2 |w~|^2 + sum_i C_p s_ip max(0, 1 - y_ip w~ . x~_i)^2,    x~ = [x, 1], w~ = [w, b]

``y`` is +-1 per sample and problem, ``s`` a per-sample cost multiplier (class weights; 0 leaves
a sample out). Many problems share one feature matrix (every class and every cost of a probe).

``sklearn``
    One ``LinearSVC`` per problem (liblinear's dual coordinate descent, stopping at ``tol``).
``torch``
    All problems at once on the torch device: the primal Newton method of Chapelle (2007,
    "Training a support vector machine in the primal"). Each step solves, per problem, the
    regularised least-squares system of the samples ``I`` inside the margin, then a backtracking
    line search (Armijo) moves towards its solution; when the margin set stops changing the
    solution is exact. The system is the kernel form's (``n x n``: ``w~ = X~^T alpha``,
    ``(K_II + diag(1 / (2 C s_I))) alpha_I = y_I``) unless the primal one (``(d+1) x (d+1)``) is
    cheaper to build and factor (features much fewer than samples); batched, solved by Cholesky
    in float64.

Both return the same ``(w, b)`` up to liblinear's tolerance (``tests/test_probe.py``;
``benchmarks/probe_solvers.py`` measures them side by side).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

SOLVERS = ("sklearn", "torch")

NEWTON_STEPS = 50
"""At most this many Newton steps per problem (they usually stop after 5-15)."""

_BATCH_BYTES = {"cpu": 1 << 30, "cuda": 16 << 30}
"""Memory the torch solver's batched systems may take at once, per device type."""


@dataclass
class SvmFit:
    """Weights ``w`` [P, d], biases ``b`` [P] (float64, numpy), and how each problem ended:
    ``converged`` [P] (false where liblinear stopped at ``max_iter``, or Newton at
    :data:`NEWTON_STEPS`) and ``steps`` [P] (liblinear's iterations, or Newton steps)."""

    w: np.ndarray
    b: np.ndarray
    converged: np.ndarray
    steps: np.ndarray

    def decision(self, x: np.ndarray) -> np.ndarray:
        """Decision values ``x @ w.T + b`` for samples ``x`` [m, d]: [m, P]."""
        return np.asarray(x, dtype=np.float64) @ self.w.T + self.b


def fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray, costs: np.ndarray, solver: str,
        device: torch.device | None = None, tol: float = 1e-4, max_iter: int = 2000,
        seed: int = 0) -> SvmFit:
    """Fit ``P`` SVMs on samples ``x`` [n, d]: labels ``y`` [n, P] in {-1, +1}, cost multipliers
    ``weight`` [n, P] (>= 0; 0 leaves the sample out of problem p) and costs ``costs`` [P] > 0.

    ``tol``, ``max_iter`` and ``seed`` (liblinear's shuffling) reach the ``sklearn`` solver;
    ``device`` the ``torch`` one. A problem left without both labels gets ``w = 0`` and the bias
    of its one label (+-1).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown SVM solver {solver!r}; choose from {SOLVERS}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    n, p = y.shape
    if x.shape[0] != n or weight.shape != y.shape or costs.shape != (p,):
        raise ValueError(f"SVM shapes disagree: x {x.shape}, y {y.shape}, weight {weight.shape}, "
                         f"costs {costs.shape}")
    if np.any(costs <= 0) or np.any(weight < 0):
        raise ValueError("SVM costs must be > 0 and sample weights >= 0")
    used = weight > 0
    both = np.any(used & (y > 0), axis=0) & np.any(used & (y < 0), axis=0)
    out = SvmFit(np.zeros((p, x.shape[1])), np.zeros(p), np.ones(p, dtype=bool), np.zeros(p, dtype=int))
    for j in np.nonzero(~both)[0]:  # one label only: a constant decision of that label
        out.b[j] = 1.0 if np.any(used[:, j] & (y[:, j] > 0)) else -1.0
    todo = np.nonzero(both)[0]
    if todo.size:
        solve = _sklearn if solver == "sklearn" else _torch
        w, b, converged, steps = solve(x, y[:, todo], weight[:, todo], costs[todo],
                                       device=device, tol=tol, max_iter=max_iter, seed=seed)
        out.w[todo], out.b[todo], out.converged[todo], out.steps[todo] = w, b, converged, steps
    return out


def _sklearn(x, y, weight, costs, *, tol, max_iter, seed, **_):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    p = y.shape[1]
    w, b = np.zeros((p, x.shape[1])), np.zeros(p)
    converged, steps = np.ones(p, dtype=bool), np.zeros(p, dtype=int)
    for j in range(p):
        keep = weight[:, j] > 0
        clf = LinearSVC(C=float(costs[j]), penalty="l2", loss="squared_hinge", dual=True,
                        intercept_scaling=1.0, tol=tol, max_iter=max_iter, random_state=seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(x[keep], y[keep, j], sample_weight=weight[keep, j])
        converged[j] = not any(issubclass(c.category, ConvergenceWarning) for c in caught)
        # LinearSVC orders its classes (-1, +1): coef_ scores the positive label
        w[j], b[j], steps[j] = clf.coef_[0], clf.intercept_[0], int(np.max(clf.n_iter_))
    return w, b, converged, steps


def uses_primal(n: int, d: int) -> bool:
    """Whether the torch solver takes the primal system for ``n`` samples of ``d`` features: when
    building and factoring it (``2 n (d+1)^2 + (d+1)^3 / 3``) costs less than factoring the
    kernel one (``n^3 / 3``)."""
    dims = d + 1
    return 2 * n * dims ** 2 + dims ** 3 / 3 < n ** 3 / 3


def _torch(x, y, weight, costs, *, device, **_):
    device = device or torch.device("cpu")
    xt = torch.as_tensor(x, dtype=torch.float64, device=device)
    xt = torch.cat([xt, torch.ones(len(xt), 1, dtype=xt.dtype, device=device)], 1)  # x~ = [x, 1]
    n, p = y.shape
    space = _Primal(xt) if uses_primal(n, xt.shape[1] - 1) else _Kernel(xt)
    chunk = max(1, _BATCH_BYTES.get(device.type, 1 << 30) // (8 * 3 * space.size ** 2))
    coef = torch.zeros(space.size, p, dtype=torch.float64, device=device)
    converged = torch.zeros(p, dtype=torch.bool)
    steps = torch.zeros(p, dtype=torch.long)
    yt = torch.as_tensor(y, dtype=torch.float64, device=device)
    ct = torch.as_tensor(weight * costs[None, :], dtype=torch.float64, device=device)
    for start in range(0, p, chunk):
        cols = slice(start, min(p, start + chunk))
        c, conv, k = _newton(space, yt[:, cols], ct[:, cols])
        coef[:, cols], converged[cols], steps[cols] = c, conv.cpu(), k.cpu()
    w = space.weights(coef).T  # [P, d + 1]
    return w[:, :-1].cpu().numpy(), w[:, -1].cpu().numpy(), converged.numpy(), steps.numpy()


class _Primal:
    """Coefficients are ``w~`` itself; a Newton target solves
    ``(I + X~_I^T diag(2 C_I) X~_I) w~ = X~_I^T (2 C_I y_I)``."""

    def __init__(self, xt):
        self.xt, self.size = xt, xt.shape[1]

    def out(self, coef):
        return self.xt @ coef

    def weights(self, coef):
        return coef

    def target(self, active, y, cost):
        s = (2 * cost * active).T  # [P, n]
        system = (self.xt.T[None] * s[:, None, :]) @ self.xt
        system.diagonal(dim1=1, dim2=2).add_(1.0)
        rhs = ((s * y.T) @ self.xt)[:, :, None]
        return torch.cholesky_solve(rhs, torch.linalg.cholesky_ex(system)[0])[:, :, 0].T

    def regularizer(self, coef, direction):
        """``1/2 |coef + t direction|^2`` as ``(r0, r1, r2)``: r0 + t r1 + t^2 r2 / 2."""
        return (0.5 * (coef * coef).sum(0), (coef * direction).sum(0), (direction * direction).sum(0))


class _Kernel:
    """Coefficients ``alpha`` with ``w~ = X~^T alpha`` (the representer theorem); a Newton
    target solves ``(K_II + diag(1 / (2 C_I))) alpha_I = y_I``, ``alpha = 0`` elsewhere
    (Chapelle 2007), ``K = X~ X~^T``."""

    def __init__(self, xt):
        self.xt, self.kernel, self.size = xt, xt @ xt.T, xt.shape[0]

    def out(self, coef):
        return self.kernel @ coef

    def weights(self, coef):
        return self.xt.T @ coef

    def target(self, active, y, cost):
        m = active.T.to(y.dtype)  # [P, n]
        # samples outside the margin get an identity row, so their alpha comes out 0
        diag = torch.where(active.T, 1 / (2 * cost.T.clamp_min(1e-300)), torch.ones_like(m))
        system = m[:, :, None] * self.kernel[None] * m[:, None, :]
        system.diagonal(dim1=1, dim2=2).add_(diag)
        factor, _ = torch.linalg.cholesky_ex(system)
        return torch.cholesky_solve((m * y.T)[:, :, None], factor)[:, :, 0].T

    def regularizer(self, coef, direction):
        """``1/2 (a + t d)^T K (a + t d)`` as ``(r0, r1, r2)``: r0 + t r1 + t^2 r2 / 2."""
        kc, kd = self.kernel @ coef, self.kernel @ direction
        return 0.5 * (coef * kc).sum(0), (coef * kd).sum(0), (direction * kd).sum(0)


def _newton(space, y, cost):
    """Newton's method with a margin set for the problems in the columns of ``y`` and ``cost``
    (per-sample C, 0 = left out); returns (coefficients, converged [P], steps [P])."""
    p = y.shape[1]
    coef = torch.zeros(space.size, p, dtype=y.dtype, device=y.device)
    out = torch.zeros_like(y)  # the decision values of the current coefficients
    converged = torch.zeros(p, dtype=torch.bool, device=y.device)
    steps = torch.zeros(p, dtype=torch.long, device=y.device)
    for _ in range(NEWTON_STEPS):
        todo = torch.nonzero(~converged).flatten()
        if todo.numel() == 0:
            break
        c, o, yy, cc = coef[:, todo], out[:, todo], y[:, todo], cost[:, todo]
        active = (cc > 0) & (yy * o < 1)
        direction = space.target(active, yy, cc) - c
        change = space.out(direction)
        t = _backtrack(space.regularizer(c, direction), o, change, yy, cc)
        c, o = c + t * direction, o + t * change
        coef[:, todo], out[:, todo] = c, o
        steps[todo] += 1
        # the margin set that gave the step is the one at the new point: the solution is exact
        converged[todo] = torch.all(((cc > 0) & (yy * o < 1)) == active, dim=0) & (t == 1)
    return coef, converged, steps


def _loss(out, y, cost):
    """sum_i C_i max(0, 1 - y_i out_i)^2 per problem (samples with C_i = 0 left out)."""
    hinge = torch.clamp(1 - y * out, min=0) * (cost > 0)
    return (cost * hinge * hinge).sum(0)


def _backtrack(reg, out, change, y, cost, shrink: float = 0.5, tries: int = 30):
    """Per problem, the largest step ``t`` in ``1, 1/2, 1/4, ...`` with Armijo's sufficient
    decrease of the objective; ``reg = (r0, r1, r2)`` is its regulariser along the step,
    ``change`` how the decision values move per unit step."""
    r0, r1, r2 = reg
    f0 = r0 + _loss(out, y, cost)
    hinge = torch.clamp(1 - y * out, min=0) * (cost > 0)
    slope = r1 - (2 * cost * hinge * y * change).sum(0)
    t = torch.ones_like(f0)
    for _ in range(tries):
        f = r0 + t * r1 + 0.5 * t * t * r2 + _loss(out + t * change, y, cost)
        ok = f <= f0 + 1e-4 * t * slope + 1e-12 * f0.abs()  # (rounding at the optimum)
        if bool(ok.all()):
            break
        t = torch.where(ok, t, t * shrink)
    return t
