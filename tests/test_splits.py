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


def test_temporal_user_split_past_before_future_and_test_size(ratings):
    split = splits.temporal_user_split(ratings)
    train, test = split.train.frame, split.test.frame
    n_users_with_test = 0
    for user, group in ratings.groupby("user_id"):
        tr = train[train["user_id"] == user]
        te = test[test["user_id"] == user]
        assert len(te) == math.floor(0.2 * len(group)), user
        assert len(tr) + len(te) == len(group)
        if len(te):
            n_users_with_test += 1
            assert tr["timestamp"].max() <= te["timestamp"].min()
            # at the boundary time, every test item has a larger id than every train item (tie rule)
            t0 = te["timestamp"].min()
            tied_train = tr.loc[tr["timestamp"] == t0, "item_id"]
            if len(tied_train):
                assert tied_train.max() < te.loc[te["timestamp"] == t0, "item_id"].min()
    assert n_users_with_test > 10  # the fixture exercises the interesting cases
    assert (ratings.groupby("user_id").size() < 5).any()  # ... including users with no test part


def test_temporal_user_split_breaks_timestamp_ties_by_item_id():
    # one user, 5 ratings all at the same second: the item with the largest id is the test one
    ratings = pd.DataFrame(
        {"user_id": [1] * 5, "item_id": [30, 10, 50, 20, 40], "rating": [5.0] * 5, "timestamp": [7] * 5}
    )
    split = splits.temporal_user_split(ratings)
    assert split.test.frame["item_id"].tolist() == [50]
    assert sorted(split.train.frame["item_id"]) == [10, 20, 30, 40]
    # 10 ratings, two distinct times: last 2 of time 2, by item id
    ratings = pd.DataFrame(
        {
            "user_id": [1] * 10,
            "item_id": [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
            "rating": [5.0] * 10,
            "timestamp": [2, 2, 2, 1, 1, 1, 1, 1, 1, 2],
        }
    )
    split = splits.temporal_user_split(ratings)
    assert sorted(split.test.frame["item_id"]) == [8, 9]


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
    "make", [splits.temporal_user_split, splits.global_temporal_split, splits.random_split], ids=["user", "global", "random"]
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


@pytest.mark.parametrize("column", ["user_id", "item_id", "rating", "timestamp"])
@pytest.mark.parametrize(
    "make", [splits.temporal_user_split, splits.global_temporal_split, splits.random_split], ids=["user", "global", "random"]
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
