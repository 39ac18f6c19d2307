"""A private RabbitMQ (scripts/rabbitmq.sh) for the tests that need a real broker."""
from __future__ import annotations

import os
import subprocess
import time
from typing import Callable, Iterator

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPT = os.path.join(TOP, "scripts", "rabbitmq.sh")
# Not the script's default port: a RabbitMQ someone started by hand is left alone.
TEST_PORT = os.environ.get("IOFOGD_TEST_RABBIT_PORT", "25684")


class Broker:
    def __init__(self, port: str) -> None:
        self.port = int(port)
        self.env = dict(os.environ, RABBIT_PORT=port)
        self.url = f"amqp://guest:guest@127.0.0.1:{port}"

    def run(self, command: str) -> str:
        done = subprocess.run([SCRIPT, command], env=self.env, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmq.sh {command} failed: {done.stderr.strip()}")
        return done.stdout

    def start(self) -> None:
        self.run("start")

    def stop(self) -> None:
        self.run("stop")


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    if os.geteuid() != 0:
        pytest.skip("RabbitMQ runs as the rabbitmq user: scripts/rabbitmq.sh needs root")
    b = Broker(TEST_PORT)
    try:
        b.start()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"could not start RabbitMQ: {exc}")
    try:
        yield b
    finally:
        b.stop()


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes (threads deliver asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()
