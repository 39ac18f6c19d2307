"""iofogd.commands: the daemon side of the CLI, run against a real App (no daemon process).

The App is built from real parts on a temporary root; start-up phase 2 is
either failed (what a command that needs it then answers) or never opened.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from iofogd import __version__
from iofogd.admintoken import TokenFile
from iofogd.app import App, StartGate
from iofogd.commands import help_text, run_command
from iofogd.config import ConfigStore, Origin
from iofogd.config.gps import GpsUpdates
from iofogd.errors import ServiceUnavailable
from iofogd.paths import Paths
from iofogd.state import AgentState
from iofogd.system.host import Host, interface_names
from iofogd.system.identity import ContainerAddresses, MicroserviceIdentity
from iofogd.system.network import NetworkWatcher
from iofogd.system.status import Probe, ResourceSampler


@pytest.fixture
def app(tmp_path: Path) -> App:
    paths = Paths.from_root(str(tmp_path))
    store = ConfigStore(paths, host=Host("x86_64", interface_names, lambda: "UTC"))
    store.load()
    gate = StartGate()
    gate.fail("phase 2 is not built in this test")
    return App(paths, store, AgentState(), ResourceSampler(Probe, lambda: str(tmp_path), lambda: str(tmp_path)),
               TokenFile(paths.token_file), NetworkWatcher(lambda: ("dynamic", "http://127.0.0.1:1/")), gate,
               MicroserviceIdentity(ContainerAddresses(), store), GpsUpdates(store))


def test_version_and_help(app: App) -> None:
    assert run_command(app, "version").text.startswith(f"ioFog {__version__} \\n")
    for word in ("help", "--help", "-h", "-?", "nonsense", ""):
        assert run_command(app, word).text == help_text()
    assert "-lc                     Set the number of log files" in help_text()


def test_config_changes_with_upstreams_texts(app: App) -> None:
    seen: list[str] = []
    app.config.add_listener(lambda old, new, origin: seen.append(origin))
    result = run_command(app, "config -lc 5 -d x")
    assert result.ok and result.text == (
        "\\n\tError : Option -d has invalid value: x"          # a literal \\n, a real tab
        "\\n\tChange accepted for Parameter : - lc, Old value was :10, New Value is : 5")
    assert app.config.current.log_file_count == 5 and seen == [Origin.LOCAL]
    assert run_command(app, "config -zz 1").text == help_text()       # unknown flag: the help
    assert run_command(app, "config -lc").text == help_text()         # a flag without value
    assert run_command(app, "config -ac").ok                          # only -ac may be empty
    assert run_command(app, "config defaults").text == "Configuration has been reset to its defaults."
    assert app.config.current.log_file_count == 10


def test_switch(app: App) -> None:
    assert run_command(app, "switch dev").text == "Successfully switched to new configuration."
    assert run_command(app, "switch dev").text == "Already using this configuration."
    assert run_command(app, "switch nowhere").text == "Invalid switcher state"
    assert run_command(app, "switch").text == help_text()


def test_info_reads_config_and_network(app: App) -> None:
    text = run_command(app, "info").text
    assert "Iofog UUID                               : not provisioned\\n" in text
    assert "Fog type                                 : intel_amd\\n" in text


def test_phase_two_commands_when_phase_two_failed(app: App) -> None:
    prune = run_command(app, "prune")
    assert (prune.ok, prune.status, prune.text) == (False, 503, "\nFailure - not pruned.")   # a real newline
    with pytest.raises(ServiceUnavailable, match="could not start the Controller client"):
        run_command(app, "provision KEY")        # answered 503 by /v2/commandline
    with pytest.raises(ServiceUnavailable, match="could not start the Docker engine client"):
        run_command(app, "status")


def test_start_and_stop(app: App) -> None:
    assert run_command(app, "start").text == ""
    assert run_command(app, "stop").text == 'Enter "service iofog-agent stop"'
