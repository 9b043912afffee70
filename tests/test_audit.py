"""The privacy audit (issue 24, first part): epsilon's lower bound against mechanisms whose
epsilon is known (randomised response exactly; the Gaussian mechanism through dp-accounting's
upper bound, which the audit must never exceed), the Clopper-Pearson bound below its point
estimate, and membership inference on a federation that overfits, at example and client level."""

from __future__ import annotations

import math

import dp_accounting as dpa
import numpy as np
import pytest
import torch

from fedlab_widgets import Simulation, get_model, partition
from fedlab_widgets.audit import (epsilon_lower_bound, epsilon_point, example_losses,
                                  membership_inference)


def test_randomised_response_proves_its_epsilon_and_the_bound_stays_below():
    for eps in (0.5, 1.0, 2.0):
        p = math.exp(eps) / (1 + math.exp(eps))            # says "member" truthfully with p
        assert epsilon_point(tpr=p, fpr=1 - p, delta=0.0) == pytest.approx(eps, abs=1e-12)
        rng = np.random.default_rng(int(eps * 10))
        n, los = 20_000, []
        for _ in range(200):
            tpr, fpr = rng.binomial(n, p) / n, rng.binomial(n, 1 - p) / n
            los.append(epsilon_lower_bound(tpr=tpr, fpr=fpr, delta=0.0, n=n))
            assert los[-1] <= epsilon_point(tpr=tpr, fpr=fpr, delta=0.0)
        los = np.array(los)
        # a 95% bound exceeds the truth in at most about 5% of runs (here both ends must miss)
        assert (los > eps).mean() <= 0.05, (eps, (los > eps).mean())
        assert np.median(los) > 0.85 * eps, (eps, np.median(los))


def test_the_bound_tightens_with_trials_and_loosens_with_confidence():
    a = [epsilon_lower_bound(tpr=0.6, fpr=0.1, delta=1e-5, n=n) for n in (100, 1000, 100_000)]
    assert a[0] < a[1] < a[2] < epsilon_point(tpr=0.6, fpr=0.1, delta=1e-5)
    b = [epsilon_lower_bound(tpr=0.6, fpr=0.1, delta=1e-5, n=1000, confidence=c) for c in (0.5, 0.95, 0.999)]
    assert b[0] > b[1] > b[2] > 0
    assert epsilon_lower_bound(tpr=0.6, fpr=0.1, delta=1e-5, n=(500, 5000)) > 0


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_auditing_the_gaussian_mechanism_never_exceeds_the_accountants_epsilon(sigma):
    delta = 1e-5
    acc = dpa.rdp.RdpAccountant()
    acc.compose(dpa.GaussianDpEvent(noise_multiplier=sigma))
    upper = acc.get_epsilon(delta)
    rng = np.random.default_rng(0)
    n = 50_000
    member, other = rng.normal(1.0, sigma, n), rng.normal(0.0, sigma, n)   # sensitivity 1
    best = 0.0
    for t in np.quantile(other, [0.5, 0.9, 0.99, 0.999]):                  # thresholds fixed in advance
        tpr, fpr = float((member >= t).mean()), float((other >= t).mean())
        best = max(best, epsilon_lower_bound(tpr=tpr, fpr=fpr, delta=delta, n=n))
    assert 0 < best <= upper, (sigma, best, upper)
    assert best > 0.25 * upper        # and not vacuous: the audit finds a good part of it


def test_bad_audit_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="tpr must be a number from 0 to 1; got 1.5"):
        epsilon_lower_bound(tpr=1.5, fpr=0.1, delta=0.0, n=10)
    with pytest.raises(ValueError, match="delta must be"):
        epsilon_point(tpr=0.5, fpr=0.1, delta=1.0)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        epsilon_lower_bound(tpr=0.5, fpr=0.1, delta=0.0, n=0)
    with pytest.raises(ValueError, match="confidence must be"):
        epsilon_lower_bound(tpr=0.5, fpr=0.1, delta=0.0, n=10, confidence=1.0)


