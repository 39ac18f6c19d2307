"""Record: the base of the daemon's small immutable values (snapshots, frames, routes).

Why not dataclasses: a frozen dataclass compiles its generated methods with
exec() when its class statement runs. Measured on the 2-core bench machine,
27 of them cost ~60 ms of start-up and ~2 MiB of RSS, more than all the rest of
our own code (see bench/bench_http.py and the issue notes). A Record subclass
is a class with ``__slots__`` and a written-out ``__init__``; equality, hash
and repr come from the slots here, once.

Immutability is checked by mypy, not at run time: every field is declared
``Final`` in the class body, so ``mypy --strict`` (run in CI) refuses any
assignment outside ``__init__``. A run-time ``__setattr__`` guard would slow
every construction, and frames and requests are built on the hot path.
"""
from __future__ import annotations

# typing stays out of start-up too (~5 ms, 0.6 MiB): the modules the daemon
# imports before it answers its first request name their annotation types
# under this constant, which mypy takes as true and Python never does.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    R = TypeVar("R", bound="Record")


class Record:
    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def replace(self: R, **changes: Any) -> R:
        """A copy with some fields changed (dataclasses.replace)."""
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return type(self)(**values)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"
