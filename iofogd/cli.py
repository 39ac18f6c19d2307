"""`iofog-agent`: the admin CLI that talks to the running daemon (docs/cli.md#client).

Every command but a few offline ones is sent to the daemon as
``POST /v2/commandline {"command": "<args joined by spaces>"}`` with the admin
token; the answer's ``response`` is printed with its literal ``\\n`` turned
into newlines. iofogctl and install scripts parse this output (docs/cli.md#scripts), so
the texts and exit codes (0 success, 1 failure) are kept.
"""
from __future__ import annotations

import http.client
import json
import socket
import sys
from typing import Optional, Sequence

from iofogd import __version__
from iofogd.admintoken import read_token
from iofogd.config.xmlfile import read_config
from iofogd.paths import Paths, default_root
from iofogd.errors import ConfigFileError

NOT_RUNNING = "ioFog Agent is not running."
TOKEN_MISSING = "Local API access token is missing, try to re-install Agent."

OFFLINE_HELP = """Usage: iofog-agent [--root DIR] [--port N] COMMAND [ARGS]

The daemon (iofogd) is not running; only these commands work without it:
  help, --help, -h, -?     Show this message
  version, --version, -v   Display the software version and license information

Start the daemon with its service (service iofog-agent start)
or in the foreground with `iofogd`; `iofog-agent help` then lists every command."""


def offline_version() -> str:
    return (
        f"ioFog Agent {__version__} \n"
        "iofogd, a re-implementation of the Eclipse ioFog Agent\n"
        "Eclipse ioFog is provided under the Eclipse Public License 2.0 (EPL-2.0)\n"
        "https://www.eclipse.org/legal/epl-v20.html"
    )


def api_endpoint(paths: Paths) -> tuple[str, int]:
    """Where the daemon listens, read from config.xml without rewriting it."""
    cfg = read_config(paths)
    # A wildcard listener is reached over loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(cfg.api_address, cfg.api_address)
    return host, cfg.api_port


def daemon_running(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def send_command(host: str, port: int, token: str, command: str) -> tuple[int, str]:
    body = json.dumps({"command": command}).encode()
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        conn.request("POST", "/v2/commandline", body, {
            "Content-Type": "application/json", "Accept": "application/json", "Authorization": token,
        })
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        return resp.status, raw.decode(errors="replace")
    text = answer.get("response")
    if not isinstance(text, str):
        text = str(answer.get("error", raw.decode(errors="replace")))
    return resp.status, text.replace("\\n", "\n")


def split_options(argv: Sequence[str]) -> tuple[str, Optional[int], list[str]]:
    """Our own options come before the command; everything after is the command's."""
    root, port, rest = default_root(), None, list(argv)
    while rest and rest[0].startswith("--") and rest[0].split("=", 1)[0] in ("--root", "--port"):
        word = rest.pop(0)
        name, eq, value = word.partition("=")
        if not eq:
            if not rest:
                raise SystemExit(f"iofog-agent: {name} needs a value")
            value = rest.pop(0)
        if name == "--root":
            root = value
        else:
            try:
                port = int(value)
            except ValueError:
                raise SystemExit(f"iofog-agent: --port needs a number, not {value!r}") from None
    return root, port, rest


def main(argv: Optional[Sequence[str]] = None) -> int:
    root, port_override, args = split_options(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["help"]
    paths = Paths.from_root(root)
    host, port = api_endpoint(paths)
    if port_override is not None:
        port = port_override
    name = args[0]
    if not daemon_running(host, port):
        if name in ("help", "--help", "-h", "-?"):
            print(OFFLINE_HELP)
            return 0
        if name in ("version", "--version", "-v"):
            print(offline_version())
            return 0
        if name == "start":
            print('Enter "service iofog-agent start"')
            return 0
        print(NOT_RUNNING)
        return 1
    if name == "start":
        print("ioFog Agent is already running.")
        return 0
    if name == "stop":
        print('Enter "service iofog-agent stop"')
        return 0
    try:
        token = read_token(paths.token_file)
    except ConfigFileError:
        print(TOKEN_MISSING)
        return 1
    try:
        status, text = send_command(host, port, token, " ".join(args))
    except (OSError, http.client.HTTPException) as exc:
        print(f"iofog-agent: the daemon did not answer: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0 if status == 200 else 1
