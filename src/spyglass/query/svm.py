"""The linear SVM with a smoothed hinge, solved by Newton's method in the primal.

    J(w, b) = sum_i c_i loss(y_i (w . x_i + b)) + l2 / 2 ||w||^2

with ``loss`` the hinge rounded over 1 - h < z < 1 + h (see
``spyglass.query.feedback.smooth_hinge``). The loss is piecewise quadratic: zero past
the margin, linear below it, quadratic only in the band between. So the Hessian is
l2 I plus the band's examples alone, and each Newton step is exact once every example
has settled in its piece (O. Chapelle, "Training a Support Vector Machine in the
Primal", Neural Computation 2007). A step costs two products with the (n, dims)
examples plus conjugate gradients over the band's few rows; the exact line search
along the step is O(n). With feedback's constants (lambda = 10, a thousand examples),
most examples sit on the linear piece and a fit takes a handful of steps where L-BFGS
took about a hundred evaluations (300 ms on 1,280-d image vectors on a busy machine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Newton steps at most; a fit on feedback's examples takes well under ten.
MAX_STEPS = 50
#: Stop when the gradient has shrunk by this factor (relative to the first one).
GRADIENT_TOLERANCE = 1e-6
#: Conjugate-gradient iterations per Newton step at most (the band rarely needs more).
MAX_CG_STEPS = 100
#: The bias has no penalty; a tiny one keeps the Newton system definite when no
#: example lies in the band (the line search, which is exact, then decides the step).
BIAS_DAMPING = 1e-8
#: The line search stops when phi'(t) has shrunk by this factor from phi'(0): the
#: Newton steps that follow correct what is left.
LINE_TOLERANCE = 1e-6
#: Band rows whose curvature exceeds this many times the median are inverted exactly in
#: the preconditioner (see ``_heavy_rows_preconditioner``), at most this many.
HEAVY_FACTOR = 8.0
MAX_HEAVY_ROWS = 64


@dataclass(frozen=True)
class SvmFit:
    """``w`` (dims,) float64, ``b`` float, and the Newton steps taken."""

    w: np.ndarray
    b: float
    steps: int


def _slope_and_band(z: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """(d loss / dz (n,), band mask (n,)) of the smoothed hinge at margins z (n,).

    With u = 1 + h - z the slope is -clip(u / 2h, 0, 1): 0 past the margin, -1 on the
    linear piece, in between on the band (0 < u < 2h)."""
    share = np.clip((1 + h - z) / (2 * h), 0.0, 1.0)
    return -share, (share > 0.0) & (share < 1.0)


def fit_svm(
    vectors: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    l2: float,
    start: np.ndarray,
    smoothing: float,
) -> SvmFit:
    """Minimise J from w = ``start`` (dims,), b = 0.

    ``vectors`` (n, dims) float32 or float64, ``labels`` (n,) in {+1, -1}, ``weights``
    (n,) per-example loss weights c_i, ``l2`` > 0, ``smoothing`` h > 0.

    The floating-point status flags are not trusted: OpenBLAS kernels can raise
    "invalid" without producing a NaN (numpy issue 24067), which NumPy prints as a
    RuntimeWarning; one appeared once in a full test run whose results were exact. The
    fit checks its iterates itself: a step that is not finite ends it at the last
    finite point."""
    with np.errstate(invalid="ignore", over="ignore"):
        x = vectors
        y = np.asarray(labels, np.float64)
        c = np.asarray(weights, np.float64)
        h = float(smoothing)
        w = np.array(start, np.float64)
        b = 0.0
        # Products in the examples' dtype through BLAS (sgemv for float32 examples): about
        # twice einsum's speed on one thread, where the fit spent most of its time; the
        # server runs BLAS on one thread (``spyglass.server.process``).
        margins = y * ((x @ w.astype(x.dtype)).astype(np.float64) + b)
        first_norm = None
        for step in range(1, MAX_STEPS + 1):
            slope, band = _slope_and_band(margins, h)
            coefficient = c * slope * y
            grad_w = l2 * w + (coefficient.astype(x.dtype) @ x).astype(np.float64)
            grad_b = float(coefficient.sum())
            norm = float(np.sqrt(grad_w @ grad_w + grad_b * grad_b))
            first_norm = norm if first_norm is None else first_norm
            if norm <= GRADIENT_TOLERANCE * max(first_norm, 1e-12):
                return SvmFit(w, b, step - 1)
            curvature = c[band] / (2 * h)
            # Inexact Newton (Eisenstat & Walker's forcing term): loose solves while far
            # from the optimum, tight ones near it, where the steps become exact.
            forcing = min(0.5, float(np.sqrt(norm / max(first_norm, 1e-300))))
            direction_w, direction_b = _newton_direction(
                x[band], curvature, l2, grad_w, grad_b, forcing
            )
            along = y * ((x @ direction_w.astype(x.dtype)).astype(np.float64) + direction_b)
            t = _line_search(margins, along, c, h, l2, w, direction_w)
            if t <= 0.0:
                return SvmFit(w, b, step)
            moved_w, moved_b = w + t * direction_w, b + t * direction_b
            if not (np.isfinite(moved_w).all() and np.isfinite(moved_b)):
                return SvmFit(w, b, step)
            w, b = moved_w, moved_b
            margins = margins + t * along
        return SvmFit(w, b, MAX_STEPS)


def _newton_direction(
    band_rows: np.ndarray,
    curvature: np.ndarray,
    l2: float,
    grad_w: np.ndarray,
    grad_b: float,
    forcing: float,
) -> tuple[np.ndarray, float]:
    """Solve H d = -g to a relative residual ``forcing`` by preconditioned conjugate
    gradients, H = diag(l2, .., l2, damping) + [X_B 1]^T diag(curvature) [X_B 1] over the
    band's rows X_B (m, dims). Vectors are [w, b] (dims + 1,) float64."""
    dims = len(grad_w)
    damping = BIAS_DAMPING * l2
    gradient = np.append(grad_w, grad_b)
    if not len(curvature):
        # No example in the band: J is quadratic in w (Hessian l2 I) but linear in b, so
        # b has no Newton step. Scaled like w, the exact line search finds the step in a
        # few evaluations; scaled by 1 / damping, b's part dwarfed w's, the search took
        # about 40 evaluations to find t ~ 1e-7, and the step moved b alone (one Newton
        # step of the usual nine or ten wasted; measured on feedback's examples).
        return -grad_w / l2, -grad_b / l2

    def hessian_times(v: np.ndarray) -> np.ndarray:
        inside = curvature * (
            (band_rows @ v[:dims].astype(band_rows.dtype)).astype(np.float64) + v[dims]
        )
        pulled = inside.astype(band_rows.dtype) @ band_rows
        return np.append(
            l2 * v[:dims] + pulled.astype(np.float64), damping * v[dims] + inside.sum()
        )

    precondition = _heavy_rows_preconditioner(band_rows, curvature, l2, damping)
    d = np.zeros(dims + 1)
    r = -gradient
    z = precondition(r)
    p = z.copy()
    rho = float(r @ z)
    target = forcing**2 * float(r @ r)
    for _ in range(MAX_CG_STEPS):
        q = hessian_times(p)
        alpha = rho / float(p @ q)
        d += alpha * p
        r -= alpha * q
        if float(r @ r) <= target:
            break
        z = precondition(r)
        new_rho = float(r @ z)
        p = z + (new_rho / rho) * p
        rho = new_rho
    return d[:dims], float(d[dims])


