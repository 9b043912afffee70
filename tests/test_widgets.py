"""The explorer and the dashboard driven from Python: real MNIST, real training, no mocks.

Widget values are set and buttons clicked exactly as a notebook would (``button.click()``);
training happens in the dashboard's background thread as it does in the browser.
"""

import threading
import time

import numpy as np
import pytest

from fedlab_widgets import History
from fedlab_widgets.widgets import FedAvgDashboard, PartitionExplorer, cached_partition

FAST = dict(model="2nn", num_clients=20, client_fraction=0.1, batch_size=50, lr=0.05, rounds=3)


@pytest.fixture
def dashboard(train, test_set):
    d = FedAvgDashboard(train, test_set, **FAST)
    yield d
    d.stop()
    d.wait(30)


def _wait_for(pred, timeout=60.0):
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.02)


# -- PartitionExplorer -------------------------------------------------------------------------
def test_explorer_redraws_when_scheme_and_alpha_change(train):
    ex = PartitionExplorer(train, scheme="dirichlet", alpha=0.1, num_clients=20)
    fp, text, png, draws = ex.partition.fingerprint(), ex.stats.value, ex.image.value, ex.draws
    assert "away from the global mix" in text and "of 10 classes" in text
    assert ex.controls["alpha"].layout.display is None            # alpha shown for dirichlet
    assert ex.controls["shards_per_client"].layout.display == "none"

    ex.controls["alpha"].value = 100.0                              # as a learner drags the slider
    assert ex.partition.fingerprint() != fp and ex.draws == draws + 1
    assert ex.stats.value != text and ex.image.value != png
    assert ex.partition.heterogeneity()["label_tv"] < 0.1          # large alpha: nearly IID

    ex.controls["scheme"].value = "shards"
    assert ex.partition.scheme == "shards"
    assert ex.controls["alpha"].layout.display == "none"
    assert ex.controls["shards_per_client"].layout.display is None
    assert ex.partition.heterogeneity()["effective_classes"] < 2.5

    before = ex.draws
    ex.update(scheme="iid", num_clients=10, seed=3)                 # several values, one redraw
    assert ex.draws == before + 1
    assert ex.partition.num_clients == 10 and ex.partition.scheme == "iid"
    assert ex.message.value == ""
    assert "fedlab-explorer" in ex.widget._dom_classes
    assert "application/vnd.jupyter.widget-view+json" in ex._repr_mimebundle_()
    with pytest.raises(ValueError, match="unknown setting"):
        ex.update(beta=1)


def test_explorer_bad_combination_shows_message_and_keeps_partition(train):
    ex = PartitionExplorer(train, scheme="dirichlet", alpha=0.5, num_clients=20)
    good, text = ex.partition, ex.stats.value
    ex.update(alpha=0.01, num_clients=100)        # some client always gets < min_size samples
    assert "min_size" in ex.message.value and "Error" in ex.message.value
    assert "previous partition" in ex.message.value
    assert ex.partition is good and ex.stats.value == text
    ex.update(alpha=0.5, num_clients=20)          # fixing it clears the message
    assert ex.message.value == "" and ex.partition.fingerprint() == good.fingerprint()


# -- FedAvgDashboard ------------------------------------------------------------------------------
def test_blocking_run_returns_rising_history(dashboard):
    png = dashboard.image.value
    h = dashboard.run(blocking=True)
    assert isinstance(h, History) and len(h) == 3
    assert h.accuracy[-1] > h.accuracy[0] and h.accuracy[-1] > 0.8
    assert dashboard.histories == [h]
    assert "C=0.1" in h.label and "E=1" in h.label and "B=50" in h.label
    assert "round 3/3" in dashboard.status.value
    assert dashboard.progress.value == 3 and dashboard.image.value != png
    assert not dashboard.run_button.disabled and dashboard.stop_button.disabled
    assert dashboard.message.value == ""
    # the partition is cached: a second run reuses it (and the loaded data)
    p = cached_partition(dashboard.train, "iid", 20, seed=0)
    assert h.config["partition_fingerprint"] == p.fingerprint()
    assert cached_partition(dashboard.train, "iid", 20, seed=0) is p


