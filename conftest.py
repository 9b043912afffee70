"""Let nbval check the outputs nbstripout keeps (for notebooks/; kept here, out of the learners' folder).

The notebooks are stored stripped (``.gitattributes``: ``filter=nbstripout``); a
cell tagged ``keep_output`` keeps its output, but nbstripout still resets its
``execution_count`` to None, and nbval refuses a reference cell that has outputs
but no execution count ("Unrun reference cell has outputs"). For the cells that
ask for an output check (tag ``nbval-check-output``) and kept their output, treat
the stored output as the reference.
"""


def pytest_collection_modifyitems(items):
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None or type(item).__name__ != "IPyNbCell":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        if "nbval-check-output" in tags and cell.get("outputs") and cell.get("execution_count") is None:
            cell["execution_count"] = 1


# --- executed notebooks for the website (make site) ------------------------------------------
# While nbval runs a notebook, keep each cell's outputs; when its last cell has run (and the
# kernel is still alive), ask the kernel for a static snapshot of every widget the notebook
# displayed (fedlab_widgets.static), and write the executed notebook, widgets replaced by
# their final state, to build/executed/. `make site` builds the website from those, so the
# notebooks run once for both the tests and the site. A notebook with a failing cell is not
# written.
import copy  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

EXECUTED = Path(__file__).resolve().parent / "build" / "executed"
from fedlab_widgets.static import WIDGET_VIEW_MIME as WIDGET_MIME  # noqa: E402
_outputs: dict = {}   # notebook item -> {cell object id: outputs}
_failed: set = set()


def _is_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if _is_cell(item) and call.when == "call":
        if outcome.get_result().failed:
            _failed.add(item.parent)
        if getattr(item, "test_outputs", None) is not None:
            _outputs.setdefault(item.parent, {})[id(item.cell)] = list(item.test_outputs)


def _widget_snapshots(kernel, model_ids: list[str]) -> dict:
    """Run fedlab_widgets.static.snapshots in the notebook's kernel; {} if it fails."""
    code = ("import json as _j\nfrom fedlab_widgets.static import snapshots as _s\n"
            f"print(_j.dumps(_s({model_ids!r})))")
    msg_id = kernel.execute_cell_input(code, allow_stdin=False)
    text = ""
    while True:
        try:
            msg = kernel.get_message("iopub", timeout=60)
        except Exception:
            return {}
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            text += msg["content"]["text"]
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    try:
        return json.loads(text)
    except ValueError:
        return {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    if not _is_cell(item) or (nextitem is not None and nextitem.parent is item.parent):
        return
    nbfile = item.parent
    outs = _outputs.pop(nbfile, {})
    if nbfile in _failed or not outs:
        return
    nb = copy.deepcopy(nbfile.nb)
    ids = [o["data"][WIDGET_MIME]["model_id"] for cell in nbfile.nb.cells
           for o in outs.get(id(cell), []) if WIDGET_MIME in o.get("data", {})]
    snaps = _widget_snapshots(nbfile.kernel, ids) if ids and nbfile.kernel.is_alive() else {}
    for cell, orig in zip(nb.cells, nbfile.nb.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        for o in copy.deepcopy(outs.get(id(orig), [])):
            if WIDGET_MIME in o.get("data", {}):
                html = snaps.get(o["data"][WIDGET_MIME]["model_id"])
                o["data"] = ({"text/html": html} if html else
                             {"text/plain": "(an interactive widget: run the notebook to use it)"})
            if o.get("output_type") == "execute_result":
                o.setdefault("execution_count", None)
            cell.outputs.append(o)
    EXECUTED.mkdir(parents=True, exist_ok=True)
    (EXECUTED / Path(str(nbfile.fspath)).name).write_text(json.dumps(nb, indent=1))
