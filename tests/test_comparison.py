"""compare(): the book's one rule for "A beats B", a paired bootstrap over users with seeds averaged."""


import numpy as np
import pandas as pd
import pytest

from tt_helpers.comparison import Comparison, compare, comparison_table, paired_bootstrap


def per_user(values, users=None, metric="Recall@100"):
    """A frame shaped like evaluate(..., per_user=True)."""
    values = np.asarray(values, dtype=float)
    users = np.arange(len(values)) if users is None else np.asarray(users)
    frame = pd.DataFrame({metric: values, "NDCG@10": values / 2}, index=pd.Index(users, name="user_idx"))
    return frame


def model_pair(n_users=500, gap=0.05, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.1, 0.9, n_users)  # large user-to-user variance, shared by both models
    b = a - gap + rng.normal(0, noise, n_users)
    return per_user(a), per_user(b)


# (1) a known difference is detected, in both orders


def test_known_difference_is_detected():
    fa, fb = model_pair()
    c = compare(fa, fb, names=("A", "B"))
    assert c.a_beats_b and not c.b_beats_a and not c.within_interval
    assert c.difference == pytest.approx(0.05, abs=0.003)
    assert 0 < c.low < c.difference < c.high
    assert c.n_users == 500 and c.n_seeds_a == 1 and c.n_seeds_b == 1
    assert c.mean_a - c.mean_b == pytest.approx(c.difference)
    assert c.verdict == "A beats B"

    r = compare(fb, fa, names=("B", "A"))
    assert r.b_beats_a and not r.a_beats_b and not r.within_interval
    assert r.difference == pytest.approx(-c.difference)
    assert r.high < 0
    assert r.verdict == "A beats B"


def test_pairing_detects_a_gap_an_unpaired_comparison_would_miss():
    """The user-to-user spread (uniform 0.1..0.9) dwarfs the gap; only the per-user differences matter."""
    fa, fb = model_pair(n_users=200, gap=0.01, noise=0.01)
    assert compare(fa, fb).a_beats_b
    # unpaired: standard error of the difference of two independent means is ~0.023, far above 0.01
    se_unpaired = np.sqrt(fa["Recall@100"].var() / 200 + fb["Recall@100"].var() / 200)
    assert 1.96 * se_unpaired > 0.01


def test_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(3)
    d = rng.normal(0.02, 0.1, 2000)
    mean, low, high = paired_bootstrap(d, np.zeros_like(d), n_resamples=4000)
    se = d.std(ddof=1) / np.sqrt(len(d))
    assert mean == pytest.approx(d.mean())
    assert low == pytest.approx(mean - 1.96 * se, abs=0.2 * se)
    assert high == pytest.approx(mean + 1.96 * se, abs=0.2 * se)
    # a wider confidence gives a wider interval
    _, low99, high99 = paired_bootstrap(d, np.zeros_like(d), n_resamples=4000, confidence=0.99)
    assert low99 < low and high99 > high


# (2) identical models


def test_identical_models_are_within_the_interval():
    fa, _ = model_pair()
    c = compare(fa, fa.copy())
    assert c.difference == 0.0
    assert c.low <= 0 <= c.high
    assert c.within_interval and not c.a_beats_b and not c.b_beats_a
    assert c.verdict == "within the interval"


# (3) coverage: two noisy copies of the same model


def test_noisy_copies_of_one_model_are_within_the_interval_in_most_draws():
    inside = 0
    for s in range(50):
        rng = np.random.default_rng(1000 + s)
        m = rng.uniform(0.1, 0.9, 500)
        a = m + rng.normal(0, 0.05, 500)
        b = m + rng.normal(0, 0.05, 500)
        inside += compare(per_user(a), per_user(b), n_resamples=1000, seed=s).within_interval
    assert inside >= 45, inside  # nominal 95%: about 47.5 of 50


# (4) seeds are averaged per user


def test_seeds_are_averaged_per_user():
    rng = np.random.default_rng(5)
    f1, f2 = per_user(rng.random(300)), per_user(rng.random(300))
    g1, g2, g3 = (per_user(rng.random(300)) for _ in range(3))
    mean_f = (f1 + f2) / 2
    mean_g = (g1 + g2 + g3) / 3
    seeded = compare([f1, f2], [g1, g2, g3], seed=7)
    averaged = compare(mean_f, mean_g, seed=7)
    assert seeded.n_seeds_a == 2 and seeded.n_seeds_b == 3
    assert averaged.n_seeds_a == 1 and averaged.n_seeds_b == 1
    for field in ("difference", "low", "high", "mean_a", "mean_b"):
        assert getattr(seeded, field) == pytest.approx(getattr(averaged, field), abs=1e-12)


def test_users_are_paired_by_index_not_by_position():
    fa, fb = model_pair(n_users=300)
    shuffled = fb.sample(frac=1.0, random_state=0)
    assert not shuffled.index.equals(fb.index)
    assert compare(fa, shuffled).difference == pytest.approx(compare(fa, fb).difference)
    # also across seeds of one model
    assert compare([fa, fa.iloc[::-1]], fb).difference == pytest.approx(compare(fa, fb).difference)


# (5) clear errors


def test_mismatched_users_raise_a_helpful_error():
    fa, fb = model_pair(n_users=100)
    with pytest.raises(ValueError, match="same split and relevant items") as err:
        compare(fa, fb.iloc[:-3], names=("two-tower", "EASE"))
    message = str(err.value)
    assert "3 users of 'two-tower' are not in 'EASE'" in message
    assert "0 users of 'EASE' are not in 'two-tower'" in message

    moved = fb.copy()
    moved.index = moved.index + 1  # one user lost, one new user
    with pytest.raises(ValueError, match="1 users of 'A' are not in 'B' and 1 users of 'B'"):
        compare(fa, moved)


