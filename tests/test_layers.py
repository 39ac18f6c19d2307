"""Imports point down: each module imports only modules on lower floors, or in its own room.

The floors are the ones docs/architecture.md draws. Imports under
``if TYPE_CHECKING:`` count too: a type that must be named from below is a
sign that something lives on the wrong floor.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "iofogd"

# Bottom to top; a module's floor is the one of its longest listed prefix.
FLOORS: list[tuple[str, ...]] = [
    ("iofogd", "iofogd.record", "iofogd.errors", "iofogd.durable", "iofogd.notify"),   # 0 foundations
    ("iofogd.paths", "iofogd.admintoken", "iofogd.system.host"),                        # 1 host and files
    ("iofogd.config", "iofogd.state"),                                                  # 2 what the agent knows
    ("iofogd.system", "iofogd.controller", "iofogd.ws", "iofogd.logfiles"),              # 3 the parts
    ("iofogd.reports", "iofogd.agent", "iofogd.bus"),                                   # 4 parts joined
    ("iofogd.app",),                                                                    # 5 the App
    ("iofogd.commands",),                                                               # 6 what it is asked
    ("iofogd.http",),                                                                   # 7 the Local API
    ("iofogd.daemon", "iofogd.cli"),                                                    # 8 entry points
    ("iofogd.__main__",),                                                               # 9 python -m iofogd
]

# (importer, imported, why it is allowed for now)
EXCEPTIONS: dict[tuple[str, str], str] = {}


def floor_and_room(module: str) -> tuple[int, str]:
    best = (-1, "")
    for floor, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best[1]):
                best = (floor, prefix)
    assert best[0] >= 0, f"{module} is on no floor: add it to FLOORS and docs/architecture.md"
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "iofogd":
            if node.module == "iofogd":
                found.update("iofogd" if a.name == "__version__" else f"iofogd.{a.name}" for a in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "iofogd")
    return found


def test_imports_point_down() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        floor, room = floor_and_room(importer)
        for imported in sorted(imports_of(path) - {importer}):
            their_floor, their_room = floor_and_room(imported)
            if their_floor < floor or their_room == room or (importer, imported) in EXCEPTIONS:
                continue
            upward.append(f"{importer} (floor {floor}) imports {imported} (floor {their_floor})")
    assert upward == []


def test_the_floors_find_an_upward_import() -> None:
    # The check itself: a daemon-level import from the config would be caught.
    assert floor_and_room("iofogd.config.store")[0] < floor_and_room("iofogd.daemon")[0]
    assert floor_and_room("iofogd.system.host") == (1, "iofogd.system.host")
    assert floor_and_room("iofogd.system.network") == (3, "iofogd.system")
