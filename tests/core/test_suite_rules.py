"""The test suite's own rules: without the test data the collection-level tests skip
with one summary line; with CI=true such a skip fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: A collection-level test: it needs SPYGLASS_TEST_DATA.
NEEDS_DATA = "tests/core/test_quality.py"


def run_pytest(**environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SPYGLASS_TEST_DATA", "CI")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", NEEDS_DATA],
        cwd=ROOT,
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_the_data_the_run_says_how_many_tests_skipped_and_why() -> None:
    done = run_pytest()
    assert done.returncode == 0, done.stdout
    summary = [line for line in done.stdout.splitlines() if "collection-level tests" in line]
    assert summary == [
        "2 collection-level tests skipped: they need the real collections "
        "(set SPYGLASS_TEST_DATA to a folder like ../shared/data)"
    ]


def test_in_ci_a_skip_for_missing_data_fails_the_run() -> None:
    done = run_pytest(CI="true")
    assert done.returncode == 1, done.stdout
    assert "CI=true, so this may not skip" in done.stdout