def test_run_button_trains_in_a_thread_and_stop_keeps_the_partial_curve(dashboard):
    dashboard.update(rounds=60)
    draws = dashboard.draws
    dashboard.run_button.click()
    assert dashboard.running
    assert dashboard._runner.thread is not threading.current_thread()
    assert all(c.disabled for c in dashboard.controls.values())
    assert dashboard.run_button.disabled and dashboard.clear_button.disabled
    assert not dashboard.stop_button.disabled
    _wait_for(lambda: dashboard.draws >= draws + 2)           # redrawn after every round
    assert "Training: <b>round" in dashboard.status.value
    done = len(dashboard.current[0])
    dashboard.stop_button.click()
    assert dashboard.wait(timeout=30)
    h = dashboard.histories[-1]
    assert done <= len(h) <= done + 1 < 60                   # stopped within one round
    assert h.stop_reason.startswith("stopped by the user")
    assert "Stopped: <b>round" in dashboard.status.value
    assert not any(c.disabled for c in dashboard.controls.values())
    assert not dashboard.run_button.disabled and dashboard.stop_button.disabled
    assert dashboard.message.value == ""
    assert any(line.get_label() == h.label for line in dashboard.make_figure().axes[0].get_lines())


def test_bad_value_shows_message_and_keeps_previous_runs(dashboard):
    first = dashboard.run(blocking=True)
    png = dashboard.image.value
    dashboard.controls["lr"].value = 0.0
    dashboard.run_button.click()
    assert dashboard.wait(timeout=30)
    assert "lr must be" in dashboard.message.value and "Error" in dashboard.message.value
    assert dashboard.histories == [first] and dashboard.image.value == png
    assert not dashboard.run_button.disabled                  # ready for another try
    with pytest.raises(ValueError, match="lr"):
        dashboard.run(blocking=True)
    dashboard.update(lr=0.05)                                 # the kernel is fine: it still trains
    assert len(dashboard.run(blocking=True)) == 3 and len(dashboard.histories) == 2
    assert dashboard.message.value == ""


def test_divergence_is_reported(dashboard):
    dashboard.update(lr=1e3, rounds=5)
    h = dashboard.run(blocking=True)
    assert h.diverged and len(h) < 5
    assert "diverged" in dashboard.message.value and "lr" in dashboard.message.value
    assert "Diverged" in dashboard.status.value
    assert not dashboard.run_button.disabled


def test_clear_button_empties_the_overlay(dashboard):
    dashboard.update(rounds=1)
    dashboard.run(blocking=True)
    png = dashboard.image.value
    dashboard.clear_button.click()
    assert dashboard.histories == [] and dashboard.image.value != png
    assert not dashboard.make_figure().axes[0].get_lines()
    assert dashboard.run(blocking=True).label.startswith("#1 ")   # numbering starts again


def test_compare_iid_adds_a_dashed_baseline(dashboard):
    dashboard.update(scheme="shards", compare_iid=True, rounds=2)
    h = dashboard.run(blocking=True)
    assert len(dashboard.histories) == 2
    main, base = dashboard.histories
    assert main is h and main.config["scheme"] == "shards"
    assert base.config["scheme"] == "iid" and "IID baseline" in base.label
    assert len(base) == len(main) == 2
    assert np.nanmean(base.accuracy) > np.nanmean(main.accuracy)   # non-IID hurts
    styles = {line.get_label(): line.get_linestyle()
              for line in dashboard.make_figure().axes[0].get_lines()}
    assert styles[base.label] == "--" and styles[main.label] == "-"


def test_algorithm_dropdown_shows_its_parameters_and_labels_the_run(dashboard):
    c = dashboard.controls
    shown = lambda: {n for n in ("mu", "server_lr", "momentum", "beta1", "beta2", "tau")  # noqa: E731
                     if c[n].layout.display is None}
    assert c["algorithm"].value == "fedavg" and shown() == set()
    c["algorithm"].value = "fedprox"                       # as a learner picks it
    assert shown() == {"mu"} and c["mu"].value == pytest.approx(0.01)
    c["algorithm"].value = "fedadagrad"
    assert shown() == {"server_lr", "beta1", "tau"}
    c["algorithm"].value = "fedavgm"                        # shared control, its own default
    assert shown() == {"server_lr", "momentum"} and c["server_lr"].value == pytest.approx(1.0)
    dashboard.update(algorithm="fedprox", mu=0.1, rounds=1)
    h = dashboard.run(blocking=True)
    assert h.config["algorithm"] == "fedprox" and h.config["algorithm_params"]["mu"] == pytest.approx(0.1)
    assert h.label.startswith("#1 fedprox(mu=0.1)")


