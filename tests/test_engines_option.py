"""The `--engines` option: a comma list of installed engines; anything else stops the run."""

from __future__ import annotations

import pytest

from fixeduser.sandbox import available_engines
from tests.conftest import selected_engines


def test_default_is_every_installed_engine() -> None:
    """Without --engines, every available engine is selected, oldest first."""
    assert selected_engines(None) == available_engines()


def test_a_missing_engine_is_a_usage_error() -> None:
    """An engine that is not installed is an error naming what is installed, never a skip."""
    with pytest.raises(pytest.UsageError, match=r"99\.9 not installed; installed: "):
        selected_engines("99.9")
    with pytest.raises(pytest.UsageError, match="no engine"):
        selected_engines(" , ")


def test_named_engines_in_the_order_given() -> None:
    """Installed engines are picked by name, duplicates once, in the order given."""
    names = [engine.name for engine in available_engines()]
    if not names:
        pytest.skip("no Docker engine installed")
    picked = selected_engines(",".join([*reversed(names), names[0]]))
    assert [engine.name for engine in picked] == list(reversed(names))
