"""Show rlbook's own source in a notebook, so the page cannot drift from what runs."""

from __future__ import annotations

import inspect


def show(*objs) -> None:
    """Display the source of functions/classes as a highlighted code block.

    ``show(losses.dpo_loss)`` renders in the notebook (and on the site) the exact code
    that the notebook calls.
    """
    from IPython.display import Markdown, display

    parts = []
    for obj in objs:
        mod = inspect.getmodule(obj)
        where = f"{mod.__name__}" if mod else ""
        parts.append(f"`{where}.{obj.__qualname__}`\n\n```python\n{inspect.getsource(obj)}```")
    display(Markdown("\n\n".join(parts)))