def test_compare_fedavg_adds_a_dashed_fedavg_baseline(dashboard):
    dashboard.update(scheme="shards", algorithm="scaffold", compare_fedavg=True, rounds=2)
    h = dashboard.run(blocking=True)
    main, base = dashboard.histories
    assert main is h and main.config["algorithm"] == "scaffold"
    assert base.config["algorithm"] == "fedavg" and "FedAvg baseline" in base.label
    assert base.config["partition_fingerprint"] == main.config["partition_fingerprint"]
    styles = {line.get_label(): line.get_linestyle()
              for line in dashboard.make_figure().axes[0].get_lines()}
    assert styles[base.label] == "--" and styles[main.label] == "-"
    dashboard.update(algorithm="fedavg")
    dashboard.run(blocking=True)
    assert "already FedAvg" in dashboard.message.value


def test_bad_algorithm_settings_in_the_constructor(train, test_set):
    with pytest.raises(ValueError, match="algorithm must be one of"):
        FedAvgDashboard(train, test_set, algorithm="fedsgd")
    with pytest.raises(ValueError, match="mu must be a number from 0 to 10"):
        FedAvgDashboard(train, test_set, algorithm="fedprox", mu=-1)


def test_attack_and_defence_controls_and_the_backdoor_curve(dashboard):
    c = dashboard.controls
    assert c["attack"].value == "none" and c["attack_fraction"].layout.display == "none"
    c["attack"].value = "backdoor"
    shown = {n for n in ("attack_fraction", "attack_scale", "attack_target", "attack_share",
                         "attack_boost") if c[n].layout.display is None}
    assert shown == {"attack_fraction", "attack_target", "attack_share", "attack_boost"}
    c["aggregator"].value = "trimmed_mean"
    assert c["trim_ratio"].layout.display is None and c["num_byzantine"].layout.display == "none"
    dashboard.update(attack_fraction=0.3, aggregator="median", compare_fedavg=True, rounds=2,
                     client_fraction=0.5)
    h = dashboard.run(blocking=True)
    main, base = dashboard.histories
    assert h.config["attack"] == "backdoor" and h.config["aggregator"] == "median"
    assert base.config["aggregator"] == "mean" and base.config["attack"] == "backdoor"
    assert np.isfinite(h.attack_success).all() and "backdoor success" in dashboard.status.value
    labels = [line.get_label() for line in dashboard.make_figure().axes[0].get_lines()]
    assert f"{main.label}: backdoor success" in labels and f"{base.label}: backdoor success" in labels


def test_bad_defence_settings_show_a_message_and_keep_runs(dashboard):
    dashboard.update(rounds=1)
    dashboard.run(blocking=True)
    dashboard.update(aggregator="krum", num_byzantine=5)         # 2 clients per round: too few
    with pytest.raises(ValueError, match="krum with num_byzantine=5 needs at least"):
        dashboard.run(blocking=True)
    assert "num_byzantine" in dashboard.message.value and len(dashboard.histories) == 1


def test_a_new_dashboard_stops_the_run_of_an_old_one(train, test_set):
    old = FedAvgDashboard(train, test_set, **{**FAST, "rounds": 200})
    old.run_button.click()
    _wait_for(lambda: len(old.current) and len(old.current[0]) >= 1)
    new = FedAvgDashboard(train, test_set, **FAST)          # the cell re-run
    assert old.wait(30), "the old dashboard kept training"
    assert len(old.histories[0]) < 200 and "new dashboard" in old.message.value
    assert not new.running


def test_already_running_message_goes_away_when_the_run_ends(dashboard):
    dashboard.update(rounds=3)
    dashboard.run_button.click()
    dashboard.run()                     # the button is disabled now; a script can still call run()
    assert "already in progress" in dashboard.message.value
    assert dashboard.wait(60)
    assert dashboard.message.value == "" and dashboard.last_error is None


def test_status_line_says_when_the_target_was_reached(dashboard):
    dashboard.update(rounds=3, target=0.5)
    dashboard.run(blocking=True)
    assert "target 50% reached at round <b>1" in dashboard.status.value
    ax = dashboard.make_figure().axes[0]
    assert ax.get_xlim() == (0.5, 3.5)                      # x axis: rounds 1..3, integers


