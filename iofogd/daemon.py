"""The one composition root: build the App, start threads, handle signals, stop.

Start order (upstream waited for the Controller before binding the Local API,
docs/host.md#start-up; we bind first so the API is up at once whatever the Controller
does). Start-up has two phases:

1. config -> token -> logging -> state, sampler, network watcher -> App ->
   HTTP server serving -> READY=1. Only what answering a request needs is
   imported before this point.
2. Then, with the API already answering, the Docker, Controller and
   WebSocket layers are imported and built (about 60 ms of imports and psutil
   on the 2-core bench machine, more on a Pi) and their threads started; the
   daemon status turns from STARTING to RUNNING. They reach the App as one
   ``Phase2`` object; a request that needs one of them meanwhile waits for it
   (iofogd/app.py ``StartGate``); nothing is answered from a half-built daemon.
   docs/architecture.md walks through both phases.

Shutdown runs in the reverse order. Never forks, never writes a pidfile;
SIGTERM and SIGINT stop, SIGHUP reloads config.xml.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from types import FrameType

from iofogd import __version__
from iofogd.admintoken import TokenFile, ensure_token
from iofogd.app import App, Phase2, StartGate
from iofogd.config.gps import GpsUpdates
from iofogd.config.store import ConfigStore, Origin
from iofogd.config.value import Config
from iofogd.config.xmlfile import check_config
from iofogd.errors import ConfigError, IofogdError
from iofogd.http.handler import LocalApiHandler
from iofogd.http.server import HttpLimits, LocalApiServer
from iofogd.logfiles import LogSetup
from iofogd.notify import sd_notify
from iofogd.paths import Paths, default_root
from iofogd.record import Record
from iofogd.state import (
    CONTROLLER_NOT_CONNECTED,
    CONTROLLER_NOT_PROVISIONED,
    RUNNING,
    STOPPED,
    AgentState,
)
from iofogd.system.cpuhome import CpuHome
from iofogd.system.identity import ContainerAddresses, MicroserviceIdentity
from iofogd.system.network import NetworkInfo, NetworkWatcher
from iofogd.system.status import Probe, ResourceSampler

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:  # the modules of start-up phase 2 are imported there
    from typing import Callable, Final, NoReturn, Optional, Sequence

    from iofogd.agent import ControllerPort
    from iofogd.bus.remote import RouterDelivery
    from iofogd.bus.router import RouterLink
    from iofogd.bus.service import MessageBus
    from iofogd.bus.sockets import MessageSockets
    from iofogd.bus.store import Store
    from iofogd.controller.sync import ControllerSync
    from iofogd.system.microservices import Microservices
    from iofogd.ws.control import ControlHub
    from iofogd.ws.session import SessionRegistry

log = logging.getLogger("iofogd")

LOOPBACK = "127.0.0.1"
CONTAINER_MONITOR_FREQ = 10.0   # seconds, upstream's intel_amd value (docs/config-xml.md#keys)


class RouterSwitch:
    """The link to the router network (bus/router.py), built when a router address is first known.

    An un-provisioned node, or one whose config names no router, never imports
    the AMQP client nor starts the link's threads (0.8 MiB of idle RSS, two
    threads). Until then messages for receivers on other nodes wait in their
    queues on disk, as they do behind a link that has no router: the forwarder
    (RouterDelivery) offers them once the link is there.
    """

    def __init__(self, delivery: RouterDelivery, bus: MessageBus, start_forwarding: Callable[[], None]) -> None:
        self.delivery = delivery
        self.bus = bus
        self.start_forwarding = start_forwarding   # starts delivery.run in a daemon thread
        self.link: Optional[RouterLink] = None
        self._lock = threading.Lock()

    def set_router(self, host: Optional[str], port: Optional[int], node_id: str) -> None:
        """Join the router at ``host``:``port`` (None: no router); ``node_id`` names
        this node's messages if the link is built now (the node's uuid)."""
        with self._lock:
            if self.link is None:
                if host is None:
                    return   # still no router: nothing to build
                self._build(node_id)
            assert self.link is not None
            self.link.set_router(host, port)

    def _build(self, node_id: str) -> None:
        from iofogd.bus.router import RouterLink

        # A durable terminus: on a storing broker what it accepted survives its restart
        # (the ioFog router ignores it); see bus/router.py DURABLE_TERMINUS.
        link = RouterLink(self.delivery, node_id=node_id, durable_terminus=True)
        link.start()
        self.delivery.link = link
        self.link = link
        # The receivers of this node the link listens for: the routes known so far. A
        # change of routes meanwhile pushes itself (the delivery now has the link); the
        # loop ends once no change slipped in between reading and pushing.
        while True:
            routing = self.bus.routing
            self.delivery.set_routing(routing)
            if self.bus.routing is routing:
                break
        self.start_forwarding()

    def reconnect(self) -> None:
        link = self.link
        if link is not None:
            link.reconnect()

    def stop(self) -> None:
        link = self.link
        if link is not None:
            link.stop()   # what the router has not accepted stays in the queues


class Daemon:
    def __init__(self, paths: Paths, store: ConfigStore, args: DaemonArgs,
                 cpu_home: Optional[CpuHome] = None) -> None:
        """Start-up phase 1: everything the Local API needs to answer."""
        self.paths = paths
        self.store = store
        self.args = args
        self.cpu_home = cpu_home   # None: the threads may run on any CPU (--cpus all)
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
            Probe,
            archive_dir=lambda: os.path.join(self.store.current.disk_directory, "messages", "archive"),
            disk_path=lambda: self.store.current.disk_directory,
        )
        self.network = NetworkWatcher(
            lambda: (self.store.current.network_interface, self.store.current.controller_url)
        )
        # The parts of phase 2 (_build_phase2) reach the App through this gate.
        self.started = StartGate()
        self.app = App(
            paths=paths,
            config=store,
            state=self.state,
            sampler=self.sampler,
            token=TokenFile(paths.token_file),
            network=self.network,
            started=self.started,
            # Who may act as which microservice: the reconciler of phase 2 feeds
            # the addresses; strict mode is read from the store at each check.
            identity=MicroserviceIdentity(ContainerAddresses(), store),
            gps=GpsUpdates(store),
        )
        host = args.address or cfg.api_address
        port = args.port if args.port is not None else cfg.api_port
        self.server = LocalApiServer((host, port), LocalApiHandler, self.app, HttpLimits())
        self.message_store: Optional[Store] = None   # the message bus's files, once phase 2 opened them
        self.router_link: Optional[RouterSwitch] = None  # the link to the router network, with the bus

    def _build_phase2(self) -> None:
        """Start-up phase 2: the Docker, Controller and WebSocket layers.

        Imported here rather than at the top so that phase 1 does not pay for
        them (see the module docstring).
        """
        from iofogd.agent import ControllerPort, Provisioning
        from iofogd.controller.cache import OfflineCache
        from iofogd.controller.sync import ControllerSync
        from iofogd.system.docker import EngineClients
        from iofogd.system.microservices import Microservices
        from iofogd.system.prune import AutoPruner
        from iofogd.ws.control import ControlHub
        from iofogd.ws.endpoints import SocketEndpoints
        from iofogd.ws.session import SessionLimits, SessionRegistry

        self._spawn("sampler", lambda: self.sampler.run(self.stop))   # imports psutil
        cfg = self.store.current
        microservices = Microservices(
            EngineClients(lambda: self.store.current.docker_url),
            node_uuid=cfg.iofog_uuid,
            agent_address=self.network.current().address or LOOPBACK,
            time_zone=cfg.time_zone,
            addresses=self.app.identity.addresses,
        )
        self.microservices: Microservices = microservices
        self.network.on_change(self._network_changed)
        self.autoprune = AutoPruner.for_paths(
            microservices.prune_unused, [self.paths.root, self.paths.state_dir],
            lambda: self.store.current.available_disk_threshold,
        )
        self.sessions: SessionRegistry = SessionRegistry()
        self.control: ControlHub = ControlHub()
        bus, message_sockets, bus_failure = self._build_bus(cfg.disk_directory)
        port = ControllerPort(self.store, self.state, self.sampler, self.network, microservices, self.control,
                              bus=bus, router=self.router_link)
        self.controller_port: ControllerPort = port
        self.sync: ControllerSync = ControllerSync(port, cache=OfflineCache(self.paths.etc_dir))
        self.store.add_listener(self._config_changed)
        # A change made while building (the first cycle, resync below, pushes it).
        self._config_changed(cfg, self.store.current, Origin.LOCAL)
        parts = Phase2(microservices, Provisioning(self.store, port, self.sync),
                       SocketEndpoints(self.control, self.sessions, SessionLimits(), messages=message_sockets),
                       bus, bus_failure)
        self._spawn("control-retry", lambda: self.control.run(self.stop))
        self._spawn("microservices", lambda: microservices.run(self.stop, CONTAINER_MONITOR_FREQ))
        self._spawn("autoprune", lambda: self.autoprune.run(self.stop))
        self.sync.start()  # returns at once: the API never waits for the Controller
        # The first changes cycle fetches everything now, not after a period
        # (get_changes_freq, 60 s shipped): microservices need their configs.
        self.sync.resync()
        # RUNNING before any waiting request goes on: everything is up.
        self.state.update(daemon_status=RUNNING)
        self.started.open(parts)

    def _build_bus(self, disk_directory: str) -> tuple[Optional[MessageBus], Optional[MessageSockets], str]:
        """The message bus (issue 13, docs/bus.md): archive and waiting queues on disk and
        the message sockets' hub; routes come with the Controller's microservice list
        (ControllerPort). A bus that cannot open its files leaves the rest of the daemon
        running: its endpoints answer 503 with the reason returned here."""
        from iofogd.bus.logs import MicroserviceLogs
        from iofogd.bus.remote import RouterDelivery
        from iofogd.bus.service import MessageBus
        from iofogd.bus.sockets import MessageSockets
        from iofogd.bus.store import Store

        store = Store(disk_directory, lambda: self.store.current.disk_limit_gb * 1024 ** 3)
        try:
            store.start()
        except (OSError, IofogdError) as exc:
            failure = f"cannot open the message archive in {store.archive.directory}: {exc}"
            log.error("message bus not started: %s", failure)
            return None, None, failure
        self.message_store = store
        sockets = MessageSockets(store.existing_queue)
        # Receivers on other nodes: through the ioFog router network (issue 14), from
        # their waiting queues, at least once; the router's address follows the config.
        delivery = RouterDelivery(store)
        bus = MessageBus(store, sockets, remote=delivery, count=self.state.count_message)
        bus.logs = MicroserviceLogs(lambda: self.store.current.log_directory,
                                    lambda: self.store.current.iofog_uuid)
        self.router_link = RouterSwitch(delivery, bus,
                                        lambda: self._spawn("router-forward", lambda: delivery.run(self.stop)))
        self._set_router(self.store.current)
        log.info("message bus: archive in %s; receivers on other nodes: %s",
                 store.archive.directory, bus.status())
        self._spawn("bus-delivery", lambda: sockets.run(self.stop))
        return bus, sockets, ""

    def _set_router(self, cfg: Config) -> None:
        """The router to join: the Controller's routerHost/routerPort; none (local delivery
        only) while unprovisioned."""
        from iofogd.bus.routersink import router_address

        if self.router_link is not None:
            host, port = router_address(bool(cfg.iofog_uuid and cfg.access_token), cfg.router_host, cfg.router_port)
            self.router_link.set_router(host, port, cfg.iofog_uuid)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def run(self) -> int:
        self._spawn("local-api", self.server.serve_forever)
        self._spawn("network", lambda: self.network.run(self.stop))
        host, port = self.server.server_address[:2]
        log.info("iofogd %s serving the Local API on %s:%s", __version__, host, port)
        sd_notify("READY=1")
        try:
            self._build_phase2()
        except Exception as exc:   # an import or OS error: nothing half-built may serve
            log.exception("cannot start: %s", exc)
            self.started.fail(str(exc))
            self.stop.set()
            self._stop_serving()
            return 1
        log.info("iofogd running")
        while not self.stop.wait(0.2):
            if self.reload.is_set():
                self.reload.clear()
                self._reload()
            if self.cpu_home is not None:
                self.cpu_home.review(time.monotonic())
        self._shutdown()
        return 0

    def _config_changed(self, old: Config, new: Config, origin: str) -> None:
        """The store's listener in phase 2: the running parts follow the config."""
        # Containers created from now on carry the new identity and zone (docs/config-xml.md#effect).
        self.microservices.node_uuid = new.iofog_uuid
        self.microservices.time_zone = new.time_zone
        if old.docker_url != new.docker_url:
            self.microservices.poke()   # the status speaks of the new engine at once
        if (old.network_interface, old.controller_url) != (new.network_interface, new.controller_url):
            self.network.poke()
        # A local change is PATCHed to the Controller (docs/config-xml.md#effect, docs/controller-api.md#config-sync); one that
        # came from the Controller is not sent back to it.
        if origin == Origin.LOCAL:
            self.sync.config_changed()
        router = (new.router_host, new.router_port, bool(new.iofog_uuid and new.access_token))
        if router != (old.router_host, old.router_port, bool(old.iofog_uuid and old.access_token)):
            self._set_router(new)

    def _network_changed(self, info: NetworkInfo) -> None:
        # The "iofog" host alias of new containers points at the agent (docs/docker.md#containers).
        self.microservices.agent_address = info.address or LOOPBACK

    def _reload(self) -> None:
        try:
            self.store.reload()
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
        self._stop_serving()
        if self.router_link is not None:
            self.router_link.stop()    # what the router has not accepted stays in the queues
        if self.message_store is not None:
            self.message_store.stop()   # what was submitted is committed first
        try:
            self.app.gps.flush()               # a position still waiting for its write
        except ConfigError as exc:
            log.error("cannot store the last GPS position: %s", exc)
        self.network.poke()
        for thread in self.threads:
            thread.join(timeout=5)
        log.info("stopped")

    def _stop_serving(self) -> None:
        self.server.shutdown()                 # no new connections
        self.server.close_idle_connections()   # in-flight requests finish
        if self.started.is_open():
            self.sessions.close_all(wait=2.0)  # 1001 Going Away to every WebSocket
        self.server.server_close()             # joins the handler threads

    def handle_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum == signal.SIGHUP:
            self.reload.set()
        else:
            self.stop.set()


