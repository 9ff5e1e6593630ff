"""docs/escalations.md is generated from escalations.CLASSES and must stay in step with it."""

from __future__ import annotations

import re
from pathlib import Path

from fixeduser.authz.authorizer import CONTROL_ESCALATIONS
from fixeduser.docker_api import BODY_READ_ACTIONS, ROUTES
from fixeduser.policy.escalations import CLASSES, escalations_markdown, policy_line
from fixeduser.policy.route_decisions import ROUTE_DECISIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "escalations.md"


def test_doc_matches_classes() -> None:
    """The committed table is exactly what CLASSES generates (regenerate with the module's __main__)."""
    assert DOC.read_text() == escalations_markdown()


def test_every_class_has_one_row_with_its_grant() -> None:
    """Each class appears once, denied by default, with the line that grants it."""
    classes_table = DOC.read_text().split("\n## ")[0]
    rows = [line for line in classes_table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(CLASSES)
    for row, kind in zip(rows, CLASSES, strict=True):
        assert "| denied |" in row and f"`{policy_line(kind)}`" in row


def test_control_routes_use_documented_classes() -> None:
    """Every escalation the authorizer raises for control routes is a documented class."""
    assert set(CONTROL_ESCALATIONS.values()) <= set(CLASSES)


def test_every_route_has_exactly_one_decision() -> None:
    """The route section walks the whole route table: each action once, none that is not a route."""
    listed = [action for row in ROUTE_DECISIONS for action in row.actions]
    assert len(listed) == len(set(listed))
    assert set(listed) == {route.action for route in ROUTES}
    assert set(listed) >= BODY_READ_ACTIONS


def test_route_decisions_name_only_documented_classes() -> None:
    """Each class a decision names ("escalation `x`", "is `x`", "are `x`") is one of CLASSES."""
    named = {m for row in ROUTE_DECISIONS for m in re.findall(r"(?:escalation|is|are) `([a-z-]+)`", row.decision)}
    assert named and named <= set(CLASSES), named - set(CLASSES)
