"""The package layers of docs/design.md, checked on the source: no import runs from a lower layer to a
higher one, no import loop except through ``rlx.catalogue``, and no module over 300 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "rlx"

# Lowest first. A module may import its own layer and the layers below it; ``rlx.catalogue`` (which imports
# every component package so that their registrations run) is the one module anything may reach upward.
LAYERS = [
    ["rlx.ops", "rlx.batch", "rlx.registry", "rlx.metrics", "rlx.runtime"],
    ["rlx.config"],
    ["rlx.data", "rlx.envs"],
    ["rlx.models"],
    ["rlx.rewards", "rlx.rollout"],
    ["rlx.algos"],
    ["rlx.track"],
    ["rlx.trainers"],
    ["rlx.catalogue", "rlx.runner"],
    ["rlx.pipeline", "rlx.launch"],
    ["rlx.sweep", "rlx.report", "rlx.compare", "rlx.__main__", "rlx"],
]
EXEMPT = "rlx.catalogue"


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def layer(mod: str) -> int:
    best, depth = None, -1
    for i, names in enumerate(LAYERS):
        for n in names:
            if (mod == n or mod.startswith(n + ".")) and len(n) > depth:
                best, depth = i, len(n)
    assert best is not None, f"{mod} is in no layer of tests/test_layers.py"
    return best


def imports(path: Path, known: set[str]) -> set[str]:
    """rlx modules ``path`` imports anywhere in its body (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rlx":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "rlx")
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {d for d in imports(p, set(mods)) if d != m} for m, p in mods.items()}


def test_every_module_has_a_layer():
    for m in modules():
        layer(m)


def test_no_upward_import():
    bad = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})" for m, deps in graph().items()
           for d in deps if EXEMPT not in (m, d) and layer(d) > layer(m)]
    assert not bad, "\n".join(bad)


def test_no_import_loop_except_through_the_catalogue():
    g = {m: {d for d in deps if d != EXEMPT and not d.startswith(m + ".")} for m, deps in graph().items()
         if m != EXEMPT}
    # a package's __init__ importing its own submodules is not a loop; anything else that comes back is
    loops, state = [], {}

    def visit(m, stack):
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                loops.append(" -> ".join(stack[stack.index(d):] + [d]) if d in stack else f"{m} -> {d}")
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not loops, "\n".join(loops)


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_module_at_most_300_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= 300, f"{path.relative_to(PKG.parent)} has {n} lines"


def test_no_shipped_file_cites_a_file_outside_the_repository():
    # configs, code, docs and the README cite papers or docs/ inside the repo, never the project's private notes
    root = PKG.parent
    pattern = re.compile(r"\.\./shared|(?<![/\w_])(calibration|algorithms|peers|environment|DESIGN|STYLE)\.md")
    bad = []
    for folder in ("rlx", "conf", "docs", "sweeps", "benchmarks"):
        for p in (root / folder).rglob("*"):
            if p.suffix in (".py", ".yaml", ".md", ".sh") and p.is_file():
                bad += [f"{p.relative_to(root)}:{i}" for i, line in enumerate(p.read_text().splitlines(), 1)
                        if pattern.search(line)]
    bad += [f"README.md:{i}" for i, line in enumerate((root / "README.md").read_text().splitlines(), 1)
            if pattern.search(line)]
    assert not bad, "\n".join(bad)
