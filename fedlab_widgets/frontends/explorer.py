"""The partition explorer: sliders to split a dataset among clients, with a live heatmap.

Its controls are generated from the tables: the scheme dropdown from the registry of
partition schemes (:data:`~fedlab_widgets.partition.PARTITION_SCHEMES`), each scheme's
own parameter from its table, ``num_clients`` and ``seed`` from :data:`DATA_PARAMETERS`
and the run table.
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict

import ipywidgets as W
from matplotlib.ticker import MaxNLocator

from .. import plots
from ..config import run_parameter
from ..params import Param
from ..features import FEATURE_PARAMETERS, skew_features
from ..gallery import plot_client_digits
from ..partition import SCHEME_PARAMETERS, SCHEMES, Partition, partition
from .controls import (DEFAULT, RENDER_LOCK, Displayable, check_value, error_html, figure, param_control,
                       png_bytes, set_value)

__all__ = ["PartitionExplorer", "cached_partition", "cached_federation", "describe_heterogeneity",
           "DATA_PARAMETERS",
           "SCHEME_PARAMETER", "partition_controls", "show_scheme_parameter", "scheme_params"]

#: each scheme's own parameter (the first of its table) gets a control
SCHEME_PARAMETER = {scheme: (params[0] if params else None)
                    for scheme, params in SCHEME_PARAMETERS.items()}
#: the data settings of the explorer and the dashboard (the partition's own come from its scheme)
DATA_PARAMETERS: tuple[Param, ...] = (
    Param("scheme", "iid", kind="choice", choices=SCHEMES,
          doc="how the training data is split among the clients"),
    Param("num_clients", 100, kind="int", lo=1, ui=(1, 1000),
          doc="K: the number of clients the training data is split among"),
)
_DATA = {p.name: p for p in (*DATA_PARAMETERS, *FEATURE_PARAMETERS)}

_PARTITION_CACHE: "OrderedDict[tuple, Partition]" = OrderedDict()
_PARTITION_CACHE_SIZE = 16
_PARTITION_LOCK = threading.Lock()


def data_parameter(name: str) -> Param:
    """The Param behind an explorer control: a data setting, a scheme's own, or ``seed``."""
    if name in _DATA:
        return _DATA[name]
    for prm in SCHEME_PARAMETER.values():
        if prm is not None and prm.name == name:
            return prm
    return run_parameter(name)


def scheme_params(scheme: str, values: dict) -> dict:
    """The scheme's own parameter from a dict of control values."""
    prm = SCHEME_PARAMETER[scheme]
    return {} if prm is None else {prm.name: values[prm.name]}


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
    key = (id(train), scheme, None if num_clients is None else int(num_clients), int(seed),
           tuple(sorted((k, repr(v)) for k, v in params.items())))
    with _PARTITION_LOCK:
        if key in _PARTITION_CACHE:
            _PARTITION_CACHE.move_to_end(key)
            return _PARTITION_CACHE[key]
    p = partition(train, scheme, num_clients, seed=seed, **params)
    with _PARTITION_LOCK:
        _PARTITION_CACHE[key] = p
        while len(_PARTITION_CACHE) > _PARTITION_CACHE_SIZE:
            _PARTITION_CACHE.popitem(last=False)
    return p


def cached_federation(train, p: Partition, *, rotation: str = "none", noise: float = 0.0,
                      seed: int = 0):
    """``(data, p)``: ``train`` feature-skewed for partition ``p``
    (:func:`~fedlab_widgets.features.skew_features`; ``train`` itself without skew) and ``p``
    measuring its feature skew on those images; remembered like :func:`cached_partition`."""
    if rotation == "none" and not noise:
        return train, p
    key = ("skew", id(train), id(p), rotation, float(noise), int(seed))
    with _PARTITION_LOCK:
        if key in _PARTITION_CACHE:
            _PARTITION_CACHE.move_to_end(key)
            return _PARTITION_CACHE[key][1:]
    data = skew_features(train, p, rotation=rotation, noise=noise, seed=seed)
    with _PARTITION_LOCK:
        _PARTITION_CACHE[key] = (p, data, p.with_images(data.images))   # p kept: ids not reused
        while len(_PARTITION_CACHE) > _PARTITION_CACHE_SIZE:
            _PARTITION_CACHE.popitem(last=False)
        return _PARTITION_CACHE[key][1:]


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
    text = (
        f"On average a client's label mix is {tv:.0%} away from the global mix "
        f"(total-variation distance {tv:.2f}; 0% would be IID, 100% means clients share no labels "
        f"with the global mix); a typical client effectively holds {eff:.1f} of "
        f"{p.num_classes} classes; client sizes vary by {cv:.0%} (coefficient of variation "
        f"{cv:.2f}): from {h['min_size']} to {h['max_size']} samples, "
        f"{h['mean_size']:.0f} on average."
    )
    if "feature_skew" in h:
        text += (f" Feature skew: a client's mean image of a digit is {h['feature_skew']:.2f} "
                 f"(RMS per pixel, in pixel standard deviations, sampling noise removed; 0 for "
                 f"random clients) from everyone's; pixel spread skew {h['pixel_spread_skew']:.2f} "
                 f"(noisy or bold clients raise it).")
    return text


