from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fixeduser.sandbox import mounts_under

REPO = Path(__file__).resolve().parents[2]


def test_demo_once_runs_examples_and_cleans_up(workdir: Path) -> None:
    """`fixeduser demo --once` (the README's main job, non-interactive) shows fixed-user files and leaves nothing."""
    result = subprocess.run(
        [sys.executable, "-m", "fixeduser", "demo", "--once", "--workdir", str(workdir),
         "--policy-dir", str(REPO / "policies")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alice.txt 10001:10000" in result.stdout and "bob.txt 10002:10000" in result.stdout
    assert "Permission denied" in result.stdout  # bob cannot read alice's mode-600 file
    assert "carol cannot mount fixeduser volume eng-demo" in result.stdout
    assert "stopped cleanly" in result.stdout
    assert mounts_under(workdir) == [] and list(workdir.iterdir()) == []
