"""A live vertical federation (notebook 09b): choose the parties and the defence, press Run.

Controls are generated from :data:`fedlab_widgets.vertical.VERTICAL_PARAMETERS` (the table that
validates :class:`~fedlab_widgets.vertical.VerticalFederation`), so a bad value gets the same
message as in Python and changes nothing: the last runs and the figure stay. After every epoch
the figure shows what each party sees, the accuracy and the leak AUC so far; every run adds a
row to the table (accuracy, test AUC, leak AUC, MB on the wire), so runs can be compared.
"""

from __future__ import annotations

import html
import threading

import ipywidgets as W
import numpy as np

from ..params import Param, check_params
from ..vertical import VERTICAL_PARAMETERS, VerticalFederation, feature_blocks
from ..vertical.plots import plot_party_views
from .controls import RENDER_LOCK, Displayable, control_value, error_html, figure, param_control, png_bytes, set_value

__all__ = ["VerticalDemo", "SHOWN"]

#: the settings the demo shows, in order (the rest keep their defaults)
SHOWN = ("layout", "embedding", "positive", "defence", "noise", "lr", "seed")
EPOCHS = Param("epochs", 1, kind="int", lo=1, hi=20, doc="epochs of split training per run")


class VerticalDemo(Displayable):
    """Split training across feature blocks, live, with Li et al.'s label leakage on a binary task.

    Parameters
    ----------
    train, test : FederatedDataset
    **settings
        Initial values of :data:`SHOWN` and ``epochs`` (each checked by its Param).

    Examples
    --------
    >>> from fedlab_widgets import load_mnist
    >>> train, test = load_mnist()
    >>> demo = VerticalDemo(train.subset(range(2000)), test.subset(range(500)), positive=0)
    >>> demo.run(blocking=True)["accuracy"] > 0.9
    True
    >>> demo.set(noise=-1)
    Traceback (most recent call last):
    ValueError: noise must be a number from 0 to 100; got -1
    """

    def __init__(self, train, test, **settings):
        self.train, self.test = train, test
        self.params = {p.name: p for p in VERTICAL_PARAMETERS if p.name in SHOWN} | {"epochs": EPOCHS}
        start = check_params("VerticalDemo", self.params.values(), settings)
        self.controls = {n: param_control(p, start[n]) for n, p in self.params.items()}
        self.run_button = W.Button(description="Run", button_style="success", icon="play")
        self.run_button.on_click(lambda _: self.run())
        self.status = W.HTML("Ready: press <b>Run</b> to train.")
        self.message = W.HTML()
        self.image = W.Image(format="png", layout=W.Layout(width="820px"))
        self.table = W.HTML()
        c = self.controls
        self.widget = W.VBox([W.HBox([c["layout"], c["embedding"], c["epochs"]]),
                              W.HBox([c["positive"], c["defence"], c["noise"]]),
                              W.HBox([c["lr"], c["seed"], self.run_button]),
                              self.status, self.message, self.image, self.table])
        self.widget.add_class("fedlab-vertical")
        self.runs: list[dict] = []
        self.fed: VerticalFederation | None = None
        self._thread: threading.Thread | None = None
        self._draw(feature_blocks(start["layout"]), [])

    def settings(self) -> dict:
        """The controls' values, checked (a ValueError naming the first bad one)."""
        given = {n: control_value(p, self.controls[n]) for n, p in self.params.items()}
        return check_params("VerticalDemo", self.params.values(), given)

    def set(self, **values) -> None:
        """Set controls from Python; every value is checked before any is shown."""
        checked = check_params("VerticalDemo", self.params.values(), values, defaults=False)
        for n, v in checked.items():
            set_value(self.params[n], self.controls[n], v)

    def run(self, *, blocking: bool = False):
        """Train with the controls' settings; ``blocking=True`` returns the run's last row."""
        if self._thread is not None and self._thread.is_alive():
            self.message.value = error_html("a run is already going", "warning")
            return None
        try:
            s = self.settings()
        except ValueError as e:     # the message, and nothing else changes
            self.message.value = error_html(str(e))
            return None
        self.message.value = ""
        if blocking:
            return self._train(s)
        self._thread = threading.Thread(target=self._train, args=(s,), daemon=True)
        self._thread.start()
        return None

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def _train(self, s: dict):
        epochs = s.pop("epochs")
        self.run_button.disabled = True
        try:
            fed = VerticalFederation(self.train, self.test, **s)
            self.fed = fed

            def show(row):
                self.status.value = _status(fed, row, epochs)
                self._draw(fed.blocks, fed.history)
            fed.fit(epochs, callback=show)
        except Exception as e:  # noqa: BLE001 - shown, and the widget stays alive
            self.message.value = error_html(f"{type(e).__name__}: {e}")
            return None
        finally:
            self.run_button.disabled = False
        row = dict(fed.history[-1], label=_label(s))
        self.runs.append(row)
        self.table.value = _table(self.runs)
        return row

    def _draw(self, blocks, history) -> None:
        with RENDER_LOCK:
            fig = figure(8.2, 2.2)
            n = blocks.num_parties
            axes = fig.subplots(1, n + 1, gridspec_kw={"width_ratios": [1] * n + [2.4]})
            plot_party_views(blocks, self.test.images[0], axes=axes[:n])
            ax = axes[-1]
            if history:
                ep = [r["epoch"] for r in history]
                ax.plot(ep, [r["accuracy"] for r in history], "o-", label="test accuracy")
                if "leak_auc" in history[-1]:
                    ax.plot(ep, [r["leak_auc"] for r in history], "s--", label="leak AUC (norm attack)")
                ax.set_ylim(0.4, 1.0)
                ax.set_xlabel("epoch")
                ax.legend(fontsize=7, loc="lower right")
            else:
                ax.text(0.5, 0.5, "press Run", ha="center", va="center")
                ax.axis("off")
            fig.tight_layout()
            self.image.value = png_bytes(fig)


def _label(s: dict) -> str:
    task = "10 digits" if s["positive"] is None else f"{s['positive']} vs rest"
    defence = "" if s["defence"] == "none" else f", {s['defence']} {s['noise']:g}"
    return f"{s['layout']}, {task}, embedding {s['embedding']}{defence}, seed {s['seed']}"


def _status(fed, row, epochs) -> str:
    parts = [f"Epoch {row['epoch']}/{epochs}", f"accuracy <b>{row['accuracy']:.1%}</b>",
             f"{row['bytes'] / 1e6:.1f} MB on the wire"]
    if "leak_auc" in row:
        parts += [f"test AUC {row['test_auc']:.4f}", f"leak AUC <b>{row['leak_auc']:.2f}</b> (0.5: a guess)"]
    return " &middot; ".join(parts)


def _table(runs) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(r['label'])}</td><td>{r['accuracy']:.1%}</td>"
        f"<td>{r.get('test_auc', np.nan):.4f}</td><td>{r.get('leak_auc', np.nan):.2f}</td>"
        f"<td>{r['bytes'] / 1e6:.1f}</td></tr>" for r in runs)
    return ("<table><tr><th>run</th><th>accuracy</th><th>test AUC</th><th>leak AUC</th><th>MB</th></tr>"
            f"{cells}</table>")
