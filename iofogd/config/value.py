"""The :class:`Config` value: an immutable snapshot of every option, raw and typed."""
from __future__ import annotations

from iofogd.config.schema import (
    JAVA_LEVELS,
    code_defaults,
    default_of,
    is_on,
    java_float,
    java_int,
    java_level,
    parse_coordinates,
    python_log_level,
    slashes,
)
from iofogd.errors import ConfigValueError
from iofogd.paths import Paths
from iofogd.system.host import detect_fog_type

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Dict, Mapping, Optional, Sequence, Tuple


class Config:
    """An immutable snapshot of every value: raw XML text and typed attributes."""

    iofog_uuid: str
    access_token: str
    controller_url: str          # with a trailing "/" (in memory only, docs/config-xml.md#keys)
    controller_cert: str         # rooted
    docker_url: str
    network_interface: str
    disk_limit_gb: float
    disk_directory: str          # rooted, leading and trailing "/"
    memory_limit_mb: float
    cpu_limit: float
    log_limit_gb: float
    log_directory: str           # rooted, leading and trailing "/"
    log_file_count: int
    log_level: str               # java.util.logging name (or number), upper case
    log_level_python: int        # the same for the logging module
    status_update_freq: int
    get_changes_freq: int
    scan_devices_freq: int
    post_diagnostics_freq: int
    isolated_docker_container: bool
    gps_mode: str
    gps_coordinates: str
    fog_type_setting: str        # auto / intel_amd / arm, as stored
    fog_type: str                # intel_amd / arm, auto resolved
    secure_mode: bool
    dev_mode: bool
    router_host: str
    router_port: int
    docker_pruning_freq: int
    available_disk_threshold: int
    upgrade_scan_frequency: int
    time_zone: str
    api_address: str
    api_port: int
    strict_microservice_identity: bool   # ours (issue 12): see iofogd/system/identity.py

    def __init__(self, values: Mapping[str, str], *, paths: Paths, machine: str = "",
                 order: Sequence[str] = (), extras: Mapping[str, str] | None = None) -> None:
        v = dict(code_defaults())
        v.update(values)
        self._values = v
        self._order = tuple(order)
        self._extras = dict(extras or {})
        self.paths = paths
        self.machine = machine

        url = v["controller_url"]
        self.iofog_uuid = v["iofog_uuid"]
        self.access_token = v["access_token"]
        self.controller_url = url if not url or url.endswith("/") else url + "/"
        self.controller_cert = paths.rooted(v["controller_cert"])
        self.docker_url = v["docker_url"]
        self.network_interface = v["network_interface"]
        self.disk_limit_gb = self._float("disk_consumption_limit")
        self.disk_directory = paths.rooted(slashes(v["disk_directory"]))
        self.memory_limit_mb = self._float("memory_consumption_limit")
        self.cpu_limit = self._float("processor_consumption_limit")
        self.log_limit_gb = self._float("log_disk_consumption_limit")
        self.log_directory = paths.rooted(slashes(v["log_disk_directory"]))
        self.log_file_count = self._int("log_file_count")
        self.log_level = v["log_level"].upper()
        level = java_level(self.log_level)
        self.log_level_python = python_log_level(JAVA_LEVELS["INFO"] if level is None else level)
        self.status_update_freq = self._int("status_update_freq")
        self.get_changes_freq = self._int("get_changes_freq")
        self.scan_devices_freq = self._int("scan_devices_freq")
        self.post_diagnostics_freq = self._int("post_diagnostics_freq")
        self.isolated_docker_container = is_on(v["isolated_docker_container"])
        self.gps_mode = v["gps"]
        self.gps_coordinates = v["gps_coordinates"]
        self.fog_type_setting = v["fog_type"]
        self.fog_type = self._resolve_fog_type()
        self.secure_mode = is_on(v["secure_mode"])
        self.dev_mode = is_on(v["dev_mode"])
        self.router_host = v["router_host"]
        self.router_port = self._int("router_port") if v["router_port"] else 0
        self.docker_pruning_freq = self._int("docker_pruning_freq", 64)
        self.available_disk_threshold = self._int("available_disk_threshold", 64)
        self.upgrade_scan_frequency = self._int("upgrade_scan_frequency")
        self.time_zone = v["time_zone"]
        self.api_address = v["local_api_address"]
        self.api_port = self._int("local_api_port")
        self.strict_microservice_identity = is_on(v["strict_microservice_identity"])
        self._frozen = True

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError("Config is an immutable snapshot; change it through ConfigStore")
        super().__setattr__(name, value)

    def _float(self, tag: str) -> float:
        value = java_float(self._values[tag])
        return value if value is not None else float(java_float(default_of(tag)) or 0.0)

    def _int(self, tag: str, bits: int = 32) -> int:
        value = java_int(self._values[tag], bits)
        return value if value is not None else int(java_int(default_of(tag), bits) or 0)

    def _resolve_fog_type(self) -> str:
        setting = self._values["fog_type"]
        if setting in ("intel_amd", "arm"):
            return setting
        try:
            return detect_fog_type(self.machine)
        except ConfigValueError:
            # Upstream stops here; we run as intel_amd and say so at load time.
            return "intel_amd"

    def get(self, tag: str) -> str:
        """The raw XML text of a tag (known or kept unknown); KeyError if neither."""
        if tag in self._values:
            return self._values[tag]
        return self._extras[tag]

    @property
    def values(self) -> Dict[str, str]:
        """Every known tag's XML text (a copy)."""
        return dict(self._values)

    @property
    def gps_lat_lon(self) -> Optional[Tuple[float, float]]:
        return parse_coordinates(self.gps_coordinates)

    @property
    def tag_order(self) -> Tuple[str, ...]:
        """The tags in the order of the file this came from (kept on rewrite)."""
        return self._order

    @property
    def unknown_tags(self) -> Dict[str, str]:
        """Tags no option knows, kept on rewrite (a copy)."""
        return dict(self._extras)

    def with_values(self, changes: Mapping[str, str]) -> Config:
        values = dict(self._values)
        values.update(changes)
        return Config(values, paths=self.paths, machine=self.machine, order=self._order,
                      extras=self._extras)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and (self._values, self._extras) == (other._values, other._extras)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        return f"Config(uuid={self.iofog_uuid!r}, controller_url={self.controller_url!r})"
