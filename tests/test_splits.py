"""Train/test splits: per-user temporal, global temporal, random; validation carved from train."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from tt_helpers import splits
from tt_helpers.catalog import Catalog

KEY = ["user_id", "item_id", "timestamp"]


def make_ratings(seed=0, n_users=40, n_items=60, max_per_user=30, t_range=15):
    """Random log: every user rates distinct items; timestamps come from a small range, so ties abound."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(1, max_per_user + 1))
        items = rng.choice(n_items, size=n, replace=False) + 1000
        for i in items:
            rows.append((u + 1, int(i), float(rng.integers(1, 6)), int(rng.integers(0, t_range))))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # arrival order is not time order


def rows(frame):
    """The (user, item, timestamp) keys of a frame, as a sorted list (a multiset)."""
    return sorted(map(tuple, frame[KEY].to_numpy().tolist()))


@pytest.fixture
def ratings():
    return make_ratings()


# --- per-user temporal -------------------------------------------------------------------------


def test_temporal_user_split_partitions_the_ratings(ratings):
    split = splits.temporal_user_split(ratings)
    assert rows(pd.concat([split.train.frame, split.test.frame])) == rows(ratings)
    assert set(map(tuple, split.train.frame[KEY].to_numpy().tolist())).isdisjoint(
        map(tuple, split.test.frame[KEY].to_numpy().tolist())
    )
    for part in (split.train.frame, split.test.frame):
        assert {"user_idx", "item_idx"} <= set(part.columns)
        assert np.array_equal(split.catalog.item_ids[part["item_idx"]], part["item_id"])
        assert np.array_equal(split.catalog.user_ids[part["user_idx"]], part["user_id"])


def test_temporal_user_split_earlier_before_later_and_test_size(ratings):
    split = splits.temporal_user_split(ratings)
    train, test = split.train.frame, split.test.frame
    n_users_with_test = 0
    n_boundary_ties = 0
    for user, group in ratings.groupby("user_id"):
        kept = train[train["user_id"] == user]
        held_out = test[test["user_id"] == user]
        assert len(held_out) == math.floor(0.2 * len(group)), user
        assert len(kept) + len(held_out) == len(group)
        if len(held_out):
            n_users_with_test += 1
            assert kept["timestamp"].max() <= held_out["timestamp"].min()
            n_boundary_ties += int(kept["timestamp"].max() == held_out["timestamp"].min())
    assert n_users_with_test > 10  # the fixture exercises the interesting cases
    assert n_boundary_ties > 5  # ... including ties at the train/test boundary
    assert (ratings.groupby("user_id").size() < 5).any()  # ... and users with no test part


# --- ties in time ------------------------------------------------------------------------------


def same_second(n_items=10, user_id=1, timestamp=7):
    """One user rating ``n_items`` items (ids 0..n-1, given in shuffled order) all in the same second."""
    items = np.random.default_rng(user_id).permutation(n_items)
    return pd.DataFrame({"user_id": user_id, "item_id": items, "rating": 5.0, "timestamp": timestamp})


def old_rule_test_items(ratings, test_fraction=0.2):
    """What the former tie-break by item id held out: each user's largest item ids at the last times."""
    frame = ratings.sort_values(["user_id", "timestamp", "item_id"])
    position = frame.groupby("user_id").cumcount()
    n = frame.groupby("user_id")["item_id"].transform("size")
    return sorted(frame.loc[position >= n - np.floor(test_fraction * n), "item_id"])


def test_ties_in_time_are_not_broken_by_item_id():
    ratings = same_second()
    assert old_rule_test_items(ratings) == [8, 9]  # the old rule: always the two largest ids
    held_out = {
        seed: tuple(sorted(splits.temporal_user_split(ratings, tie_break_seed=seed).test.frame["item_id"]))
        for seed in range(40)
    }
    assert all(len(items) == 2 for items in held_out.values())
    assert any(items != (8, 9) for items in held_out.values())
    assert len(set(held_out.values())) > 10  # many different pairs, not a fixed rule


