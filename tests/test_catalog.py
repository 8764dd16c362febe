"""The book's list of papers is complete and the bibliography covers it."""

from pathlib import Path

from rlbook import catalog

ROOT = Path(__file__).resolve().parent.parent


def test_75_papers_in_11_parts():
    parts = catalog.parts()
    assert len(parts) == 11
    assert len(catalog.papers()) == 75
    assert len({q.slug for q in catalog.papers()}) == 75


def test_bibliography_has_every_arxiv_id():
    bib = (ROOT / "book" / "references.bib").read_text()
    for q in catalog.papers():
        assert f"@misc{{{q.slug}," in bib
        assert f"eprint = {{{q.arxiv}}}" in bib


def test_every_part_has_an_intro_page():
    for p in catalog.parts():
        page = ROOT / "book" / "parts" / f"{p.id}.md"
        assert page.exists() and page.read_text().startswith("# ")


def test_find_gives_clear_errors():
    import pytest

    with pytest.raises(KeyError, match="unknown paper"):
        catalog.find("no-such-paper")
