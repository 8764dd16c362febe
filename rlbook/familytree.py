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


def dot_source(nodes: dict, edges: list[Edge]) -> str:
    """The tree in Graphviz's dot language (one arrow per parent-child pair)."""
    lines = ["digraph family {", "  rankdir=LR; nodesep=0.18; ranksep=0.6;",
             '  node [shape=box, style="rounded,filled", fillcolor="#eef4fb", color="#1f77b4",'
             ' fontname="DejaVu Sans", fontsize=11];', '  edge [color="#555555", arrowsize=0.7];']
    for n, meta in nodes.items():
        lines.append(f'  "{n}" [label="{meta["label"]}"];')
    for p, c in dict.fromkeys((e.parent, e.child) for e in edges):
        lines.append(f'  "{p}" -> "{c}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def part_subtree(nodes: dict, edges: list[Edge], part: str) -> tuple[dict, list[Edge]]:
    """The arrows taught in one part of the book (e.g. ``"04-rlvr"``) and the nodes they touch."""
    in_part = {q.slug for q in catalog.papers() if q.part == part}
    sub = [e for e in edges if e.notebook in in_part]
    used = {n for e in sub for n in (e.parent, e.child)}
    return {n: m for n, m in nodes.items() if n in used}, sub


def draw(path: Path, nodes: dict | None = None, edges: list[Edge] | None = None) -> None:
    """Render the tree with Graphviz ``dot`` (Debian's graphviz; ``make setup`` installs it)
    into ``path`` (its suffix, ``.svg`` or ``.png``, picks the format)."""
    import shutil
    import subprocess

    if nodes is None or edges is None:
        nodes, edges = load()
    depths(nodes, edges)  # refuse a cycle
    dot = shutil.which("dot")
    if dot is None:
        raise FileNotFoundError("Graphviz `dot` not found: `make setup` installs Debian's graphviz")
    fmt = Path(path).suffix.lstrip(".") or "svg"
    subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=dot_source(nodes, edges), text=True, check=True)


def page(image: str = "family-tree.svg", rlvr_image: str | None = None) -> str:
    """The family-tree page (MyST). ``rlvr_image``: the Part 4 (GRPO family) figure, if drawn."""
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
        f"The figure is large: open it {{download}}`full size <{image}>`.",
        "",
    ]
    if rlvr_image is not None:
        _, sub = part_subtree(nodes, edges, "04-rlvr")
        out += [
            "## The GRPO family (Part 4)",
            "",
            "The RL-with-verifiable-rewards chapters change a few lines of one loop. Their",
            f"{len(sub)} arrows say which lines: when a method *is* GRPO or REINFORCE (on-policy, one",
            "group, equal lengths, a coefficient set to zero) and what it adds otherwise.",
            "",
            f"![The GRPO family: the arrows taught in Part 4]({rlvr_image})",
            "",
        ]
    out += [
        "## The arrows and their tests",
        "",
    ]
    for e in edges:
        q = by_slug[e.notebook]
        chap = f"[{q.slug}]({q.relpath})" if q.written else f"{q.slug} (coming)"
        file, _, name = e.test.partition("::")
        out += [f"**{nodes[e.parent]['label']} → {nodes[e.child]['label']}.** {e.relation}",
                f"Test: [`{name}`]({REPO_URL}{file}) · chapter: {chap}", ""]
    out += ["", "Where the code lives: " + ", ".join(
        f"{m['label']}: `{m['code']}`" for m in nodes.values()) + "."]
    return "\n".join(out) + "\n"
