"""Pruning unused images: on demand against the private engine, and the automatic policy."""
from __future__ import annotations

import threading
import uuid
from typing import Optional

import pytest

from iofogd.errors import EngineUnavailable
from iofogd.system.microservices import Microservices
from iofogd.system.prune import AutoPruner, available_percent
from tests.system.conftest import Engine, microservice, registries


def test_prune_reclaims_unused_images_and_keeps_used_ones(private_engine: Engine, node: str) -> None:
    engine = private_engine
    client = engine.client
    suffix = uuid.uuid4().hex[:8]
    unused = f"iofogd-test/prune-me:{suffix}"
    unused_id = engine.build_unique(unused, size=1_000_000)
    wanted = f"iofogd-test/wanted:{suffix}"          # a microservice's image, no container yet
    engine.build_unique(wanted)
    alias = f"iofogd-test/busybox-alias:{suffix}"    # a second tag of an image in use
    seed = client.inspect_image(engine.image)
    assert seed is not None
    client.call("POST", "images", engine.image, "tag", query={"repo": alias.split(":")[0], "tag": suffix})

    m = Microservices(lambda: client, node_uuid=node, agent_address="127.0.0.1", time_zone="", stop_timeout=1)
    running = microservice(uuid.uuid4().hex[:16], engine.image, registryId=2)
    m.set_desired([running], registries(engine))
    m.reconcile_once()                                 # the seed image is now in use by a container
    # `wanted` is named by the list but has no container yet (no pass since)
    m.set_desired([running, microservice(uuid.uuid4().hex[:16], wanted, registryId=2)], registries(engine))

    tags_before = set(client.inspect_image(engine.image)["RepoTags"])  # type: ignore[index]
    assert alias in tags_before
    try:
        reclaimed = m.prune_unused()
        assert reclaimed >= 1_000_000                  # the unused image's own layer
        assert client.inspect_image(unused) is None and client.inspect_image(unused_id) is None
        assert client.inspect_image(wanted) is not None
        # Docker's own prune (dangling=false) would strip tags of in-use images (moby#36295)
        used = client.inspect_image(engine.image)
        assert used is not None and used["Id"] == seed["Id"]
        assert set(used["RepoTags"]) == tags_before
        assert m.prune_unused() == 0                   # nothing left to reclaim
    finally:
        for ref in (alias, wanted, unused):
            client.remove_image(ref, force=True)


def test_prune_without_an_engine_raises_engine_unavailable(tmp_path: object) -> None:
    from iofogd.system.docker import DockerClient
    client = DockerClient(f"unix://{tmp_path}/none.sock", timeout=2)
    m = Microservices(lambda: client, node_uuid="n", agent_address="", time_zone="")
    with pytest.raises(EngineUnavailable):
        m.prune_unused()
    m.reconcile_once()                                 # the loop reports instead of raising
    assert not m.engine_ok() and "none.sock" in (m.engine_error() or "")


# -- the automatic policy (docs/docker.md#prune) ---------------------------------------


class Pruner:
    """Counts prunes; optionally fails like an absent engine."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self) -> int:
        self.calls += 1
        if self.fail:
            raise EngineUnavailable("no Docker engine answers")
        return 4096


@pytest.mark.parametrize("available, threshold, expected", [
    (5, 20, 4096),        # below the threshold: prune
    (20, 20, None),       # at the threshold: no
    (80, 20, None),
    (5, 0, None),         # threshold 0: pruning off
    (None, 20, None),     # not measured yet: skip (upstream divided by zero and died, 7.5)
])
def test_prune_only_below_the_threshold(available: Optional[int], threshold: int, expected: Optional[int]) -> None:
    prune = Pruner()
    auto = AutoPruner(prune, lambda: available, lambda: threshold)
    assert auto.check_once() == expected
    assert prune.calls == (1 if expected else 0)
    assert auto.last_reclaimed == expected


def test_engine_trouble_and_bugs_never_end_the_loop() -> None:
    prune = Pruner(fail=True)
    checks = []

    def available() -> Optional[int]:
        checks.append(1)
        if len(checks) == 2:
            raise ZeroDivisionError("a bug in a measurement")
        if len(checks) >= 4:
            stop.set()
        return 1

    stop = threading.Event()
    auto = AutoPruner(prune, available, lambda: 10)
    assert auto.check_once() is None                   # DockerError: logged, None
    thread = threading.Thread(target=auto.run, args=(stop, 0.01), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and len(checks) == 4 and prune.calls == 3


def test_available_percent_of_real_filesystems(tmp_path: object) -> None:
    value = available_percent(["/", str(tmp_path)])
    assert value is not None and 0 <= value <= 100
    assert available_percent([f"{tmp_path}/missing/dir"]) is None
    auto = AutoPruner.for_paths(Pruner(), [str(tmp_path)], lambda: 101)   # any disk is below 101%
    assert auto.check_once() == 4096