def test_explorer_error_has_its_own_row(train):
    ex = PartitionExplorer(train, scheme="dirichlet", alpha=0.5, num_clients=20)
    assert ex.widget.children[0] is ex.message               # full width, above the controls
    ex.update(alpha=0.01, num_clients=100)
    assert "Error" in ex.message.value and ex.widget.children[0] is ex.message


def test_privacy_in_the_dashboard_epsilon_and_secure_aggregation(dashboard):
    c = dashboard.controls
    c["algorithm"].value = "dp-fedavg"
    assert c["clip_norm"].layout.display is None and c["noise_multiplier"].layout.display is None
    dashboard.update(model="logreg", rounds=2, client_fraction=0.5, noise_multiplier=1.0,
                     clip_norm=0.5, secure_aggregation=True)
    h = dashboard.run(blocking=True)
    assert h.config["secure_aggregation"] and h.config["dp_params"]["clip_norm"] == 0.5
    assert np.isfinite(h.epsilon).all()
    assert f"= <b>{h.epsilon[-1]:.3g}</b>" in dashboard.status.value and "&delta;" in dashboard.status.value
    # a robust aggregator cannot see the masked updates: a message, the run kept
    dashboard.update(algorithm="fedavg", aggregator="median")
    with pytest.raises(ValueError, match="secure aggregation hides from the server"):
        dashboard.run(blocking=True)
    assert "only their sum" in dashboard.message.value and len(dashboard.histories) == 1
    assert "lenet" not in c["model"].options


def test_leakage_demo_rebuilds_a_digit_from_the_button(test_set):
    from fedlab_widgets.leakage_widget import LeakageDemo

    demo = LeakageDemo(test_set, index=0, iterations=60)
    first = demo.image.value
    demo.run_button.click()                      # a background thread, as in the browser
    assert demo.wait(120)
    images, labels, mse = demo.result
    assert int(labels[0]) == int(test_set.labels[0]) and mse < 1e-3
    assert "recovered" in demo.status.value and demo.image.value != first and demo.draws >= 2
    demo.controls["share"].value = "gradient + noise std 0.1"
    demo.run(blocking=True)
    assert demo.result[2] > 0.05 and "not recovered" in demo.status.value
    with pytest.raises(ValueError, match="share must be one of"):
        LeakageDemo(test_set, share="weights")


def test_leakage_demo_stops_when_asked(test_set):
    """A long attack ends promptly on Stop, keeps its last guess on screen, and runs again."""
    from fedlab_widgets.leakage_widget import LeakageDemo

    demo = LeakageDemo(test_set, index=3, iterations=300)
    assert demo.stop_button.disabled
    demo.run_button.click()
    _wait_for(lambda: demo.draws >= 2 or not demo.stop_button.disabled)
    assert not demo.stop_button.disabled and demo.run_button.disabled
    t0 = time.monotonic()
    demo.stop_button.click()
    assert demo.wait(30) and time.monotonic() - t0 < 10
    assert "Stopped by the user at step" in demo.status.value and demo.result is None
    assert not demo.run_button.disabled and demo.stop_button.disabled
    demo.controls["iterations"].value = 5
    demo.run(blocking=True)
    assert demo.result is not None and "Done in" in demo.status.value


def test_real_devices_controls_and_the_per_client_view(dashboard):
    c = dashboard.controls
    assert dashboard.client_image.layout.display == "none"   # nothing to show yet
    dashboard.update(scheme="shards", dropout=0.3, stragglers=0.5, straggler_mode="partial",
                     compression="8-bit", per_client=True, client_fraction=0.5, rounds=3)
    h = dashboard.run(blocking=True)
    assert h.config["dropout"] == 0.3 and h.config["compression"] == "quantize"
    assert h.config["local_test_fraction"] == 0.2 and h.client_accuracy.shape == (3, 20)
    assert sum(len(r.dropped) for r in h.records) > 0
    # the second view is on screen and the status line gives the clients' spread
    assert dashboard.client_image.layout.display is None and dashboard.client_image.value
    assert "clients: mean" in dashboard.status.value and "worst" in dashboard.status.value
    fig = dashboard.make_client_figure()
    assert fig is not None and fig.axes[0].get_ylabel().startswith("accuracy on each client")
    assert fig.axes[1].images, "the strip of who took part"
    # bad values: a message naming the setting, earlier runs kept
    with pytest.raises(ValueError, match="compression does not combine with SCAFFOLD"):
        dashboard.update(algorithm="scaffold").run(blocking=True)
    assert "SCAFFOLD" in dashboard.message.value and len(dashboard.histories) == 1
    assert set(c["compression"].options) >= {"none", "top-1%", "8-bit", "2-bit"}
    with pytest.raises(ValueError, match="compression must be one of"):
        FedAvgDashboard(dashboard.train, dashboard.test, compression="zip")
    with pytest.raises(ValueError, match="dropout"):
        FedAvgDashboard(dashboard.train, dashboard.test, dropout=1.0)


