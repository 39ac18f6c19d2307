"""Every file of the agent under one root (docs/host.md#files)."""
from __future__ import annotations

import os

from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Final


class Paths(Record):
    """Every file of the agent, under a root (default ``/``), as upstream's $SNAP_COMMON (docs/host.md#files)."""

    __slots__ = ("root",)
    root: Final[str]

    def __init__(self, root: str) -> None:
        self.root = root

    @classmethod
    def from_root(cls, root: str = "/") -> Paths:
        return cls(os.path.abspath(root or "/"))

    def rooted(self, path: str) -> str:
        """Prefix a path from the config with the root (upstream: ``SNAP_COMMON + path``)."""
        if not path or self.root == "/":
            return path
        return self.root + (path if path.startswith("/") else "/" + path)

    def _etc(self, name: str) -> str:
        return self.rooted("/etc/iofog-agent/" + name)

    @property
    def etc_dir(self) -> str:
        return self.rooted("/etc/iofog-agent")

    @property
    def config_xml(self) -> str:
        return self._etc("config.xml")

    @property
    def config_development(self) -> str:
        return self._etc("config-development.xml")

    @property
    def config_production(self) -> str:
        return self._etc("config-production.xml")

    @property
    def config_backup(self) -> str:
        return self._etc("config-bck.xml")

    @property
    def config_switcher(self) -> str:
        return self._etc("config-switcher.xml")

    @property
    def token_file(self) -> str:
        return self._etc("local-api")

    @property
    def microservices_cache(self) -> str:
        return self._etc("microservices.json")

    @property
    def registries_cache(self) -> str:
        return self._etc("registries.json")

    @property
    def edge_resources_cache(self) -> str:
        return self._etc("edge_resources.json")

    @property
    def state_dir(self) -> str:
        return self.rooted("/var/lib/iofog-agent")

    @property
    def log_dir(self) -> str:
        return self.rooted("/var/log/iofog-agent")

    @property
    def run_dir(self) -> str:
        return self.rooted("/var/run/iofog-agent")

    def config_for(self, state: str) -> str:
        """The config file of a switcher state (docs/config-xml.md#switch)."""
        return {"development": self.config_development,
                "production": self.config_production}.get(state, self.config_xml)


def default_root() -> str:
    """The root of every path when none is given: $IOFOGD_ROOT, else ``/``."""
    return os.environ.get("IOFOGD_ROOT") or "/"
