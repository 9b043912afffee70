"""MNIST's writers (QMNIST), writer partitions, feature skew and the participation gap."""

import gzip
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fedlab_widgets import Simulation, datasets, load_mnist, partition
from fedlab_widgets.datasets import data_root
from fedlab_widgets.features import rotated, skew_features
from fedlab_widgets.gallery import plot_client_digits
from fedlab_widgets.generalisation import participation_gap, per_writer_accuracy
from fedlab_widgets.partition import feature_skew
from fedlab_widgets.writers import QMNIST_FILES, SERIES, WritersNotFoundError


# -- the data --------------------------------------------------------------------------------
def test_writers_on_both_datasets(train, test_set):
    w, s = train.writers, train.series
    assert w.shape == (60000,) and s.shape == (60000,) and test_set.writers.shape == (10000,)
    sizes = torch.bincount(torch.unique(w, return_inverse=True)[1])
    assert len(sizes) == 539 and int(sizes.min()) == 19 and int(sizes.max()) == 131
    assert int(sizes.median()) == 116
    assert len(test_set.writers.unique()) == 297
    assert not set(w.tolist()) & set(test_set.writers.tolist())      # other people
    assert set(s.unique().tolist()) == set(SERIES) == {0, 4}
    assert train.has_writers


def test_checksums_are_torchvisions():
    from torchvision.datasets import QMNIST
    ours = {url: md5 for _, url, md5 in QMNIST_FILES.values()}
    theirs = dict(QMNIST.resources["train"] + QMNIST.resources["test"])
    assert all(theirs[url] == md5 for url, md5 in ours.items())


def _root_with(tmp_path, qmnist: dict) -> Path:
    """A data folder with the real MNIST and the given QMNIST files (name -> bytes)."""
    real = data_root()
    (tmp_path / "MNIST").mkdir()
    os.symlink(real / "MNIST" / "raw", tmp_path / "MNIST" / "raw")
    if qmnist:
        (tmp_path / "QMNIST" / "raw").mkdir(parents=True)
        for name, data in qmnist.items():
            (tmp_path / "QMNIST" / "raw" / name).write_bytes(data)
    return tmp_path


def _real_qmnist() -> dict:
    folder = data_root() / "QMNIST" / "raw"
    return {f: (folder / f).read_bytes() for f, _, _ in QMNIST_FILES.values()}


def test_missing_files_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDLAB_OFFLINE", "1")
    tr, te = load_mnist(_root_with(tmp_path, {}))
    assert len(tr) == 60000 and not tr.has_writers      # MNIST itself still loads
    with pytest.raises(WritersNotFoundError) as e:
        partition(tr, "writer")
    msg = str(e.value)
    for f, _, _ in QMNIST_FILES.values():
        assert f in msg
    assert str(tmp_path / "QMNIST" / "raw") in msg and "FEDLAB_OFFLINE" in msg
    with pytest.raises(ValueError, match="QMNIST"):      # also a ValueError for front ends
        te.writers


def _gz_rows(data: bytes, edit) -> bytes:
    raw = bytearray(gzip.decompress(data))
    table = np.frombuffer(bytes(raw), dtype=">i4", offset=12).reshape(-1, 8).copy()
    edit(table)
    return gzip.compress(bytes(raw[:12]) + table.astype(">i4").tobytes())


@pytest.mark.parametrize("damage", ["labels", "truncated", "not-gzip"])
def test_wrong_file_is_refused_naming_it(tmp_path, damage):
    files = _real_qmnist()
    name = QMNIST_FILES["test"][0]
    if damage == "labels":
        def swap(t):
            t[[0, 1]] = t[[1, 0]]                          # two rows out of MNIST's order
        files[name] = _gz_rows(files[name], swap)
    elif damage == "truncated":
        files[name] = gzip.compress(gzip.decompress(files[name])[:5000])
    else:
        files[name] = b"not a gzip file"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr, te = load_mnist(_root_with(tmp_path, files))
    assert len(tr) == 60000 and any(name in str(w.message) for w in caught)
    with pytest.raises(WritersNotFoundError, match=name):
        te.writers
    with pytest.raises(WritersNotFoundError, match=name):
        partition(tr, "writer")


def test_load_with_writers_is_fast_warm(mnist):
    import time
    datasets._CACHE.clear()
    t0 = time.perf_counter()
    tr, _ = load_mnist()
    assert tr.has_writers
    assert time.perf_counter() - t0 < 5.0    # generous; bench/ prints the real figure


