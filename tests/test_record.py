"""iofogd.record: every Record's ``__init__`` sets exactly its ``__slots__``.

Equality, hash, repr and replace() come from the slots, so a slot that
``__init__`` forgets is an AttributeError at the first comparison, and an
attribute it sets outside the slots is an AttributeError at construction:
checked here for every subclass in the package, from the source.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap

import iofogd
from iofogd.record import Record


def _all_records() -> list[type[Record]]:
    for info in pkgutil.walk_packages(iofogd.__path__, "iofogd."):
        if info.name != "iofogd.__main__":
            importlib.import_module(info.name)
    found: list[type[Record]] = []
    todo = list(Record.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _assigned_in_init(cls: type[Record]) -> set[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__)))
    names: set[str] = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                    and target.value.id == "self":
                names.add(target.attr)
    return names


def test_every_record_init_sets_exactly_its_slots() -> None:
    records = _all_records()
    assert len(records) > 20   # the walk found the package's records
    wrong = {}
    for cls in records:
        if "__init__" not in vars(cls):
            continue   # inherits its parent's __init__ and slots
        slots = set(cls.__slots__)
        assigned = _assigned_in_init(cls)
        if assigned != slots:
            wrong[f"{cls.__module__}.{cls.__qualname__}"] = (sorted(slots - assigned), sorted(assigned - slots))
    assert wrong == {}, "(slots never set, attributes not in slots): " + repr(wrong)
