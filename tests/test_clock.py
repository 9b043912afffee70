"""Simulated time (issue 23): device profiles, availability, deadlines, client selection, and
asynchronous FL (FedAsync, FedBuff) on the event queue, each against its formula or a reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedlab_widgets import History, Simulation, algorithms, get_model, partition
from fedlab_widgets.asynchronous import staleness_weight
from fedlab_widgets.clock import HOUR, Devices
from fedlab_widgets.evaluation import client_losses


@pytest.fixture(scope="module")
def small(train, test_set):
    tr = train.subset(torch.arange(2000))
    return tr, test_set.subset(torch.arange(500)), partition(tr.labels, "iid", 10, seed=0)


def _table(n, **cols):
    base = {"speed": [100.0] * n, "down": [1e6] * n, "up": [1e6] * n}
    return Devices.from_table({**base, **cols})


# -- devices -------------------------------------------------------------------------------------

def test_presets_are_seeded_and_phones_have_a_slow_tail_and_nights():
    a, b = Devices.preset("phones", 1000, seed=0), Devices.preset("phones", 1000, seed=0)
    assert np.array_equal(a.speed, b.speed) and np.array_equal(a.window_start, b.window_start)
    assert not np.array_equal(a.speed, Devices.preset("phones", 1000, seed=1).speed)
    assert np.quantile(a.speed, 0.1) < 0.35 * np.median(a.speed)          # log-normal, sigma 1
    assert np.median(a.up) < np.median(a.down)                           # uplinks are slower
    night, noon = a.available(2 * HOUR).mean(), a.available(14 * HOUR).mean()
    assert night > 0.6 and noon < 0.3, (night, noon)
    u = Devices.preset("uniform", 5, seed=3)
    assert (u.speed == 100).all() and u.available(12.3 * HOUR).all()
    assert Devices.from_table(u.to_dict()).to_dict() == u.to_dict()
    rows = [{"speed": 1.0, "down": 2.0, "up": 3.0}, {"speed": 4.0, "down": 5.0, "up": 6.0}]
    assert Devices.from_table(rows).speed.tolist() == [1.0, 4.0]


def test_bad_device_tables_are_refused_by_name(small):
    tr, te, parts = small
    with pytest.raises(ValueError, match="speed must be a number > 0 .* got -5 for client 1"):
        _table(2, speed=[1.0, -5.0])
    with pytest.raises(ValueError, match="window_hours must be a number in \\(0, 24\\]"):
        _table(2, window_hours=[0.0, 5.0])
    with pytest.raises(ValueError, match="column up has 1 rows, speed has 2"):
        Devices.from_table({"speed": [1, 2], "down": [1, 2], "up": [1]})
    with pytest.raises(ValueError, match="needs columns speed, down, up; missing up"):
        Devices.from_table({"speed": [1], "down": [1]})
    with pytest.raises(ValueError, match="the table has 2 devices for 10 clients"):
        Simulation("logreg", tr, te, parts, devices=_table(2))
    with pytest.raises(ValueError, match="devices must be one of none, uniform, phones"):
        Simulation("logreg", tr, te, parts, devices="tablets")
    with pytest.raises(ValueError, match="devices='table' needs the table itself"):
        Simulation("logreg", tr, te, parts, devices="table")


# -- the clock of a round ------------------------------------------------------------------------

def test_a_rounds_time_is_the_slowest_clients_download_compute_and_upload(small):
    tr, te, parts = small
    speed = [50.0 + 10 * k for k in range(10)]
    down = [1e5 * (k + 1) for k in range(10)]
    up = [5e4 * (k + 1) for k in range(10)]
    sim = Simulation("logreg", tr, te, parts, client_fraction=0.5, local_epochs=2, seed=0,
                     devices=_table(10, speed=speed, down=down, up=up))
    h = sim.run(3)
    nbytes = 4 * sim.num_parameters
    for r in h.records:
        t = [nbytes / down[k] + 2 * len(parts.client_indices[k]) / speed[k] + nbytes / up[k] for k in r.clients]
        assert r.sim_seconds == pytest.approx(max(t), rel=1e-12)
    assert np.allclose(h.simulated_time, np.cumsum([r.sim_seconds for r in h.records]))
    assert np.isnan(Simulation("logreg", tr, te, parts).run(1).simulated_time).all()
    # compression: the uplink carries what is really sent
    c = Simulation("logreg", tr, te, parts, client_fraction=0.5, local_epochs=2, seed=0, compression="topk",
                   devices=_table(10, speed=speed, down=down, up=up))
    r = c.run(1).records[0]
    up_bytes = c.compression.bytes_up(c.num_parameters)
    t = [nbytes / down[k] + 2 * len(parts.client_indices[k]) / speed[k] + up_bytes / up[k] for k in r.clients]
    assert r.sim_seconds == pytest.approx(max(t), rel=1e-12) and r.sim_seconds < h.records[0].sim_seconds


def test_a_deadline_drops_the_clients_that_would_miss_it_before_they_train(small):
    tr, te, parts = small
    speed = [10.0] * 5 + [1000.0] * 5          # 200 digits: 20 s against 0.2 s, plus 2 x 0.03 s of bytes
    sim = Simulation("logreg", tr, te, parts, client_fraction=1.0, seed=0, deadline=5.0,
                     devices=_table(10, speed=speed))
    rec = sim.run(1).records[0]
    assert rec.late == [0, 1, 2, 3, 4] and set(rec.late) <= set(rec.dropped)
    assert rec.reported == 5 and rec.samples == 5 * 200 and rec.sim_seconds == 5.0
    assert "deadline=5s" in sim.history.label
    with pytest.raises(ValueError, match="deadline must be at least 0.263 s: no client can finish a round in 0.1 s"):
        Simulation("logreg", tr, te, parts, deadline=0.1, devices=_table(10, speed=speed))
    with pytest.raises(ValueError, match="deadline needs devices"):
        Simulation("logreg", tr, te, parts, deadline=10.0)
    with pytest.raises(ValueError, match="deadline must be a number > 0"):
        Simulation("logreg", tr, te, parts, deadline=-1.0, devices="uniform")


def test_offline_clients_never_report_and_the_available_selection_skips_them(small):
    tr, te, parts = small
    # clients 0-4 online 08:00-16:00, clients 5-9 always; the clock starts at midnight
    dev = _table(10, window_start=[8.0] * 5 + [0.0] * 5, window_hours=[8.0] * 5 + [24.0] * 5)
    uni = Simulation("logreg", tr, te, parts, client_fraction=0.5, seed=0, devices=dev).run(4)
    for r in uni.records:
        assert set(r.dropped) == {k for k in r.clients if k < 5} and r.reported == len(r.clients) - len(r.dropped)
    avail = Simulation("logreg", tr, te, parts, client_fraction=0.5, seed=0, devices=dev,
                       selection="available").run(4)
    assert all(set(r.clients) == set(range(5, 10)) and not r.dropped for r in avail.records)
    # nobody online: the round waits until the first window opens, and says why nothing changed
    night = _table(10, window_start=[8.0] * 10, window_hours=[8.0] * 10)
    sim = Simulation("logreg", tr, te, parts, client_fraction=0.5, seed=0, devices=night, selection="available")
    first = sim.run(1).records[0]
    assert first.note == "no client was available" and first.sim_seconds == 8 * HOUR
    assert sim.run(1).records[-1].reported == 5


def test_power_of_choice_keeps_the_highest_loss_candidates(small):
    tr, te, parts = small
    sim = Simulation("logreg", tr, te, parts, client_fraction=0.3, seed=0, selection="power_of_choice",
                     candidates=10)
    sim.run(2)
    x = sim.layout.flatten(list(sim.global_model.parameters())).unsqueeze(0)
    loss = client_losses(sim.global_model, sim.layout, tr, parts.client_indices, x)[0]
    expect = sorted(torch.argsort(loss, descending=True)[:3].tolist())
    assert sim.sample_clients(3) == expect
    # with d = m every candidate is kept: a size-weighted sample
    d3 = Simulation("logreg", tr, te, parts, client_fraction=0.3, seed=0, selection="power_of_choice",
                    candidates=3)
    assert len(d3.sample_clients(1)) == 3
    assert "selection=power_of_choice (d=10)" in sim.history.label
    with pytest.raises(ValueError, match="candidates must be an integer from 3 .* to 10 .*; got 11"):
        Simulation("logreg", tr, te, parts, client_fraction=0.3, selection="power_of_choice", candidates=11)
    with pytest.raises(ValueError, match="candidates is for selection power_of_choice or fast_first"):
        Simulation("logreg", tr, te, parts, candidates=5)


def test_fast_first_picks_the_fastest_and_never_learns_the_slow_ones(small):
    tr, te, parts = small
    speed = [10.0 * (k + 1) for k in range(10)]
    sim = Simulation("logreg", tr, te, parts, client_fraction=0.3, seed=0, selection="fast_first",
                     devices=_table(10, speed=speed))
    h = sim.run(3)
    assert all(r.clients == [7, 8, 9] for r in h.records)
    with pytest.raises(ValueError, match="selection='fast_first' needs devices"):
        Simulation("logreg", tr, te, parts, selection="fast_first")


# -- asynchronous FL -----------------------------------------------------------------------------

def test_staleness_weights_are_the_papers_formulas():
    for tau in range(0, 12):
        assert staleness_weight(tau, kind="polynomial", a=0.5) == pytest.approx(1 / math.sqrt(1 + tau))  # FedBuff
        assert staleness_weight(tau, kind="polynomial", a=2.0) == pytest.approx((tau + 1) ** -2.0)       # Xie et al.
        hinge = 1.0 if tau <= 4 else 1 / (10 * (tau - 4) + 1)
        assert staleness_weight(tau, kind="hinge", a=10, b=4) == pytest.approx(hinge)
        assert staleness_weight(tau, kind="constant") == 1.0


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_fedbuff_with_equal_clients_and_k_per_round_is_fedavg_bit_for_bit(small, engine):
    tr, te, parts = small
    kw = dict(client_fraction=0.4, seed=0, devices="uniform", engine=engine, eval_every=1)
    sync = Simulation("logreg", tr, te, parts, **kw)
    buff = Simulation("logreg", tr, te, parts, algorithm=algorithms.get("fedbuff"), **kw)
    a, b = sync.run(4), buff.run(4)
    assert [r.clients for r in a.records] == [r.clients for r in b.records]
    assert a.accuracy.tolist() == b.accuracy.tolist() and a.simulated_time.tolist() == b.simulated_time.tolist()
    assert all(torch.equal(p, q) for p, q in zip(sync.global_model.parameters(), buff.global_model.parameters()))
    assert (b.staleness == 0).all()


def test_fedasync_mixes_one_arrival_with_its_weight(small):
    tr, te, parts = small
    kw = dict(client_fraction=0.1, seed=0, devices="uniform")      # one client in flight: never stale
    x0 = Simulation("logreg", tr, te, parts, **kw)
    start = x0.layout.flatten(list(x0.global_model.parameters())).clone()
    x0.run(1)
    fedavg = x0.layout.flatten(list(x0.global_model.parameters()))
    mix = Simulation("logreg", tr, te, parts, algorithm=algorithms.get("fedasync", mixing=0.3), **kw)
    mix.run(1)
    got = mix.layout.flatten(list(mix.global_model.parameters()))
    assert torch.allclose(got, start + 0.3 * (fedavg - start), atol=1e-6)


def test_asynchronous_runs_record_staleness_and_agree_on_both_engines_in_float64(small64, tmp_path):
    tr, te = small64
    tr = tr.subset(torch.arange(2000))
    parts = partition(tr.labels, "iid", 10, seed=0)
    runs = {}
    for engine in ("sequential", "vectorized"):
        model = get_model("logreg", seed=0).double()
        sim = Simulation(model, tr, te, parts, algorithm=algorithms.get("fedbuff", buffer_size=2), client_fraction=0.5, seed=0,
                         devices="phones", engine=engine, eval_every=3)
        runs[engine] = (sim, sim.run(6))
    (s1, h1), (s2, h2) = runs["sequential"], runs["vectorized"]
    assert [r.clients for r in h1.records] == [r.clients for r in h2.records]
    assert h1.simulated_time.tolist() == h2.simulated_time.tolist()
    for p, q in zip(s1.global_model.parameters(), s2.global_model.parameters()):
        assert torch.allclose(p, q, atol=1e-10)
    assert all(len(r.clients) == 2 and len(r.staleness) == 2 for r in h1.records)
    assert np.nanmax(h1.staleness) > 0              # phones of different speeds: some arrive late
    back = History.load(h1.save(tmp_path / "fedbuff-history.json"))
    assert [r.staleness for r in back.records] == [r.staleness for r in h1.records]
    assert back.simulated_time.tolist() == h1.simulated_time.tolist()


def test_asynchronous_runs_refuse_what_they_cannot_do(small):
    tr, te, parts = small
    with pytest.raises(ValueError, match="fedbuff needs devices"):
        Simulation("logreg", tr, te, parts, algorithm="fedbuff")
    with pytest.raises(ValueError, match="fedasync cannot be combined with deadline"):
        Simulation("logreg", tr, te, parts, algorithm="fedasync", devices="uniform", deadline=100.0)
    with pytest.raises(ValueError, match="cannot be combined with differential privacy"):
        Simulation("logreg", tr, te, parts, devices="uniform",
                   algorithm=algorithms.get("fedbuff", differential_privacy=True, clip_norm=1.0))
    with pytest.raises(ValueError, match="buffer_size must be an integer from 1 to 10"):
        Simulation("logreg", tr, te, parts, devices="uniform", algorithm=algorithms.get("fedbuff", buffer_size=11))
    with pytest.raises(ValueError, match="staleness must be one of constant, polynomial, hinge"):
        algorithms.get("fedasync", staleness="linear")


def test_an_interrupted_asynchronous_round_is_not_applied(small, monkeypatch):
    tr, te, parts = small
    kw = dict(algorithm=algorithms.get("fedbuff", buffer_size=2), client_fraction=0.5, seed=0, devices="phones")
    ref = Simulation("logreg", tr, te, parts, **kw)
    ref.run(4)
    sim = Simulation("logreg", tr, te, parts, **kw)
    sim.run(2)
    real, calls = sim.engine.train_clients, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sim.engine, "train_clients", interrupted)
    for _ in range(3):   # a round may need no training (its reports were already in flight)
        try:
            sim.run(1)
        except KeyboardInterrupt:
            break
    monkeypatch.setattr(sim.engine, "train_clients", real)
    sim.run(4 - sim.round)
    assert all(torch.equal(p, q) for p, q in zip(ref.global_model.parameters(), sim.global_model.parameters()))
    assert ref.history.simulated_time.tolist() == sim.history.simulated_time.tolist()


def test_the_flower_export_refuses_the_simulated_clock_with_its_reason(small):
    from fedlab_widgets.flower.export import check_exportable
    tr, te, parts = small
    with pytest.raises(ValueError, match="simulated devices, deadlines and client selection"):
        check_exportable(Simulation("logreg", tr, te, parts, devices="phones"))
    with pytest.raises(ValueError, match="fedbuff is asynchronous"):
        check_exportable(Simulation("logreg", tr, te, parts, devices="uniform", algorithm="fedbuff"))


def test_the_cli_runs_on_the_clock_and_says_its_simulated_time(capsys, tmp_path):
    from fedlab_widgets.cli import main
    code = main(["run", "--model", "logreg", "--clients", "20", "--rounds", "2", "--devices", "uniform",
                 "--algorithm", "fedbuff", "--buffer-size", "2", "--fraction", "0.2"])
    out = capsys.readouterr().out
    assert code == 0 and "simulated time" in out and "mean staleness" in out, out
    assert main(["run", "--model", "logreg", "--rounds", "1", "--deadline", "5"]) == 2
    assert "deadline needs devices" in capsys.readouterr().err
