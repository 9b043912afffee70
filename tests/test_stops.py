"""A run can end five ways: all its rounds, its target accuracy reached, the user's stop, a
diverging loss, or an error in the caller's callback (issue 27). After each, the history
saves and loads unchanged (stop reason included), draws, and the simulation carries on
from where it stopped."""

from __future__ import annotations

import math

import pytest

from fedlab_widgets import History, Simulation, partition, plots


def _same(a: History, b: History) -> None:
    assert a.stop_reason == b.stop_reason and a.config == b.config and a.label == b.label
    assert len(a) == len(b)
    for r, s in zip(a.records, b.records):
        for k, v in vars(r).items():
            w = getattr(s, k)
            if isinstance(v, float) and math.isnan(v):
                assert isinstance(w, float) and math.isnan(w), k
            else:
                assert v == w, k


class Oops(RuntimeError):
    pass


def _run(kind, sim):
    if kind == "completed":
        sim.run(3)
    elif kind == "target":
        sim.run(10, target_accuracy=0.3)
    elif kind == "user":
        sim.run(10, callback=lambda rec: rec.round == 2 and sim.stop())
    elif kind == "diverged":
        sim.run(10)
    else:
        def fail(rec):
            if rec.round == 2:
                raise Oops("the plot could not be drawn")
        with pytest.raises(Oops):
            sim.run(10, callback=fail)


@pytest.mark.parametrize("kind", ["completed", "target", "user", "diverged", "callback error"])
def test_after_every_kind_of_stop_the_history_saves_loads_draws_and_the_run_goes_on(
        kind, train, test_set, tmp_path):
    small = train.subset(range(3000))
    parts = partition(small.labels, "iid", 10, seed=0)
    lr = 1e6 if kind == "diverged" else 0.1
    sim = Simulation("2nn", small, test_set.subset(range(500)), parts, client_fraction=0.3, lr=lr, seed=0)
    _run(kind, sim)
    h = sim.history
    expected = {"completed": None, "target": "target accuracy 0.3 reached at round 1",
                "user": "stopped by the user after round 2", "diverged": "diverged at round",
                "callback error": None}[kind]
    if kind == "diverged":
        assert h.diverged and h.stop_reason.startswith(expected)
    else:
        assert h.stop_reason == expected
    rounds = {"completed": 3, "target": 1, "user": 2, "callback error": 2}.get(kind, len(h))
    assert len(h) == rounds == sim.round
    back = History.load(h.save(tmp_path / "h.json"))
    _same(h, back)
    assert back.summary() == h.summary()
    plots.plot_convergence({"saved": back})
    if kind != "diverged":
        sim.run(1)               # the same simulation carries on: one more round, numbered on
        assert [r.round for r in sim.history.records] == list(range(1, rounds + 2))
        assert sim.history.stop_reason is None
