"""Plots of experiment summaries (mean and spread over seeds), in the book's style (:mod:`tt_helpers.plotting`).

Every function reads a table shaped like :func:`tt_helpers.experiments.summarize`'s output: one row per
variant, columns ``"<metric> mean"`` and ``"<metric> std"``, and draws error bars of +- one standard
deviation over seeds. :func:`variant_bars` starts the axis at zero, for differences that are large
compared with the values; :func:`variant_points` and :func:`metric_vs_setting` draw points on an axis
zoomed to the data, for small differences. Like :mod:`tt_helpers.plotting`, they take an optional ``ax``,
return the ``Axes`` they drew on, place the legend to the right of the axes and never call ``plt.show()``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .plotting import COLORS, _axes


def _columns(summary: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    mean, std = f"{metric} mean", f"{metric} std"
    missing = [c for c in (mean, std) if c not in summary.columns]
    if missing:
        raise KeyError(f"summary lacks column(s) {missing}; expected the output of experiments.summarize(runs, [{metric!r}, ...])")
    return summary[mean].to_numpy(dtype=float), summary[std].to_numpy(dtype=float)


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
    """One bar per row (variant) at its mean ``metric``, with an error bar of +- one standard deviation
    over seeds; ``hlines`` adds dashed reference levels ``label -> y`` (e.g. baselines on the same split).
    ``labels`` replaces the row names under the bars."""
    ax = _axes(ax)
    mean, std = _columns(summary, metric)
    x = np.arange(len(mean))
    ax.bar(x, mean, yerr=std, capsize=4, color=COLORS[0], alpha=0.85, label=f"{metric} (mean +- std over seeds)")
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
    """One point per row (variant) at its mean ``metric`` with +- one std error bars, on a y axis zoomed to
    the points and ``hlines`` (keep far-away reference levels out of ``hlines``, or the zoom is lost)."""
    ax = _axes(ax)
    mean, std = _columns(summary, metric)
    x = np.arange(len(mean))
    ax.errorbar(x, mean, yerr=std, marker="o", linestyle="none", capsize=4, color=COLORS[0], label=f"{metric} (mean +- std over seeds)")
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
    """``metric`` (mean, error bars +- one std over seeds) of each row against the numeric setting ``x``
    of that row (e.g. the embedding size), with dashed reference levels ``hlines``; the y axis is zoomed
    to the data, as in :func:`variant_points`."""
    ax = _axes(ax)
    mean, std = _columns(summary, metric)
    x = np.asarray(x, dtype=float)
    if x.shape != mean.shape:
        raise ValueError(f"x has {x.size} values for {mean.size} rows")
    ax.errorbar(x, mean, yerr=std, marker="o", capsize=4, color=COLORS[0], label=label or f"{metric} (mean +- std over seeds)")
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
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))


__all__ = ["metric_vs_setting", "variant_bars", "variant_points"]
