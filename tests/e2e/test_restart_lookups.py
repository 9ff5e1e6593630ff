"""A `Mount` asks the daemon which containers restart with its volume only when one may (real dockerd on each
engine, real TLS users, real bindfs): restart policies are read from the daemon, `docker update` included."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from fixeduser.commands.status import fetch_status
from fixeduser.sandbox import unix_http_request

from .conftest import E2E

IMAGE = "busybox:local"


def restarting_lookups(stack: E2E) -> int:
    """How often the plugin has asked the daemon which containers restart with a volume (its /metrics)."""
    _, body = unix_http_request(stack.plugin.state_dir / "control.sock", "GET", "/metrics", timeout=20)
    return sum(
        int(sample.value)
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "fixeduser_daemon_lookups_total"
        and sample.labels.get("what") == "containers of a volume (restarting)"
    )


def restart_candidates(stack: E2E) -> dict[str, object]:
    candidates: dict[str, object] = fetch_status(stack.plugin.state_dir / "control.sock")["restart_candidates"]
    return candidates


def test_a_mount_asks_which_containers_restart_only_when_one_may(stack: E2E) -> None:
    """No container may restart with a volume: `docker run --rm -v` mounts it without asking the daemon which
    containers restart with it. A container given `--restart always` by `docker update` (by an ID prefix) makes
    every later mount of its volume ask, also once it is stopped; other volumes still do not."""
    quiet, busy = "eng-quiet", "eng-busy"
    for volume in (quiet, busy):
        stack.ok("volume", "create", "-d", stack.driver, volume, user="alice")
    run = ("run", "--rm", "--network", "none", "-v")
    stack.wait(lambda: restart_candidates(stack)["known"], "the plugin to read which containers may restart")
    before = restarting_lookups(stack)
    for volume in (quiet, busy):
        stack.ok(*run, f"{volume}:/data", IMAGE, "true", user="alice")
    assert restarting_lookups(stack) == before

    cid = stack.ok("run", "-d", "--network", "none", "-v", f"{busy}:/data", IMAGE, "sleep", "600", user="alice").strip()
    stack.ok("update", "--restart", "always", cid[:7], user="alice")
    stack.ok("stop", "-t", "0", cid, user="alice")
    stack.wait(lambda: restart_candidates(stack)["known"], "the plugin to read the daemon again after the update")
    assert restart_candidates(stack)["containers"] == 1
    before = restarting_lookups(stack)
    stack.ok(*run, f"{busy}:/data", IMAGE, "true", user="alice")
    assert restarting_lookups(stack) > before
    before = restarting_lookups(stack)
    stack.ok(*run, f"{quiet}:/data", IMAGE, "true", user="alice")
    assert restarting_lookups(stack) == before
    stack.ok("rm", "-f", cid, user="alice")
