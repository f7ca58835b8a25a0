"""tt_helpers.plotting_towers: bars and lines with seed error bars from experiments.summarize tables."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tt_helpers import experiments, plotting_towers  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def summary():
    runs = pd.DataFrame(
        {"variant": ["a", "a", "b", "b", "c", "c"], "seed": [0, 1] * 3, "Recall@100": [0.4, 0.5, 0.6, 0.6, 0.2, 0.4]}
    )
    return experiments.summarize(runs, ["Recall@100"])


def test_variant_bars_heights_errors_and_reference_lines(summary):
    ax = plotting_towers.variant_bars(summary, "Recall@100", hlines={"EASE": 0.55, "popular": 0.3}, labels=["A", "B", "C"])
    heights = [p.get_height() for p in ax.patches]
    assert np.allclose(heights, [0.45, 0.6, 0.3])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B", "C"]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert sorted(line.get_ydata()[0] for line in dashed) == [0.3, 0.55]
    assert ax.get_ylim()[0] == 0
    labels = ax.get_legend_handles_labels()[1]
    assert "EASE" in labels and "popular" in labels


def test_metric_vs_setting_draws_means_at_x(summary):
    ax = plotting_towers.metric_vs_setting(summary, "Recall@100", [16, 32, 64], hlines={"EASE": 0.55}, log2_x=True)
    line = ax.get_lines()[0]
    assert np.allclose(line.get_xdata(), [16, 32, 64])
    assert np.allclose(line.get_ydata(), [0.45, 0.6, 0.3])
    assert ax.get_xscale() == "log"


def test_errors_name_the_problem(summary):
    with pytest.raises(KeyError, match="Recall@10 mean"):
        plotting_towers.variant_bars(summary, "Recall@10")
    with pytest.raises(ValueError, match="2 values for 3 rows"):
        plotting_towers.metric_vs_setting(summary, "Recall@100", [1, 2])


def test_variant_points_zooms_to_the_data(summary):
    ax = plotting_towers.variant_points(summary, "Recall@100", hlines={"EASE": 0.55}, labels=["A", "B", "C"])
    line = ax.get_lines()[0]
    assert np.allclose(line.get_ydata(), [0.45, 0.6, 0.3])
    assert ax.get_ylim()[0] > 0  # not forced to start at zero
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B", "C"]
    assert ax.get_legend() is not None
