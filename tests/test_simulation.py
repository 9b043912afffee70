"""FedAvg against references: centralised SGD, determinism, accuracy on real MNIST."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedlab_widgets import History, Partition, Simulation, get_model, partition
from fedlab_widgets.simulation import RoundRecord


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def assert_same(a, b, **tol):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **tol)


@pytest.fixture(scope="module")
def one_client(train):
    """One client holding 3,000 random training images (a subset keeps the reference cheap)."""
    ix = partition(train.labels, "iid", 20, seed=0).client_indices[0]
    return Partition(client_indices=[ix], labels=train.labels, num_classes=10, scheme="iid",
                     params={}, seed=0)


@pytest.fixture(scope="module")
def data64(train, test_set):
    """The training and test sets in float64, where engines agree to rounding."""
    import dataclasses
    return tuple(dataclasses.replace(d, images=d.images.double()) for d in (train, test_set))


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_one_client_full_batch_equals_centralised_gradient_descent(data64, one_client, engine):
    """K=1, C=1, B=None: each round is E steps of full-batch gradient descent (float64, exact).

    In float32 the two differ by up to ~2e-4 after six steps at lr 0.5: the update
    travels as ``x + (x_k - x)``, whose rounding ReLU flips then amplify; in float64
    they agree to ~1e-16.
    """
    train, test = data64
    lr, rounds, epochs = 0.5, 3, 2
    sim = Simulation(get_model("2nn", seed=4).double(), train, test, one_client,
                     client_fraction=1.0, local_epochs=epochs, batch_size=None, lr=lr,
                     engine=engine)
    ref = get_model("2nn", seed=4).double()
    opt = torch.optim.SGD(ref.parameters(), lr=lr)
    x, y = train.images[one_client.client_indices[0]], train.labels[one_client.client_indices[0]]
    for _ in range(rounds * epochs):
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        opt.step()
    sim.run(rounds)
    assert_same(params(sim.global_model), params(ref), rtol=1e-10, atol=1e-12)
    assert sim.history.accuracy[-1] > 0.3  # six gradient steps: far above chance (0.1)


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_one_client_minibatch_equals_centralised_sgd_in_the_same_order(data64, one_client, engine):
    """K=1, C=1, B=32: FedAvg is plain minibatch SGD over the client's shuffled data."""
    train, test = data64
    sim = Simulation(get_model("2nn", seed=1).double(), train, test, one_client,
                     client_fraction=1.0, local_epochs=2, batch_size=32, lr=0.1, seed=1,
                     engine=engine)
    ref = get_model("2nn", seed=1).double()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for r in (1, 2):
        for epoch in range(2):
            order = sim.client_order(r, 0, epoch)
            for i in range(0, len(order), 32):
                b = order[i:i + 32]
                opt.zero_grad()
                F.cross_entropy(ref(train.images[b]), train.labels[b]).backward()
                opt.step()
    sim.run(2)
    assert_same(params(sim.global_model), params(ref), rtol=1e-10, atol=1e-12)


def test_weighted_average_of_client_models(train, test_set):
    """C=1, E=1, full batch: the global model is the size-weighted mean of the client models."""
    p = partition(train.labels, "quantity", 3, seed=0, sigma=1.0)
    sim = Simulation("2nn", train, test_set, p, client_fraction=1.0, batch_size=None, lr=0.3,
                     seed=0, engine="sequential")
    start = params(sim.global_model)
    clients = []
    for ix in p.client_indices:
        m = get_model("2nn", seed=0)
        loss = F.cross_entropy(m(train.images[ix]), train.labels[ix])
        grads = torch.autograd.grad(loss, list(m.parameters()))
        clients.append([w - 0.3 * g for w, g in zip(start, grads)])
    n = p.sizes.double() / p.sizes.sum()
    expected = [sum(float(n[k]) * clients[k][i] for k in range(3)) for i in range(len(start))]
    sim.run(1)
    assert_same(params(sim.global_model), expected, rtol=1e-4, atol=1e-6)


def test_2nn_iid_10_clients_reaches_95_percent_within_10_rounds(train, test_set):
    p = partition(train.labels, "iid", 10, seed=0)
    sim = Simulation("2nn", train, test_set, p, client_fraction=1.0, local_epochs=1, batch_size=10,
                     lr=0.05, seed=0)
    h = sim.run(10, target_accuracy=0.95)
    assert h.rounds_to(0.95) is not None and h.rounds_to(0.95) <= 10, h.accuracy
    assert h.stop_reason.startswith("target accuracy 0.95 reached")


