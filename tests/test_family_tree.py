"""The family tree page is backed by real tests and chapters, and is acyclic."""

from rlbook import familytree


def test_every_edge_names_an_existing_test_and_chapter():
    assert familytree.problems() == []


def test_tree_has_edges_and_roots():
    nodes, edges = familytree.load()
    assert len(edges) >= 8
    d = familytree.depths(nodes, edges)
    assert min(d.values()) == 0


def test_cycle_is_detected():
    import pytest

    nodes = {"a": {}, "b": {}}
    edges = [familytree.Edge("a", "b", "", "", ""), familytree.Edge("b", "a", "", "", "")]
    with pytest.raises(ValueError, match="cycle"):
        familytree.depths(nodes, edges)


def test_draw(tmp_path):
    import html
    import shutil

    import pytest

    if shutil.which("dot") is None:
        pytest.skip("graphviz not installed (make setup)")
    familytree.draw(tmp_path / "t.svg")
    svg = html.unescape((tmp_path / "t.svg").read_text())
    nodes, _ = familytree.load()
    assert "<svg" in svg and all(m["label"] in svg for m in nodes.values())