def test_tie_break_is_uniform_over_items():
    # 300 seeds x 2 held-out items: each of the 10 items is expected 60 times (binomial sd ~ 7)
    ratings = same_second()
    counts = np.zeros(10, dtype=np.int64)
    for seed in range(300):
        counts[splits.temporal_user_split(ratings, tie_break_seed=seed).test.frame["item_id"].to_numpy()] += 1
    assert counts.sum() == 600
    assert counts.min() >= 35 and counts.max() <= 85, counts
    # the held-out items' ids are not tied to their rank: the largest ids are not favoured
    assert abs(counts[:5].sum() - counts[5:].sum()) < 100


def test_tie_break_is_seeded_and_invariant_to_row_order():
    ratings = pd.concat([same_second(user_id=u) for u in range(1, 6)], ignore_index=True)
    a = splits.temporal_user_split(ratings, tie_break_seed=3)
    b = splits.temporal_user_split(ratings, tie_break_seed=3)
    c = splits.temporal_user_split(ratings, tie_break_seed=4)
    assert rows(a.test.frame) == rows(b.test.frame)
    assert rows(a.test.frame) != rows(c.test.frame)
    for shuffle in range(5):
        shuffled = splits.temporal_user_split(ratings.sample(frac=1.0, random_state=shuffle), tie_break_seed=3)
        pd.testing.assert_frame_equal(shuffled.test.frame, a.test.frame)
        pd.testing.assert_frame_equal(shuffled.train.frame, a.train.frame)
    # the default seed is 0
    default = splits.temporal_user_split(ratings)
    assert rows(default.test.frame) == rows(splits.temporal_user_split(ratings, tie_break_seed=0).test.frame)


def test_ties_only_reorder_rows_of_the_same_second():
    # 10 ratings at two distinct times: the 2 held out are 2 of the 4 rated at time 2, whatever the seed
    ratings = pd.DataFrame(
        {
            "user_id": [1] * 10,
            "item_id": [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
            "rating": [5.0] * 10,
            "timestamp": [2, 2, 2, 1, 1, 1, 1, 1, 1, 2],
        }
    )
    seen = set()
    for seed in range(30):
        test = splits.temporal_user_split(ratings, tie_break_seed=seed).test.frame
        assert set(test["item_id"]) <= {0, 7, 8, 9} and len(test) == 2
        assert (test["timestamp"] == 2).all()
        seen |= set(test["item_id"])
    assert seen == {0, 7, 8, 9}  # item 0, the smallest id, is held out too (never under the old rule)


def test_global_temporal_split_breaks_ties_at_random():
    # 5 users x 10 items, all in the same second: the last 20% are drawn among all 50 ratings
    ratings = pd.concat([same_second(user_id=u) for u in range(1, 6)], ignore_index=True)
    held_out = [rows(splits.global_temporal_split(ratings, tie_break_seed=seed).test.frame) for seed in range(10)]
    assert all(len(h) == 10 for h in held_out)
    assert len({tuple(h) for h in held_out}) == 10
    users = {u for h in held_out for (u, _, _) in h}
    items = {i for h in held_out for (_, i, _) in h}
    assert users == {1, 2, 3, 4, 5} and len(items) == 10  # neither the largest user ids nor item ids only
    shuffled = splits.global_temporal_split(ratings.sample(frac=1.0, random_state=2), tie_break_seed=0)
    assert rows(shuffled.test.frame) == held_out[0]


@pytest.mark.parametrize("make", [splits.temporal_user_split, splits.global_temporal_split], ids=["user", "global"])
def test_validation_uses_the_same_tie_break_seed(make):
    ratings = pd.concat([same_second(n_items=20, user_id=u) for u in range(1, 6)], ignore_index=True)
    split = make(ratings, tie_break_seed=7)
    val = split.validation()
    same_seed = make(split.train.frame, split.catalog, tie_break_seed=7)
    other_seed = make(split.train.frame, split.catalog, tie_break_seed=8)
    assert rows(val.test.frame) == rows(same_seed.test.frame)
    assert rows(val.test.frame) != rows(other_seed.test.frame)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None])
