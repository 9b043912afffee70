"""The live FedAvg dashboard, built for the lesson: only the sections it asks for.

Every control is generated from its :class:`~fedlab_widgets.params.Param` (see
:mod:`.settings`); the settings it trains with are a
:class:`~fedlab_widgets.config.RunConfig` (:meth:`FedAvgDashboard.run_config`); the
training thread is a :class:`~fedlab_widgets.frontends.runner.Runner`, and what it draws
comes from :mod:`.figures`.
"""

from __future__ import annotations

import time
import weakref

from matplotlib.figure import Figure

from ..config import RunConfig
from ..datasets import load_mnist
from ..history import History
from ..simulation import Simulation
from .controls import (DEFAULT, RENDER_LOCK, Displayable, check_value, control_value,
                       error_html, param_control, png_bytes, set_value)
from ..features import FEATURE_PARAMETERS
from .explorer import SCHEME_PARAMETER, partition_controls, show_scheme_parameter
from .figures import client_figure, runs_figure, status_text
from .layout import dashboard_layout, dashboard_parts
from .runner import Runner
from .settings import (CHOOSERS, DEFAULT_SECTIONS, DESCRIPTIONS, SECTIONS, make_algorithm,
                       make_attack, named_values, run_config_for, setting_parameter,
                       simulations_for)

__all__ = ["FedAvgDashboard"]

_LIVE: "weakref.WeakSet" = weakref.WeakSet()  # dashboards of this kernel, to stop orphaned runs


