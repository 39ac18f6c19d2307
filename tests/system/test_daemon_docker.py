"""The Docker side through the real iofogd daemon (issue 5, docs/cli.md#commands, docs/controller-api.md#status, docs/docker.md).

A real ``iofogd`` process (tests/daemon_process.py) on the private engine of
``scripts/docker-engine.sh start`` (tests/system/conftest.py), driven the ways
a user and a Controller drive it: POST /v2/prune, ``iofog-agent prune`` and
``/v2/commandline``; ``iofog-agent status``; provisioning against the
Controller stand-in (tests/controller/standin.py), whose microservice list
becomes containers and whose status reports show them RUNNING. What is checked
is what the engine holds, asked directly, not what the daemon believes.

The reconciler passes every 10 s (CONTAINER_MONITOR_FREQ) and at once when a
list arrives; every wait polls with a generous deadline and never sleeps a
fixed time. Without an engine everything here skips with the fixture's reason.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Iterator, Optional

import pytest

from iofogd.errors import DockerError
from iofogd.system import dockerproto as proto
from tests.controller.standin import ControllerStandIn, wait_until
from tests.daemon_process import RunningDaemon
from tests.system.conftest import Engine, restart_engine

PASS = 35.0   # a deadline that covers more than three reconciler passes on a loaded machine
PRUNED = "Success - pruned unused docker images, total reclaimed space: "
# PID 1 in a container gets no default signal handlers: without the trap, `docker stop`
# waits its whole timeout before it kills (10 s per container in the daemon).
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]


# -- helpers ------------------------------------------------------------------------------------


def configure(d: RunningDaemon, *args: str) -> None:
    out = d.cli("config", *args)
    assert out.returncode == 0 and "Change accepted" in out.stdout, out


def status_lines(d: RunningDaemon) -> dict[str, str]:
    """``iofog-agent status`` as {label: value}."""
    out = d.cli("status")
    assert out.returncode == 0, out
    return {label.strip(): value.strip() for label, sep, value in
            (line.partition(" : ") for line in out.stdout.splitlines()) if sep}


def engine_line(d: RunningDaemon) -> str:
    return status_lines(d)["Docker Engine"]


def running(d: RunningDaemon) -> str:
    return status_lines(d)["Running Microservices"]


def container(engine: Engine, ms_uuid: str) -> Optional[dict[str, Any]]:
    return engine.client.inspect_container(proto.container_name(ms_uuid))


def is_running(engine: Engine, ms_uuid: str) -> bool:
    item = container(engine, ms_uuid)
    return item is not None and bool(item["State"]["Running"])


def creations(engine: Engine, ms_uuid: str, since: float) -> int:
    """How many times the engine created the microservice's container since ``since``."""
    events: list[dict[str, Any]] = []
    filters = {"type": ["container"], "event": ["create"], "container": [proto.container_name(ms_uuid)]}
    engine.client.stream("GET", "events", query={"since": f"{since:.3f}", "until": f"{time.time():.3f}",
                                                  "filters": json.dumps(filters)}, on_object=events.append)
    return len(events)


def remove_node_containers(engine: Engine, node_uuid: str) -> None:
    try:
        for item in engine.client.list_containers(all=True, label=f"{proto.LABEL_NODE}={node_uuid}"):
            engine.client.remove_container(item["Id"], force=True, volumes=True)
    except DockerError:
        pass


def after_mark(st: ControllerStandIn, mark: int, ms_uuid: str) -> list[dict[str, Any]]:
    """The microservice's items in the status reports the stand-in took after ``mark`` requests."""
    with st.lock:
        reports = [r for r in st.requests[mark:] if r.method == "PUT" and r.route == "agent/status"]
    return [item for r in reports for item in json.loads(r.body["microserviceStatus"]) if item["id"] == ms_uuid]


