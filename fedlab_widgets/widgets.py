"""Interactive ipywidgets front ends: a partition explorer and a live FedAvg dashboard.

Both are plain ipywidgets (no ipympl): plots are drawn with matplotlib's Agg
backend into PNG bytes and shown in a fixed-size :class:`ipywidgets.Image`, so
they work in JupyterLab, Notebook 7, VS Code and Colab, and an image can be
updated from the background thread that trains the global model.

The widgets use :mod:`fedlab_widgets.simulation` and :mod:`fedlab_widgets.plots`;
nothing in the simulation imports this module.
"""

from __future__ import annotations

import html
import io
import textwrap
import threading
import time
import weakref
from collections import OrderedDict

import ipywidgets as W
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import algorithms, attacks, compression as _compression, plots
from .datasets import load_mnist
from .models import MODELS
from .params import Param
from .partition import SCHEME_PARAMETERS, SCHEMES, Partition, partition
from .history import History
from .simulation import Simulation

__all__ = ["PartitionExplorer", "FedAvgDashboard"]

# each scheme's own parameter (the first of its table) gets a control
SCHEME_PARAMETER = {scheme: (params[0].name if params else None)
                    for scheme, params in SCHEME_PARAMETERS.items()}


def _union(tables: dict, prefix: str = "") -> dict[str, Param]:
    """Every parameter of a set of tables, by (prefixed) name; shared names share a control."""
    out: dict[str, Param] = {}
    for params in tables.values():
        for prm in params:
            out.setdefault(prefix + prm.name, prm)
    return out


ALGORITHM_PARAMETERS = _union(algorithms.PARAMETERS)
# the aggregators a dashboard offers (fednova's normalised mean is an algorithm of its own)
AGGREGATORS = tuple(a for a in algorithms.AGGREGATOR_PARAMETERS if a != "fednova")
AGGREGATOR_PARAMETERS = _union({a: algorithms.AGGREGATOR_PARAMETERS[a] for a in AGGREGATORS})
ATTACK_PARAMETERS = _union(attacks.PARAMETERS, prefix="attack_")
# (chooser control, its table, prefix of its parameters' controls)
_CHOOSERS = (("algorithm", algorithms.PARAMETERS, ALGORITHM_PARAMETERS, ""),
             ("aggregator", algorithms.AGGREGATOR_PARAMETERS, AGGREGATOR_PARAMETERS, ""),
             ("attack", attacks.PARAMETERS, ATTACK_PARAMETERS, "attack_"))
BATCH_SIZES = (10, 20, 50, 100, 200, 600)
#: the dashboard's compression choices: label -> (name, parameters) for compression.get
COMPRESSION_PRESETS = {
    "none": None,
    "top-10%": ("topk", {"fraction": 0.1}),
    "top-1%": ("topk", {"fraction": 0.01}),
    "rand-10%": ("randk", {"fraction": 0.1}),
    "8-bit": ("quantize", {"bits": 8}),
    "2-bit": ("quantize", {"bits": 2}),
}
LOCAL_TEST_FRACTION = 0.2  # the per-client view's local test share
QUICK_EVAL_EVERY, QUICK_EVAL_SUBSET = 5, 2000  # "quick evaluation": whole test set, subset
_STYLE = {"description_width": "120px"}
_RENDER_LOCK = threading.Lock()  # matplotlib is not thread-safe: one figure drawn at a time
_LIVE: "weakref.WeakSet" = weakref.WeakSet()  # dashboards of this kernel, to stop orphaned runs


