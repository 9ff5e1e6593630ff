"""Live reload: edits take effect within a second; broken edits keep the last good policy."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fixeduser.policy.store import PolicyInvalid, PolicyStore

GOOD = "g, ann, role:eng\np2, ann, 20001, 20000\np, role:eng, api, container.*\n"


async def _until(predicate: Callable[[], bool], within: float = 1.0) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > within:
            raise AssertionError(f"not true within {within} s")
        await asyncio.sleep(0.01)
    return loop.time() - start


def _append(path: Path, line: str) -> None:
    with path.open("a") as handle:
        handle.write(line)


async def _until_allowed(store: PolicyStore, action: str, within: float = 1.0) -> None:
    await _until(lambda: store.current.decide("ann", "api", action).allowed, within=within)


async def test_edit_takes_effect_within_a_second(policy_dir: Callable[[str], Path]) -> None:
    """Appending a line to a policy file changes decisions within one second, no restart."""
    directory = policy_dir(GOOD)
    store = PolicyStore(directory)
    assert not store.current.decide("ann", "api", "image.list").allowed
    watcher = asyncio.create_task(store.watch())
    try:
        with (directory / "policy.csv").open("a") as handle:
            handle.write("p, role:eng, api, image.list\n")
        await _until(lambda: store.current.decide("ann", "api", "image.list").allowed)
        assert store.reloads == 1
    finally:
        watcher.cancel()


async def _watching(store: PolicyStore, **timings: float) -> asyncio.Task[None]:
    watcher = asyncio.create_task(store.watch(**timings))
    await asyncio.sleep(0.1)  # let it set up its watch, so edits below come after it
    return watcher


async def test_an_edit_is_seen_without_a_poll(policy_dir: Callable[[str], Path]) -> None:
    """The kernel reports an edit (inotify): it takes effect with both polls a minute apart."""
    directory = policy_dir(GOOD)
    store = PolicyStore(directory)
    watcher = await _watching(store, interval=60, fallback=60)
    try:
        (directory / "extra.csv").write_text("p, role:eng, api, image.list\n")
        await _until_allowed(store, "image.list")
    finally:
        watcher.cancel()


async def test_an_edit_where_a_symlinked_policy_file_lies_is_seen_without_a_poll(
    policy_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A policy file that is a symlink into another directory is edited there: the kernel reports it too, and once
    the link is re-pointed to a third directory, edits there (both polls a minute apart)."""
    directory = policy_dir("")
    (directory / "policy.csv").unlink()
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "policy.csv"
    elsewhere.write_text(GOOD)
    (directory / "policy.csv").symlink_to(elsewhere)
    store = PolicyStore(directory)
    watcher = await _watching(store, interval=60, fallback=60)
    try:
        _append(elsewhere, "p, role:eng, api, image.list\n")
        await _until_allowed(store, "image.list")
        third = tmp_path_factory.mktemp("third") / "policy.csv"
        third.write_text(elsewhere.read_text())
        link = directory / "policy.csv.new"
        link.symlink_to(third)
        link.rename(directory / "policy.csv")  # re-pointed at once, as a deployment tool does it
        await asyncio.sleep(0.5)  # the reload of the same lines, and the watch made anew
        _append(third, "p, role:eng, api, volume.list\n")
        await _until_allowed(store, "volume.list")
    finally:
        watcher.cancel()


