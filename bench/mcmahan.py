"""Reproduce one row of McMahan et al. (2017), Table 1: the 2NN with E=1, B=10, C=0.1.

The paper ("Communication-Efficient Learning of Deep Networks from Decentralized
Data", AISTATS 2017) reports the number of communication rounds FedAvg needs to
reach 97% test accuracy on MNIST with K=100 clients:

=========================  =====
partition                  rounds
=========================  =====
IID                           87
pathological non-IID         664
=========================  =====

(pathological non-IID = sort by label, 200 shards of 300 images, 2 per client:
``partition(labels, "shards", 100, shards_per_client=2)``.)

The paper tuned the learning rate over a grid for every row; this script does the
same over a small grid, then reports the best lr (fewest rounds) beside the
paper's figure.

The package standardises pixels with the training mean and std; the paper does not
say it did, and its TensorFlow input pipeline most likely fed raw [0, 1] pixels.
``--pixels raw`` runs the same job on those, to show how much of the gap to the
paper's rounds that one preprocessing choice explains.

Usage::

    export FEDLAB_DATA_DIR=/work/shared/data FEDLAB_OFFLINE=1
    python bench/mcmahan.py                      # lr grid, IID and non-IID
    python bench/mcmahan.py --iid-only --lr 0.1  # one run, about a minute
    python bench/mcmahan.py --max-rounds 2000    # let slow non-IID runs finish
    python bench/mcmahan.py --pixels raw         # [0, 1] pixels, not standardised

The functions are importable (``tests/test_mcmahan.py`` uses
:func:`rounds_to_target`).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from fedlab_widgets import Simulation, load_mnist, partition
from fedlab_widgets.engines import ENGINES

__all__ = ["PAPER_ROUNDS", "LR_GRID", "CHOSEN_LR", "TARGET", "rounds_to_target", "main"]

TARGET = 0.97
#: McMahan et al. 2017, Table 1, 2NN, E=1, B=10, C=0.1.
PAPER_ROUNDS = {"iid": 87, "shards": 664}
LR_GRID = (0.02, 0.05, 0.1, 0.2)
#: The best lr of LR_GRID for the IID row (seed 0), see bench/README.md.
CHOSEN_LR = {"iid": 0.1, "shards": 0.1}

NUM_CLIENTS, CLIENT_FRACTION, LOCAL_EPOCHS, BATCH_SIZE = 100, 0.1, 1, 10


def make_simulation(scheme: str, lr: float, seed: int = 0, engine: str = "auto", *,
                    pixels: str = "normalised") -> Simulation:
    """The paper's setting: 2NN, K=100, C=0.1, E=1, B=10, on ``scheme`` ("iid" or "shards").

    The partition and the initial weights both come from ``seed``. ``pixels="raw"``
    undoes the package's standardisation, giving [0, 1] pixels.
    """
    if pixels not in ("normalised", "raw"):
        raise ValueError(f"pixels must be 'normalised' or 'raw', got {pixels!r}")
    train, test = load_mnist()
    if pixels == "raw":
        train, test = (dataclasses.replace(d, images=d.images * d.std + d.mean)
                       for d in (train, test))
    params = {"shards_per_client": 2} if scheme == "shards" else {}
    parts = partition(train.labels, scheme, NUM_CLIENTS, seed=seed, **params)
    return Simulation("2nn", train, test, parts, client_fraction=CLIENT_FRACTION,
                      local_epochs=LOCAL_EPOCHS, batch_size=BATCH_SIZE, lr=lr, seed=seed,
                      engine=engine)


def rounds_to_target(scheme: str = "iid", lr: float | None = None, max_rounds: int = 1000,
                     seed: int = 0, *, target: float = TARGET, engine: str = "auto",
                     pixels: str = "normalised", return_history: bool = False):
    """Communication rounds until the test accuracy first reaches ``target``.

    Parameters
    ----------
    scheme : {"iid", "shards"}
    lr : float, optional
        Client learning rate; defaults to ``CHOSEN_LR[scheme]``.
    max_rounds : int
        Give up after this many rounds.
    seed : int
    target : float, default 0.97
    engine : str, default "auto"
        "auto" uses the vectorised engine when it is registered.
    pixels : {"normalised", "raw"}
        The package's standardised pixels, or raw [0, 1] pixels.
    return_history : bool
        Also return the :class:`~fedlab_widgets.History` (with the wall time in
        ``history.seconds``).

    Returns
    -------
    int or None
        The first round at or above ``target``, None if it was not reached
        (or ``(rounds, history)`` with ``return_history``).
    """
    lr = CHOSEN_LR[scheme] if lr is None else lr
    sim = make_simulation(scheme, lr, seed, engine, pixels=pixels)
    history = sim.run(max_rounds, target_accuracy=target)
    rounds = history.rounds_to(target)
    return (rounds, history) if return_history else rounds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iid-only", action="store_true", help="skip the non-IID (shards) row")
    ap.add_argument("--lr", type=float, nargs="+", help=f"lr value(s) to try (default grid {LR_GRID})")
    ap.add_argument("--max-rounds", type=int, default=1000,
                    help="give up after this many rounds (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", default="auto", help="auto, sequential or vectorized")
    ap.add_argument("--pixels", choices=("normalised", "raw"), default="normalised",
                    help="standardised pixels (the package's) or raw [0, 1] pixels")
    args = ap.parse_args(argv)

    grid = tuple(args.lr) if args.lr else LR_GRID
    schemes = ["iid"] if args.iid_only else ["iid", "shards"]
    engine = args.engine if args.engine != "auto" else ("vectorized" if "vectorized" in ENGINES
                                                         else "sequential")
    print(f"McMahan et al. 2017, Table 1: 2NN, K={NUM_CLIENTS}, C={CLIENT_FRACTION}, "
          f"E={LOCAL_EPOCHS}, B={BATCH_SIZE}, target {TARGET:.0%}; engine {engine}, "
          f"seed {args.seed}, {args.pixels} pixels")
    rows = []
    for scheme in schemes:
        best = None
        for lr in grid:
            t0 = time.perf_counter()
            r, h = rounds_to_target(scheme, lr, args.max_rounds, args.seed, engine=engine,
                                    pixels=args.pixels, return_history=True)
            wall = time.perf_counter() - t0
            shown = r if r is not None else f">{len(h)}"
            print(f"  {scheme:6s} lr={lr:<5g} rounds {shown!s:>6}  best acc {h.best_accuracy:.4f}  "
                  f"{wall:7.1f} s ({wall / max(len(h), 1):.3f} s/round)"
                  + (f"  [{h.stop_reason}]" if h.diverged else ""), flush=True)
            if r is not None and (best is None or r < best[1]):
                best = (lr, r, wall)
        rows.append((scheme, best))

    print()
    print(f"{'partition':<22}{'lr':>6}{'ours':>8}{'paper':>8}{'ours/paper':>12}{'wall s':>9}")
    for scheme, best in rows:
        name = "IID" if scheme == "iid" else "non-IID (2 shards)"
        paper = PAPER_ROUNDS[scheme]
        if best is None:
            print(f"{name:<22}{'-':>6}{'>' + str(args.max_rounds):>8}{paper:>8}{'-':>12}{'-':>9}")
        else:
            lr, r, wall = best
            print(f"{name:<22}{lr:>6g}{r:>8}{paper:>8}{r / paper:>12.2f}{wall:>9.1f}")


if __name__ == "__main__":
    main()
