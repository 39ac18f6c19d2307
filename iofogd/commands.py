"""The daemon side of the `iofog-agent` CLI (docs/cli.md#commands), behind /v2/commandline.

The client sends its arguments joined by single spaces; the daemon splits them
again, runs the command and answers a text whose line separator is the literal
two-character ``\\n`` that the client turns into newlines (docs/local-api.md#commandline, docs/cli.md#client).
Texts that scripts parse (docs/cli.md#scripts) are kept byte-compatible.
"""
from __future__ import annotations

import logging


from iofogd import __version__
from iofogd.app import App
from iofogd.config.schema import OPTIONS
from iofogd.config.store import Origin
from iofogd.errors import ConfigError, IofogdError, ProvisionError
from iofogd.record import Record
from iofogd.reports import LINE_SEP, info_report, info_text, status_text

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Final

log = logging.getLogger(__name__)

NL = LINE_SEP


class CommandResult(Record):
    __slots__ = ("text", "ok", "status")
    text: Final[str]
    ok: Final[bool]
    status: Final[int]  # HTTP status of /v2/commandline: 200, 500 on failure, 503 if unavailable

    def __init__(self, text: str, ok: bool = True, status: int = 200) -> None:
        self.text = text
        self.ok = ok
        self.status = status


def version_text() -> str:
    # The first line is what tools read ("ioFog <version> "); the rest names us honestly.
    return (
        f"ioFog {__version__} {NL}iofogd, a re-implementation of the Eclipse ioFog Agent {NL}"
        f"Eclipse ioFog is provided under the Eclipse Public License 2.0 (EPL-2.0) {NL}"
        "https://www.eclipse.org/legal/epl-v20.html"
    )


def help_text() -> str:
    lines = [
        "Usage 1: iofog-agent [OPTION]",
        "Usage 2: iofog-agent [COMMAND] <Argument>",
        "Usage 3: iofog-agent [COMMAND] [Parameter] <Value>",
        "",
        "Option           GNU long option         Meaning",
        "======           ===============         =======",
        "-h, -?           --help                  Show this message",
        "-v               --version               Display the software version and license information",
        "",
        "Command          Arguments               Meaning",
        "=======          =========               =======",
        "help                                     Show this message",
        "version                                  Display the software version and license information",
        "status                                   Display current status information about the software",
        "info                                     Display the current configuration and other information",
        "provision        <provisioning key>      Attach this software to the configured ioFog controller",
        "deprovision                              Detach this software from all ioFog controllers",
        "prune                                    Remove Docker images no microservice uses",
        "switch           <dev|prod|def>          Switch to the development, production or default configuration",
        "config           [Parameter] [VALUE]     Change the software configuration according to the options provided",
        "                 defaults                Reset configuration to default values",
    ]
    for opt in OPTIONS:
        if opt.flag is not None:
            lines.append(f"                 -{opt.flag:<22} {opt.help}")
    lines += [
        "",
        "Report bugs to: the iofogd issue tracker",
    ]
    return NL.join(lines)


def _status(app: App) -> CommandResult:
    report = app.status()
    return CommandResult(status_text(report))


def _info(app: App) -> CommandResult:
    cfg = app.config.current
    report = info_report(cfg, app.network.current(), cfg.fog_type)
    return CommandResult(info_text(report))


def _config(app: App, args: list[str]) -> CommandResult:
    """docs/config-xml.md#cli: ``config <flag> <value> ...`` or ``config defaults``."""
    if args == ["defaults"]:
        try:
            return CommandResult(app.config.reset_defaults())
        except ConfigError as exc:
            log.error("config defaults failed: %s", exc)
            return CommandResult("Error resetting configuration.", ok=False, status=500)
    known = {opt.flag for opt in OPTIONS if opt.flag is not None}
    changes: dict[str, str] = {}
    i = 0
    while i < len(args):
        word = args[i]
        flag = word[1:] if word.startswith("-") else ""
        if flag not in known:
            return CommandResult(help_text())
        has_value = i + 1 < len(args) and not (args[i + 1].startswith("-") and args[i + 1][1:] in known)
        if not has_value:
            if flag != "ac":  # only the certificate may be set to nothing
                return CommandResult(help_text())
            changes[flag] = ""
            i += 1
            continue
        changes[flag] = args[i + 1]
        i += 2
    if not changes:
        return CommandResult(help_text())
    try:
        report = app.config.apply(changes, Origin.LOCAL)
    except ConfigError as exc:
        return CommandResult(f"Error updating new config : {exc}", ok=False, status=500)
    return CommandResult(report.cli_text())


def _switch(app: App, args: list[str]) -> CommandResult:
    if len(args) != 1:
        return CommandResult(help_text())
    return CommandResult(app.config.switch(args[0]))


# The two below import the Controller side where they run: it is loaded by
# start-up phase 2 (iofogd.daemon), not before the Local API answers.


def _provision(app: App, args: list[str]) -> CommandResult:
    from iofogd.controller.provision import ProvisionResult, provision_text

    if len(args) != 1:
        return CommandResult(help_text())
    key = args[0]
    try:
        uuid = app.phase2("the Controller client").provisioning.provision(key)
    except ProvisionError as exc:
        failed = ProvisionResult(ok=False, error=exc.message)
        return CommandResult(provision_text(key, failed), ok=False, status=500)
    return CommandResult(provision_text(key, ProvisionResult(ok=True, uuid=uuid)))


def _deprovision(app: App) -> CommandResult:
    from iofogd.controller.provision import DEPROVISION_IN_PROGRESS, DEPROVISION_MSG

    try:
        message = app.phase2("the Controller client").provisioning.deprovision()
    except ProvisionError as exc:
        separator = "" if exc.message == DEPROVISION_IN_PROGRESS else "\n"
        return CommandResult(DEPROVISION_MSG.format(result=separator + exc.message), ok=False, status=500)
    return CommandResult(DEPROVISION_MSG.format(result="\n" + message))


def _prune(app: App) -> CommandResult:
    try:
        reclaimed = app.phase2("the Docker engine client").microservices.prune_unused()
    except IofogdError as exc:
        log.error("prune failed: %s", exc)
        return CommandResult("\nFailure - not pruned.", ok=False, status=503)
    # Upstream said "dangling" while removing every unused image (docs/docker.md#prune); we say what we do.
    return CommandResult(
        f"\nSuccess - pruned unused docker images, total reclaimed space: {reclaimed}"
    )


def run_command(app: App, command: str) -> CommandResult:
    """Run one CLI command line as the daemon does (docs/cli.md#commands)."""
    args = command.split(" ")
    name, rest = (args[0], args[1:]) if args else ("", [])
    if name in ("help", "--help", "-h", "-?"):
        return CommandResult(help_text())
    if name in ("version", "--version", "-v"):
        return CommandResult(version_text())
    if name == "status":
        return _status(app)
    if name == "info":
        return _info(app)
    if name == "config":
        return _config(app, rest)
    if name == "switch":
        return _switch(app, rest)
    if name == "provision":
        return _provision(app, rest)
    if name == "deprovision":
        return _deprovision(app)
    if name == "prune":
        return _prune(app)
    if name == "start":
        return CommandResult("")
    if name == "stop":
        # Upstream slept 30 s and deleted every microservice container (docs/cli.md#commands);
        # the service manager stops us, and containers outlive the daemon.
        return CommandResult('Enter "service iofog-agent stop"')
    return CommandResult(help_text())