def test_pathological_shards_are_worse_than_iid(train, test_set):
    settings = dict(client_fraction=0.1, local_epochs=1, batch_size=10, lr=0.05, seed=0)
    acc = {}
    for scheme in ("iid", "shards"):
        p = partition(train.labels, scheme, 100, seed=0)
        acc[scheme] = Simulation("2nn", train, test_set, p, **settings).run(10).accuracy
    # after the same 10 rounds, IID is clearly ahead, and ahead on average over the run
    assert acc["iid"][-1] - acc["shards"][-1] > 0.03, acc
    assert acc["iid"].mean() - acc["shards"].mean() > 0.05, acc


def test_same_seed_same_history_and_split_runs_agree(train, test_set):
    p = partition(train.labels, "dirichlet", 50, seed=0, alpha=0.5)
    kw = dict(client_fraction=0.1, batch_size=20, lr=0.05)
    a = Simulation("2nn", train, test_set, p, seed=7, **kw)
    ha = a.run(4)
    b = Simulation("2nn", train, test_set, p, seed=7, **kw)
    b.run(1)
    hb = b.run(3)  # continuing in two calls is the same run
    c = Simulation("2nn", train, test_set, p, seed=8, **kw).run(4)
    assert np.array_equal(ha.accuracy, hb.accuracy) and np.array_equal(ha.train_loss, hb.train_loss)
    assert [r.clients for r in ha.records] == [r.clients for r in hb.records]
    assert_same(params(a.global_model), params(b.global_model), rtol=0, atol=0)
    assert [r.clients for r in c.records] != [r.clients for r in ha.records]


def test_round_records_and_bytes(train, test_set):
    p = partition(train.labels, "iid", 20, seed=0)
    sim = Simulation("2nn", train, test_set, p, client_fraction=0.26, seed=0, eval_every=2)
    h = sim.run(3)
    assert sim.clients_per_round == 5  # round(0.26 * 20) = 5
    assert len(h) == 3 and list(h.rounds) == [1, 2, 3]
    assert all(len(r.clients) == 5 == len(set(r.clients)) for r in h.records)
    assert math.isnan(h.accuracy[0]) and np.isfinite(h.accuracy[1:]).all()  # eval every 2, and last
    assert h.bytes_down.tolist() == [199_210 * 4 * 5] * 3 == h.bytes_up.tolist()
    assert h.bytes_total[-1] == 3 * 2 * 199_210 * 4 * 5
    assert (h.seconds > 0).all() and h.records[0].samples == 5 * 3000
    assert np.isfinite(h.train_loss).all()


def test_fraction_rounds_to_at_least_one_client(train, test_set):
    p = partition(train.labels, "iid", 10, seed=0)
    sim = Simulation("2nn", train, test_set, p, client_fraction=0.01)
    assert sim.clients_per_round == 1


def test_diverging_run_stops_with_a_reason(train, test_set):
    p = partition(train.labels, "iid", 10, seed=0)
    sim = Simulation("2nn", train, test_set, p, client_fraction=0.2, lr=1e6, seed=0)
    h = sim.run(20)
    assert h.diverged and len(h) < 20
    assert "diverged at round" in h.stop_reason and "lr" in h.stop_reason
    assert all(torch.isfinite(q).all() for q in sim.global_model.parameters())


def test_stop_between_rounds_keeps_partial_history(train, test_set):
    p = partition(train.labels, "iid", 10, seed=0)
    sim = Simulation("2nn", train, test_set, p, client_fraction=0.1, seed=0)
    h = sim.run(10, callback=lambda rec: sim.stop() if rec.round == 2 else None)
    assert len(h) == 2 and "stopped" in h.stop_reason
    h = sim.run(1)  # a stopped simulation can go on
    assert len(h) == 3 and h.stop_reason is None


def test_rounds_generator_and_reset(train, test_set):
    p = partition(train.labels, "iid", 10, seed=0)
    sim = Simulation("2nn", train, test_set, p, client_fraction=0.1, seed=0)
    seen = [rec.round for rec in sim.rounds(3)]
    assert seen == [1, 2, 3] and isinstance(sim.history.records[0], RoundRecord)
    first = sim.history.accuracy.copy()
    sim.reset()
    assert len(sim.history) == 0 and sim.round == 0
    assert np.array_equal(sim.run(3).accuracy, first)


def test_module_model_is_copied_not_modified(train, test_set):
    model = get_model("2nn", seed=0)
    before = params(model)
    p = partition(train.labels, "iid", 10, seed=0)
    Simulation(model, train, test_set, p, client_fraction=0.1).run(1)
    assert_same(params(model), before, rtol=0, atol=0)


