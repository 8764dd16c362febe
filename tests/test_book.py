"""The whole book: every notebook executes on seeds 0-2 with its claims holding, the site
builds offline with warnings as errors, and every page passes the browser check."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlbook import book, catalog, runner, sitecheck

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def built():
    proc = subprocess.run(
        [sys.executable, "-m", "rlbook", "build", "--seeds", ",".join(map(str, SEEDS)), "--jobs", "2"],
        capture_output=True, text=True, cwd=ROOT,
    )
    print(proc.stdout[-5000:], proc.stderr[-3000:])
    return proc


@pytest.mark.slow
def test_every_notebook_runs_and_its_claims_hold_on_three_seeds(built):
    recs = {(r["slug"], r["seed"]): r for r in runner.load_records() if r["profile"] == "smoke"}
    problems = []
    for q in catalog.written():
        for s in SEEDS:
            r = recs.get((q.slug, s))
            if r is None:
                problems.append(f"{q.slug} seed {s}: not run")
            elif r["status"] != "ok":
                problems.append(f"{q.slug} seed {s}: {r['status']}: {r['error']}")
            elif not r["claims"]:
                problems.append(f"{q.slug} seed {s}: no claims recorded")
    assert not problems, "\n".join(problems)
    assert built.returncode == 0, built.stdout[-3000:]


@pytest.mark.slow
def test_site_has_every_chapter_and_the_generated_pages(built):
    html = book.html_dir()
    assert (html / "index.html").exists(), built.stdout[-3000:]
    for q in catalog.written():
        page = html / q.relpath.replace(".ipynb", ".html")
        assert page.exists(), f"missing page {page}"
        text = page.read_text()
        assert "colab.research.google.com/github/rl-paper-book/rl-paper-book/blob/main/" + q.relpath in text
        assert "<img" in text, f"{q.slug}: no figure on the page"
    ledger = (html / "ledger.html").read_text()
    stats = (html / "run-statistics.html").read_text()
    for q in catalog.written():
        assert q.slug in ledger and q.slug in stats
    assert "FAILS" not in ledger
    bib = (html / "bibliography.html").read_text()
    assert all(q.arxiv in bib for q in catalog.papers())


@pytest.mark.slow
def test_site_in_a_real_browser(built):
    if sitecheck.chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: `make browser` installs it")
        pytest.skip("chromium not installed (make browser)")
    rep = sitecheck.check_site(book.html_dir(), search_word="policy")
    print(json.dumps({k: v for k, v in rep.__dict__.items() if k != "problems"}))
    assert not rep.problems, "\n".join(rep.problems)
    n_chapters = len(catalog.written())
    assert rep.pages >= 17 + n_chapters
    assert rep.math_pages >= 1 + n_chapters
    assert rep.images >= n_chapters
    assert rep.search_hits > 0