def _heavy_rows_preconditioner(
    band_rows: np.ndarray, curvature: np.ndarray, l2: float, damping: float
) -> Callable[[np.ndarray], np.ndarray]:
    """M^-1 for M = diag(l2, .., l2, bias) + U^T diag(c_P) U, U = [X_P 1] the band's
    heaviest rows (the marked images: class balancing gives each a hundred times a
    random negative's weight, and those few directions are what makes H ill-conditioned),
    inverted exactly by Woodbury's identity through a small (p, p) solve. ``bias`` is
    H's own diagonal entry for b from the other rows."""
    dims = band_rows.shape[1]
    heavy = np.flatnonzero(curvature > HEAVY_FACTOR * float(np.median(curvature)))
    heavy = heavy[np.argsort(-curvature[heavy], kind="stable")][:MAX_HEAVY_ROWS]
    light = np.ones(len(curvature), bool)
    light[heavy] = False
    diagonal = np.full(dims + 1, l2)
    diagonal[dims] = damping + float(curvature[light].sum())
    if not len(heavy):
        return lambda v: v / diagonal
    u = np.hstack([np.asarray(band_rows[heavy], np.float64), np.ones((len(heavy), 1))])
    scaled = u / diagonal
    small = np.diag(1.0 / curvature[heavy]) + scaled @ u.T
    # Inverted once here, not solved at each conjugate-gradient step: the (p, p) matrix
    # is symmetric positive definite and small (p <= 64), and two np.linalg.solve calls
    # per step cost more in their Python checks than the arithmetic.
    inverse = np.linalg.inv(small)

    def solve(v: np.ndarray) -> np.ndarray:
        return v / diagonal - scaled.T @ (inverse @ (scaled @ v))

    return solve


def _line_search(
    margins: np.ndarray,
    along: np.ndarray,
    c: np.ndarray,
    h: float,
    l2: float,
    w: np.ndarray,
    direction_w: np.ndarray,
) -> float:
    """The t >= 0 minimising phi(t) = J(w + t d): phi is convex and piecewise quadratic,
    so phi'(t) (non-decreasing, piecewise linear) is solved by safeguarded Newton
    steps on a bracket, O(n) each."""
    w_d, d_d = float(w @ direction_w), float(direction_w @ direction_w)

    def derivative(t: float) -> tuple[float, float]:
        slope, band = _slope_and_band(margins + t * along, h)
        first = float(c @ (slope * along)) + l2 * (w_d + t * d_d)
        second = float(c[band] @ (along[band] ** 2)) / (2 * h) + l2 * d_d
        return first, second

    slope0, _ = derivative(0.0)
    if slope0 >= 0.0:
        return 0.0
    # phi' grows by at least l2 ||d||^2 per unit of t, so a bracket is found quickly;
    # t = 1 (the Newton step) is tried first and is usually the answer.
    low, high = 0.0, 1.0
    value, second = derivative(high)
    while value < 0.0:
        low, high = high, high * 2.0
        if high > 1e12:
            return low
        value, second = derivative(high)
    t = high
    for _ in range(60):
        if abs(value) <= LINE_TOLERANCE * abs(slope0):
            return t
        if value < 0.0:
            low = t
        else:
            high = t
        newton = t - value / second if second > 0.0 else None
        t = newton if newton is not None and low < newton < high else 0.5 * (low + high)
        if high - low <= 1e-15 * max(high, 1.0):
            break
        value, second = derivative(t)
    return t
