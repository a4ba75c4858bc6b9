"""The re-rankers' formulas against straightforward slow reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spyglass.query.rerank import alpha_qe_scores, kreciprocal_distances


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def clustered(seed: int, n: int = 60, dims: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A query and n unit vectors in a few clusters, sorted by cosine to the query."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(4, dims)))
    vectors = unit(centres[rng.integers(0, 4, n)] + 0.45 * rng.normal(size=(n, dims)))
    query = unit(centres[0] + 0.3 * rng.normal(size=dims))
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")
    return query, vectors[order]


# -- alpha-QE ---------------------------------------------------------------------------


@pytest.mark.parametrize(("neighbours", "alpha"), [(1, 3.0), (5, 3.0), (10, 1.0), (60, 0.5)])
def test_alpha_qe_equals_the_cosine_with_the_explicitly_expanded_query(neighbours, alpha) -> None:
    query, vectors = clustered(seed=neighbours)
    scores = vectors @ query
    expanded = query.copy()
    for i in range(min(neighbours, len(vectors))):
        expanded += max(scores[i], 0.0) ** alpha * vectors[i]
    expanded /= np.linalg.norm(expanded)
    np.testing.assert_allclose(
        alpha_qe_scores(scores, vectors, neighbours, alpha), vectors @ expanded, atol=1e-10
    )


def test_alpha_qe_with_no_neighbours_keeps_the_scores() -> None:
    query, vectors = clustered(seed=3)
    scores = vectors @ query
    np.testing.assert_allclose(alpha_qe_scores(scores, vectors, 0, 3.0), scores, atol=1e-12)


# -- k-reciprocal ---------------------------------------------------------------------------


def slow_kreciprocal(distances: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """Zhong et al. (CVPR 2017), section 3, written out point by point with sets."""
    m = len(distances)

    def nearest(i: int, k: int) -> list[int]:
        # The point itself (distance 0) and its k nearest others; ties by index.
        return sorted(range(m), key=lambda j: (distances[i, j], j))[: k + 1]

    def reciprocal(i: int, k: int) -> set[int]:
        return {j for j in nearest(i, k) if i in nearest(j, k)}

    half = max(round(k1 / 2), 1)
    vectors = []
    for p in range(m):
        r = reciprocal(p, k1)
        expanded = set(r)
        for q in r:
            r_half = reciprocal(q, half)
            if len(r & r_half) >= 2 / 3 * len(r_half):
                expanded |= r_half
        vectors.append([math.exp(-distances[p, g]) if g in expanded else 0.0 for g in range(m)])
    local = []
    for p in range(m):
        around = nearest(p, k2)
        local.append([sum(vectors[g][j] for g in around) / len(around) for j in range(m)])
    final = []
    for g in range(m):
        shared = sum(min(local[0][j], local[g][j]) for j in range(m))
        union = sum(max(local[0][j], local[g][j]) for j in range(m))
        final.append((1 - lam) * (1 - shared / union) + lam * distances[0, g])
    return np.array(final)


def distance_matrix(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    points = np.vstack([query, vectors])
    distances = np.maximum(2.0 - 2.0 * points @ points.T, 0.0)
    np.fill_diagonal(distances, 0.0)
    return distances


@pytest.mark.parametrize(
    ("seed", "k1", "k2", "lam"), [(0, 20, 6, 0.3), (1, 8, 3, 0.3), (2, 5, 1, 0.7)]
)
def test_kreciprocal_matches_the_slow_reference(seed, k1, k2, lam) -> None:
    query, vectors = clustered(seed, n=45)
    distances = distance_matrix(query, vectors)
    np.testing.assert_allclose(
        kreciprocal_distances(distances, k1, k2, lam),
        slow_kreciprocal(distances, k1, k2, lam),
        atol=1e-12,
    )


def test_kreciprocal_with_lambda_one_is_the_original_distance() -> None:
    query, vectors = clustered(seed=4, n=30)
    distances = distance_matrix(query, vectors)
    np.testing.assert_allclose(kreciprocal_distances(distances, 5, 2, 1.0), distances[0])


def test_kreciprocal_pulls_in_a_neighbour_of_the_neighbours() -> None:
    # On a line: the query at 0, a cluster at 0.35-0.5 next to it and another at 2.5-2.8.
    # The near cluster shares the query's reciprocal neighbours; the far one shares none,
    # so its Jaccard distance is 1 (lambda = 0 leaves the Jaccard part alone).
    positions = np.array([0.0, 0.35, 0.4, 0.45, 0.5, 2.5, 2.6, 2.7, 2.8])
    distances = np.abs(positions[:, None] - positions[None, :])
    final = kreciprocal_distances(distances, 3, 1, 0.0)
    assert final[0] == pytest.approx(0.0)
    assert final[1:5].max() < 1.0
    np.testing.assert_allclose(final[5:], 1.0)


def test_kreciprocal_leaves_a_collection_smaller_than_its_neighbourhoods_alone() -> None:
    from spyglass.query.rerank import KRECIPROCAL_K1, rerank_kreciprocal

    ranking = [(i, 1.0 - i / 100) for i in range(2 * KRECIPROCAL_K1)]
    assert rerank_kreciprocal(None, ranking) == ranking  # type: ignore[arg-type]
