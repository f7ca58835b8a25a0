"""tt_helpers.plotting: the book's figure style and shared plots (drawn with the Agg backend, never shown)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tt_helpers import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_apply_style_sets_the_book_defaults():
    with matplotlib.rc_context():
        plotting.apply_style()
        assert tuple(matplotlib.rcParams["figure.figsize"]) == (6.4, 4.0)
        assert matplotlib.rcParams["figure.dpi"] == 100
        assert matplotlib.rcParams["axes.grid"] is True
        assert matplotlib.rcParams["axes.spines.top"] is False
        assert matplotlib.rcParams["axes.spines.right"] is False
        colors = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
        assert colors == [c.lower() for c in plotting.COLORS] or colors == list(plotting.COLORS)
        _, ax = plt.subplots()
        assert not ax.spines["top"].get_visible()


def test_head_share_by_hand():
    counts = np.array([50, 20, 10, 10, 5, 5, 0, 0, 0, 0])  # 100 interactions over 10 items
    assert plotting.head_share(counts, 0.1) == pytest.approx(0.5)  # 1 item
    assert plotting.head_share(counts, 0.2) == pytest.approx(0.7)  # 2 items
    assert plotting.head_share(counts[::-1], 0.25) == pytest.approx(0.8)  # ceil(2.5) = 3 items, order irrelevant
    assert plotting.head_share(counts, 1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        plotting.head_share(counts, 0.0)
    with pytest.raises(ValueError):
        plotting.head_share(np.zeros(3), 0.5)


def test_popularity_long_tail_draws_curve_and_head_markers():
    counts = np.random.default_rng(0).zipf(1.5, size=500)
    ax = plotting.popularity_long_tail(counts)
    assert isinstance(ax, plt.Axes)
    assert len(ax.lines) == 3  # the curve and two head markers (10%, 20%)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    share = plotting.head_share(counts, 0.1)
    assert labels[1] == f"top 10% of items: {share:.0%} of interactions"
    assert ax.get_yscale() == "log"
    assert plotting.popularity_long_tail(counts, log=False, head_fractions=(0.5,)).get_yscale() == "linear"


def test_functions_draw_into_a_given_axes():
    fig, axes = plt.subplots(1, 3)
    assert plotting.popularity_long_tail([3, 2, 1], ax=axes[0]) is axes[0]
    assert plotting.metric_vs_k({"a": ([1, 2], [0.1, 0.2])}, "Recall@K", ax=axes[1]) is axes[1]
    table = pd.DataFrame(
        {"catalogue_size": [10, 100], "ranker_ms_per_user": [1.0, 10.0], "dot_product_ms_per_user": [0.1, 0.2]}
    )
    assert plotting.cost_curves(table, ax=axes[2]) is axes[2]
    assert len(fig.axes) == 3


def test_metric_vs_k_one_line_per_curve_plus_reference_lines():
    curves = {
        "random": ([1, 2, 3], [0.0, 0.1, 0.2]),
        "popular": ([1, 2, 3], [0.1, 0.3, 0.4]),
        "EASE": ([1, 2], [0.2, 0.5]),
    }
    ax = plotting.metric_vs_k(curves, "Recall@K", hlines={"ceiling": 0.9}, log_x=True, title="t")
    assert len(ax.lines) == 4
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["random", "popular", "EASE", "ceiling"]
    assert ax.get_ylabel() == "Recall@K"
    assert ax.get_xscale() == "log"
    assert list(ax.lines[2].get_xdata()) == [1, 2]


def test_cost_curves_skips_unmeasured_sizes():
    table = pd.DataFrame(
        {
            "catalogue_size": [1_000, 10_000, 100_000],
            "ranker_ms_per_user": [5.0, 50.0, np.nan],
            "dot_product_ms_per_user": [0.05, 0.2, 1.5],
        }
    )
    ax = plotting.cost_curves(table)
    assert len(ax.lines) == 2
    assert len(ax.lines[0].get_xdata()) == 2  # ranker: NaN row dropped
    assert len(ax.lines[1].get_xdata()) == 3
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(plotting.DEFAULT_COST_COLUMNS.values())
    ax = plotting.cost_curves(table, columns={"dot_product_ms_per_user": "dot"}, title=None)
    assert len(ax.lines) == 1


def test_plotting_never_shows(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("plt.show was called")

    monkeypatch.setattr(plt, "show", fail)
    plotting.popularity_long_tail([5, 3, 1])
    plotting.metric_vs_k({"a": ([1], [0.5])}, "m")
    plotting.cost_curves(
        pd.DataFrame({"catalogue_size": [1], "ranker_ms_per_user": [1.0], "dot_product_ms_per_user": [1.0]})
    )


def test_metric_vs_k_passes_legend_options():
    ax = plotting.metric_vs_k({"a": ([1, 2], [0.1, 0.2])}, "m", legend_kwargs={"loc": "lower right", "title": "models"})
    assert ax.get_legend().get_title().get_text() == "models"


def test_the_committed_static_figures_are_what_the_drawing_code_draws():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "tools" / "draw_figures.py"), "--check"],
                          capture_output=True, text=True, cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr
