"""Feature encoders, CSR bags, side-table alignment and the leakage-free user history."""

import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tt_helpers.features import (
    OOV,
    BagColumn,
    CategoricalColumn,
    FeatureSpec,
    History,
    Vocabulary,
    align_to_catalog,
    bucketize,
    encode_table,
    gather_bags,
    stable_hash,
    title_tokens,
)

# --------------------------------------------------------------------------- encoders


def test_vocabulary_maps_known_values_to_1_to_n_and_everything_else_to_oov():
    vocab = Vocabulary.fit(["b", "a", "b", None, np.nan, "c"])
    assert vocab.values == ("a", "b", "c")  # sorted, deduplicated, missing values dropped
    assert vocab.size == 4  # OOV row included
    codes = vocab.encode(["a", "b", "c", "zzz", None, np.nan, pd.NA])
    assert codes.dtype == np.int64
    assert codes.tolist() == [1, 2, 3, OOV, OOV, OOV, OOV]
    assert OOV == 0


def test_vocabulary_sorts_numbers_numerically_and_anything_else_as_text():
    # numbers (Python or numpy, ints and floats mixed) in numeric order: 2 before 10, so user 2 gets id 2
    vocab = Vocabulary.fit([10, 2, np.int64(1), 2.5, 112])
    assert vocab.values == (1, 2, 2.5, 10, 112)
    assert vocab.encode([1, 2, 10, 112]).tolist() == [1, 2, 4, 5]
    # strings, even of digits, and mixed types sort by their text
    assert Vocabulary.fit(["10", "2", "1"]).values == ("1", "10", "2")
    assert Vocabulary.fit([10, "2", 1]).values == (1, 10, "2")
    assert Vocabulary.fit([True, 2]).values == (2, True)  # a bool is not a number here: as text


def test_vocabulary_of_numbers_and_empty_vocabulary():
    vocab = Vocabulary.fit([30, 10, 20, 10])
    assert vocab.encode([10, 20, 30, 40]).tolist() == [1, 2, 3, 0]
    empty = Vocabulary.fit([])
    assert empty.size == 1
    assert empty.encode(["x", None]).tolist() == [0, 0]


def test_stable_hash_is_a_fixed_function_of_the_string():
    # Hard-coded once from 1 + zlib.crc32(b"90210") % 1000: a per-process salted hash() could not reproduce it.
    assert stable_hash("90210", 1000) == 764
    assert stable_hash("toy", 2000) == 1791
    assert stable_hash("90210", 1000) == 1 + zlib.crc32(b"90210") % 1000
    # non-strings hash through their text
    assert stable_hash(90210, 1000) == 764


def test_stable_hash_range_and_missing_values():
    n = 7
    buckets = [stable_hash(f"value-{i}", n) for i in range(500)]
    assert min(buckets) >= 1 and max(buckets) <= n
    assert set(buckets) == set(range(1, n + 1))  # 500 values reach every bucket
    for missing in (None, float("nan"), np.float64("nan"), pd.NA):
        assert stable_hash(missing, n) == OOV


def test_bucketize_right_open_bins_and_missing_values():
    edges = (18, 25, 35)
    values = [0, 17.9, 18, 24.99, 25, 34, 35, 99, np.nan, None, pd.NA]
    # (-inf,18) -> 1, [18,25) -> 2, [25,35) -> 3, [35,inf) -> 4, missing -> 0
    assert bucketize(values, edges).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 0, 0, 0]
    years = pd.Series([1995, None], dtype="Int64")  # MovieLens' nullable year column
    assert bucketize(years.tolist(), (1990,)).tolist() == [2, 0]
    assert bucketize(["12", "abc"], (10,)).tolist() == [2, 0]  # unparseable text is missing


def test_title_tokens():
    assert title_tokens("Toy Story") == ["toy", "story"]
    assert title_tokens("Don't Look Now (1973)") == ["don", "t", "look", "now", "1973"]
    assert title_tokens("  ") == []
    assert title_tokens(None) == []
    assert title_tokens(float("nan")) == []


# --------------------------------------------------------------------------- bags