def test_bad_tie_break_seed_raises(ratings, seed):
    with pytest.raises(ValueError, match="tie_break_seed must be a non-negative integer"):
        splits.temporal_user_split(ratings, tie_break_seed=seed)


def test_temporal_user_split_is_deterministic_under_row_order(ratings):
    a = splits.temporal_user_split(ratings)
    b = splits.temporal_user_split(ratings.sample(frac=1.0, random_state=123))
    assert rows(a.test.frame) == rows(b.test.frame)
    pd.testing.assert_frame_equal(a.train.frame, b.train.frame)
    pd.testing.assert_frame_equal(a.test.frame, b.test.frame)


def test_test_fraction_parameter(ratings):
    split = splits.temporal_user_split(ratings, test_fraction=0.5)
    sizes = split.test.frame.groupby("user_id").size().reindex(ratings["user_id"].unique(), fill_value=0)
    expected = ratings.groupby("user_id").size().map(lambda n: n // 2)
    assert sizes.sort_index().tolist() == expected.sort_index().tolist()


def test_positive_threshold_parameter(ratings):
    default = splits.temporal_user_split(ratings)
    low = splits.temporal_user_split(ratings, positive_threshold=3.0)
    assert default.test.positive_threshold == 4.0
    assert (default.test.positives()["rating"] >= 4.0).all()
    assert len(default.test.positives()) == int((default.test.frame["rating"] >= 4).sum())
    assert len(low.test.positives()) == int((low.test.frame["rating"] >= 3).sum())
    assert len(low.test.positives()) > len(default.test.positives())
    assert len(low.train.positives()) == int((low.train.frame["rating"] >= 3).sum())
    # an explicit threshold overrides the split's
    assert len(default.test.positives(threshold=5.0)) == int((default.test.frame["rating"] == 5).sum())
    # the threshold does not change which ratings go to test, and the protocol says what it is
    pd.testing.assert_frame_equal(default.test.frame, low.test.frame)
    assert "rating >= 3" in low.protocol and "rating >= 4" in default.protocol
    # it reaches the binary matrix too
    assert low.train.matrix().sum() > default.train.matrix().sum()


# --- global temporal ---------------------------------------------------------------------------


def test_global_temporal_split(ratings):
    split = splits.global_temporal_split(ratings)
    train, test = split.train.frame, split.test.frame
    assert len(test) == math.floor(0.2 * len(ratings))
    assert len(train) + len(test) == len(ratings)
    assert rows(pd.concat([train, test])) == rows(ratings)
    assert train["timestamp"].max() <= test["timestamp"].min()
    assert "global temporal" in split.protocol
    # deterministic whatever the arrival order, although timestamps tie heavily
    again = splits.global_temporal_split(ratings.sample(frac=1.0, random_state=5))
    assert rows(again.test.frame) == rows(test)


# --- random ------------------------------------------------------------------------------------


def test_random_split_share_and_seed(ratings):
    a = splits.random_split(ratings, seed=1)
    b = splits.random_split(ratings, seed=1)
    c = splits.random_split(ratings, seed=2)
    assert len(a.test.frame) == math.floor(0.2 * len(ratings))
    assert len(c.test.frame) == math.floor(0.2 * len(ratings))
    assert rows(pd.concat([a.train.frame, a.test.frame])) == rows(ratings)
    assert rows(a.test.frame) == rows(b.test.frame)
    assert rows(a.test.frame) != rows(c.test.frame)
    # same seed, shuffled input: still the same split
    d = splits.random_split(ratings.sample(frac=1.0, random_state=9), seed=1)
    assert rows(d.test.frame) == rows(a.test.frame)
    # a random split is not a temporal one: some test rating predates some training rating of its user
    merged = a.test.frame.merge(a.train.frame.groupby("user_id")["timestamp"].max().rename("t_train"), on="user_id")
    assert (merged["timestamp"] < merged["t_train"]).any()


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [splits.temporal_user_split, splits.global_temporal_split, splits.random_split],
    ids=["user", "global", "random"],
)
def test_validation_is_carved_from_train_only(ratings, make):
    split = make(ratings, positive_threshold=3.0)
    val = split.validation()
    assert rows(pd.concat([val.train.frame, val.test.frame])) == rows(split.train.frame)
    assert set(map(tuple, val.test.frame[KEY].to_numpy().tolist())).isdisjoint(
        map(tuple, split.test.frame[KEY].to_numpy().tolist())
    )
    assert val.catalog is split.catalog
    assert val.train.positive_threshold == 3.0 and val.test.positive_threshold == 3.0
    assert "validation" in val.protocol
    assert val.protocol.startswith(split.protocol)
    # the indices are those of the same catalogue
    assert np.array_equal(split.catalog.item_ids[val.test.frame["item_idx"]], val.test.frame["item_id"])


