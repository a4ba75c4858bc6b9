"""`spyglass bench search` runs end to end at a toy size and reports the figures the
issue names, with the baselines measured in the same run."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from spyglass.bench.search import VectorMixture, command


def test_bench_search_reports_recall_latency_memory_and_speedups(tmp_path):
    result = CliRunner().invoke(
        command,
        [
            *("--vectors", "3000", "--dim", "32", "--queries", "100"),
            *("--baseline-queries", "5", "--clusters", "50", "--folder", str(tmp_path)),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    for key in ("recall_at_10", "p50_ms", "p99_ms_k100", "batch_qps", "rss_mb", "build_s"):
        assert figures[key] is not None, key
    assert 0.5 < figures["recall_at_10"] <= 1.0
    assert set(figures["baselines"]) == {"faiss_flat", "bruteforce_numpy", "rclip"}
    for baseline in figures["baselines"].values():
        assert baseline["recall_at_10"] == 1.0  # exact: same rows, same order
    assert figures["speedup_vs_bruteforce"] > 0 and figures["speedup_vs_flat"] > 0


def test_the_mixture_is_clustered_like_embeddings():
    """Nearest neighbours are graded (not all at one distance) and random pairs share a
    common direction, as with CLIP image embeddings; the same seed gives the same rows."""
    mixture = VectorMixture.synthetic(128, clusters=20, seed=3)
    rows = np.vstack(list(mixture.chunks(5000, seed=3)))
    np.testing.assert_array_equal(rows, np.vstack(list(mixture.chunks(5000, seed=3))))
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    scores = rows[:100] @ rows.T
    scores[np.arange(100), np.arange(100)] = -np.inf
    ranked = -np.sort(-scores, axis=1)
    assert ranked[:, 0].mean() > ranked[:, 9].mean() + 0.01 > ranked[:, 99].mean() + 0.05
    assert 0.2 < np.median(scores[np.isfinite(scores)]) < 0.6