# -- helpers ---------------------------------------------------------------------------
def _png(fig: Figure, dpi: int = 80) -> bytes:
    """Render a (pyplot-free) figure to PNG bytes."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _figure(width: float, height: float) -> Figure:
    # A bare Figure (not pyplot): never shown twice by the inline backend, no global state.
    return Figure(figsize=(width, height))


def _error_html(text: str, kind: str = "error") -> str:
    color = {"error": "#b00020", "warning": "#8a5a00"}[kind]
    title = {"error": "Error", "warning": "Warning"}[kind]
    return (f'<div style="color:{color};border-left:4px solid {color};padding:2px 8px">'
            f"<b>{title}:</b> {html.escape(text)}</div>")


_PARTITION_CACHE: "OrderedDict[tuple, Partition]" = OrderedDict()
_PARTITION_CACHE_SIZE = 16
_PARTITION_LOCK = threading.Lock()


def _partition_params(scheme: str, values: dict) -> dict:
    name = SCHEME_PARAMETER[scheme]
    return {} if name is None else {name: values[name]}


def cached_partition(train, scheme: str, num_clients: int, *, seed: int = 0, **params) -> Partition:
    """:func:`partition` of ``train``'s labels, remembered for repeated calls.

    Moving a slider back and forth or pressing Run twice does not recompute the
    same partition. Errors are not cached.

    Examples
    --------
    >>> import torch
    >>> from types import SimpleNamespace
    >>> data = SimpleNamespace(labels=torch.arange(1000) % 10)
    >>> cached_partition(data, "iid", 10) is cached_partition(data, "iid", 10)
    True
    """
    labels = train.labels if hasattr(train, "labels") else train
    key = (id(labels), scheme, int(num_clients), int(seed),
           tuple(sorted((k, float(v)) for k, v in params.items())))
    with _PARTITION_LOCK:
        if key in _PARTITION_CACHE:
            _PARTITION_CACHE.move_to_end(key)
            return _PARTITION_CACHE[key]
    p = partition(labels, scheme, num_clients, seed=seed, **params)
    with _PARTITION_LOCK:
        _PARTITION_CACHE[key] = p
        while len(_PARTITION_CACHE) > _PARTITION_CACHE_SIZE:
            _PARTITION_CACHE.popitem(last=False)
    return p


def describe_heterogeneity(p: Partition) -> str:
    """The heterogeneity numbers of a partition in words a learner can read.

    Examples
    --------
    >>> import torch
    >>> from fedlab_widgets import partition
    >>> text = describe_heterogeneity(partition(torch.arange(1000) % 10, "iid", 10))
    >>> "client sizes vary by 0%" in text
    True
    """
    h = p.heterogeneity()
    tv, eff, cv = h["label_tv"], h["effective_classes"], h["size_cv"]
    return (
        f"On average a client's label mix is {tv:.0%} away from the global mix "
        f"(total-variation distance {tv:.2f}; 0% would be IID, 100% means clients share no labels "
        f"with the global mix); a typical client effectively holds {eff:.1f} of "
        f"{p.num_classes} classes; client sizes vary by {cv:.0%} (coefficient of variation "
        f"{cv:.2f}): from {h['min_size']} to {h['max_size']} samples, "
        f"{h['mean_size']:.0f} on average."
    )


def param_control(prm: Param, value=None) -> W.Widget:
    """A slider for one parameter of a table: logarithmic, integer or linear, as it says."""
    value = prm.default if value is None else prm.check(value)  # a ValueError names it and its range
    lo, hi = prm.ui_range
    kw = dict(description=prm.name, continuous_update=False, style=_STYLE)
    if prm.log:
        import math
        c = W.FloatLogSlider(value=value, base=10, min=math.log10(min(lo, value)),
                             max=math.log10(max(hi, value)), step=0.05, readout_format=".3g", **kw)
    elif prm.kind == "int":
        c = W.IntSlider(value=value, min=min(int(lo), value), max=max(int(hi), value), **kw)
    else:
        c = W.FloatSlider(value=value, min=min(lo, value), max=max(hi, value),
                          step=0.1 if hi - lo > 2 else 0.01, readout_format=".3g", **kw)
    c.tooltip = prm.doc
    return c


def _check_value(name: str, control, value) -> None:
    """Refuse a value that ``control`` would silently clamp or cannot show, naming the setting
    and its range (sliders and bounded boxes clamp quietly; a dropdown says only "not found")."""
    if isinstance(control, W.Dropdown):
        allowed = [o[1] if isinstance(o, tuple) else o for o in control.options]
        if name == "batch_size":  # any batch size can be added to the list
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"batch_size must be an integer >= 1 or None (full batch); "
                                 f"got {value!r}")
        elif value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")
        return
    if isinstance(control, W.Checkbox):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False; got {value!r}")
        return
    if not hasattr(control, "min") and name != "lr":
        return
    integer = isinstance(control, (W.IntSlider, W.IntText, W.BoundedIntText))
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not np.isfinite(value):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}; got {value!r}")
    if name == "lr" and not value > 0:
        raise ValueError(f"lr must be a number > 0; got {value!r}")
    lo, hi = getattr(control, "min", None), getattr(control, "max", None)
    if isinstance(control, W.FloatLogSlider):  # min and max are exponents of base
        lo, hi = control.base ** lo, control.base ** hi
    if lo is not None and not lo * (1 - 1e-9) <= value <= hi * (1 + 1e-9):
        raise ValueError(f"{name} must be from {lo:g} to {hi:g} in the dashboard; got {value!r}")


def _partition_controls(*, scheme, num_clients, seed, max_num_clients, **scheme_values) -> dict:
    """The partition's controls: scheme, its parameter, number of clients, seed."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}")
    c = {"scheme": W.Dropdown(options=list(SCHEMES), value=scheme, description="scheme",
                              style=_STYLE)}
    for params in SCHEME_PARAMETERS.values():
        if params:
            c[params[0].name] = param_control(params[0], scheme_values.get(params[0].name))
    c["num_clients"] = W.IntSlider(value=num_clients, min=1, max=max(max_num_clients, num_clients),
                                   description="num_clients", continuous_update=False,
                                   style=_STYLE)
    c["seed"] = W.IntText(value=seed, description="seed", style=_STYLE,
                          layout=W.Layout(width="220px"))
    _check_value("num_clients", c["num_clients"], num_clients)  # the scheme's: param_control
    return c


def _show_scheme_parameter(controls: dict) -> None:
    keep = SCHEME_PARAMETER[controls["scheme"].value]
    for name in SCHEME_PARAMETER.values():
        if name is not None:
            controls[name].layout.display = None if name == keep else "none"


def _show_chosen_parameters(controls: dict, chooser: str, reset: bool = False) -> None:
    """Show the parameters of what ``chooser`` (algorithm, aggregator, attack) selects, only;
    ``reset`` puts them at its defaults."""
    _, tables, union, prefix = next(c for c in _CHOOSERS if c[0] == chooser)
    chosen = controls[chooser].value
    table = {prefix + p.name: p for p in (tables[chosen] if chosen in tables else ())}
    for name in union:
        controls[name].layout.display = None if name in table else "none"
        if reset and name in table:
            controls[name].value = table[name].default


def _chosen_params(s: dict, chooser: str) -> dict:
    """The parameter values of what ``chooser`` selects in settings ``s`` (unprefixed names)."""
    _, tables, _, prefix = next(c for c in _CHOOSERS if c[0] == chooser)
    chosen = s[chooser]
    if chosen in (None, "none"):  # no attack (the dropdown says "none")
        return {}
    if chosen not in tables:
        raise ValueError(f"{chooser} must be one of {', '.join(tables)}; got {chosen!r}")
    return {p.name: s[prefix + p.name] for p in tables[chosen]}


def make_algorithm(s: dict):
    """The :class:`~fedlab_widgets.algorithms.Algorithm` that settings ``s`` describe."""
    agg = {} if s["aggregator"] == "mean" else {"aggregator": s["aggregator"],
                                                **_chosen_params(s, "aggregator")}
    return algorithms.get(s["algorithm"], **agg, **_chosen_params(s, "algorithm"),
                          secure_aggregation=bool(s.get("secure_aggregation", False)))


def make_attack(s: dict):
    """The :class:`~fedlab_widgets.attacks.Attack` that settings ``s`` describe, or None."""
    if s["attack"] in (None, "none"):
        return None
    return attacks.get(s["attack"], **_chosen_params(s, "attack"))