def test_subset_keeps_writers_in_step(train):
    ix = torch.tensor([5, 3, 59999])
    sub = train.subset(ix)
    assert torch.equal(sub.writers, train.writers[ix]) and torch.equal(sub.labels, train.labels[ix])
    import dataclasses
    bad = dataclasses.replace(train, images=train.images[:10], labels=train.labels[:10])
    with pytest.raises(ValueError, match="subset"):
        bad.writers


# -- writer partitions ------------------------------------------------------------------------
def test_one_client_per_writer(train):
    p = partition(train, "writer")
    assert p.num_clients == 539 and p.num_samples == 60000
    for k in (0, 100, 538):
        ix = p.client_indices[k]
        assert len(train.writers[ix].unique()) == 1
        w = int(train.writers[ix[0]])
        assert torch.equal(ix, torch.nonzero(train.writers == w).flatten())   # all of theirs
        assert list(p.client_writers[k]) == [w]


@pytest.mark.parametrize("k", [1, 7, 100, 538])
def test_groups_of_whole_writers(train, k):
    p = partition(train, "writer", k, seed=3)
    owner = torch.full((60000,), -1)
    for c, ix in enumerate(p.client_indices):
        owner[ix] = c
    assert int((owner < 0).sum()) == 0
    per_writer = {}
    for w, c in zip(train.writers.tolist(), owner.tolist()):
        per_writer.setdefault(w, set()).add(c)
    assert all(len(cs) == 1 for cs in per_writer.values())       # never split
    counts = [len(g) for g in p.client_writers]
    assert max(counts) - min(counts) <= 1 and sum(counts) == 539


def test_writer_partition_seeded(train):
    a, b = partition(train, "writer", 50, seed=1), partition(train, "writer", 50, seed=1)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != partition(train, "writer", 50, seed=2).fingerprint()


def test_populations(train):
    emp, stu = (partition(train, "writer", population=p) for p in ("employees", "students"))
    assert emp.num_clients == 289 and stu.num_clients == 250
    assert emp.num_samples + stu.num_samples == 60000
    assert set(train.series[torch.cat(stu.client_indices)].unique().tolist()) == {4}
    with pytest.raises(ValueError, match="from 1 to 250 .*among the students"):
        partition(train, "writer", 251, population="students")


def test_writer_bad_input(train, mnist):
    with pytest.raises(ValueError, match=r"num_clients must be an integer from 1 to 539 \(the number of writers"):
        partition(train, "writer", 540)
    with pytest.raises(ValueError, match=r"pass the dataset, as in partition\(train, 'writer'\)"):
        partition(train.labels, "writer")
    with pytest.raises(ValueError, match="population must be one of all, employees, students"):
        partition(train, "writer", population="kids")
    from fedlab_widgets import load_fashion_mnist
    fashion, _ = load_fashion_mnist()
    with pytest.raises(WritersNotFoundError, match="FashionMNIST has no writers.*load_mnist"):
        partition(fashion, "writer")


# -- feature skew -----------------------------------------------------------------------------
def test_feature_skew_sees_handwriting_not_labels(train):
    iid = partition(train, "iid", 539, seed=0)
    shards = partition(train, "shards", 539, seed=0)
    writer = partition(train, "writer")
    h = {n: p.heterogeneity() for n, p in (("iid", iid), ("shards", shards), ("writer", writer))}
    assert h["iid"]["feature_skew"] < 0.02                 # sampling noise removed
    assert h["writer"]["feature_skew"] > 0.3 > h["shards"]["feature_skew"]
    assert h["shards"]["label_tv"] > 0.7 > 0.1 > h["writer"]["label_tv"]
    assert "feature skew" in writer.describe()


def test_feature_skew_against_naive(train):
    """The vectorised number against a loop over clients and classes, in float64."""
    p = partition(train.labels[:3000], "dirichlet", 12, seed=0, alpha=1.0)
    x = train.images[:3000].double().reshape(3000, -1)
    y = p.labels
    mu = torch.stack([x[y == c].mean(0) for c in range(10)])
    var = torch.stack([x[y == c].var(0) for c in range(10)]).mean(1)
    num, den = 0.0, 0
    for ix in p.client_indices:
        for c in range(10):
            sel = ix[y[ix] == c]
            if len(sel):
                n, big = len(sel), int((y == c).sum())
                d2 = float(((x[sel].mean(0) - mu[c]) ** 2).mean())
                num += n * (d2 - float(var[c]) / n * (big - n) / (big - 1))
                den += n
    assert feature_skew(p, train.images[:3000]) == pytest.approx(max(num / den, 0) ** 0.5, rel=1e-4)


