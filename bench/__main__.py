"""`python -m bench`: run the suite, print tables, write bench/RESULTS.md, bench/out/results.json and PNGs.

    sudo .venv/bin/python -m bench [--quick] [--parts decision,scale,docker,io] [--product-src DIR]

Needs root (private dockerd, bindfs/FUSE), as `fixeduser demo` does. `--quick` uses small sizes and
short runs (a smoke test); without it the run takes roughly 10-15 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import traceback
from pathlib import Path

PARTS = ("decision", "scale", "docker", "io")


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (smoke test)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--out", type=Path, default=None, help="where PNGs and results.json go (default bench/out)")
    parser.add_argument("--results", type=Path, default=None, help="markdown file to write (default bench/RESULTS.md)")
    parser.add_argument(
        "--product-src",
        type=Path,
        default=None,
        help="import fixeduser from this src directory instead (to measure a patched copy)",
    )
    args = parser.parse_args()
    if args.product_src is not None:
        src = str(args.product_src.resolve())
        sys.path.insert(0, src)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    from bench import part_decision, part_docker, part_io, part_scale  # noqa: PLC0415
    from bench.common import BENCH_DIR, machine_info, work_dir  # noqa: PLC0415
    from bench.report import Part, embed_in_readme, print_part, write_results  # noqa: PLC0415

    if os.geteuid() != 0:
        print("python -m bench: needs root (private dockerd, bindfs/FUSE); run it with sudo", file=sys.stderr)
        return 2
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(wanted) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {sorted(unknown)}")
    modules = {"decision": part_decision, "scale": part_scale, "docker": part_docker, "io": part_io}
    started, t0 = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.monotonic()
    machine = machine_info()
    import fixeduser  # noqa: PLC0415

    machine["fixeduser source"] = str(Path(fixeduser.__file__).parent)
    print("machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()), flush=True)
    parts: list[Part] = []
    for name in wanted:
        print(f"\nrunning part {name} ...", flush=True)
        with work_dir() as base:
            try:
                part = asyncio.run(modules[name].run(base, quick=args.quick))
            except Exception as exc:  # one failing part must not lose the others' figures
                traceback.print_exc()
                part = Part(key=name, title=f"{name} (failed)", measures="", error=f"{type(exc).__name__}: {exc}")
        print_part(part)
        parts.append(part)
    meta = {
        "command": "sudo .venv/bin/python -m bench"
        + (" --quick" if args.quick else "")
        + (f" --parts {args.parts}" if args.parts != ",".join(PARTS) else ""),
        "quick": args.quick,
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seconds": time.monotonic() - t0,
    }
    # A quick run (a smoke test) or a subset never replaces the committed figures of a full run.
    scratch = args.quick or wanted != list(PARTS)
    out = args.out or BENCH_DIR / "out" / ("scratch" if scratch else "")
    results = args.results or (out / "RESULTS.md" if scratch else BENCH_DIR / "RESULTS.md")
    write_results(parts, machine, meta, out, results)
    print(f"\nwrote {results}, {out}/results.json and charts in {out}/")
    if wanted == list(PARTS) and not args.quick and args.out is None and args.results is None:
        embed_in_readme(BENCH_DIR.parent / "README.md", results)
        print("and the README's performance section (a full run)")
    return 1 if any(p.error for p in parts) else 0


if __name__ == "__main__":
    sys.exit(main())
