"""The house rules, measured: file and function sizes, the import graph, private names.

    .venv/bin/python tools/house.py          # prints the table; exit 1 if a rule is broken

Rules (issue 20): no file in fedlab_widgets/ over MAX_FILE lines, no function over
MAX_FUNCTION lines of code (its docstring not counted), no import cycle between the package's modules,
no private name (``_x``) imported from another module of the package.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "fedlab_widgets"
MAX_FILE, MAX_FUNCTION = 360, 60


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".")
    base = base if is_pkg else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the package modules it imports (at any depth); and private names imported."""
    graph, private = {}, []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(mod, path.name == "__init__.py", node)
                if not target.startswith("fedlab_widgets"):
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    deps.add(sub if sub in mods else target)
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        private.append(f"{mod} imports {a.name} from {target}")
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
        graph[mod] = {d for d in deps if d in mods and d != mod}
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (a package importing its own submodules is not one)."""
    def edges(m):
        return {d for d in graph[m] if not d.startswith(m + ".")}
    found, state, stack = [], {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(edges(m)):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2
    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def long_functions(mods: dict[str, Path]) -> list[tuple[int, str]]:
    out = []
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(
                        getattr(body[0], "value", None), ast.Constant) and isinstance(
                        body[0].value.value, str):
                    n -= body[0].end_lineno - body[0].lineno + 1
                if n > MAX_FUNCTION:
                    out.append((n, f"{mod}.{node.name}"))
    return sorted(out, reverse=True)


def main() -> int:
    mods = modules()
    sizes = sorted(((len(p.read_text().splitlines()), m) for m, p in mods.items()), reverse=True)
    graph, private = imports(mods)
    cyc, longf = cycles(graph), long_functions(mods)
    print(f"{len(mods)} modules, {sum(n for n, _ in sizes)} lines; largest:")
    for n, m in sizes[:8]:
        print(f"  {n:5d}  {m}")
    print(f"functions over {MAX_FUNCTION} lines: {len(longf)}")
    for n, f in longf:
        print(f"  {n:5d}  {f}")
    print(f"import cycles: {len(cyc)}")
    for c in cyc:
        print("  " + " -> ".join(c))
    print(f"private names imported across modules: {len(private)}")
    for p in private:
        print("  " + p)
    big = [m for n, m in sizes if n > MAX_FILE]
    return 1 if big or longf or cyc or private else 0


if __name__ == "__main__":
    sys.exit(main())