def test_seeds_on_different_users_raise():
    fa, fb = model_pair(n_users=100)
    with pytest.raises(ValueError, match=r"seed 1 and seed 0 were evaluated on different users.*same split"):
        compare([fa, fa.iloc[:90]], fb)


def test_missing_metric_names_the_available_columns():
    fa, fb = model_pair(n_users=50)
    with pytest.raises(KeyError, match=r"Recall@20.*available columns: \['Recall@100', 'NDCG@10'\]"):
        compare(fa, fb, metric="Recall@20")


def test_other_bad_inputs_raise():
    fa, fb = model_pair(n_users=50)
    with pytest.raises(ValueError, match="empty"):
        compare([], fb)
    with pytest.raises(ValueError, match="no users"):
        compare(fa.iloc[:0], fb.iloc[:0])
    nan = fa.copy()
    nan.iloc[[3, 7], 0] = np.nan
    with pytest.raises(ValueError, match="2 users have NaN"):
        compare(nan, fb)
    for bad in (0.0, 1.0, 95, -0.5):
        with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\)"):
            compare(fa, fb, confidence=bad)
    with pytest.raises(ValueError, match="n_resamples"):
        compare(fa, fb, n_resamples=99)
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap(np.array([0.1, np.nan]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="same users"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="at least 2 users"):
        paired_bootstrap(np.zeros(1), np.zeros(1))
    dup = pd.concat([fa, fa.iloc[:2]])
    with pytest.raises(ValueError, match="2 duplicated users"):
        compare(dup, fb)


# (6) determinism, and more users give a narrower interval


def test_deterministic_for_a_fixed_seed():
    fa, fb = model_pair(gap=0.0, noise=0.05)
    assert compare(fa, fb, seed=11) == compare(fa, fb, seed=11)
    other = compare(fa, fb, seed=12)
    assert (other.low, other.high) != (compare(fa, fb, seed=11).low, compare(fa, fb, seed=11).high)
    assert other.difference == compare(fa, fb, seed=11).difference  # the point estimate does not depend on the seed


def test_interval_shrinks_with_more_users():
    small = compare(*model_pair(n_users=400, noise=0.05, seed=1))
    large = compare(*model_pair(n_users=4000, noise=0.05, seed=1))
    width_small, width_large = small.high - small.low, large.high - large.low
    assert width_large < width_small / 2  # about 1 / sqrt(10) as wide
    assert width_large == pytest.approx(width_small / np.sqrt(10), rel=0.25)


def test_large_inputs_are_chunked_and_still_deterministic():
    rng = np.random.default_rng(0)
    a, b = rng.random(20_000), rng.random(20_000)  # 2000 x 20000 indices would be 320 MB in one draw
    assert paired_bootstrap(a, b, n_resamples=500, seed=3) == paired_bootstrap(a, b, n_resamples=500, seed=3)


# (7) the table, (8) names in the verdict


def test_comparison_table_rows_columns_and_rounding():
    fa, fb = model_pair()
    fc, _ = model_pair(seed=9)
    comps = [compare(fa, fb, names=("two-tower", "EASE")), compare(fb, fa, names=("EASE", "two-tower")),
             compare(fa, fc, names=("two-tower", "popular"), metric="NDCG@10")]
    table = comparison_table(comps, digits=3)
    assert table.shape == (3, 8)
    assert list(table.index) == ["two-tower vs EASE", "EASE vs two-tower", "two-tower vs popular"]
    assert list(table.columns) == ["a", "b", "metric", "mean a", "mean b", "difference", "95% interval", "verdict"]
    assert list(table["metric"]) == ["Recall@100", "Recall@100", "NDCG@10"]
    for col in ("mean a", "mean b", "difference"):
        assert np.allclose(table[col], table[col].round(3), atol=0, rtol=0)
    c = comps[0]
    assert table.loc["two-tower vs EASE", "difference"] == round(c.difference, 3)
    assert table.loc["two-tower vs EASE", "95% interval"] == f"[{c.low:+.3f}, {c.high:+.3f}]"
    assert table.loc["two-tower vs EASE", "verdict"] == "two-tower beats EASE"
    assert table.loc["EASE vs two-tower", "verdict"] == "two-tower beats EASE"
    assert table.loc["EASE vs two-tower", "95% interval"].startswith("[-")


def test_as_row_formats_the_interval_with_signs():
    c = Comparison("A", "B", "Recall@100", 0.31234, 0.29, 0.02234, 0.0012, 0.0234, 0.95, 100, 3, 3)
    row = c.as_row()
    assert row["95% interval"] == "[+0.0012, +0.0234]"
    assert row["difference"] == 0.0223 and row["mean a"] == 0.3123
    assert Comparison("A", "B", "m", 0, 0, 0, -0.5, 0.25, 0.9, 10, 1, 1).as_row(2)["90% interval"] == "[-0.50, +0.25]"
    assert comparison_table([]).empty


def test_verdict_uses_the_given_names():
    fa, fb = model_pair()
    assert compare(fa, fb, names=("softmax", "BCE")).verdict == "softmax beats BCE"
    assert compare(fb, fa, names=("BCE", "softmax")).verdict == "softmax beats BCE"
    c = compare(fa, fa, names=("softmax", "BCE"))
    assert (c.a, c.b) == ("softmax", "BCE") and c.verdict == "within the interval"