def test_bag_column_from_lists_is_csr():
    bags = BagColumn.from_lists([[1, 2], [], [3], [4, 5, 6]], cardinality=7)
    assert bags.values.tolist() == [1, 2, 3, 4, 5, 6]
    assert bags.offsets.tolist() == [0, 2, 2, 3, 6]
    assert bags.values.dtype == torch.long and bags.offsets.dtype == torch.long
    assert bags.cardinality == 7


def test_bag_lookup_matches_a_hand_built_expectation_including_empty_bags():
    lists = [[1, 2], [], [3], [4, 5, 6]]
    bags = BagColumn.from_lists(lists, cardinality=7)
    rows = torch.tensor([3, 1, 0, 3, 2])
    flat, offsets = bags.lookup(rows)
    assert flat.tolist() == [4, 5, 6, 1, 2, 4, 5, 6, 3]
    assert offsets.tolist() == [0, 3, 3, 5, 8]
    # and EmbeddingBag(mean) pools exactly each row's bag; the empty bag pools to zeros
    emb = nn.EmbeddingBag(7, 3, mode="mean")
    pooled = emb(flat, offsets)
    for i, r in enumerate(rows.tolist()):
        expected = emb.weight[lists[r]].mean(0) if lists[r] else torch.zeros(3)
        assert torch.allclose(pooled[i], expected)


