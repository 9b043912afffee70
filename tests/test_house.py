"""The house rules of fedlab_widgets/ (issue 20), measured by tools/house.py: files and functions
stay small, imports point one way (no cycle), no private name crosses a module, and the
simulation never imports a front end."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import house  # noqa: E402


def test_files_and_functions_are_small():
    mods = house.modules()
    big = [(len(p.read_text().splitlines()), m) for m, p in mods.items()
           if len(p.read_text().splitlines()) > house.MAX_FILE]
    assert not big, big
    # secagg.secure_sum walks the protocol's six steps in order: kept whole, under 70 lines
    long = [(n, f) for n, f in house.long_functions(mods) if f != "fedlab_widgets.secagg.secure_sum"]
    assert not long, long
    assert all(n <= 70 for n, _ in house.long_functions(mods))


def test_no_import_cycle_and_no_private_name_across_modules():
    graph, private = house.imports(house.modules())
    assert house.cycles(graph) == []
    assert private == []


def test_the_simulation_side_never_imports_a_front_end():
    graph, _ = house.imports(house.modules())
    front = ("fedlab_widgets.frontends", "fedlab_widgets.widgets", "fedlab_widgets.cli",
             "fedlab_widgets.flower", "fedlab_widgets.leakage_widget", "fedlab_widgets.static",
             "fedlab_widgets.classroom")
    spine = [m for m in graph if not m.startswith(front) and m not in (
        "fedlab_widgets", "fedlab_widgets.__main__", "fedlab_widgets.experiments",
        "fedlab_widgets.solutions", "fedlab_widgets.flags")]
    for m in spine:
        bad = sorted(d for d in graph[m] if d.startswith(front))
        assert not bad, f"{m} imports {bad}"
