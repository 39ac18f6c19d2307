"""The `iofog-agent` CLI's exact text, as iofogctl and install scripts parse it (docs/cli.md#scripts)."""
from __future__ import annotations

import subprocess

from iofogd import __version__
from tests.daemon_process import RunningDaemon, free_port


def awk(text: str, field: int) -> str:
    return text.split()[field - 1]


def test_status_first_line_is_what_iofogctl_cuts(daemon: RunningDaemon) -> None:
    out = daemon.cli("status")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "ioFog daemon                : RUNNING"
    # iofogctl: `iofog-agent status | cut -f2 -d: | head -n 1 | tr -d '[:space:]'`
    assert "".join(lines[0].split(":")[1].split()) == "RUNNING"
    # upgrade.sh: `grep ioFog | awk '{printf $4}'`
    assert awk([l for l in lines if "ioFog" in l][0], 4) == "RUNNING"
    labels = [l[:28] for l in lines]
    assert labels == [f"{name:<28}" for name in (
        "ioFog daemon", "Memory Usage", "Disk Usage", "CPU Usage", "Running Microservices",
        "Connection to Controller", "Messages Processed", "System Time", "System Available Disk",
        "System Available Memory", "System Total CPU", "Docker Engine", "Router")]
    assert all(l[28:30] == ": " for l in lines)
    assert "Connection to Controller    : not provisioned" in lines


def test_info_labels_padded_to_40(daemon: RunningDaemon) -> None:
    out = daemon.cli("info")
    assert out.returncode == 0
    lines = out.stdout.rstrip("\n").splitlines()
    assert len(lines) == 29   # upstream's 28, then ours: strict microservice identity (issue 12)
    assert all(l[40:43] == " : " for l in lines), lines
    assert lines[28] == f"{'Strict Microservice Identity':<40} : off"
    threshold = [l for l in lines if "Available Disk Threshold" in l][0]
    assert awk(threshold, 5) == "20"   # upstream CI's awk field 5
    assert lines[0] == f"{'Iofog UUID':<40} : not provisioned"


def test_version_online_and_offline(daemon: RunningDaemon) -> None:
    out = daemon.cli("version")
    assert out.returncode == 0
    assert out.stdout.splitlines()[0] == f"ioFog {__version__} "
    offline = RunningDaemon(daemon.root, port=free_port())
    out = offline.cli("version")
    assert out.returncode == 0
    assert out.stdout.splitlines()[0] == f"ioFog Agent {__version__} "


def test_not_running(tmp_path) -> None:  # type: ignore[no-untyped-def]
    offline = RunningDaemon(str(tmp_path), port=free_port())
    out = offline.cli("status")
    assert (out.returncode, out.stdout) == (1, "ioFog Agent is not running.\n")
    assert offline.cli("help").returncode == 0


def test_config_change_lines(daemon: RunningDaemon) -> None:
    out = daemon.cli("config", "-cf", "10", "-sf", "10")
    assert out.returncode == 0, out.stderr
    lines = [l for l in out.stdout.splitlines() if l.strip()]
    assert sorted(lines) == sorted([
        "\tChange accepted for Parameter : - cf, Old value was :60, New Value is : 10",
        "\tChange accepted for Parameter : - sf, Old value was :30, New Value is : 10",
    ])
    info = daemon.cli("info").stdout
    assert f"{'Status Update Frequency':<40} : 10" in info


def test_config_error_line(daemon: RunningDaemon) -> None:
    out = daemon.cli("config", "-m", "12")
    assert "\tError : Memory limit range must be 128 to 1048576 MB" in out.stdout.splitlines()


def test_config_controller_url_as_iofogctl_sets_it(daemon: RunningDaemon) -> None:
    out = daemon.cli("config", "-a", "http://127.0.0.5:51121/api/v3")
    assert out.returncode == 0
    assert f"{'ioFog Controller':<40} : http://127.0.0.5:51121/api/v3/" in daemon.cli("info").stdout


def test_config_without_value_shows_help(daemon: RunningDaemon) -> None:
    out = daemon.cli("config", "-d")
    assert "Usage" in out.stdout and out.returncode == 0


def test_config_defaults(daemon: RunningDaemon) -> None:
    daemon.cli("config", "-sf", "99")
    out = daemon.cli("config", "defaults")
    assert out.stdout.strip() == "Configuration has been reset to its defaults."
    assert f"{'Status Update Frequency':<40} : 10" in daemon.cli("info").stdout


def test_failed_commands_exit_1(daemon: RunningDaemon) -> None:
    # No Controller listens and no Docker engine either (stand-in runs: tests/controller/test_daemon_e2e.py).
    closed = f"http://127.0.0.1:{free_port()}/api/v3/"
    assert daemon.cli("config", "-a", closed, "-c", f"unix://{daemon.root}/no-docker.sock").returncode == 0
    out = daemon.cli("provision", "KEY")
    assert out.returncode == 1
    assert out.stdout.startswith('Provisioning with key "KEY" ... Result: \nProvision failed with error message: '
                                 '"Connection error: unable to connect to fog controller.'), out.stdout
    out = daemon.cli("deprovision")
    assert (out.returncode, out.stdout) == (1, "Deprovisioning from controller ... \nFailure - not provisioned\n")
    out = daemon.cli("prune")
    assert (out.returncode, out.stdout) == (1, "\nFailure - not pruned.\n")


def test_missing_token_file(daemon: RunningDaemon) -> None:
    import os
    os.rename(f"{daemon.root}/etc/iofog-agent/local-api", f"{daemon.root}/etc/iofog-agent/moved")
    out = daemon.cli("status")
    assert (out.returncode, out.stdout.strip()) == (
        1, "Local API access token is missing, try to re-install Agent.")


def test_console_script_entry_points_exist() -> None:
    import configparser
    import os
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(os.path.dirname(os.path.dirname(__file__)), "setup.cfg"))
    scripts = cfg["options.entry_points"]["console_scripts"]
    assert "iofogd = iofogd.daemon:main" in scripts
    assert "iofog-agent = iofogd.cli:main" in scripts
    assert subprocess.run(["python", "-c", "import iofogd.cli, iofogd.daemon"]).returncode == 0
