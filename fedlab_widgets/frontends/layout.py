"""How a dashboard is laid out: its buttons, status, plots, and the boxes of its sections.

Three boxes of controls a row (330 px each: a 1024-pixel projector shows a row whole), the
buttons, the status and message lines, then the plot (960 x 320 px) and the per-client
view.
"""

from __future__ import annotations

import ipywidgets as W

from .settings import SECTIONS

__all__ = ["dashboard_parts", "dashboard_layout", "BOXES_PER_ROW"]

BOXES_PER_ROW = 3


def dashboard_parts(rounds: int) -> dict:
    """The dashboard's widgets other than its controls, each with its CSS class."""
    parts = {
        "run_button": W.Button(description="Run", button_style="success", icon="play",
                               tooltip="train with the current settings"),
        "stop_button": W.Button(description="Stop", button_style="danger", icon="stop",
                                disabled=True, tooltip="stop after the current round"),
        "clear_button": W.Button(description="Clear runs", icon="trash",
                                 tooltip="remove all finished runs from the plot"),
        "progress": W.IntProgress(value=0, min=0, max=rounds, description="progress",
                                  layout=W.Layout(width="320px")),
        "status": W.HTML(), "message": W.HTML(),
        "image": W.Image(format="png", layout=W.Layout(width="960px", height="320px",
                                                        object_fit="contain")),
        "client_image": W.Image(format="png", layout=W.Layout(
            width="960px", height="280px", object_fit="contain", display="none")),
    }
    classes = {"run_button": "fedlab-run", "stop_button": "fedlab-stop",
               "clear_button": "fedlab-clear", "status": "fedlab-status",
               "message": "fedlab-message", "image": "fedlab-plot", "progress": "fedlab-progress",
               "client_image": "fedlab-client-view"}
    for name, cls in classes.items():
        parts[name].add_class(cls)
    return parts


def dashboard_layout(controls: dict, sections, parts: dict) -> W.Widget:
    """The container: the sections' boxes, the buttons, the status, the plots."""
    boxes = [W.VBox([W.HTML(f"<b>{SECTIONS[s][0]}</b>"), *[controls[n] for n in SECTIONS[s][1]]],
                    layout=W.Layout(width="330px")) for s in sections]
    rows = [W.HBox(boxes[i:i + BOXES_PER_ROW]) for i in range(0, len(boxes), BOXES_PER_ROW)]
    buttons = W.HBox([parts["run_button"], parts["stop_button"], parts["clear_button"],
                      parts["progress"]])
    widget = W.VBox([*rows, buttons, parts["status"], parts["message"], parts["image"],
                     parts["client_image"]])
    widget.add_class("fedlab-dashboard")
    return widget
