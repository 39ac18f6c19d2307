"""Writes the manual pages iofogd(8) and iofog-agent(1) from the commands' own help.

    python3 packaging/manpages.py OUTDIR      (run from the source tree)

The Debian package's build runs it (packaging/deb/rules), so the pages say
what ``iofogd --help`` and ``iofog-agent help`` say, with nothing to keep in
step by hand: iofogd's options come from ``iofogd.daemon.HELP``;
iofog-agent's synopsis from the client's offline help, its options, commands
and config parameters from the daemon's help text (``iofogd.commands``).
The date is SOURCE_DATE_EPOCH's (set by dpkg-buildpackage), for a
reproducible build.
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iofogd import __version__  # noqa: E402
from iofogd.cli import OFFLINE_HELP  # noqa: E402
from iofogd.commands import help_text  # noqa: E402
from iofogd.daemon import HELP as DAEMON_HELP  # noqa: E402
from iofogd.reports import LINE_SEP  # noqa: E402

COLUMNS = re.compile(r"\s{2,}")


def roff(text: str) -> str:
    """Text safe in a roff line: backslashes and hyphens escaped, no leading dot."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def header(name: str, section: int) -> list[str]:
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    date = time.strftime("%Y-%m-%d", time.gmtime(epoch))
    return [f'.TH {name.upper()} {section} "{date}" "iofogd {__version__}" "ioFog"']


def item(term: str, text: str) -> list[str]:
    return [".TP", term, roff(text)]


def iofogd_page() -> str:
    lines = DAEMON_HELP.strip().splitlines()
    usage = lines[0].removeprefix("usage: ")
    description = lines[2]
    out = header("iofogd", 8)
    out += [".SH NAME", "iofogd \\- " + roff(description[0].lower() + description[1:].rstrip("."))]
    out += [".SH SYNOPSIS", roff(usage)]
    out += [".SH DESCRIPTION",
            "The daemon of an ioFog edge node: it serves the Local API, runs the node's",
            "microservices as Docker containers and follows an ioFog Controller. It runs in",
            "the foreground; the service manager starts it as",
            ".B iofogd.service",
            "(alias",
            ".BR iofog\\-agent.service )",
            "or",
            ".BR /etc/init.d/iofog\\-agent ,",
            "as user iofog\\-agent. SIGTERM and SIGINT stop it, SIGHUP reloads config.xml."]
    out.append(".SH OPTIONS")
    options: list[list[str]] = []
    for line in lines[lines.index("options:") + 1:]:
        if line.strip().startswith("-"):
            options.append(COLUMNS.split(line.strip(), 1))
        else:   # a help text's continuation line
            options[-1][1] += " " + line.strip()
    for flags, text in options:
        out += item(".B " + roff(flags), text)
    out += [".SH FILES",
            ".TP", ".I /etc/iofog\\-agent/config.xml", "configuration and node identity",
            ".TP", ".I /etc/iofog\\-agent/local\\-api", "the Local API admin token",
            ".TP", ".I /var/lib/iofog\\-agent/", "state",
            ".TP", ".I /var/log/iofog\\-agent/", "logs"]
    out += [".SH SEE ALSO", ".BR iofog\\-agent (1)"]
    return "\n".join(out) + "\n"


def iofog_agent_page() -> str:
    usage = OFFLINE_HELP.splitlines()[0].removeprefix("Usage: ")
    lines = help_text().split(LINE_SEP)
    out = header("iofog-agent", 1)
    out += [".SH NAME", "iofog\\-agent \\- the admin command of the ioFog edge agent"]
    out += [".SH SYNOPSIS", ".B iofog\\-agent", roff(usage.removeprefix("iofog-agent "))]
    out += [".SH DESCRIPTION",
            "Sends a command to the running daemon,",
            ".BR iofogd (8),",
            "over its Local API with the admin token, and prints the answer. The output",
            "and exit codes (0 success, 1 failure) are those of the Eclipse ioFog Agent,",
            "which iofogctl and install scripts parse. Without a running daemon only",
            ".B help",
            "and",
            ".B version",
            "answer. The",
            ".B \\-\\-root",
            "and",
            ".B \\-\\-port",
            "options, before the command, move every path and choose the daemon's port.",
            "The service is",
            ".BR \"service iofog\\-agent start\" | stop | restart | status | prune ."]
    sections = {"Option": "OPTIONS", "Command": "COMMANDS"}
    section = ""
    for line in lines:
        if not line.strip() or line.startswith(("Usage", "=")):
            continue
        first = line.split()[0]
        if first in sections:
            section = sections[first]
            out.append(".SH " + section)
            continue
        if line.startswith("Report bugs"):
            out += [".SH REPORTING BUGS", roff(line.partition(": ")[2])]
            continue
        columns = COLUMNS.split(line.strip())
        if section == "OPTIONS":
            out += item(".B " + roff(", ".join(columns[:-1])), columns[-1])
        elif line.startswith(" "):
            if section != "CONFIG PARAMETERS":
                section = "CONFIG PARAMETERS"
                out += [".SH CONFIG PARAMETERS",
                        "Given to", ".B config", "as", ".IR \"\\-flag value\" ;",
                        "several may follow one another."]
            out += item(".B " + roff(columns[0]), columns[-1])
        else:
            term = ".B " + roff(columns[0]) if len(columns) == 2 else \
                ".BI " + f'"{roff(columns[0])} " "{roff(columns[1])}"'
            out += item(term, columns[-1])
    out += [".SH FILES",
            ".TP", ".I /etc/iofog\\-agent/local\\-api", "the admin token (readable by root and group iofog\\-agent)",
            ".TP", ".I /etc/iofog\\-agent/config.xml", "where the daemon's address and port are read"]
    out += [".SH SEE ALSO", ".BR iofogd (8)"]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 packaging/manpages.py OUTDIR", file=sys.stderr)
        return 2
    outdir = Path(argv[0])
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "iofogd.8").write_text(iofogd_page())
    (outdir / "iofog-agent.1").write_text(iofog_agent_page())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