@pytest.fixture(scope="module")
def overfit(train, test_set):
    """Ten clients of 30 digits, every client every round, 20 local epochs: memorising. With a
    pool of 600 other training digits (the same population) after the 300 members."""
    small = train.subset(torch.arange(300))
    parts = partition(small.labels, "iid", 10, seed=0)
    settings = dict(client_fraction=1.0, local_epochs=20, batch_size=10, lr=0.1)
    sim = Simulation("2nn", small, test_set.subset(torch.arange(1000)), parts, seed=0, **settings)
    sim.run(10)
    pool = train.subset(torch.arange(10_000, 10_600))
    ref = Simulation("2nn", pool.subset(torch.arange(300)), sim.test, partition(pool.labels[:300], "iid", 10, seed=1),
                     seed=1, **settings)
    ref.run(10)
    return sim, _joined(small, pool), ref.global_model


def test_membership_inference_finds_the_members_of_an_overfit_federation(overfit):
    sim, both, reference = overfit
    members = torch.arange(300)
    r = membership_inference(sim.global_model, members, torch.arange(600, 900), dataset=both)
    assert r.auc > 0.6 and r.tpr_at(0.01) > 0.01, r.auc
    # the loss scores are the model's own per-example cross-entropy
    with torch.no_grad():
        manual = torch.nn.functional.cross_entropy(sim.global_model(both.images[:5]), both.labels[:5],
                                                   reduction="none").double()
    assert torch.allclose(-torch.tensor(r.scores[:5]), manual, atol=1e-6)
    # calibrated by a reference model trained the same way on other digits (300-599): stronger
    rc = membership_inference(sim.global_model, members, torch.arange(600, 900), dataset=both,
                              attack="calibrated", reference=reference)
    assert rc.auc > r.auc, (rc.auc, r.auc)
    # no DP here, so nothing to contradict: the audit proves a positive, finite epsilon
    assert 0 < rc.epsilon_lower_bound(delta=1e-5) < math.inf


def test_client_level_membership_inference(overfit):
    sim, both, _ = overfit
    outside = [ix + 300 for ix in partition(both.labels[300:600], "iid", 10, seed=0).client_indices]
    r = membership_inference(sim.global_model, sim.partition.client_indices, outside, dataset=both,
                             level="client")
    assert r.level == "client" and len(r.scores) == 20
    assert r.auc > 0.9, r.auc


def test_membership_inference_refuses_what_it_cannot_do(overfit):
    sim = overfit[0]
    with pytest.raises(ValueError, match="attack must be one of loss, calibrated"):
        membership_inference(sim, torch.arange(5), torch.arange(5, 10), attack="lira")
    with pytest.raises(ValueError, match="needs a reference model"):
        membership_inference(sim, torch.arange(5), torch.arange(5, 10), attack="calibrated")
    with pytest.raises(ValueError, match="nonmembers: give at least one example"):
        membership_inference(sim, torch.arange(5), torch.arange(0))
    with pytest.raises(ValueError, match="level must be one of example, client"):
        membership_inference(sim, torch.arange(5), torch.arange(5, 10), level="writer")
    loss = example_losses(get_model("logreg", seed=0), sim.train, torch.arange(3))
    assert loss.shape == (3,) and (loss > 0).all()


def _joined(a, b):
    import dataclasses
    return dataclasses.replace(a, images=torch.cat([a.images, b.images]),
                               labels=torch.cat([a.labels, b.labels]), columns={})


# -- canary clients: auditing DP-FedAvg itself (Andrew et al., ICLR 2024) ---------------------------

def _canary_run(train, test_set, z, *, canaries, rounds=5):
    from fedlab_widgets import algorithms
    from fedlab_widgets.audit import with_canaries
    data = train.subset(torch.arange(540))
    real = partition(data.labels[:500], "iid", 5, seed=0)
    parts = with_canaries(real, data.labels, 40, first=500)
    alg = algorithms.get("dp-fedavg", clip_norm=0.5, noise_multiplier=z, client_steps=[canaries])
    sim = Simulation("logreg", data, test_set.subset(torch.arange(200)), parts, client_fraction=1.0,
                     batch_size=None, lr=0.5, seed=0, eval_every=rounds, algorithm=alg)
    start = sim.layout.flatten(list(sim.global_model.parameters())).clone()
    sim.run(rounds)
    return sim, start


