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


# --- kinds of id: integers, strings, and what is refused ----------------------------------------


def test_string_ids_round_trip_and_are_sorted():
    ratings = pd.DataFrame(
        {"user_id": ["u10", "u2", "u10", "alice"], "item_id": ["tt0114709", "tt0113497", "tt0113228", "tt0114709"]}
    )
    cat = Catalog.from_frames(ratings)
    assert cat.user_ids.dtype == object and all(type(x) is str for x in cat.user_ids)
    assert cat.user_ids.tolist() == ["alice", "u10", "u2"]  # string order, not numeric
    assert cat.item_ids.tolist() == ["tt0113228", "tt0113497", "tt0114709"]
    out = cat.add_indices(ratings)
    assert out["user_idx"].tolist() == [1, 2, 1, 0]
    assert out["item_idx"].tolist() == [2, 1, 0, 2]
    assert cat.user_ids[out["user_idx"]].tolist() == ratings["user_id"].tolist()
    assert cat.item_ids[out["item_idx"]].tolist() == ratings["item_id"].tolist()
    # numpy str arrays and np.str_ scalars are the same ids
    assert cat.item_index(np.array(["tt0114709", "tt0113228"])).tolist() == [2, 0]
    assert cat.user_index([np.str_("u2")]).tolist() == [2]


def test_string_ids_on_a_larger_random_catalogue():
    rng = np.random.default_rng(3)
    ids = np.array([f"id{k}" for k in rng.choice(100_000, size=2_000, replace=False)])
    cat = Catalog.from_frames(pd.DataFrame({"user_id": ids, "item_id": ids}))
    assert cat.user_ids.tolist() == sorted(ids.tolist())
    shuffled = rng.permutation(ids)
    assert cat.user_ids[cat.user_index(shuffled)].tolist() == shuffled.tolist()


def test_int_ids_are_sorted_numerically_whatever_their_numpy_type():
    ratings = pd.DataFrame(
        {"user_id": np.array([10, 2, 33], dtype=np.int32), "item_id": np.array([7, 100, 9], dtype=np.uint16)}
    )
    users = pd.DataFrame({"user_id": np.array([1, 2], dtype=np.int64)})
    cat = Catalog.from_frames(ratings, users=users)
    assert cat.user_ids.dtype == np.int64 and cat.item_ids.dtype == np.int64
    assert cat.user_ids.tolist() == [1, 2, 10, 33]  # 2 before 10
    assert cat.item_ids.tolist() == [7, 9, 100]
    assert cat.user_index(np.array([33, 2], dtype=np.int8)).tolist() == [3, 1]
    assert cat.user_index([np.int16(10), 1]).tolist() == [2, 0]


def test_integral_float_ids_are_accepted_as_integers():
    ratings = pd.DataFrame({"user_id": [3.0, 1.0, 3.0], "item_id": [20.0, 10.0, 5.0]})  # as pandas reads ints
    cat = Catalog.from_frames(ratings)
    assert cat.user_ids.dtype == np.int64
    assert cat.user_ids.tolist() == [1, 3]
    assert cat.item_ids.tolist() == [5, 10, 20]
    assert cat.item_index([10.0, 20]).tolist() == [1, 2]
    assert cat.add_indices(ratings)["item_idx"].tolist() == [2, 1, 0]


def test_non_integral_float_ids_are_refused_naming_them():
    ratings = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [10.0, 1.5, 12.0]})
    with pytest.raises(TypeError) as info:
        Catalog.from_frames(ratings)
    message = str(info.value)
    assert "item ids must be integers or strings" in message
    assert "non-integral floats such as 1.5" in message
    assert "astype(str)" in message
    cat = Catalog.from_frames(pd.DataFrame({"user_id": [1], "item_id": [10]}))
    with pytest.raises(TypeError, match="non-integral floats such as 10.25"):
        cat.item_index([10.25])


@pytest.mark.parametrize("missing", [np.nan, None])
def test_missing_ids_are_refused(missing):
    ratings = pd.DataFrame({"user_id": [1, missing, 3], "item_id": [10, 11, 12]})
    with pytest.raises(TypeError, match=r"user ids must not be missing.*1 missing value.*dropna"):
        Catalog.from_frames(ratings)
    ratings = pd.DataFrame({"user_id": [1, 2, 3], "item_id": ["a", missing, "c"]})
    with pytest.raises(TypeError, match=r"item ids must not be missing"):
        Catalog.from_frames(ratings)


