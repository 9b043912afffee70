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
import math
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


def _batch_size(text: str):
    if text.lower() in ("full", "inf", "none"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid batch size {text!r}: an integer >= 1, or 'full' for full batch") from None


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
                           type=int if prm.kind == "int" else float,
                           help=f"{prm.doc} ({what} {', '.join(owners[name])}; "
                                f"{prm.range_text()}; default: {defaults})")


def _table_params(args, tables: dict, chosen: str | None, option: str, prefix: str = "",
                  hint: str = "") -> dict:
    """The flags given for ``chosen``; an error names a flag that does not apply to it."""
    names = {prm.name for params in tables.values() for prm in params}
    given = {k: getattr(args, prefix + k) for k in sorted(names)
             if getattr(args, prefix + k, None) is not None}
    valid = {prm.name for prm in tables[chosen]} if chosen is not None else set()
    extra = sorted(set(given) - valid)
    if extra:
        raise ValueError(f"{', '.join(_flag(prefix + k) for k in extra)} does not apply to "
                         f"{option} {chosen or 'none'}{hint}")
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
    g.add_argument("--seed", type=int, default=0, help="seed for partition, sampling and weights")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Federated learning on MNIST, from the command line.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="train a global model with FedAvg",
                         description="Train a global model with FedAvg and report its test accuracy.")
    from .models import MODELS
    run.add_argument("--model", choices=list(MODELS), default="2nn")
    _add_partition_args(run)
    g = run.add_argument_group("FedAvg")
    g.add_argument("--fraction", type=float, default=0.1, help="client_fraction C (default 0.1)")
    g.add_argument("--local-epochs", type=int, default=1, help="E (default 1)")
    g.add_argument("--batch-size", type=_batch_size, default=10, help="B, or 'full' (default 10)")
    g.add_argument("--lr", type=float, default=0.1, help="client learning rate (default 0.1)")
    g.add_argument("--rounds", type=int, default=50, help="communication rounds (default 50)")
    g.add_argument("--target", type=float, default=None, help="stop once test accuracy reaches this")
    g.add_argument("--eval-every", type=int, default=1)
    g.add_argument("--engine", default="auto", help="auto, sequential or vectorized")
    g.add_argument("--threads", type=int, default=None,
                   help="torch threads while training (default: physical cores minus one, "
                        "1 to 4; 0 = torch's own default)")
    g.add_argument("--eval-subset", type=int, default=None,
                   help="between whole-test-set evaluations (--eval-every), estimate accuracy "
                        "on this many fixed test images")
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
    d.add_argument("--dropout", type=float, default=0.0,
                   help="chance that a sampled client never reports, in [0, 1) (default 0)")
    d.add_argument("--stragglers", type=float, default=0.0,
                   help="chance that a reporting client does only part of its local steps, "
                        "in [0, 1] (default 0)")
    d.add_argument("--straggler-work", type=float, nargs=2, default=(0.1, 1.0),
                   metavar=("LOW", "HIGH"),
                   help="share of its local steps a straggler completes (default 0.1 1.0)")
    d.add_argument("--straggler-mode", choices=["auto", "drop", "partial"], default="auto",
                   help="drop stragglers (FedAvg) or use their partial work (FedProx, FedNova); "
                        "auto: drop for fedavg, partial otherwise")
    from .compression import COMPRESSION_PARAMETERS
    d.add_argument("--compression", choices=list(COMPRESSION_PARAMETERS), default=None,
                   help="compress the clients' updates (topk with error feedback, randk, "
                        "quantize = QSGD); bytes up count what is sent")
    _add_table_args(d, COMPRESSION_PARAMETERS, "--compression", prefix="compression_")
    d.add_argument("--local-test-fraction", type=float, default=0.0,
                   help="hold out this share of each client's data and report the global "
                        "model's per-client accuracy (default 0: off)")
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
    train, _ = _load(args)
    p = partition(train.labels, args.scheme, args.clients, seed=args.seed, **params)
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
    from .simulation import Simulation, _check_int

    # everything that can be checked is checked before the data are loaded and trained on
    from . import attacks

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
    _check_int("rounds", args.rounds, 1)
    if args.target is not None and not (0 < args.target <= 1 and math.isfinite(args.target)):
        raise ValueError(f"--target must be a number in (0, 1]; got {args.target}")
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
    p = partition(train.labels, args.scheme, args.clients, seed=args.seed, **params)
    sim = Simulation(args.model, train, test, p, client_fraction=args.fraction,
                     local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr,
                     algorithm=alg, attack=attack, seed=args.seed, eval_every=args.eval_every,
                     engine=args.engine, eval_subset=args.eval_subset,
                     num_threads="auto" if args.threads is None else (args.threads or None),
                     dropout=args.dropout, stragglers=args.stragglers,
                     straggler_work=tuple(args.straggler_work),
                     straggler_mode=args.straggler_mode, compression=comp,
                     local_test_fraction=args.local_test_fraction)
    print(f"{sim.history.label}; {sim.clients_per_round} clients per round, "
          f"{sim.num_parameters:,} parameters, engine {sim.engine.name}")
    t0 = time.perf_counter()
    h = sim.run(args.rounds, target_accuracy=args.target, progress=not args.no_progress)
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
    if args.dropout or args.stragglers:
        print(f"clients: {int(h.reported.sum())} updates aggregated of "
              f"{sum(len(r.clients) for r in h.records)} sampled "
              f"({sum(len(r.dropped) for r in h.records)} dropped out, "
              f"{sum(len(r.stragglers) for r in h.records)} straggled, mode "
              f"{sim.straggler_mode})")
    if comp is not None:
        print(f"uploaded {h.bytes_up.sum() / 1e6:.2f} MB with {comp.label()} "
              f"({comp.bytes_up(sim.num_parameters):,} bytes per client instead of "
              f"{sim.num_parameters * 4:,})")
    if args.local_test_fraction and len(h):
        sp = h.client_spread()
        ok = np.isfinite(sp["mean"])
        if ok.any():
            i = int(np.flatnonzero(ok)[-1])
            print(f"per-client accuracy: mean {sp['mean'][i]:.4f}, 10th percentile "
                  f"{sp['p10'][i]:.4f}, 90th {sp['p90'][i]:.4f}, worst {sp['worst'][i]:.4f}")
    if args.target is not None:
        r = h.rounds_to(args.target)
        print(f"rounds to {args.target:g}: {r if r is not None else f'not reached in {len(h)}'}")
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
        plot_convergence(h, ax=a1, target=args.target)
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
