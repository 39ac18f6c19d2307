"""config.xml and config-switcher.xml: parse and render (pure), and read without writing.

Values are kept as the XML text the Java agent writes (units and spellings
unchanged), so a config.xml written by the Java agent loads unchanged and ours
loads in the Java agent; unknown elements are kept on rewrite. Only
:class:`iofogd.config.store.ConfigStore` writes these files.
"""
from __future__ import annotations

import os
from xml.parsers import expat

from iofogd.config.schema import OPTIONS, OUR_TAGS, option_by_tag, shipped_values
from iofogd.config.value import Config
from iofogd.errors import ConfigFileError
from iofogd.paths import Paths
from iofogd.record import Record
from iofogd.system.host import Host, real_host

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Dict, Final, List, Mapping, Optional, Sequence, Tuple

# The declaration the JDK transformer writes (docs/config-xml.md#files).
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="no"?>'


class ParsedConfig(Record):
    __slots__ = ("values", "order", "extras", "warnings")
    values: Final[Dict[str, str]]  # every known tag (defaults where missing or bad)
    order: Final[Tuple[str, ...]]  # tags in file order, unknown ones included
    extras: Final[Dict[str, str]]  # unknown tags, kept on rewrite
    warnings: Final[Tuple[str, ...]]

    def __init__(
        self,
        values: Dict[str, str],
        order: Tuple[str, ...],
        extras: Dict[str, str],
        warnings: Tuple[str, ...],
    ) -> None:
        self.values = values
        self.order = order
        self.extras = extras
        self.warnings = warnings


def _fixname(name: str) -> str:
    """ElementTree's spelling of a namespaced name (``{uri}local``) from expat's ``uri}local``."""
    return "{" + name if "}" in name else name


def _top_level(data: bytes) -> Tuple[str, List[Tuple[str, str]]]:
    """The root element's tag and each child's tag and text, in document order:
    what ``ET.fromstring`` and ``"".join(child.itertext())`` give, read with expat
    directly. ElementTree and its C accelerator would add 0.4 MiB to the daemon's
    RSS for one flat file read at start. ValueError when the document is not
    well-formed, with expat's message as ElementTree gives it."""
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    root: List[str] = []
    children: List[Tuple[str, List[str]]] = []
    depth = 0

    def start(name: str, attributes: Dict[str, str]) -> None:
        nonlocal depth
        if depth == 0:
            root.append(_fixname(name))
        elif depth == 1:
            children.append((_fixname(name), []))
        depth += 1

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1

    def text(data: str) -> None:
        if depth >= 2:   # inside a child of the root, at any depth (itertext)
            children[-1][1].append(data)

    def other(data: str) -> None:
        # What expat passes on unexpanded: an entity it has no value for (declared
        # in an external DTD, or external itself). ElementTree refuses the document.
        if len(data) >= 2 and data[0] == "&":
            raise ValueError(f"not well-formed XML (undefined entity {data}: line {parser.CurrentLineNumber}, "
                             f"column {parser.CurrentColumnNumber})")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.DefaultHandlerExpand = other
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise ValueError(f"not well-formed XML ({exc})") from None
    return root[0], [(tag, "".join(parts)) for tag, parts in children]


def parse_config_xml(data: bytes) -> ParsedConfig:
    """Parse a config.xml; ValueError when it is not a ``<config>`` document.

    A missing or duplicated element, or a value its option cannot read, gives the
    code default and a warning (docs/config-xml.md#files).
    """
    root, children = _top_level(data)
    if root != "config":
        raise ValueError(f"root element is <{root}>, not <config>")
    found: Dict[str, List[str]] = {}
    order: List[str] = []
    for tag, text in children:
        if tag not in found:
            order.append(tag)
        found.setdefault(tag, []).append(text.strip())
    values: Dict[str, str] = {}
    warnings: List[str] = []
    for opt in OPTIONS:
        texts = found.get(opt.tag, [])
        if not texts and opt.tag in OUR_TAGS:
            values[opt.tag] = opt.default       # a Java agent's file never has them
        elif len(texts) != 1:
            # Upstream's words (docs/config-xml.md#files), so existing log greps keep working.
            warnings.append(f"[Configuration] <{opt.tag}>  item not found or defined more than once. "
                            f"Default value - {opt.default} will be used")
            values[opt.tag] = opt.default
        elif not opt.load_ok(texts[0]):
            warnings.append(f"[Configuration] <{opt.tag}> has an invalid value {texts[0]!r}. "
                            f"Default value - {opt.default} will be used")
            values[opt.tag] = opt.default
        else:
            values[opt.tag] = texts[0]
    extras = {tag: texts[0] for tag, texts in found.items() if option_by_tag(tag) is None}
    return ParsedConfig(values, tuple(order), extras, tuple(warnings))