USAGE = ("usage: iofogd [-h] [--root ROOT] [--address ADDRESS] [--port PORT] [--cpus {one,all}] "
         "[--check-config] [--version]")
HELP = f"""{USAGE}

The ioFog edge agent daemon (foreground).

options:
  -h, --help         show this help message and exit
  --root ROOT        prefix of every path (default: $IOFOGD_ROOT or /)
  --address ADDRESS  listening address (default: local_api_address in config.xml)
  --port PORT        listening port (default: local_api_port in config.xml)
  --cpus {{one,all}}   one (default): keep the daemon's threads on one CPU, the least
                     contended, which spares them cross-core hand-offs of Python's
                     interpreter lock; all: let them run on any CPU
  --check-config     load config.xml, report, and exit 0 if it is usable, 1 if not
  --version          show the version and exit
"""


class DaemonArgs(Record):
    __slots__ = ("root", "address", "port", "check_config", "one_cpu")
    root: Final[str]
    address: Final[Optional[str]]
    port: Final[Optional[int]]
    check_config: Final[bool]
    one_cpu: Final[bool]      # --cpus one (the default): see iofogd/system/cpuhome.py

    def __init__(self, root: str, address: Optional[str] = None, port: Optional[int] = None,
                 check_config: bool = False, one_cpu: bool = True) -> None:
        self.root = root
        self.address = address
        self.port = port
        self.check_config = check_config
        self.one_cpu = one_cpu


