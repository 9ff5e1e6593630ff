from __future__ import annotations

import os
from pathlib import Path

from fixeduser.sandbox import SPEC_DIR, Engine, mounts_under

from .conftest import new_stack


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stopping_with_running_containers_leaves_nothing_behind(workdir: Path, engine: Engine) -> None:
    """Stopping daemon and plugin by PID with containers still running leaves no process, mount or spec file."""
    e2e = new_stack(workdir, engine)
    stack = e2e.stack
    try:
        e2e.ok("volume", "create", "-d", e2e.driver, "eng-teardown", user="alice")
        for user in ("alice", "bob"):
            e2e.ok("run", "-d", "--network", "none", "-v", "eng-teardown:/data", "busybox:local",
                   "sleep", "300", user=user)  # fmt: skip
        views = [m for m in mounts_under(stack.plugin.base) if "/mnt/" in m]
        assert len(views) == 2  # one bindfs view per identity
        daemon_pid, plugin_pid = stack.dockerd.pid, stack.plugin.process.pid if stack.plugin.process else None
        stack.dockerd.stop()  # containers stop, so the daemon unmounts their volumes
        stack.plugin.stop()  # the plugin then unmounts the views nobody uses
        assert mounts_under(stack.plugin.base) == []
    finally:
        leftovers = stack.stop()
    assert leftovers == []
    assert daemon_pid is not None and not _alive(daemon_pid)
    assert plugin_pid is not None and not _alive(plugin_pid)
    assert mounts_under(stack.plugin.base) == []
    assert not (SPEC_DIR / f"{stack.plugin.authz_name}.spec").exists()
    assert not (SPEC_DIR / f"{stack.plugin.volume_name}.spec").exists()
