"""The family tree of objectives (``book/family-tree.yml``): load, check, draw, page.

Each edge says that one objective is a special case, limit or reparametrisation of
another, names the unit test that proves it on random inputs, and the chapter that
teaches it. ``rlbook build`` writes the page; ``tests/test_family_tree.py`` checks that
every named test and chapter exists and that the graph has no cycle.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import yaml

from rlbook import catalog, paths

REPO_URL = "https://github.com/rl-paper-book/rl-paper-book/blob/main/"


@dataclass(frozen=True)
class Edge:
    parent: str
    child: str
    relation: str
    test: str
    """pytest node id ``tests/test_x.py::test_name``"""
    notebook: str
    """slug of the chapter that teaches it"""


def load(path: Path | None = None) -> tuple[dict[str, dict], list[Edge]]:
    data = yaml.safe_load((path or paths.root() / "book" / "family-tree.yml").read_text(encoding="utf-8"))
    edges = [Edge(**e) for e in data["edges"]]
    return data["nodes"], edges


def depths(nodes: dict, edges: list[Edge]) -> dict[str, int]:
    """Longest distance from a root; raises ``ValueError`` on a cycle."""
    children: dict[str, list[str]] = {n: [] for n in nodes}
    indeg = {n: 0 for n in nodes}
    for e in edges:
        children[e.parent].append(e.child)
        indeg[e.child] += 1
    depth = {n: 0 for n in nodes}
    queue = [n for n in nodes if indeg[n] == 0]
    seen = 0
    while queue:
        n = queue.pop(0)
        seen += 1
        for c in children[n]:
            depth[c] = max(depth[c], depth[n] + 1)
            indeg[c] -= 1
            if indeg[c] == 0:
                queue.append(c)
    if seen != len(nodes):
        raise ValueError("the family tree has a cycle")
    return depth


def problems(root: Path | None = None) -> list[str]:
    """Everything wrong with the tree file: unknown nodes, missing tests or chapters, cycles."""
    root = root or paths.root()
    nodes, edges = load(root / "book" / "family-tree.yml")
    slugs = {q.slug for q in catalog.papers()}
    out = []
    for e in edges:
        for n in (e.parent, e.child):
            if n not in nodes:
                out.append(f"edge {e.parent} -> {e.child}: unknown node {n!r}")
        file, _, name = e.test.partition("::")
        f = root / file
        if not f.exists():
            out.append(f"edge {e.parent} -> {e.child}: no test file {file}")
        else:
            funcs = {n.name for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.FunctionDef)}
            if name.split("[")[0] not in funcs:
                out.append(f"edge {e.parent} -> {e.child}: no test {name} in {file}")
        if e.notebook not in slugs:
            out.append(f"edge {e.parent} -> {e.child}: unknown chapter {e.notebook!r}")
    try:
        depths(nodes, edges)
    except ValueError as err:
        out.append(str(err))
    return out


def draw(path: Path, nodes: dict | None = None, edges: list[Edge] | None = None) -> None:
    """Draw the tree top-down (roots at the top) into a PNG."""
    import matplotlib.pyplot as plt

    from rlbook import plots

    if nodes is None or edges is None:
        nodes, edges = load()
    depth = depths(nodes, edges)
    levels: dict[int, list[str]] = {}
    for n in nodes:  # file order within a level
        levels.setdefault(depth[n], []).append(n)
    parents = {n: [e.parent for e in edges if e.child == n] for n in nodes}
    x: dict[str, float] = {}
    for d in sorted(levels):
        row = levels[d]
        if d > 0:  # barycentre of the parents keeps crossings down
            row.sort(key=lambda n: sum(x[p] for p in parents[n]) / max(1, len(parents[n])))
        for i, n in enumerate(row):
            x[n] = (i + 0.5) / len(row)
    plots.style()
    n_levels = max(depth.values()) + 1
    fig, ax = plt.subplots(figsize=(7.5, 1.1 * n_levels + 0.5))
    y = {n: -depth[n] for n in nodes}
    for e in edges:
        ax.annotate("", xy=(x[e.child], y[e.child] + 0.18), xytext=(x[e.parent], y[e.parent] - 0.18),
                    arrowprops=dict(arrowstyle="->", color="#555555", lw=1.2))
    for i, (n, meta) in enumerate(nodes.items()):
        ax.text(x[n], y[n], meta["label"], ha="center", va="center", fontsize=11,
                bbox=dict(boxstyle="round,pad=0.4", fc="#eef4fb", ec=plots.PALETTE[0], lw=1.2))
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-(n_levels - 1) - 0.5, 0.5)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def page(image: str = "family-tree.png") -> str:
    nodes, edges = load()
    by_slug = {q.slug: q for q in catalog.papers()}
    out = [
        "# The family tree of objectives",
        "",
        "Many papers in this book are about how one objective relates to another: a special",
        "case, a limit, a reparametrisation. Each arrow below points from the more general",
        "objective to the one derived from it. Every arrow is a unit test that checks the",
        "relation on random inputs (a special case equals its parent, a minimiser equals its",
        "closed form), and a chapter that teaches it.",
        "",
        f"![The family tree of objectives]({image})",
        "",
        "| from | to | relation | test | chapter |",
        "|---|---|---|---|---|",
    ]
    for e in edges:
        q = by_slug[e.notebook]
        chap = f"[{q.slug}]({q.relpath})" if q.written else f"{q.slug} (coming)"
        file, _, name = e.test.partition("::")
        test = f"[`{name}`]({REPO_URL}{file})"
        out.append(f"| {nodes[e.parent]['label']} | {nodes[e.child]['label']} | {e.relation} | {test} | {chap} |")
    out += ["", "Where the code lives: " + ", ".join(
        f"{m['label']}: `{m['code']}`" for m in nodes.values()) + "."]
    return "\n".join(out) + "\n"
