"""An error nobody planned for (a bug) is still one line on stderr and exit status 1,
never a traceback unless SPYGLASS_DEBUG asks for one, in the real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: The real CLI with a bug planted where `spyglass info` reads the catalogue.
WITH_A_BUG = """
import sys
from spyglass.engine import Spyglass
def broken(*args, **kwargs):
    raise ZeroDivisionError("division by zero\\nsecond line")
Spyglass.status_of = staticmethod(broken)
from spyglass.cli import main
main(sys.argv[1:])
"""


def info_with_a_bug(index: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITH_A_BUG, "info", "--index", str(index)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_a_bug_is_one_line_and_exit_1(photo_index: Path) -> None:
    result = info_with_a_bug(photo_index)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "error: unexpected ZeroDivisionError: division by zero (a bug: please report it; "
        "SPYGLASS_DEBUG=1 shows where it happened)\n"
    )


def test_spyglass_debug_shows_the_traceback(photo_index: Path) -> None:
    result = info_with_a_bug(photo_index, SPYGLASS_DEBUG="1")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "in broken" in result.stderr
