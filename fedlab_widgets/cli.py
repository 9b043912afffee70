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

from .params import Param
from .flags import (ALIASES, NONE_WORDS, add_run_args, add_table_args, run_config,
                    run_flags, table_params)

import numpy as np

__all__ = ["main", "build_parser", "run_config", "run_flags", "ALIASES", "NONE_WORDS"]

PROG = "fedlab-widgets"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise SystemExit(_fail(f"{message} (see {self.prog} --help)", code=2))


def _fail(message: str, code: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


#: the run settings' older, shorter flags (both spellings work)
def _add_partition_args(p: argparse.ArgumentParser) -> None:
    from .partition import SCHEME_PARAMETERS, SCHEMES

    g = p.add_argument_group("data and partition")
    g.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    g.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: "
                   "$FEDLAB_DATA_DIR, then the repository's data/)")
    g.add_argument("--partition", dest="scheme", choices=SCHEMES, default="iid",
                   help="how the training data is split among clients (default: iid)")
    g.add_argument("--clients", type=int, default=None,
                   help="number of clients K (default: 100; with --partition writer, one per writer)")
    add_table_args(g, SCHEME_PARAMETERS, "--partition")
    from .features import FEATURE_PARAMETERS
    add_table_args(g, {"skew": FEATURE_PARAMETERS}, "feature")
    add_run_args(g, ["seed"])


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Federated learning on MNIST, from the command line.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="train a global model with FedAvg",
                         description="Train a global model with FedAvg and report its test accuracy.")
    from .models import MODELS
    run.add_argument("--model", choices=list(MODELS), default="2nn")
    _add_partition_args(run)
    g = run.add_argument_group("FedAvg")
    add_run_args(g, ["client_fraction", "local_epochs", "batch_size", "lr", "rounds",
                      "target_accuracy", "eval_every", "eval_subset", "engine", "num_threads"])
    g.add_argument("--out", default=None, help="write history.json and convergence.png here "
                   "(a folder; made if missing)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    from . import attacks
    from .algorithms import AGGREGATOR_PARAMETERS, NAMES, PARAMETERS

    a = run.add_argument_group("algorithm")
    a.add_argument("--algorithm", choices=NAMES, default="fedavg",
                   help="what the server does with the client updates (default: fedavg)")
    add_table_args(a, PARAMETERS, "--algorithm")
    a.add_argument("--aggregator", choices=list(AGGREGATOR_PARAMETERS), default=None,
                   help="replace the weighted mean, e.g. by a robust aggregator (default: the "
                        "algorithm's own)")
    add_table_args(a, AGGREGATOR_PARAMETERS, "--aggregator")
    a.add_argument("--dp", action="store_true",
                   help="differential privacy (clip, noise, epsilon) on any averaging algorithm; "
                        "--algorithm dp-fedavg is FedAvg with it")
    a.add_argument("--secure-aggregation", action="store_true",
                   help="mask the updates so that the server sees only their sum")
    from .secagg import SECAGG_PARAMETERS
    add_table_args(a, {"--secure-aggregation": SECAGG_PARAMETERS}, "with")
    d = run.add_argument_group("real devices")
    add_run_args(d, ["dropout", "stragglers", "straggler_work", "straggler_mode"])
    from .compression import COMPRESSION_PARAMETERS
    d.add_argument("--compression", choices=list(COMPRESSION_PARAMETERS), default=None,
                   help="compress the clients' updates (topk with error feedback, randk, "
                        "quantize = QSGD); bytes up count what is sent")
    add_table_args(d, COMPRESSION_PARAMETERS, "--compression", prefix="compression_")
    add_run_args(d, ["local_test_fraction"])
    t = run.add_argument_group("attack")
    t.add_argument("--attack", choices=attacks.NAMES, default=None,
                   help="make a fraction of the clients malicious (default: none)")
    add_table_args(t, attacks.PARAMETERS, "--attack", prefix="attack_")

    from .config import RUN_PARAMETERS   # a setting no group above names still gets its flag
    shown = {a.dest for a in run._actions}
    rest = [prm.name for prm in RUN_PARAMETERS if prm.name not in shown]
    if rest:
        add_run_args(run.add_argument_group("more run settings"), rest)

    sub.add_parser("classroom", add_help=False, help="a classroom federation: serve | join")
    part = sub.add_parser("partition", help="summarise a partition's heterogeneity",
                          description="Partition the training set and print how non-IID it is.")
    _add_partition_args(part)
    part.add_argument("--plot", default=None, help="save the label-distribution heatmap here (PNG)")
    part.add_argument("--rows", type=int, default=10, help="clients listed in the table (>= 0)")
    return parser


def _scheme_params(args) -> dict:
    from .partition import SCHEME_PARAMETERS

    return table_params(args, SCHEME_PARAMETERS, args.scheme, "--partition")


def _skew_params(args) -> dict:
    from .features import FEATURE_PARAMETERS

    return table_params(args, {"skew": FEATURE_PARAMETERS}, "skew", "feature skew")


def _federation(args, train, seed: int):
    """The partition the flags ask for, and the training data with its feature skew."""
    from .features import skew_features
    from .partition import partition

    skew = _skew_params(args)
    p = partition(train, args.scheme, args.clients, seed=seed, **_scheme_params(args))
    if skew.get("rotation", "none") != "none" or skew.get("noise"):
        train = skew_features(train, p, seed=seed, **skew)
    return p, train


def _load(args):
    from .datasets import load_fashion_mnist, load_mnist

    return (load_mnist if args.dataset == "mnist" else load_fashion_mnist)(args.data_dir)


def _cmd_partition(args) -> int:

    _scheme_params(args), _skew_params(args)   # checked before the data are loaded
    seed = run_config(args).seed
    Param("rows", 10, kind="int", lo=0, doc="clients listed in the table").check(args.rows)
    train, _ = _load(args)
    p, train = _federation(args, train, seed)
    print(p.with_images(train.images).describe(max_rows=args.rows))
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


def _named_things(args):
    """The algorithm, attack and compressor the flags describe (each flag checked by its table)."""
    from . import algorithms, attacks, compression

    agg = {} if args.aggregator is None else {"aggregator": args.aggregator}
    alg_tables = dict(algorithms.PARAMETERS)
    if args.dp and args.algorithm != "dp-fedavg":
        alg_tables[args.algorithm] += algorithms.DP_PARAMETERS
    sa = {"--secure-aggregation": algorithms.SECAGG_PARAMETERS}
    alg = algorithms.get(args.algorithm, **agg, differential_privacy=args.dp,
                         secure_aggregation=args.secure_aggregation,
                         **table_params(args, alg_tables, args.algorithm,
                                        "--algorithm" + (" with --dp" if args.dp else ""),
                                        hint="" if args.dp else " (add --dp for privacy)"),
                         **table_params(args, sa, "--secure-aggregation" if args.secure_aggregation
                                        else None, "--secure-aggregation",
                                        hint=": add --secure-aggregation"),
                         **table_params(args, algorithms.AGGREGATOR_PARAMETERS,
                                        args.aggregator or "mean", "--aggregator"))
    attack_params = table_params(args, attacks.PARAMETERS, args.attack, "--attack",
                                 prefix="attack_")
    attack = None if args.attack is None else attacks.get(args.attack, **attack_params)
    comp_params = table_params(args, compression.COMPRESSION_PARAMETERS, args.compression,
                               "--compression", prefix="compression_")
    comp = None if args.compression is None else compression.get(args.compression, **comp_params)
    return alg, attack, comp


def _check_out(folder: str | None) -> None:
    """--out: a folder that exists or can be made, and is writable (checked before training)."""
    if not folder:
        return
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {folder} is a file; give a folder (it is made if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {folder}: cannot make that folder ({e.strerror})") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"--out {folder}: that folder is not writable")


def _report(sim, h, cfg, secs: float) -> None:
    """What a run printed: accuracy, bytes, and whatever else it measured."""
    alg, comp = sim.algorithm, sim.compression
    print(f"final accuracy {h.final_accuracy:.4f} after {len(h)} rounds "
          f"(best {h.best_accuracy:.4f}), {secs:.1f} s, "
          f"{h.bytes_total[-1] / 1e6:.1f} MB communicated")
    if sim.devices is not None and len(h):
        late = sum(len(r.late) for r in h.records)
        print(f"simulated time {h.simulated_time[-1] / 3600:.3g} h on the {cfg.devices} devices"
              + (f", {late} clients missed the deadline" if sim.deadline is not None else "")
              + (f", mean staleness {np.nanmean(h.staleness):.2f}" if sim.asynchronous else ""))
    asr = h.attack_success[np.isfinite(h.attack_success)] if len(h) else []
    if len(asr):   # an attack that measures its success (a backdoor's)
        print(f"{sim.attack.name} attack success rate {asr[-1]:.4f}")
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


def _save(folder: str, h, cfg) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .plots import plot_convergence

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    h.save(out / "history.json")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    plot_convergence(h, ax=a1, target=cfg.target_accuracy)
    plot_convergence(h, ax=a2, metric="loss", legend=False)
    fig.tight_layout()
    fig.savefig(out / "convergence.png", dpi=110)
    print(f"wrote {out / 'history.json'} and {out / 'convergence.png'}")


def _cmd_run(args) -> int:
    from .simulation import Simulation

    # everything that can be checked is checked before the data are loaded and trained on
    cfg = run_config(args)
    _scheme_params(args), _skew_params(args)   # checked before the data are loaded
    alg, attack, comp = _named_things(args)
    _check_out(args.out)
    train, test = _load(args)
    p, train = _federation(args, train, cfg.seed)
    sim = Simulation(args.model, train, test, p, config=cfg, algorithm=alg, attack=attack,
                     compression=comp)
    print(f"{sim.history.label}; {sim.clients_per_round} clients per round, "
          f"{sim.num_parameters:,} parameters, engine {sim.engine.name}")
    t0 = time.perf_counter()
    h = sim.run(progress=not args.no_progress)
    _report(sim, h, cfg, time.perf_counter() - t0)
    if args.out:
        _save(args.out, h, cfg)
    return 1 if h.diverged else 0


def main(argv=None) -> int:
    """Entry point; returns the exit status (0 ok, 1 run diverged / data missing, 2 bad input)."""
    from .datasets import DatasetNotFoundError

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["classroom"]:
        from .classroom.cli import main as classroom_main
        return classroom_main(argv[1:])
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
