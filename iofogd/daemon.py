"""The one composition root: build the App, start threads, handle signals, stop.

Start order (upstream waited for the Controller before binding the Local API,
spec 0.3; we bind first so the API is up at once whatever the Controller
does): config -> token -> logging -> state and sampler -> HTTP server ->
READY=1. Shutdown runs in the reverse order. Never forks, never writes a
pidfile; SIGTERM and SIGINT stop, SIGHUP reloads config.xml.
"""
from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Callable, Optional, Sequence

from iofogd import __version__
from iofogd.agent import ControllerPort, Provisioning
from iofogd.app import App, TokenFile
from iofogd.config import Config, ConfigStore, Paths, check_config, ensure_token, java_level, python_log_level
from iofogd.controller.cache import OfflineCache
from iofogd.controller.sync import ControllerSync
from iofogd.errors import ConfigError, IofogdError
from iofogd.http.api.sockets import SocketEndpoints
from iofogd.http.handler import LocalApiHandler
from iofogd.http.server import HttpLimits, LocalApiServer
from iofogd.notify import sd_notify
from iofogd.state import (
    CONTROLLER_NOT_CONNECTED,
    CONTROLLER_NOT_PROVISIONED,
    RUNNING,
    STOPPED,
    AgentState,
)
from iofogd.reports import EngineInfo, NetworkInfo
from iofogd.system.docker import DockerClient
from iofogd.system.microservices import Microservices
from iofogd.system.network import NetworkWatcher
from iofogd.system.prune import AutoPruner
from iofogd.system.status import Probe, ResourceSampler
from iofogd.ws.control import ControlHub
from iofogd.ws.session import SessionLimits, SessionRegistry

log = logging.getLogger("iofogd")

LOOPBACK = "127.0.0.1"
CONTAINER_MONITOR_FREQ = 10.0   # seconds, upstream's intel_amd value (spec 4.2)

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def default_root() -> str:
    return os.environ.get("IOFOGD_ROOT") or "/"


def _upstream_log_name(name: str) -> str:
    """iofog-agent.0.log is the newest, then .1, .2 ... as upstream names them
    (RotatingFileHandler would say iofog-agent.0.log.1)."""
    head, sep, n = name.rpartition(".0.log.")
    return f"{head}.{n}.log" if sep and n.isdigit() else name


class _LogFile(logging.handlers.RotatingFileHandler):
    """A log file that may fail (a full disk): said once on stderr, not per record.

    logging's own handleError prints a traceback to stderr for every record it
    cannot write; the daemon goes on either way.
    """

    failing = False
    _failed = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed = False
        super().emit(record)   # calls handleError on failure
        if self.failing and not self._failed:
            self.failing = False
            sys.stderr.write(f"iofogd: writing the log file {self.baseFilename} again\n")

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed = True
        if not self.failing:
            self.failing = True
            sys.stderr.write(f"iofogd: cannot write the log file {self.baseFilename}: "
                             f"{sys.exc_info()[1]}\n")

    def close(self) -> None:
        try:
            super().close()
        except OSError:
            pass  # what is still buffered for a full disk is lost; stderr had it


class LogSetup:
    """stderr plus rotating files in the log directory, re-done on config change."""

    def __init__(self) -> None:
        self._file: Optional[logging.Handler] = None
        root = logging.getLogger()
        self._stderr = logging.StreamHandler(sys.stderr)
        self._stderr.setFormatter(logging.Formatter(_LOG_FORMAT))
        # What is logged before the config is known waits here: shown once the
        # daemon starts, dropped when it refuses to (that is one clear line).
        self._early = logging.handlers.MemoryHandler(10_000, flushLevel=logging.CRITICAL + 100)
        root.addHandler(self._early)
        root.setLevel(logging.INFO)

    def refused(self) -> None:
        logging.getLogger().removeHandler(self._early)
        self._early.close()

    def apply(self, cfg: Config) -> None:
        root = logging.getLogger()
        if self._early in root.handlers:
            root.removeHandler(self._early)
            root.addHandler(self._stderr)
            self._early.setTarget(self._stderr)
            self._early.close()  # flushes to stderr
        root.setLevel(python_log_level(java_level(cfg.log_level) or 800))
        if self._file is not None:
            root.removeHandler(self._file)
            self._file.close()
            self._file = None
        count = max(1, cfg.log_file_count)
        # Upstream's per-file size: the disk limit shared out over the files (spec 8.2).
        per_file = max(1024 * 1024, int(cfg.log_limit_gb * 1024 ** 3 / count))
        try:
            os.makedirs(cfg.log_directory, exist_ok=True)
            handler = _LogFile(
                os.path.join(cfg.log_directory, "iofog-agent.0.log"),
                maxBytes=per_file, backupCount=count - 1, encoding="utf-8",
            )
        except OSError as exc:
            log.warning("cannot log to %s: %s", cfg.log_directory, exc)
            return
        handler.namer = _upstream_log_name
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        root.addHandler(handler)
        self._file = handler

    def close(self) -> None:
        if self._file is not None:
            logging.getLogger().removeHandler(self._file)
            self._file.close()
            self._file = None