def test_validation_uses_the_same_protocol_per_user_temporal(ratings):
    split = splits.temporal_user_split(ratings)
    val = split.validation()
    train = split.train.frame
    for user, group in train.groupby("user_id"):
        vte = val.test.frame[val.test.frame["user_id"] == user]
        vtr = val.train.frame[val.train.frame["user_id"] == user]
        assert len(vte) == math.floor(0.2 * len(group))
        if len(vte):
            assert vtr["timestamp"].max() <= vte["timestamp"].min()


def test_validation_uses_the_same_protocol_global_temporal(ratings):
    split = splits.global_temporal_split(ratings)
    val = split.validation()
    assert len(val.test.frame) == math.floor(0.2 * len(split.train.frame))
    assert val.train.frame["timestamp"].max() <= val.test.frame["timestamp"].min()
    assert val.test.frame["timestamp"].max() <= split.test.frame["timestamp"].min()


def test_validation_uses_the_same_protocol_random(ratings):
    split = splits.random_split(ratings, test_fraction=0.25)
    val = split.validation()
    assert len(val.test.frame) == math.floor(0.25 * len(split.train.frame))
    assert rows(split.validation().test.frame) == rows(val.test.frame)  # deterministic


# --- input checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["user_id", "item_id", "timestamp"])
@pytest.mark.parametrize(
    "make",
    [splits.temporal_user_split, splits.global_temporal_split, splits.random_split],
    ids=["user", "global", "random"],
)
def test_missing_column_raises_value_error_naming_it(ratings, make, column):
    with pytest.raises(ValueError, match=f"lacks column.*'{column}'"):
        make(ratings.drop(columns=[column]))


# --- Interactions ------------------------------------------------------------------------------


def test_matrix_user_items_item_counts_agree(ratings):
    split = splits.temporal_user_split(ratings)
    train = split.train
    for positives_only in (True, False):
        x = train.matrix(positives_only=positives_only)
        assert x.shape == (split.catalog.n_users, split.catalog.n_items)
        assert x.dtype == torch.float32
        assert set(x.unique().tolist()) <= {0.0, 1.0}
        lists = train.user_items(positives_only=positives_only)
        assert len(lists) == train.n_users
        for u, items in enumerate(lists):
            assert np.array_equal(np.flatnonzero(x[u].numpy()), items)
            assert np.all(np.diff(items) > 0)  # sorted, unique
        counts = train.item_counts(positives_only=positives_only)
        assert counts.shape == (train.n_items,)
        assert np.array_equal(x.sum(0).numpy().astype(np.int64), counts)
        frame = train.positives() if positives_only else train.frame
        assert counts.sum() == len(frame)
    # positives are a subset of all interactions
    assert bool((train.matrix(True) <= train.matrix(False)).all())
    assert train.matrix(True).sum() < train.matrix(False).sum()


