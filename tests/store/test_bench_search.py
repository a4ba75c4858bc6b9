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
    figures = json.loads(result.stdout)  # stderr tells the steps
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


def test_results_of_several_runs_are_plotted_against_their_size(tmp_path):
    outs = []
    for rows in (1500, 3000):
        out = tmp_path / f"bench-{rows}.json"
        result = CliRunner().invoke(
            command,
            [
                *("--vectors", str(rows), "--dim", "16", "--queries", "30", "--no-baselines"),
                *("--clusters", "20", "--folder", str(tmp_path / str(rows)), "--out", str(out)),
                *("--memory-budget", "1MiB"),
            ],
        )
        assert result.exit_code == 0, result.output
        outs.append(out)
    plot = tmp_path / "vs-n.png"
    result = CliRunner().invoke(command, ["--plot", str(plot), *(f"--from-json={o}" for o in outs)])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert CliRunner().invoke(command, [f"--from-json={outs[0]}"]).exit_code == 2


def test_a_saved_index_can_be_measured_again_without_building_it(tmp_path):
    args = [
        *("--vectors", "2000", "--dim", "16", "--queries", "20", "--no-baselines"),
        *("--clusters", "20", "--folder", str(tmp_path), "--json"),
    ]
    first = CliRunner().invoke(command, args)
    again = CliRunner().invoke(command, [*args, "--reuse-index"])
    assert first.exit_code == 0 and again.exit_code == 0, again.output
    built, reused = json.loads(first.stdout), json.loads(again.stdout)
    assert built["build_s"] > 0 and reused["build_s"] is None
    assert reused["recall_at_10"] == built["recall_at_10"]  # the same index
    for key in ("p50_ms_cold", "p50_ms", "p50_ms_k100", "load_average"):
        assert reused[key] is not None, key
