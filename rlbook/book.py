"""Build the site: stage the book, execute the notebooks into it, generate pages, build.

Pipeline (MEASURED.md): copy ``book/`` to ``_build/stage``; papermill executes every
written notebook into ``_build/stage/notebooks/<part>/<slug>.ipynb`` (the same relative
path as in the repository, so Colab and download links point at real files); generate
the table of contents, the part pages' paper lists, the claims ledger and the run
statistics; copy the local MathJax; run ``jupyter-book build -W --keep-going`` (any
warning fails). The site lands in ``_build/html``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from rlbook import catalog, paths, runner

MATHJAX_FILES = ("tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions")


def stage_dir() -> Path:
    return paths.build_dir() / "stage"


def html_dir() -> Path:
    return paths.build_dir() / "html"


def mathjax_source() -> Path:
    """Where ``npm install --prefix _build/npm mathjax@3`` put MathJax (``make setup`` does it)."""
    return paths.build_dir() / "npm" / "node_modules" / "mathjax" / "es5"


# --------------------------------------------------------------------------- generated pages
def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def _by_paper(records: list[dict], profile: str = "smoke") -> dict[str, list[dict]]:
    out = defaultdict(list)
    for r in records:
        if r["profile"] == profile:
            out[r["slug"]].append(r)
    for v in out.values():
        v.sort(key=lambda r: r["seed"])
    return out


def _fmt(v) -> str:
    return "nan" if v is None else f"{v:.3g}"


def ledger_rows(records: list[dict]) -> list[dict]:
    """One row per (paper, claim): the paper's statement and number, ours per seed, status."""
    rows = []
    for slug, runs in _by_paper(records).items():
        claims_by_id: dict[str, list[tuple[int, dict]]] = defaultdict(list)
        order: list[str] = []
        for r in runs:
            for c in r["claims"]:
                if c["id"] not in claims_by_id:
                    order.append(c["id"])
                claims_by_id[c["id"]].append((r["seed"], c))
        seconds = sum(r["seconds"] for r in runs) / max(1, len(runs))
        for cid in order:
            per_seed = claims_by_id[cid]
            first = per_seed[0][1]
            rows.append({
                "slug": slug,
                "part": runs[0]["part"],
                "claim": cid,
                "paper": first["paper"],
                "paper_value": first.get("paper_value") or "",
                "condition": f"{first['measured']} {first['op']} {first['threshold']:g}",
                "values": {s: c["value"] for s, c in per_seed},
                "passed": {s: c["passed"] for s, c in per_seed},
                "seconds": seconds,
            })
        for r in runs:
            if r["status"] in ("failed", "timeout"):
                rows.append({"slug": slug, "part": r["part"], "claim": "(notebook)", "paper": "",
                             "paper_value": "", "condition": f"seed {r['seed']}: {r['error']}",
                             "values": {}, "passed": {r["seed"]: False}, "seconds": r["seconds"]})
    return rows


def ledger_text(records: list[dict]) -> str:
    """The ledger as plain text (``rlbook ledger``)."""
    lines = []
    for row in ledger_rows(records):
        vals = "  ".join(f"s{s}={_fmt(v)}{'' if row['passed'][s] else '!'}" for s, v in row["values"].items())
        status = "holds" if row["passed"] and all(row["passed"].values()) else "FAILS"
        lines.append(f"{row['slug']:<40} {row['claim']:<28} {status:<6} {vals}\n    {row['condition']}")
    return "\n".join(lines)