def test_interactions_against_a_hand_built_frame():
    ratings = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 2, 2],
            "item_id": [10, 20, 20, 30, 10],
            "rating": [5.0, 2.0, 4.0, 4.0, 3.0],
            "timestamp": [1, 2, 1, 2, 3],
        }
    )
    items = pd.DataFrame({"item_id": [10, 20, 30, 40]})
    cat = Catalog.from_frames(ratings, items=items)
    split = splits.temporal_user_split(ratings, cat)  # user 2 has floor(0.6) = 0 test ratings
    assert len(split.test.frame) == 0
    train = split.train
    assert train.n_items == 4 and train.n_users == 2
    assert train.matrix().tolist() == [[1, 0, 0, 0], [0, 1, 1, 0]]
    assert train.matrix(positives_only=False).tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]
    assert [a.tolist() for a in train.user_items()] == [[0, 1], [0, 1, 2]]
    assert [a.tolist() for a in train.user_items(positives_only=True)] == [[0], [1, 2]]
    assert train.item_counts().tolist() == [1, 1, 1, 0]
    assert train.item_counts(positives_only=False).tolist() == [2, 2, 1, 0]
    d = split.describe()
    assert d["train ratings"] == 5
    assert d["train positives"] == 3
    assert d["test ratings"] == 0
    assert d["items never seen in train"] == 1  # item 40, only in the items table


def test_describe(ratings):
    split = splits.temporal_user_split(ratings)
    d = split.describe()
    assert d["protocol"] == split.protocol
    assert d["train ratings"] == len(split.train.frame)
    assert d["test ratings"] == len(split.test.frame)
    assert d["test positives"] == int((split.test.frame["rating"] >= 4).sum())
    assert d["test users with a positive"] == split.test.frame.loc[split.test.frame["rating"] >= 4, "user_id"].nunique()
    assert d["positive"] == "rating >= 4"


# --- protocol names ----------------------------------------------------------------------------


def test_protocol_names(ratings):
    assert splits.temporal_user_split(ratings).protocol == (
        "per-user leave-last-20%-out (time order, ties random), positive = rating >= 4"
    )
    assert splits.global_temporal_split(ratings).protocol == (
        "global temporal, last 20% of all ratings after one cut-off time, positive = rating >= 4"
    )
    assert splits.random_split(ratings).protocol == "random 80/20 split of interactions, positive = rating >= 4"
    # the parameters reach the names
    assert splits.temporal_user_split(ratings, positive_threshold=3.5, test_fraction=0.1).protocol == (
        "per-user leave-last-10%-out (time order, ties random), positive = rating >= 3.5"
    )
    assert splits.random_split(ratings, test_fraction=0.25).protocol.startswith("random 75/25 split")


# --- implicit feedback: no rating column -------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [splits.temporal_user_split, splits.global_temporal_split, splits.random_split],
    ids=["user", "global", "random"],
)
def test_without_ratings_every_interaction_is_a_positive(ratings, make):
    implicit = ratings.drop(columns=["rating"])
    split = make(implicit)
    explicit = make(ratings)
    # the rating column does not change which interactions go to test
    assert rows(split.test.frame) == rows(explicit.test.frame)
    assert rows(split.train.frame) == rows(explicit.train.frame)
    for part in (split.train, split.test):
        assert "rating" not in part.frame.columns
        pd.testing.assert_frame_equal(part.positives(), part.frame)
        assert part.positive_rule == "every interaction"
        assert part.matrix().sum() == part.matrix(positives_only=False).sum()
    assert split.protocol.endswith(", positive = every interaction")
    assert "rating >=" not in split.protocol
    d = split.describe()
    assert d["positive"] == "every interaction"
    assert d["train positives"] == d["train ratings"] == len(split.train.frame)
    assert d["test positives"] == d["test ratings"] > 0
    assert split.validation().protocol.startswith(split.protocol)
    # fewer positives with ratings (rating >= 4), all of them without
    assert len(explicit.test.positives()) < len(split.test.positives())


def test_a_threshold_without_ratings_is_an_error(ratings):
    split = splits.temporal_user_split(ratings.drop(columns=["rating"]))
    with pytest.raises(ValueError, match="needs a rating column.*every interaction is a positive"):
        split.test.positives(threshold=4.0)


# --- string ids ---------------------------------------------------------------------------------


