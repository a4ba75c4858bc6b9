"""`spyglass bench search --milvus lite` measures the Milvus store over the same rows as
the embedded one, in the same run (Milvus Lite, started by the benchmark itself)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from spyglass.bench.search import command

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


def test_bench_search_measures_milvus_lite_beside_the_embedded_store(tmp_path):
    arguments = [
        *("--vectors", "2000", "--dim", "16", "--queries", "30", "--clusters", "20"),
        *("--no-baselines", "--folder", str(tmp_path), "--milvus", "lite", "--json"),
    ]
    result = CliRunner().invoke(command, arguments)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    milvus = figures["baselines"]["milvus"]
    # 2,000 rows are below the threshold: FLAT, exact over the same float16 rows.
    assert "Milvus Lite FLAT index, 2,000 rows" in figures["milvus_index"]
    assert milvus["recall_at_10"] == 1.0
    assert milvus["p50_ms"] > 0 and milvus["batch_qps"] > 0
    assert figures["speedup_vs_milvus"] > 0 and figures["milvus_load_s"] > 0


def test_a_second_run_finds_the_rows_already_in_milvus(tmp_path):
    """Loading 1M rows into Milvus Lite takes minutes: a run over a kept --folder reuses
    them (the load is timed as null), and only when they are all there."""
    from spyglass.bench.search import VectorMixture, load_milvus, write_space

    write_space(tmp_path, VectorMixture.synthetic(16, clusters=5), 500, seed=0)
    url = f"milvus://{tmp_path}/milvus.db"
    assert load_milvus(url, str(tmp_path), 16, 500)["milvus_load_s"] > 0
    assert load_milvus(url, str(tmp_path), 16, 500)["milvus_load_s"] is None
