"""Vertical FL and split learning against their references (issue 25): split training equals
centralised SGD of the composed model step by step (float64); SplitFed equals FedAvg and
sequential split learning equals SGD over the clients in turn; the bytes counted on the wire
equal the cost formulas; the AUC against a naive pair count; the defences' noise against the
paper's formulas; and every bad setting refused with a message naming it."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fedlab_widgets import partition
from fedlab_widgets.vertical import (
    LABEL_HOLDER, SERVER, Channel, SplitLearning, VerticalFederation, direction_attack,
    fedavg_bytes_per_epoch, feature_blocks, norm_attack, perturb, roc_auc, roc_curve,
    split_bytes_per_epoch)
from fedlab_widgets.vertical.split import stages_of_2nn
from fedlab_widgets.models import count_parameters, get_model


@pytest.fixture(scope="module")
def tiny64(train, test_set):
    """2,000 training and 500 test digits in float64."""
    tr = train.subset(torch.arange(2000))
    tr = dataclasses.replace(tr, images=tr.images.double())
    te = test_set.subset(torch.arange(500))
    return tr, dataclasses.replace(te, images=te.images.double())


# -- feature blocks ---------------------------------------------------------------------------
@pytest.mark.parametrize("layout,parties", [("halves", 2), ("rows", 2), ("thirds", 3), ("quadrants", 4)])
def test_every_layout_splits_the_image_into_disjoint_blocks_that_cover_it(train, layout, parties):
    blocks = feature_blocks(layout)
    assert blocks.num_parties == parties and sum(blocks.sizes) == 784
    assert (blocks.masks.sum(0) == 1).all()
    x = train.images[:7]
    parts = blocks.split(x)
    back = torch.empty(7, 784)
    for p, part in enumerate(parts):
        back[:, blocks.indices(p)] = part
    assert torch.equal(back, x.reshape(7, -1))
    assert np.isnan(blocks.mask_image(x[0], 0)[~blocks.masks[0]]).all()


def test_halves_are_the_left_and_right_columns():
    left, right = feature_blocks("halves").masks
    assert left[:, :14].all() and not left[:, 14:].any() and right[:, 14:].all()


def test_bad_blocks_are_refused_with_what_is_wrong():
    m = np.zeros((2, 28, 28), bool)
    m[0, :, :14] = True
    with pytest.raises(ValueError, match="party 1 holds no features"):
        feature_blocks(m)
    m[1, :, 15:] = True
    with pytest.raises(ValueError, match=r"do not cover the image: 28 pixels .* row 0, column 14"):
        feature_blocks(m)
    m[1, :, 13:] = True
    with pytest.raises(ValueError, match=r"blocks overlap: 28 pixels .* parties 0, 1"):
        feature_blocks(m)
    with pytest.raises(ValueError, match="at least 2 parties"):
        feature_blocks(np.ones((1, 28, 28), bool))
    with pytest.raises(ValueError, match=r"shape \(parties, 28, 28\)"):
        feature_blocks(np.ones((2, 14, 14), bool))
    with pytest.raises(ValueError, match="layout must be one of halves, rows, thirds, quadrants"):
        feature_blocks("diagonal")
    with pytest.raises(ValueError, match="names: one name per party"):
        feature_blocks("halves", names=["a"])


# -- the wire ------------------------------------------------------------------------------------
def test_the_channel_copies_detaches_and_counts():
    ch = Channel()
    a = torch.ones(4, 3, requires_grad=True) * 2
    got = ch.send(a, sender="a", receiver="b", kind="activations")
    assert not got.requires_grad and got.data_ptr() != a.data_ptr() and torch.equal(got, a.detach())
    ch.send(torch.zeros(5, dtype=torch.float64), sender="b", receiver="a", kind="gradients")
    ch.tick()
    assert ch.bytes() == 48 + 40 == ch.steps[-1]
    assert ch.by_party() == {"a": {"sent": 48, "received": 40}, "b": {"sent": 40, "received": 48}}
    assert ch.bytes(kind="gradients", receiver="a") == 40 and ch.bytes(sender="c") == 0


# -- vertical FL: the reference ----------------------------------------------------------------
@pytest.mark.parametrize("layout,positive", [("halves", None), ("quadrants", None), ("thirds", 3)])
def test_split_training_equals_centralised_sgd_of_the_composed_model(tiny64, layout, positive):
    tr, te = tiny64
    fed = VerticalFederation(tr, te, layout=layout, positive=positive, lr=0.2, batch_size=32,
                             seed=1, dtype=torch.float64)
    central = fed.composed_model()
    opt = torch.optim.SGD(central.parameters(), lr=0.2)
    for step, idx in enumerate(fed.batches(0)[:8]):
        fed.step(idx)
        opt.zero_grad()
        out = central(tr.images[idx])
        fed.loss(out, fed.targets(tr.labels[idx])).backward()
        opt.step()
        ours = torch.cat([p.flatten() for p in fed.composed_model().parameters()])
        ref = torch.cat([p.detach().flatten() for p in central.parameters()])
        assert torch.allclose(ours, ref, rtol=0, atol=1e-13), (step, (ours - ref).abs().max())
    assert ours.abs().sum() > 0 and not torch.equal(ours, torch.cat(
        [p.flatten() for p in VerticalFederation(tr, layout=layout, positive=positive, seed=1,
                                                 dtype=torch.float64).composed_model().parameters()]))


def test_no_party_sees_another_partys_features_or_the_labels(tiny64):
    tr, _ = tiny64
    fed = VerticalFederation(tr, layout="quadrants", embedding=8, batch_size=50, seed=0)
    fed.step(torch.arange(50))
    rows = {(r["sender"], r["receiver"], r["kind"]): r["bytes"] for r in fed.channel.table()}
    # each party sends its activations to the label holder and gets its own gradient back, no more
    assert set(rows) == {(p, LABEL_HOLDER, "activations") for p in fed.parties} | {
        (LABEL_HOLDER, p, "gradients") for p in fed.parties}
    assert all(b == 50 * 8 * 4 for b in rows.values())


def test_bytes_per_epoch_are_activations_up_and_gradients_down(tiny64):
    tr, te = tiny64
    fed = VerticalFederation(tr, layout="thirds", embedding=5, batch_size=64, seed=0)
    fed.fit(1)
    assert fed.history[-1]["bytes"] == 2 * 3 * 2000 * 5 * 4      # a float32 model: 4 bytes an entry
    assert len(fed.channel.steps) == len(fed.batches(0)) == 32


def test_the_same_seed_gives_the_same_run_and_another_seed_another(tiny64):
    tr, te = tiny64
    runs = [VerticalFederation(tr, te, positive=0, defence="iso", seed=s).fit(2) for s in (4, 4, 5)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


# -- the label leakage attack -----------------------------------------------------------------
def test_roc_auc_equals_the_naive_pair_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 6, size=40).astype(float)
        y = rng.integers(0, 2, size=40)
        y[:2] = [0, 1]
        pos, neg = s[y == 1], s[y == 0]
        naive = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
        assert roc_auc(s, y) == pytest.approx(naive, abs=1e-12)
        fpr, tpr = roc_curve(s, y)
        assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
        assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
        assert np.trapezoid(tpr, fpr) == pytest.approx(naive, abs=1e-12)
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1.0, 2.0], [1, 1])


def test_the_attacks_read_labels_off_gradients_that_differ_in_norm_and_sign():
    g = torch.tensor([[2.0, 0.0], [-0.1, 0.0], [-0.2, 0.1], [1.5, 0.2]])
    y = np.array([1, 0, 0, 1])
    r = norm_attack(g, y)
    assert r.auc == 1.0 and r.tpr_at(0.0) == 1.0
    assert direction_attack(g, y).auc == 1.0
    with pytest.raises(ValueError, match="known must be the index of a positive"):
        direction_attack(g, y, known=1)


def test_the_defences_follow_the_papers_formulas():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(6, 50, generator=gen, dtype=torch.float64) * torch.arange(1, 7).double()[:, None]
    norms = g.norm(dim=1)
    top = norms.max()
    draws = torch.stack([perturb(g, "max_norm", generator=gen) for _ in range(20000)])
    # max_norm: every example's expected squared norm is the batch's largest, and its direction
    # stays on the line of g (a scalar factor)
    assert torch.allclose((draws ** 2).sum(-1).mean(0), top ** 2 * torch.ones(6, dtype=torch.float64),
                          rtol=0.05)
    cos = torch.nn.functional.cosine_similarity(draws, g.expand_as(draws), dim=-1).abs()
    assert torch.allclose(cos, torch.ones_like(cos))
    iso = torch.stack([perturb(g, "iso", noise=2.0, generator=gen) for _ in range(2000)]) - g
    assert iso.std().item() == pytest.approx(2.0 * top.item() / np.sqrt(50), rel=0.02)
    assert perturb(g, "none") is g and torch.equal(perturb(g, "iso", noise=0.0), g)
    a = perturb(g, "iso", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, perturb(g, "iso", generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="defence must be one of none, iso, max_norm"):
        perturb(g, "laplace")
    with pytest.raises(ValueError, match="noise must be a number >= 0"):
        perturb(g, "iso", noise=-1.0)


def test_the_norm_attack_succeeds_on_digit_zero_and_the_defence_stops_it(train, test_set):
    tr = train.subset(torch.arange(12000))
    open_ = VerticalFederation(tr, test_set, positive=0, seed=0)
    open_.fit(1)
    shut = VerticalFederation(tr, test_set, positive=0, defence="iso", noise=1.0, seed=0)
    shut.fit(1)
    steps = np.nanmean(open_.step_leak_aucs()[:50])
    assert steps > 0.85 and open_.history[-1]["leak_auc"] > 0.75, (steps, open_.history)
    assert shut.history[-1]["leak_auc"] < 0.62, shut.history
    # ... at a small price in the model's own test AUC
    assert shut.history[-1]["test_auc"] > open_.history[-1]["test_auc"] - 0.02
    assert open_.history[-1]["test_auc"] > 0.99


def test_the_attack_needs_a_binary_task_and_a_gradient(tiny64):
    tr, _ = tiny64
    with pytest.raises(ValueError, match="needs a binary task: pass positive=<digit>"):
        VerticalFederation(tr).leak()
    with pytest.raises(ValueError, match="no gradients received yet"):
        VerticalFederation(tr, positive=1).leak()


# -- split learning: the references --------------------------------------------------------------
def _params(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_sequential_split_learning_is_sgd_over_the_clients_in_turn(tiny64):
    tr, te = tiny64
    parts = partition(tr.labels, "shards", 4, seed=0)
    sl = SplitLearning(tr, te, parts, schedule="sequential", lr=0.1, batch_size=25, seed=2,
                       dtype=torch.float64)
    ref = get_model("2nn", seed=2).double()
    assert torch.equal(_params(sl.model()), _params(ref))        # the same start as Simulation's
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    batches = [idx for k in range(4) for idx in sl.batches(k, 0)]
    sl.fit(1)
    for idx in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(ref(tr.images[idx]), tr.labels[idx]).backward()
        opt.step()
    assert torch.allclose(_params(sl.model()), _params(ref), rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", ["vanilla", "u-shaped"])
def test_splitfed_is_fedavg_of_the_whole_model(tiny64, variant):
    tr, te = tiny64
    parts = partition(tr.labels, "dirichlet", 5, alpha=0.5, seed=0)
    sl = SplitLearning(tr, te, parts, schedule="splitfed", variant=variant, lr=0.1, batch_size=20,
                       seed=3, dtype=torch.float64)
    glob = get_model("2nn", seed=3).double()
    for epoch in range(2):
        new = torch.zeros_like(_params(glob))
        n = sum(len(ix) for ix in parts.client_indices)
        for k, ix in enumerate(parts.client_indices):
            local = copy.deepcopy(glob)
            opt = torch.optim.SGD(local.parameters(), lr=0.1)
            for idx in sl.batches(k, epoch):
                opt.zero_grad()
                nn.functional.cross_entropy(local(tr.images[idx]), tr.labels[idx]).backward()
                opt.step()
            new += len(ix) / n * _params(local)
        torch.nn.utils.vector_to_parameters(new, glob.parameters())
    sl.fit(2)
    assert torch.allclose(_params(sl.model()), _params(glob), rtol=0, atol=1e-12)


def test_u_shaped_learns_what_vanilla_learns_and_the_labels_stay_home(tiny64):
    tr, te = tiny64
    parts = partition(tr.labels, "iid", 3, seed=0)
    runs = {v: SplitLearning(tr, te, parts, variant=v, seed=0, dtype=torch.float64)
            for v in ("vanilla", "u-shaped")}
    for sl in runs.values():
        sl.fit(1)
    assert torch.allclose(_params(runs["vanilla"].model()), _params(runs["u-shaped"].model()),
                          rtol=0, atol=1e-12)
    kinds = {v: {r["kind"] for r in sl.channel.table()} for v, sl in runs.items()}
    assert "labels" in kinds["vanilla"] and "labels" not in kinds["u-shaped"]
    assert runs["u-shaped"].channel.bytes(kind="labels") == 0


@pytest.mark.parametrize("schedule,variant", [("sequential", "vanilla"), ("splitfed", "vanilla"),
                                              ("sequential", "u-shaped"), ("splitfed", "u-shaped")])
def test_the_bytes_counted_equal_the_cost_formula(train, test_set, schedule, variant):
    tr = train.subset(torch.arange(1500))
    parts = partition(tr.labels, "iid", 6, seed=0)
    sl = SplitLearning(tr, test_set.subset(torch.arange(100)), parts, schedule=schedule,
                       variant=variant, batch_size=50, seed=0)
    sl.fit(2)
    client = stages_of_2nn(get_model("2nn"))
    client_params = count_parameters(client[0]) + (count_parameters(client[2]) if variant == "u-shaped" else 0)
    per_epoch = split_bytes_per_epoch(1500, clients=6, cut_width=200, client_params=client_params,
                                      variant=variant)
    assert [h["bytes"] for h in sl.history] == [per_epoch, 2 * per_epoch]
    assert sl.channel.bytes(sender=SERVER, kind="weights") == sl.channel.bytes(receiver=SERVER, kind="weights")


def test_fedavg_bytes_per_epoch_equal_the_simulations(train, test_set):
    from fedlab_widgets import Simulation
    tr = train.subset(torch.arange(1000))
    parts = partition(tr.labels, "iid", 10, seed=0)
    h = Simulation("2nn", tr, test_set.subset(torch.arange(100)), parts, client_fraction=0.5,
                   local_epochs=2, batch_size=50, seed=0).run(2)
    # two rounds at C = 0.5, E = 2: two epochs of data
    assert h.bytes_total[-1] == 2 * fedavg_bytes_per_epoch(clients=10, params=199_210, local_epochs=2)


def test_bad_settings_are_refused_naming_the_setting(tiny64):
    tr, te = tiny64
    parts = partition(tr.labels, "iid", 2, seed=0)
    cases = [
        (lambda: VerticalFederation(tr, embedding=0), "embedding must be an integer from 1 to 1024; got 0"),
        (lambda: VerticalFederation(tr, lr=-1), "lr must be a number"),
        (lambda: VerticalFederation(tr, layout="diagonal"), "layout must be one of"),
        (lambda: VerticalFederation(tr, defence="laplace"), "defence must be one of none, iso, max_norm"),
        (lambda: VerticalFederation(tr, positive=10), "positive must be an integer from 0 to 9"),
        (lambda: VerticalFederation(tr).fit(0), "epochs must be an integer from 1 to 1000; got 0"),
        (lambda: VerticalFederation(tr).embeddings(tr, party=2), "party must be an integer from 0 to 1; got 2"),
        (lambda: SplitLearning(tr, te, parts, cut=3), "cut must be an integer from 1 to 2; got 3"),
        (lambda: SplitLearning(tr, te, parts, cut=2, variant="u-shaped"), "cut must be 1 with variant='u-shaped'"),
        (lambda: SplitLearning(tr, te, parts, schedule="parallel"), "schedule must be one of sequential, splitfed"),
        (lambda: SplitLearning(tr, te, [torch.arange(5), torch.arange(0)]), "every client must hold at least one sample"),
        (lambda: SplitLearning(tr, te, parts).fit(1, target_accuracy=2.0), "target_accuracy must be"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            make()


def test_split_learning_stops_at_its_target(train, test_set):
    tr = train.subset(torch.arange(3000))
    sl = SplitLearning(tr, test_set.subset(torch.arange(500)), partition(tr.labels, "iid", 3, seed=0),
                       schedule="sequential", seed=0)
    sl.fit(5, target_accuracy=0.5)
    assert len(sl.history) == 1 and sl.history[0]["accuracy"] >= 0.5


def test_together_the_parties_beat_each_party_alone(train, test_set):
    tr = train.subset(torch.arange(6000))
    fed = VerticalFederation(tr, test_set, layout="halves", seed=0)
    fed.fit(1)
    alone = [fed.alone(p) for p in range(2)]
    assert fed.history[-1]["accuracy"] > max(alone) + 0.02, (fed.history, alone)
    with pytest.raises(ValueError, match="alone\\(\\) scores on the test set"):
        VerticalFederation(tr).alone(0)


# -- every setting of both tables, refused with the table's message (as tests/test_validation.py) --
from fedlab_widgets.vertical import SPLIT_PARAMETERS, VERTICAL_PARAMETERS  # noqa: E402
from test_validation import expected, invalid_values  # noqa: E402


@pytest.mark.parametrize("prm,value", [pytest.param(p, v, id=f"{p.name}={v!r}"[:50])
                                       for p in VERTICAL_PARAMETERS for v in invalid_values(p)])
def test_vertical_federation_refuses_every_bad_setting(tiny64, prm, value):
    with pytest.raises(ValueError) as e:
        VerticalFederation(tiny64[0], **{prm.name: value})
    assert str(e.value).startswith(expected(prm)), str(e.value)


@pytest.mark.parametrize("prm,value", [pytest.param(p, v, id=f"{p.name}={v!r}"[:50])
                                       for p in SPLIT_PARAMETERS for v in invalid_values(p)])
def test_split_learning_refuses_every_bad_setting(tiny64, prm, value):
    parts = partition(tiny64[0].labels, "iid", 2, seed=0)
    with pytest.raises(ValueError) as e:
        SplitLearning(tiny64[0], tiny64[1], parts, **{prm.name: value})
    assert str(e.value).startswith(expected(prm)), str(e.value)


def test_custom_masks_are_a_layout(tiny64):
    m = np.zeros((3, 28, 28), bool)
    m[0, :10], m[1, 10:20], m[2, 20:] = True, True, True
    fed = VerticalFederation(tiny64[0], layout=m, embedding=4)
    assert fed.blocks.sizes == [280, 280, 224] and len(fed.bottoms) == 3


# -- the live demo ------------------------------------------------------------------------------
def test_the_demo_is_generated_from_the_table_and_runs(tiny64):
    import ipywidgets as W

    from fedlab_widgets.widgets import VerticalDemo

    tr, te = tiny64
    demo = VerticalDemo(tr, te, positive=0, defence="iso", epochs=2)
    assert isinstance(demo.controls["positive"], W.Dropdown)
    assert [v for _, v in demo.controls["positive"].options] == [None] + list(range(10))
    assert "from 0 to 100" in demo.controls["noise"].tooltip
    first = demo.image.value
    row = demo.run(blocking=True)
    assert row["epoch"] == 2 and "leak_auc" in row and demo.image.value != first
    assert "leak AUC" in demo.status.value and "0 vs rest" in demo.table.value
    demo.set(defence="none", layout="quadrants", positive=None)
    demo.run()
    assert demo.wait(60)
    assert len(demo.runs) == 2 and "quadrants, 10 digits" in demo.runs[-1]["label"]
    assert "leak_auc" not in demo.runs[-1]


def test_a_bad_value_in_the_demo_is_refused_and_loses_nothing(tiny64, monkeypatch):
    from fedlab_widgets.widgets import VerticalDemo

    tr, te = tiny64
    demo = VerticalDemo(tr, te)
    demo.run(blocking=True)
    picture, table = demo.image.value, demo.table.value
    with pytest.raises(ValueError, match="noise must be a number from 0 to 100; got -1"):
        demo.set(noise=-1, embedding=4)
    assert demo.controls["embedding"].value == 16            # nothing was set
    demo.controls["lr"].value = 0.0                         # the log slider holds its lowest value
    assert demo.settings()["lr"] == pytest.approx(1e-3)
    demo.controls["lr"].value = 0.1

    def no_memory(self, *a, **k):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(VerticalFederation, "fit", no_memory)   # a run that fails half-way
    assert demo.run(blocking=True) is None
    assert "RuntimeError: out of memory" in demo.message.value and not demo.run_button.disabled
    assert demo.image.value == picture and demo.table.value == table and len(demo.runs) == 1
    with pytest.raises(ValueError, match="epochs must be an integer from 1 to 20"):
        VerticalDemo(tr, te, epochs=0)
