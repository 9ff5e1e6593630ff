"""Record the AuthZReq/AuthZRes bodies a real daemon sends, as templates for the socket benchmarks.

`python -m bench capture` (root) starts the recording floor plugin (bench/floor.py --record) as
authz plugin *and* volume driver of a private sandbox dockerd, runs docker commands as the TLS user
alice, and writes bench/data/authz-capture.json: for each operation, the plugin calls in the order
the daemon made them. The file is committed so the socket benchmarks need no daemon.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, REPO, stop_process, wait_for_socket
from fixeduser.sandbox import SPEC_DIR, Dockerd, TLSUsers, make_private_dir, unmount_all_under

CAPTURE_FILE = BENCH_DIR / "data" / "authz-capture.json"
USER = "alice"
VOLUME = "eng-bench"
NAME = "benchc"


def _ops(driver: str) -> list[tuple[str, list[str]]]:
    run = ["run", "--rm", "--network", "none"]
    return [
        ("volume_create", ["volume", "create", "-d", driver, VOLUME]),
        ("run_volume", [*run, "-v", f"{VOLUME}:/data", "busybox:local", "true"]),
        ("run_plain", [*run, "busybox:local", "true"]),
        (
            "run_mount",
            [*run, "--mount", f"type=volume,src={VOLUME}-m,dst=/data,volume-driver={driver}", "busybox:local", "true"],
        ),
        ("ps", ["ps"]),
        (
            "run_detached",
            ["run", "-d", "--name", NAME, "--network", "none", "-v", f"{VOLUME}:/data", "busybox:local", "sleep", "60"],
        ),
        ("inspect", ["inspect", NAME]),
        ("exec", ["exec", NAME, "true"]),
        ("rm", ["rm", "-f", NAME]),
    ]


def capture() -> Path:
    base = make_private_dir(Path(tempfile.gettempdir()), prefix="fu-bench-capture-")
    name = f"fubench-{secrets.token_hex(3)}"
    record = base / "calls.jsonl"
    sock = base / "rec.sock"
    spec = SPEC_DIR / f"{name}.spec"
    recorder: subprocess.Popen[bytes] | None = None
    dockerd: Dockerd | None = None
    try:
        with (base / "recorder.log").open("ab") as log:
            recorder = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.floor",
                    str(sock),
                    "--record",
                    str(record),
                    "--volume-root",
                    str(base / "vols"),
                ],
                cwd=REPO,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        wait_for_socket(sock, recorder)
        SPEC_DIR.mkdir(parents=True, exist_ok=True)
        spec.write_text(f"unix://{sock}\n")
        dockerd = Dockerd(base / "d", authz_plugin=name, tls=TLSUsers(base / "tls", users=[USER]))
        dockerd.start()
        dockerd.import_busybox()
        ops: dict[str, list[dict[str, Any]]] = {}
        for op, args in _ops(name):
            start = _lines(record)
            result = dockerd.docker(*args, user=USER, timeout=120)
            if result.returncode != 0:
                raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr}")
            ops[op] = [json.loads(line) for line in record.read_text().splitlines()[start:]]
        daemon = subprocess.run(["dockerd", "--version"], capture_output=True, text=True, check=True).stdout.strip()
        CAPTURE_FILE.parent.mkdir(parents=True, exist_ok=True)
        CAPTURE_FILE.write_text(
            json.dumps(
                {
                    "about": "plugin calls recorded from a real daemon by `python -m bench capture`",
                    "daemon": daemon,
                    "user": USER,
                    "volume": VOLUME,
                    "name": NAME,
                    "driver": name,
                    "ops": ops,
                },
                indent=1,
            )
            + "\n"
        )
        return CAPTURE_FILE
    finally:
        if dockerd is not None:
            dockerd.stop()
        stop_process(recorder)
        spec.unlink(missing_ok=True)
        left = unmount_all_under([base])
        if not left:
            shutil.rmtree(base, ignore_errors=True)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def main() -> None:
    print(f"wrote {capture()}")


if __name__ == "__main__":
    main()