def reported_running(st: ControllerStandIn, mark: int, ms_uuid: str, container_id: str) -> bool:
    return any(item["status"] == "RUNNING" and item.get("containerId") == container_id
               for item in after_mark(st, mark, ms_uuid))


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def agent(tmp_path: Any, engine: Engine) -> Iterator[RunningDaemon]:
    """A daemon on the test engine, with 1 s Controller loops."""
    d = RunningDaemon(str(tmp_path / "root")).start()
    try:
        configure(d, "-c", engine.url, "-sf", "1", "-cf", "1")
        yield d
    finally:
        d.stop()


@pytest.fixture
def standin() -> Iterator[ControllerStandIn]:
    with ControllerStandIn() as st:
        yield st


# -- prune (docs/cli.md#commands, docs/docker.md#prune) -----------------------------------------


def test_prune_through_the_api_the_cli_and_commandline(private_engine: Engine, node: str,
                                                       agent: RunningDaemon) -> None:
    engine, client = private_engine, private_engine.client
    suffix = uuid.uuid4().hex[:8]
    # Images with containers stay: the seed (and its registry tags) and one of ours.
    used = f"iofogd-e2e/used:{suffix}"
    used_id = engine.build_unique(used)
    for image in (engine.image, used):
        client.create_container(f"iofogd-e2e-{uuid.uuid4().hex[:12]}", {
            "Image": image, "Cmd": ["true"], "Labels": {proto.LABEL_NODE: node},
            "HostConfig": {"NetworkMode": "none"}})
    seed_tags = set(client.inspect_image(engine.image)["RepoTags"])  # type: ignore[index]
    unused = [f"iofogd-e2e/unused-{way}:{suffix}" for way in ("api", "cli", "commandline")]
    try:
        engine.build_unique(unused[0], size=1_000_000)
        status, headers, body = agent.request("POST", "/v2/prune")
        assert status == 200 and headers["content-type"].startswith("application/json"), body
        assert set(body) == {"status", "spaceReclaimed"} and body["status"] == "ok"
        assert isinstance(body["spaceReclaimed"], int) and body["spaceReclaimed"] >= 1_000_000
        assert client.inspect_image(unused[0]) is None
        assert client.inspect_image(used)["Id"] == used_id  # type: ignore[index]
        assert set(client.inspect_image(engine.image)["RepoTags"]) == seed_tags  # type: ignore[index]

        engine.build_unique(unused[1], size=1_000_000)
        out = agent.cli("prune")
        assert out.returncode == 0 and out.stdout.startswith(f"\n{PRUNED}"), out
        assert int(out.stdout[len(PRUNED) + 1:]) >= 1_000_000
        assert client.inspect_image(unused[1]) is None

        engine.build_unique(unused[2], size=1_000_000)
        status, _, body = agent.request("POST", "/v2/commandline", {"command": "prune"})
        assert status == 200 and body["response"].startswith(f"\n{PRUNED}"), body
        assert int(body["response"][len(PRUNED) + 1:]) >= 1_000_000
        assert client.inspect_image(unused[2]) is None
        assert client.inspect_image(used) is not None and client.inspect_image(engine.image) is not None
    finally:
        remove_node_containers(engine, node)
        for ref in (used, *unused):
            try:
                client.remove_image(ref, force=True)
            except DockerError:
                pass


# -- an engine that is not there ------------------------------------------------------------------


def test_dead_socket_is_503_exit_1_and_not_usable(agent: RunningDaemon) -> None:
    configure(agent, "-c", f"unix://{agent.root}/no-docker.sock")
    status, headers, body = agent.request("POST", "/v2/prune")
    assert status == 503 and headers["content-type"].startswith("application/json"), body
    assert body["status"] == "failed" and "no-docker.sock" in body["error"], body
    out = agent.cli("prune")
    assert (out.returncode, out.stdout) == (1, "\nFailure - not pruned.\n"), out
    status, _, body = agent.request("POST", "/v2/commandline", {"command": "prune"})
    assert status == 503 and body["status"] == "failed", body
    assert wait_until(lambda: engine_line(agent).startswith("not usable: "), timeout=PASS), agent.log()
    assert "no-docker.sock" in engine_line(agent)
    assert running(agent) == "0"
    assert agent.proc is not None and agent.proc.poll() is None


