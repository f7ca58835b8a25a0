"""External ids <-> dense indices."""

import numpy as np
import pandas as pd
import pytest

from tt_helpers.catalog import Catalog, UnknownIdError


@pytest.fixture
def ratings():
    return pd.DataFrame(
        {
            "user_id": [30, 10, 20, 10, 30],
            "item_id": [500, 100, 300, 500, 100],
            "rating": [5.0, 3.0, 4.0, 1.0, 2.0],
            "timestamp": [1, 2, 3, 4, 5],
        }
    )


def test_from_frames_sorted_unique_ids(ratings):
    cat = Catalog.from_frames(ratings)
    assert cat.user_ids.tolist() == [10, 20, 30]
    assert cat.item_ids.tolist() == [100, 300, 500]
    assert cat.n_users == 3
    assert cat.n_items == 3
    assert cat.user_ids.dtype == np.int64


def test_index_round_trip(ratings):
    cat = Catalog.from_frames(ratings)
    assert cat.user_index(cat.user_ids).tolist() == [0, 1, 2]
    assert cat.item_index(cat.item_ids).tolist() == [0, 1, 2]
    ids = np.array([500, 100, 500, 300])
    assert cat.item_ids[cat.item_index(ids)].tolist() == ids.tolist()
    assert cat.item_index([300]).tolist() == [1]
    assert cat.user_index(pd.Series([30, 10])).tolist() == [2, 0]


def test_round_trip_on_a_larger_random_catalogue():
    rng = np.random.default_rng(1)
    ids = rng.choice(10_000, size=500, replace=False)
    frame = pd.DataFrame({"user_id": ids, "item_id": ids[::-1], "rating": 1.0, "timestamp": 0})
    cat = Catalog.from_frames(frame)
    shuffled = rng.permutation(ids)
    assert np.array_equal(cat.user_ids[cat.user_index(shuffled)], shuffled)
    assert np.array_equal(cat.item_index(cat.item_ids), np.arange(500))


@pytest.mark.parametrize("unknown", [[7], [200], [999], [7, 200, 999]])
def test_unknown_item_ids_raise_naming_them(ratings, unknown):
    # below the smallest, between two known, above the largest id
    cat = Catalog.from_frames(ratings)
    with pytest.raises(UnknownIdError) as info:
        cat.item_index([100] + unknown)
    message = str(info.value)
    assert "item" in message
    assert str(unknown) in message  # e.g. "[7, 200, 999]"
    assert f"({len(unknown)} in all)" in message
    assert not message.startswith("'")  # not KeyError's quoted repr


def test_unknown_user_id_raises_and_is_a_key_error(ratings):
    cat = Catalog.from_frames(ratings)
    with pytest.raises(KeyError, match=r"unknown user id\(s\) \[15\]"):
        cat.user_index([10, 15, 15])


def test_unknown_ids_message_lists_at_most_ten_but_counts_all(ratings):
    cat = Catalog.from_frames(ratings)
    with pytest.raises(UnknownIdError) as info:
        cat.user_index(list(range(1000, 1020)))
    message = str(info.value)
    assert "[1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009]" in message
    assert "1010" not in message
    assert "(20 in all)" in message


def test_from_frames_includes_items_and_users_only_in_side_tables(ratings):
    items = pd.DataFrame({"item_id": [100, 300, 500, 700, 50], "title": list("abcde")})
    users = pd.DataFrame({"user_id": [40]})
    cat = Catalog.from_frames(ratings, users=users, items=items)
    assert cat.item_ids.tolist() == [50, 100, 300, 500, 700]
    assert cat.user_ids.tolist() == [10, 20, 30, 40]
    assert cat.item_index([700, 50]).tolist() == [4, 0]


def test_add_indices_returns_a_copy_with_index_columns(ratings):
    cat = Catalog.from_frames(ratings)
    before = ratings.copy()
    out = cat.add_indices(ratings)
    pd.testing.assert_frame_equal(ratings, before)  # input untouched
    assert out["user_idx"].tolist() == [2, 0, 1, 0, 2]
    assert out["item_idx"].tolist() == [2, 0, 1, 2, 0]
    assert np.array_equal(cat.user_ids[out["user_idx"]], out["user_id"])
    assert np.array_equal(cat.item_ids[out["item_idx"]], out["item_id"])


def test_add_indices_rejects_ratings_outside_the_catalogue(ratings):
    cat = Catalog.from_frames(ratings)
    extra = pd.concat([ratings, pd.DataFrame({"user_id": [10], "item_id": [123], "rating": [4.0], "timestamp": [9]})])
    with pytest.raises(UnknownIdError, match="123"):
        cat.add_indices(extra)
