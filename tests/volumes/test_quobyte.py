"""QuobyteClient and QuobyteBackend against the API test double (tests/quobyte_api.py)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from fixeduser.linux.mounts import MountEntry
from fixeduser.policy.identity import Identity
from fixeduser.volumes.backends import Backend
from fixeduser.volumes.backends import quobyte as quobyte_module
from fixeduser.volumes.backends.base import BackendError
from fixeduser.volumes.backends.quobyte import QuobyteBackend, QuobyteClient, QuobyteError

from ..quobyte_api import QuobyteApiDouble

ALICE = Identity(uid=10001, gid=10000, user="alice", group="eng")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[QuobyteApiDouble]:
    (tmp_path / "client").mkdir()
    double = QuobyteApiDouble(client_dir=tmp_path / "client", mapped=[("alice", "eng")]).start()
    try:
        yield double
    finally:
        double.stop()


def client_for(api: QuobyteApiDouble, *, password: str = "secret", retries: int = 2) -> QuobyteClient:
    return QuobyteClient(api.url, user="admin", password=password, timeout=2, retries=retries, backoff=0.01)


def backend_for(api: QuobyteApiDouble, **kwargs: object) -> QuobyteBackend:
    assert api.client_dir is not None
    return QuobyteBackend(
        client=client_for(api),
        mountpoint=api.client_dir,
        tenant="t1",
        configuration="BASE",
        client_mode="directory",
        **kwargs,  # type: ignore[arg-type]
    )


def test_client_creates_resolves_lists_and_erases(api: QuobyteApiDouble) -> None:
    """The JSON-RPC methods round-trip with the parameter names Quobyte's clients use."""
    client = client_for(api)
    t1 = client.resolve_tenant("t1")
    assert t1 == api.tenants["t1"] and client.resolve_tenant(t1) == t1  # a UUID is passed as it is
    uuid = client.create_volume("v1", root_user_id="alice", root_group_id="eng", configuration="BASE", tenant_uuid=t1)
    assert client.resolve_volume("v1", tenant_uuid=t1) == uuid
    assert client.resolve_volume("v1", tenant_uuid=api.tenants["t2"]) is None
    assert [v["name"] for v in client.volume_list()] == ["v1"]
    client.erase_volume(uuid)
    assert api.names() == []
    assert api.methods() == ["resolveTenantName", "createVolume", "resolveVolumeName", "resolveVolumeName",
                             "getVolumeList", "eraseVolume"]  # fmt: skip
    assert api.calls[1][1] == {
        "name": "v1", "root_user_id": "alice", "root_group_id": "eng", "configuration_name": "BASE", "tenant_id": t1,
        "retry": "INTERACTIVE",
    }  # fmt: skip


def test_client_sends_configuration_only_when_set(api: QuobyteApiDouble) -> None:
    """Quobyte 3.x ignores configuration_name: without a configuration it is not sent at all."""
    client = client_for(api)
    client.create_volume("v1", root_user_id="a", root_group_id="b", configuration=None, tenant_uuid=api.tenants["t1"])
    assert "configuration_name" not in api.calls[0][1] and api.calls[0][1]["retry"] == "INTERACTIVE"


def test_client_names_api_errors(api: QuobyteApiDouble) -> None:
    """Duplicate names, unknown volumes and unknown methods raise QuobyteError with the API's message."""
    client = client_for(api)
    t1 = api.tenants["t1"]
    client.create_volume("v1", root_user_id="a", root_group_id="b", configuration="BASE", tenant_uuid=t1)
    with pytest.raises(QuobyteError, match=r"code -32000.*ENTITY_EXISTS_ALREADY"):
        client.create_volume("v1", root_user_id="a", root_group_id="b", configuration="BASE", tenant_uuid=t1)
    with pytest.raises(QuobyteError, match="ENTITY_NOT_FOUND"):
        client.erase_volume("no-such-uuid")
    with pytest.raises(QuobyteError, match=r"code -32601\): Method not found - the API does not know") as caught:
        client.call("frobnicate", {})
    assert caught.value.code == -32601