def ledger_page(records: list[dict]) -> str:
    rows = ledger_rows(records)
    n_hold = sum(1 for r in rows if r["passed"] and all(r["passed"].values()))
    out = [
        "# Claims ledger",
        "",
        "Every claim the book checks by machine, from the last run of each notebook in the",
        "smoke profile. A claim *holds* only if its condition is true on every seed run.",
        "The condition carries the margin that separates the method from its baseline.",
        f"Written by `rlbook build`; {n_hold} of {len(rows)} claims hold.",
        "",
    ]
    if not rows:
        out.append("No notebook has been run yet.")
        return "\n".join(out) + "\n"
    by_part = defaultdict(list)
    for r in rows:
        by_part[r["part"]].append(r)
    titles = {p.id: p.title for p in catalog.parts()}
    papers = {q.slug: q for q in catalog.papers()}
    for part in sorted(by_part):
        out += [f"## {titles.get(part, part)}", ""]
        slugs = list(dict.fromkeys(r["slug"] for r in by_part[part]))
        for slug in slugs:
            prow = [r for r in by_part[part] if r["slug"] == slug]
            seeds = sorted({s for r in prow for s in r["passed"]})
            q = papers.get(slug)
            title = q.title.replace("$r$", "r").replace("$Q^*$", "Q*") if q else slug
            out += [f"### {title}", "",
                    f"Chapter: [{slug}](notebooks/{part}/{slug}.ipynb) · seeds {', '.join(map(str, seeds))}"
                    f" · {prow[0]['seconds']:.1f} s per run", "",
                    f"| claim | condition | ours (seeds {' / '.join(map(str, seeds))}) | paper's number | status |",
                    "|---|---|---|---|---|"]
            for r in prow:
                ours = " / ".join(_fmt(r["values"].get(s)) if s in r["values"] else "—" for s in seeds)
                status = "holds" if r["passed"] and all(r["passed"].values()) else "**FAILS**"
                claim = f"`{r['claim']}`: {_md_escape(r['paper'])}" if r["paper"] else f"`{r['claim']}`"
                out.append(f"| {claim} | `{_md_escape(r['condition'])}` | {ours} "
                           f"| {_md_escape(r['paper_value']) or '—'} | {status} |")
            out.append("")
    return "\n".join(out) + "\n"


