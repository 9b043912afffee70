"""A widget from a :class:`~fedlab_widgets.params.Param`, and what every front end shares.

Every control of the explorer and the dashboard is generated here from its Param: its
kind (slider, log slider, integer slider, dropdown, checkbox), range, step, log scale and
tooltip (the Param's doc) come from the table, and a value typed or set from Python is
checked by the Param itself, so the widget says what the Python API and the command line
say ("lr must be a number > 0; got 0"). Plots are drawn with matplotlib's Agg backend
into PNG bytes and shown in a fixed-size :class:`ipywidgets.Image` (no ipympl), so they
work in JupyterLab, Notebook 7, VS Code and Colab, and from a background thread.

Examples
--------
>>> from fedlab_widgets.config import run_parameter
>>> c = param_control(run_parameter("lr"))
>>> type(c).__name__, c.description, c.tooltip
('FloatText', 'lr', "the clients' SGD learning rate (a number > 0)")
>>> check_value(run_parameter("lr"), c, 0)
Traceback (most recent call last):
ValueError: lr must be a number > 0; got 0
"""

from __future__ import annotations

import html
import io
import math
import threading

import ipywidgets as W
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..params import Param

__all__ = ["DEFAULT", "param_control", "check_value", "set_value", "control_value", "Displayable",
           "error_html", "png_bytes", "figure", "STYLE", "RENDER_LOCK"]

STYLE = {"description_width": "120px"}
RENDER_LOCK = threading.Lock()  # matplotlib is not thread-safe: one figure drawn at a time
_NONE_LABEL = {"batch_size": "full batch", "positive": "the ten digits"}
DEFAULT = object()  # param_control's "no value given": the Param's default


def png_bytes(fig: Figure, dpi: int = 80) -> bytes:
    """Render a (pyplot-free) figure to PNG bytes."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def figure(width: float, height: float) -> Figure:
    """A bare Figure (not pyplot): never shown twice by the inline backend, no global state."""
    return Figure(figsize=(width, height))


def error_html(text: str, kind: str = "error") -> str:
    color = {"error": "#b00020", "warning": "#8a5a00"}[kind]
    title = {"error": "Error", "warning": "Warning"}[kind]
    return (f'<div style="color:{color};border-left:4px solid {color};padding:2px 8px">'
            f"<b>{title}:</b> {html.escape(text)}</div>")


class Displayable:
    """Display an object through its container widget (``.widget``)."""

    widget: W.Widget

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)


def param_control(prm: Param, value=DEFAULT, *, description: str | None = None) -> W.Widget:
    """The control for one Param: its kind, range, scale and tooltip from the table.

    ``value`` (default: the Param's default) is checked by the Param; a slider's range
    grows to hold a valid value outside its usual range.
    """
    value = prm.default if value is DEFAULT else prm.check(value)
    kw = dict(description=description or prm.name, style=STYLE)
    if prm.kind == "bool":
        c = W.Checkbox(value=value, **kw)
    elif prm.kind == "choice":
        c = W.Dropdown(options=list(prm.choices), value=value, **kw)
    elif prm.choices:   # presets of a number (batch_size): a dropdown, any valid value addable
        options = ([(_NONE_LABEL.get(prm.name, "none"), None)] if prm.none else []) + \
            [(f"{v:g}", v) for v in prm.choices]
        if value not in [v for _, v in options]:
            options.append((f"{value:g}", value))
        c = W.Dropdown(options=options, value=value, **kw)
    elif prm.widget == "text":   # a number typed in (lr): any value, checked by the Param
        box = W.IntText if prm.kind == "int" else W.FloatText
        c = box(value=value, layout=W.Layout(width="220px"), **kw)
    elif prm.none:      # an optional number (target_accuracy): a text box, empty = None
        c = W.Text(value="" if value is None else f"{value:g}", placeholder="none",
                   continuous_update=False, layout=W.Layout(width="220px"), **kw)
    else:
        lo, hi = prm.ui_range
        kw["continuous_update"] = False
        if prm.log:
            c = W.FloatLogSlider(value=value, base=10, min=math.log10(min(lo, value)),
                                 max=math.log10(max(hi, value)), step=0.05,
                                 readout_format=".3g", **kw)
        elif prm.kind == "int":
            c = W.IntSlider(value=value, min=min(int(lo), value), max=max(int(hi), value), **kw)
        else:
            c = W.FloatSlider(value=value, min=min(lo, value), max=max(hi, value),
                              step=0.1 if hi - lo > 2 else 0.01, readout_format=".3g", **kw)
    c.tooltip = f"{prm.doc} ({prm.range_text()})" if prm.doc else prm.range_text()
    return c


def control_value(prm: Param, control):
    """The value a control holds, as its Param's type (an empty text box is None)."""
    v = control.value
    if isinstance(control, W.Text):
        text = v.strip()
        if not text:
            return None
        try:
            x = float(text)
        except ValueError:
            return text     # the Param refuses it, naming itself
        return int(x) if prm.kind == "int" and x.is_integer() else x
    return v


def check_value(prm: Param, control, value):
    """``value`` checked by the Param (its one message), else a ValueError; nothing is set."""
    return prm.check(value)


def set_value(prm: Param, control, value) -> None:
    """Show ``value`` (already checked) in ``control``, growing its range or options to hold it."""
    if isinstance(control, W.Text):
        control.value = "" if value is None else f"{value:g}"
        return
    if isinstance(control, W.Dropdown) and prm.kind != "choice":
        if value not in [v for _, v in control.options]:
            control.options = list(control.options) + [(f"{value:g}", value)]
    elif isinstance(control, W.FloatLogSlider):
        exp = math.log10(value)
        control.min, control.max = min(control.min, exp), max(control.max, exp)
    elif isinstance(control, (W.IntSlider, W.FloatSlider)):
        control.min, control.max = min(control.min, value), max(control.max, value)
    control.value = value