def _usage_error(message: str) -> NoReturn:
    sys.stderr.write(f"{USAGE}\niofogd: error: {message}\n")
    raise SystemExit(2)


def parse_args(argv: Optional[Sequence[str]]) -> DaemonArgs:
    """argparse's behaviour for our options (exit 2 with the usage on an
    error); not argparse itself, which with gettext costs ~5 ms of every start."""
    args = list(sys.argv[1:] if argv is None else argv)
    values: dict[str, str] = {}
    check = False
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if arg in ("-h", "--help"):
            sys.stdout.write(HELP)
            raise SystemExit(0)
        if arg == "--version":
            sys.stdout.write(f"iofogd {__version__}\n")
            raise SystemExit(0)
        if arg == "--check-config":
            check = True
        elif name in ("--root", "--address", "--port", "--cpus"):
            if not eq:
                if not args or args[0].startswith("--"):
                    _usage_error(f"argument {name}: expected one argument")
                value = args.pop(0)
            values[name] = value
        else:
            _usage_error(f"unrecognized arguments: {arg}")
    port: Optional[int] = None
    if "--port" in values:
        try:
            port = int(values["--port"])
        except ValueError:
            _usage_error(f"argument --port: invalid int value: {values['--port']!r}")
    cpus = values.get("--cpus", "one")
    if cpus not in ("one", "all"):
        _usage_error(f"argument --cpus: invalid choice: {cpus!r} (choose from 'one', 'all')")
    return DaemonArgs(values.get("--root") or default_root(), values.get("--address"), port, check,
                      one_cpu=cpus == "one")


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
    store.add_listener(lambda old, new, origin: logs.apply(new))
    # Before the first thread: every thread inherits the main thread's CPU.
    cpu_home = CpuHome() if args.one_cpu else None
    if cpu_home is not None and cpu_home.settle() is None:
        cpu_home = None
    try:
        os.makedirs(cfg.disk_directory, exist_ok=True)
        daemon = Daemon(paths, store, args, cpu_home)
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