def statistics_page(records: list[dict]) -> str:
    out = [
        "# Run statistics",
        "",
        "Wall seconds and peak memory of every notebook run recorded by `rlbook build`",
        "(smoke profile: 2-core CPU, one thread per notebook when run in parallel).",
        "The smoke budget is 30 s per notebook.",
        "",
    ]
    runs = [r for r in records if r["profile"] == "smoke"]
    if not runs:
        return "\n".join(out + ["No notebook has been run yet."]) + "\n"
    secs = sorted(r["seconds"] for r in runs)
    med = secs[len(secs) // 2] if len(secs) % 2 else 0.5 * (secs[len(secs) // 2 - 1] + secs[len(secs) // 2])
    out += [f"{len(runs)} runs; median {med:.1f} s, max {secs[-1]:.1f} s.", "",
            "| notebook | seed | status | wall s | peak MB | claims held | finished |",
            "|---|---|---|---|---|---|---|"]
    for r in runs:
        n = len(r["claims"])
        k = sum(c["passed"] for c in r["claims"])
        out.append(
            f"| [{r['slug']}](notebooks/{r['part']}/{r['slug']}.ipynb) | {r['seed']} | {r['status']} "
            f"| {r['seconds']:.1f} | {r['peak_mb']:.0f} | {k}/{n} | {r['finished']} |"
        )
    v = runs[-1]["versions"]
    out += ["", "Packages: " + ", ".join(f"{k} {val}" for k, val in v.items()) + "."]
    extra = paths.root() / "book" / "benchmarks.md"
    if extra.exists():
        out += ["", extra.read_text(encoding="utf-8")]
    return "\n".join(out) + "\n"


def part_page(part: catalog.Part, intro: str) -> str:
    lines = [intro.rstrip(), "", "## Papers in this part", ""]
    for i, q in enumerate(part.papers, 1):
        title = q.title.replace("$r$", "r").replace("$Q^*$", "Q*")
        if q.written:
            lines.append(f"{i}. [{title}](../{q.relpath}) (arXiv [{q.arxiv}](https://arxiv.org/abs/{q.arxiv}))")
        else:
            lines.append(f"{i}. {title} (arXiv [{q.arxiv}](https://arxiv.org/abs/{q.arxiv})) — *coming*")
    return "\n".join(lines) + "\n"


def toc() -> dict:
    parts = []
    for i, part in enumerate(catalog.parts(), 1):
        chapter = {"file": f"parts/{part.id}"}
        sections = [{"file": q.relpath[: -len(".ipynb")]} for q in part.papers if q.written]
        if sections:
            chapter["sections"] = sections
        parts.append({"caption": f"Part {i}", "chapters": [chapter]})
    parts.append({"caption": "Reference", "chapters": [
        {"file": "notation"}, {"file": "family-tree"}, {"file": "ledger"}, {"file": "run-statistics"}, {"file": "bibliography"}]})
    return {"format": "jb-book", "root": "intro", "parts": parts}


# --------------------------------------------------------------------------- staging and build
def stage(keep_notebooks: bool = True) -> Path:
    """Copy ``book/`` into the staging folder (keeping executed notebooks) and generate pages."""
    st = stage_dir()
    st.mkdir(parents=True, exist_ok=True)
    for child in st.iterdir():
        if child.name in ("notebooks",) and keep_notebooks:
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    src = paths.root() / "book"
    shutil.copytree(src, st, dirs_exist_ok=True)
    # only written notebooks that were executed are part of the site
    nb_root = st / "notebooks"
    if nb_root.exists():
        wanted = {q.relpath for q in catalog.written()}
        for f in nb_root.rglob("*.ipynb"):
            if f.relative_to(st).as_posix() not in wanted:
                f.unlink()
    for q in catalog.written():
        if not (st / q.relpath).exists():  # not executed: show the source notebook
            (st / q.relpath).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(q.notebook, st / q.relpath)
    (st / "parts").mkdir(exist_ok=True)
    for part in catalog.parts():
        intro_file = src / "parts" / f"{part.id}.md"
        intro = intro_file.read_text(encoding="utf-8") if intro_file.exists() else f"# {part.title}\n"
        (st / "parts" / f"{part.id}.md").write_text(part_page(part, intro), encoding="utf-8")
    recs = runner.load_records()
    (st / "ledger.md").write_text(ledger_page(recs), encoding="utf-8")
    (st / "run-statistics.md").write_text(statistics_page(recs), encoding="utf-8")
    from rlbook import familytree

    familytree.draw(st / "family-tree.svg")
    familytree.draw(st / "family-tree-rlvr.svg", *familytree.part_subtree(*familytree.load(), "04-rlvr"))
    (st / "family-tree.md").write_text(familytree.page("family-tree.svg", "family-tree-rlvr.svg"), encoding="utf-8")
    (st / "_toc.yml").write_text(yaml.safe_dump(toc(), sort_keys=False), encoding="utf-8")
    mj = mathjax_source()
    if not (mj / "tex-chtml.js").exists():
        raise FileNotFoundError(
            f"local MathJax not found at {mj}: run `make setup` (npm install --prefix _build/npm mathjax@3)"
        )
    dest = st / "_extra" / "mathjax"
    for rel in MATHJAX_FILES:
        s, d = mj / rel, dest / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(s, d, dirs_exist_ok=True) if s.is_dir() else shutil.copy(s, d)
    return st


def build(seeds: list[int] = (0, 1, 2), jobs: int = 2, run: bool = True, timeout: int | None = None) -> int:
    """Execute every written notebook (smoke, all ``seeds``), then build the site. Returns an exit code."""
    code = 0
    st = stage_dir()
    if run:
        slugs = [q.slug for q in catalog.written()]
        planned = runner.plan(slugs, "smoke", list(seeds), {})
        print(f"executing {len(planned)} notebook run(s), {jobs} at a time")
        records = runner.run_many(planned, st, jobs_n=jobs, timeout=timeout)
        runner.save_records(records)
        print(runner.summary(records))
        code = 0 if all(r.ok for r in records) else 1
    stage()
    out = st / "_build"
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "jupyter_book", "build", str(st), "--builder", "html", "-W", "--keep-going"]
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if jb:
        cmd = [jb, "build", str(st), "--builder", "html", "-W", "--keep-going"]
    print("building the site:", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-6000:], proc.stderr[-6000:], sep="\n")
        print("the site build FAILED (warnings are errors)")
        return 1
    if html_dir().exists():
        shutil.rmtree(html_dir())
    shutil.copytree(out / "html", html_dir())
    print(f"the site is in {html_dir()} (open {html_dir() / 'index.html'})")
    return code