def test_history_json_round_trip(tmp_path, train, test_set):
    p = partition(train.labels, "iid", 10, seed=0)
    h = Simulation("2nn", train, test_set, p, client_fraction=0.1, eval_every=2).run(3)
    h2 = History.load(h.save(tmp_path / "h.json"))
    assert h2.label == h.label and h2.config == h.config and len(h2) == 3
    assert np.array_equal(h2.accuracy, h.accuracy, equal_nan=True)
    assert h2.records[1].clients == h.records[1].clients
    assert "final accuracy" in h2.summary()


@pytest.mark.parametrize("kwargs,match", [
    (dict(client_fraction=0), r"client_fraction must be a number in \(0, 1\]"),
    (dict(client_fraction=1.5), r"client_fraction must be a number in \(0, 1\]"),
    (dict(client_fraction=math.nan), r"client_fraction"),
    (dict(local_epochs=0), r"local_epochs must be an integer >= 1"),
    (dict(local_epochs=1.5), r"local_epochs must be an integer >= 1"),
    (dict(batch_size=0), r"batch_size must be an integer >= 1, or None for full batch"),
    (dict(lr=0), r"lr must be a number > 0"),
    (dict(lr=-0.1), r"lr must be a number > 0"),
    (dict(lr=math.inf), r"lr must be a number > 0; got inf"),
    (dict(lr=math.nan), r"lr must be"),
    (dict(eval_every=0), r"eval_every must be an integer >= 1"),
    (dict(engine="gpu"), r"engine must be one of auto, sequential"),
    (dict(lr="0.1"), r"lr must be a number > 0; got '0.1'"),
    (dict(client_fraction=True), r"client_fraction must be a number in \(0, 1\]; got True"),
    (dict(seed=-1), r"seed must be an integer from 0 to 2\*\*63 - 1; got -1"),
    (dict(seed=2 ** 70), r"seed must be an integer from 0 to 2\*\*63 - 1"),
    (dict(seed=1.0), r"seed must be an integer"),
    (dict(model="resnet"), r"model must be one of 2nn, cnn, small_cnn"),
])
def test_bad_settings_raise_value_error(train, test_set, kwargs, match):
    p = partition(train.labels, "iid", 10, seed=0)
    model = kwargs.pop("model", "2nn")
    with pytest.raises(ValueError, match=match):
        Simulation(model, train, test_set, p, **kwargs)


@pytest.mark.parametrize("rounds", [0, -1, 2.5])
def test_bad_rounds_raise_value_error(train, test_set, rounds):
    p = partition(train.labels, "iid", 10, seed=0)
    sim = Simulation("2nn", train, test_set, p)
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        sim.run(rounds)
    with pytest.raises(ValueError, match=r"target_accuracy must be a number in \(0, 1\]"):
        sim.run(1, target_accuracy=97)
    assert len(sim.history) == 0


def test_partition_of_other_labels_is_rejected(train, test_set):
    with pytest.raises(ValueError, match="partition must be made from the training labels"):
        Simulation("2nn", train, test_set, partition(test_set.labels, "iid", 10))


def test_missing_test_set_is_refused_before_training(train):
    p = partition(train.labels, "iid", 10, seed=0)
    with pytest.raises(ValueError, match="test must be a dataset with .images and .labels"):
        Simulation("2nn", train, None, p)


def test_eval_subset_gives_cheap_estimates_between_whole_test_set_evaluations(train, test_set):
    from fedlab_widgets import evaluate
    parts = partition(train.labels, "iid", 20, seed=0)
    sim = Simulation("2nn", train, test_set, parts, client_fraction=0.1, lr=0.05, seed=3,
                     eval_every=3, eval_subset=500)
    h = sim.run(5)
    assert [r.eval_size for r in h.records] == [500, 500, 10000, 500, 10000]
    assert h.estimated.tolist() == [True, True, False, True, False]
    assert np.isfinite(h.accuracy).all()
    # the subset is fixed by the seed; the last estimate is what evaluate() gives on it
    again = Simulation("2nn", train, test_set, parts, seed=3, eval_subset=500)
    assert torch.equal(again.test_subset.labels, sim.test_subset.labels)
    four = Simulation("2nn", train, test_set, parts, client_fraction=0.1, lr=0.05, seed=3)
    four.run(4)   # evaluating does not change training: this is the first run's model at round 4
    assert evaluate(four.global_model, sim.test_subset)[0] == h.accuracy[3]
    # estimates never count as the final accuracy or for rounds_to
    assert h.final_accuracy == h.accuracy[-1]
    fake = History(records=[RoundRecord(1, 0.99, 0.1, 0.1, [0], 0, 0, 0.1, eval_size=500),
                            RoundRecord(2, 0.90, 0.1, 0.1, [0], 0, 0, 0.1, eval_size=10000)])
    assert fake.rounds_to(0.95) is None and fake.final_accuracy == 0.90 and fake.best_accuracy == 0.90
    for bad in (0, 10001, 2.5, True, "100"):
        with pytest.raises(ValueError, match="eval_subset must be an integer"):
            Simulation("2nn", train, test_set, parts, eval_subset=bad)
    with pytest.raises(ValueError, match="eval_subset must be an integer from 1 to 10000, or None"):
        Simulation("2nn", train, test_set, parts, eval_subset=10001)


