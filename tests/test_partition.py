"""Partition properties, checked with hypothesis over many random configurations."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedlab_widgets import SCHEMES, Partition, partition


def assert_valid(p: Partition, n: int):
    """Disjoint, non-empty client sets whose union is the whole dataset."""
    allix = torch.cat(p.client_indices)
    assert len(allix) == len(torch.unique(allix)), "a sample is held by two clients"
    assert all(len(ix) > 0 for ix in p.client_indices), "a client is empty"
    assert sorted(allix.tolist()) == list(range(n)), "the union is not the dataset"
    assert all(ix.dtype == torch.int64 and ix.dim() == 1 for ix in p.client_indices)


# Labels with 2..10 classes and uneven class sizes, like real data sets.
labels_st = st.integers(2, 10).flatmap(
    lambda c: st.lists(st.integers(0, c - 1), min_size=60, max_size=600).map(
        lambda xs: torch.tensor(xs + list(range(c)))))

common = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@common
@given(labels=labels_st, k=st.integers(1, 30), seed=st.integers(0, 2**31 - 1))
def test_iid_covers_dataset_with_equal_sizes(labels, k, seed):
    p = partition(labels, "iid", k, seed=seed)
    assert_valid(p, len(labels))
    assert int(p.sizes.max() - p.sizes.min()) <= 1


@common
@given(labels=labels_st, k=st.integers(1, 20), spc=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_shards_cover_dataset(labels, k, spc, seed):
    if k * spc > len(labels):
        with pytest.raises(ValueError, match="shards_per_client"):
            partition(labels, "shards", k, seed=seed, shards_per_client=spc)
        return
    p = partition(labels, "shards", k, seed=seed, shards_per_client=spc)
    assert_valid(p, len(labels))
    # each shard is a contiguous run of the label-sorted order, sizes differing by one at most
    shard = len(labels) // (k * spc)
    assert int(p.sizes.min()) >= spc * shard and int(p.sizes.max()) <= spc * (shard + 1)


@common
@given(labels=labels_st, k=st.integers(1, 8), alpha=st.floats(0.3, 100), seed=st.integers(0, 10**6))
def test_dirichlet_covers_dataset_and_meets_min_size(labels, k, alpha, seed):
    min_size = min(3, len(labels) // k)
    p = partition(labels, "dirichlet", k, seed=seed, alpha=alpha, min_size=min_size)
    assert_valid(p, len(labels))
    assert int(p.sizes.min()) >= min_size


@common
@given(labels=labels_st, k=st.integers(1, 30), data=st.data(), seed=st.integers(0, 10**6))
def test_label_count_gives_exactly_that_many_labels(labels, k, data, seed):
    c = int(labels.max()) + 1
    cpc = data.draw(st.integers(1, c))
    try:
        p = partition(labels, "label_count", k, seed=seed, classes_per_client=cpc)
    except ValueError as e:  # only when a label has fewer samples than clients holding it
        assert "use fewer clients" in str(e)
        assert int(torch.bincount(labels).min()) < math.ceil(k * cpc / c)
        return
    held = (p.label_counts() > 0).sum(1)
    assert held.tolist() == [cpc] * k
    if k * cpc >= c:
        assert_valid(p, len(labels))
    else:  # documented remainder rule: labels no client holds are left out
        allix = torch.cat(p.client_indices)
        assert len(allix) == len(torch.unique(allix))
        kept = set(labels[allix].tolist())
        assert len(kept) == k * cpc
        assert sorted(allix.tolist()) == sorted(np.flatnonzero(np.isin(labels, list(kept))).tolist())


@common
@given(labels=labels_st, k=st.integers(1, 10), sigma=st.floats(0, 3), seed=st.integers(0, 10**6))
def test_quantity_covers_dataset(labels, k, sigma, seed):
    p = partition(labels, "quantity", k, seed=seed, sigma=sigma, min_size=min(5, len(labels) // k))
    assert_valid(p, len(labels))


@common
@given(scheme=st.sampled_from(SCHEMES), seed=st.integers(0, 10**6))
def test_same_seed_same_partition_other_seed_differs(train, scheme, seed):
    data = train.subset(torch.arange(3000))    # a dataset: the writer scheme needs its writers
    a = partition(data, scheme, 20, seed=seed)
    b = partition(data, scheme, 20, seed=seed)
    c = partition(data, scheme, 20, seed=seed + 1)
    assert a.fingerprint() == b.fingerprint()
    assert all(torch.equal(x, y) for x, y in zip(a.client_indices, b.client_indices))
    assert a.fingerprint() != c.fingerprint()


def test_mcmahan_shards_on_mnist(train):
    """100 clients -> 200 shards of 300; every client holds 600 images of at most 4 digits."""
    p = partition(train.labels, "shards", 100, seed=0)
    assert_valid(p, 60000)
    assert p.sizes.tolist() == [600] * 100
    held = (p.label_counts() > 0).sum(1)
    assert int(held.max()) <= 4 and float((held <= 2).float().mean()) > 0.8


def test_heterogeneity_numbers(train):
    iid = partition(train.labels, "iid", 100, seed=0).heterogeneity()
    one = partition(train.labels, "label_count", 100, seed=0, classes_per_client=1).heterogeneity()
    shards = partition(train.labels, "shards", 100, seed=0).heterogeneity()
    dirs = [partition(train.labels, "dirichlet", 100, seed=0, alpha=a).heterogeneity()
            for a in (0.1, 1.0, 100.0)]
    quantity = partition(train.labels, "quantity", 100, seed=0, sigma=1.0).heterogeneity()
    assert iid["label_tv"] < 0.08 and iid["effective_classes"] > 9.5 and iid["size_cv"] == 0
    assert one["label_tv"] > 0.88 and one["effective_classes"] == pytest.approx(1.0)
    assert 0.7 < shards["label_tv"] < 0.9 and shards["effective_classes"] < 2.2
    # smaller alpha, more skew
    assert dirs[0]["label_tv"] > dirs[1]["label_tv"] > dirs[2]["label_tv"]
    assert dirs[2]["effective_classes"] > 9
    # quantity skew: sizes vary, labels do not
    assert quantity["size_cv"] > 0.5 and quantity["label_tv"] < 0.15


def test_dirichlet_severe_alpha_on_mnist(train):
    p = partition(train.labels, "dirichlet", 100, seed=0, alpha=0.1)
    assert_valid(p, 60000)
    assert int(p.sizes.min()) >= 10


def test_describe_is_compact_and_deterministic(train):
    p = partition(train.labels, "dirichlet", 30, seed=3, alpha=0.5)
    text = p.describe(max_rows=5)
    assert text == partition(train.labels, "dirichlet", 30, seed=3, alpha=0.5).describe(max_rows=5)
    assert "dirichlet(alpha=0.5), 30 clients" in text and "25 more clients" in text
    assert p.fingerprint() in text and len(text.splitlines()) == 11


def test_accepts_a_dataset_and_numpy_labels(train):
    a = partition(train, "iid", 5, seed=0)
    b = partition(train.labels.numpy(), "iid", 5, seed=0)
    assert a.fingerprint() == b.fingerprint() and a.num_samples == 60000


@pytest.mark.parametrize("kwargs,match", [
    (dict(scheme="zipf"), r"scheme must be one of iid, shards, dirichlet, label_count, quantity"),
    (dict(num_clients=0), r"num_clients must be an integer from 1 to the number of samples \(1000\)"),
    (dict(num_clients=1001), r"num_clients .* from 1 to .*1000"),
    (dict(num_clients=2.5), r"num_clients"),
    (dict(scheme="dirichlet", alpha=0), r"alpha must be a number > 0"),
    (dict(scheme="dirichlet", alpha=-1), r"alpha must be a number > 0"),
    (dict(scheme="dirichlet", alpha=math.inf), r"alpha must be a number > 0"),
    (dict(scheme="dirichlet", alpha=math.nan), r"alpha must be a number > 0"),
    (dict(scheme="dirichlet", num_clients=100, min_size=11), r"min_size must be an integer from 0 to 10"),
    (dict(scheme="dirichlet", num_clients=100, alpha=0.001, min_size=10), r"min_size=10 cannot be met"),
    (dict(scheme="shards", num_clients=100, shards_per_client=11), r"shards_per_client must be an integer from 1 to 10"),
    (dict(scheme="shards", shards_per_client=0), r"shards_per_client must be"),
    (dict(scheme="label_count", classes_per_client=0), r"classes_per_client must be an integer >= 1"),
    (dict(scheme="label_count", classes_per_client=11), r"classes_per_client must be an integer from 1 to 10"),
    (dict(scheme="quantity", sigma=-0.5), r"sigma must be a number from 0 to 10"),
    (dict(scheme="quantity", sigma=1000), r"sigma must be a number from 0 to 10; got 1000"),
    (dict(scheme="dirichlet", alpha="0.5"), r"alpha must be a number > 0; got '0.5'"),
    (dict(scheme="shards", shards_per_client=True), r"shards_per_client must be an integer"),
    (dict(seed=-1), r"seed must be an integer >= 0"),
    (dict(scheme="iid", alpha=0.5), r"unknown parameter\(s\) alpha for scheme 'iid'"),
])
def test_bad_input_names_parameter_and_range(kwargs, match):
    labels = torch.arange(1000) % 10
    kw = {"scheme": "iid", "num_clients": 10, **kwargs}
    kw.setdefault("seed", 0)
    with pytest.raises(ValueError, match=match):
        partition(labels, kw.pop("scheme"), kw.pop("num_clients"), **kw)


@pytest.mark.parametrize("labels", [torch.nn.functional.one_hot(torch.arange(100) % 10),
                                    torch.arange(100) * 1.5, torch.ones(10, 10, dtype=torch.int64)])
def test_labels_must_be_one_dimensional_integers(labels):
    with pytest.raises(ValueError, match="labels must be a 1-D tensor of integer class labels"):
        partition(labels, "iid", 5)


def test_extreme_quantity_skew_stays_a_partition():
    """sigma at the top of its range: no overflow, disjoint, complete, no empty client."""
    labels = torch.arange(60000) % 10
    p = partition(labels, "quantity", 100, sigma=10.0, seed=0)
    allix = torch.cat(p.client_indices)
    assert len(allix) == 60000 and len(allix.unique()) == 60000
    assert int(p.sizes.min()) >= 10


def test_hopeless_dirichlet_gives_up_with_advice_a_dashboard_user_can_act_on():
    labels = torch.arange(60000) % 10
    with pytest.raises(ValueError) as e:
        partition(labels, "dirichlet", 1000, alpha=0.01, seed=0)
    msg = str(e.value)
    assert "min_size=10 cannot be met" in msg and "at best 0" in msg
    assert "Raise alpha or use fewer clients" in msg and "num_clients slider" in msg
    draws = int(msg.split(" in ")[1].split(" Dirichlet draws")[0])
    assert draws <= 200
