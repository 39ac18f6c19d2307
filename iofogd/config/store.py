"""ConfigStore: the one owner and writer of config.xml, its backup and the switcher file.

Every change is validated as a whole, then written once (iofogd/durable.py) to
the active file and again to ``config-bck.xml``, so a crash at any moment
leaves a complete active file. A corrupt active file falls back to the backup
with a warning; both corrupt is one clear :class:`ConfigFileError`.

The admin may edit the active file by hand at any time and send SIGHUP later.
The store remembers the bytes it last read from or wrote to that file; before
any write it compares them with the file on disk, and when they differ it first
takes the file's content (as a SIGHUP would), then applies the change on top of
it, so a hand edit is never overwritten from memory. A changed file that
cannot be parsed is not overwritten: the change is refused with an error that
names the file.

Each change carries its origin (:class:`Origin`) to the listeners: the
daemon PATCHes the agent's config to the Controller after a local change only
(docs/controller-api.md#config-sync), never after the Controller's own.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time

from iofogd.config.schema import (
    OPTIONS,
    UNWRITABLE,
    Option,
    invalid_value,
    option_by_flag,
    parse_coordinates,
    shipped_values,
)
from iofogd.config.value import Config
from iofogd.config.xmlfile import (
    SWITCH_NAMES,
    SWITCHER_STATES,
    ParsedConfig,
    config_xml,
    holds,
    parse_config_xml,
    parse_switcher_xml,
    read_bytes,
    render_switcher_xml,
)
from iofogd.durable import atomic_write, temp_prefix
from iofogd.errors import ConfigFileError, ConfigValueError
from iofogd.paths import Paths
from iofogd.record import Record
from iofogd.system.host import Host, detect_fog_type, real_host

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import BinaryIO, Callable, Collection, Dict, Final, List, Mapping, Optional, Tuple

    Listener = Callable[[Config, Config, str], None]   # (old, new, origin)

logger = logging.getLogger("iofogd.config")

RESET_DONE = "Configuration has been reset to its defaults."
RESET_FAILED = "Error resetting configuration."
BLANK_VALUE = "Command or value is invalid"


# How often a change is computed again on top of a file edited while it was computed.
_MERGE_ATTEMPTS = 3


# An edit found in the file just replaced may be half-written (the editor has
# truncated it and not yet written): read it again this many times, this far
# apart, until it parses. Only in that rare case; up to 1 s with the lock held.
_SETTLE_TRIES = 50
_SETTLE_PAUSE = 0.02


def _read_or_none(path: str) -> Optional[bytes]:
    try:
        return read_bytes(path)
    except FileNotFoundError:
        return None


def _pread_all(f: BinaryIO) -> bytes:
    """The whole content of an open (unbuffered) file, from its start, as it is now."""
    f.seek(0)
    return f.read() or b""


class _EditedOnDisk(Exception):
    """The active file no longer holds what the store last read or wrote (an edit by hand)."""


class Origin:
    """Who made a change: the listeners of :class:`ConfigStore` are told."""

    LOCAL = "local"             # the admin: CLI, Local API, config.xml edited and reloaded
    CONTROLLER = "controller"   # the Controller's GET agent/config (docs/controller-api.md#config-sync)


class ChangeReport(Record):
    __slots__ = ("errors", "accepted")
    errors: Final[List[Tuple[str, str]]]  # (flag, exact message) per rejected key
    accepted: Final[List[Tuple[str, str, str]]]  # (flag, old XML text, new value as typed)

    def __init__(self, errors: List[Tuple[str, str]], accepted: List[Tuple[str, str, str]]) -> None:
        self.errors = errors
        self.accepted = accepted

    def cli_text(self) -> str:
        """docs/config-xml.md#cli: literal backslash-n, real tab."""
        out = [f"\\n\tError : {message}" for _, message in self.errors]
        out += [f"\\n\tChange accepted for Parameter : - {flag}, Old value was :{old}, New Value is : {new}"
                for flag, old, new in self.accepted]
        return "".join(out)


