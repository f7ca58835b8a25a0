"""The book's one figure style, and the few plots the chapters share.

Call :func:`apply_style` once (the settings cell of each chapter does). Every plotting function takes an
optional ``ax`` to draw into, returns the ``Axes`` it drew on and never calls ``plt.show()``: in a notebook
the figure is displayed when the cell ends; in a script, save it with ``ax.figure.savefig(...)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from cycler import cycler

# Okabe and Ito's colour-blind-safe palette, in a fixed order: the first model of a plot is always blue,
# the second vermilion, and so on.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")

STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "savefig.bbox": "tight",
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=list(COLORS)),
    "lines.linewidth": 1.8,
    "lines.markersize": 5,
}


def apply_style() -> None:
    """Set the book's matplotlib defaults (``STYLE``) for every figure drawn afterwards."""
    mpl.rcParams.update(STYLE)


def _axes(ax: plt.Axes | None) -> plt.Axes:
    if ax is None:
        _, ax = plt.subplots()
    return ax


def head_share(item_counts: Sequence[float] | np.ndarray, fraction: float) -> float:
    """Share of all interactions that fall on the most popular ``fraction`` of the items.

    The head is the ``ceil(fraction * n_items)`` items with the most interactions (items with zero
    interactions count in ``n_items``: they are part of the catalogue).
    """
    counts = np.sort(np.asarray(item_counts, dtype=np.float64))[::-1]
    if counts.size == 0 or counts.sum() <= 0:
        raise ValueError("item_counts must contain at least one interaction")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n_head = int(np.ceil(fraction * counts.size))
    return float(counts[:n_head].sum() / counts.sum())