def test_quick_evaluation_draws_estimates_between_whole_test_set_points(dashboard):
    dashboard.update(quick_eval=True, rounds=6)
    h = dashboard.run(blocking=True)
    assert h.config["eval_every"] == 5 and h.config["eval_subset"] == 2000
    assert [r.eval_size for r in h.records] == [2000] * 4 + [10000] * 2
    labels = dashboard.make_figure().axes[0].get_legend_handles_labels()[1]
    assert "estimate (fixed test subset)" in labels


def test_static_snapshot_is_the_dashboards_final_state(dashboard):
    """The website replaces each dashboard by fedlab_widgets.static: its last plot, status and settings."""
    import base64

    from ipywidgets.widgets.widget import _instances

    from fedlab_widgets.static import snapshots, static_html

    dashboard.update(lr=0.1).run(blocking=True)
    html = static_html(dashboard.widget)
    png = base64.b64encode(bytes(dashboard.image.value)).decode()
    assert png in html                                   # the plot as it is now, not the first one
    assert "round 3/3" in html and "lr = 0.1" in html and "Run" not in html.split("<img")[0][:40]
    assert "Data &amp; clients" not in html              # column headings are not repeated
    assert "alpha =" not in html                         # hidden controls (scheme is iid) are left out
    mid = dashboard.widget.model_id
    assert _instances[mid] is dashboard.widget
    assert snapshots([mid, "no-such-widget"]) == {mid: html}


def test_out_of_range_values_are_refused_not_clamped(dashboard, train, test_set):
    """Sliders clamp silently and dropdowns say only "not found": the API names the setting and
    its range instead, and a bad value in update() changes nothing."""
    before = dashboard.settings()
    with pytest.raises(ValueError, match="rounds must be an integer >= 1; got 0"):
        dashboard.update(lr=0.2, rounds=0)
    assert dashboard.settings() == before            # lr was not set either
    dashboard.update(rounds=1000)                    # valid beyond the slider: the slider grows
    assert dashboard.controls["rounds"].value == 1000 and dashboard.controls["rounds"].max >= 1000
    with pytest.raises(ValueError, match="target_accuracy must be a number in \\(0, 1\\]"):
        dashboard.update(target_accuracy=94)         # refused, not clamped to 1
    with pytest.raises(ValueError, match="secure_aggregation must be True or False; got 'no'"):
        dashboard.update(secure_aggregation="no")
    with pytest.raises(ValueError, match="lr must be a number > 0; got -1"):
        dashboard.update(lr=-1)
    with pytest.raises(ValueError, match=r"client_fraction must be a number in \(0, 1\]; got 1.5"):
        dashboard.update(client_fraction=1.5)
    with pytest.raises(ValueError, match="local_epochs must be an integer >= 1; got '2'"):
        dashboard.update(local_epochs="2")
    with pytest.raises(ValueError, match="model must be one of 2nn, cnn"):
        dashboard.update(model="resnet")
    with pytest.raises(ValueError, match="num_clients must be an integer >= 1; got 0"):
        FedAvgDashboard(train, test_set, num_clients=0)
    with pytest.raises(ValueError, match="model must be one of"):
        FedAvgDashboard(train, test_set, model="lenet")
    with pytest.raises(ValueError, match="alpha must be a number > 0; got -1"):
        FedAvgDashboard(train, test_set, scheme="dirichlet", alpha=-1)
    with pytest.raises(ValueError, match="scheme must be one of iid, shards"):
        PartitionExplorer(train, scheme="banana")
    explorer = PartitionExplorer(train, scheme="dirichlet", num_clients=10)
    with pytest.raises(ValueError, match="num_clients must be an integer >= 1; got -3"):
        explorer.update(alpha=0.1, num_clients=-3)
    assert explorer.controls["alpha"].value == 0.5


