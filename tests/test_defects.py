"""Defects found by careful use (issue 27): each test failed before its fix."""

import math

import pytest
import torch

from fedlab_widgets import Simulation, algorithms, attacks, partition
from fedlab_widgets.algorithms.robust import trimmed_count, trimmed_mean
from fedlab_widgets.engines import ClientUpdates


def _updates(m, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ClientUpdates(clients=list(range(m)), delta=torch.randn(m, d, generator=g),
                         weight=torch.ones(m, dtype=torch.float64), steps=torch.ones(m, dtype=torch.int64),
                         loss=torch.zeros(m, dtype=torch.float64))


def test_trimmed_mean_trims_the_exact_product_of_ratio_and_clients():
    assert 0.29 * 100 < 29                                 # the float product falls short
    assert trimmed_count(0.29, 100) == 29                  # the rule: floor of the exact product
    assert trimmed_count(0.1, 30) == 3 and trimmed_count(0.3, 10) == 3 and trimmed_count(0.49, 100) == 49
    u = _updates(100)
    s = u.delta.sort(dim=0).values
    assert torch.equal(trimmed_mean(u, trim_ratio=0.29), s[29:71].mean(0))


def test_dp_without_clipping_is_a_huge_clip_norm():
    dp = algorithms.get("dp-fedavg", clip_norm=1e9, noise_multiplier=0.0)
    assert dp.dp.params["clip_norm"] == 1e9
    with pytest.raises(ValueError, match="clip_norm must be a number > 0; got nan"):
        algorithms.get("dp-fedavg", clip_norm=math.nan)


def test_qsgd_bucket_larger_than_the_model_costs_only_the_model():
    from fedlab_widgets.compression import qsgd

    v = torch.randn(2, 50)
    gens = [torch.Generator().manual_seed(k) for k in range(2)]
    q = qsgd(v, 8, 10 ** 9, gens)          # would allocate 2 x 10^9 floats before the fix
    assert q.shape == v.shape
    gens = [torch.Generator().manual_seed(k) for k in range(2)]
    assert torch.equal(q, qsgd(v, 8, 50, gens))     # one bucket of the whole model


def test_label_flip_mapping_is_checked_before_training_and_kept_in_the_history(train, test_set):
    parts = partition(train.labels, "iid", 10, seed=0)
    short = attacks.get("label_flip", fraction=0.5, mapping=[1, 0, 2])
    with pytest.raises(ValueError, match="mapping must have one entry per class: the data have 10"):
        Simulation("logreg", train, test_set, parts, attack=short)
    a = attacks.get("label_flip", fraction=0.5, mapping=[1, 0, 3, 2, 5, 4, 7, 6, 9, 8])
    b = attacks.get("label_flip", fraction=0.5)
    ca = Simulation("logreg", train, test_set, parts, attack=a)
    cb = Simulation("logreg", train, test_set, parts, attack=b)
    assert ca.config() != cb.config() and ca.history.label != cb.history.label
    assert ca.config()["attack_mapping"] == [1, 0, 3, 2, 5, 4, 7, 6, 9, 8]


def test_partition_refuses_fractional_num_classes_and_missing_labels():
    with pytest.raises(ValueError, match="num_classes"):
        partition(torch.arange(100) % 10, "iid", 10, num_classes=10.5)
    with pytest.raises(ValueError, match="labels"):
        partition(None, "iid", 10)


def test_partition_rows_must_not_be_negative(capsys, tmp_path):
    from fedlab_widgets import cli

    assert cli.main(["partition", "--data-dir", str(tmp_path), "--rows", "-1"]) == 2
    assert "rows must be an integer >= 0; got -1" in capsys.readouterr().err


def test_explorer_recovers_from_a_nan_typed_into_a_box(train):
    from fedlab_widgets.widgets import PartitionExplorer

    ex = PartitionExplorer(train, scheme="dirichlet", num_clients=10)
    with pytest.raises(ValueError, match="alpha must be a number > 0; got nan"):
        ex.update(alpha=math.nan)
    good = ex.partition
    ex.controls["seed"].value = -1                       # typed into the seed box
    assert "seed must be an integer from 0" in ex.message.value and ex.partition is good
    ex.controls["seed"].value = 3
    assert ex.message.value == "" and ex.partition.seed == 3


def test_run_flower_checks_its_arguments_before_any_process_starts(train, test_set):
    from fedlab_widgets import flower

    assert flower.FLOWER_AVAILABLE, "the test suite installs the flower extra"
    sim = Simulation("logreg", train, test_set, partition(train.labels, "iid", 2, seed=0),
                     client_fraction=1.0)
    before = set(flower.processes_with("FLWR_HOME="))
    with pytest.raises(ValueError, match="timeout must be a number > 0; got '10'"):
        flower.run_flower(sim, 1, timeout="10")
    assert set(flower.processes_with("FLWR_HOME=")) == before


def test_gradient_inversion_of_a_float32_model_works_in_float64(test_set):
    from fedlab_widgets import get_model, leakage

    model = get_model("lenet", seed=0)                  # float32, as get_model returns it
    assert next(model.parameters()).dtype == torch.float32
    x, y = test_set.images[7:8], test_set.labels[7:8]     # test digit 7, as the issue measured
    grads = leakage.client_gradient(model, x, y)
    images, labels = leakage.invert_gradients(model, grads, iterations=150, seed=0)
    assert images.dtype == torch.float32 and int(labels[0]) == int(y[0])
    mse = float(((images.double() - x.double()) ** 2).mean() / (x.double() ** 2).mean())
    assert mse < 1e-3, mse                                   # 5.6e7 before: diverged silently
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched


def test_the_privacy_helpers_refuse_nonsense(test_set):
    from fedlab_widgets import get_model, leakage

    model = get_model("lenet", seed=0).double()
    g = [torch.zeros_like(p) for p in model.parameters()]
    with pytest.raises(ValueError, match="max_norm must be a number > 0; got -1"):
        leakage.clip(g, -1)
    with pytest.raises(ValueError, match="std must be a number >= 0; got nan"):
        leakage.add_noise(g, math.nan)
    bad = [t.clone() for t in g]
    bad[0][0] = math.nan
    with pytest.raises(ValueError, match="gradients must be finite"):
        leakage.invert_gradients(model, bad)
    with pytest.raises(ValueError, match="label must be a class from 0 to 9; got 12"):
        leakage.invert_gradients(model, g, label=12)


def test_models_built_in_two_threads_at_once_get_their_own_seeds_weights():
    import threading

    from fedlab_widgets import get_model

    ref = {s: torch.cat([p.flatten() for p in get_model("2nn", seed=s).parameters()])
           for s in (1, 2)}
    wrong = []

    def build(s):
        for _ in range(10):
            w = torch.cat([p.flatten() for p in get_model("2nn", seed=s).parameters()])
            wrong.append(not torch.equal(w, ref[s]))

    threads = [threading.Thread(target=build, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wrong) == 20 and not any(wrong), f"{sum(wrong)} of 20 builds got other weights"


def test_an_unanswered_check_does_not_give_the_reference_away(capsys):
    from fedlab_widgets import solutions

    assert solutions.answer("01.1", None) == solutions.ANSWERS["01.1"]
    solutions.report(False, "correct: 31.87 MB per round")
    out = capsys.readouterr().out
    assert "31.9" not in out and "31.87" not in out and "hidden" in out
    assert solutions.answer("01.1", 30.0) == 30.0
    solutions.report(True, "not quite")
    assert capsys.readouterr().out == "not quite\n"


@pytest.mark.parametrize("alg,compress", [("scaffold", None), ("fedavg", "topk"), ("feddyn", None)])
def test_a_round_interrupted_by_ctrl_c_is_not_applied(train, test_set, alg, compress):
    """Ctrl-C in the middle of round 3 (after the client steps changed SCAFFOLD's control
    variates, FedDyn's state or the error-feedback residuals): nothing of round 3 stays, and
    going on gives exactly the uninterrupted seeded run."""
    from fedlab_widgets import compression
    tr, te = train.subset(torch.arange(6000)), test_set.subset(torch.arange(500))
    parts = partition(tr, "shards", 20, seed=0)
    fired = []

    def boom(delta, ctx):                  # a server step: after every client-side change
        if ctx.round == 3 and not fired:
            fired.append(True)
            raise KeyboardInterrupt
        return delta

    def make(steps):
        comp = None if compress is None else compression.get("topk", fraction=0.1,
                                                             error_feedback=True)
        return Simulation("2nn", tr, te, parts, client_fraction=0.3, batch_size=20, seed=1,
                          algorithm=algorithms.get(alg, server_steps=steps), compression=comp)

    ref = make([])
    ref.run(4)
    sim = make([boom])
    sim.run(2)
    with pytest.raises(KeyboardInterrupt):
        sim.run(2)
    assert sim.round == 2 and len(sim.history) == 2
    sim.run(2)
    assert sim.history.accuracy.tolist() == ref.history.accuracy.tolist()
    for a, b in zip(sim.global_model.parameters(), ref.global_model.parameters()):
        assert torch.equal(a, b)
