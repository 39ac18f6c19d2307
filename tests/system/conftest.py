"""A real Docker engine for the tests of iofogd.system.

The engine is the private one ``scripts/docker-engine.sh start`` runs (Debian's
docker.io on its own socket, a seeded busybox image, an open and an
authenticating registry on 127.0.0.1); its socket comes in IOFOGD_TEST_DOCKER.
Without it the engine tests skip and say how to get one. Tests that delete
images or stop the engine itself also need IOFOGD_TEST_ENGINE_DIR (set by the
script), so they never run against someone's own engine.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import pytest

from iofogd.errors import DockerError, EngineUnavailable
from iofogd.system import dockerproto as proto
from iofogd.system.docker import DockerClient

HOW = ("no Docker engine for the tests: run scripts/docker-engine.sh start "
       "and export IOFOGD_TEST_DOCKER=unix://... (eval \"$(scripts/docker-engine.sh start)\")")


@dataclass
class Engine:
    url: str
    client: DockerClient
    image: str                      # the seeded busybox image, present locally
    registry: str                   # open registry holding <registry>/<image>
    auth_registry: str              # the same behind basic auth
    user: str
    password: str
    engine_dir: Optional[str]       # set when the engine is the script's private one

    def remote(self, registry: str) -> str:
        return f"{registry}/{self.image}"

    def build_unique(self, repo_tag: str, size: int = 100_000) -> str:
        """An image of the seed plus a layer of ``size`` random bytes (runnable; real bytes
        to pull and to prune), committed from a container; its id."""
        cid = self.client.create_container(f"iofogd-build-{uuid.uuid4().hex[:12]}", {
            "Image": self.image, "Cmd": ["sh", "-c", f"head -c {size} /dev/urandom > /blob"],
            "HostConfig": {"NetworkMode": "none"}})
        try:
            self.client.start_container(cid)
            self.wait_exit(cid)
            repo = proto.parse_image_ref(repo_tag)
            self.client.call("POST", "commit", query={"container": cid, "repo": repo.repository, "tag": repo.tag})
        finally:
            self.client.remove_container(cid, force=True)
        image = self.client.inspect_image(repo_tag)
        assert image is not None
        return str(image["Id"])

    def push(self, ref: str, auth: Optional[str] = None) -> None:
        parsed = proto.parse_image_ref(ref)
        self.client.stream("POST", "images", parsed.repository, "push", query={"tag": parsed.pull_tag},
                            headers={"X-Registry-Auth": auth or "e30="})

    def wait_exit(self, ref: str) -> None:
        self.client.call("POST", "containers", ref, "wait", timeout=30)


@pytest.fixture(scope="session")
def engine() -> Engine:
    url = os.environ.get("IOFOGD_TEST_DOCKER", "")
    if not url:
        pytest.skip(HOW)
    client = DockerClient(url, timeout=30)
    try:
        client.ping()
        client.api_version()
    except EngineUnavailable as exc:
        pytest.skip(f"{exc.message}; {HOW}")
    return Engine(
        url=url,
        client=client,
        image=os.environ.get("IOFOGD_TEST_IMAGE", "iofogd-test/busybox:1"),
        registry=os.environ.get("IOFOGD_TEST_REGISTRY", "127.0.0.1:5000"),
        auth_registry=os.environ.get("IOFOGD_TEST_AUTH_REGISTRY", "127.0.0.1:5001"),
        # the defaults are scripts/docker-engine.sh's
        user=os.environ.get("IOFOGD_TEST_REGISTRY_USER", "iofogd"),
        password=os.environ.get("IOFOGD_TEST_REGISTRY_PASSWORD", "iofogd-test-secret"),
        engine_dir=os.environ.get("IOFOGD_TEST_ENGINE_DIR") or None,
    )


@pytest.fixture(autouse=True)
def _seed_image_present(request: pytest.FixtureRequest) -> None:
    """Every engine test starts with the seed image: prune tests remove unused
    images, the seed among them when no container of theirs uses it. It is put
    back from the open registry, where scripts/docker-engine.sh pushed it."""
    if "engine" not in request.fixturenames:
        return
    engine: Engine = request.getfixturevalue("engine")
    if engine.client.inspect_image(engine.image) is not None:
        return
    remote = engine.remote(engine.registry)
    engine.client.pull(remote)
    ref = proto.parse_image_ref(engine.image)
    engine.client.call("POST", "images", remote, "tag", query={"repo": ref.repository, "tag": ref.tag})


@pytest.fixture
def private_engine(engine: Engine) -> Engine:
    """The script's own engine: tests may delete images and stop it."""
    if not engine.engine_dir or not engine.url.startswith(f"unix://{engine.engine_dir}/"):
        pytest.skip("deletes images or stops the engine: needs the private engine of "
                    "scripts/docker-engine.sh start (export IOFOGD_TEST_ENGINE_DIR as it prints)")
    return engine


@pytest.fixture
def node(engine: Engine) -> Iterator[str]:
    """A node uuid of its own; every container labelled with it is removed afterwards."""
    node_uuid = "test-" + uuid.uuid4().hex[:12]
    yield node_uuid
    try:
        for item in engine.client.list_containers(all=True, label=f"{proto.LABEL_NODE}={node_uuid}"):
            engine.client.remove_container(item["Id"], force=True, volumes=True)
    except DockerError:
        pass


def microservice(uuid_: str, image: str, **overrides: Any) -> dict[str, Any]:
    """A microservice item shaped exactly as GET agent/microservices sends it (agent4.log A16)."""
    item: dict[str, Any] = {
        "uuid": uuid_, "imageId": image, "config": "{}", "rebuild": False, "rootHostAccess": False,
        "logSize": 1, "registryId": 1, "portMappings": [], "volumeMappings": [], "imageSnapshot": "",
        "delete": False, "deleteWithCleanup": False, "env": [], "extraHosts": [],
        "cmd": ["sleep", "100000"], "routes": [], "isConsumer": False,
    }
    item.update(overrides)
    return item


def registries(engine: Engine) -> list[dict[str, Any]]:
    """The Controller's two default registries (agent1.log A4) plus the test registries."""
    base = {"isSecure": False, "certificate": "", "requiresCert": False, "userEmail": "", "userId": None}
    return [
        dict(base, id=1, url="registry.hub.docker.com", isPublic=True, username="", password=""),
        dict(base, id=2, url="from_cache", isPublic=True, username="", password=""),
        dict(base, id=3, url=engine.registry, isPublic=True, username="", password=""),
        dict(base, id=4, url=engine.auth_registry, isPublic=False, username=engine.user, password=engine.password),
    ]


def restart_engine(engine: Engine, while_down: Any = None) -> Any:
    """Stop the private dockerd (SIGTERM) and start it again with the same command line.

    Returns what ``while_down()`` returned, called while no engine answers.
    """
    assert engine.engine_dir is not None
    with open(os.path.join(engine.engine_dir, "dockerd.pid")) as f:
        pid = int(f.read().strip())
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0") if a]
    assert engine.engine_dir in " ".join(argv), "not the private engine"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    result = None
    try:
        if while_down is not None:
            result = while_down()
    finally:
        log = open(os.path.join(engine.engine_dir, "dockerd.log"), "ab")
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                if engine.client.ping():
                    break
            except EngineUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    return result
