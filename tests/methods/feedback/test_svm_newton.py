"""The Newton solver of the exemplar SVM reaches the optimum an independent solver finds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from spyglass.query.svm import fit_svm

SMOOTHING = 0.1


def objective(params: np.ndarray, x: np.ndarray, y: np.ndarray, c: np.ndarray, l2: float):
    """J and its gradient, written out here from the formula (not from the solver)."""
    w, b = params[:-1], params[-1]
    z = y * (x @ w + b)
    h = SMOOTHING
    loss = np.where(z >= 1 + h, 0.0, np.where(z <= 1 - h, 1 - z, (1 + h - z) ** 2 / (4 * h)))
    slope = np.where(z >= 1 + h, 0.0, np.where(z <= 1 - h, -1.0, -(1 + h - z) / (2 * h)))
    value = c @ loss + 0.5 * l2 * w @ w
    pulled = c * slope * y
    return value, np.append(x.T @ pulled + l2 * w, pulled.sum())


def examples(seed: int, positives: int, negatives: int, dims: int):
    """Unit rows like feedback's: a few positives near one direction, random negatives,
    class-balanced weights."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(dims)
    pos = centre + 0.8 * rng.standard_normal((positives, dims))
    neg = rng.standard_normal((negatives, dims)) + 0.3 * centre
    x = np.vstack([pos, neg])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.r_[np.ones(positives), -np.ones(negatives)]
    n = positives + negatives
    c = np.r_[np.full(positives, n / 2 / positives), np.full(negatives, n / 2 / negatives)]
    return x, y, c


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    positives=st.integers(1, 12),
    negatives=st.integers(5, 300),
    dims=st.sampled_from([8, 64, 257]),
    l2=st.sampled_from([0.1, 1.0, 10.0]),
)
def test_newton_reaches_the_optimum_of_an_independent_solver(
    seed: int, positives: int, negatives: int, dims: int, l2: float
) -> None:
    x, y, c = examples(seed, positives, negatives, dims)
    start = x[:positives].mean(axis=0)
    fit = fit_svm(x, y, c, l2, start, SMOOTHING)
    reference = minimize(
        objective,
        np.append(start, 0.0),
        args=(x, y, c, l2),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 20_000, "ftol": 1e-15, "gtol": 1e-10},
    )
    found, _ = objective(np.append(fit.w, fit.b), x, y, c, l2)
    assert found <= reference.fun + 1e-7 * max(1.0, abs(reference.fun))
    cosine = fit.w @ reference.x[:-1] / np.linalg.norm(fit.w) / np.linalg.norm(reference.x[:-1])
    assert cosine > 0.9999


def test_newton_gradient_vanishes_at_the_fit() -> None:
    x, y, c = examples(7, 5, 1000, 1280)
    start = x[:5].mean(axis=0)
    fit = fit_svm(x.astype(np.float32), y, c, 10.0, start, SMOOTHING)
    _, first = objective(np.append(start, 0.0), x, y, c, 10.0)
    _, last = objective(np.append(fit.w, fit.b), x, y, c, 10.0)
    # float32 products bound how small it gets; the start's gradient is ~1e3 times more.
    assert np.linalg.norm(last) < 1e-4 * np.linalg.norm(first)
    assert fit.steps < 30


def test_the_start_does_not_change_the_optimum() -> None:
    x, y, c = examples(3, 4, 200, 64)
    one = fit_svm(x, y, c, 10.0, x[:4].mean(axis=0), SMOOTHING)
    other = fit_svm(x, y, c, 10.0, -x[10], SMOOTHING)
    assert np.allclose(one.w, other.w, atol=1e-6)
    assert one.b == pytest.approx(other.b, abs=1e-6)


def test_a_step_that_is_not_finite_ends_the_fit_at_the_last_finite_point(monkeypatch) -> None:
    """The fit judges its iterates by their values, not by floating-point flags (which
    OpenBLAS can raise spuriously): a step to infinity (forced here through the line
    search) is not taken, and no RuntimeWarning reaches the caller."""
    import warnings

    import spyglass.query.svm as svm

    x, y, c = examples(3, 4, 60, 32)
    start = x[:4].mean(axis=0)
    monkeypatch.setattr(svm, "_line_search", lambda *args: float("inf"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_svm(x, y, c, 1.0, start, SMOOTHING)
    assert fit.steps == 1 and fit.b == 0.0
    np.testing.assert_array_equal(fit.w, start)