class ConfigStore:
    """The owner of config.xml, its backup and the switcher file; thread-safe.

    One re-entrant lock serialises loads and changes; listeners run under it, in
    order, after each successful change, with ``(old, new, origin)``: the
    origin says who made the change (:class:`Origin`), so that a change the
    Controller made is not reported back to it as if it were local.
    """

    def __init__(self, paths: Paths, *, log: Optional[logging.Logger] = None,
                 host: Optional[Host] = None) -> None:
        self.paths = paths
        self._log = log or logger
        self._host = host or real_host()
        self._lock = threading.RLock()
        self._current: Optional[Config] = None
        self._state = "default"
        self._listeners: List[Listener] = []
        # The active file's bytes as this store last read or wrote them (None:
        # never read, or missing): a difference on disk is an edit by hand.
        self._on_disk: Optional[bytes] = None

    @property
    def lock(self) -> threading.RLock:
        """Held by a caller that reads :attr:`current` and changes it in one step."""
        return self._lock

    # -- loading --------------------------------------------------------------------

    @property
    def current(self) -> Config:
        """The current snapshot (loads the files on first use)."""
        with self._lock:
            return self._current if self._current is not None else self.load()

    @property
    def switcher_state(self) -> str:
        return self._state

    def load(self) -> Config:
        """(Re)read the active file per the switcher (start-up, SIGHUP); ConfigFileError if hopeless."""
        with self._lock:
            state = self._read_switcher()
            config = self._load_file(state)
            old, self._current, self._state = self._current, config, state
            if old is not None and old != config:
                self._notify(old, config, Origin.LOCAL)   # the admin edited the file
            return config

    def reload(self) -> Config:
        """SIGHUP: :meth:`load` again, except over an active file that cannot be parsed.

        At start-up an unparseable active file is replaced from the backup, as
        upstream does. In a running daemon it is more likely an edit in
        progress: it is left as it is and ConfigFileError (naming it) keeps the
        running configuration.
        """
        with self._lock:
            if self._current is None:
                return self.load()
            path = self.paths.config_for(self._read_switcher())
            try:
                parse_config_xml(read_bytes(path))
            except FileNotFoundError:
                pass              # created with the shipped values, as at start-up
            except (OSError, ValueError) as exc:
                raise ConfigFileError(
                    path, f"cannot be parsed ({exc}); the file is left as it is") from None
            return self.load()

    def _read_switcher(self) -> str:
        path = self.paths.config_switcher
        try:
            return parse_switcher_xml(read_bytes(path))
        except FileNotFoundError:
            self._log.info("%s missing; using the default configuration", path)
        except (OSError, ValueError) as exc:
            self._log.warning("%s: %s; using the default configuration", path, exc)
        try:
            atomic_write(path, render_switcher_xml("default"))
        except OSError as exc:
            self._log.error("cannot write %s: %s", path, exc)
        return "default"

    def _load_file(self, state: str) -> Config:
        path, backup = self.paths.config_for(state), self.paths.config_backup
        self._sweep_temporaries()
        data: Optional[bytes] = None
        if not os.path.exists(path):
            self._log.warning("%s missing; writing the shipped defaults", path)
            parsed = ParsedConfig(shipped_values(state), (), {}, ())
        else:
            try:
                data = read_bytes(path)
                parsed = parse_config_xml(data)
            except (OSError, ValueError) as exc:
                self._log.warning("%s is unreadable (%s); using the backup %s", path, exc, backup)
                try:
                    parsed = parse_config_xml(read_bytes(backup))
                except (OSError, ValueError) as exc2:
                    raise ConfigFileError(
                        path, f"unreadable ({exc}), and so is the backup {backup} ({exc2})") from None
        config = self._config_of(path, parsed)
        self._on_disk = data
        # Upstream rewrites the active file and the backup on every successful
        # load; we write only what differs (no SD card wear at every boot).
        try:
            self._write(path, config)
        except _EditedOnDisk:
            pass      # edited since it was read: the next load or change takes the edit in
        except (OSError, ConfigFileError) as exc:
            self._log.error("cannot rewrite %s: %s", path, exc)
        return config

    def _config_of(self, path: str, parsed: ParsedConfig) -> Config:
        """The snapshot for a parsed file, its warnings logged."""
        for warning in parsed.warnings:
            self._log.warning("%s: %s", path, warning)
        values = dict(parsed.values)
        if not values["time_zone"]:
            # Upstream writes the JVM's default zone back into the file (docs/config-xml.md#keys).
            values["time_zone"] = self._host.time_zone()
        config = Config(values, paths=self.paths, machine=self._host.machine,
                        order=parsed.order, extras=parsed.extras)
        if config.fog_type_setting == "auto":
            try:
                detect_fog_type(self._host.machine)
            except ConfigValueError:
                self._log.warning("cannot tell the fog type of machine %r; running as intel_amd "
                                  "(set it with: iofog-agent config -ft arm|intel_amd)", self._host.machine)
        return config

    def _sweep_temporaries(self) -> None:
        """Remove temporary files a killed writer left behind (we are their only writer)."""
        directory = self.paths.etc_dir
        prefixes = tuple(temp_prefix(self.paths.config_for(s)) for s in SWITCHER_STATES) + (
            temp_prefix(self.paths.config_backup), temp_prefix(self.paths.config_switcher))
        try:
            names = os.listdir(directory)
        except OSError:
            return
        for name in names:
            if name.startswith(prefixes) and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(directory, name))
                except OSError:
                    pass

    def _write(self, path: str, config: Config) -> None:
        """Write ``config`` to the active file ``path`` unless it holds it, then to the backup.

        Raises :class:`_EditedOnDisk` (nothing written) when ``path`` no longer
        holds what this store last read or wrote: an edit by hand that the
        caller must take in first.
        """
        data = config_xml(config)
        try:
            old = open(path, "rb", buffering=0)   # unbuffered: read again after the rename
        except FileNotFoundError:
            old = None        # removed by hand: written again, as a load would
        except OSError as exc:
            raise ConfigFileError(path, f"cannot read: {exc.strerror or exc}") from None
        try:
            on_disk = old.read() if old is not None else None
            if on_disk is not None and on_disk != self._on_disk:
                raise _EditedOnDisk(path)
            if on_disk != data:
                def unchanged() -> None:
                    # Again once the new content is durable, just before the
                    # rename: an editor that saved during the fsync is taken in.
                    if _read_or_none(path) != on_disk:
                        raise _EditedOnDisk(path)

                atomic_write(path, data, before_replace=unchanged)
                if old is not None:
                    self._recover_overwritten_edit(path, old, on_disk, data)
        except OSError as exc:
            raise ConfigFileError(path, f"cannot write: {exc.strerror or exc}") from None
        finally:
            if old is not None:
                old.close()
        self._on_disk = data
        try:
            if not holds(self.paths.config_backup, data):
                atomic_write(self.paths.config_backup, data)
        except OSError as exc:
            # The active file is written and is what the next start reads, so
            # the change stands (refusing it now would leave the file and the
            # running daemon disagreeing). The stale backup is only a worse
            # fallback; the next write with room on the disk refreshes it.
            self._log.error("cannot write the backup %s: %s", self.paths.config_backup,
                            exc.strerror or exc)

    def _recover_overwritten_edit(self, path: str, old: BinaryIO, was: Optional[bytes],
                                  data: bytes) -> None:
        """After the rename: put back an edit written in place into the file just replaced.

        An editor that saves in place (truncate, write) into the file it opened
        before our rename writes into the old file, which ``old`` still holds
        open. Its content is put back at ``path`` and :class:`_EditedOnDisk`
        makes the caller take it in and compute the change again. The left
        window is between the last check and the rename (microseconds).
        """
        edited = _pread_all(old)
        if edited == was:
            return
        for _ in range(_SETTLE_TRIES):   # the editor may be between truncate and write
            try:
                parse_config_xml(edited)
                break
            except ValueError:
                time.sleep(_SETTLE_PAUSE)
                edited = _pread_all(old)
        self._log.warning("%s was edited while it was being written; the edit is put back", path)
        atomic_write(path, edited)
        self._on_disk = data      # so that the edit is taken in as one
        raise _EditedOnDisk(path)

    def _change(self, make: Callable[[Config], Optional[Config]], origin: str) -> Optional[Config]:
        """Compute a change from the current config with ``make``, write it, tell the listeners.

        ``make`` returns the new snapshot, or None when there is nothing to
        write. The active file is compared with what this store last read or
        wrote first (:meth:`_take_edits`), and again just before the write: an
        edit by hand is taken in and ``make`` runs again on top of it, so the
        edit and the change both stand. Call with the lock held.
        """
        path = self.paths.config_for(self._state)
        for _ in range(_MERGE_ATTEMPTS):
            old = self._take_edits(path)
            new = make(old)
            if new is None:
                return None
            try:
                self._write(path, new)
            except _EditedOnDisk:
                continue          # edited while ``make`` ran: take it in, compute again
            except OSError as exc:
                raise ConfigFileError(path, f"cannot write: {exc}") from exc
            self._current = new
            if old != new:
                self._notify(old, new, origin)
            return new
        self._log.error("%s keeps changing on disk; change not written (try again)", path)
        raise ConfigFileError(path, "keeps changing on disk; change not written")

    def _take_edits(self, path: str) -> Config:
        """The current config, after taking in the active file if it was edited by hand.

        A file that differs from what this store last read or wrote is loaded
        as a SIGHUP would load it (the listeners hear of the edit as a local
        change). One that cannot be parsed is left alone and the change is
        refused, with an error naming the file: writing over it would lose the
        edit, and the admin may be half-way through it.
        """
        current = self.current
        try:
            data = read_bytes(path)
        except OSError:
            return current        # missing or unreadable: the write says what is wrong
        if data == self._on_disk:
            return current
        try:
            parsed = parse_config_xml(data)
        except ValueError as exc:
            self._log.error("%s was changed on disk and cannot be parsed (%s); change refused, "
                            "the file is left as it is: fix it, then send SIGHUP", path, exc)
            raise ConfigFileError(
                path, f"changed on disk and cannot be parsed ({exc}); change refused") from None
        self._log.warning("%s was changed on disk since it was last read; the change is applied "
                          "on top of the edit (send SIGHUP after editing it)", path)
        config = self._config_of(path, parsed)
        self._on_disk, self._current = data, config
        if current != config:
            self._notify(current, config, Origin.LOCAL)   # the admin edited the file
        return config

    def add_listener(self, fn: Listener) -> None:
        with self._lock:
            self._listeners.append(fn)

    def _notify(self, old: Config, new: Config, origin: str) -> None:
        for fn in list(self._listeners):
            try:
                fn(old, new, origin)
            except Exception:
                self._log.exception("config listener %r failed", fn)

    # -- changes --------------------------------------------------------------------

    def apply(self, changes: Mapping[str, str], origin: str,
              direct: Optional[Mapping[str, str]] = None) -> ChangeReport:
        """Apply CLI flags (``{"d": "20", "lc": "5"}``) with upstream's validation (docs/config-xml.md#cli, #validation).

        ``origin`` (an :class:`Origin`) is handed to the listeners. ``direct``
        sets tags that have no flag (the Controller's router host and port)
        without validation, control characters refused. Accepted values are
        saved in one write; an unknown flag raises ConfigValueError before
        anything changes; a failed write raises ConfigFileError.
        """
        options: List[Tuple[Option, str]] = []
        for flag, raw in changes.items():
            opt = option_by_flag(flag)
            if opt is None or opt.check is None:
                raise ConfigValueError(flag, f"Invalid parameter -{flag}")
            options.append((opt, raw))
        reports: List[ChangeReport] = []

        def make(old: Config) -> Optional[Config]:
            report, values = self._validate(old, options, direct or {})
            reports[:] = [report]
            return old.with_values(values) if report.accepted else None

        with self._lock:
            self._change(make, origin)
        report = reports[0]
        for key, message in report.errors:
            self._log.info("config change refused: -%s: %s", key, message.strip())
        return report

    def _validate(self, old: Config, options: List[Tuple[Option, str]],
                  direct: Mapping[str, str]) -> Tuple[ChangeReport, Dict[str, str]]:
        """What :meth:`apply` makes of its changes on top of ``old``: the report and the new values."""
        values = old.values
        errors: List[Tuple[str, str]] = []
        accepted: List[Tuple[str, str, str]] = []
        for opt, raw in options:
            # Stripped: config.xml gives values back stripped, so what is stored is what is used.
            value = raw.strip()
            value = value[1:].strip() if value.startswith("+") else value
            if not value.strip() and opt.flag != "ac":
                errors.append((opt.key, BLANK_VALUE))
                continue
            if re.search(UNWRITABLE, value):
                errors.append((opt.key, invalid_value(opt, value).message))
                continue
            assert opt.check is not None
            try:
                updates = opt.check(opt, value, values, self._host)
            except ConfigValueError as exc:
                errors.append((opt.key, exc.message))
                continue
            accepted.append((opt.key, old.get(opt.tag), value))
            values.update(updates)
        for tag, value in direct.items():
            value = value.strip()
            if not re.search(UNWRITABLE, value) and values.get(tag) != value:
                accepted.append((tag, old.get(tag), value))
                values[tag] = value
        return ChangeReport(errors, accepted), values

    def apply_long_names(self, body: Mapping[str, object]) -> Dict[str, str]:
        """POST /v2/config (docs/local-api.md#config): ``{long name: message}`` for refused keys, ``{}`` if none.

        A body with no known key, or a value that is not a string, raises
        ConfigValueError (the Local API answers it with 400).
        """
        present = [(opt, body[opt.long_name]) for opt in OPTIONS
                   if opt.long_name is not None and opt.long_name in body]
        if not present:
            raise ConfigValueError("", "Request not valid")
        for opt, value in present:
            if not isinstance(value, str):
                raise ConfigValueError(opt.key, f"Value of '{opt.long_name}' must be a string")
        report = self.apply({opt.key: str(value) for opt, value in present}, Origin.LOCAL)
        names = {opt.key: str(opt.long_name) for opt, _ in present}
        # Upstream strips one-letter flags from the messages: "Option -d has ..." -> "Option has ...".
        return {names[key]: re.sub(r" -[a-z] ", " ", message) for key, message in report.errors}

    def reset_defaults(self) -> str:
        """``config defaults`` (docs/config-xml.md#cli): every CLI option back to its code default.

        As upstream: the network interface is not validated, identity and
        coordinates stay, and an empty default (``-tz``) is not applied. A
        failed write raises ConfigFileError and changes nothing (the CLI then
        prints ``RESET_FAILED`` and exits 1).
        """
        values = {o.tag: o.default for o in OPTIONS if o.flag and o.default}
        with self._lock:
            self._change(lambda old: old.with_values(values), Origin.LOCAL)
            return RESET_DONE

    def set_identity(self, uuid: str, token: str) -> None:
        """Store the node uuid and Controller token after provisioning; ``("", "")`` clears them."""
        for name, value in (("iofog_uuid", uuid), ("access_token", token)):
            # Surrounding whitespace would be used now and gone after a reload
            # (config.xml gives values back stripped): refused, like control characters.
            if re.search(UNWRITABLE, value) or value != value.strip():
                raise ConfigValueError(name, f"Invalid value for {name}")
        with self._lock:
            self._change(lambda old: old.with_values({"iofog_uuid": uuid, "access_token": token}),
                         Origin.LOCAL)

    def set_gps(self, lat: str, lon: str, *, keep_modes: Collection[str] = ()) -> bool:
        """POST /v2/gps (docs/local-api.md#gps): mode ``dynamic``, coordinates validated like ``-gps``.

        Returns whether anything changed. The same position (as numbers) in mode
        ``dynamic`` writes nothing and tells no listener (so nothing is PATCHed to
        the Controller); a current mode in ``keep_modes`` (the admin's ``off`` or
        ``manual``, issue 12) is kept, checked under the lock that serialises changes.
        """
        coordinates = f"{lat.strip()},{lon.strip()}"
        position = parse_coordinates(coordinates)
        if position is None:
            raise ConfigValueError("gps", f"Option -gps has invalid value: {coordinates}")

        def make(current: Config) -> Optional[Config]:
            if current.gps_mode in keep_modes:
                return None
            if current.gps_mode == "dynamic" and current.gps_lat_lon == position:
                return None
            return current.with_values({"gps": "dynamic", "gps_coordinates": coordinates})

        with self._lock:
            return self._change(make, Origin.LOCAL) is not None

    def switch(self, name: str) -> str:
        """``switch <dev|prod|def>`` (docs/config-xml.md#switch)."""
        target = SWITCH_NAMES.get(name.strip().lower())
        if target is None:
            return "Invalid switcher state"
        with self._lock:
            if target == self._state:
                return "Already using this configuration."
            previous, old = self._state, self.current
            try:
                atomic_write(self.paths.config_switcher, render_switcher_xml(target))
                config = self._load_file(target)
            except (ConfigFileError, OSError) as exc:
                self._log.warning("switch to %s failed: %s", target, exc)
                try:
                    atomic_write(self.paths.config_switcher, render_switcher_xml(previous))
                except OSError as exc2:
                    self._log.error("cannot restore %s: %s", self.paths.config_switcher, exc2)
                return "Error while loading new config file, falling back to current configuration"
            self._state, self._current = target, config
            if old != config:
                self._notify(old, config, Origin.LOCAL)
            return "Successfully switched to new configuration."
