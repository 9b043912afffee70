"""Command line: ``python -m fedlab_widgets run ...`` and ``python -m fedlab_widgets partition ...``.

Examples
--------
Train the 2NN with FedAvg on a Dirichlet(0.3) partition of MNIST::

    python -m fedlab_widgets run --model 2nn --partition dirichlet --alpha 0.3 \\
        --clients 100 --fraction 0.1 --local-epochs 1 --batch-size 10 --lr 0.1 \\
        --rounds 50 --target 0.97 --seed 0 --out runs/dirichlet

Compare FedAvg with SCAFFOLD on pathological shards::

    python -m fedlab_widgets run --partition shards --local-epochs 5 --algorithm scaffold
    python -m fedlab_widgets run --algorithm fedprox --mu 0.1

Show how skewed McMahan's pathological shards are, and save the heatmap::

    python -m fedlab_widgets partition --partition shards --clients 100 --plot shards.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser"]

PROG = "fedlab-widgets"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise SystemExit(_fail(f"{message} (see {self.prog} --help)", code=2))


def _fail(message: str, code: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


#: the run settings' older, shorter flags (both spellings work)
ALIASES = {"client_fraction": ("--fraction",), "target_accuracy": ("--target",),
           "num_threads": ("--threads",)}
#: words a none-able setting also takes for None on the command line
NONE_WORDS = {"batch_size": ("full", "inf")}


def _parser_for(prm):
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
    return [_flag(prm.name), *ALIASES.get(prm.name, ())]


def _add_run_args(group, names) -> None:
    """One flag per run setting in ``names``, generated from the run table."""
    from .config import run_parameter

    for name in names:
        prm = run_parameter(name)
        extra = dict(nargs=2, metavar=("LOW", "HIGH")) if prm.kind == "pair" else {}
        if prm.kind == "choice":
            extra["metavar"] = "{" + ",".join(prm.choices) + "}"
        default = "none" if prm.default is None else (
            " ".join(map(str, prm.default)) if prm.kind == "pair" else prm.default)
        group.add_argument(*run_flags(prm), dest=name, type=_parser_for(prm),
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


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_table_args(group, tables: dict, what: str, prefix: str = "") -> None:
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
        defaults = ", ".join(f"{o} {next(q for q in tables[o] if q.name == name).default:g}"
                             for o in owners[name])
        group.add_argument(_flag(prefix + name), dest=prefix + name, default=None,
                           type=_parser_for(prm),
                           help=f"{prm.doc} ({what} {', '.join(owners[name])}; "
                                f"{prm.range_text()}; default: {defaults})")


def _table_params(args, tables: dict, chosen: str | None, option: str, prefix: str = "",
                  hint: str = "") -> dict:
    """The flags given for ``chosen``; an error names a flag that does not apply to it."""
    names = {prm.name for params in tables.values() for prm in params}
    given = {k: getattr(args, prefix + k) for k in sorted(names)
             if getattr(args, prefix + k, None) is not None}
    valid = {prm.name: prm for prm in tables[chosen]} if chosen is not None else {}
    extra = sorted(set(given) - set(valid))
    if extra:
        raise ValueError(f"{', '.join(_flag(prefix + k) for k in extra)} does not apply to "
                         f"{option} {chosen or 'none'}{hint}")
    for k, v in given.items():   # the flag named, then the table's message
        try:
            given[k] = valid[k].check(v)
        except ValueError as e:
            raise ValueError(f"{_flag(prefix + k)}: {e}") from None
    return given


def _add_partition_args(p: argparse.ArgumentParser) -> None:
    from .partition import SCHEME_PARAMETERS, SCHEMES

    g = p.add_argument_group("data and partition")
    g.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    g.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: "
                   "$FEDLAB_DATA_DIR, then the repository's data/)")
    g.add_argument("--partition", dest="scheme", choices=SCHEMES, default="iid",
                   help="how the training data is split among clients (default: iid)")
    g.add_argument("--clients", type=int, default=100, help="number of clients K (default: 100)")
    _add_table_args(g, SCHEME_PARAMETERS, "--partition")
    _add_run_args(g, ["seed"])


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Federated learning on MNIST, from the command line.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="train a global model with FedAvg",
                         description="Train a global model with FedAvg and report its test accuracy.")
    from .models import MODELS
    run.add_argument("--model", choices=list(MODELS), default="2nn")
    _add_partition_args(run)
    g = run.add_argument_group("FedAvg")
    _add_run_args(g, ["client_fraction", "local_epochs", "batch_size", "lr", "rounds",
                      "target_accuracy", "eval_every", "eval_subset", "engine", "num_threads"])
    g.add_argument("--out", default=None, help="write history.json and convergence.png here "
                   "(a folder; made if missing)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    from . import attacks
    from .algorithms import AGGREGATOR_PARAMETERS, NAMES, PARAMETERS

    a = run.add_argument_group("algorithm")
    a.add_argument("--algorithm", choices=NAMES, default="fedavg",
                   help="what the server does with the client updates (default: fedavg)")
    _add_table_args(a, PARAMETERS, "--algorithm")
    a.add_argument("--aggregator", choices=list(AGGREGATOR_PARAMETERS), default=None,
                   help="replace the weighted mean, e.g. by a robust aggregator (default: the "
                        "algorithm's own)")
    _add_table_args(a, AGGREGATOR_PARAMETERS, "--aggregator")
    a.add_argument("--dp", action="store_true",
                   help="differential privacy (clip, noise, epsilon) on any averaging algorithm; "
                        "--algorithm dp-fedavg is FedAvg with it")
    a.add_argument("--secure-aggregation", action="store_true",
                   help="mask the updates so that the server sees only their sum")
    from .secagg import SECAGG_PARAMETERS
    _add_table_args(a, {"--secure-aggregation": SECAGG_PARAMETERS}, "with")
    d = run.add_argument_group("real devices")
    _add_run_args(d, ["dropout", "stragglers", "straggler_work", "straggler_mode"])
    from .compression import COMPRESSION_PARAMETERS
    d.add_argument("--compression", choices=list(COMPRESSION_PARAMETERS), default=None,
                   help="compress the clients' updates (topk with error feedback, randk, "
                        "quantize = QSGD); bytes up count what is sent")
    _add_table_args(d, COMPRESSION_PARAMETERS, "--compression", prefix="compression_")
    _add_run_args(d, ["local_test_fraction"])
    t = run.add_argument_group("attack")
    t.add_argument("--attack", choices=attacks.NAMES, default=None,
                   help="make a fraction of the clients malicious (default: none)")
    _add_table_args(t, attacks.PARAMETERS, "--attack", prefix="attack_")

    part = sub.add_parser("partition", help="summarise a partition's heterogeneity",
                          description="Partition the training set and print how non-IID it is.")
    _add_partition_args(part)
    part.add_argument("--plot", default=None, help="save the label-distribution heatmap here (PNG)")
    part.add_argument("--rows", type=int, default=10, help="clients listed in the table")
    return parser


def _scheme_params(args) -> dict:
    from .partition import SCHEME_PARAMETERS

    return _table_params(args, SCHEME_PARAMETERS, args.scheme, "--partition")


def _load(args):
    from .datasets import load_fashion_mnist, load_mnist

    return (load_mnist if args.dataset == "mnist" else load_fashion_mnist)(args.data_dir)


def _cmd_partition(args) -> int:
    from .partition import partition

    params = _scheme_params(args)
    seed = run_config(args).seed
    train, _ = _load(args)
    p = partition(train.labels, args.scheme, args.clients, seed=seed, **params)
    print(p.describe(max_rows=args.rows))
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        from .plots import plot_partition

        fig = plot_partition(p)
        try:
            Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--plot {args.plot}: cannot make its folder ({e.strerror})") from None
        fig.savefig(args.plot, dpi=110, bbox_inches="tight")
        print(f"saved {args.plot}")
    return 0


def _cmd_run(args) -> int:
    from . import algorithms
    from .partition import partition
    from .simulation import Simulation

    # everything that can be checked is checked before the data are loaded and trained on
    from . import attacks

    cfg = run_config(args)

    params = _scheme_params(args)
    agg = {} if args.aggregator is None else {"aggregator": args.aggregator}
    alg_tables = dict(algorithms.PARAMETERS)
    if args.dp and args.algorithm != "dp-fedavg":
        alg_tables[args.algorithm] += algorithms.DP_PARAMETERS
    sa = {"--secure-aggregation": algorithms.SECAGG_PARAMETERS}
    alg = algorithms.get(args.algorithm, **agg, differential_privacy=args.dp,
                         secure_aggregation=args.secure_aggregation,
                         **_table_params(args, alg_tables, args.algorithm,
                                         "--algorithm" + (" with --dp" if args.dp else ""),
                                         hint="" if args.dp else " (add --dp for privacy)"),
                         **_table_params(args, sa, "--secure-aggregation" if args.secure_aggregation
                                         else None, "--secure-aggregation",
                                         hint=": add --secure-aggregation"),
                         **_table_params(args, algorithms.AGGREGATOR_PARAMETERS,
                                         args.aggregator or "mean", "--aggregator"))
    attack_params = _table_params(args, attacks.PARAMETERS, args.attack, "--attack",
                                  prefix="attack_")
    attack = None if args.attack is None else attacks.get(args.attack, **attack_params)
    from . import compression
    comp_params = _table_params(args, compression.COMPRESSION_PARAMETERS, args.compression,
                                "--compression", prefix="compression_")
    comp = None if args.compression is None else compression.get(args.compression, **comp_params)
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {args.out} is a file; give a folder (it is made if missing)")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--out {args.out}: cannot make that folder ({e.strerror})") from None
        if not os.access(out, os.W_OK):
            raise ValueError(f"--out {args.out}: that folder is not writable")
    train, test = _load(args)
    p = partition(train.labels, args.scheme, args.clients, seed=cfg.seed, **params)
    sim = Simulation(args.model, train, test, p, config=cfg, algorithm=alg, attack=attack,
                     compression=comp)
    print(f"{sim.history.label}; {sim.clients_per_round} clients per round, "
          f"{sim.num_parameters:,} parameters, engine {sim.engine.name}")
    t0 = time.perf_counter()
    h = sim.run(progress=not args.no_progress)
    secs = time.perf_counter() - t0
    print(f"final accuracy {h.final_accuracy:.4f} after {len(h)} rounds "
          f"(best {h.best_accuracy:.4f}), {secs:.1f} s, "
          f"{h.bytes_total[-1] / 1e6:.1f} MB communicated")
    if attack is not None and attack.name == "backdoor":
        print(f"backdoor attack success rate {h.attack_success[-1]:.4f}")
    if alg.dp is not None and len(h):
        print(f"privacy spent: epsilon {h.epsilon[-1]:.3g} at delta {alg.dp.delta:g} "
              f"(RDP accountant, {sim.clients_per_round} of {sim.num_clients} clients sampled "
              "without replacement each round)")
    if cfg.dropout or cfg.stragglers:
        print(f"clients: {int(h.reported.sum())} updates aggregated of "
              f"{sum(len(r.clients) for r in h.records)} sampled "
              f"({sum(len(r.dropped) for r in h.records)} dropped out, "
              f"{sum(len(r.stragglers) for r in h.records)} straggled, mode "
              f"{sim.straggler_mode})")
    if comp is not None:
        print(f"uploaded {h.bytes_up.sum() / 1e6:.2f} MB with {comp.label()} "
              f"({comp.bytes_up(sim.num_parameters):,} bytes per client instead of "
              f"{sim.num_parameters * 4:,})")
    if cfg.local_test_fraction and len(h):
        sp = h.client_spread()
        ok = np.isfinite(sp["mean"])
        if ok.any():
            i = int(np.flatnonzero(ok)[-1])
            print(f"per-client accuracy: mean {sp['mean'][i]:.4f}, 10th percentile "
                  f"{sp['p10'][i]:.4f}, 90th {sp['p90'][i]:.4f}, worst {sp['worst'][i]:.4f}")
    if cfg.target_accuracy is not None:
        r = h.rounds_to(cfg.target_accuracy)
        print(f"rounds to {cfg.target_accuracy:g}: "
              f"{r if r is not None else f'not reached in {len(h)}'}")
    if h.stop_reason:
        print(f"stopped: {h.stop_reason}")
    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from .plots import plot_convergence

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        h.save(out / "history.json")
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
        plot_convergence(h, ax=a1, target=cfg.target_accuracy)
        plot_convergence(h, ax=a2, metric="loss", legend=False)
        fig.tight_layout()
        fig.savefig(out / "convergence.png", dpi=110)
        print(f"wrote {out / 'history.json'} and {out / 'convergence.png'}")
    return 1 if h.diverged else 0


def main(argv=None) -> int:
    """Entry point; returns the exit status (0 ok, 1 run diverged / data missing, 2 bad input)."""
    from .datasets import DatasetNotFoundError

    args = build_parser().parse_args(argv)
    try:
        return {"run": _cmd_run, "partition": _cmd_partition}[args.command](args)
    except DatasetNotFoundError as e:
        return _fail(str(e), code=1)
    except ValueError as e:
        return _fail(str(e), code=2)
    except KeyboardInterrupt:
        return _fail("interrupted", code=130)


if __name__ == "__main__":
    sys.exit(main())
