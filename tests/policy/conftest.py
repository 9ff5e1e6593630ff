from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "policies" / "model.conf"


@pytest.fixture
def policy_dir(tmp_path: Path) -> Callable[[str], Path]:
    """A policy directory with the shipped model and the given CSV text."""

    def make(csv: str, name: str = "policy.csv") -> Path:
        shutil.copy(MODEL, tmp_path / "model.conf")
        (tmp_path / name).write_text(csv)
        return tmp_path

    return make
