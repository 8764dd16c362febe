"""The notebook contract: every written notebook follows the book's skeleton (CONTRIBUTING.md)."""

import ast
import re
from pathlib import Path

import nbformat
import pytest

from rlbook import catalog, runner

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
SECTIONS = ["TL;DR", "The idea", "Derivation", "Implementation", "Experiment", "Claims",
            "Full profile", "Deviations from the paper", "Exercises", "References"]


def _ids(nbs):
    return [p.stem for p in nbs]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


def test_every_notebook_is_a_paper_of_the_book():
    known = {q.relpath for q in catalog.papers()}
    for p in NOTEBOOKS:
        rel = p.relative_to(ROOT).as_posix()
        assert rel in known, f"{rel} is not notebooks/<part>/<slug>.ipynb of a paper in book/papers.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_contract(path):
    nb = nbformat.read(path, 4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "committed with outputs"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    tree = ast.parse(params[0].source)
    names = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, "parameters are flat assignments"
        names[node.targets[0].id] = ast.literal_eval(node.value)  # flat literals only
    assert names.get("profile") == "smoke" and names.get("seed") == 0
    for line in params[0].source.strip().splitlines():
        assert "#" in line, f"parameter line without a comment: {line!r}"
    assert runner.notebook_parameters(path) == names
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    slug_path = path.relative_to(ROOT).as_posix()
    assert f"colab.research.google.com/github/rl-paper-book/rl-paper-book/blob/main/{slug_path}" in first.source
    assert "arxiv.org/abs/" in first.source
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    found = [s for s in SECTIONS if any(h.strip().startswith(s) for h in headings)]
    assert found == SECTIONS, f"skeleton sections missing: {sorted(set(SECTIONS) - set(found))}"
    assert md.count(":class: dropdown") >= 2, "at least two exercises with hidden solutions"
    src = "\n".join(c.source for c in code)
    assert "claims.claim(" in src, "the notebook checks claims by machine"
    assert "rlbook.setup(" in src and "from_params(" in src
    assert 'matplotlib.use("Agg")' not in src and "matplotlib.use('Agg')" not in src
    assert "<img" not in md and "colab-badge.svg" not in md, "no external images (the site is checked offline)"
