"""`fixeduser install`/`uninstall` into a scratch root: the files an admin gets, and a clean round trip."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from fixeduser.admin.install import DAEMON_JSON, UNIT, InstallError, InstallOptions, install, uninstall
from fixeduser.cli import main

REPO = Path(__file__).resolve().parents[2]
DATA = ("etc/fixeduser/policies", "var/lib/fixeduser", "srv/fixeduser/volumes")


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path below `root` with its mode and (for files) contents."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, path.read_bytes() if path.is_file() else None)
    return out


def scratch_host(root: Path) -> None:
    """A scratch root that looks like a Docker host with some settings of its own."""
    (root / "etc" / "docker").mkdir(parents=True)
    (root / "etc" / "docker" / "daemon.json").write_text('{"log-level":"warn","authorization-plugins":["other"]}')
    (root / "etc" / "fuse.conf").write_text("# mount_max = 1000")  # no final newline
    (root / "srv").mkdir(mode=0o700)


def test_install_writes_unit_daemon_json_fuse_and_folders(tmp_path: Path) -> None:
    """The unit runs before docker, daemon.json keeps other keys and plugins, FUSE is set, folders are safe."""
    scratch_host(tmp_path)
    options = InstallOptions(root=tmp_path, executable=Path("/usr/bin/fixeduser"), example_policy=REPO / "policies")
    install(options)
    unit = (tmp_path / UNIT).read_text()
    assert "Before=docker.service" in unit and "KillMode=process" in unit
    assert "ExecStart=/usr/bin/fixeduser serve --config /etc/fixeduser/serve.toml" in unit
    dropin = (tmp_path / "etc/systemd/system/docker.service.d/fixeduser.conf").read_text()
    assert "After=fixeduser.service" in dropin and "Wants=fixeduser.service" in dropin
    daemon = json.loads((tmp_path / DAEMON_JSON).read_text())
    assert daemon == {"log-level": "warn", "authorization-plugins": ["other", "fixeduser-authz"]}
    assert (tmp_path / "etc/docker/daemon.json.fixeduser-backup").exists()
    assert (tmp_path / "etc/fuse.conf").read_text() == "# mount_max = 1000\nuser_allow_other\n"
    assert 'MODE="0666"' in (tmp_path / "etc/udev/rules.d/70-fixeduser-fuse.rules").read_text()
    assert 'policy-dir = "/etc/fixeduser/policies"' in (tmp_path / "etc/fixeduser/serve.toml").read_text()
    modes = {d: stat.S_IMODE((tmp_path / d).stat().st_mode) for d in DATA}
    assert modes == {"etc/fixeduser/policies": 0o755, "var/lib/fixeduser": 0o700, "srv/fixeduser/volumes": 0o711}
    assert stat.S_IMODE((tmp_path / "srv").stat().st_mode) == 0o701  # traversable for bindfs, not listable
    assert {"model.conf", "policy.csv"} <= {p.name for p in (tmp_path / "etc/fixeduser/policies").iterdir()}
    with pytest.raises(InstallError, match="already installed"):
        install(options)


def test_round_trip_leaves_the_root_as_before_except_data(tmp_path: Path) -> None:
    """install then uninstall: every file and mode as before (daemon.json byte for byte); data folders stay."""
    scratch_host(tmp_path)
    before = snapshot(tmp_path)
    assert main(["install", "--root", str(tmp_path), "--example-policy", str(REPO / "policies")]) == 0
    (tmp_path / "srv/fixeduser/volumes/eng").mkdir()  # volume data created while installed
    assert main(["uninstall", "--root", str(tmp_path)]) == 0
    after = snapshot(tmp_path)
    data = {p for p in after if any(p == d or p.startswith(d + "/") for d in DATA)} | {
        "etc/fixeduser",
        "var",
        "var/lib",
        "srv/fixeduser",
    }
    assert {k: v for k, v in after.items() if k not in data} == before
    assert (tmp_path / "srv/fixeduser/volumes/eng").is_dir()  # volume data is never touched
    assert (tmp_path / "etc/fixeduser/policies/policy.csv").exists()  # nor the admin's policies


def test_round_trip_on_an_empty_root_leaves_only_data(tmp_path: Path) -> None:
    """With no daemon.json or fuse.conf before, uninstall removes the ones install created."""
    install(InstallOptions(root=tmp_path, executable=Path("/usr/bin/fixeduser")))
    uninstall(tmp_path)
    assert not (tmp_path / DAEMON_JSON).exists() and not (tmp_path / "etc/fuse.conf").exists()
    assert not (tmp_path / "etc/systemd").exists() and not (tmp_path / "etc/udev").exists()
    # the (empty) data folders are removed too
    assert not (tmp_path / "var").exists() and not (tmp_path / "srv").exists()


def test_invalid_daemon_json_changes_nothing(tmp_path: Path) -> None:
    """A daemon.json that is not JSON stops the install before anything is written."""
    (tmp_path / "etc/docker").mkdir(parents=True)
    (tmp_path / "etc/docker/daemon.json").write_text("{oops")
    before = snapshot(tmp_path)
    with pytest.raises(InstallError, match="not valid JSON"):
        install(InstallOptions(root=tmp_path))
    assert snapshot(tmp_path) == before


def test_uninstall_keeps_daemon_json_edits_made_since(tmp_path: Path) -> None:
    """Keys the admin added after install survive uninstall; only our plugin entry goes."""
    scratch_host(tmp_path)
    install(InstallOptions(root=tmp_path))
    daemon = json.loads((tmp_path / DAEMON_JSON).read_text())
    (tmp_path / DAEMON_JSON).write_text(json.dumps({**daemon, "live-restore": True}))
    uninstall(tmp_path)
    assert json.loads((tmp_path / DAEMON_JSON).read_text()) == {
        "log-level": "warn",
        "authorization-plugins": ["other"],
        "live-restore": True,
    }


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the generated unit (with this host's fixeduser program)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    executable = shutil.which("fixeduser") or str(REPO / ".venv/bin/fixeduser")
    install(InstallOptions(root=tmp_path, executable=Path(executable)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / UNIT)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "fixeduser.service" not in result.stderr, result.stderr