def test_rotations(train):
    p = partition(train, "iid", 8, seed=0)
    r = skew_features(train, p, rotation="four", seed=5)
    angles = r.feature_skew["client_angle"]
    assert sorted(angles) == [0, 0, 90, 90, 180, 180, 270, 270]
    for k, a in enumerate(angles):
        ix = p.client_indices[k][:50]
        want = torch.rot90(train.images[ix], -a // 90, dims=(2, 3))
        assert torch.equal(r.images[ix], want)
    assert torch.equal(r.labels, train.labels) and r.writers is train.writers
    assert not torch.equal(r.images, train.images) and train.feature_skew is None   # a copy
    again = skew_features(train, p, rotation="four", seed=5)
    assert torch.equal(again.images, r.images)
    assert skew_features(train, p, rotation="four", seed=6).feature_skew["client_angle"] != angles
    assert torch.equal(rotated(rotated(train, 90), 270).images, train.images)


def test_noise_levels(train):
    p = partition(train, "iid", 4, seed=0)
    r = skew_features(train, p, noise=0.8, seed=0)
    assert r.feature_skew["client_noise"] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    for k, want in enumerate(r.feature_skew["client_noise"]):
        ix = p.client_indices[k]
        got = float((r.images[ix] - train.images[ix]).std()) * train.std
        assert got == pytest.approx(want, rel=0.01)
    h = p.with_images(r.images).heterogeneity()
    assert h["pixel_spread_skew"] > 5 * p.heterogeneity()["pixel_spread_skew"]


def test_skew_bad_input(train):
    p = partition(train, "iid", 4, seed=0)
    with pytest.raises(ValueError, match="rotation must be one of none, four"):
        skew_features(train, p, rotation="45")
    with pytest.raises(ValueError, match="noise must be a number from 0 to 2"):
        skew_features(train, p, noise=3.0)
    other = partition(train, "iid", 4, seed=1)
    r = skew_features(train, p, rotation="four")
    with pytest.raises(ValueError, match="feature-skewed for another partition"):
        Simulation("2nn", r, train, other)


def test_engines_agree_on_a_rotated_federation(train, test_set):
    tr = train.subset(torch.arange(6000))
    tr = tr.__class__(**{**tr.__dict__, "images": tr.images.double()})
    te = test_set.subset(torch.arange(500))
    te = te.__class__(**{**te.__dict__, "images": te.images.double()})
    p = partition(tr, "writer", 20, seed=0)
    r = skew_features(tr, p, rotation="four", noise=0.3, seed=0)
    out = {}
    for engine in ("sequential", "vectorized"):
        from fedlab_widgets import get_model
        sim = Simulation(get_model("2nn", seed=0).double(), r, te, p, engine=engine,
                         client_fraction=0.3, batch_size=10, eval_every=1000)
        sim.run(2)
        out[engine] = torch.cat([q.detach().flatten() for q in sim.global_model.parameters()])
    assert torch.allclose(out["sequential"], out["vectorized"], rtol=0, atol=1e-12)


# -- clients the federation never saw --------------------------------------------------------
@pytest.fixture(scope="module")
def writer_run(train, test_set):
    sim = Simulation("2nn", train, test_set, partition(train, "writer", seed=0),
                     client_fraction=0.1, local_test_fraction=0.2, seed=0, eval_every=1000)
    sim.run(6)
    return sim


def test_participation_gap(writer_run):
    g = participation_gap(writer_run)
    took = set().union(*[set(r.clients) - set(r.dropped) for r in writer_run.history.records])
    seen_writers = {int(w) for k in took for w in writer_run.full_partition.client_writers[k]}
    assert set(g.took_part.writers.tolist()) <= seen_writers
    assert not set(g.not_sampled.writers.tolist()) & seen_writers
    assert len(g.took_part) + len(g.not_sampled) <= 539 and len(g.new) <= 297
    assert len(g.not_sampled) > 100                      # 6 rounds of 54 out of 539 clients
    assert 0.0 < g.took_part.accuracy.mean() <= 1.0
    assert g.gap == pytest.approx(g.took_part.accuracy.mean() - g.not_sampled.accuracy.mean())
    s = g.summary()
    assert set(s["new"]["by_series"]) == set(SERIES.values())
    assert "participation gap" in g.table()
    assert len(g.plot().axes) == 1


def test_per_writer_accuracy_against_naive(writer_run, test_set):
    m = writer_run.global_model
    ids, acc, n = per_writer_accuracy(m, test_set, min_digits=1)
    with torch.no_grad():
        right = (m(test_set.images).argmax(1) == test_set.labels)
    for w in ids[:20]:
        sel = test_set.writers == int(w)
        i = list(ids).index(w)
        assert n[i] == int(sel.sum()) and acc[i] == pytest.approx(float(right[sel].double().mean()))


def test_participation_gap_needs_held_out_digits(train, test_set):
    sim = Simulation("2nn", train, test_set, partition(train, "writer", 20, seed=0))
    with pytest.raises(ValueError, match="local_test_fraction > 0"):
        participation_gap(sim)


# -- everywhere the schemes go -----------------------------------------------------------------
def test_gallery(train):
    p = partition(train, "writer")
    fig = plot_client_digits(train, p, 3)
    assert len(fig.axes) == 20 and "writer" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="client must be an integer from 0 to 538"):
        plot_client_digits(train, p, 539)