def _note(h: History, running: bool) -> str:
    """A legend suffix saying how a run ended."""
    if running:
        return " (running)"
    if h.diverged:
        return " (diverged)"
    if h.stop_reason and h.stop_reason.startswith("stopped"):
        return " (stopped)"
    return ""


class _Displayable:
    """Display an object through its container widget (``.widget``)."""

    widget: W.Widget

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)


# -- the partition explorer --------------------------------------------------------------
class PartitionExplorer(_Displayable):
    """Sliders to partition a dataset among clients, with a live label heatmap.

    Every change redraws the per-client label heatmap and client sizes and
    describes in words how non-IID the partition is. A combination that cannot
    be partitioned (for example a Dirichlet ``alpha`` so small that some client
    ends up below the minimum size) shows the error in the widget and keeps the
    previous partition.

    Parameters
    ----------
    train : FederatedDataset or label tensor
        The training set whose samples are partitioned (its ``.labels``).
    scheme : {"iid", "shards", "dirichlet", "label_count", "quantity", "powerlaw"}, default "dirichlet"
    num_clients : int, default 20
    alpha : float, default 0.5
        Dirichlet concentration (scheme ``dirichlet``).
    shards_per_client : int, default 2
        Scheme ``shards``.
    classes_per_client : int, default 2
        Scheme ``label_count``.
    sigma : float, default 1.0
        Log-normal spread of client sizes (scheme ``quantity``).
    seed : int, default 0
    max_clients : int, default 50
        Draw at most this many clients (the partition itself has all of them).

    Attributes
    ----------
    partition : Partition
        The current partition (the last valid one).
    controls : dict of str to ipywidgets.Widget
    widget : ipywidgets.Widget
        The container; the explorer displays as this widget.
    stats, message : ipywidgets.HTML
        Heterogeneity in words; the last error (empty when fine).

    Examples
    --------
    >>> from fedlab_widgets import load_mnist
    >>> from fedlab_widgets.widgets import PartitionExplorer
    >>> train, _ = load_mnist()
    >>> explorer = PartitionExplorer(train, scheme="dirichlet", alpha=0.1)  # doctest: +SKIP
    >>> explorer                                                            # doctest: +SKIP
    >>> explorer.update(alpha=100.0)                                         # doctest: +SKIP
    >>> explorer.partition.heterogeneity()["label_tv"] < 0.1                 # doctest: +SKIP
    True
    """

    def __init__(self, train, *, scheme: str = "dirichlet", num_clients: int = 20,
                 alpha: float = 0.5, shards_per_client: int = 2, classes_per_client: int = 2,
                 sigma: float = 1.0, exponent: float = 1.5, seed: int = 0, max_clients: int = 50):
        self.train = train
        self.max_clients = max_clients
        self.partition: Partition | None = None
        self.error: str | None = None
        self.controls = _partition_controls(
            scheme=scheme, num_clients=num_clients, alpha=alpha,
            shards_per_client=shards_per_client, classes_per_client=classes_per_client,
            sigma=sigma, exponent=exponent, seed=seed, max_num_clients=200)
        self.image = W.Image(format="png", layout=W.Layout(width="720px", height="450px",
                                                            object_fit="contain"))
        self.image.add_class("fedlab-plot")
        self.stats = W.HTML(layout=W.Layout(max_width="720px"))
        self.stats.add_class("fedlab-stats")
        self.message = W.HTML()
        self.message.add_class("fedlab-message")
        order = ["scheme", "alpha", "shards_per_client", "classes_per_client", "sigma", "exponent",
                 "num_clients", "seed"]
        left = W.VBox([self.controls[k] for k in order], layout=W.Layout(width="360px"))
        # an error gets its own full-width row above, so it never squeezes the controls
        self.widget = W.VBox([self.message, W.HBox([left, W.VBox([self.image, self.stats])])])
        self.widget.add_class("fedlab-explorer")
        self._holding = False
        for c in self.controls.values():
            c.observe(self._on_change, names="value")
        self.draws = 0
        self._refresh()

    def values(self) -> dict:
        """The current control values."""
        return {k: c.value for k, c in self.controls.items()}

    def update(self, **values) -> "PartitionExplorer":
        """Set control values (e.g. ``update(scheme="shards", num_clients=50)``) and redraw once.

        Raises ValueError for an unknown name; a combination that cannot be
        partitioned is shown in the widget instead.
        """
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}; "
                             f"the settings are {', '.join(self.controls)}")
        for k, v in values.items():  # all checked before any is set: a bad one changes nothing
            _check_value(k, self.controls[k], v)
        self._holding = True
        try:
            for k, v in values.items():
                self.controls[k].value = v
        finally:
            self._holding = False
        self._refresh()
        return self

    def _on_change(self, change) -> None:
        if not self._holding:
            self._refresh()

    def _refresh(self) -> None:
        _show_scheme_parameter(self.controls)
        v = self.values()
        try:
            p = cached_partition(self.train, v["scheme"], v["num_clients"], seed=v["seed"],
                                 **_partition_params(v["scheme"], v))
        except ValueError as e:
            self.error = str(e)
            kept = " The plot still shows the previous partition." if self.partition else ""
            self.message.value = _error_html(str(e) + kept)
            return
        self.error = None
        self.message.value = ""
        self.partition = p
        self.stats.value = f"<p>{html.escape(describe_heterogeneity(p))}</p>"
        with _RENDER_LOCK:
            fig = plots.plot_partition(p, fig=_figure(9, 5.6), max_clients=self.max_clients)
            for ax in fig.axes[:2]:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            self.image.value = _png(fig)
        self.draws += 1