def test_canaries_replace_their_updates_and_the_audit_stays_below_the_accountant(train, test_set):
    from fedlab_widgets.audit import CanaryClients, canary_audit
    canaries = CanaryClients(range(5, 45), norm=0.5, seed=0)
    found = {}
    for z in (0.05, 4.0):
        sim, start = _canary_run(train, test_set, z, canaries=canaries)
        r = canary_audit(sim, canaries, start)
        assert r.level == "client" and len(r.scores) == 80 and r.members.sum() == 40
        eps = sim.history.epsilon[-1]
        assert r.epsilon_lower_bound(delta=1e-5) <= eps, (z, eps)
        found[z] = r.auc
    # almost no noise: every canary stands out of the model's change; much noise: hardly any
    assert found[0.05] > 0.99 and found[4.0] < found[0.05] - 0.1, found
    # the directions depend on (client, seed) only, so the auditor can redraw them
    again = CanaryClients(range(5, 45), norm=0.5, seed=0)
    assert torch.equal(again.direction(7, 100), canaries.direction(7, 100))
    assert not torch.equal(CanaryClients([7], norm=0.5, seed=1).direction(7, 100), canaries.direction(7, 100))


def test_a_canary_update_is_exactly_its_direction_times_the_norm():
    from types import SimpleNamespace

    from fedlab_widgets.audit import CanaryClients
    c = CanaryClients([1], norm=0.25, seed=3)
    delta = torch.randn(3, 20, dtype=torch.float64)
    seen = {}
    updates = SimpleNamespace(clients=[0, 1, 2], delta=delta,
                              replace=lambda **kw: seen.update(kw) or SimpleNamespace(**kw))
    out = c(updates, None)
    assert torch.equal(out.delta[0], delta[0]) and torch.equal(out.delta[2], delta[2])
    assert torch.allclose(out.delta[1], 0.25 * c.direction(1, 20)) and abs(float(out.delta[1].norm()) - 0.25) < 1e-12


def test_canary_arguments_are_refused_by_name(train, test_set):
    from fedlab_widgets.audit import CanaryClients, canary_audit
    with pytest.raises(ValueError, match="norm must be"):
        CanaryClients([1], norm=0.0)
    with pytest.raises(ValueError, match="clients: give at least one canary client"):
        CanaryClients([], norm=1.0)
    sim = Simulation("logreg", train.subset(torch.arange(100)), test_set.subset(torch.arange(100)),
                     partition(train.labels[:100], "iid", 2, seed=0), seed=0)
    start = sim.layout.flatten(list(sim.global_model.parameters())).clone()
    with pytest.raises(ValueError, match="start: the model has not moved"):
        canary_audit(sim, CanaryClients([1], norm=1.0), start)


# -- example-level DP: DP-SGD (Opacus) inside each client ---------------------------------------------

def test_dp_sgd_fedavg_epsilon_is_the_rdp_accountants_and_the_run_repeats(train, test_set):
    from fedlab_widgets.example_dp import dp_sgd_fedavg
    small = train.subset(torch.arange(600))
    parts = partition(small.labels, "iid", 3, seed=0)     # 200 digits each, batch 50: q = 0.25, 4 steps/epoch
    kw = dict(rounds=2, model="logreg", batch_size=50, lr=0.5, noise_multiplier=1.0, max_grad_norm=1.0, seed=0)
    a = dp_sgd_fedavg(small, test_set.subset(torch.arange(300)), parts, **kw)
    b = dp_sgd_fedavg(small, test_set.subset(torch.arange(300)), parts, **kw)
    assert a.accuracy == b.accuracy
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    # every client took part in both rounds: 2 rounds x 1 epoch x 4 Poisson-sampled steps at q = 0.25
    event = dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.25, dpa.GaussianDpEvent(1.0)), 8)
    ref = dpa.rdp.RdpAccountant().compose(event).get_epsilon(1e-5)
    assert np.allclose(a.client_epsilon, a.epsilon) and a.epsilon == pytest.approx(ref, rel=0.05), (a.epsilon, ref)
    # more noise, a smaller epsilon; and the model still learns something at z = 1
    c = dp_sgd_fedavg(small, test_set.subset(torch.arange(300)), parts, **{**kw, "noise_multiplier": 3.0})
    assert c.epsilon < a.epsilon / 2 and a.accuracy[-1] > 0.3


def test_dp_sgd_fedavg_refuses_bad_settings_by_name(train, test_set):
    from fedlab_widgets.example_dp import dp_sgd_fedavg
    small = train.subset(torch.arange(100))
    parts = partition(small.labels, "iid", 2, seed=0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        dp_sgd_fedavg(small, test_set, parts, noise_multiplier=0.0)
    with pytest.raises(ValueError, match="delta"):
        dp_sgd_fedavg(small, test_set, parts, delta=1.0)