def partition_controls(*, scheme, num_clients, seed, max_num_clients, **scheme_values) -> dict:
    """The partition's controls: scheme, each scheme's own parameter, number of clients, seed."""
    c = {"scheme": param_control(_DATA["scheme"], scheme)}
    for prm in SCHEME_PARAMETER.values():
        if prm is not None and prm.name not in c:
            c[prm.name] = param_control(prm, scheme_values.get(prm.name, DEFAULT))
    c["num_clients"] = param_control(_DATA["num_clients"], num_clients)
    c["num_clients"].max = max(max_num_clients, num_clients)
    for prm in FEATURE_PARAMETERS:
        c[prm.name] = param_control(prm, scheme_values.get(prm.name, DEFAULT))
    c["seed"] = W.IntText(value=run_parameter("seed").check(seed), description="seed",
                          layout=W.Layout(width="220px"), style={"description_width": "120px"})
    c["seed"].tooltip = run_parameter("seed").doc
    return c


def show_scheme_parameter(controls: dict) -> None:
    """Show the chosen scheme's own parameter only."""
    keep = SCHEME_PARAMETER[controls["scheme"].value]
    for prm in SCHEME_PARAMETER.values():
        if prm is not None:
            controls[prm.name].layout.display = None if keep is not None and \
                prm.name == keep.name else "none"


