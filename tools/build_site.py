"""Build the static website of the executed notebooks (``make site``): MkDocs + mkdocs-jupyter.

1. Executed notebooks come from ``build/executed/``, which the test suite writes while
   nbval runs the notebooks (see ``conftest.py``): every dashboard there is already
   replaced by a static snapshot of its final state. A notebook whose executed copy is
   missing or older than its source is run now, by the same nbval harness.
2. ``build/site-src/`` gets the instructor's guide (``notebooks/README.md``) as the front
   page, with the Binder badge, the README as the install page, and the executed notebooks.
3. ``mkdocs build`` writes ``build/site/`` (open ``build/site/index.html``; no server needed).
4. The result is checked: a page per notebook, each dashboard a static figure, no widget
   left without one.

Usage: ``python tools/build_site.py`` (``make site``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
EXECUTED = REPO / "build" / "executed"
SRC = REPO / "build" / "site-src"
SITE = REPO / "build" / "site"
sys.path.insert(0, str(REPO))
from fedlab_widgets.links import BINDER_BADGE, BRANCH, REPOSITORY  # noqa: E402
from fedlab_widgets.static import WIDGET_VIEW_MIME as WIDGET_MIME  # noqa: E402

LINK = re.compile(r"\]\((?!https?://|#|mailto:)([^)\s]+)\)")


def _relink(markdown: str, folder: str) -> str:
    """Links to notebooks stay on the site; links to other files of the repository go to GitHub."""
    def fix(m):
        target = (Path(folder) / m.group(1)).as_posix()
        parts = []
        for part in target.split("/"):
            if part == "..":
                parts = parts[:-1]
            elif part not in ("", "."):
                parts.append(part)
        path = "/".join(parts)
        if re.fullmatch(r"notebooks/\d\d[a-z]?-[^/]+\.ipynb(#.*)?", path):
            return f"]({path.split('/', 1)[1]})"
        if path == "notebooks/README.md":
            return "](index.md)"
        return f"](https://github.com/{REPOSITORY}/blob/{BRANCH}/{path})"
    return LINK.sub(fix, markdown)


def executed_notebooks() -> list[Path]:
    """The executed copy of every notebook, running the ones that are missing or stale."""
    sources = sorted(NOTEBOOKS.glob("[0-9][0-9]*-*.ipynb"))
    stale = [p for p in sources if not (EXECUTED / p.name).exists()
             or (EXECUTED / p.name).stat().st_mtime < p.stat().st_mtime]
    if stale:
        print(f"running {len(stale)} notebook(s) without an up-to-date executed copy: "
              + ", ".join(p.stem for p in stale), flush=True)
        subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p",
                        "no:cacheprovider", *map(str, stale)], cwd=REPO, check=True)
    missing = [p.name for p in sources if not (EXECUTED / p.name).exists()]
    if missing:
        raise SystemExit(f"no executed copy of {missing}: a cell failed (see the test output)")
    return [EXECUTED / p.name for p in sources]


def check_notebook(path: Path) -> int:
    """Every widget output must have become a static snapshot; returns how many there are."""
    nb = json.loads(path.read_text())
    snaps = 0
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if WIDGET_MIME in data:
                raise SystemExit(f"{path.name}: a widget output was not replaced by a snapshot")
            if "fedlab-static" in data.get("text/html", ""):
                snaps += 1
    return snaps


def assemble(executed: list[Path]) -> dict[str, int]:
    shutil.rmtree(SRC, ignore_errors=True)
    SRC.mkdir(parents=True)
    guide = _relink((NOTEBOOKS / "README.md").read_text(), "notebooks")
    if BINDER_BADGE not in guide:
        raise SystemExit("notebooks/README.md lost its Binder badge (fedlab_widgets.links.BINDER_BADGE)")
    (SRC / "index.md").write_text(guide)
    readme = _relink((REPO / "README.md").read_text(), ".")
    (SRC / "install.md").write_text(readme)
    snapshots = {}
    for path in executed:
        snapshots[path.stem] = check_notebook(path)
        shutil.copy(path, SRC / path.name)
    return snapshots


def build() -> None:
    executed = executed_notebooks()
    snapshots = assemble(executed)
    shutil.rmtree(SITE, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "-f",
                    str(REPO / "mkdocs.yml")], cwd=REPO, check=True)
    pages = {p.stem: SITE / p.stem / "index.html" for p in executed}
    missing = [k for k, v in pages.items() if not v.exists()]
    if missing or not (SITE / "index.html").exists():
        raise SystemExit(f"the site lacks pages: {missing or ['index.html']}")
    for name, n in snapshots.items():
        if n and pages[name].read_text().count("fedlab-static") < n:
            raise SystemExit(f"{name}: its dashboards' static figures are missing from the page")
    total = sum(snapshots.values())
    size = sum(f.stat().st_size for f in SITE.rglob("*") if f.is_file()) / 1e6
    print(f"site: {len(pages)} notebooks, {total} dashboard snapshots, {size:.0f} MB, "
          f"in {SITE.relative_to(REPO)}/ (open index.html)")


if __name__ == "__main__":
    build()