class FedAvgDashboard(Displayable):
    """Train FedAvg with sliders and watch the global model's test accuracy live.

    Press Run to train with the current settings in a background thread (the notebook
    stays responsive); the plot is redrawn after every round, Stop ends the run after the
    current round and keeps its partial curve, and every finished run stays overlaid,
    labelled with its settings. Errors (a bad value, a partition that cannot be made, a
    diverging run) are shown in the widget; earlier runs are kept.

    Parameters
    ----------
    train, test : FederatedDataset or None
        The datasets (``None`` loads MNIST with :func:`load_mnist`, once).
    sections : tuple of str or "all", default ("data", "training", "run")
        The boxes of controls the lesson shows, from :data:`SECTIONS`: ``"data"``,
        ``"training"``, ``"run"``, ``"algorithm"``, ``"attack"``, ``"defence"``,
        ``"devices"``. Settings of hidden sections still apply.
    **settings
        Any control by name: the run settings (``client_fraction``, ``local_epochs``,
        ``batch_size``, ``lr``, ``rounds``, ``seed``, ``target_accuracy`` (alias
        ``target``), ``dropout``, ``stragglers``, ``straggler_mode``: see
        :data:`~fedlab_widgets.config.RUN_PARAMETERS`), ``scheme``, ``num_clients`` and
        each scheme's own parameter, :data:`DASHBOARD_PARAMETERS` (``model``,
        ``algorithm``, ``aggregator``, ``attack``, ``compression``, ``compare_iid``, ...)
        and the chosen algorithm's, aggregator's and attack's parameters (the attack's
        with an ``attack_`` prefix: ``attack_fraction``, ``attack_target``, ...). Each is
        checked by its Param, with the message the Python API gives.

    Attributes
    ----------
    controls : dict of str to ipywidgets.Widget
        One control per setting, keyed by the names above.
    run_button, stop_button, clear_button : ipywidgets.Button
    status, message : ipywidgets.HTML
    progress : ipywidgets.IntProgress
    image, client_image : ipywidgets.Image
        The accuracy and loss plot; the per-client view (shown when it has something).
    histories : list of History
        Finished (or stopped) runs, in order; baselines included.

    Examples
    --------
    >>> from fedlab_widgets import load_mnist
    >>> from fedlab_widgets.widgets import FedAvgDashboard
    >>> train, test = load_mnist()
    >>> dashboard = FedAvgDashboard(train, test, num_clients=20, rounds=3,
    ...                             sections=("data", "training", "algorithm"))
    >>> dashboard.run_config().rounds
    3
    >>> history = dashboard.run(blocking=True)      # doctest: +SKIP
    """

    def __init__(self, train=None, test=None, *, sections=DEFAULT_SECTIONS, **settings):
        sections = tuple(SECTIONS) if sections == "all" else tuple(sections)
        bad = [s for s in sections if s not in SECTIONS]
        if bad or not sections:
            raise ValueError(f"sections must be a list of {', '.join(SECTIONS)} (or 'all'); "
                             f"got {sections!r}")
        self.sections = sections
        settings = named_values(settings)
        if train is None or test is None:
            train, test = load_mnist()
        self.train, self.test = train, test
        self.histories: list[History] = []
        self.baselines: set[int] = set()   # ids of histories that are baselines (dashed)
        self.last_error: str | None = None
        self.draws = 0
        self._runner: Runner | None = None
        self._runs = 0
        self._transient: str | None = None  # a message that goes away when the run ends
        self._make_controls(settings)
        self._make_layout()
        self._draw()
        # Re-running the cell that built a dashboard leaves the old object training with no
        # Stop button on screen: a new dashboard stops the runs of the old ones.
        for old in list(_LIVE):
            if old.running:
                old.stop()
                old._show_error("stopped: a new dashboard was created in this kernel", "warning")
        _LIVE.add(self)

    # -- controls ----------------------------------------------------------------------------
    def _make_controls(self, settings: dict) -> None:
        names = [n for _, (_, ns) in SECTIONS.items() for n in ns]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; the settings are "
                             f"{', '.join(names)}")
        values = {n: check_value(setting_parameter(n), None, v) for n, v in settings.items()}
        c = partition_controls(scheme=values.get("scheme", "iid"),
                               num_clients=values.get("num_clients", 100),
                               seed=values.get("seed", 0), max_num_clients=1000,
                               **{p.name: values[p.name] for p in (*SCHEME_PARAMETER.values(),
                                                                   *FEATURE_PARAMETERS)
                                  if p is not None and p.name in values})
        for n in names:
            if n not in c:
                c[n] = param_control(setting_parameter(n), values.get(n, DEFAULT),
                                     description=DESCRIPTIONS.get(n, n.replace("attack_", "")))
        self.controls = c
        c["x_axis"].observe(lambda _: self._draw(), names="value")
        c["scheme"].observe(lambda _: show_scheme_parameter(c), names="value")
        show_scheme_parameter(c)
        for chooser in CHOOSERS:
            c[chooser].observe(lambda _, ch=chooser: self._show_chosen(ch, reset=True),
                               names="value")
            self._show_chosen(chooser, reset=True, keep=values)
        s = self.settings()
        make_algorithm(s), make_attack(s)   # the combination checked: a ValueError names it

    def _show_chosen(self, chooser: str, reset: bool = False, keep=()) -> None:
        """Show the parameters of what ``chooser`` selects, only; ``reset``: at its defaults
        (the values in ``keep`` stay: the ones given to the constructor)."""
        tables, union, prefix = CHOOSERS[chooser]
        chosen = self.controls[chooser].value
        table = {prefix + p.name: p for p in tables.get(chosen, ())}
        for name in union:
            self.controls[name].layout.display = None if name in table else "none"
            if reset and name in table and name not in keep:
                set_value(table[name], self.controls[name], table[name].default)

    def _make_layout(self) -> None:
        parts = dashboard_parts(self.controls["rounds"].value)
        for name, w in parts.items():
            setattr(self, name, w)
        self.status.value = self._ready_text()
        self.run_button.on_click(lambda _: self.run(blocking=False))
        self.stop_button.on_click(lambda _: self.stop())
        self.clear_button.on_click(lambda _: self.clear())
        self.widget = dashboard_layout(self.controls, self.sections, parts)

    # -- settings ------------------------------------------------------------------------------
    def settings(self) -> dict:
        """Every control's current value, by setting name."""
        return {k: control_value(setting_parameter(k), c) for k, c in self.controls.items()}

    def run_config(self) -> RunConfig:
        """The run settings the controls describe, checked by the run table."""
        return run_config_for(self.settings(), num_test=len(self.test.labels))

    def update(self, **values) -> "FedAvgDashboard":
        """Set controls programmatically, e.g. ``update(lr=0.1, local_epochs=5)``.

        Every value is checked first (a ValueError names the setting and its valid range)
        and nothing is changed if one is bad.
        """
        values = named_values(values)
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}; "
                             f"the settings are {', '.join(self.controls)}")
        checked = {k: check_value(setting_parameter(k), self.controls[k], v)
                   for k, v in values.items()}
        for chooser in CHOOSERS:   # first: switching resets its parameters to their defaults
            if chooser in checked:
                self.controls[chooser].value = checked.pop(chooser)
        for k, v in checked.items():
            set_value(setting_parameter(k), self.controls[k], v)
        if "rounds" in values and not self.running:
            self.status.value = self._ready_text()
        return self

    def _ready_text(self) -> str:
        return f"Ready: press <b>Run</b> to train for {self.controls['rounds'].value} rounds."

    # -- running -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while a run is in progress."""
        return self._runner is not None

    @property
    def current(self) -> list[History]:
        """The histories of the run in progress (empty when none is)."""
        r = self._runner
        return [] if r is None else r.histories

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
        self.message.value, self.last_error = "", None
        n = self.controls["rounds"].value
        self.progress.max, self.progress.value = n, 0
        self.status.value = "Preparing the partition and the global model..."
        try:
            s, sims = self._build()
        except Exception as e:  # bad settings: show, keep earlier runs
            self._show_error(str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}")
            self.status.value = "Not started: fix the setting named below and press Run again."
            if blocking:
                raise
            return None
        t0 = time.perf_counter()
        runner = Runner(sims, s["rounds"], on_round=lambda r: self._report(r, t0),
                        on_done=lambda r, e: self._finish(r, e, t0))
        self.baselines.update(id(sim.history) for sim in sims[1:])
        self._runner = runner
        self._set_running(True)
        if not blocking:
            runner.start()
            return None
        runner.run()
        if runner.error is not None:
            raise runner.error
        return sims[0].history

    def _build(self) -> tuple[dict, list[Simulation]]:
        s = self.settings()
        self._runs += 1
        sims, warnings = simulations_for(s, self.run_config(), self.train, self.test,
                                         number=self._runs)
        for w in warnings:
            self._show_error(w, "warning")
        return s, sims

    def _finish(self, runner: Runner, error: BaseException | None, t0: float) -> None:
        """The run ended (finished, stopped, diverged or failed): keep what it made."""
        for h in runner.histories:
            if len(h):
                self.histories.append(h)
            else:
                self.baselines.discard(id(h))
        if error is not None:
            self._show_error(f"{type(error).__name__}: {error}")
        else:
            diverged = [h for h in runner.histories if h.diverged]
            if diverged:
                self._show_error("; ".join(f"{h.label.split(' ', 1)[0]} {h.stop_reason}"
                                           for h in diverged))
        self._runner = None
        self._report(runner, t0, final=True)
        self._set_running(False)

    def stop(self) -> None:
        """Stop the run in progress after its current round (its curve is kept)."""
        r = self._runner
        if r is not None:
            r.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background run to finish; True if none is running any more."""
        r = self._runner
        if r is not None:
            r.join(timeout)
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
        self.run_button.disabled = self.clear_button.disabled = running
        self.stop_button.disabled = not running
        if not running and self._transient is not None:
            if self.message.value == self._transient:  # "already in progress" is stale now
                self.message.value = ""
                self.last_error = None
            self._transient = None

    def _show_error(self, text: str, kind: str = "error", transient: bool = False) -> None:
        self.last_error = text
        self.message.value = error_html(text, kind)
        self._transient = self.message.value if transient else None

    # -- drawing --------------------------------------------------------------------------------
    def _target(self):
        return control_value(setting_parameter("target_accuracy"), self.controls["target_accuracy"])

    def _report(self, runner: Runner, t0: float, final: bool = False) -> None:
        h = runner.histories[0]
        self.status.value = status_text(h, runner.rounds, time.perf_counter() - t0,
                                        target=self._target(), final=final)
        self.progress.value = min(h.records[-1].round if len(h) else 0, runner.rounds)
        self._draw()

    def make_figure(self, target: float | None = None) -> Figure:
        """The plot as a matplotlib Figure: accuracy and loss per round, and the legend."""
        runs = list(self.histories) + [h for h in self.current if h not in self.histories]
        return runs_figure(runs, baselines=self.baselines, running=self.current,
                           rounds=self.controls["rounds"].value, x=self.controls["x_axis"].value,
                           target=self._target() if target is None else target)

    def make_client_figure(self) -> Figure | None:
        """The second view (the run in progress, else the last main run), or None."""
        mains = [h for h in self.histories if id(h) not in self.baselines]
        h = self.current[0] if self.current else (mains[-1] if mains else None)
        return client_figure(h, rounds=self.controls["rounds"].value)

    def _draw(self) -> None:
        with RENDER_LOCK:
            self.image.value = png_bytes(self.make_figure())
            fig = self.make_client_figure()
            if fig is None:
                self.client_image.layout.display = "none"
            else:
                self.client_image.value = png_bytes(fig)
                self.client_image.layout.display = None
        self.draws += 1
