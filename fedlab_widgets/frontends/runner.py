"""The training thread of a dashboard: simulations trained round by round, with callbacks.

A :class:`Runner` trains a list of simulations side by side (the main run and its
baselines), one round of each in turn, and calls ``on_round`` after every round, so a
front end can redraw; :meth:`Runner.stop` ends the run after the current round. It knows
nothing of widgets.

Examples
--------
>>> import torch
>>> from fedlab_widgets import Simulation, load_mnist, partition
>>> train, test = load_mnist()
>>> parts = partition(train.labels, "iid", 10, seed=0)
>>> sim = Simulation("logreg", train, test, parts, client_fraction=0.5)
>>> seen = []
>>> runner = Runner([sim], rounds=2, on_round=lambda r: seen.append(len(sim.history)))
>>> runner.run()        # in this thread; runner.start() trains in the background
>>> seen
[1, 2]
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

__all__ = ["Runner"]


class Runner:
    """Train ``sims`` for ``rounds`` rounds each, one round of each in turn.

    Parameters
    ----------
    sims : list of Simulation
    rounds : int
    on_round : callable, optional
        Called with the Runner after every round of any simulation.
    on_done : callable, optional
        Called with the Runner and the exception that ended the run (or None) when it
        ends, whatever ended it.
    """

    def __init__(self, sims: Sequence, rounds: int, *,
                 on_round: Callable[["Runner"], object] | None = None,
                 on_done: Callable[["Runner", BaseException | None], object] | None = None):
        self.sims = list(sims)
        self.rounds = rounds
        self.on_round, self.on_done = on_round, on_done
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def histories(self) -> list:
        return [sim.history for sim in self.sims]

    def stop(self) -> None:
        """End the run after the current round (its curve is kept)."""
        self._stop.set()
        for sim in self.sims:
            sim.stop()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> "Runner":
        """Train in a background thread (daemon: it never keeps the kernel from exiting)."""
        self.thread = threading.Thread(target=self.run, name="fedlab-dashboard", daemon=True)
        self.thread.start()
        return self

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def run(self) -> None:
        """Train in this thread until every simulation is done, diverged or stopped."""
        gens = [sim.rounds(self.rounds) for sim in self.sims]
        alive = [True] * len(self.sims)
        try:
            while any(alive):
                if self._stop.is_set():
                    for sim, a in zip(self.sims, alive):
                        if a and sim.history.stop_reason is None:
                            sim.history.stop_reason = f"stopped by the user after round {sim.round}"
                    break
                trained = False
                for i, g in enumerate(gens):
                    if not alive[i]:
                        continue
                    try:
                        next(g)
                    except StopIteration:
                        alive[i] = False
                    else:
                        trained = True
                        alive[i] = not self.sims[i].history.diverged
                if trained and self.on_round is not None:
                    self.on_round(self)
        except Exception as e:  # reported through on_done: the kernel and earlier runs stay
            self.error = e
        finally:
            for g in gens:
                g.close()
            if self.on_done is not None:
                self.on_done(self, self.error)
