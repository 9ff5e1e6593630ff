"""The README's performance section is the last full benchmark run, as the suite wrote it (never typed by hand)."""

from __future__ import annotations

from pathlib import Path

from bench.report import README_END, README_START, readme_section

REPO = Path(__file__).resolve().parents[1]


def test_readme_performance_section_is_the_generated_results() -> None:
    readme = (REPO / "README.md").read_text()
    embedded = readme[readme.index(README_START) + len(README_START) : readme.index(README_END)]
    results = (REPO / "bench" / "RESULTS.md").read_text()
    assert "quick mode" not in results and "--parts" not in results, "RESULTS.md must come from a full run"
    assert embedded.strip() == readme_section(results).strip()
    for line in embedded.splitlines():  # every chart it shows is committed
        if line.startswith("!["):
            assert (REPO / line[line.index("](") + 2 : -1]).is_file(), line
