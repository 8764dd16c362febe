"""The house style of every figure in the book.

Seaborn theme, readable at page width, labelled axes, the baseline in grey, the method
in colour, seeds as shaded bands, and a small tag saying which profile produced it.
Do not call ``matplotlib.use("Agg")`` in a notebook: it drops figures from the output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

BASELINE = "#8c8c8c"
"""the colour of every baseline"""
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2"]
"""method colours, in order"""


def style() -> None:
    """Apply the house style (idempotent)."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)
    mpl.rcParams.update(
        {
            "figure.figsize": (7.0, 3.6),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "axes.titleweight": "bold",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
        }
    )


def subplots(ncols: int = 1, nrows: int = 1, width: float = 7.0, height: float = 3.4, **kw):
    """``plt.subplots`` in the house style, sized for the page."""
    import matplotlib.pyplot as plt

    style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), constrained_layout=True, **kw)
    return fig, axes


def color(i: int, baseline: bool = False) -> str:
    """The i-th method colour, or the baseline grey."""
    return BASELINE if baseline else PALETTE[i % len(PALETTE)]


def tag_profile(fig, profile: str, seed: int | Sequence[int] | None = None) -> None:
    """Write which profile (and seeds) produced the figure in its bottom-right corner."""
    s = f"profile: {profile}"
    if seed is not None:
        s += f", seed{'s' if not isinstance(seed, int) else ''} {seed}"
    fig.text(0.995, 0.005, s, ha="right", va="bottom", fontsize=7, color="#666666")


def band(ax, x, ys, label: str, i: int = 0, baseline: bool = False, **kw) -> None:
    """Plot the mean of ``ys`` (``(seeds, len(x))`` or ``(len(x),)``) with a min-max band over seeds."""
    ys = np.atleast_2d(np.asarray(ys, dtype=float))
    c = color(i, baseline)
    ls = kw.pop("ls", "--" if baseline else "-")
    ax.plot(x, ys.mean(0), color=c, ls=ls, label=label, **kw)
    if ys.shape[0] > 1:
        ax.fill_between(x, ys.min(0), ys.max(0), color=c, alpha=0.18, lw=0)


def learning_curves(
    ax,
    x,
    curves: Mapping[str, np.ndarray],
    baselines: Sequence[str] = (),
    xlabel: str = "step",
    ylabel: str = "",
    title: str | None = None,
) -> None:
    """Several curves, one per method (each ``(seeds, len(x))`` or ``(len(x),)``); baselines grey."""
    i = 0
    for name, ys in curves.items():
        is_base = name in baselines
        band(ax, x, ys, name, i=i, baseline=is_base)
        i += 0 if is_base else 1
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()


def token_heatmap(
    ax,
    values,
    tokens=None,
    highlight=None,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    cbar_label: str = "per-token implicit reward",
    annotate: bool = True,
    vmax: float | None = None,
):
    """Per-token values as a heatmap: one row per response, one cell per token.

    ``values: (n, T)`` (``nan`` pads shorter rows); ``tokens: (n, T)`` cell labels (token
    strings or ids), drawn in the cells; ``highlight: (n, T)`` bool, cells outlined in
    black (e.g. the error token). A diverging colour map centred at 0 (red = negative).
    Returns the image (for a colour bar); the colour bar is added to ``ax``'s figure.
    """
    import matplotlib.patches as mpatches

    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"values must be (n, T), got shape {v.shape}")
    lim = vmax if vmax is not None else float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 1.0
    im = ax.imshow(v, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    n, T = v.shape
    for i in range(n):
        for j in range(T):
            if not np.isfinite(v[i, j]):
                continue
            text = ""
            if tokens is not None:
                text = str(tokens[i][j])
            if annotate:
                text = f"{text}\n{v[i, j]:+.2f}" if text else f"{v[i, j]:+.2f}"
            if text:
                dark = abs(v[i, j]) > 0.6 * lim
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
            if highlight is not None and highlight[i][j]:
                ax.add_patch(mpatches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="black", lw=2.2))
    ax.set_xticks(range(T))
    ax.set_xlabel("token position t")
    ax.set_yticks(range(n))
    if row_labels is not None:
        ax.set_yticklabels(row_labels)
    ax.grid(False)
    if title:
        ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, label=cbar_label, shrink=0.9)
    return im


def pass_at_k_curves(
    ax,
    ks: Sequence[int],
    curves: Mapping[str, np.ndarray],
    baselines: Sequence[str] = ("base",),
    title: str | None = None,
    ylabel: str = "pass@k",
) -> None:
    """pass@k against k on a log2 axis, one curve per method (``(seeds, len(ks))`` or ``(len(ks),)``); baselines grey."""
    learning_curves(ax, list(ks), curves, baselines=baselines, xlabel="k (samples per prompt)", ylabel=ylabel, title=title)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ks))
    ax.set_xticklabels([str(k) for k in ks])
