"""The daemon's lifecycle: start, signals, reload, crash safety, files it creates."""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from tests.daemon_process import REPO, RunningDaemon, free_port


def test_creates_its_files_under_the_root(daemon: RunningDaemon) -> None:
    etc = os.path.join(daemon.root, "etc/iofog-agent")
    token_path = os.path.join(etc, "local-api")
    mode = stat.S_IMODE(os.stat(token_path).st_mode)
    assert mode == 0o640
    token = open(token_path).read()
    assert len(token) == 32 and token.isalnum() and token.isascii()
    assert os.path.isfile(os.path.join(etc, "config.xml"))
    assert os.path.isfile(os.path.join(etc, "config-bck.xml"))
    assert os.path.isdir(os.path.join(daemon.root, "var/lib/iofog-agent"))
    assert os.path.isfile(os.path.join(daemon.root, "var/log/iofog-agent/iofog-agent.0.log"))


def test_token_survives_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = RunningDaemon(str(tmp_path / "r")).start()
    token = d.token
    d.stop()
    d2 = RunningDaemon(d.root, port=d.port).start()
    try:
        assert d2.token == token
        assert d2.request("GET", "/v2/version")[0] == 200
    finally:
        d2.stop()


def test_sigterm_finishes_in_flight_and_exits_0(daemon: RunningDaemon) -> None:
    idle = socket.create_connection(("127.0.0.1", daemon.port))  # an idle keep-alive client
    results: list[int] = []

    def slow_client() -> None:
        # A request whose body arrives slowly is in flight when SIGTERM lands.
        with socket.create_connection(("127.0.0.1", daemon.port)) as s:
            body = b'{"status-frequency":"12"}'
            s.sendall(b"POST /v2/config HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: " + daemon.token.encode()
                      + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:5])
            time.sleep(0.5)
            s.sendall(body[5:])
            results.append(int(s.recv(4096).split()[1]))

    t = threading.Thread(target=slow_client)
    t.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    t.join()
    assert results == [200]
    assert time.monotonic() - started < 10
    assert idle.recv(10) == b""  # closed by the daemon, not left hanging
    idle.close()
    assert "stopped" in daemon.log()


def test_sighup_reloads_config(daemon: RunningDaemon) -> None:
    path = os.path.join(daemon.root, "etc/iofog-agent/config.xml")
    text = open(path).read()
    assert "<status_update_freq>30</status_update_freq>" in text
    with open(path, "w") as f:
        f.write(text.replace("<status_update_freq>30<", "<status_update_freq>42<"))
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if daemon.request("GET", "/v2/info")[2]["status-update-frequency"] == "42":
            break
        time.sleep(0.05)
    assert daemon.request("GET", "/v2/info")[2]["status-update-frequency"] == "42"


