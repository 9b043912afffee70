"""The notebook helpers in fedlab_widgets.experiments, on real MNIST at tiny settings."""

import pytest
import torch

from fedlab_widgets import evaluate, get_model, partition
from fedlab_widgets.experiments import (client_accuracy, format_table, local_train,
                                        per_class_accuracy, sweep, train_centralised)


def test_train_centralised_one_record_per_epoch_and_deterministic(train, test_set):
    a = train_centralised("2nn", train, test_set, epochs=2, batch_size=3000, lr=0.5, seed=3)
    b = train_centralised("2nn", train, test_set, epochs=2, batch_size=3000, lr=0.5, seed=3)
    assert list(a.rounds) == [1, 2] and list(a.accuracy) == list(b.accuracy)
    assert a.final_accuracy > 0.5 and a.bytes_total[-1] == 0
    assert all(r.samples == len(train) for r in a.records)
    assert evaluate(a.model, test_set)[0] == a.final_accuracy


def test_train_centralised_does_not_modify_a_given_model(train, test_set):
    m = get_model("2nn", seed=0)
    before = [p.clone() for p in m.parameters()]
    train_centralised(m, train, test_set, epochs=1, batch_size=6000, lr=0.1)
    assert all(torch.equal(x, y) for x, y in zip(before, m.parameters()))
    with pytest.raises(ValueError, match="epochs"):
        train_centralised("2nn", train, test_set, epochs=0)


def test_sweep_rows_and_table(train, test_set):
    parts = partition(train, "iid", 100, seed=0)
    rows = sweep(train, test_set, partition=parts, grid={"local_epochs": [1, 2]}, rounds=2,
                 target=0.5, seed=0, client_fraction=0.02, batch_size=100, lr=0.1)
    assert [r["local_epochs"] for r in rows] == [1, 2]
    assert [r["updates_per_round"] for r in rows] == [6, 12]
    assert all(r["rounds_to_target"] == r["history"].rounds_to(0.5) for r in rows)
    table = format_table(rows)
    assert "history" not in table and table.splitlines()[0].startswith("local_epochs")
    with pytest.raises(ValueError, match="both"):
        sweep(train, test_set, partition=parts, grid={"lr": [0.1]}, rounds=1, lr=0.1)


def test_client_accuracy_and_per_class_accuracy(train, test_set):
    parts = partition(train, "shards", 20, seed=0)
    model = get_model("2nn", seed=0)
    acc = client_accuracy(model, train, parts)
    assert acc.shape == (20,) and bool(((acc >= 0) & (acc <= 1)).all())
    # size-weighted mean of client accuracies = accuracy on the whole training set
    overall = evaluate(model, train)[0]
    assert float((acc * parts.sizes).sum() / parts.sizes.sum()) == pytest.approx(overall, abs=1e-9)
    pc = per_class_accuracy(model, test_set)
    counts = torch.bincount(test_set.labels, minlength=10).double()
    assert float((pc * counts).sum() / counts.sum()) == pytest.approx(evaluate(model, test_set)[0])


def test_local_train_on_two_digits_fits_them(train, test_set):
    parts = partition(train, "shards", 100, seed=0)
    start = get_model("2nn", seed=0)
    ix = parts.client_indices[0]
    local = local_train(start, train, ix, epochs=2, batch_size=50, lr=0.1, seed=0)
    own = train.labels[ix].unique()
    assert float(per_class_accuracy(local, test_set)[own].min()) > 0.9
    assert not torch.equal(next(start.parameters()), next(local.parameters()))


def test_format_table_formats_none_and_floats():
    assert format_table([{"a": 1, "b": None}, {"a": 2.5, "b": 0.123456}]) == "a    b\n1    -\n2.5  0.1235"
    assert format_table([]) == ""


def test_train_centralised_trains_on_one_thread_and_restores_the_setting(mnist):
    import dataclasses

    from fedlab_widgets.experiments import train_centralised

    seen = []

    class Spy(torch.nn.Module):     # records the thread setting while it trains
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(784, 10)

        def forward(self, x):
            seen.append(torch.get_num_threads())
            return self.fc(x.flatten(1))

    train, test = mnist
    small = dataclasses.replace(train, images=train.images[:500], labels=train.labels[:500])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        h = train_centralised(Spy(), small, test, epochs=1, batch_size=100, lr=0.1)
        assert set(seen[:5]) == {1} and torch.get_num_threads() == 2 and len(h) == 1
        seen.clear()
        train_centralised(Spy(), small, test, epochs=1, batch_size=100, num_threads=None)
        assert set(seen[:5]) == {2}
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="num_threads must be an integer >= 1"):
        train_centralised("logreg", small, test, num_threads=0)
