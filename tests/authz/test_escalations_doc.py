"""docs/escalations.md is generated from escalations.CLASSES and must stay in step with it."""

from __future__ import annotations

from pathlib import Path

from fixeduser.authz.authorizer import CONTROL_ESCALATIONS
from fixeduser.policy.escalations import CLASSES, escalations_markdown, policy_line

DOC = Path(__file__).resolve().parents[2] / "docs" / "escalations.md"


def test_doc_matches_classes() -> None:
    """The committed table is exactly what CLASSES generates (regenerate with the module's __main__)."""
    assert DOC.read_text() == escalations_markdown()


def test_every_class_has_one_row_with_its_grant() -> None:
    """Each class appears once, denied by default, with the line that grants it."""
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(CLASSES)
    for row, kind in zip(rows, CLASSES, strict=True):
        assert "| denied |" in row and f"`{policy_line(kind)}`" in row


def test_control_routes_use_documented_classes() -> None:
    """Every escalation the authorizer raises for control routes is a documented class."""
    assert set(CONTROL_ESCALATIONS.values()) <= set(CLASSES)