def popularity_long_tail(
    item_counts: Sequence[float] | np.ndarray,
    ax: plt.Axes | None = None,
    log: bool = True,
    head_fractions: Sequence[float] = (0.1, 0.2),
    ylabel: str = "interactions per item",
) -> plt.Axes:
    """Items sorted by popularity (x: rank as a share of the catalogue), interactions per item on y.

    A dotted vertical line marks each head fraction, labelled with the share of all interactions the
    items left of it receive (:func:`head_share`). ``log`` puts y on a log scale (items with zero
    interactions are then not drawn).
    """
    ax = _axes(ax)
    counts = np.sort(np.asarray(item_counts, dtype=np.float64))[::-1]
    x = np.arange(1, counts.size + 1) / counts.size
    ax.fill_between(x, counts, step="post", alpha=0.25, color=COLORS[0], linewidth=0)
    ax.step(x, counts, where="post", color=COLORS[0], label="items, most popular first")
    for fraction, color in zip(head_fractions, COLORS[1:]):
        share = head_share(counts, fraction)
        ax.axvline(fraction, color=color, linestyle=":", linewidth=1.5,
                   label=f"top {fraction:.0%} of items: {share:.0%} of interactions")  # fmt: skip
    if log:
        ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(mpl.ticker.PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("items ranked by popularity (share of the catalogue)")
    ax.set_ylabel(ylabel)
    ax.set_title("The long tail: a few items get most interactions")
    ax.legend(loc="upper right")
    return ax


def metric_vs_k(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    metric_name: str,
    ax: plt.Axes | None = None,
    log_x: bool = False,
    xlabel: str = "K (length of the list)",
    hlines: Mapping[str, float] | None = None,
    title: str | None = None,
    legend_kwargs: Mapping[str, object] | None = None,
) -> plt.Axes:
    """One line per curve, ``name -> (ks, values)``; ``hlines`` adds dashed reference levels ``label -> y``.

    ``legend_kwargs`` go to ``ax.legend`` (e.g. ``{"loc": "lower right"}``).
    """
    ax = _axes(ax)
    for name, (ks, values) in curves.items():
        ax.plot(np.asarray(ks), np.asarray(values), label=name)
    for (label, y), color in zip((hlines or {}).items(), COLORS[len(curves):] or COLORS):
        ax.axhline(y, color=color, linestyle="--", linewidth=1.2, label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric_name)
    ax.set_ylim(bottom=0)
    if title:
        ax.set_title(title)
    ax.legend(**(legend_kwargs or {}))
    return ax


DEFAULT_COST_COLUMNS = {
    "ranker_ms_per_user": "ranking model on every item",
    "dot_product_ms_per_user": "retrieval: dot product + top-k",
}


def cost_curves(
    table: pd.DataFrame,
    ax: plt.Axes | None = None,
    columns: Mapping[str, str] | None = None,
    x: str = "catalogue_size",
    ylabel: str = "milliseconds per user (one request)",
    title: str | None = "Cost of scoring one user against the catalogue",
) -> plt.Axes:
    """Log-log lines of ``table[column]`` against ``table[x]``, one per ``columns`` entry (``column -> label``).

    Rows where a column is missing (NaN: not measured at that size) are left out of its line.
    """
    ax = _axes(ax)
    columns = DEFAULT_COST_COLUMNS if columns is None else columns
    for column, label in columns.items():
        rows = table[[x, column]].dropna()
        ax.plot(rows[x].to_numpy(), rows[column].to_numpy(), marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalogue size (items)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    return ax




def recall_vs_qps(
    table: pd.DataFrame,
    ax: plt.Axes | None = None,
    group: Sequence[str] = ("method", "n_trees"),
    recall: str = "recall@10",
    speed: str = "QPS",
    vlines: Mapping[str, float] | None = None,
    title: str | None = None,
) -> plt.Axes:
    """The recall-latency trade-off of approximate indexes (rows of :func:`tt_helpers.ann.annoy_grid` or of the
    ANN benchmark): ``recall`` against single-query ``speed`` (log scale), one line per ``group`` (e.g. an
    Annoy ``n_trees``, points in the order of the rows: increasing ``search_k``), and dotted vertical lines
    ``vlines`` (``label -> queries per second``: exact search). Up and to the right is better."""
    ax = _axes(ax)
    keys = [c for c in group if c in table.columns and table[c].notna().any()]
    groups = table.groupby(keys, sort=False, dropna=False) if keys else [((), table)]
    for key, rows in groups:
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{int(v)} trees" if name == "n_trees" else str(v)
                          for name, v in zip(keys, key) if not pd.isna(v))
        ax.plot(rows[speed].to_numpy(), rows[recall].to_numpy(), marker="o", label=label or None)
    for (label, qps), color in zip((vlines or {}).items(), COLORS[6:] + COLORS[:6]):
        ax.axvline(qps, color=color, linestyle=":", linewidth=1.4, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(f"queries per second, one at a time ({speed}, log scale)")
    ax.set_ylabel(recall)
    if title:
        ax.set_title(title)
    _legend(ax)
    return ax


# --------------------------------------------------------------------------- experiment summaries
# These read a table shaped like :meth:`tt_helpers.experiments.Runs.intervals`: one row per model, columns
# ``mean`` (over seeds and users), ``low`` and ``high`` (the 95% bootstrap interval of the mean over users).
# :func:`variant_bars` starts the axis at zero; :func:`variant_points` and :func:`metric_vs_setting` zoom
# to the data, for small differences. Use the same kind of plot for the same kind of question.

_INTERVAL_LABEL = "{metric}: mean, 95% interval over users"


def _interval_columns(summary: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in ("mean", "low", "high") if c not in summary.columns]
    if missing:
        raise KeyError(f"summary lacks column(s) {missing}; expected the output of Runs.intervals(metric, names)")
    mean = summary["mean"].to_numpy(dtype=float)
    err = np.vstack([mean - summary["low"].to_numpy(dtype=float), summary["high"].to_numpy(dtype=float) - mean])
    return mean, err


def _reference_lines(ax: plt.Axes, hlines: Mapping[str, float] | None, first_color: int) -> None:
    colors = COLORS[first_color:] + COLORS[:first_color]
    for (label, y), color in zip((hlines or {}).items(), colors):
        ax.axhline(y, color=color, linestyle="--", linewidth=1.2, label=label)


def variant_bars(
    summary: pd.DataFrame,
    metric: str,
    ax: plt.Axes | None = None,
    hlines: Mapping[str, float] | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> plt.Axes:
    """One bar per row (variant) at its mean ``metric``, with the 95% bootstrap interval over users as the
    error bar; ``hlines`` adds dashed reference levels ``label -> y`` (e.g. baselines on the same split).
    ``labels`` replaces the row names under the bars."""
    ax = _axes(ax)
    mean, err = _interval_columns(summary)
    x = np.arange(len(mean))
    ax.bar(x, mean, yerr=err, capsize=4, color=COLORS[0], alpha=0.85, label=_INTERVAL_LABEL.format(metric=metric))
    _reference_lines(ax, hlines, first_color=1)
    ax.set_xticks(x, list(labels) if labels is not None else [str(i) for i in summary.index])
    ax.set_ylabel(metric)
    ax.set_ylim(bottom=0)
    ax.grid(axis="x", visible=False)
    if title:
        ax.set_title(title)
    _legend(ax)
    return ax


def variant_points(
    summary: pd.DataFrame,
    metric: str,
    ax: plt.Axes | None = None,
    hlines: Mapping[str, float] | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> plt.Axes:
    """One point per row (variant) at its mean ``metric`` with its interval over users, on a y axis zoomed to
    the points and ``hlines`` (keep far-away reference levels out of ``hlines``, or the zoom is lost)."""
    ax = _axes(ax)
    mean, err = _interval_columns(summary)
    x = np.arange(len(mean))
    ax.errorbar(
        x,
        mean,
        yerr=err,
        marker="o",
        linestyle="none",
        capsize=4,
        color=COLORS[0],
        label=_INTERVAL_LABEL.format(metric=metric),
    )
    _reference_lines(ax, hlines, first_color=1)
    ax.set_xticks(x, list(labels) if labels is not None else [str(i) for i in summary.index])
    ax.set_xlim(-0.5, len(mean) - 0.5)
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    _legend(ax)
    return ax


def metric_vs_setting(
    summary: pd.DataFrame,
    metric: str,
    x: Sequence[float],
    ax: plt.Axes | None = None,
    hlines: Mapping[str, float] | None = None,
    xlabel: str = "setting",
    log2_x: bool = False,
    label: str | None = None,
    title: str | None = None,
) -> plt.Axes:
    """``metric`` (mean, error bars: the interval over users) of each row against the numeric setting ``x``
    of that row (e.g. the embedding size), with dashed reference levels ``hlines``; the y axis is zoomed
    to the data, as in :func:`variant_points`."""
    ax = _axes(ax)
    mean, err = _interval_columns(summary)
    x = np.asarray(x, dtype=float)
    if x.shape != mean.shape:
        raise ValueError(f"x has {x.size} values for {mean.size} rows")
    ax.errorbar(
        x, mean, yerr=err, marker="o", capsize=4, color=COLORS[0], label=label or _INTERVAL_LABEL.format(metric=metric)
    )
    _reference_lines(ax, hlines, first_color=1)
    if log2_x:
        ax.set_xscale("log", base=2)
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    _legend(ax)
    return ax


def _legend(ax: plt.Axes) -> None:
    ax.legend(loc="best")


__all__ = [
    "COLORS", "STYLE", "apply_style", "cost_curves", "head_share", "metric_vs_k", "metric_vs_setting",
    "popularity_long_tail", "variant_bars", "variant_points",
]


def two_tower_diagram(ax: plt.Axes | None = None) -> plt.Axes:
    """Chapter 2's picture of the model: the user tower (left) and the item tower (right), each from its
    features through embeddings, concatenation, an MLP and L2-normalisation to one vector, meeting only in
    the score ``<u, v> / tau``; the history is pooled through the item tower's ``item_id`` table (dashed)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 6.2))
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 62)
    ax.axis("off")
    user_color, item_color, shared = COLORS[0], COLORS[1], COLORS[2]

    def box(x, y, text, color, width=11.0, height=4.2, fill=0.12, size=9):
        ax.add_patch(mpl.patches.FancyBboxPatch(
            (x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.3,rounding_size=0.8",
            facecolor=mpl.colors.to_rgba(color, fill), edgecolor=color, linewidth=1.2))
        ax.text(x, y, text, ha="center", va="center", fontsize=size)

    def arrow(x0, y0, x1, y1, color="0.35", style="-|>", dashed=False):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(
            arrowstyle=style, color=color, lw=1.1, linestyle="--" if dashed else "-", shrinkA=2, shrinkB=2))

    towers = {
        "user": (user_color, [8, 17.5, 27, 36.5, 46], ["user_id", "age", "gender", "occupation", "zip code"],
                 27.0, "history\n(items rated before)"),
        "item": (item_color, [57, 68.5, 80, 91.5], ["item_id", "genres", "year", "title words"], 74.0, None),
    }
    for side, (color, xs, names, centre, _) in towers.items():
        ax.text(centre, 60, f"{side} tower", ha="center", va="center", fontsize=12, color=color,
                fontweight="bold")
        for x, name in zip(xs, names):
            pooled = name in ("genres", "title words")
            box(x, 53, name, color, width=9.0 if side == "user" else 10.0)
            box(x, 45, "mean of\nembeddings" if pooled else "embedding", color, width=9.0, fill=0.05, size=8)
            arrow(x, 50.8, x, 47.4)
            arrow(x, 42.6, centre, 35.4)
        box(centre, 33, "concatenate", color, width=18)
        box(centre, 25, "MLP (0, 1 or 2 hidden layers)", color, width=26)
        box(centre, 17, "L2-normalise (optional)", color, width=24)
        arrow(centre, 30.8, centre, 27.2)
        arrow(centre, 22.8, centre, 19.2)
        symbol = "u" if side == "user" else "v"
        box(centre, 9, f"${symbol}$  ($d$ numbers)", color, width=16, fill=0.3)
        arrow(centre, 14.8, centre, 11.2)
    # the history: the user's past items, pooled through the item tower's item_id table
    box(8, 33, "history:\nmean of item_id\nembeddings", shared, width=12, height=6.5, size=8)
    arrow(14.3, 33, 17.8, 33)
    arrow(57, 42.6, 9, 36.4, color=shared, dashed=True)
    ax.text(50, 36.9, "the same item_id table", color=shared, fontsize=8, ha="center", rotation=-7)
    box(50.5, 2.6, r"score$(u, v) = \langle u, v \rangle / \tau$", "0.2", width=28, height=4.0, fill=0.06,
        size=10)
    arrow(27.0, 6.8, 38.0, 3.2)
    arrow(74.0, 6.8, 63.0, 3.2)
    return ax
