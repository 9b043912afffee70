"""Static snapshots of live widgets, for pages without a kernel (the website, exported HTML).

A dashboard is a tree of ipywidgets; without a kernel a web page cannot show it. This
module renders a widget's *current* state as plain HTML: its status lines and messages
as text, its plots as the PNG images they hold, its controls as one line of their values.
``make site`` replaces every widget in an executed notebook by this snapshot, so each
dashboard leaves a static figure of its final state.

Examples
--------
>>> import ipywidgets as W
>>> controls = W.VBox([W.HTML("<b>Run</b>"), W.IntSlider(value=5, description="rounds")])
>>> box = W.VBox([controls, W.HTML("<b>Finished</b>: round 3/3")])
>>> print(static_html(box))  # doctest: +NORMALIZE_WHITESPACE
<div class="fedlab-static"><div><b>Finished</b>: round 3/3</div>
<div class="fedlab-static-controls">rounds = 5</div></div>
"""

from __future__ import annotations

import base64
import html

import ipywidgets as W

__all__ = ["static_html", "snapshots", "WIDGET_VIEW_MIME"]

#: The output type a displayed widget leaves in a notebook: a reference to a kernel object.
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"


def _controls(widgets) -> str:
    parts = [f"{html.escape(w.description)} = {html.escape(str(w.value))}"
             for w in widgets if getattr(w, "description", "")]
    return ("<div class=\"fedlab-static-controls\">" + " &middot; ".join(parts) + "</div>"
            if parts else "")


def _render(w, out: list[str], controls: list) -> None:
    if isinstance(w, W.Image):
        if w.value:
            fmt = w.format if w.format in ("png", "jpeg", "gif", "svg+xml") else "png"
            data = base64.b64encode(bytes(w.value)).decode()
            out.append(f'<img src="data:image/{fmt};base64,{data}" style="max-width:100%">')
    elif isinstance(w, (W.HTML, W.HTMLMath)):
        if w.value.strip():
            out.append(f"<div>{w.value}</div>")
    elif isinstance(w, W.Label):
        if w.value.strip():
            out.append(f"<div>{html.escape(w.value)}</div>")
    elif isinstance(w, W.Output):
        for o in w.outputs:
            data = o.get("data", {})
            if "image/png" in data:
                out.append(f'<img src="data:image/png;base64,{data["image/png"]}" '
                           'style="max-width:100%">')
            elif "text/html" in data:
                out.append(f"<div>{data['text/html']}</div>")
            elif "text/plain" in data or "text" in o:
                out.append(f"<pre>{html.escape(data.get('text/plain', o.get('text', '')))}</pre>")
    elif isinstance(w, W.Box):
        # in a column of controls, an HTML child is a heading: the controls' line replaces it
        has_controls = any(_is_control(c) for c in w.children)
        for child in w.children:
            if _hidden(child) or (has_controls and isinstance(child, (W.HTML, W.Label))):
                continue
            _render(child, out, controls)
    elif _is_control(w):
        controls.append(w)


def _hidden(w) -> bool:
    layout = getattr(w, "layout", None)
    return layout is not None and (layout.display == "none" or layout.visibility == "hidden")


def _is_control(w) -> bool:
    return (isinstance(w, W.DOMWidget) and hasattr(w, "value")
            and not isinstance(w, (W.HTML, W.HTMLMath, W.Label, W.Image, W.Output,
                                   W.IntProgress, W.FloatProgress)))


def static_html(widget) -> str:
    """The widget's current state as static HTML (text, images and control values).

    Parameters
    ----------
    widget : ipywidgets.Widget or an object with a ``widget`` / ``_repr_mimebundle_``
        Usually a dashboard's root box.

    Returns
    -------
    str
        One ``<div class="fedlab-static">`` holding the texts and images in display
        order, then one line of the controls' values.
    """
    out: list[str] = []
    controls: list = []
    if not _hidden(widget):
        _render(widget, out, controls)
    body = "\n".join(out + [_controls(controls)] if controls else out)
    return f'<div class="fedlab-static">{body}</div>'


def snapshots(model_ids) -> dict[str, str]:
    """:func:`static_html` of the live widgets with these model ids (unknown ids are left out)."""
    from ipywidgets.widgets.widget import _instances

    return {m: static_html(_instances[m]) for m in model_ids if m in _instances}