def test_engine_stopped_and_started_again(private_engine: Engine, agent: RunningDaemon) -> None:
    assert wait_until(lambda: engine_line(agent) == "ok", timeout=PASS), status_lines(agent)

    def while_down() -> tuple[int, int, bool]:
        failed = agent.request("POST", "/v2/prune")[0], agent.cli("prune").returncode
        return (*failed, wait_until(lambda: engine_line(agent).startswith("not usable: "), timeout=PASS))

    prune_status, prune_exit, noticed = restart_engine(private_engine, while_down)
    assert (prune_status, prune_exit, noticed) == (503, 1, True), agent.log()
    # No request reaches the engine from here: the reconciler notices by itself.
    assert wait_until(lambda: engine_line(agent) == "ok", timeout=PASS), agent.log()
    assert agent.request("GET", "/v2/status")[0] == 200
    assert agent.proc is not None and agent.proc.poll() is None


# -- microservices from the Controller (docs/controller-api.md#status, docs/docker.md#containers, #reconcile, #stop) ---


def provision(agent: RunningDaemon, standin: ControllerStandIn) -> str:
    """Provision ``agent`` as a new fog of ``standin`` (no router: its image is not offline)."""
    configure(agent, "-a", standin.url)
    fog = standin.create_fog("docker-e2e", router_mode="none")
    status, _, body = agent.request("POST", "/v2/provision", {"provisioning-key": standin.provisioning_key(fog)})
    assert (status, body) == (200, {"status": "ok", "uuid": fog})
    return fog


def deploy(engine: Engine, agent: RunningDaemon, standin: ControllerStandIn, fog: str,
           **fields: Any) -> tuple[str, dict[str, Any]]:
    """A microservice of the seed image, from the open test registry, running: (uuid, inspect)."""
    image = engine.remote(engine.registry)
    mid = standin.add_microservice(fog, "busy", images={1: image, 2: image}, cmd=SLEEPER, **fields)
    assert wait_until(lambda: is_running(engine, mid), timeout=PASS), agent.log()
    inspect = container(engine, mid)
    assert inspect is not None
    return mid, inspect


def restart_adopts(engine: Engine, agent: RunningDaemon, standin: ControllerStandIn, mid: str,
                   first: dict[str, Any], began: float, *, controller_away: bool) -> None:
    """Stopping the daemon leaves the container running; a daemon started again adopts it."""
    assert agent.stop() == 0
    assert is_running(engine, mid)
    if controller_away:
        standin.vanish()   # the list comes from the offline cache (docs/controller-api.md#offline-cache)
    else:
        # The registries arrive a cycle before the list: no list is not an empty list.
        standin.fail(500, route="agent/microservices", method="GET", times=1)
    agent.start()
    assert wait_until(lambda: running(agent) == "1", timeout=PASS), agent.log()
    if controller_away:
        standin.reappear()
    mark = len(standin.requests)

    def settled() -> bool:   # the Controller heard of the container the engine now holds
        now = container(engine, mid)
        return now is not None and reported_running(standin, mark, mid, now["Id"])

    assert wait_until(settled, timeout=PASS), agent.log()
    again = container(engine, mid)
    assert again is not None and again["Id"] == first["Id"], agent.log()
    assert again["State"]["StartedAt"] == first["State"]["StartedAt"]
    assert creations(engine, mid, began) == 1


