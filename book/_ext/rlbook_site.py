"""Small Sphinx fixes for an offline site with no console errors (MEASURED.md).

- sphinx-thebe 0.3.1 adds its script twice: drop duplicate script tags on every page.
- MathJax on every page: chapter titles with math (e.g. "From $r$ to $Q^*$") appear in
  the navigation of every page, not only on the pages that have equations.
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    seen = set()
    files = context.get("script_files")
    if not files:
        return
    unique = []
    for js in files:
        # a file is known by its name, an inline script by its body
        key = getattr(js, "filename", None) or getattr(js, "attributes", {}).get("body") or str(js)
        if key in seen:
            continue
        seen.add(key)
        unique.append(js)
    files[:] = unique


def setup(app):
    app.set_html_assets_policy("always")
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