def test_a_chosen_algorithm_starts_at_its_own_defaults(train, test_set):
    """server_lr is shared by several algorithms with different defaults: FedAdam's is 0.01."""
    d = FedAvgDashboard(train, test_set, algorithm="fedadam", num_clients=20)
    assert d.controls["server_lr"].value == pytest.approx(0.01)
    d2 = FedAvgDashboard(train, test_set, algorithm="fedadam", server_lr=0.1, num_clients=20)
    assert d2.controls["server_lr"].value == pytest.approx(0.1)


@pytest.mark.parametrize("name,param,value", [("ditto", "lam", 1.0), ("ifca", "num_clusters", 2),
                                              ("qffl", "q", 1.0)])
def test_personalised_algorithms_in_the_dashboard(dashboard, name, param, value):
    """Ditto, IFCA and q-FFL from the menu, their parameter shown, the per-client view of
    each client's own model; a bad value is a message and the earlier run stays."""
    c = dashboard.controls
    dashboard.update(algorithm=name, scheme="shards", per_client=True, client_fraction=0.5, rounds=2,
                     **{param: value})
    assert c[param].layout.display is None           # the algorithm's own parameter is on screen
    h = dashboard.run(blocking=True)
    assert h.config["algorithm"] == name and h.config["algorithm_params"][param] == value
    assert h.client_accuracy.shape == (2, 20) and np.isfinite(h.client_accuracy).all()
    assert "clients: mean" in dashboard.status.value
    bad, why = ({"lam": 100.0}, "lam must be at most 1 / lr") if name == "ditto" else \
        ({"secure_aggregation": True}, f"secure_aggregation does not combine with {name}")
    with pytest.raises(ValueError, match=why):
        dashboard.update(**bad).run(blocking=True)
    assert why in dashboard.message.value and len(dashboard.histories) == 1


def test_adaptive_clipping_in_the_dashboard_plots_its_clip_norm(dashboard):
    c = dashboard.controls
    c["algorithm"].value = "dp-fedavg"
    assert c["adaptive_clipping"].layout.display is None and c["local_dp"].layout.display is None
    dashboard.update(model="logreg", rounds=4, client_fraction=0.5, noise_multiplier=0.5,
                     clip_norm=0.1, adaptive_clipping=True, target_quantile=0.5)
    h = dashboard.run(blocking=True)
    assert h.config["dp_params"]["adaptive_clipping"] and np.isfinite(h.clip_norm).all()
    assert h.clip_norm[0] == pytest.approx(0.1) and h.clip_norm[-1] != h.clip_norm[0]
    assert dashboard.client_image.layout.display is None and dashboard.client_image.value
    ax = dashboard.make_client_figure().axes[0]
    assert ax.get_ylabel() == "clip norm"
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), h.clip_norm)
    # local DP and adaptive clipping do not combine: a message naming both, the run kept
    with pytest.raises(ValueError, match="adaptive_clipping cannot be combined with local_dp"):
        dashboard.update(local_dp=True).run(blocking=True)
    assert "local_dp" in dashboard.message.value and len(dashboard.histories) == 1
    dashboard.update(adaptive_clipping=False)
    h = dashboard.run(blocking=True)
    assert h.config["dp_params"]["local_dp"] and dashboard.client_image.layout.display == "none"


def test_the_dashboard_runs_on_the_simulated_clock_and_draws_hours(dashboard):
    """Issue 23: devices, deadline and selection in the Real devices box; FedBuff against its
    FedAvg baseline; the x axis in simulated hours; a bad pair refused with the runs kept."""
    dashboard.update(model="logreg", rounds=3, client_fraction=0.2, devices="phones",
                     algorithm="fedbuff", compare_fedavg=True)
    h = dashboard.run(blocking=True)
    assert h.config["devices"] == "phones" and np.isfinite(h.simulated_time).all()
    assert len(dashboard.histories) == 2 and "simulated time" in dashboard.status.value
    dashboard.controls["x_axis"].value = "hours"
    ax = dashboard.make_figure().axes[0]
    assert ax.get_xlabel() == "simulated hours (devices)"
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata()[-1], h.simulated_time[-1] / 3600)
    with pytest.raises(ValueError, match="fedbuff needs devices"):
        dashboard.update(devices="none").run(blocking=True)
    assert "devices" in dashboard.message.value and len(dashboard.histories) == 2
    with pytest.raises(ValueError, match="devices must be one of none, uniform, phones"):
        dashboard.update(devices="tablets")
