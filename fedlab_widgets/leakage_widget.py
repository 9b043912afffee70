"""A widget that rebuilds a test digit from what a client shares, live (notebook 07).

Pick a digit, pick what the client sends (its gradient, a FedAvg update, a noisy or
sparsified gradient), press Run: the reconstruction is redrawn after every L-BFGS
step of :func:`fedlab_widgets.leakage.invert_gradients`. This module uses
:mod:`fedlab_widgets.leakage`; nothing there imports it.
"""

from __future__ import annotations

import threading
import time

import ipywidgets as W
import numpy as np
from matplotlib.figure import Figure

from . import leakage as L
from .models import get_model
from .frontends.controls import Displayable, error_html, png_bytes

__all__ = ["LeakageDemo", "SHARES"]

# what the client sends: name -> function(model, x, y) -> gradient-like list
SHARES = {
    "gradient (FedSGD)": lambda m, x, y: L.client_gradient(m, x, y),
    "FedAvg update, 5 local steps": lambda m, x, y: L.fedavg_update(m, x, y, local_steps=5, lr=0.1),
    "gradient + noise std 0.01": lambda m, x, y: L.add_noise(L.client_gradient(m, x, y), 0.01),
    "gradient + noise std 0.1": lambda m, x, y: L.add_noise(L.client_gradient(m, x, y), 0.1),
    "top 10% of the gradient": lambda m, x, y: L.top_k(L.client_gradient(m, x, y), 0.1),
}


class LeakageDemo(Displayable):
    """Reconstruct a test digit from the gradient (or update) a client would send.

    Parameters
    ----------
    test : FederatedDataset
        Where the digits come from (MNIST's test set).
    index : int, default 0
        The digit to attack.
    share : str, default "gradient (FedSGD)"
        What the client sends: one of :data:`SHARES`.
    iterations : int, default 100
        L-BFGS steps.
    seed : int, default 0
        The attacker's random start and the LeNet's initial weights.

    Examples
    --------
    >>> from fedlab_widgets import load_mnist
    >>> _, test = load_mnist()
    >>> demo = LeakageDemo(test, index=3, iterations=5)
    >>> images = demo.run(blocking=True)
    >>> images.shape
    torch.Size([1, 1, 28, 28])
    """

    def __init__(self, test, *, index: int = 0, share: str = "gradient (FedSGD)",
                 iterations: int = 100, seed: int = 0):
        if share not in SHARES:
            raise ValueError(f"share must be one of {', '.join(SHARES)}; got {share!r}")
        self.test = test
        self.model = get_model("lenet", seed=seed).double()
        self.seed = seed
        self.controls = {
            "index": W.BoundedIntText(value=index, min=0, max=len(test) - 1,
                                      description="test image index", layout=W.Layout(width="200px")),
            "share": W.Dropdown(options=list(SHARES), value=share, description="client sends",
                                style={"description_width": "100px"},
                                layout=W.Layout(width="380px")),
            "iterations": W.IntSlider(value=iterations, min=1, max=300,
                                      description="L-BFGS steps", continuous_update=False),
        }
        self.run_button = W.Button(description="Run", button_style="success", icon="play")
        self.run_button.on_click(lambda _: self.run())
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True,
                                    tooltip="stop the attack after its current step")
        self.stop_button.on_click(lambda _: self.stop())
        self._stop = threading.Event()
        self.status = W.HTML("Ready: press <b>Run</b> to attack.")
        self.message = W.HTML()
        self.image = W.Image(format="png", layout=W.Layout(width="880px"))
        self.widget = W.VBox([W.HBox([self.controls["index"], self.controls["share"]]),
                              W.HBox([self.controls["iterations"], self.run_button,
                                      self.stop_button]),
                              self.status, self.message, self.image])
        self.widget.add_class("fedlab-leakage")
        self.result = None     # (images, labels, mse) of the last attack
        self._thread: threading.Thread | None = None
        self.draws = 0
        x, y = L.pixels(test, index)
        self._draw(x, None, 0, SHARES[share](self.model, x, y))

    def _draw(self, original, current, step, sent=None) -> None:
        if sent is not None:
            self._sent = sent[-2].detach()      # the last layer's weights: [classes, features]
        fig = Figure(figsize=(9.0, 2.4))
        axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 2.2, 1]})
        for ax, img, title in ((axes[0], original, "the client's digit"),
                               (axes[2], current, f"attacker's guess, step {step}")):
            if img is not None:
                ax.imshow(np.clip(img[0, 0].numpy(), 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        g = self._sent.numpy()
        lim = float(np.abs(g).max()) or 1.0
        axes[1].imshow(g, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
        axes[1].set_title("what it sends: last layer's gradient\n(one row per class; red < 0)",
                          fontsize=9)
        axes[1].set_yticks(range(g.shape[0]))
        axes[1].tick_params(labelsize=7)
        axes[1].set_xticks([])
        fig.tight_layout()
        self.image.value = png_bytes(fig)
        self.draws += 1

    def run(self, *, blocking: bool = False):
        """Attack the chosen digit; with ``blocking=True`` return the reconstruction."""
        if self._thread is not None and self._thread.is_alive():
            self.message.value = error_html("an attack is already running", "warning")
            return None
        if blocking:
            return self._attack()
        self._thread = threading.Thread(target=self._attack, args=(False,), daemon=True)
        self._thread.start()
        return None

    def stop(self) -> None:
        """Stop a running attack after its current step (the last guess stays on screen)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def _attack(self, raise_errors: bool = True):
        self.message.value = ""
        idx, share = self.controls["index"].value, self.controls["share"].value
        x, y = L.pixels(self.test, idx)
        sent = SHARES[share](self.model, x, y)
        label = L.infer_label(sent)
        self._draw(x, None, 0, sent)
        self._stop.clear()
        self.run_button.disabled, self.stop_button.disabled = True, False
        t0, last = time.perf_counter(), [0.0]

        def show(step, images):
            if self._stop.is_set():
                self._draw(x, images, step + 1)
                raise _Stopped(step + 1)
            now = time.perf_counter()
            if now - last[0] > 0.25:          # redraw at most four times a second
                last[0] = now
                self._draw(x, images, step + 1)
                self.status.value = f"Attacking: step {step + 1} &middot; {now - t0:.1f} s"
        try:
            images, labels = L.invert_gradients(self.model, sent, seed=self.seed,
                                                iterations=self.controls["iterations"].value,
                                                callback=show)
        except _Stopped as stopped:
            self.status.value = (f"Stopped by the user at step {stopped.args[0]} after "
                                 f"{time.perf_counter() - t0:.1f} s: the last guess is shown; "
                                 f"press <b>Run</b> to start again")
            return None
        except Exception as e:   # noqa: BLE001 - show it, keep the widget alive
            self.message.value = error_html(f"{type(e).__name__}: {e}")
            if raise_errors:
                raise
            return None
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True
        mse = float(L.reconstruction_mse(images, x)[0])
        self.result = (images, labels, mse)
        self._draw(x, images, "final")
        verdict = "recovered" if mse < 0.01 else "not recovered"
        self.status.value = (f"Done in {time.perf_counter() - t0:.1f} s: label read off the "
                             f"update <b>{label}</b> (true {int(y[0])}); pixel MSE "
                             f"<b>{mse:.2g}</b>: {verdict}")
        return images


class _Stopped(Exception):
    """Raised from the attack's callback when the user presses Stop."""
