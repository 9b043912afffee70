"""Command-line flags generated from the tables, and checked by them.

Every run setting's flag comes from the run table (:data:`~fedlab_widgets.config.RUN_PARAMETERS`):
``--local-epochs``, ``--batch-size``, ... (and the older short spellings in :data:`ALIASES`);
every parameter of a scheme, algorithm, aggregator, attack or compressor from its table.
A bad value is refused before any data are read, naming the flag and then, in the table's
words, the setting and its valid range.

Examples
--------
>>> from fedlab_widgets.config import run_parameter
>>> run_flags(run_parameter("client_fraction"))
['--client-fraction', '--fraction']
>>> parser_for(run_parameter("batch_size"))("full") is None
True
"""

from __future__ import annotations

import argparse

__all__ = ["ALIASES", "NONE_WORDS", "parser_for", "run_flags", "add_run_args", "run_config",
           "flag_name", "add_table_args", "table_params"]

ALIASES = {"client_fraction": ("--fraction",), "target_accuracy": ("--target",),
           "num_threads": ("--threads",)}
#: words a none-able setting also takes for None on the command line
NONE_WORDS = {"batch_size": ("full", "inf")}


def parser_for(prm):
    """Text -> a value for ``prm`` (not yet checked: :class:`RunConfig` checks it, with the
    table's message; text that is no number stays text, which the check then names)."""
    def parse(text: str):
        t = text.strip()
        if prm.none and t.lower() in ("none", *NONE_WORDS.get(prm.name, ())):
            return None
        if t in prm.special or prm.kind == "choice":
            return t
        try:
            return int(t) if prm.kind == "int" else float(t)
        except ValueError:
            return t
    parse.__name__ = prm.name  # argparse names the type in its own errors
    return parse


def run_flags(prm) -> list[str]:
    """The flags of run setting ``prm``: ``--name-with-dashes`` and its aliases."""
    return [flag_name(prm.name), *ALIASES.get(prm.name, ())]


def add_run_args(group, names) -> None:
    """One flag per run setting in ``names``, generated from the run table."""
    from .config import run_parameter

    for name in names:
        prm = run_parameter(name)
        extra = dict(nargs=2, metavar=("LOW", "HIGH")) if prm.kind == "pair" else {}
        if prm.kind == "choice":
            extra["metavar"] = "{" + ",".join(prm.choices) + "}"
        default = "none" if prm.default is None else (
            " ".join(map(str, prm.default)) if prm.kind == "pair" else prm.default)
        group.add_argument(*run_flags(prm), dest=name, type=parser_for(prm),
                           default=argparse.SUPPRESS,
                           help=f"{prm.doc} ({prm.range_text()}; default {default})", **extra)


def run_config(args):
    """The :class:`~fedlab_widgets.config.RunConfig` of the flags given (a ValueError names
    the flag and, in the table's words, the setting and its range)."""
    from .config import RUN_PARAMETERS, RunConfig

    given = {}
    for prm in RUN_PARAMETERS:
        if hasattr(args, prm.name):
            v = getattr(args, prm.name)
            given[prm.name] = tuple(v) if prm.kind == "pair" else v
            try:
                prm.check(given[prm.name])
            except ValueError as e:
                raise ValueError(f"{'/'.join(run_flags(prm))}: {e}") from None
    return RunConfig(**given)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_table_args(group, tables: dict, what: str, prefix: str = "") -> None:
    """One flag per parameter name in ``tables`` (scheme or algorithm -> Params).

    ``prefix`` keeps names apart that clash with other flags (the attack's
    ``fraction`` is ``--attack-fraction``, not the clients' ``--fraction``).
    """
    owners: dict[str, list[str]] = {}
    first = {}
    for owner, params in tables.items():
        for prm in params:
            owners.setdefault(prm.name, []).append(owner)
            first.setdefault(prm.name, prm)
    for name, prm in first.items():
        defaults = ", ".join(f"{o} {_text(next(q for q in tables[o] if q.name == name).default)}"
                             for o in owners[name])
        if prm.kind == "choice":
            extra = {"metavar": "{" + ",".join(prm.choices) + "}"}
        else:
            extra = {}
        group.add_argument(flag_name(prefix + name), dest=prefix + name, default=None,
                           type=parser_for(prm),
                           help=f"{prm.doc} ({what} {', '.join(owners[name])}; "
                                f"{prm.range_text()}; default: {defaults})", **extra)


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else str(value)


def table_params(args, tables: dict, chosen: str | None, option: str, prefix: str = "",
                  hint: str = "") -> dict:
    """The flags given for ``chosen``; an error names a flag that does not apply to it."""
    names = {prm.name for params in tables.values() for prm in params}
    given = {k: getattr(args, prefix + k) for k in sorted(names)
             if getattr(args, prefix + k, None) is not None}
    valid = {prm.name: prm for prm in tables[chosen]} if chosen is not None else {}
    extra = sorted(set(given) - set(valid))
    if extra:
        raise ValueError(f"{', '.join(flag_name(prefix + k) for k in extra)} does not apply to "
                         f"{option} {chosen or 'none'}{hint}")
    for k, v in given.items():   # the flag named, then the table's message
        try:
            given[k] = valid[k].check(v)
        except ValueError as e:
            raise ValueError(f"{flag_name(prefix + k)}: {e}") from None
    return given


