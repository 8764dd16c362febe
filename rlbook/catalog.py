"""The book's parts and papers (``book/papers.yml``) and the notebooks written so far."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from rlbook import paths


@dataclass(frozen=True)
class Paper:
    slug: str
    """the notebook's file name without ``.ipynb``"""
    title: str
    arxiv: str
    year: int
    part: str
    """the part's folder, e.g. ``04-rlvr``"""
    code: str | None = None

    @property
    def notebook(self) -> Path:
        return paths.root() / "notebooks" / self.part / f"{self.slug}.ipynb"

    @property
    def written(self) -> bool:
        return self.notebook.exists()

    @property
    def relpath(self) -> str:
        """``notebooks/<part>/<slug>.ipynb``: the same path in the repository and on the site."""
        return f"notebooks/{self.part}/{self.slug}.ipynb"


@dataclass(frozen=True)
class Part:
    id: str
    title: str
    papers: tuple[Paper, ...]


@lru_cache(maxsize=None)
def _load(path: str) -> tuple[Part, ...]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    parts = []
    for p in data["parts"]:
        papers = tuple(
            Paper(q["slug"], q["title"], str(q["arxiv"]), int(q["year"]), p["id"], q.get("code"))
            for q in p["papers"]
        )
        parts.append(Part(p["id"], p["title"], papers))
    return tuple(parts)


def parts() -> tuple[Part, ...]:
    return _load(str(paths.root() / "book" / "papers.yml"))


def papers() -> list[Paper]:
    return [q for p in parts() for q in p.papers]


def written() -> list[Paper]:
    return [q for q in papers() if q.written]


def find(slug: str) -> Paper:
    """The paper named ``slug``; a clear error for an unknown or unwritten one."""
    by_slug = {q.slug: q for q in papers()}
    if slug not in by_slug:
        import difflib

        close = difflib.get_close_matches(slug, by_slug, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(
            f"unknown paper {slug!r}.{hint} Written notebooks: "
            f"{', '.join(q.slug for q in written()) or '(none)'}; `rlbook list` shows all 75."
        )
    q = by_slug[slug]
    if not q.written:
        raise KeyError(f"paper {slug!r} has no notebook yet (coming: {q.relpath})")
    return q
