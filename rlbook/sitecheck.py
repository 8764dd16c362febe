"""Check the built site in a real browser (Debian chromium driven by playwright).

For every page: no console errors or uncaught exceptions, no failed requests, math
typeset by the local MathJax (no raw TeX left), every image loaded, every internal
link and anchor resolves; and the search page finds a known word. Pages are served
from ``_build/html`` by ``http.server`` on 127.0.0.1 (nothing leaves the machine).
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
]


@dataclass
class Report:
    pages: int = 0
    links: int = 0
    math_pages: int = 0
    images: int = 0
    search_hits: int = 0
    problems: list[str] = field(default_factory=list)


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


def _serve(root: Path):
    handler = functools.partial(_Quiet, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


_REFRESH_RE = re.compile(r"""http-equiv=["']refresh["'][^>]*url=([^"'>]+)""", re.I)
_ID_RE = re.compile(r"""\bid=["']([^"']+)["']""")


@functools.lru_cache(maxsize=None)
def _ids(path: str) -> frozenset[str]:
    return frozenset(_ID_RE.findall(Path(path).read_text(encoding="utf-8", errors="replace")))


def check_site(html: Path, search_word: str = "policy", executable: str | None = None) -> Report:
    """Open every page of the site in ``html``; return what was checked and what is wrong."""
    from playwright.sync_api import sync_playwright

    html = Path(html)
    executable = executable or chromium_path()
    if executable is None:
        raise FileNotFoundError("chromium not found: `make browser` installs Debian's chromium")
    pages = sorted(p for p in html.rglob("*.html") if not p.name.startswith("_") and "_static" not in p.parts)
    rep = Report()
    srv = _serve(html)
    base = f"http://127.0.0.1:{srv.server_address[1]}/"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
            ctx = browser.new_context()
            page = ctx.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"exception: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
            for path in pages:
                rel = path.relative_to(html).as_posix()
                url = base + rel
                errors.clear()
                text = path.read_text(encoding="utf-8", errors="replace")
                m = _REFRESH_RE.search(text)
                if m:  # a redirect page (index.html): its target must exist
                    if not (path.parent / m.group(1)).exists():
                        rep.problems.append(f"{rel}: redirects to a missing page {m.group(1)}")
                    rep.pages += 1
                    continue
                page.goto(url, wait_until="load")
                has_math = page.evaluate("document.querySelectorAll('.math, div.math, span.math').length") > 0
                if has_math:
                    rep.math_pages += 1
                    try:
                        page.wait_for_function(
                            "window.MathJax && MathJax.startup && MathJax.startup.promise"
                            " && document.querySelectorAll('mjx-container').length > 0", timeout=15000)
                        page.evaluate("MathJax.startup.promise")
                    except Exception:
                        rep.problems.append(f"{rel}: math not typeset (no mjx-container)")
                    if page.evaluate("document.querySelectorAll('mjx-merror').length") > 0:
                        rep.problems.append(f"{rel}: MathJax reports a TeX error")
                imgs = page.evaluate(
                    "Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth > 0])")
                rep.images += len(imgs)
                rep.problems += [f"{rel}: image not loaded: {src}" for src, ok in imgs if not ok]
                hrefs = page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))")
                for href in hrefs:
                    if not href or href.startswith(("http:", "https:", "mailto:", "javascript:", "data:")):
                        continue
                    rep.links += 1
                    target = urlparse(urljoin(url, href))
                    tpath = html / unquote(target.path[len(urlparse(base).path):])
                    if tpath.is_dir():
                        tpath = tpath / "index.html"
                    if not tpath.exists():
                        rep.problems.append(f"{rel}: broken link {href}")
                    elif target.fragment and tpath.suffix == ".html" and unquote(target.fragment) not in _ids(str(tpath)):
                        rep.problems.append(f"{rel}: missing anchor {href}")
                page.wait_for_timeout(50)
                rep.problems += [f"{rel}: {e}" for e in errors]
                rep.pages += 1
            # search
            errors.clear()
            page.goto(base + f"search.html?q={search_word}", wait_until="load")
            try:
                page.wait_for_selector("#search-results ul.search li", timeout=15000)
                rep.search_hits = page.evaluate("document.querySelectorAll('#search-results ul.search li').length")
            except Exception:
                rep.problems.append(f"search for {search_word!r} found nothing")
            rep.problems += [f"search.html: {e}" for e in errors]
            browser.close()
    finally:
        srv.shutdown()
    return rep


def main() -> int:
    from rlbook import book

    rep = check_site(book.html_dir())
    print(f"{rep.pages} pages, {rep.links} internal links, {rep.math_pages} pages with math, "
          f"{rep.images} images, {rep.search_hits} search hits")
    for p in rep.problems:
        print("  PROBLEM", p)
    return 1 if rep.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