# -- the FedAvg dashboard ---------------------------------------------------------------------
class FedAvgDashboard(_Displayable):
    """Train FedAvg with sliders and watch the global model's test accuracy live.

    Press Run to train with the current settings in a background thread (the
    notebook stays responsive); the accuracy and loss plot is redrawn after every
    round, Stop ends the run after the current round and keeps its partial curve,
    and every finished run stays overlaid, labelled with its settings. Errors (a
    bad value, a partition that cannot be made, a diverging run) are shown in the
    widget; earlier runs are kept.

    Parameters
    ----------
    train, test : FederatedDataset or None
        The datasets (``None`` loads MNIST with :func:`load_mnist`, once).
    model : {"2nn", "cnn", "small_cnn"}, default "2nn"
    scheme : {"iid", "shards", "dirichlet", "label_count", "quantity", "powerlaw"}, default "iid"
    num_clients : int, default 100
    client_fraction : float, default 0.1
        C, the fraction of clients sampled each round.
    local_epochs : int, default 1
        E, passes each sampled client makes over its data per round.
    batch_size : int or None, default 10
        B, the local minibatch size; None ("full batch") uses all of a client's data.
    lr : float, default 0.05
        Client learning rate.
    rounds : int, default 20
    seed : int, default 0
    alpha, shards_per_client, classes_per_client, sigma, exponent
        The partition scheme's own parameter (see :func:`partition`).
    compare_iid : bool, default False
        Also train the same settings on an IID partition (drawn dashed).
    algorithm : str, default "fedavg"
        One of :data:`fedlab_widgets.algorithms.NAMES`; its parameters get sliders.
    aggregator : str, default "mean"
        The algorithm's aggregate, or a robust aggregator (``"median"``,
        ``"trimmed_mean"``, ``"krum"``, ``"multikrum"``, ``"norm_clip"``).
    attack : str or None, default None
        Malicious clients (:data:`fedlab_widgets.attacks.NAMES`); the plot adds a
        backdoor's attack success rate (dotted).
    compare_fedavg : bool, default False
        Also train the same settings with plain FedAvg (weighted mean; the same
        attack, if any), drawn dashed.
    dropout, stragglers : float, default 0
        Chance that a sampled client never reports, and that a reporting client
        does only part of its local work (see :mod:`fedlab_widgets.systems`).
    straggler_mode : {"auto", "drop", "partial"}, default "auto"
    compression : str, default "none"
        A key of :data:`COMPRESSION_PRESETS` ("top-1%", "8-bit", ...).
    quick_eval : bool, default False
        Evaluate on the whole test set every 5 rounds (and the last), and on a fixed
        subset of 2,000 test images in between: cheap live points for slow models,
        drawn hollow.
    per_client : bool, default False
        Keep 20% of each client's data as its local test set and show the second
        view: the per-client accuracy spread (mean, 10th-90th percentiles, worst)
        and which clients were sampled, dropped or straggled in each round.
    **params
        The chosen algorithm's, aggregator's and attack's parameters (``mu``,
        ``server_lr``, ..., ``trim_ratio``, ``num_byzantine``, ``max_norm``, and the
        attack's with an ``attack_`` prefix: ``attack_fraction``, ``attack_scale``, ...).
    target : float, optional
        Draw a target accuracy line (e.g. 0.97).

    Attributes
    ----------
    controls : dict of str to ipywidgets.Widget
        One control per setting, keyed by the parameter names above.
    run_button, stop_button, clear_button : ipywidgets.Button
    status, message : ipywidgets.HTML
        The status line (``round N/M``, accuracy, time, megabytes) and errors.
    progress : ipywidgets.IntProgress
    image : ipywidgets.Image
        The accuracy and loss plot.
    histories : list of History
        Finished (or stopped) runs, in order; IID baselines included.
    widget : ipywidgets.Widget
        The container; the dashboard displays as this widget.

    Examples
    --------
    >>> from fedlab_widgets import load_mnist
    >>> from fedlab_widgets.widgets import FedAvgDashboard
    >>> train, test = load_mnist()
    >>> dashboard = FedAvgDashboard(train, test, num_clients=20, rounds=3)
    >>> dashboard                                   # doctest: +SKIP
    >>> history = dashboard.run(blocking=True)      # doctest: +SKIP
    >>> history.accuracy[-1] > 0.85                 # doctest: +SKIP
    True
    """

    def __init__(self, train=None, test=None, *, model: str = "2nn", scheme: str = "iid",
                 num_clients: int = 100, client_fraction: float = 0.1, local_epochs: int = 1,
                 batch_size: int | None = 10, lr: float = 0.05, rounds: int = 20, seed: int = 0,
                 alpha: float = 0.5, shards_per_client: int = 2, classes_per_client: int = 2,
                 sigma: float = 1.0, exponent: float = 1.5, compare_iid: bool = False,
                 algorithm: str = "fedavg",
                 aggregator: str = "mean", attack: str | None = None,
                 compare_fedavg: bool = False, secure_aggregation: bool = False,
                 dropout: float = 0.0, stragglers: float = 0.0, straggler_mode: str = "auto",
                 compression: str = "none", per_client: bool = False, quick_eval: bool = False,
                 target: float | None = None, **params):
        unknown = set(params) - set(ALGORITHM_PARAMETERS) - set(AGGREGATOR_PARAMETERS) \
            - set(ATTACK_PARAMETERS)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}")
        if aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {', '.join(AGGREGATORS)}; "
                             f"got {aggregator!r}")
        chosen = {"algorithm": algorithm, "aggregator": aggregator, "attack": attack,
                  "secure_aggregation": secure_aggregation, **params}
        for c in ("algorithm", "aggregator", "attack"):
            _, tables, union, prefix = next(x for x in _CHOOSERS if x[0] == c)
            for name in union:
                chosen.setdefault(name, union[name].default)
        make_algorithm(chosen), make_attack(chosen)  # validated: a ValueError names the setting
        if model not in MODELS or model == "lenet":
            raise ValueError(f"model must be one of {', '.join(m for m in MODELS if m != 'lenet')}; "
                             f"got {model!r}")
        if compression not in COMPRESSION_PRESETS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSION_PRESETS)}; "
                             f"got {compression!r}")
        from .systems import check_system
        check_system(dropout=dropout, stragglers=stragglers, straggler_mode=straggler_mode)
        if train is None or test is None:
            train, test = load_mnist()
        self.train, self.test = train, test
        self.histories: list[History] = []
        self.baselines: set[int] = set()  # ids of histories that are baselines (dashed)
        self.current: list[History] = []  # histories of the run in progress
        self.last_error: str | None = None
        self.draws = 0
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._sims: list[Simulation] = []
        self._lock = threading.Lock()
        self._runs = 0

        self.controls = _partition_controls(
            scheme=scheme, num_clients=num_clients, alpha=alpha,
            shards_per_client=shards_per_client, classes_per_client=classes_per_client,
            sigma=sigma, exponent=exponent, seed=seed, max_num_clients=1000)
        bs_options = [("full batch", None)] + [(str(b), b) for b in BATCH_SIZES]
        if batch_size is not None and batch_size not in BATCH_SIZES:
            bs_options.append((str(batch_size), batch_size))
        self.controls.update({
            # "lenet" is the gradient-inversion lessons' model, not one to train here
            "model": W.Dropdown(options=[m for m in MODELS if m != "lenet"], value=model,
                                description="model",
                                style=_STYLE),
            "client_fraction": W.FloatSlider(value=client_fraction, min=0.01,
                                             max=1.0, step=0.01,
                                             description="client_fraction",
                                             continuous_update=False, style=_STYLE),
            "local_epochs": W.IntSlider(value=local_epochs, min=1, max=max(20, local_epochs),
                                        description="local_epochs", continuous_update=False,
                                        style=_STYLE),
            "batch_size": W.Dropdown(options=bs_options, value=batch_size,
                                     description="batch_size", style=_STYLE),
            "lr": W.FloatText(value=lr, description="lr", step=0.01, style=_STYLE,
                              layout=W.Layout(width="220px")),
            "rounds": W.IntSlider(value=rounds, min=1, max=max(200, rounds),
                                  description="rounds", continuous_update=False, style=_STYLE),
            "compare_iid": W.Checkbox(value=compare_iid, description="compare with IID",
                                      style=_STYLE),
            "algorithm": W.Dropdown(options=list(algorithms.NAMES), value=algorithm,
                                    description="algorithm", style=_STYLE),
            **{name: param_control(prm, chosen[name]) for name, prm in ALGORITHM_PARAMETERS.items()},
            "aggregator": W.Dropdown(options=list(AGGREGATORS), value=aggregator,
                                     description="aggregator", style=_STYLE),
            **{name: param_control(prm, chosen[name]) for name, prm in AGGREGATOR_PARAMETERS.items()},
            # a None value would show as an empty dropdown: "none" stands for no attack
            "attack": W.Dropdown(options=["none", *attacks.NAMES],
                                 value="none" if attack is None else attack,
                                 description="attack", style=_STYLE),
            **{name: param_control(prm, chosen[name]) for name, prm in ATTACK_PARAMETERS.items()},
            "compare_fedavg": W.Checkbox(value=compare_fedavg, description="compare with FedAvg",
                                         style=_STYLE),
            "secure_aggregation": W.Checkbox(value=bool(secure_aggregation),
                                             description="secure aggregation", style=_STYLE),
            "dropout": W.FloatSlider(value=dropout, min=0.0, max=0.9, step=0.05,
                                     description="dropout", continuous_update=False,
                                     style=_STYLE),
            "stragglers": W.FloatSlider(value=stragglers, min=0.0, max=1.0, step=0.05,
                                        description="stragglers", continuous_update=False,
                                        style=_STYLE),
            "straggler_mode": W.Dropdown(options=["auto", "drop", "partial"],
                                         value=straggler_mode, description="straggler_mode",
                                         style=_STYLE),
            "compression": W.Dropdown(options=list(COMPRESSION_PRESETS), value=compression,
                                      description="compression", style=_STYLE),
            "per_client": W.Checkbox(value=bool(per_client), description="per-client view",
                                     style=_STYLE),
            "quick_eval": W.Checkbox(value=bool(quick_eval), description="quick evaluation",
                                     style=_STYLE),
            "target": W.BoundedFloatText(value=0.0 if target is None else target, min=0.0,
                                         max=1.0, step=0.01,
                                         description="target (0 = none)", style=_STYLE,
                                         layout=W.Layout(width="220px")),
        })
        for name, value in {"client_fraction": client_fraction, "local_epochs": local_epochs,
                            "batch_size": batch_size, "lr": lr, "rounds": rounds,
                            "dropout": dropout, "stragglers": stragglers,
                            "target": 0.0 if target is None else target}.items():
            _check_value(name, self.controls[name], value)
        self.controls["lr"].tooltip = "client learning rate (> 0)"
        self.controls["compare_iid"].tooltip = (
            "also train the same settings on an IID partition (dashed curve)")
        self.controls["secure_aggregation"].tooltip = (
            "mask the updates: the server sees only their sum (not with robust aggregators)")
        self.controls["dropout"].tooltip = "chance that a sampled client never reports"
        self.controls["stragglers"].tooltip = (
            "chance that a reporting client can do only 10-100% of its local steps")
        self.controls["straggler_mode"].tooltip = (
            "drop: ignore stragglers (FedAvg); partial: use their partial work (FedProx, "
            "FedNova); auto: drop for FedAvg, partial otherwise")
        self.controls["compression"].tooltip = "what each client sends instead of its update"
        self.controls["quick_eval"].tooltip = (
            f"whole test set every {QUICK_EVAL_EVERY} rounds; in between {QUICK_EVAL_SUBSET:,} "
            "fixed test images (hollow points)")
        self.controls["per_client"].tooltip = (
            "hold out 20% of each client's data and plot every client's accuracy")
        self.controls["compare_fedavg"].tooltip = (
            "also train the same settings with FedAvg (dashed curve)")
        self.controls["scheme"].observe(lambda _: _show_scheme_parameter(self.controls),
                                        names="value")
        _show_scheme_parameter(self.controls)
        for chooser, *_ in _CHOOSERS:
            self.controls[chooser].observe(
                lambda _, c=chooser: _show_chosen_parameters(self.controls, c, reset=True),
                names="value")
            _show_chosen_parameters(self.controls, chooser)
        for name in ATTACK_PARAMETERS:  # "attack_fraction" is a long name for a slider
            self.controls[name].description = name.replace("attack_", "")

        self.run_button = W.Button(description="Run", button_style="success", icon="play",
                                   tooltip="train with the current settings")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop",
                                    disabled=True, tooltip="stop after the current round")
        self.clear_button = W.Button(description="Clear runs", icon="trash",
                                     tooltip="remove all finished runs from the plot")
        self.run_button.on_click(lambda _: self.run(blocking=False))
        self.stop_button.on_click(lambda _: self.stop())
        self.clear_button.on_click(lambda _: self.clear())
        self.progress = W.IntProgress(value=0, min=0, max=rounds, description="progress",
                                      layout=W.Layout(width="320px"))
        self.status = W.HTML(value=self._ready_text())
        self.message = W.HTML()
        self.image = W.Image(format="png", layout=W.Layout(width="960px", height="320px",
                                                            object_fit="contain"))
        # the second view: per-client spread and who took part (shown when it has something)
        self.client_image = W.Image(format="png", layout=W.Layout(
            width="960px", height="280px", object_fit="contain", display="none"))
        for w, cls in [(self.run_button, "fedlab-run"), (self.stop_button, "fedlab-stop"),
                       (self.clear_button, "fedlab-clear"), (self.status, "fedlab-status"),
                       (self.message, "fedlab-message"), (self.image, "fedlab-plot"),
                       (self.progress, "fedlab-progress"),
                       (self.client_image, "fedlab-client-view")]:
            w.add_class(cls)
        c = self.controls
        col = W.Layout(width="330px")
        data_box = W.VBox([W.HTML("<b>Data &amp; clients</b>"), c["scheme"], c["alpha"],
                           c["shards_per_client"], c["classes_per_client"], c["sigma"], c["exponent"],
                           c["num_clients"], c["client_fraction"]], layout=col)
        local_box = W.VBox([W.HTML("<b>Local training</b>"), c["model"], c["local_epochs"],
                            c["batch_size"], c["lr"], W.HTML("<b>Algorithm</b>"), c["algorithm"],
                            *[c[name] for name in ALGORITHM_PARAMETERS]], layout=col)
        run_box = W.VBox([W.HTML("<b>Run</b>"), c["rounds"], c["seed"], c["compare_iid"],
                          c["compare_fedavg"], c["target"], c["quick_eval"]], layout=col)
        attack_box = W.VBox([W.HTML("<b>Attack</b>"), c["attack"],
                             *[c[name] for name in ATTACK_PARAMETERS]], layout=col)
        defence_box = W.VBox([W.HTML("<b>Defence</b>"), c["aggregator"],
                              *[c[name] for name in AGGREGATOR_PARAMETERS],
                              c["secure_aggregation"]], layout=col)
        devices_box = W.VBox([W.HTML("<b>Real devices</b>"), c["dropout"], c["stragglers"],
                              c["straggler_mode"], c["compression"], c["per_client"]], layout=col)
        buttons = W.HBox([self.run_button, self.stop_button, self.clear_button, self.progress])
        self.widget = W.VBox([W.HBox([data_box, local_box, run_box]),
                              W.HBox([attack_box, defence_box, devices_box]), buttons,
                              self.status, self.message, self.image, self.client_image])
        self.widget.add_class("fedlab-dashboard")
        self._transient: str | None = None  # a message that goes away when the run ends
        self._draw()
        # Re-running the cell that built a dashboard leaves the old object training with no
        # Stop button on screen: a new dashboard stops the runs of the old ones.
        for old in list(_LIVE):
            if old.running:
                old.stop()
                old._show_error("stopped: a new dashboard was created in this kernel", "warning")
        _LIVE.add(self)

    # -- settings ---------------------------------------------------------------------
    def settings(self) -> dict:
        """The current settings, as the keyword arguments of the constructor."""
        v = {k: c.value for k, c in self.controls.items()}
        v["target"] = v["target"] or None
        return v

    def update(self, **values) -> "FedAvgDashboard":
        """Set controls programmatically, e.g. ``update(lr=0.1, local_epochs=5)``."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}; "
                             f"the settings are {', '.join(self.controls)}")
        values = {k: (0.0 if k == "target" and v is None else
                      "none" if k == "attack" and v is None else v) for k, v in values.items()}
        for k, v in values.items():  # all checked before any is set: a bad one changes nothing
            _check_value(k, self.controls[k], v)
        if "algorithm" in values:  # first: switching resets its parameters to their defaults
            self.controls["algorithm"].value = values["algorithm"]
        for k, v in values.items():
            if k == "algorithm":
                continue
            control = self.controls[k]
            if k == "batch_size" and v not in [value for _, value in control.options]:
                control.options = list(control.options) + [(str(v), v)]
            control.value = v
        if "rounds" in values and not self.running:
            self.status.value = self._ready_text()
        return self

    def _ready_text(self) -> str:
        return (f"Ready: press <b>Run</b> to train for {self.controls['rounds'].value} "
                f"rounds.")

    @property
    def running(self) -> bool:
        """True while a run is in progress."""
        return self._thread is not None and self._thread.is_alive() or bool(self._sims)

    # -- running ------------------------------------------------------------------------
    def run(self, *, blocking: bool = False) -> History | None:
        """Train with the current settings; the new run is added to the overlay.

        Parameters
        ----------
        blocking : bool, default False
            True: train in the calling thread and return the History (raising
            ValueError for bad settings, after showing the message). False (what
            the Run button does): start a background thread and return None at
            once; see :meth:`wait`.
        """
        if self.running:
            self._show_error("a run is already in progress: press Stop first", transient=True)
            if blocking:
                raise RuntimeError("a run is already in progress")
            return None
        settings = self.settings()
        self._stop_event.clear()
        self._set_running(True)
        if blocking:
            try:
                return self._train(settings, raise_errors=True)
            finally:
                self._set_running(False)
        self._thread = threading.Thread(target=self._thread_main, args=(settings,),
                                        name="fedlab-dashboard", daemon=True)
        self._thread.start()
        return None

    def _thread_main(self, settings: dict) -> None:
        try:
            self._train(settings, raise_errors=False)
        finally:
            self._set_running(False)

    def stop(self) -> None:
        """Stop the run in progress after its current round (its curve is kept)."""
        self._stop_event.set()
        for sim in list(self._sims):
            sim.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background run to finish; True if none is running any more."""
        t = self._thread
        if t is not None:
            t.join(timeout)
        return not self.running

    def clear(self) -> None:
        """Remove the finished runs from the overlay (``histories`` becomes empty)."""
        if self.running:
            self._show_error("cannot clear while a run is in progress: press Stop first",
                             transient=True)
            return
        self.histories.clear()
        self.baselines.clear()
        self._runs = 0  # the legend of an empty overlay starts again at #1
        self.message.value = ""
        self.progress.value = 0
        self.status.value = self._ready_text()
        self._draw()

    def _set_running(self, running: bool) -> None:
        for c in self.controls.values():
            c.disabled = running
        self.run_button.disabled = running
        self.clear_button.disabled = running
        self.stop_button.disabled = not running
        if not running and self._transient is not None:
            if self.message.value == self._transient:  # "already in progress" is stale now
                self.message.value = ""
                self.last_error = None
            self._transient = None

    def _show_error(self, text: str, kind: str = "error", transient: bool = False) -> None:
        self.last_error = text
        self.message.value = _error_html(text, kind)
        self._transient = self.message.value if transient else None

    def _build(self, s: dict) -> list[Simulation]:
        p = cached_partition(self.train, s["scheme"], s["num_clients"], seed=s["seed"],
                             **_partition_params(s["scheme"], s))
        alg = make_algorithm(s)
        preset = COMPRESSION_PRESETS[s["compression"]]
        kw = dict(client_fraction=s["client_fraction"], local_epochs=s["local_epochs"],
                  batch_size=s["batch_size"], lr=s["lr"], seed=s["seed"], attack=make_attack(s),
                  dropout=s["dropout"], stragglers=s["stragglers"],
                  straggler_mode=s["straggler_mode"],
                  compression=None if preset is None else _compression.get(preset[0], **preset[1]),
                  local_test_fraction=LOCAL_TEST_FRACTION if s["per_client"] else 0.0,
                  **({"eval_every": QUICK_EVAL_EVERY,
                      "eval_subset": min(QUICK_EVAL_SUBSET, len(self.test.labels))}
                     if s["quick_eval"] else {}))
        sims = [Simulation(s["model"], self.train, self.test, p, algorithm=alg, **kw)]
        self._runs += 1
        sims[0].history.label = f"#{self._runs} {sims[0].default_label()}"
        if s["compare_iid"] and s["scheme"] != "iid":
            iid = cached_partition(self.train, "iid", s["num_clients"], seed=s["seed"])
            base = Simulation(s["model"], self.train, self.test, iid, algorithm=alg, **kw)
            base.history.label = f"#{self._runs} IID baseline: {base.default_label()}"
            sims.append(base)
        if s["compare_fedavg"] and (s["algorithm"], s["aggregator"]) != ("fedavg", "mean"):
            base = Simulation(s["model"], self.train, self.test, p, algorithm="fedavg", **kw)
            base.history.label = f"#{self._runs} FedAvg baseline: {base.default_label()}"
            sims.append(base)
        return sims

    def _train(self, s: dict, *, raise_errors: bool) -> History | None:
        self.message.value = ""
        self.last_error = None
        n = s["rounds"]
        self.progress.max, self.progress.value = n, 0
        self.status.value = "Preparing the partition and the global model..."
        try:
            sims = self._build(s)
        except Exception as e:  # bad settings: show, keep earlier runs
            self._show_error(str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}")
            self.status.value = "Not started: fix the setting named below and press Run again."
            if raise_errors:
                raise
            return None
        if s["compare_iid"] and s["scheme"] == "iid":
            self._show_error("compare with IID: the partition is already IID, so no "
                             "baseline was trained", "warning")
        if s["compare_fedavg"] and (s["algorithm"], s["aggregator"]) == ("fedavg", "mean"):
            self._show_error("compare with FedAvg: the algorithm is already FedAvg, so no "
                             "baseline was trained", "warning")
        main = sims[0].history
        self.baselines.update(id(sim.history) for sim in sims[1:])
        self._sims = sims
        self.current = [sim.history for sim in sims]
        gens = [sim.rounds(n) for sim in sims]
        alive = [True] * len(sims)
        t0 = time.perf_counter()
        error = None
        try:
            while any(alive):
                if self._stop_event.is_set():
                    for sim, a in zip(sims, alive):
                        if a and sim.history.stop_reason is None:
                            sim.history.stop_reason = f"stopped by the user after round {sim.round}"
                    break
                for i, g in enumerate(gens):
                    if alive[i]:
                        try:
                            next(g)
                        except StopIteration:
                            alive[i] = False
                        else:
                            if sims[i].history.diverged:
                                alive[i] = False
                self._report(main, n, t0, s)
        except Exception as e:  # anything unexpected: show it, keep the kernel and earlier runs
            error = e
            self._show_error(f"{type(e).__name__}: {e}")
        finally:
            self._sims = []
            self.current = []
            for sim in sims:
                if len(sim.history):
                    self.histories.append(sim.history)
                elif id(sim.history) in self.baselines:
                    self.baselines.discard(id(sim.history))
        diverged = [h for h in (sim.history for sim in sims) if h.diverged]
        if diverged and error is None:
            self._show_error("; ".join(f"{h.label.split(' ', 1)[0]} {h.stop_reason}"
                                       for h in diverged))
        self._report(main, n, t0, s, final=True)
        if error is not None and raise_errors:
            raise error
        return main

    def _report(self, h: History, n: int, t0: float, s: dict, final: bool = False) -> None:
        r = h.records[-1].round if len(h) else 0
        acc = h.final_accuracy
        mb = h.bytes_total[-1] / 1e6 if len(h) else 0.0
        elapsed = time.perf_counter() - t0
        if not final:
            state = "Training"
        elif h.stop_reason and h.stop_reason.startswith("stopped"):
            state = "Stopped"
        elif h.diverged:
            state = "Diverged"
        else:
            state = "Finished"
        acc_text = f"{acc:.2%}" if np.isfinite(acc) else "n/a"
        if len(h) and h.estimated[-1]:
            acc_text += (f"</b> (whole test set) &middot; now &asymp; <b>{h.accuracy[-1]:.1%}</b> "
                         f"on {h.records[-1].eval_size:,} test images<b>")
        reached = h.rounds_to(s["target"]) if s.get("target") else None
        if reached is not None:
            acc_text += f"</b> &middot; target {s['target']:.0%} reached at round <b>{reached}"
        asr = h.attack_success[np.isfinite(h.attack_success)] if len(h) else []
        if len(asr):
            acc_text += f"</b> &middot; backdoor success <b>{asr[-1]:.0%}"
        eps = h.epsilon[-1] if len(h) else float("nan")
        if not np.isnan(eps):
            delta = h.config.get("dp_params", {}).get("delta", float("nan"))
            acc_text += (f"</b> &middot; privacy spent &epsilon; = <b>{eps:.3g}</b> "
                         f"(&delta; = {delta:g})<b>")
        if len(h) and (h.records[-1].dropped or h.records[-1].stragglers):
            last = h.records[-1]
            acc_text += (f"</b> &middot; this round {len(last.clients) - len(last.dropped)}"
                         f"/{len(last.clients)} reported, {len(last.stragglers)} straggled<b>")
        if len(h) and h.records[-1].client_accuracy:
            sp = h.client_spread()
            acc_text += (f"</b> &middot; clients: mean <b>{sp['mean'][-1]:.0%}</b>, "
                         f"worst <b>{sp['worst'][-1]:.0%}</b><b>")
        self.status.value = (f"{state}: <b>round {r}/{n}</b> &middot; global test accuracy "
                             f"<b>{acc_text}</b> &middot; {elapsed:.1f} s &middot; "
                             f"{mb:.1f} MB communicated")
        self.progress.value = min(r, n)
        self._draw(target=s["target"])

    # -- drawing ---------------------------------------------------------------------------------
    def make_figure(self, target: float | None = None) -> Figure:
        """The plot as a matplotlib Figure: accuracy and loss per round, and the legend.

        Finished runs and the run in progress are overlaid; IID baselines are dashed.
        """
        if target is None:
            target = self.controls["target"].value or None
        runs = list(self.histories) + [h for h in self.current if h not in self.histories]
        fig = _figure(12, 4)
        gs = fig.add_gridspec(1, 3, width_ratios=[1, 1, 0.75], wspace=0.25,
                              left=0.06, right=0.99, top=0.9, bottom=0.14)
        ax_acc, ax_loss, ax_leg = (fig.add_subplot(gs[0, i]) for i in range(3))
        plots.plot_convergence(runs, metric="accuracy", ax=ax_acc, target=target,
                               title="global model: test accuracy", legend=False)
        plots.plot_convergence(runs, metric="loss", ax=ax_loss,
                               title="global model: test loss", legend=False)
        dashed = {h.label for h in runs if id(h) in self.baselines}
        for ax in (ax_acc, ax_loss):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            for line in ax.get_lines():
                if line.get_label() in dashed:
                    line.set_linestyle("--")
        # the x axis spans the rounds asked for, from round 1, so the curve grows into it
        last = max([self.controls["rounds"].value] + [int(h.rounds[-1]) for h in runs if len(h)])
        for ax in (ax_acc, ax_loss):
            ax.set_xlim(0.5, last + 0.5)
        colors = {line.get_label(): line.get_color() for line in ax_acc.get_lines()}
        for h in runs:  # a backdoor's attack success rate, dotted, in the run's colour
            asr = h.attack_success if len(h) else np.array([])
            ok = np.isfinite(asr)
            if ok.any():
                ax_acc.plot(h.rounds[ok], asr[ok], ls=":", marker="x", ms=4,
                            color=colors.get(h.label), label=f"{h.label}: backdoor success")
        ax_leg.axis("off")
        handles, labels = ax_acc.get_legend_handles_labels()
        if handles:
            notes = {h.label: _note(h, h in self.current) for h in runs}
            labels = ["\n".join(textwrap.wrap(lab + notes.get(lab, ""), 32)) for lab in labels]
            ax_leg.legend(handles, labels, loc="upper left", fontsize=10, frameon=False,
                          borderaxespad=0)
        else:
            ax_leg.text(0, 0.9, "No runs yet: press Run.", fontsize=10,
                        transform=ax_leg.transAxes)
        return fig

    def _client_view_history(self) -> History | None:
        """The run the second view shows: the one in progress, else the last main run."""
        if self.current:
            return self.current[0]
        mains = [h for h in self.histories if id(h) not in self.baselines]
        return mains[-1] if mains else None

    def make_client_figure(self) -> Figure | None:
        """The second view as a Figure (None when no run has per-client figures or failures):
        the per-client accuracy spread, and which clients took part in each round."""
        h = self._client_view_history()
        if h is None or not len(h) or not (
                h.config.get("local_test_fraction") or h.config.get("dropout")
                or h.config.get("stragglers")):
            return None
        fig = _figure(12, 3.5)
        gs = fig.add_gridspec(1, 2, width_ratios=[1, 1.3], wspace=0.22, left=0.06, right=0.99,
                              top=0.88, bottom=0.27)
        ax_spread, ax_strip = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
        name = h.label.split(" ", 1)[0]
        plots.plot_client_spread(h, ax=ax_spread, title=f"{name}: each client's own test data")
        ax_spread.set_xlim(0.5, max(self.controls["rounds"].value, int(h.rounds[-1])) + 0.5)
        plots.plot_client_strip(h, ax=ax_strip, title=f"{name}: who took part (last 30 rounds)")
        return fig

    def _draw(self, target: float | None = None) -> None:
        with _RENDER_LOCK:
            self.image.value = _png(self.make_figure(target))
            fig = self.make_client_figure()
            if fig is None:
                self.client_image.layout.display = "none"
            else:
                self.client_image.value = _png(fig)
                self.client_image.layout.display = None
        self.draws += 1