def test_history_config_and_flower_export(train, test_set):
    from fedlab_widgets.flower.apps import simulation_of
    from fedlab_widgets.flower.export import app_run_config
    p = partition(train, "writer", 30, seed=2, population="employees")
    r = skew_features(train, p, rotation="four", seed=2)
    sim = Simulation("2nn", r, test_set, p, seed=2)
    cfg = sim.config()
    assert cfg["scheme"] == "writer" and cfg["partition_params"] == {"population": "employees"}
    assert cfg["feature_skew"] == {"rotation": "four", "noise": 0.0, "seed": 2}
    assert "rotation=four" in sim.default_label()
    flower = app_run_config(sim, 1)
    assert json.loads(flower["feature-skew"])["rotation"] == "four"
    again = simulation_of(flower)                       # what each SuperNode rebuilds
    assert torch.equal(again.train.images, r.images)
    assert again.full_partition.fingerprint() == p.fingerprint()


def test_cli_writer_partition(capsys):
    from fedlab_widgets.cli import main
    assert main(["partition", "--partition", "writer", "--rows", "1"]) == 0
    out = capsys.readouterr().out
    assert "539 clients" in out and "feature skew" in out
    assert main(["partition", "--partition", "writer", "--clients", "600"]) != 0
    assert "from 1 to 539" in capsys.readouterr().err


def test_explorer_shows_handwriting(train):
    from fedlab_widgets.widgets import PartitionExplorer
    e = PartitionExplorer(train, scheme="writer", num_clients=539)
    assert e.partition.num_clients == 539 and e.gallery.value
    before = e.gallery.value
    e.client.value = 7
    assert e.gallery.value != before
    e.update(rotation="four")
    assert e.data.feature_skew["rotation"] == "four" and "Feature skew" in e.stats.value
    kept = e.partition
    e.update(num_clients=600)                    # more clients than writers: shown, nothing lost
    assert "from 1 to 539" in e.error and e.partition is kept


def test_dashboard_writer_scheme(train, test_set):
    from fedlab_widgets.widgets import FedAvgDashboard
    d = FedAvgDashboard(train, test_set, scheme="writer", num_clients=539, rounds=1,
                        client_fraction=0.02, rotation="four")
    h = d.run(blocking=True)
    assert h.config["scheme"] == "writer" and h.config["feature_skew"]["rotation"] == "four"
    d.update(num_clients=600)
    assert d.run() is None                     # the Run button: a message, nothing trained
    assert "from 1 to 539" in d.message.value and len(d.histories) == 1


def test_explorer_on_labels_refuses_feature_skew(train):
    from fedlab_widgets.widgets import PartitionExplorer
    e = PartitionExplorer(train.labels, scheme="iid", num_clients=10)
    assert e.controls["rotation"].layout.display == "none" and not e.has_images
    e.update(rotation="four")
    assert "need the images" in e.error