def _escape(text: str) -> str:
    """XML character data escaping (what xml.sax.saxutils.escape does, without
    importing urllib.request and its dependencies into a small daemon)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_config_xml(values: Mapping[str, str], order: Sequence[str] = (),
                      extras: Mapping[str, str] | None = None) -> bytes:
    """The file: the JDK's declaration, tags in their previous order, new ones appended."""
    extras = extras or {}
    tags = [t for t in order if t in values or t in extras]
    tags += [o.tag for o in OPTIONS if o.tag not in tags]
    lines = [XML_DECLARATION, "<config>"]
    for tag in tags:
        text = values[tag] if tag in values else extras[tag]
        lines.append(f"    <{tag}>{_escape(text)}</{tag}>" if text else f"    <{tag}/>")
    lines.append("</config>")
    return ("\n".join(lines) + "\n").encode("utf-8")


SWITCHER_STATES = ("default", "development", "production")
SWITCH_NAMES = {"def": "default", "default": "default", "dev": "development",
                 "development": "development", "prod": "production", "production": "production"}


def parse_switcher_xml(data: bytes) -> str:
    """The state in config-switcher.xml; ValueError when unreadable or unknown."""
    root, children = _top_level(data)
    state = next((text.strip() for tag, text in children if tag == "current_config"), "")
    if root != "switcher" or state not in SWITCHER_STATES:
        raise ValueError(f"invalid switcher state {state!r}")
    return state


def config_xml(config: Config) -> bytes:
    """The file for a :class:`Config`."""
    return render_config_xml(config.values, config.tag_order, config.unknown_tags)


def render_switcher_xml(state: str) -> bytes:
    return (f"{XML_DECLARATION}\n<switcher>\n    <current_config>{state}</current_config>\n"
            "</switcher>\n").encode("utf-8")


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def holds(path: str, data: bytes) -> bool:
    """Whether the file at ``path`` has exactly ``data`` (then there is nothing to write)."""
    try:
        return read_bytes(path) == data
    except OSError:
        return False


def read_config(paths: Paths, host: Optional[Host] = None) -> Config:
    """Read the active config without writing anything (for the CLI and other readers).

    Falls back to the backup, then to shipped defaults, silently; only the daemon's
    :class:`ConfigStore` repairs files.
    """
    host = host or real_host()
    state = "default"
    try:
        state = parse_switcher_xml(read_bytes(paths.config_switcher))
    except (OSError, ValueError):
        pass
    for path in (paths.config_for(state), paths.config_backup):
        try:
            parsed = parse_config_xml(read_bytes(path))
        except (OSError, ValueError):
            continue
        return Config(parsed.values, paths=paths, machine=host.machine, order=parsed.order,
                      extras=parsed.extras)
    return Config(shipped_values(state), paths=paths, machine=host.machine)


def check_config(paths: Paths) -> list[str]:
    """What the daemon would make of its config, without writing anything
    (``iofogd --check-config``, run by service managers before a start, often
    as root: a repairing load would leave root-owned files the service user
    cannot read). Returns remarks; raises ConfigFileError when the daemon would
    refuse to start."""
    remarks: list[str] = []
    state = "default"
    try:
        state = parse_switcher_xml(read_bytes(paths.config_switcher))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        remarks.append(f"{paths.config_switcher}: {exc}; the default configuration would be used")
    path, backup = paths.config_for(state), paths.config_backup
    if not os.path.exists(path):
        return remarks + [f"{path} missing; the shipped defaults would be written"]
    try:
        parsed = parse_config_xml(read_bytes(path))
    except (OSError, ValueError) as exc:
        try:
            parsed = parse_config_xml(read_bytes(backup))
        except (OSError, ValueError) as exc2:
            raise ConfigFileError(
                path, f"unreadable ({exc}), and so is the backup {backup} ({exc2})") from None
        remarks.append(f"{path} is unreadable ({exc}); the backup {backup} would be used")
    return remarks + [f"{path}: {w}" for w in parsed.warnings]
