"""The reconciler end to end: a microservice list in, real containers out."""
from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from iofogd.system import dockerproto as proto
from iofogd.system.microservices import Microservices
from tests.system.conftest import Engine, microservice, registries, restart_engine


class Clock:
    """A clock the test moves (back-off and stuck detection are about time)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def reconciler(engine: Engine, node: str, **kwargs: Any) -> Microservices:
    kwargs.setdefault("stop_timeout", 1)
    return Microservices(lambda: engine.client, node_uuid=node, agent_address="10.9.8.7",
                         time_zone="Europe/Berlin", **kwargs)


def ms_uuid() -> str:
    return uuid.uuid4().hex[:16]


def status_of(m: Microservices, uuid_: str) -> dict[str, Any]:
    return next(s for s in m.statuses() if s["id"] == uuid_)


def wait_for(check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def wait_for_file(path: Path) -> str:
    wait_for(lambda: path.exists() and path.read_text().endswith("done\n"))
    return path.read_text()


def test_without_an_engine_nothing_raises(tmp_path: Path) -> None:
    from iofogd.system.docker import DockerClient
    client = DockerClient(f"unix://{tmp_path}/absent.sock", timeout=2)
    m = Microservices(lambda: client, node_uuid="n", agent_address="", time_zone="")
    assert not m.engine_ok() and m.engine_error() == "the Docker engine has not been contacted yet"
    m.set_desired([microservice("a1", "busybox"), {"uuid": "no-image"}], [])
    assert [s["id"] for s in m.statuses()] == ["a1"]          # a malformed item is left out
    m.reconcile_once()
    assert not m.engine_ok() and "absent.sock" in (m.engine_error() or "")
    assert m.statuses() == [{"id": "a1", "status": "UNKNOWN", "percentage": 0.0,
                             "errorMessage": f"Docker engine unavailable: {m.engine_error()}"}]
    assert m.running_count() == 0


def test_list_in_containers_out(engine: Engine, node: str, tmp_path: Path) -> None:
    out, ro = tmp_path / "out", tmp_path / "ro"
    out.mkdir()
    ro.mkdir()
    script = ("cat /etc/hosts > /out/hosts; env > /out/env; "
              "(touch /ro/x && echo writable || echo read-only) > /out/ro; echo done >> /out/ro; sleep 100000")
    public, private = ms_uuid(), ms_uuid()
    items = [
        microservice(public, engine.remote(engine.registry), registryId=3, cmd=["sh", "-c", script],
                     env=[{"key": "FOO", "value": "bar"}], extraHosts=["db:10.0.0.5"], logSize=10,
                     portMappings=[{"portInternal": 80, "portExternal": 18080, "isUdp": None}],
                     volumeMappings=[
                         {"hostDestination": str(out), "containerDestination": "/out", "accessMode": "rw", "type": "bind"},
                         {"hostDestination": str(ro), "containerDestination": "/ro", "accessMode": "ro", "type": "bind"},
                     ]),
        microservice(private, engine.remote(engine.auth_registry), registryId=4),   # credentials needed
    ]
    m = reconciler(engine, node)
    m.set_desired(items, registries(engine))
    assert [s["status"] for s in m.statuses()] == ["QUEUED", "QUEUED"]
    m.reconcile_once()

    assert m.engine_ok() and m.engine_error() is None
    assert m.running_count() == 2
    inspect = engine.client.inspect_container(proto.container_name(public))
    assert inspect is not None and inspect["Name"] == f"/iofog_{public}"
    assert inspect["Config"]["Labels"][proto.LABEL_NODE] == node
    host = inspect["HostConfig"]
    assert host["Privileged"] is False and host["CpusetCpus"] == "" and host["NetworkMode"] == "default"
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "5", "max-size": "2m"}}
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "18080"}]}
    mounts = {mnt["Destination"]: mnt["RW"] for mnt in inspect["Mounts"]}
    assert mounts == {"/out": True, "/ro": False}

    # what the microservice itself sees
    assert "read-only" in wait_for_file(out / "ro")
    env = (out / "env").read_text().splitlines()
    assert f"SELFNAME={public}" in env and "TZ=Europe/Berlin" in env and "FOO=bar" in env
    hosts = (out / "hosts").read_text().split("\n")
    assert "10.9.8.7\tiofog" in hosts and "10.0.0.5\tdb" in hosts

    statuses = {s["id"]: s for s in m.statuses()}
    for uuid_ in (public, private):
        item = statuses[uuid_]
        assert item["status"] == "RUNNING" and item["percentage"] == 100.0
        assert item["containerId"] == engine.client.inspect_container(proto.container_name(uuid_))["Id"]  # type: ignore[index]
        assert isinstance(item["startTime"], int) and item["startTime"] > 1_700_000_000_000
        assert isinstance(item["cpuUsage"], str) and int(item["memoryUsage"]) > 0
        assert "errorMessage" not in item


def test_rebuild_and_port_changes_recreate(engine: Engine, node: str) -> None:
    uid = ms_uuid()
    item = microservice(uid, engine.image, registryId=2)          # from_cache: no pull
    m = reconciler(engine, node)
    m.set_desired([item], registries(engine))
    m.reconcile_once()
    first = status_of(m, uid)["containerId"]
    m.reconcile_once()
    assert status_of(m, uid)["containerId"] == first              # nothing changed: kept

    m.set_desired([dict(item, rebuild=True)], registries(engine))
    m.reconcile_once()
    second = status_of(m, uid)["containerId"]
    assert second != first and engine.client.inspect_container(first) is None
    m.set_desired([dict(item, rebuild=True)], registries(engine))    # the same list again
    m.reconcile_once()
    assert status_of(m, uid)["containerId"] == second
    # the Controller clears rebuild after one GET; the next list must not rebuild again
    m.set_desired([item], registries(engine))
    m.reconcile_once()
    assert status_of(m, uid)["containerId"] == second

    moved = dict(item, portMappings=[{"portInternal": 81, "portExternal": 18081, "isUdp": True}])
    m.set_desired([moved], registries(engine))
    m.reconcile_once()
    third = status_of(m, uid)["containerId"]
    assert third != second
    inspect = engine.client.inspect_container(third)
    assert inspect is not None and list(inspect["HostConfig"]["PortBindings"]) == ["81/udp"]
    assert status_of(m, uid)["status"] == "RUNNING"


def test_delete_absence_and_cleanup(engine: Engine, node: str) -> None:
    keep, delete, vanish, clean = ms_uuid(), ms_uuid(), ms_uuid(), ms_uuid()
    own_image = f"{engine.registry}/iofogd-test/cleanup:{clean}"
    engine.build_unique(own_image)
    engine.push(own_image)
    items = [microservice(u, engine.image, registryId=2) for u in (keep, delete, vanish)]
    items.append(microservice(clean, own_image, registryId=3,
                              volumeMappings=[{"hostDestination": f"iofogd-test-{clean}", "containerDestination": "/v",
                                               "accessMode": "rw", "type": "volume"}]))
    m = reconciler(engine, node)
    m.set_desired(items, registries(engine))
    m.reconcile_once()
    assert m.running_count() == 4

    items[1] = dict(items[1], delete=True)
    items[3] = dict(items[3], deleteWithCleanup=True)
    m.set_desired([items[0], items[1], items[3]], registries(engine))        # `vanish` left out
    m.reconcile_once()
    names = {c["Names"][0] for c in engine.client.list_containers(label=f"{proto.LABEL_NODE}={node}")}
    assert names == {f"/iofog_{keep}"}
    assert status_of(m, delete)["status"] == "DELETED" and "containerId" not in status_of(m, delete)
    assert engine.client.inspect_image(own_image) is None                    # with its image...
    status, _ = engine.client.call("GET", "volumes", f"iofogd-test-{clean}", ok=(404,))
    assert status == 404                                                     # ...and its volume
    assert {s["id"] for s in m.statuses()} == {keep, delete, clean}
    assert m.running_count() == 1


def test_a_killed_container_comes_back(engine: Engine, node: str) -> None:
    uid = ms_uuid()
    m = reconciler(engine, node)
    m.set_desired([microservice(uid, engine.image, registryId=2)], registries(engine))
    m.reconcile_once()
    before = engine.client.inspect_container(proto.container_name(uid))
    assert before is not None
    engine.client.kill_container(before["Id"])
    engine.wait_exit(before["Id"])
    m.reconcile_once()
    after = engine.client.inspect_container(proto.container_name(uid))
    assert after is not None and after["Id"] == before["Id"]
    assert after["State"]["Running"] and after["State"]["StartedAt"] != before["State"]["StartedAt"]
    m.reconcile_once()
    assert status_of(m, uid)["status"] == "RUNNING" and m.running_count() == 1


def test_one_that_keeps_dying_is_stuck_in_restart(engine: Engine, node: str) -> None:
    uid = ms_uuid()
    clock = Clock()
    m = reconciler(engine, node, clock=clock, backoff_base=1.0, backoff_max=8.0, stuck_after=3, stuck_window=600.0)
    item = microservice(uid, engine.image, registryId=2, cmd=["sh", "-c", "exit 3"])
    m.set_desired([item], registries(engine))
    m.reconcile_once()                                 # created and started; exits at once
    name = proto.container_name(uid)
    starts = []
    for _ in range(12):
        engine.wait_exit(name)
        clock.now += 1.5                               # shorter than the later back-off delays
        m.reconcile_once()
        starts.append(engine.client.inspect_container(name)["State"]["StartedAt"])  # type: ignore[index]
        if status_of(m, uid)["status"] == "STUCK_IN_RESTART":
            break
    status = status_of(m, uid)
    assert status["status"] == "STUCK_IN_RESTART"
    assert "exited 3 times" in status["errorMessage"] and "exit code 3" in status["errorMessage"]
    assert len(set(starts)) == 3                       # 3 restarts after the first start...
    assert len(starts) > 3                             # ...backing off: some passes only waited
    clock.now += 10_000
    m.reconcile_once()                                 # stuck: left alone
    assert status_of(m, uid)["status"] == "STUCK_IN_RESTART"
    m.set_desired([dict(item, cmd=["sleep", "100000"], rebuild=True)], registries(engine))
    m.reconcile_once()                                 # a changed item is a fresh start
    assert status_of(m, uid)["status"] == "RUNNING"


def test_a_new_instance_adopts_existing_containers(engine: Engine, node: str) -> None:
    uids = [ms_uuid(), ms_uuid()]
    items = [microservice(u, engine.image, registryId=2) for u in uids]
    first = reconciler(engine, node)
    first.set_desired(items, registries(engine))
    stop = threading.Event()
    # daemon=True: a failed wait below must not leave a loop that keeps pytest alive
    loop = threading.Thread(target=first.run, args=(stop, 0.2), daemon=True)
    loop.start()
    try:
        wait_for(lambda: first.running_count() == 2 and all(s["status"] == "RUNNING" for s in first.statuses()))
    finally:
        stop.set()                                     # the daemon stops...
    loop.join(10)
    assert not loop.is_alive()
    ids = {s["id"]: s["containerId"] for s in first.statuses()}
    for cid in ids.values():                           # ...and leaves its containers running
        assert engine.client.inspect_container(cid)["State"]["Running"]  # type: ignore[index]

    again = reconciler(engine, node)                   # the daemon restarted
    again.reconcile_once()                             # no list yet: touches nothing
    assert again.running_count() == 2 and again.statuses() == []
    again.set_desired(items, registries(engine))
    again.reconcile_once()
    assert {s["id"]: s["containerId"] for s in again.statuses()} == ids
    assert all(s["status"] == "RUNNING" and s["startTime"] > 0 for s in again.statuses())


def test_pull_failure_falls_back_to_the_local_image(engine: Engine, node: str) -> None:
    unreachable = {"id": 9, "url": "127.0.0.1:9", "isPublic": True, "username": "", "password": "", "userEmail": ""}
    local, missing = ms_uuid(), ms_uuid()
    items = [microservice(local, engine.image, registryId=9),
             microservice(missing, f"127.0.0.1:9/iofogd-test/nothing:{missing}", registryId=9)]
    m = reconciler(engine, node)
    m.set_desired(items, registries(engine) + [unreachable])
    m.reconcile_once()
    assert status_of(m, local)["status"] == "RUNNING"
    failed = status_of(m, missing)
    assert failed["status"] == "FAILED" and failed["errorMessage"].startswith("Image not found in local cache")


def test_other_nodes_containers_are_left_alone(engine: Engine, node: str) -> None:
    other = f"{node}-other"
    foreign = engine.client.create_container(f"iofog_{ms_uuid()}", {
        "Image": engine.image, "Cmd": ["sleep", "100000"], "Labels": {proto.LABEL_NODE: other},
        "HostConfig": {"NetworkMode": "none", "Init": True}})
    try:
        engine.client.start_container(foreign)
        m = reconciler(engine, node)
        m.set_desired([], registries(engine))
        m.reconcile_once()
        inspect = engine.client.inspect_container(foreign)
        assert inspect is not None and inspect["State"]["Running"]
        assert m.running_count() == 0
    finally:
        engine.client.remove_container(foreign, force=True)


def test_stop_all_removes_this_nodes_containers(engine: Engine, node: str) -> None:
    uid = ms_uuid()
    m = reconciler(engine, node)
    m.set_desired([microservice(uid, engine.image, registryId=2)], registries(engine))
    m.reconcile_once()
    m.stop_all()
    assert engine.client.list_containers(label=f"{proto.LABEL_NODE}={node}") == []
    assert m.running_count() == 0 and status_of(m, uid)["status"] == "STOPPED"
    m.reconcile_once()                                 # deprovisioned: no list, nothing created
    assert engine.client.list_containers(label=f"{proto.LABEL_NODE}={node}") == []


def test_engine_stopped_mid_run_and_started_again(private_engine: Engine, node: str) -> None:
    engine = private_engine
    uid = ms_uuid()
    m = reconciler(engine, node)
    m.set_desired([microservice(uid, engine.image, registryId=2)], registries(engine))
    stop = threading.Event()
    loop = threading.Thread(target=m.run, args=(stop, 0.2), daemon=True)
    loop.start()
    try:
        wait_for(lambda: m.running_count() == 1)
        first = status_of(m, uid)["containerId"]

        def while_down() -> dict[str, Any]:
            wait_for(lambda: not m.engine_ok())
            return status_of(m, uid)

        down = restart_engine(engine, while_down)
        assert down["status"] == "UNKNOWN" and "Docker engine unavailable" in down["errorMessage"]
        assert "containerId" not in down
        wait_for(lambda: m.engine_ok() and m.running_count() == 1)
        back = status_of(m, uid)
        assert back["status"] == "RUNNING" and back["containerId"] == first   # restarted, not recreated
        assert loop.is_alive() and m.engine_error() is None
    finally:
        stop.set()
        loop.join(10)
    assert not loop.is_alive()
    assert os.path.exists(f"{engine.engine_dir}/docker.sock")
