"""One registry for every named family: algorithms, aggregators, attacks, compressors,
partition schemes, models, engines.

An entry is a name, a builder, the builder's parameter table (:class:`~fedlab_widgets.params.Param`)
and a doc line. The widgets, the command line, validation and the documentation read the
registry; nothing else dispatches on a name.

Examples
--------
>>> from fedlab_widgets.params import Param
>>> SHAPES = Registry("shape")
>>> @SHAPES.register("square", Param("side", 1.0, lo=0.0, lo_open=True), doc="a square")
... def square(side):
...     return side * side
>>> SHAPES.names()
('square',)
>>> SHAPES.build("square", side=3.0)
9.0
>>> SHAPES.build("circle")
Traceback (most recent call last):
ValueError: shape must be one of square; got 'circle'
>>> SHAPES.build("square", side=-1)
Traceback (most recent call last):
ValueError: side must be a number > 0; got -1
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterator

from .params import Param, check_params

__all__ = ["Registry", "Entry"]


@dataclass(frozen=True)
class Entry:
    """One named thing: how to build it, its parameters, one line of doc."""

    name: str
    builder: Callable
    params: tuple[Param, ...] = ()
    doc: str = ""
    #: what the entry declares about itself (an aggregator's ``sum=True``, ...)
    traits: Mapping = field(default_factory=lambda: MappingProxyType({}))


class Registry(Mapping):
    """Named builders of one kind, each with its parameter table.

    As a mapping it gives ``name -> builder`` (so ``MODELS["2nn"]`` is the class and
    ``AGGREGATORS["median"]`` the function); :meth:`params` gives a name's table,
    :meth:`table` every table, :meth:`build` a checked instance.

    Parameters
    ----------
    kind : str
        What the names are, as error messages say it (``"algorithm"``, ``"scheme"``).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    # -- registering ---------------------------------------------------------------------
    def add(self, name: str, builder: Callable, params=(), *, doc: str = "", **traits) -> Entry:
        """Register ``builder`` under ``name`` with its parameter table and ``traits``."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        entry = Entry(name, builder, tuple(params), doc or _first_line(builder),
                      MappingProxyType(dict(traits)))
        self._entries[name] = entry
        return entry

    def register(self, name: str, *params: Param, doc: str = "", **traits):
        """Decorator form of :meth:`add`."""
        def deco(builder):
            self.add(name, builder, params, doc=doc, **traits)
            return builder
        return deco

    def trait(self, name: str, trait: str, default=None):
        """What entry ``name`` declares as ``trait`` (``default`` if not registered or silent)."""
        entry = self._entries.get(name)
        return default if entry is None else entry.traits.get(trait, default)

    def resolve(self, obj, cls: type, *, what: str, default: str | None = None,
                make: Callable | None = None):
        """An instance of ``cls`` from ``obj``: itself, a name (``make(name)``, by default
        :meth:`build`: its defaults), or None (``default``'s instance, or None when there
        is no default).

        The one message for anything else: "<kind> must be a name (a, b, ...) or <what>".
        """
        make = make or self.build
        if obj is None:
            return None if default is None else make(default)
        if isinstance(obj, cls):
            return obj
        if isinstance(obj, str):
            return make(obj)
        raise ValueError(f"{self.kind} must be {'None, ' if default is None else ''}a name "
                         f"({', '.join(self._entries)}) or {what}; got {obj!r}")

    # -- reading -------------------------------------------------------------------------
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def entry(self, name) -> Entry:
        """The entry for ``name``, or a ValueError listing the valid names."""
        self.check(name)
        return self._entries[name]

    def check(self, name):
        """``name`` if it is registered, else the one message: "<kind> must be one of ..."."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"{self.kind} must be one of {', '.join(self._entries)}; "
                             f"got {name!r}")
        return name

    def params(self, name: str) -> tuple[Param, ...]:
        return self.entry(name).params

    def table(self) -> dict[str, tuple[Param, ...]]:
        """Every name's parameter table, in registration order."""
        return {n: e.params for n, e in self._entries.items()}

    def doc(self, name: str) -> str:
        return self.entry(name).doc

    def check_params(self, name: str, given: Mapping, *, defaults: bool = True) -> dict:
        """``given`` checked against ``name``'s table (defaults filled in)."""
        return check_params(f"{self.kind} {name!r}", self.params(name), given, defaults=defaults)

    def build(self, name: str, **params):
        """``builder(**checked params)``: a ValueError names a bad name, parameter or value."""
        entry = self.entry(name)
        return entry.builder(**self.check_params(name, params))

    # -- Mapping: name -> builder ----------------------------------------------------------
    def __getitem__(self, name: str) -> Callable:
        return self._entries[name].builder

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


def _first_line(obj) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""