def test_gather_bags_all_empty_batch_and_no_rows():
    values = torch.tensor([7, 8, 9])
    flat, offsets = gather_bags(values, torch.tensor([1, 3, 0]), torch.tensor([1, 3, 0]))
    assert flat.numel() == 0 and flat.dtype == torch.long
    assert offsets.tolist() == [0, 0, 0]
    pooled = nn.EmbeddingBag(10, 2, mode="mean")(flat, offsets)
    assert torch.equal(pooled, torch.zeros(3, 2))
    flat, offsets = gather_bags(values, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert flat.numel() == 0 and offsets.numel() == 0


def test_gather_bags_arbitrary_windows():
    values = torch.arange(100, 110)
    starts, ends = torch.tensor([2, 0, 5, 9]), torch.tensor([5, 0, 6, 10])
    flat, offsets = gather_bags(values, starts, ends)
    assert flat.tolist() == [102, 103, 104, 105, 109]
    assert offsets.tolist() == [0, 3, 3, 4]


# --------------------------------------------------------------------------- tables


def item_frame():
    return pd.DataFrame(
        {
            "item_id": [10, 11, 12, 13, 9],
            "kind": ["x", "y", "z", None, "x"],
            "genres": [["Drama", "War"], [], ["Comedy"], np.nan, ["Drama"]],
            "title": ["Toy Story", "Heat", None, "Toy Soldiers", "Heat"],
            "year": [1995, 1990, None, 2001, 1979],
            "zip": ["90210", None, "10001", "90210", "x"],
        }
    )


def test_encode_table_id_vocabulary_is_fit_on_seen_rows_only():
    frame = item_frame()
    seen = np.array([True, False, True, False, True])
    specs = [
        FeatureSpec("item_id", "item_id", "id"),
        FeatureSpec("kind_id", "kind", "id"),
        FeatureSpec("kind", "kind", "categorical"),
    ]
    table = encode_table(frame, specs, seen)
    assert table.n_rows == 5
    item = table.columns["item_id"]
    assert isinstance(item, CategoricalColumn)
    # vocabulary of seen ids {9, 10, 12}, sorted numerically: 9 < 10 < 12
    assert item.ids.tolist() == [2, 0, 3, 0, 1]
    assert item.cardinality == 4
    # an "id" spec over "kind" only knows x and z (seen rows) -> y is OOV
    assert table.columns["kind_id"].ids.tolist() == [1, 0, 2, 0, 1]
    # "categorical" fits on every row (metadata is known for unseen rows too); the missing value is OOV
    assert table.columns["kind"].ids.tolist() == [1, 2, 3, 0, 1]
    assert table.columns["kind"].cardinality == 4


def test_encode_table_other_kinds():
    frame = item_frame()
    seen = np.ones(5, dtype=bool)
    specs = [
        FeatureSpec("genres", "genres", "bag"),
        FeatureSpec("title", "title", "tokens", buckets=50),
        FeatureSpec("year", "year", "buckets", boundaries=(1980, 2000)),
        FeatureSpec("zip", "zip", "hashed", buckets=20),
    ]
    table = encode_table(frame, specs, seen)
    genres = table.columns["genres"]
    assert isinstance(genres, BagColumn)
    assert genres.cardinality == 4  # Comedy, Drama, War + OOV
    flat, offsets = genres.lookup(torch.arange(5))
    assert flat.tolist() == [2, 3, 1, 2] and offsets.tolist() == [0, 2, 2, 3, 3]  # missing -> empty bag
    title = table.columns["title"]
    assert title.cardinality == 51
    flat, offsets = title.lookup(torch.arange(5))
    h = lambda w: stable_hash(w, 50)  # noqa: E731
    assert flat.tolist() == [h("toy"), h("story"), h("heat"), h("toy"), h("soldiers"), h("heat")]
    assert offsets.tolist() == [0, 2, 3, 3, 5]
    assert table.columns["year"].ids.tolist() == [2, 2, 0, 3, 1]
    assert table.columns["year"].cardinality == 4
    zips = table.columns["zip"].ids.tolist()
    assert zips == [
        stable_hash("90210", 20),
        0,
        stable_hash("10001", 20),
        stable_hash("90210", 20),
        stable_hash("x", 20),
    ]
    assert table.columns["zip"].cardinality == 21


def test_encode_table_errors_and_select():
    frame = item_frame()
    with pytest.raises(KeyError, match="nope"):
        encode_table(frame, [FeatureSpec("x", "nope", "categorical")], np.ones(5, bool))
    with pytest.raises(ValueError, match="unknown feature kind"):
        encode_table(frame, [FeatureSpec("x", "kind", "wrong")], np.ones(5, bool))
    table = encode_table(
        frame, [FeatureSpec("kind", "kind", "categorical"), FeatureSpec("item_id", "item_id", "id")], np.ones(5, bool)
    )
    sub = table.select(["item_id"])
    assert list(sub.columns) == ["item_id"] and [s.name for s in sub.specs] == ["item_id"]
    with pytest.raises(KeyError, match="genres"):
        table.select(["genres"])


def test_align_to_catalog_orders_rows_and_fills_missing():
    side = pd.DataFrame({"item_id": [12, 10], "title": ["Heat", "Toy Story"], "genres": [["Crime"], ["Animation"]]})
    aligned = align_to_catalog(side, "item_id", np.array([10, 11, 12]))
    assert aligned["item_id"].tolist() == [10, 11, 12]
    assert aligned.loc[0, "title"] == "Toy Story" and aligned.loc[2, "title"] == "Heat"
    assert pd.isna(aligned.loc[1, "title"])
    # the missing row encodes to OOV / empty bags
    table = encode_table(
        aligned,
        [
            FeatureSpec("title", "title", "categorical"),
            FeatureSpec("genres", "genres", "bag"),
            FeatureSpec("t", "title", "tokens"),
        ],
        np.ones(3, bool),
    )
    assert table.columns["title"].ids.tolist() == [2, 0, 1]
    assert table.columns["genres"].lookup(torch.tensor([1]))[0].numel() == 0
    assert table.columns["t"].lookup(torch.tensor([1]))[0].numel() == 0
    assert align_to_catalog(None, "item_id", np.array([3, 4]))["item_id"].tolist() == [3, 4]


def test_align_to_catalog_rejects_duplicate_keys():
    side = pd.DataFrame({"user_id": [1, 2, 1], "age": [20, 30, 40]})
    with pytest.raises(ValueError, match="duplicate user_id values; one row per user_id"):
        align_to_catalog(side, "user_id", np.array([1, 2]))


# --------------------------------------------------------------------------- history


def interactions():
    """user_idx, item_idx, timestamp with ties in time; users 3 and 5 have no interaction at all."""
    rows = [
        (0, 4, 10), (0, 2, 10), (0, 7, 11), (0, 1, 13), (0, 3, 13), (0, 9, 13), (0, 5, 20),
        (1, 8, 5), (1, 0, 5), (1, 6, 6),
        (2, 3, 1), (2, 2, 2), (2, 1, 3), (2, 0, 4), (2, 9, 5), (2, 8, 6),
        (4, 6, 100),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_idx", "item_idx", "timestamp"])
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True)  # order must not matter


def brute_force_before(frame, user, t, max_length):
    rows = frame[(frame.user_idx == user) & (frame.timestamp < t)].sort_values(["timestamp", "item_idx"])
    return rows["item_idx"].tolist()[-max_length:] if max_length else []


def windows(history, users, timestamps):
    start, end = history.before(np.asarray(users), np.asarray(timestamps))
    return [history.items[s:e].tolist() for s, e in zip(start.tolist(), end.tolist())]


def example_queries(frame):
    """Every interaction as an example, plus probes between and beyond them (and for users without any)."""
    users = frame["user_idx"].tolist() + [0, 0, 0, 1, 2, 3, 5, 4]
    times = frame["timestamp"].tolist() + [0, 12, 1000, 7, 0, 50, 1, 99]
    return users, times


@pytest.mark.parametrize("max_length", [50, 2, 1])
def test_history_before_is_strictly_before_the_example(max_length):
    frame = interactions()
    history = History(frame, n_users=6, max_length=max_length)
    users, times = example_queries(frame)
    got = windows(history, users, times)
    for u, t, items in zip(users, times, got):
        assert items == brute_force_before(frame, u, t, max_length), (u, t)
        # nothing rated at or after the example's time is visible (ties included)
        visible = frame[(frame.user_idx == u) & frame.item_idx.isin(items)]
        assert (visible.timestamp < t).all()
        assert len(items) <= max_length
    # spot checks by hand: user 0 at t=13 sees items rated at 10 and 11, not the three rated at 13
    assert windows(history, [0], [13])[0] == ([2, 4, 7] if max_length >= 3 else [2, 4, 7][-max_length:])


def test_history_max_length_keeps_most_recent():
    frame = interactions()
    history = History(frame, n_users=6, max_length=3)
    assert windows(history, [2], [6])[0] == [1, 0, 9]  # items at t=3,4,5 (not 3,2 at t=1,2)
    assert windows(history, [0], [100])[0] == [3, 9, 5]  # t=13 ties broken by item id, then t=20


def test_adding_a_future_interaction_does_not_change_earlier_windows():
    frame = interactions()
    users, times = example_queries(frame)
    before = windows(History(frame, n_users=6, max_length=4), users, times)
    # user 0 rates item 6 at t=13 (a tie with existing examples) and item 8 at t=15; user 3 appears at t=60
    extra = pd.DataFrame({"user_idx": [0, 0, 3], "item_idx": [6, 8, 1], "timestamp": [13, 15, 60]})
    grown = pd.concat([frame, extra], ignore_index=True)
    after = windows(History(grown, n_users=6, max_length=4), users, times)
    for u, t, a, b in zip(users, times, before, after):
        if not ((u == 0 and t > 13) or (u == 3 and t > 60)):
            assert a == b, (u, t)
    # ... while a later example does see it
    assert windows(History(grown, n_users=6, max_length=4), [0], [16])[0][-1] == 8


def test_history_latest_returns_the_last_items_overall():
    frame = interactions()
    history = History(frame, n_users=6, max_length=2)
    start, end = history.latest(np.array([0, 1, 2, 3, 4, 5]))
    got = [history.items[s:e].tolist() for s, e in zip(start.tolist(), end.tolist())]
    assert got == [[9, 5], [8, 6], [9, 8], [], [6], []]
    # gather returns the same bags, flattened for EmbeddingBag
    flat, offsets = history.gather(start, end)
    assert flat.tolist() == [9, 5, 8, 6, 9, 8, 6]
    assert offsets.tolist() == [0, 2, 4, 6, 6, 7]
