"""tt_helpers.plotting: bars and points with interval error bars from Runs.intervals tables."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tt_helpers import experiments, plotting  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# per-user Recall@100 averaged over the two seeds; each seed is that -/+ 0.05. Means: 0.45, 0.6, 0.3.
PER_USER = {
    "a": [0.25, 0.65, 0.45, 0.45, 0.35, 0.55],
    "b": [0.6, 0.4, 0.8, 0.6, 0.7, 0.5],
    "c": [0.1, 0.5, 0.3, 0.3, 0.2, 0.4],
}
MEANS = [0.45, 0.6, 0.3]


def per_user_frame(values):
    return pd.DataFrame({"Recall@100": values}, index=pd.Index(range(len(values)), name="user_idx"))


@pytest.fixture
def summary():
    runs = experiments.Runs("temporal")
    for name, values in PER_USER.items():
        for seed, shift in ((0, -0.05), (1, 0.05)):
            shifted = np.asarray(values) + shift
            runs.add(name, {"Recall@100": float(shifted.mean())}, per_user_frame(shifted), seed=seed)
    frame = runs.intervals("Recall@100", ["a", "b", "c"])
    assert list(frame.columns) == ["mean", "low", "high"]
    assert np.allclose(frame["mean"], MEANS)
    return frame


def error_segments(container):
    """(x, low, high) of each error bar of a bar or errorbar container."""
    errorbar = getattr(container, "errorbar", container)
    barlines = errorbar.lines[2][0]
    return [(seg[0][0], min(seg[0][1], seg[1][1]), max(seg[0][1], seg[1][1])) for seg in barlines.get_segments()]


def test_variant_bars_heights_errors_and_reference_lines(summary):
    ax = plotting.variant_bars(summary, "Recall@100", hlines={"EASE": 0.55, "popular": 0.3}, labels=["A", "B", "C"])
    heights = [p.get_height() for p in ax.patches]
    assert np.allclose(heights, MEANS)
    segments = error_segments(ax.containers[0])
    assert np.allclose([s[1] for s in segments], summary["low"]) and np.allclose(
        [s[2] for s in segments], summary["high"]
    )
    assert (summary["low"] < summary["mean"]).all() and (summary["mean"] < summary["high"]).all()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B", "C"]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert sorted(line.get_ydata()[0] for line in dashed) == [0.3, 0.55]
    assert ax.get_ylim()[0] == 0
    labels = ax.get_legend_handles_labels()[1]
    assert "EASE" in labels and "popular" in labels


def test_metric_vs_setting_draws_means_at_x(summary):
    ax = plotting.metric_vs_setting(summary, "Recall@100", [16, 32, 64], hlines={"EASE": 0.55}, log2_x=True)
    line = ax.get_lines()[0]
    assert np.allclose(line.get_xdata(), [16, 32, 64])
    assert np.allclose(line.get_ydata(), MEANS)
    segments = error_segments(ax.containers[0])
    assert np.allclose([s[0] for s in segments], [16, 32, 64])
    assert np.allclose([s[1] for s in segments], summary["low"]) and np.allclose(
        [s[2] for s in segments], summary["high"]
    )
    assert ax.get_xscale() == "log"


def test_a_hand_made_interval_frame_is_drawn_as_given():
    frame = pd.DataFrame({"mean": [0.2, 0.5], "low": [0.1, 0.45], "high": [0.25, 0.7]}, index=["x", "y"])
    ax = plotting.variant_points(frame, "NDCG@10")
    assert np.allclose(ax.get_lines()[0].get_ydata(), [0.2, 0.5])
    segments = error_segments(ax.containers[0])
    # asymmetric
    assert np.allclose([s[1] for s in segments], [0.1, 0.45]) and np.allclose([s[2] for s in segments], [0.25, 0.7])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y"]


def test_errors_name_the_problem(summary):
    means_only = summary.drop(columns=["low", "high"])
    with pytest.raises(KeyError, match="low.*high.*Runs.intervals"):
        plotting.variant_bars(means_only, "Recall@100")
    table = pd.DataFrame({"Recall@100": MEANS}, index=["a", "b", "c"])  # e.g. a Runs.table, not intervals
    with pytest.raises(KeyError, match="mean"):
        plotting.variant_points(table, "Recall@100")
    with pytest.raises(ValueError, match="2 values for 3 rows"):
        plotting.metric_vs_setting(summary, "Recall@100", [1, 2])


def test_variant_points_zooms_to_the_data(summary):
    ax = plotting.variant_points(summary, "Recall@100", hlines={"EASE": 0.55}, labels=["A", "B", "C"])
    line = ax.get_lines()[0]
    assert np.allclose(line.get_ydata(), MEANS)
    assert ax.get_ylim()[0] > 0  # not forced to start at zero
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B", "C"]
    assert ax.get_legend() is not None