def test_mixing_strings_and_ints_in_one_column_is_refused():
    ratings = pd.DataFrame({"user_id": [1, "2", 3], "item_id": [10, 11, 12]})
    with pytest.raises(TypeError) as info:
        Catalog.from_frames(ratings)
    message = str(info.value)
    assert "user ids mix strings and numbers" in message
    assert "'2'" in message
    assert "convert them all to str" in message and "astype(str)" in message


def test_ids_of_another_kind_in_a_side_table_are_refused():
    ratings = pd.DataFrame({"user_id": ["a", "b"], "item_id": [10, 11]})
    expected = r"user ids must be of one kind, got strings in ratings, integers in users.*astype\(str\)"
    with pytest.raises(TypeError, match=expected):
        Catalog.from_frames(ratings, users=pd.DataFrame({"user_id": [1, 2]}))
    # the same ids, as strings everywhere: fine
    cat = Catalog.from_frames(ratings, users=pd.DataFrame({"user_id": ["c"]}))
    assert cat.user_ids.tolist() == ["a", "b", "c"]


def test_boolean_ids_are_refused():
    with pytest.raises(TypeError, match="integers or strings.*bool"):
        Catalog.from_frames(pd.DataFrame({"user_id": [True, False], "item_id": [1, 2]}))


def test_looking_up_ids_of_the_wrong_type_says_so(ratings):
    cat = Catalog.from_frames(ratings)  # integer ids
    with pytest.raises(TypeError) as info:
        cat.item_index(["100"])
    assert not isinstance(info.value, KeyError)  # not "unknown": the type is wrong
    message = str(info.value)
    assert "item ids of the wrong type" in message
    assert "integers" in message and "strings were looked up" in message and "'100'" in message
    str_cat = Catalog.from_frames(pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"]}))
    with pytest.raises(TypeError, match=r"user ids of the wrong type.*strings.*integers were looked up.*astype\(str\)"):
        str_cat.user_index([1])


def test_unknown_string_ids_raise_naming_at_most_ten():
    cat = Catalog.from_frames(pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"]}))
    with pytest.raises(UnknownIdError) as info:
        cat.item_index(["x", "zz", "y", "zz", "w"])
    message = str(info.value)
    assert "unknown item id(s) ['w', 'zz'] (3 in all)" in message  # distinct ids named, occurrences counted
    many = [f"q{k:02d}" for k in range(12)]
    with pytest.raises(UnknownIdError) as info:
        cat.user_index(many)
    assert str(many[:10]) in str(info.value) and "q10" not in str(info.value) and "(12 in all)" in str(info.value)


def test_empty_lookup_and_empty_catalogue():
    cat = Catalog.from_frames(pd.DataFrame({"user_id": [1], "item_id": ["x"]}))
    assert cat.item_index([]).tolist() == [] and cat.user_index(np.array([], dtype=np.int64)).tolist() == []
    empty = Catalog(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert empty.n_items == 0
    with pytest.raises(UnknownIdError, match=r"\[3\]"):
        empty.item_index([3])


def test_constructor_rejects_unsorted_or_duplicate_ids():
    with pytest.raises(ValueError, match="sorted and unique.*Catalog.from_frames"):
        Catalog(np.array([3, 1, 2]), np.arange(3))
    with pytest.raises(ValueError, match="item ids must be sorted and unique"):
        Catalog(np.arange(3), np.array(["a", "a"], dtype=object))
    cat = Catalog(np.arange(3, dtype=np.int32), np.array(["a", "b"]))  # canonical dtypes
    assert cat.user_ids.dtype == np.int64 and cat.item_ids.dtype == object


def test_user_positions_marks_unknown_ids_instead_of_raising(ratings):
    cat = Catalog.from_frames(ratings)
    assert cat.user_positions([30, 99, 10]).tolist() == [2, -1, 0]
    with pytest.raises(TypeError, match="wrong type"):
        cat.user_positions(["30"])