class PartitionExplorer(Displayable):
    """Sliders to partition a dataset among clients, with a live label heatmap.

    Every change redraws the per-client label heatmap and client sizes and
    describes in words how non-IID the partition is (label, size and feature skew).
    Given a dataset (not only labels), it also shows one client's handwriting: its
    mean image per digit and some of its digits (``show client``), as feature skew
    (rotation, noise) leaves them. A combination that cannot
    be partitioned (for example a Dirichlet ``alpha`` so small that some client
    ends up below the minimum size) shows the error in the widget and keeps the
    previous partition.

    Parameters
    ----------
    train : FederatedDataset or label tensor
        The training set whose samples are partitioned (its ``.labels``).
    scheme : str, default "dirichlet"
        A name from :data:`~fedlab_widgets.partition.SCHEMES`.
    num_clients : int, default 20
    seed : int, default 0
    max_clients : int, default 50
        Draw at most this many clients (the partition itself has all of them).
    **scheme_values
        Each scheme's own parameter (``alpha``, ``shards_per_client``,
        ``classes_per_client``, ``sigma``, ``exponent``, ``population``): see
        :func:`partition`; and the feature skew (``rotation``, ``noise``): see
        :func:`~fedlab_widgets.features.skew_features`.

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

    def __init__(self, train, *, scheme: str = "dirichlet", num_clients: int = 20, seed: int = 0,
                 max_clients: int = 50, **scheme_values):
        own = {p.name for p in SCHEME_PARAMETER.values() if p is not None} | {
            p.name for p in FEATURE_PARAMETERS}
        unknown = sorted(set(scheme_values) - own)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; the schemes' own "
                             f"parameters are {', '.join(sorted(own))}")
        self.train = train
        self.max_clients = max_clients
        self.partition: Partition | None = None
        self.error: str | None = None
        self.controls = partition_controls(scheme=scheme, num_clients=num_clients, seed=seed,
                                           max_num_clients=1000, **scheme_values)
        self.image = W.Image(format="png", layout=W.Layout(width="720px", height="450px",
                                                            object_fit="contain"))
        self.image.add_class("fedlab-plot")
        self.data = train           # what the clients hold: train, feature-skewed if asked
        self.has_images = hasattr(train, "images")
        # a client's handwriting: its mean image per digit and some of its digits
        self.client = W.BoundedIntText(value=0, min=0, max=max(0, num_clients - 1),
                                       description="show client", layout=W.Layout(width="220px"),
                                       style={"description_width": "120px"})
        self.client.tooltip = "whose handwriting to show: a client index from 0 to num_clients - 1"
        self.gallery = W.Image(format="png", layout=W.Layout(width="720px", object_fit="contain"))
        self.gallery.add_class("fedlab-gallery")
        self.stats = W.HTML(layout=W.Layout(max_width="720px"))
        self.stats.add_class("fedlab-stats")
        self.message = W.HTML()
        self.message.add_class("fedlab-message")
        left = W.VBox(list(self.controls.values()) + ([self.client] if self.has_images else []),
                      layout=W.Layout(width="360px"))
        right = [self.image, self.stats] + ([self.gallery] if self.has_images else [])
        # an error gets its own full-width row above, so it never squeezes the controls
        self.widget = W.VBox([self.message, W.HBox([left, W.VBox(right)])])
        self.widget.add_class("fedlab-explorer")
        self._holding = False
        for c in self.controls.values():
            c.observe(self._on_change, names="value")
        self.client.observe(lambda _: self._draw_client(), names="value")
        if not self.has_images:            # labels only: no images to rotate or noise
            for prm in FEATURE_PARAMETERS:
                self.controls[prm.name].layout.display = "none"
        self.draws = 0
        self._refresh()

    def values(self) -> dict:
        """The current control values."""
        return {k: c.value for k, c in self.controls.items()}

    def update(self, **values) -> "PartitionExplorer":
        """Set control values (e.g. ``update(scheme="shards", num_clients=50)``) and redraw once.

        Raises ValueError for an unknown name or a bad value (naming it and its range;
        nothing is changed then); a combination that cannot be partitioned is shown in
        the widget instead.
        """
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}; "
                             f"the settings are {', '.join(self.controls)}")
        checked = {k: check_value(data_parameter(k), self.controls[k], v)
                   for k, v in values.items()}   # all checked before any is set
        self._holding = True
        try:
            for k, v in checked.items():
                set_value(data_parameter(k), self.controls[k], v)
        finally:
            self._holding = False
        self._refresh()
        return self

    def _on_change(self, change) -> None:
        if not self._holding:
            self._refresh()

    def _refresh(self) -> None:
        show_scheme_parameter(self.controls)
        v = self.values()
        try:
            for k, value in v.items():   # a NaN typed into a box is refused, not kept
                data_parameter(k).check(value)
            p = cached_partition(self.train, v["scheme"], v["num_clients"], seed=v["seed"],
                                 **scheme_params(v["scheme"], v))
            if not self.has_images and (v["rotation"] != "none" or v["noise"]):
                raise ValueError("rotation and noise need the images: give the explorer the "
                                 "dataset (PartitionExplorer(train, ...)), not its labels")
            data, measured = (cached_federation(self.train, p, rotation=v["rotation"],
                                                noise=v["noise"], seed=v["seed"])
                              if self.has_images else (self.train, p))
        except ValueError as e:
            self.error = str(e)
            kept = " The plot still shows the previous partition." if self.partition else ""
            self.message.value = error_html(str(e) + kept)
            return
        self.error = None
        self.message.value = ""
        self.partition, self.data = p, data
        self.stats.value = f"<p>{html.escape(describe_heterogeneity(measured))}</p>"
        with RENDER_LOCK:
            fig = plots.plot_partition(p, fig=figure(9, 5.6), max_clients=self.max_clients)
            for ax in fig.axes[:2]:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            self.image.value = png_bytes(fig)
        self.client.max = p.num_clients - 1      # clamps the shown client's index
        self._draw_client()
        self.draws += 1

    def _draw_client(self) -> None:
        """Draw the chosen client's mean image per digit and some of its digits."""
        if not self.has_images or self.partition is None:
            return
        with RENDER_LOCK:
            fig = plot_client_digits(self.data, self.partition, int(self.client.value),
                                     fig=figure(9, 2.2))
            self.gallery.value = png_bytes(fig)