def test_corrupt_config_falls_back_to_backup(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = RunningDaemon(str(tmp_path / "r")).start()
    d.request("POST", "/v2/config", {"status-frequency": "17"})
    d.stop()
    with open(os.path.join(d.root, "etc/iofog-agent/config.xml"), "w") as f:
        f.write("<config><status_update_freq>")
    d2 = RunningDaemon(d.root, port=d.port).start()
    try:
        assert d2.request("GET", "/v2/info")[2]["status-update-frequency"] == "17"
    finally:
        d2.stop()
    assert "config-bck.xml" in d2.log()


def test_both_configs_corrupt_refuses_with_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    etc = tmp_path / "etc/iofog-agent"
    etc.mkdir(parents=True)
    (etc / "config.xml").write_text("<config>")
    (etc / "config-bck.xml").write_text("not xml")
    out = subprocess.run([sys.executable, "-m", "iofogd", "--root", str(tmp_path), "--port", "1"],
                         capture_output=True, text=True, cwd=REPO, timeout=30)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iofogd: cannot start:")


def check_config(root: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iofogd", "--root", root, "--check-config"],
                          capture_output=True, text=True, cwd=REPO, timeout=30)


def test_check_config_writes_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Service managers run it as root before a start: a repairing load would
    # leave root-owned files the service user cannot read.
    out = check_config(str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "shipped defaults would be written" in out.stdout
    assert os.listdir(tmp_path) == []
    d = RunningDaemon(str(tmp_path / "r")).start()
    d.stop()
    etc = os.path.join(d.root, "etc/iofog-agent")
    before = {name: os.stat(os.path.join(etc, name)).st_mtime_ns for name in os.listdir(etc)}
    assert check_config(d.root).returncode == 0
    assert {name: os.stat(os.path.join(etc, name)).st_mtime_ns for name in os.listdir(etc)} == before
    with open(os.path.join(etc, "config.xml"), "w") as f:
        f.write("<config>")
    out = check_config(d.root)
    assert out.returncode == 0 and "the backup" in out.stdout
    with open(os.path.join(etc, "config-bck.xml"), "w") as f:
        f.write("<config>")
    out = check_config(d.root)
    assert out.returncode == 1 and out.stderr.startswith("iofogd: cannot start:")


def test_kill_9_during_config_writes_leaves_a_loadable_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = RunningDaemon(str(tmp_path / "r")).start()
    stop = threading.Event()
    written: list[str] = []

    def burst() -> None:
        n = 10
        while not stop.is_set():
            n += 1
            try:
                if d.request("POST", "/v2/config", {"status-frequency": str(n)})[0] == 200:
                    written.append(str(n))
            except OSError:
                return

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert d.proc is not None
    d.proc.kill()
    stop.set()
    for t in threads:
        t.join()
    d.stop()
    assert written, "no write completed before the kill"
    d2 = RunningDaemon(d.root, port=d.port).start()
    try:
        value = d2.request("GET", "/v2/info")[2]["status-update-frequency"]
        # Any value a client was told was written, or one in flight at the kill.
        assert int(value) >= 11
    finally:
        d2.stop()


def test_ready_notification(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sock_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(sock_path)
        listener.settimeout(15)
        d = RunningDaemon(str(tmp_path / "r"), env={"NOTIFY_SOCKET": sock_path}).start()
        try:
            assert listener.recv(100) == b"READY=1"
        finally:
            d.stop()
        assert listener.recv(100) == b"STOPPING=1"


@pytest.mark.parametrize("hide_psutil", [False, True])
def test_status_figures_with_and_without_psutil(tmp_path, hide_psutil: bool) -> None:  # type: ignore[no-untyped-def]
    env = {}
    if hide_psutil:
        shim = tmp_path / "shim"
        shim.mkdir()
        (shim / "psutil.py").write_text("raise ImportError('psutil hidden for this test')\n")
        env["PYTHONPATH"] = str(shim)
    d = RunningDaemon(str(tmp_path / "r"), env=env).start()
    try:
        body = d.request("GET", "/v2/status")[2]
        rss = float(body["memory-usage"].split()[1])
        assert 5 < rss < 500
        assert float(body["system-available-memory"].split()[0]) > 0
        assert d.wait_log(f"resource figures from {'proc' if hide_psutil else 'psutil'}"), d.log()
    finally:
        d.stop()


def test_a_java_agents_config_xml_runs_unchanged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A provisioned Java agent's config.xml (tests/fixtures/java-config.xml, written by
    # the JDK transformer): the daemon starts on it and keeps the node's identity.
    root = tmp_path / "r"
    etc = root / "etc/iofog-agent"
    etc.mkdir(parents=True)
    fixture = os.path.join(REPO, "tests/fixtures/java-config.xml")
    closed = f"http://127.0.0.1:{free_port()}/api/v3/"
    with open(fixture) as f:
        # Loopback only: the fixture's Controller is on a LAN address, which a
        # provisioned agent would call.
        (etc / "config.xml").write_text(f.read().replace("http://192.168.1.20:51121/api/v3/", closed))
    # The Controller does not answer; the agent must still serve at once.
    d = RunningDaemon(str(root)).start()
    try:
        info = d.request("GET", "/v2/info")[2]
        assert info["iofog-uuid"] == "4JtjzB8ccWMMyLm7wg8VrbGPKXpnYQyr"
        assert info["iofog-controller"] == closed
        assert d.request("GET", "/v2/status")[2]["connection-to-controller"] in ("not connected", "ok")
    finally:
        d.stop()
    text = (etc / "config.xml").read_text()
    assert "<access_token>n4GgC3nGTZJt3VvW</access_token>" in text


def test_daemon_arguments_both_forms_and_errors(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from iofogd.daemon import DaemonArgs, parse_args

    monkeypatch.setenv("IOFOGD_ROOT", "/from/env")
    assert parse_args([]) == DaemonArgs("/from/env")
    assert parse_args(["--root", "/r", "--address=127.0.0.1", "--port", "5", "--check-config"]) == \
        DaemonArgs("/r", "127.0.0.1", 5, True)
    assert parse_args(["--root=/r", "--port=0"]) == DaemonArgs("/r", None, 0)
    assert parse_args(["--root=/r", "--cpus", "all"]) == DaemonArgs("/r", one_cpu=False)
    assert parse_args(["--root=/r", "--cpus=one"]) == DaemonArgs("/r", one_cpu=True)
    for bad, said in ((["--port", "x"], "argument --port: invalid int value: 'x'"),
                      (["--root"], "argument --root: expected one argument"),
                      (["--address", "--check-config"], "argument --address: expected one argument"),
                      (["--verbose"], "unrecognized arguments: --verbose"),
                      (["--cpus", "two"], "argument --cpus: invalid choice: 'two' (choose from 'one', 'all')")):
        with pytest.raises(SystemExit) as exit_:
            parse_args(bad)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("usage: iofogd") and f"iofogd: error: {said}" in err
    for flag, shown in ((["--version"], "iofogd 3.1.0"), (["-h"], "--check-config")):
        with pytest.raises(SystemExit) as exit_:
            parse_args(flag)
        assert exit_.value.code == 0 and shown in capsys.readouterr().out


def test_start_gate_waits_then_answers_or_says_why(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import threading

    from iofogd import app as app_module
    from iofogd.app import Phase2, StartGate
    from iofogd.errors import ServiceUnavailable

    monkeypatch.setattr(app_module, "STARTUP_WAIT", 0.2)
    gate = StartGate()
    with pytest.raises(ServiceUnavailable, match=r"still starting \(the Docker engine client is not up yet\)"):
        gate.wait("the Docker engine client")
    parts = Phase2(None, None, None)  # type: ignore[arg-type]   # the gate only hands them over
    opener = threading.Timer(0.05, gate.open, (parts,))
    opener.start()
    assert gate.wait("the Controller client") is parts   # returns once phase 2 is done
    assert gate.is_open()
    failed = StartGate()
    failed.fail("No module named 'x'")
    with pytest.raises(ServiceUnavailable, match="could not start the WebSocket layer: No module named 'x'"):
        failed.wait("the WebSocket layer")
    assert not failed.is_open()


def test_a_failing_phase_two_stops_the_daemon_with_one_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The Controller layer is imported by phase 2 only: hiding it (an import hook in a
    # sitecustomize) breaks phase 2 after the API is up. Nothing half-built may go on serving.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'iofogd.controller.sync':\n"
        "            raise ImportError('the Controller layer hidden for this test')\n"
        "sys.meta_path.insert(0, Hide())\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'shim'}{os.pathsep}{REPO}")
    proc = subprocess.run(
        [sys.executable, "-m", "iofogd", "--root", str(tmp_path / "r"), "--address", "127.0.0.1",
         "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "serving the Local API" in proc.stderr
    assert "cannot start: the Controller layer hidden for this test" in proc.stderr
    assert "iofogd running" not in proc.stderr


def test_importing_main_starts_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # `python -m iofogd` runs the daemon; importing iofogd.__main__ (a tool that
    # walks the package, a test collector) must not start one on the real root.
    env = dict(os.environ, IOFOGD_ROOT=str(tmp_path), PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", "import iofogd.__main__; print('imported')"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (0, "imported\n"), proc.stderr
    assert list(tmp_path.iterdir()) == []   # no config.xml, no token: nothing started


# What an idle, un-provisioned node must not carry (issue 11, idle RSS): the AMQP client
# and the router link until a router address is known; OpenSSL's _hashlib (the token
# compare does not need it); uuid (and platform) until the first message; tempfile,
# concurrent.futures until a write or a container asks for them. pathlib is not in the
# list: the development venv's editable-install hook imports it at interpreter start.
NOT_AT_IDLE = ("iofogd.bus.router", "iofogd.bus.amqp", "_hashlib", "hashlib", "hmac", "uuid", "platform",
               "tempfile", "concurrent.futures")

MODULES_DUMP = """\
import os, signal, sys
def dump(signum, frame):
    with open(os.environ["IOFOGD_TEST_MODULES"] + ".part", "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
    os.rename(os.environ["IOFOGD_TEST_MODULES"] + ".part", os.environ["IOFOGD_TEST_MODULES"])
signal.signal(signal.SIGUSR2, dump)
"""


def test_an_idle_unprovisioned_node_loads_no_router_link_and_no_openssl(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A sitecustomize (run before the daemon, in its main thread) writes the daemon's
    # sys.modules on SIGUSR2, which the daemon leaves alone.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(MODULES_DUMP)
    out = tmp_path / "modules"
    d = RunningDaemon(str(tmp_path / "r"), env={"PYTHONPATH": str(shim), "IOFOGD_TEST_MODULES": str(out)})
    d.start()
    try:
        deadline = time.monotonic() + 30
        while d.request("GET", "/v2/status")[2].get("iofog-daemon") != "RUNNING":   # every layer up
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status, _, body = d.request("GET", "/v2/status")
        assert body["router"].startswith("no router: local delivery only")
        assert d.proc is not None
        d.proc.send_signal(signal.SIGUSR2)
        while not out.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        modules = set(out.read_text().split("\n"))
    finally:
        d.stop()
    assert {"iofogd.bus.service", "iofogd.bus.remote", "iofogd.controller.sync"} <= modules   # phase 2 ran
    loaded = sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in NOT_AT_IDLE))
    assert loaded == []