def test_splits_work_with_string_ids(ratings):
    named = ratings.assign(
        user_id="user-" + ratings["user_id"].astype(str), item_id="movie-" + ratings["item_id"].astype(str)
    )
    a = splits.temporal_user_split(ratings)
    b = splits.temporal_user_split(named)
    assert b.catalog.user_ids.dtype == object and b.catalog.user_ids[:3].tolist() == ["user-1", "user-10", "user-11"]
    for part in (b.train.frame, b.test.frame):
        assert np.array_equal(b.catalog.item_ids[part["item_idx"]], part["item_id"].to_numpy())
        assert np.array_equal(b.catalog.user_ids[part["user_idx"]], part["user_id"].to_numpy())
    # the same number of test ratings per user, each after the user's training ratings
    sizes = b.test.frame.groupby("user_id").size()
    sizes.index = sizes.index.str.removeprefix("user-").astype(int)
    assert sizes.sort_index().equals(a.test.frame.groupby("user_id").size().sort_index())
    last_train = b.train.frame.groupby("user_id")["timestamp"].max()
    first_test = b.test.frame.groupby("user_id")["timestamp"].min()
    assert (last_train[first_test.index] <= first_test).all()


# --- warm and cold test users ------------------------------------------------------------------


def test_warm_and_cold_users_by_hand():
    # global cut-off after 8 of 10 ratings (time 8): test = the two ratings at times 9 and 10
    rows_ = [
        (1, 10, 5.0, 1), (1, 11, 5.0, 2), (1, 12, 5.0, 3), (1, 13, 5.0, 4),  # 4 training ratings
        (2, 10, 5.0, 5), (2, 11, 1.0, 6), (2, 12, 2.0, 7), (2, 13, 3.0, 8),  # 4 training ratings (1 positive)
        (1, 14, 5.0, 9),  # user 1: a test positive
        (3, 14, 5.0, 10),  # user 3: a test positive, no training history at all
    ]  # fmt: skip
    ratings = pd.DataFrame(rows_, columns=["user_id", "item_id", "rating", "timestamp"])
    users = pd.DataFrame({"user_id": [1, 2, 3, 4]})  # user 4: no interaction at all
    split = splits.global_temporal_split(ratings, Catalog.from_frames(ratings, users=users))
    assert sorted(zip(split.test.frame["user_id"], split.test.frame["item_id"])) == [(1, 14), (3, 14)]
    groups = splits.warm_and_cold_users(split, min_train_interactions=4)
    assert set(groups) == {"warm", "cold"}
    assert groups["warm"].tolist() == [0] and groups["cold"].tolist() == [2]  # user indices of users 1 and 3
    assert groups["warm"].dtype == np.int64
    # the default (5) makes user 1 (4 training ratings) cold too; 0 makes everybody warm
    assert splits.warm_and_cold_users(split)["cold"].tolist() == [0, 2]
    assert splits.warm_and_cold_users(split, min_train_interactions=0)["warm"].tolist() == [0, 2]
    # user 2 is never a test user (no test positive), however much history
    with pytest.raises(ValueError, match="min_train_interactions must be a non-negative integer"):
        splits.warm_and_cold_users(split, min_train_interactions=-1)


def test_warm_and_cold_users_partition_the_test_users(ratings):
    split = splits.global_temporal_split(ratings)
    groups = splits.warm_and_cold_users(split, min_train_interactions=3)
    test_users = np.unique(split.test.positives()["user_idx"])
    assert np.array_equal(np.sort(np.concatenate([groups["warm"], groups["cold"]])), test_users)
    history = split.train.frame.groupby("user_idx").size().reindex(test_users, fill_value=0)
    assert history[groups["cold"]].lt(3).all() and history[groups["warm"]].ge(3).all()
    assert len(groups["cold"]) > 0 and len(groups["warm"]) > 0  # the fixture exercises both


# --- time profile ------------------------------------------------------------------------------

H, D = 3600, 86400


