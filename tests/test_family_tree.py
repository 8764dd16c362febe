"""The family tree page is backed by real tests and chapters, and is acyclic."""

import shutil

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


def test_part_subtree_keeps_the_part_4_arrows_and_their_nodes(tmp_path):
    nodes, edges = familytree.load()
    sub_nodes, sub = familytree.part_subtree(nodes, edges, "04-rlvr")
    assert {"grpo", "topr", "lite-ppo", "nft", "bnpo"} <= set(sub_nodes)
    assert all(e.parent in sub_nodes and e.child in sub_nodes for e in sub)
    assert "dpo-q-function" not in {e.notebook for e in sub} and len(sub) >= 30
    page = familytree.page("all.svg", "rlvr.svg")
    assert "## The GRPO family (Part 4)" in page and "(rlvr.svg)" in page and "{download}`full size <all.svg>`" in page
    if shutil.which("dot"):
        familytree.draw(tmp_path / "rlvr.svg", sub_nodes, sub)
        assert (tmp_path / "rlvr.svg").read_text().lstrip().startswith("<?xml")