def test_microservices_from_the_controller_become_containers(private_engine: Engine, agent: RunningDaemon,
                                                             standin: ControllerStandIn) -> None:
    engine = private_engine
    began = time.time() - 1
    fog = provision(agent, standin)
    unused = f"iofogd-e2e/unused-flag:{uuid.uuid4().hex[:8]}"
    try:
        mid, first = deploy(engine, agent, standin, fog, env=[{"key": "FOO", "value": "bar"}])
        # A container with upstream's name, this node's label and SELFNAME ...
        assert first["Name"] == f"/iofog_{mid}"
        assert first["Config"]["Labels"][proto.LABEL_NODE] == fog
        assert f"SELFNAME={mid}" in first["Config"]["Env"] and "FOO=bar" in first["Config"]["Env"]
        # ... counted in the status, and RUNNING at the Controller with its container id.
        assert wait_until(lambda: running(agent) == "1", timeout=PASS), status_lines(agent)
        assert agent.request("GET", "/v2/status")[2]["running-microservices"] == "1"
        assert wait_until(lambda: reported_running(standin, 0, mid, first["Id"]), timeout=PASS)
        assert standin.microservice_statuses()[mid]["status"] == "RUNNING"

        # Another one: the pass that creates it sees the first again, which stays. It was created
        # once: the rebuild=true the Controller sends with a new microservice
        # (docs/controller-api.md#microservices) was for the container made from it, not for one more.
        second, _ = deploy(engine, agent, standin, fog)
        assert creations(engine, mid, began) == 1
        # Removed in the Controller: its container goes, the other stays.
        standin.remove_microservice(second)
        assert wait_until(lambda: container(engine, second) is None, timeout=PASS), agent.log()
        assert is_running(engine, mid)

        # The Controller's prune flag removes an unused image and keeps the running one's.
        engine.build_unique(unused, size=100_000)
        standin.raise_flags(fog, "prune")
        assert wait_until(lambda: engine.client.inspect_image(unused) is None, timeout=PASS), agent.log()
        assert is_running(engine, mid) and engine.client.inspect_image(engine.image) is not None

        restart_adopts(engine, agent, standin, mid, first, began, controller_away=False)

        # Deprovisioning stops and removes the node's containers before it answers.
        out = agent.cli("deprovision")
        assert out.returncode == 0, out
        assert container(engine, mid) is None
        assert engine.client.list_containers(all=True, label=f"{proto.LABEL_NODE}={fog}") == []
        assert wait_until(lambda: running(agent) == "0", timeout=PASS)
    finally:
        remove_node_containers(engine, fog)
        try:
            engine.client.remove_image(unused, force=True)
        except DockerError:
            pass


def test_restart_without_the_controller_adopts_its_containers(engine: Engine, agent: RunningDaemon,
                                                              standin: ControllerStandIn) -> None:
    began = time.time() - 1
    fog = provision(agent, standin)
    try:
        mid, first = deploy(engine, agent, standin, fog)
        assert wait_until(lambda: reported_running(standin, 0, mid, first["Id"]), timeout=PASS)
        restart_adopts(engine, agent, standin, mid, first, began, controller_away=True)
    finally:
        remove_node_containers(engine, fog)


def test_controller_prune_waits_for_the_engine(engine: Engine, agent: RunningDaemon,
                                               standin: ControllerStandIn) -> None:
    fog = provision(agent, standin)
    configure(agent, "-c", f"unix://{agent.root}/no-docker.sock")
    standin.raise_flags(fog, "prune")
    mark = len(standin.requests)
    # Two more changes cycles: the request is kept while no engine answers ...
    assert wait_until(lambda: len([r for r in standin.requests[mark:] if r.route == "agent/config/changes"]) >= 2,
                      timeout=PASS)
    assert standin.changes(fog)["prune"] is True
    assert "prune change not applied" in agent.log() and "Traceback" not in agent.log(), agent.log()
    # ... and carried out once one does.
    configure(agent, "-c", engine.url)
    assert wait_until(lambda: standin.changes(fog)["prune"] is False, timeout=PASS), agent.log()
    assert agent.proc is not None and agent.proc.poll() is None