def profile_ratings():
    """Three users with 5 ratings each (the per-user split holds out the last one), times in seconds."""
    times = {
        1: [0, 10, 20, 30, 40],  # spans 40 s; test 10 s after the last training rating
        2: [0, 2 * H, 4 * H, 6 * H, 2 * D],  # spans 2 days; test 42 hours after
        3: [0, 100, 200, 300, 3 * H],  # spans 3 hours; test 2 h 55 min after
    }
    items = {1: [1, 2, 3, 4, 5], 2: [1, 2, 3, 4, 6], 3: [1, 2, 3, 7, 5]}  # popularity: 1-3: 3, 4-5: 2, 6-7: 1
    rows_ = [(u, i, 5.0, t) for u in times for i, t in zip(items[u], times[u])]
    return pd.DataFrame(rows_, columns=["user_id", "item_id", "rating", "timestamp"])


def test_time_profile_by_hand():
    split = splits.temporal_user_split(profile_ratings())
    profile = splits.time_profile(split)
    assert list(profile.columns) == [split.protocol] and profile.index.name == "measure"
    p = profile.iloc[:, 0]
    assert p["users: history spans < 1 hour (%)"] == pytest.approx(100 / 3)  # user 1
    assert p["users: history spans < 1 day (%)"] == pytest.approx(200 / 3)  # users 1 and 3
    assert p["users: first test < 1 hour after last train (%)"] == pytest.approx(100 / 3)  # user 1
    assert p["test before the user's last train (%)"] == 0
    # 12 training ratings; later than the test rating at 40 s: 6 (100, 200, 300 s, 2, 4, 6 h);
    # at 3 h: 2 (4 h, 6 h); at 2 days: none -> (6/12 + 2/12 + 0) / 3
    assert p["train later than a test interaction (%)"] == pytest.approx(100 * 2 / 9)
    assert p["median popularity, test items"] == 2  # items 5, 6, 5
    assert p["median popularity, train items"] == 3  # nine 3s, two 2s, one 1
    assert list(splits.time_profile(split, name="per-user").columns) == ["per-user"]


def test_time_profile_global_split_and_datetimes():
    ratings = profile_ratings()
    split = splits.global_temporal_split(ratings)  # test: user 2's last three ratings (4 h, 6 h, 2 days)
    p = splits.time_profile(split, "global")["global"]
    assert p["train later than a test interaction (%)"] == 0  # nothing after the cut-off is in training
    assert p["test before the user's last train (%)"] == 0
    assert p["users: first test < 1 hour after last train (%)"] == 0  # user 2: 2 hours after
    as_dates = ratings.assign(timestamp=pd.to_datetime(ratings["timestamp"], unit="s"))
    same = splits.time_profile(splits.global_temporal_split(as_dates), "global")
    pd.testing.assert_frame_equal(same, splits.time_profile(split, "global"))


def test_time_profile_counts_a_users_own_future_in_training():
    ratings = profile_ratings()
    catalog = Catalog.from_frames(ratings)
    frame = catalog.add_indices(ratings)
    is_test = (frame["user_id"] == 1) & (frame["timestamp"] == 0)  # user 1's first rating held out
    split = splits._make(frame, is_test.to_numpy(), catalog, 4.0, "hand-made", None)
    p = splits.time_profile(split, "hand")["hand"]
    assert p["test before the user's last train (%)"] == 100
    assert p["users: first test < 1 hour after last train (%)"] == 0  # the test rating comes before
    assert p["train later than a test interaction (%)"] == pytest.approx(100 * 12 / 14)  # all but two (0 s)


def test_time_profile_matches_a_brute_force_count(ratings):
    split = splits.random_split(ratings, seed=3)
    p = splits.time_profile(split, "random")["random"]
    train, test = split.train.frame, split.test.frame
    later = [(train["timestamp"] > t).mean() for t in test["timestamp"]]
    assert p["train later than a test interaction (%)"] == pytest.approx(100 * np.mean(later))
    last = train.groupby("user_idx")["timestamp"].max()
    before = [t < last.get(u, -np.inf) for u, t in zip(test["user_idx"], test["timestamp"])]
    assert p["test before the user's last train (%)"] == pytest.approx(100 * np.mean(before))
    assert 0 < p["test before the user's last train (%)"] < 100  # the fixture exercises the case
    everyone = pd.concat([train, test])
    counts = everyone.groupby("item_idx").size()
    assert p["median popularity, test items"] == np.median(counts[test["item_idx"]].to_numpy())