async def test_an_edit_the_kernel_cannot_see_is_found_by_the_slow_look(
    policy_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A link on the way to a policy file, outside the policy directory, re-pointed to another file: no watched
    directory changes, and the fallback look finds it."""
    directory = policy_dir("")
    (directory / "policy.csv").unlink()
    outside = tmp_path_factory.mktemp("outside")
    (outside / "first.csv").write_text(GOOD)
    (outside / "second.csv").write_text(GOOD + "p, role:eng, api, image.list\n")
    hop = tmp_path_factory.mktemp("hop") / "policy.csv"
    hop.symlink_to(outside / "first.csv")
    (directory / "policy.csv").symlink_to(hop)
    store = PolicyStore(directory)
    watcher = await _watching(store, interval=60, fallback=0.2)
    try:
        repointed = hop.with_name("policy.csv.new")
        repointed.symlink_to(outside / "second.csv")
        repointed.rename(hop)
        await _until_allowed(store, "image.list", within=3)
    finally:
        watcher.cancel()


async def test_a_policy_directory_made_anew_is_watched_anew(policy_dir: Callable[[str], Path]) -> None:
    """Removing the policy directory ends its inotify watch; the one made in its place is watched (its edits
    take effect with the fallback look a minute away)."""
    directory = policy_dir(GOOD)
    model = (directory / "model.conf").read_text()
    store = PolicyStore(directory)
    watcher = await _watching(store, interval=0.05, fallback=60)
    try:
        shutil.rmtree(directory)
        directory.mkdir()
        (directory / "model.conf").write_text(model)
        (directory / "policy.csv").write_text(GOOD + "p, role:eng, api, image.list\n")
        await _until(lambda: store.current.decide("ann", "api", "image.list").allowed)
        with (directory / "policy.csv").open("a") as handle:
            handle.write("p, role:eng, api, volume.list\n")
        await _until(lambda: store.current.decide("ann", "api", "volume.list").allowed)
    finally:
        watcher.cancel()


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ("p, role:eng, api\n", "p lines take 3 fields"),
        ("p2, bob, no-such-user-xyz, 20000\n", "unknown user"),
        ("g, bob, role:a\ng, bob, role:b\np2, role:a, 20001, 20000\np2, role:b, 20002, 20000\n", "ambiguous"),
        ("p, role:eng, volum:x, mount\n", "unknown object 'volum:x'"),
        ("p, role:eng, volume:*-data, mount\n", "has a `*` before its end"),
        ("p, role:eng, api, container.craete\n", "did you mean container.create"),
        ("p, role:eng, api, container.list", "does not end with a newline"),
    ],
)
async def test_broken_edit_keeps_last_good_policy_and_logs_one_error(
    policy_dir: Callable[[str], Path], caplog: pytest.LogCaptureFixture, broken: str, expected: str
) -> None:
    """A broken edit is rejected as a whole, with ONE error record naming file, line and problem."""
    directory = policy_dir(GOOD)
    store = PolicyStore(directory)
    version = store.current.version
    (directory / "policy.csv").write_text(GOOD + broken)
    caplog.set_level(logging.ERROR)
    assert not await store.reload()
    assert store.current.version == version and store.failed_reloads == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert expected in message and f"{directory / 'policy.csv'}:" in message, message
    assert errors[0].problems and errors[0].problems[0]["line"] is not None  # type: ignore[attr-defined]


async def test_emptied_file_is_rejected(policy_dir: Callable[[str], Path]) -> None:
    """Truncating the policy file to nothing is an error, never a deny-all (or allow-all) policy."""
    directory = policy_dir(GOOD)
    store = PolicyStore(directory)
    (directory / "policy.csv").write_text("")
    assert not await store.reload()
    assert store.last_error is not None and "file is empty" in store.last_error
    assert store.current.decide("ann", "api", "container.create").allowed


def test_broken_policy_refuses_to_start(policy_dir: Callable[[str], Path]) -> None:
    """The first load has no last good policy to keep: the plugin must not start."""
    with pytest.raises(PolicyInvalid):
        PolicyStore(policy_dir("p, ann, api\n"))


async def test_decisions_during_reloads_never_see_a_half_policy(policy_dir: Callable[[str], Path]) -> None:
    """While policies A and B alternate, every decision matches A or B as a whole."""
    directory = policy_dir(GOOD)
    store = PolicyStore(directory)
    texts = [GOOD, GOOD.replace("container.*", "image.*")]
    seen: set[tuple[bool, bool]] = set()

    async def decide_forever() -> None:
        while True:
            policy = store.current
            seen.add(
                (
                    policy.decide("ann", "api", "container.create").allowed,
                    policy.decide("ann", "api", "image.list").allowed,
                )
            )
            await asyncio.sleep(0)

    reader = asyncio.create_task(decide_forever())
    try:
        for index in range(20):
            (directory / "policy.csv").write_text(texts[index % 2])
            assert await store.reload()
    finally:
        reader.cancel()
    assert seen <= {(True, False), (False, True)}
