"""The feedback methods' formulas on small hand-made vectors, against direct computation."""

from __future__ import annotations

import numpy as np
import pytest

from spyglass.query.feedback import (
    LinearObjective,
    build_examples,
    exemplar_svm,
    fit_linear,
    logistic_loss,
    rocchio_vector,
    seesaw_vector,
    smooth_hinge,
    svm_with_text,
)


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def numeric_gradient(function, params: np.ndarray, step: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(params)
    for i in range(len(params)):
        shift = np.zeros_like(params)
        shift[i] = step
        grad[i] = (function(params + shift)[0] - function(params - shift)[0]) / (2 * step)
    return grad


# -- Rocchio ----------------------------------------------------------------------------


def test_rocchio_is_exactly_alpha_q_plus_beta_mean_good_minus_gamma_mean_bad() -> None:
    q = np.array([1.0, 0.0, 0.0])
    good = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    bad = np.array([[1.0, 1.0, 0.0]])
    moved = rocchio_vector(q, good, bad, alpha=1.0, beta=0.75, gamma=0.15)
    # 1 * q + 0.75 * (0, .5, .5) - 0.15 * (1, 1, 0)
    np.testing.assert_allclose(moved, [0.85, 0.225, 0.375])


def test_rocchio_without_a_query_or_negatives_is_the_scaled_mean_of_the_good() -> None:
    good = np.array([[2.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(rocchio_vector(None, good, np.zeros((0, 2)), beta=0.5), [0.5, 1.0])


# -- losses -----------------------------------------------------------------------------


def test_smooth_hinge_equals_the_hinge_outside_its_band_and_is_close_inside() -> None:
    h = 0.1
    z = np.linspace(-3, 3, 601)
    loss, _ = smooth_hinge(z, h)
    hinge = np.maximum(0.0, 1.0 - z)
    outside = np.abs(z - 1) >= h
    np.testing.assert_allclose(loss[outside], hinge[outside], atol=1e-12)
    assert np.all(loss >= hinge - 1e-12)
    assert np.max(loss - hinge) <= h / 4 + 1e-12


@pytest.mark.parametrize("loss", [smooth_hinge, logistic_loss])
def test_loss_derivatives_match_finite_differences(loss) -> None:
    z = np.array([-30.0, -2.0, 0.0, 0.5, 0.93, 0.95, 1.0, 1.05, 1.2, 3.0, 40.0])
    step = 1e-6
    numeric = (loss(z + step)[0] - loss(z - step)[0]) / (2 * step)
    np.testing.assert_allclose(loss(z)[1], numeric, atol=1e-5)


def test_logistic_loss_is_stable_for_large_margins() -> None:
    value, grad = logistic_loss(np.array([-800.0, 800.0]))
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, [800.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(grad, [-1.0, 0.0], atol=1e-12)


# -- examples ---------------------------------------------------------------------------


def test_examples_balance_marked_against_random_and_weigh_every_mark_alike() -> None:
    rng = np.random.default_rng(1)
    positives, marked, random = (unit(rng.normal(size=(n, 4))) for n in (3, 2, 50))
    examples = build_examples(positives, marked, random)
    assert examples.vectors.shape == (55, 4)
    np.testing.assert_array_equal(examples.labels, [1] * 3 + [-1] * 52)
    # The weights of an SVM's sum of losses: the good images hold half of the n = 55,
    # the random ones the other half, and a bad mark weighs what a good one does.
    weights = examples.weights
    assert weights[:3].sum() == pytest.approx(55 / 2)
    assert weights[5:].sum() == pytest.approx(55 / 2)
    np.testing.assert_allclose(weights[:5], 55 / 2 / 3)
    np.testing.assert_allclose(weights[5:], 55 / 2 / 50)


# -- the objective ----------------------------------------------------------------------


def small_problem(seed: int = 0, dims: int = 6):
    rng = np.random.default_rng(seed)
    positives = unit(rng.normal(size=(4, dims)) + 1.5 * np.eye(dims)[0])
    negatives = unit(rng.normal(size=(30, dims)))
    marked = unit(rng.normal(size=(2, dims)) + np.eye(dims)[1])
    # float64 examples: finite differences need the objective to full precision.
    examples = build_examples(positives, marked, negatives, np.float64)
    return examples, positives, unit(rng.normal(size=dims))


@pytest.mark.parametrize(
    ("loss", "center_scale", "text_weight"),
    [(smooth_hinge, None, 0.0), (smooth_hinge, None, 5.0), (logistic_loss, 3.0, 0.0)],
)
def test_objective_gradient_matches_finite_differences(loss, center_scale, text_weight) -> None:
    examples, _, text = small_problem()
    center = None if center_scale is None else center_scale * text
    objective = LinearObjective(
        examples, loss, l2=0.7, center=center, text=text, text_weight=text_weight
    )
    rng = np.random.default_rng(5)
    for _ in range(5):
        params = rng.normal(size=examples.vectors.shape[1] + 1)
        _, analytic = objective(params)
        np.testing.assert_allclose(analytic, numeric_gradient(objective, params), atol=1e-5)


def test_objective_value_is_the_sum_of_its_terms_computed_directly() -> None:
    examples, _, text = small_problem(seed=3)
    objective = LinearObjective(examples, smooth_hinge, l2=2.0, text=text, text_weight=4.0)
    params = np.random.default_rng(2).normal(size=examples.vectors.shape[1] + 1)
    w, b = params[:-1], params[-1]
    direct = 0.0
    for x, y, c in zip(examples.vectors, examples.labels, examples.weights, strict=True):
        margin = y * (float(np.dot(w, x)) + b)
        direct += c * smooth_hinge(np.array([margin]))[0][0]
    direct += 0.5 * 2.0 * float(np.dot(w, w))
    direct += 4.0 * (1 - float(np.dot(text, w)) / float(np.linalg.norm(w)))
    assert objective(params)[0] == pytest.approx(direct, rel=1e-10)


@pytest.mark.parametrize(
    ("loss", "text_weight", "center_scale"),
    [(smooth_hinge, 0.0, None), (smooth_hinge, 1000.0, None), (logistic_loss, 0.0, 10.0)],
)
def test_fitted_parameters_beat_every_random_perturbation(loss, text_weight, center_scale) -> None:
    examples, positives, text = small_problem(seed=7)
    center = None if center_scale is None else center_scale * text
    objective = LinearObjective(
        examples, loss, 0.5, center=center, text=text, text_weight=text_weight
    )
    fitted = fit_linear(objective, positives.mean(axis=0))
    best = objective(fitted)[0]
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1e-2, 1e-1):
        for _ in range(50):
            nudged = fitted + scale * rng.normal(size=len(fitted))
            assert objective(nudged)[0] >= best - 1e-9


def test_svm_on_a_two_dimensional_toy_matches_a_brute_force_grid_search() -> None:
    # Two clusters on the circle; the objective is minimised over a dense (w1, w2, b) grid.
    positives = unit(np.array([[1.0, 0.2], [1.0, -0.1], [0.9, 0.3]]))
    negatives = unit(np.array([[-0.2, 1.0], [0.1, 1.0], [-1.0, 0.3], [-0.5, -1.0], [0.3, 1.0]]))
    examples = build_examples(positives, np.zeros((0, 2)), negatives, np.float64)
    w = exemplar_svm(examples, positives, l2=0.3)
    objective = LinearObjective(examples, smooth_hinge, 0.3)
    fitted = objective(fit_linear(objective, positives.mean(axis=0)))[0]
    # The same objective, written out directly and evaluated on every grid point at once.
    a, c, b = np.meshgrid(np.linspace(-4, 4, 81), np.linspace(-4, 4, 81), np.linspace(-3, 3, 61))
    w_grid = np.stack([a.ravel(), c.ravel()], axis=1)
    margins = examples.labels[:, None] * (examples.vectors @ w_grid.T + b.ravel()[None, :])
    losses = smooth_hinge(margins)[0]
    values = examples.weights @ losses + 0.15 * (w_grid**2).sum(axis=1)
    brute = float(values.min())
    assert fitted <= brute + 1e-6
    # And it separates the two clusters.
    assert (positives @ w).min() > (negatives @ w).max()


def test_svm_text_follows_the_text_as_lambda_q_grows_and_the_svm_as_it_vanishes() -> None:
    examples, positives, text = small_problem(seed=11)
    plain = exemplar_svm(examples, positives, l2=1.0)
    loose = svm_with_text(examples, text, l2=1.0, text_weight=1e-6)
    tight = svm_with_text(examples, text, l2=1.0, text_weight=1e4)

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cos(loose, plain) > 0.999
    assert cos(tight, text) > 0.999
    middle = svm_with_text(examples, text, l2=1.0, text_weight=0.05)
    assert cos(plain, text) < cos(middle, text) < cos(tight, text)


def test_seesaw_is_pulled_to_the_scaled_text_vector_by_a_strong_prior() -> None:
    examples, _, text = small_problem(seed=13)
    strong = seesaw_vector(examples, text, scale=10.0, l2=1e5)
    np.testing.assert_allclose(strong, 10.0 * text, atol=1e-3)


@pytest.mark.parametrize(
    ("loss", "text_weight", "center_scale"),
    [(smooth_hinge, 0.0, None), (smooth_hinge, 1000.0, None), (logistic_loss, 0.0, 10.0)],
)
def test_fit_linear_agrees_with_scipy_run_to_a_tight_tolerance(
    loss, text_weight, center_scale
) -> None:
    from scipy.optimize import minimize

    examples, _, text = small_problem(seed=17)
    center = None if center_scale is None else center_scale * text
    objective = LinearObjective(
        examples, loss, 10.0, center=center, text=text, text_weight=text_weight
    )
    start = np.append(text, 0.0)
    reference = minimize(
        objective, start, jac=True, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12}
    )
    fitted = fit_linear(objective, text)
    assert objective(fitted)[0] <= reference.fun * (1 + 1e-7)
    w, w_ref = fitted[:-1], reference.x[:-1]
    assert float(w @ w_ref / np.linalg.norm(w) / np.linalg.norm(w_ref)) > 1 - 1e-7


def test_float32_examples_fit_the_same_direction_as_float64() -> None:
    rng = np.random.default_rng(23)
    positives = unit(rng.normal(size=(5, 64)) + 2.0 * np.eye(64)[0])
    negatives = unit(rng.normal(size=(300, 64)))
    text = unit(rng.normal(size=64) + np.eye(64)[0])
    directions = []
    for dtype in (np.float32, np.float64):
        examples = build_examples(positives, np.zeros((0, 64)), negatives, dtype)
        w = svm_with_text(examples, text, l2=10.0, text_weight=1000.0)
        directions.append(w / np.linalg.norm(w))
    assert float(directions[0] @ directions[1]) > 1 - 1e-6
