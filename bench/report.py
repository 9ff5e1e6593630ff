"""Tables on the terminal, bench/RESULTS.md, bench/out/results.json and one PNG chart per table."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR

Cell = str | float | int | None


@dataclass
class Chart:
    """A grouped bar chart: one group per row (labelled by column `x`), one bar per column in `ys`."""

    x: str
    ys: list[str]
    ylabel: str
    log: bool = False


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    note: str = ""
    chart: Chart | None = None
    units: dict[str, str] = field(default_factory=dict)


@dataclass
class Target:
    what: str
    target: str
    measured: str
    met: bool | None  # None: not measured in this run


@dataclass
class Part:
    key: str
    title: str
    measures: str
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


NO_FIGURE = "\N{EN DASH}"  # what a table shows for a missing (or NaN) figure
# (smallest magnitude, format): the larger a figure, the fewer decimals it shows
PRECISION = ((1000, ",.0f"), (100, ".0f"), (10, ".1f"), (1, ".2f"), (0, ".3f"))


def fmt(value: Cell) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_FIGURE
    if not isinstance(value, float):
        return str(value)
    if value == 0:
        return "0"
    spec = next(spec for magnitude, spec in PRECISION if abs(value) >= magnitude)
    return f"{value:{spec}}"


def markdown_table(table: Table) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def text_table(table: Table) -> str:
    cells = [table.columns] + [[fmt(c) for c in row] for row in table.rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(table.columns))]
    out = []
    for n, row in enumerate(cells):
        # the header and the first column are left-aligned, figures right-aligned
        cols = enumerate(zip(row, widths, strict=True))
        out.append("  ".join(str(c).rjust(w) if n and i else str(c).ljust(w) for i, (c, w) in cols))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def print_part(part: Part) -> None:
    print(f"\n== {part.title}")
    if part.error:
        print(f"   FAILED: {part.error}")
    for table in part.tables:
        print(f"\n-- {table.title}")
        print(text_table(table))
        if table.note:
            print(f"   {table.note}")
    for t in part.targets:
        mark = {True: "MET", False: "MISSED", None: "n/a"}[t.met]
        print(f"   [{mark}] {t.what}: target {t.target}, measured {t.measured}")
    for note in part.notes:
        print(f"   * {note}")


def draw_chart(table: Table, path: Path) -> bool:
    if table.chart is None or not table.rows:
        return False
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    chart = table.chart
    xi = table.columns.index(chart.x)
    groups = [fmt(row[xi]) for row in table.rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) * max(1, len(chart.ys)) / 2 + 3), 4.2))
    width = 0.8 / len(chart.ys)
    for k, col in enumerate(chart.ys):
        ci = table.columns.index(col)
        values = [row[ci] if isinstance(row[ci], int | float) else float("nan") for row in table.rows]
        positions = [i + (k - (len(chart.ys) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(positions, values, width, label=col)
    ax.set_xticks(range(len(groups)))
    slanted = max(len(g) for g in groups) > 8  # long group names are slanted so they do not overlap
    ax.set_xticklabels(groups, rotation=20 if slanted else 0, ha="right" if slanted else "center", fontsize=8)
    ax.set_ylabel(chart.ylabel)
    if chart.log:
        ax.set_yscale("log")
    ax.set_title(table.title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_results(
    parts: list[Part],
    machine: dict[str, str],
    meta: dict[str, Any],
    out_dir: Path,
    results_md: Path = BENCH_DIR / "RESULTS.md",
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    charts: dict[str, str] = {}
    for part in parts:
        for table in part.tables:
            png = out_dir / f"{table.key}.png"
            if draw_chart(table, png):
                charts[table.key] = png.name
    (out_dir / "results.json").write_text(
        json.dumps({"meta": meta, "machine": machine, "parts": [asdict(p) for p in parts]}, indent=1, default=str)
        + "\n"
    )
    rel = out_dir.relative_to(results_md.parent) if out_dir.is_relative_to(results_md.parent) else out_dir
    md = [
        "# fixeduser benchmark results",
        "",
        f"<!-- generated by `python -m bench` on {meta['finished']}; do not edit by hand -->",
        "",
        f"Command: `{meta['command']}`{' (quick mode: small sizes, noisy)' if meta.get('quick') else ''}. "
        f"Run started {meta['started']}, took {meta['seconds']:.0f} s.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine.items()],
        "",
        "## Targets",
        "",
        "| part | what | target | measured | met |",
        "|---|---|---|---|---|",
    ]
    for part in parts:
        for t in part.targets:
            md.append(
                f"| {part.key} | {t.what} | {t.target} | {t.measured} | "
                f"{ {True: 'yes', False: '**no**', None: 'n/a'}[t.met] } |"
            )
    for part in parts:
        md += ["", f"## {part.title}", "", part.measures, ""]
        if part.error:
            md += [f"**This part failed:** `{part.error}`", ""]
        for table in part.tables:
            md += [f"### {table.title}", "", markdown_table(table), ""]
            if table.note:
                md += [table.note, ""]
            if table.key in charts:
                md += [f"![{table.title}]({rel}/{charts[table.key]})", ""]
        if part.notes:
            md += [f"- {n}" for n in part.notes] + [""]
    md += [f"Machine-readable: `{rel}/results.json`.", ""]
    results_md.write_text("\n".join(md))


README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def readme_section(results_md: str, results_dir: str = "bench") -> str:
    """RESULTS.md as the README's performance section: headings one level down, paths from the repo root."""
    lines = []
    for line in results_md.splitlines()[1:]:  # its title is the README section's
        demoted = "#" + line if line.startswith("#") else line
        lines.append(demoted.replace("](out/", f"]({results_dir}/out/").replace("`out/", f"`{results_dir}/out/"))
    return "\n".join(lines).strip() + "\n"


def embed_in_readme(readme: Path, results_md: Path) -> None:
    """Put the figures of a full run into the README between its bench markers."""
    text = readme.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    readme.write_text(text[:start] + "\n" + readme_section(results_md.read_text()) + text[end:])