def test_unknown_tenant_is_an_error_naming_it(api: QuobyteApiDouble) -> None:
    """resolveTenantName of a tenant that does not exist: an error naming the tenant, never 'no volume'."""
    with pytest.raises(QuobyteError, match=r"Quobyte tenant 'nope' does not exist"):
        client_for(api).resolve_tenant("nope")


def test_double_rejects_tenant_names_where_uuids_are_wanted(api: QuobyteApiDouble) -> None:
    """Like the real API, createVolume and resolveVolumeName take tenant UUIDs: a name is an unknown tenant."""
    client = client_for(api)
    with pytest.raises(QuobyteError, match=r"ENTITY_NOT_FOUND.*no tenant with UUID 't1'"):
        client.create_volume("v1", root_user_id="a", root_group_id="b", configuration=None, tenant_uuid="t1")
    with pytest.raises(QuobyteError, match=r"ENTITY_NOT_FOUND.*no tenant with UUID 't1'"):
        client.call("resolveVolumeName", {"volume_name": "v1", "tenant_domain": "t1"})
    assert api.volumes == {}


def test_double_answers_malformed_requests_as_json_rpc(api: QuobyteApiDouble) -> None:
    """Not JSON: -32700 Parse error; no method: -32600 Invalid Request (JSON-RPC 2.0 error objects)."""
    auth = ("admin", "secret")
    answer = requests.post(api.url, data=b"{not json", auth=auth, timeout=2).json()
    assert answer == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
    answer = requests.post(api.url, json={"jsonrpc": "2.0", "id": "1"}, auth=auth, timeout=2).json()
    assert answer == {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request"}}


@pytest.mark.parametrize("code", [-32000, -24, 0])
def test_entity_errors_are_told_by_their_symbol_whatever_the_code(api: QuobyteApiDouble, code: int) -> None:
    """The numeric code of an entity error means nothing to the client: the message symbol decides."""
    api.entity_code = code
    client = client_for(api)
    assert client.resolve_volume("v9", tenant_uuid=api.tenants["t1"]) is None


def test_client_uses_the_session_cookie_and_falls_back_to_basic_auth_once(api: QuobyteApiDouble) -> None:
    """Basic auth until the API hands out a cookie, then the cookie; a 401 on the cookie drops it and the
    call goes once more with basic auth."""
    client = client_for(api)
    client.volume_list()
    client.volume_list()
    assert api.auth_log == ["basic", "cookie"]
    api.expire_sessions()
    assert client.volume_list() == []
    assert api.auth_log == ["basic", "cookie", "basic"]
    assert api.methods() == ["getVolumeList"] * 3  # the refused cookie request never reached dispatch


def test_client_with_a_refused_cookie_and_wrong_password_fails_clearly(api: QuobyteApiDouble) -> None:
    """After the cookie is refused the basic-auth retry happens once: a wrong password then is a clear error."""
    client = client_for(api)
    client.volume_list()
    api.expire_sessions()
    api.password = "changed"
    with pytest.raises(QuobyteError, match=r"refused user 'admin' \(HTTP 401\)"):
        client.volume_list()
    assert api.auth_log == ["basic"]


def test_client_auth_failure_is_clear_and_not_retried(api: QuobyteApiDouble) -> None:
    """HTTP 401 names the user and the options to fix, after one request."""
    with pytest.raises(QuobyteError, match=r"refused user 'admin' \(HTTP 401\).*--quobyte-password-file"):
        client_for(api, password="wrong").volume_list()
    assert api.calls == []


def test_client_retries_transient_503(api: QuobyteApiDouble) -> None:
    """Two 503s then success: the call succeeds; more 503s than retries: a clear 'unavailable'."""
    api.fail_next = [503, 503]
    assert client_for(api, retries=2).volume_list() == []
    api.fail_next = [503, 503, 503]
    with pytest.raises(QuobyteError, match="unavailable for getVolumeList after 3 attempts: HTTP 503"):
        client_for(api, retries=2).volume_list()


def test_client_retries_connection_errors_with_backoff() -> None:
    """A refused connection is retried with growing delays, then reported."""
    client = QuobyteClient("http://127.0.0.1:9/", user="u", password="p", timeout=1, retries=2, backoff=0.05)
    began = time.monotonic()
    with pytest.raises(QuobyteError, match=r"unavailable.*ConnectionError"):
        client.volume_list()
    assert time.monotonic() - began >= 0.05 + 0.1


def test_client_session_is_reused_across_threads(api: QuobyteApiDouble) -> None:
    """Concurrent calls from worker threads share one session safely."""
    client = client_for(api)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            client.create_volume(
                f"v{index}", root_user_id="a", root_group_id="b", configuration="C", tenant_uuid=api.tenants["t1"]
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(api.names("t1")) == 16


def test_backend_satisfies_protocol(api: QuobyteApiDouble) -> None:
    """QuobyteBackend implements the Backend protocol with global scope."""
    backend = backend_for(api)
    assert isinstance(backend, Backend) and backend.scope == "global" and backend.name == "quobyte"


async def test_backend_paths_use_quobyte_user_mapping(api: QuobyteApiDouble) -> None:
    """volume_path is `<mountpoint>/<user>#<group>@<volume>`; mount_identity only checks the client."""
    backend = backend_for(api)
    assert api.client_dir is not None
    assert backend.volume_path(ALICE, "v1") == api.client_dir / "alice#eng@v1"
    assert await backend.mount_identity(ALICE) == api.client_dir
    assert await backend.mounted_identities() == []
    with pytest.raises(Exception, match="cannot be used in a Quobyte user-mapped path"):
        backend.volume_path(Identity(uid=5, gid=5, user="a#b", group="g"), "v1")


async def test_backend_create_uses_options_and_defaults(api: QuobyteApiDouble) -> None:
    """Tenant and configuration come from -o options, else the plugin's defaults; the owner is the root user;
    tenant names are resolved to UUIDs first."""
    backend = backend_for(api)
    await backend.create_volume("v1", owner=ALICE, mode=0o770)
    await backend.create_volume("v2", owner=ALICE, mode=0o770, options={"tenant": "t2", "configuration": "fast"})
    assert api.volume("t1", "v1")["configuration_name"] == "BASE"
    assert api.volume("t2", "v2")["configuration_name"] == "fast"
    assert api.volume("t1", "v1")["root_user_id"] == "alice"
    creates = [params for method, params in api.calls if method == "createVolume"]
    assert [c["tenant_id"] for c in creates] == [api.tenants["t1"], api.tenants["t2"]]
    assert all(c["retry"] == "INTERACTIVE" for c in creates)
    assert api.methods()[:3] == ["resolveTenantName", "getVolumeList", "createVolume"]


async def test_backend_without_configuration_sends_none(api: QuobyteApiDouble) -> None:
    """No --quobyte-configuration and no -o configuration (Quobyte 3.x): configuration_name is not sent."""
    assert api.client_dir is not None
    backend = QuobyteBackend(client=client_for(api), mountpoint=api.client_dir, tenant="t1", client_mode="directory")
    await backend.create_volume("v1", owner=ALICE, mode=0o770)
    create = next(params for method, params in api.calls if method == "createVolume")
    assert "configuration_name" not in create


async def test_backend_stores_the_effective_tenant_uuid_in_the_options(api: QuobyteApiDouble) -> None:
    """Create writes the tenant's UUID into the options the driver stores; later calls use that tenant even
    when --quobyte-tenant changes."""
    backend = backend_for(api)
    options: dict[str, str] = {"configuration": "fast"}
    await backend.create_volume("v1", owner=ALICE, mode=0o770, options=options)
    assert options == {"configuration": "fast", "tenant": api.tenants["t1"]}
    backend.tenant = "t2"  # the plugin restarted with another default tenant
    await backend.remove_volume("v1", purge=True, options=options)
    assert api.names() == []
    assert api.methods().count("resolveTenantName") == 1  # at create; remove used the stored UUID as it is


async def test_backend_wrong_tenant_is_named_on_create_purge_and_health(api: QuobyteApiDouble) -> None:
    """A tenant that does not exist is an error naming it: create fails, purge fails (never a silent no-op),
    and the health probe reports it."""
    backend = backend_for(api)
    with pytest.raises(QuobyteError, match="tenant 'typo' does not exist"):
        await backend.create_volume("v1", owner=ALICE, mode=0o770, options={"tenant": "typo"})
    await backend.create_volume("v1", owner=ALICE, mode=0o770)
    with pytest.raises(QuobyteError, match="tenant 'typo' does not exist"):
        await backend.remove_volume("v1", purge=True, options={"tenant": "typo"})
    assert api.names() == ["v1"]
    await backend.check_service()
    backend.tenant = "typo"
    with pytest.raises(BackendError, match="Quobyte API is unusable: Quobyte tenant 'typo' does not exist"):
        await backend.check_service()
    with pytest.raises(QuobyteError, match="tenant 'typo' does not exist"):
        await backend.volume_exists("v1")


async def test_backend_create_of_existing_volume_adopts_it_untouched(api: QuobyteApiDouble) -> None:
    """A volume that existed before fixeduser's create is adopted: same UUID, marked in the options, and its
    top folder is never chowned or chmodded."""
    assert api.client_dir is not None
    other = QuobyteBackend(client=client_for(api), mountpoint=api.client_dir, tenant="t1", client_mode="directory")
    await other.create_volume("v1", owner=ALICE, mode=0o700)  # made by someone else
    top = api.client_dir / "v1"
    before = top.stat()
    uuid = api.volume("t1", "v1")["volume_uuid"]
    backend = backend_for(api)
    options: dict[str, str] = {}
    await backend.create_volume("v1", owner=Identity(uid=10002, gid=10000, user="bob", group="eng"), mode=0o777,
                                options=options)  # fmt: skip
    assert api.volume("t1", "v1")["volume_uuid"] == uuid
    assert options["adopted"] == "true"
    assert await backend.set_top_folder("v1", owner=ALICE, mode=0o777) is False
    assert await backend.set_top_folder("v1", owner=ALICE, mode=0o777, only_if_empty=True) is False
    after = top.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="sets a folder's owner: needs root")
async def test_lost_create_answer_then_exists_still_applies_the_mode(api: QuobyteApiDouble) -> None:
    """createVolume carried out but its answer lost: the retry gets ENTITY_EXISTS_ALREADY, which is this
    create's own volume, so the mode is applied and the volume is not adopted."""
    assert api.client_dir is not None
    backend = backend_for(api)
    api.lose_answer_to = "createVolume"
    options: dict[str, str] = {}
    await backend.create_volume("v1", owner=ALICE, mode=0o751, options=options)
    assert [m for m in api.methods() if m == "createVolume"] == ["createVolume", "createVolume"]
    assert (api.client_dir / "v1").stat().st_mode & 0o7777 == 0o751
    assert "adopted" not in options
    assert await backend.set_top_folder("v1", owner=ALICE, mode=0o750) is True
    assert (api.client_dir / "v1").stat().st_mode & 0o7777 == 0o750


async def test_entity_errors_are_recognised_by_their_message_symbol_alone(api: QuobyteApiDouble) -> None:
    """Quobyte's numeric entity codes are not published: the message symbol (ENTITY_EXISTS_ALREADY/...,
    ENTITY_NOT_FOUND/...) decides, as in Quobyte's own Docker plugin, whatever the code."""
    api.entity_code = -24
    backend = backend_for(api)
    await backend.create_volume("v1", owner=ALICE, mode=0o770)
    uuid = api.volume("t1", "v1")["volume_uuid"]
    await backend.create_volume("v1", owner=ALICE, mode=0o770)  # exists already: adopted, not an error
    assert api.volume("t1", "v1")["volume_uuid"] == uuid
    assert not await backend.volume_exists("v2")  # not found: a plain no
    await backend.remove_volume("v1", purge=True)
    await backend.remove_volume("v1", purge=True)  # gone already: nothing to do
    assert api.names() == []


async def test_backend_remove_keeps_data_unless_purged(api: QuobyteApiDouble) -> None:
    """Remove without purge never erases; purge erases (eraseVolume, not the deprecated deleteVolume)
    exactly that tenant's volume."""
    backend = backend_for(api)
    await backend.create_volume("v1", owner=ALICE, mode=0o770, options={"tenant": "t2"})
    # someone else then makes a v1 in t1 (the plugin's default tenant)
    backend.client.create_volume("v1", root_user_id="x", root_group_id="y", configuration=None,
                                 tenant_uuid=api.tenants["t1"])  # fmt: skip
    await backend.remove_volume("v1", purge=False, options={"tenant": "t2"})
    assert api.names() == ["v1", "v1"] and not any(m in ("eraseVolume", "deleteVolume") for m in api.methods())
    await backend.remove_volume("v1", purge=True, options={"tenant": "t2"})
    assert api.names("t1") == ["v1"] and api.names("t2") == []
    assert "eraseVolume" in api.methods() and "deleteVolume" not in api.methods()
    await backend.remove_volume("v1", purge=True, options={"tenant": "t2"})  # already gone: fine
    assert api.names("t1") == ["v1"]


async def test_backend_refuses_a_name_another_tenant_has(api: QuobyteApiDouble) -> None:
    """The client path names a volume by name alone: a name that exists in another tenant is refused, so a
    mount path can never mean another tenant's volume."""
    backend = backend_for(api)
    await backend.create_volume("v1", owner=ALICE, mode=0o770, options={"tenant": "t2"})
    with pytest.raises(BackendError, match=r"exists in tenant .* already: the client path v1 would be ambiguous"):
        await backend.create_volume("v1", owner=ALICE, mode=0o770)
    assert api.names("t1") == [] and api.names("t2") == ["v1"]


async def test_backend_calls_run_off_the_event_loop(api: QuobyteApiDouble) -> None:
    """A slow API does not block the loop: other tasks keep running while a create waits."""
    backend = backend_for(api)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    api.fail_next = [503, 503]  # two backoff sleeps inside the worker thread
    backend.client.backoff = 0.1
    await backend.create_volume("v1", owner=ALICE, mode=0o770)
    task.cancel()
    assert ticks >= 10


async def test_backend_never_uses_the_shared_default_executor(api: QuobyteApiDouble) -> None:
    """A slow API (lock held, backoff sleeps) runs on the backend's own executor: the loop's default
    executor, shared with the rest of the plugin, stays free."""
    backend = backend_for(api)
    loop = asyncio.get_running_loop()
    threads: list[str] = []
    real_call = backend.client.call

    def spy(method: str, params: object) -> object:
        threads.append(threading.current_thread().name)
        return real_call(method, params)  # type: ignore[arg-type]

    backend.client.call = spy  # type: ignore[method-assign]
    default = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shared-default")
    loop.set_default_executor(default)
    api.fail_next = [503, 503]
    backend.client.backoff = 0.2
    create = asyncio.create_task(backend.create_volume("v1", owner=ALICE, mode=0o770))
    await asyncio.sleep(0.1)
    began = time.monotonic()
    await loop.run_in_executor(None, lambda: None)  # the shared executor answers while the create sleeps
    assert time.monotonic() - began < 0.1 and not create.done()
    await create
    assert threads and all(name.startswith("quobyte") for name in threads)
    await backend.close()


async def test_backend_existing_client_mode_requires_a_mount(tmp_path: Path, api: QuobyteApiDouble) -> None:
    """--quobyte-client existing refuses a mount point where no client is mounted, saying how to mount it."""
    backend = QuobyteBackend(
        client=client_for(api), mountpoint=tmp_path, tenant="t", configuration="c", client_mode="existing"
    )
    with pytest.raises(Exception, match=r"not mounted: mount it with `mount\.quobyte --allow-usermapping"):
        await backend.check()


@pytest.mark.parametrize("mode", ["existing", "start"])
async def test_client_modes_require_a_quobyte_mount(
    tmp_path: Path, api: QuobyteApiDouble, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """existing/start: a mount that is not Quobyte's (mountinfo fstype) on the mount point is a clear error;
    a fuse.quobyte mount is accepted as it is."""
    table = {tmp_path: [MountEntry(mount_point=str(tmp_path), fstype="ext4", source="/dev/sda1")]}
    monkeypatch.setattr(quobyte_module, "mounts_at", lambda path: table.get(Path(path), []))
    monkeypatch.setattr(quobyte_module, "is_stale", lambda path: False)
    backend = QuobyteBackend(
        client=client_for(api), mountpoint=tmp_path, tenant="t1", client_mode=mode,  # type: ignore[arg-type]
        registry="reg:7861", mount_command="/bin/false",
    )  # fmt: skip
    with pytest.raises(BackendError, match=r"has a ext4 mount of '/dev/sda1', not a Quobyte client mount"):
        await backend.check()
    table[tmp_path] = [MountEntry(mount_point=str(tmp_path), fstype="fuse.quobyte", source="quobyte@reg:7861/")]
    await backend.check()
    assert await backend.mount_identity(ALICE) == tmp_path


async def test_start_mode_checks_what_the_mount_command_mounted(
    tmp_path: Path, api: QuobyteApiDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start: a mount command that leaves something other than a Quobyte mount is reported."""
    mp = tmp_path / "mnt"
    fake = tmp_path / "mount.quobyte"
    fake.write_text(f"#!/bin/sh\ntouch {tmp_path}/ran\n")
    fake.chmod(0o755)
    ran = tmp_path / "ran"
    monkeypatch.setattr(
        quobyte_module, "mounts_at",
        lambda path: [MountEntry(mount_point=str(mp), fstype="tmpfs", source="tmpfs")] if ran.exists() else [],
    )  # fmt: skip
    backend = QuobyteBackend(
        client=client_for(api), mountpoint=mp, tenant="t1", client_mode="start", registry="reg", mount_command=str(fake)
    )
    with pytest.raises(BackendError, match=r"put a tmpfs mount on .*, not a Quobyte client mount"):
        await backend.check()


async def test_backend_start_mode_runs_mount_quobyte(tmp_path: Path, api: QuobyteApiDouble) -> None:
    """--quobyte-client start runs the mount command with user mapping and reports its failure."""
    fake = tmp_path / "mount.quobyte"
    log = tmp_path / "argv"
    fake.write_text(f'#!/bin/sh\necho "$@" > {log}\necho "no registry reachable" >&2\nexit 3\n')
    fake.chmod(0o755)
    backend = QuobyteBackend(
        client=client_for(api), mountpoint=tmp_path / "mnt", tenant="t", configuration="c",
        client_mode="start", registry="reg:7861", mount_command=str(fake),
    )  # fmt: skip
    with pytest.raises(Exception, match="exit status 3\\): no registry reachable"):
        await backend.check()
    assert log.read_text().split() == ["--allow-usermapping-in-volumename", "reg:7861/", str(tmp_path / "mnt")]