class EngineClients:
    """One DockerClient per docker_url (it keeps the negotiated API version);
    a changed URL gets a new one (spec 4.5: the client is re-created)."""

    def __init__(self, docker_url: Callable[[], str]) -> None:
        self._docker_url = docker_url
        self._client: Optional[DockerClient] = None

    def __call__(self) -> DockerClient:
        url = self._docker_url()
        client = self._client
        if client is None or client.url != url:
            client = self._client = DockerClient(url)
        return client


class Daemon:
    def __init__(self, paths: Paths, store: ConfigStore, args: argparse.Namespace) -> None:
        self.paths = paths
        self.store = store
        self.args = args
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.threads: list[threading.Thread] = []
        cfg = store.current
        provisioned = bool(cfg.iofog_uuid and cfg.access_token)
        self.state = AgentState()
        self.state.update(
            controller_status=CONTROLLER_NOT_CONNECTED if provisioned else CONTROLLER_NOT_PROVISIONED
        )
        self.sampler = ResourceSampler(
            Probe(),
            archive_dir=lambda: os.path.join(self.store.current.disk_directory, "messages", "archive"),
            disk_path=lambda: self.store.current.disk_directory,
        )
        self.network = NetworkWatcher(
            lambda: (self.store.current.network_interface, self.store.current.controller_url)
        )
        self.microservices = Microservices(
            EngineClients(lambda: self.store.current.docker_url),
            node_uuid=cfg.iofog_uuid,
            agent_address=LOOPBACK,
            time_zone=cfg.time_zone,
        )
        self.network.on_change(self._network_changed)
        store.add_listener(self._config_changed)
        self.autoprune = AutoPruner.for_paths(
            self.microservices.prune_unused, [paths.root, paths.state_dir],
            lambda: self.store.current.available_disk_threshold,
        )
        self.port = ControllerPort(store, self.state, self.sampler, self.network.current, self.microservices)
        self.sync = ControllerSync(self.port, cache=OfflineCache(paths.etc_dir))
        self.app = App(
            paths=paths,
            config=store,
            state=self.state,
            sampler=self.sampler,
            token=TokenFile(paths.token_file),
            network=self.network.current,
            fog_type=lambda: self.store.current.fog_type,
            engine=lambda: EngineInfo(self.microservices.running_count(), self.microservices.engine_error()),
            provisioner=Provisioning(store, self.port, self.sync),
            prune=self.microservices.prune_unused,
        )
        # Every local change is PATCHed to the Controller (spec 4.5, 6.7).
        store.add_listener(lambda old, new: self.sync.config_changed())
        self.sessions = SessionRegistry()
        self.control = ControlHub()
        # A changed microservice config or edge resource list reaches the
        # microservices' control sockets as 0x0C / 0x0F (spec 2.5).
        self.state.on_config_changed(self.control.signal_config)
        self.state.on_edge_resources_changed(self.control.signal_edge_resources)
        host = args.address or cfg.api_address
        port = args.port if args.port is not None else cfg.api_port
        self.server = LocalApiServer(
            (host, port), LocalApiHandler, self.app, HttpLimits(),
            websocket=SocketEndpoints(self.control, self.sessions, SessionLimits()),
        )

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def run(self) -> int:
        self.sampler.sample()  # so the first /v2/status has figures
        self._spawn("sampler", lambda: self.sampler.run(self.stop))
        self._spawn("network", lambda: self.network.run(self.stop))
        self._spawn("control-retry", lambda: self.control.run(self.stop))
        self._spawn("microservices", lambda: self.microservices.run(self.stop, CONTAINER_MONITOR_FREQ))
        self._spawn("autoprune", lambda: self.autoprune.run(self.stop))
        # RUNNING before the first request is served: everything else is up.
        self.state.update(daemon_status=RUNNING)
        host, port = self.server.server_address[:2]
        log.info("iofogd %s serving the Local API on %s:%s (resource figures from %s)",
                 __version__, host, port, self.sampler.snapshot().source)
        self._spawn("local-api", self.server.serve_forever)
        sd_notify("READY=1")
        self.sync.start()  # returns at once: the API never waits for the Controller
        # The first changes cycle fetches everything now, not after a period
        # (get_changes_freq, 60 s shipped): microservices need their configs.
        self.sync.resync()
        while not self.stop.wait(0.2):
            if self.reload.is_set():
                self.reload.clear()
                self._reload()
        self._shutdown()
        return 0

    def _config_changed(self, old: Config, new: Config) -> None:
        # Containers created from now on carry the new identity and zone (spec 4.5).
        self.microservices.node_uuid = new.iofog_uuid
        self.microservices.time_zone = new.time_zone
        if old.docker_url != new.docker_url:
            self.microservices.poke()   # the status speaks of the new engine at once
        if (old.network_interface, old.controller_url) != (new.network_interface, new.controller_url):
            self.network.poke()

    def _network_changed(self, info: NetworkInfo) -> None:
        # The "iofog" host alias of new containers points at the agent (spec 7.2).
        self.microservices.agent_address = info.address or LOOPBACK

    def _reload(self) -> None:
        try:
            self.store.load()
        except ConfigError as exc:
            log.error("reload failed, keeping the current configuration: %s", exc)
            return
        # A changed interface or Controller URL reaches the network watcher
        # through the store's listeners (_config_changed), like any change.
        log.info("configuration reloaded")

    def _shutdown(self) -> None:
        sd_notify("STOPPING=1")
        log.info("stopping")
        self.state.update(daemon_status=STOPPED)
        self.sync.stop()
        self.server.shutdown()                 # no new connections
        self.server.close_idle_connections()   # in-flight requests finish
        self.sessions.close_all(wait=2.0)      # 1001 Going Away to every WebSocket
        self.server.server_close()             # joins the handler threads
        self.network.poke()
        for thread in self.threads:
            thread.join(timeout=5)
        log.info("stopped")

    def handle_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum == signal.SIGHUP:
            self.reload.set()
        else:
            self.stop.set()


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="iofogd", description="The ioFog edge agent daemon (foreground).")
    p.add_argument("--root", default=default_root(),
                   help="prefix of every path (default: $IOFOGD_ROOT or /)")
    p.add_argument("--address", help="listening address (default: local_api_address in config.xml)")
    p.add_argument("--port", type=int, help="listening port (default: local_api_port in config.xml)")
    p.add_argument("--check-config", action="store_true",
                   help="load config.xml, report, and exit 0 if it is usable, 1 if not")
    p.add_argument("--version", action="version", version=f"iofogd {__version__}")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    paths = Paths.from_root(args.root)
    store = ConfigStore(paths)
    logs = LogSetup()
    try:
        if args.check_config:
            for remark in check_config(paths):
                print(f"iofogd: {remark}")
            print(f"iofogd: configuration {paths.config_xml} is usable")
            return 0
        cfg = store.load()
        # Before logging starts, so a full or read-only disk is one clear line too.
        ensure_token(paths.token_file)
    except ConfigError as exc:
        # One clear line; systemd shows it in the unit status.
        logs.refused()
        print(f"iofogd: cannot start: {exc}", file=sys.stderr)
        return 1
    logs.apply(cfg)
    store.add_listener(lambda old, new: logs.apply(new))
    try:
        os.makedirs(cfg.disk_directory, exist_ok=True)
        daemon = Daemon(paths, store, args)
    except (OSError, IofogdError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, daemon.handle_signal)
    log.debug("start-up took %.1f ms", (time.monotonic() - started) * 1000)
    try:
        return daemon.run()
    finally:
        logs.close()