def test_thread_default_leaves_a_core_and_can_be_overridden(train, test_set, monkeypatch):
    from fedlab_widgets.threads import default_num_threads, physical_cores
    cores = physical_cores()
    assert default_num_threads() == max(1, min(4, cores - 1))
    parts = partition(train.labels, "iid", 10, seed=0)
    assert Simulation("2nn", train, test_set, parts).num_threads == default_num_threads()
    monkeypatch.setenv("FEDLAB_NUM_THREADS", "3")
    assert default_num_threads() == 3
    assert Simulation("2nn", train, test_set, parts).config()["num_threads"] == 3
    monkeypatch.setenv("FEDLAB_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="FEDLAB_NUM_THREADS"):
        default_num_threads()
    monkeypatch.delenv("FEDLAB_NUM_THREADS")
    for bad in (0, "two", 1.5):
        with pytest.raises(ValueError, match="num_threads must be an integer >= 1, or 'auto' or None"):
            Simulation("2nn", train, test_set, parts, num_threads=bad)
    assert Simulation("2nn", train, test_set, parts, num_threads=None).num_threads is None


def test_labels_must_be_one_integer_class_per_image(train, test_set):
    """One-hot or float labels are refused with a message naming them, not silently reshaped."""
    import dataclasses

    import torch

    parts = partition(train.labels, "iid", 10, seed=0)
    onehot = dataclasses.replace(train, labels=torch.nn.functional.one_hot(train.labels))
    with pytest.raises(ValueError, match=r"train.labels must be a 1-D tensor of integer class labels.*shape \(60000, 10\)"):
        Simulation("logreg", onehot, test_set, parts)
    floats = dataclasses.replace(test_set, labels=test_set.labels.float() + 0.5)
    with pytest.raises(ValueError, match=r"test.labels must be a 1-D tensor of integer class labels.*float32"):
        Simulation("logreg", train, floats, parts)
    short = dataclasses.replace(test_set, labels=test_set.labels[:10])
    with pytest.raises(ValueError, match="test.labels must hold one label per sample: 10 labels for 10000"):
        Simulation("logreg", train, short, parts)


def test_rounds_to_interpolates_on_the_monotone_curve():
    """McMahan et al.'s rounds to target: best accuracy so far, linear interpolation."""
    from fedlab_widgets.history import RoundRecord

    def hist(points):
        return History([RoundRecord(r, a, 0.5, 0.5, [0], 0, 0, 0.1) for r, a in points])

    h = hist([(1, 0.90), (2, 0.96), (3, 0.95), (4, 0.98)])
    assert h.rounds_to(0.97) == 4
    assert h.rounds_to(0.97, interpolate=True) == pytest.approx(3 + (0.97 - 0.96) / (0.98 - 0.96))
    assert h.rounds_to(0.99, interpolate=True) is None
    assert hist([(1, 0.98)]).rounds_to(0.97, interpolate=True) == 1.0
    # evaluated every 5 rounds: interpolate between the evaluated rounds
    assert hist([(5, 0.90), (10, 1.0)]).rounds_to(0.95, interpolate=True) == pytest.approx(7.5)


def test_history_refuses_a_target_in_percent_and_a_folder_as_file(tmp_path):
    from fedlab_widgets.history import RoundRecord

    h = History([RoundRecord(1, 0.9, 0.5, 0.5, [0], 0, 0, 0.1)])
    with pytest.raises(ValueError, match=r"target must be a test accuracy from 0 to 1 \(0.97, not 97\)"):
        h.rounds_to(97)
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        h.save(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        h.save(tmp_path / "missing" / "h.json")
    assert History.load(h.save(tmp_path / "h.json")).accuracy.tolist() == [0.9]
