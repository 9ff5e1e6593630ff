from __future__ import annotations

from fixeduser.authz.facts import untagged as _untagged


def test_managed_plugin_driver_names_match_with_or_without_latest() -> None:
    """`-d fixeduser` and `-d fixeduser:latest` name the same managed plugin; other tags do not."""
    assert _untagged("fixeduser:latest") == _untagged("fixeduser") == "fixeduser"
    assert _untagged("fixeduser:v2") != _untagged("fixeduser")
