import matplotlib.pyplot as plt
import numpy as np
import pytest

from fedlab_widgets import Simulation, partition
from fedlab_widgets.plots import plot_client_sizes, plot_convergence, plot_label_distribution, plot_partition


@pytest.fixture(scope="module")
def parts(train):
    return partition(train.labels, "dirichlet", 30, seed=0, alpha=0.3)


@pytest.fixture(scope="module")
def histories(train, test_set):
    p = partition(train.labels, "iid", 10, seed=0)
    a = Simulation("2nn", train, test_set, p, client_fraction=0.1, lr=0.05, seed=0).run(3)
    b = Simulation("2nn", train, test_set, p, client_fraction=0.2, lr=0.05, seed=0).run(2)
    return a, b


def test_label_distribution_heatmap_and_bars_draw_on_given_axes(parts):
    fig, (a1, a2) = plt.subplots(1, 2)
    assert plot_label_distribution(parts, ax=a1) is fig
    img = a1.images[0].get_array()
    assert img.shape == (10, 30) and np.array_equal(np.asarray(img).T, parts.label_counts().numpy())
    assert plot_label_distribution(parts, ax=a2, kind="bars", max_clients=12) is fig
    assert len(a2.patches) == 10 * 12
    with pytest.raises(ValueError, match="kind must be"):
        plot_label_distribution(parts, kind="pie")
    plt.close("all")


def test_client_sizes_and_partition_figure(parts):
    fig = plot_client_sizes(parts, sort=True)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == sorted(parts.sizes.tolist(), reverse=True)
    fig2 = plot_partition(parts)
    assert len(fig2.axes) == 3  # heatmap, sizes, shared colorbar
    plt.close("all")


def test_convergence_overlays_labelled_runs_with_target(histories):
    a, b = histories
    fig = plot_convergence({"C=0.1": a, "C=0.2": b}, target=0.9)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["C=0.1", "C=0.2", "target 0.9"]
    assert np.allclose(ax.lines[0].get_ydata(), a.accuracy)
    fig2, ax2 = plt.subplots()
    assert plot_convergence([a, b], metric="loss", ax=ax2, x="megabytes") is fig2
    assert np.allclose(ax2.lines[0].get_xdata(), a.bytes_total / 1e6)
    with pytest.raises(ValueError, match="metric must be one of accuracy, loss, train_loss"):
        plot_convergence(a, metric="f1")
    plt.close("all")


def test_partition_heatmap_shows_label_shares_on_a_fixed_scale():
    """Dirichlet(100) must look uniform and quantity skew must not look like label skew."""
    import torch
    from fedlab_widgets import partition
    labels = torch.arange(20000) % 10
    for p in (partition(labels, "dirichlet", 20, alpha=100.0, seed=0),
              partition(labels, "quantity", 20, sigma=1.5, seed=0)):
        fig = plot_partition(p)
        im = fig.axes[0].images[0]
        assert im.get_clim() == (0.0, 1.0)
        shares = im.get_array()
        assert abs(float(shares.mean()) - 0.1) < 1e-9 and float(shares.max()) < 0.25
    skewed = plot_partition(partition(labels, "shards", 20, seed=0)).axes[0].images[0].get_array()
    assert float(skewed.max()) > 0.45


def test_partition_figure_says_how_many_clients_it_draws():
    import torch

    from fedlab_widgets import partition
    from fedlab_widgets.plots import plot_partition

    p = partition(torch.arange(6000) % 10, "dirichlet", 100, alpha=0.5, seed=0)
    assert "client (first 50 of 100)" in [a.get_xlabel() for a in plot_partition(p).axes]
    small = partition(torch.arange(6000) % 10, "dirichlet", 20, alpha=0.5, seed=0)
    assert "client" in [a.get_xlabel() for a in plot_partition(small).axes]


def test_percent_ticks_tell_a_narrow_range_apart():
    """91-92.4% on the y axis: tick labels with decimals, not "92%" five times."""
    import matplotlib.pyplot as plt

    from fedlab_widgets.history import History, RoundRecord
    h = History(records=[RoundRecord(round=r, accuracy=a, loss=0.3, train_loss=0.3, clients=[0],
                                     bytes_down=1, bytes_up=1, seconds=0.1)
                         for r, a in enumerate([0.9136, 0.9190, 0.9203, 0.9241], 1)])
    fig = plot_convergence({"run": h})
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_text()]
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    assert all(lab.endswith("%") for lab in labels)
    plt.close(fig)
