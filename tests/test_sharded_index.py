"""The sharded index: searched exhaustively, N shards return exactly what one exact index returns."""

import json

import numpy as np
import pytest

from tt_helpers.index import AnnoyIndex, ExactIndex, IndexFileError
from tt_helpers.sharded_index import ShardedIndex, merge_top_k, shard_rows

N_ITEMS, DIM, K = 300, 8, 10
EXHAUSTIVE = {ExactIndex: {}, AnnoyIndex: {"search_k": 10**6, "oversample": N_ITEMS}}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32) * rng.uniform(0.5, 2.0, (N_ITEMS, 1))
    queries = rng.normal(size=(20, DIM)).astype(np.float32)
    return items.astype(np.float32), queries


@pytest.mark.parametrize("kind", [ExactIndex, AnnoyIndex])
@pytest.mark.parametrize("assignment", ["round_robin", "contiguous"])
@pytest.mark.parametrize("id_type", ["int", "str"])
def test_exhaustive_shards_equal_one_exact_index(data, kind, assignment, id_type):
    items, queries = data
    ids = np.arange(N_ITEMS) * 7 + 3 if id_type == "int" else np.array([f"item-{i}" for i in range(N_ITEMS)])
    params = {"n_trees": 5, "seed": 1} if kind is AnnoyIndex else {}
    sharded = ShardedIndex(kind).build(items, ids=ids, n_shards=3, assignment=assignment, **params)
    expected_ids, expected_scores = ExactIndex().build(items, ids=ids).search(queries, K)
    found_ids, found_scores = sharded.search(queries, K, **EXHAUSTIVE[kind])
    assert found_ids.tolist() == expected_ids.tolist()
    np.testing.assert_allclose(found_scores, expected_scores, rtol=1e-5, atol=1e-5)
    assert sorted(map(len, sharded.shards)) == [100, 100, 100]


def test_shards_partition_the_catalogue():
    for assignment in ("round_robin", "contiguous"):
        rows = shard_rows(10, 3, assignment)
        assert sorted(np.concatenate(rows).tolist()) == list(range(10))
        assert [len(r) for r in rows] == [4, 3, 3]
    assert shard_rows(10, 3)[1].tolist() == [1, 4, 7]


def test_k_larger_than_a_shard_and_single_query(data):
    items, queries = data
    sharded = ShardedIndex(ExactIndex).build(items[:12], n_shards=4)  # shards of 3 items
    ids, scores = sharded.search(queries[0], 8)
    exact_ids, _ = ExactIndex().build(items[:12]).search(queries[0], 8)
    assert ids.shape == (8,) and ids.tolist() == exact_ids.tolist()
    assert np.all(np.diff(scores) <= 0)


def test_ties_go_to_the_earlier_item():
    ids, scores = merge_top_k(
        [np.array([["b"]]), np.array([["a"]])], [np.array([[1.0]]), np.array([[1.0]])],
        [np.array([[5]]), np.array([[2]])], k=2,
    )
    assert ids.tolist() == [["a", "b"]]


def test_save_load_round_trip_and_each_shard_stands_alone(data, tmp_path):
    items, queries = data
    sharded = ShardedIndex(AnnoyIndex).build(items, n_shards=2, n_trees=5, model_fingerprint="abc")
    folder = sharded.save(tmp_path / "sharded")
    loaded = ShardedIndex.load(folder, expected_fingerprint="abc")
    assert loaded.ids.tolist() == sharded.ids.tolist()
    for a, b in zip(loaded.search(queries, K), sharded.search(queries, K)):
        np.testing.assert_array_equal(a, b)
    alone = AnnoyIndex.load(folder / "shard-001")
    assert len(alone) == 150 and alone.ids.tolist() == list(range(1, N_ITEMS, 2))


def test_clear_errors(data, tmp_path):
    items, queries = data
    with pytest.raises(ValueError, match="more than the 3 items"):
        ShardedIndex(ExactIndex).build(items[:3], n_shards=4)
    with pytest.raises(ValueError, match="assignment must be one of"):
        ShardedIndex(ExactIndex).build(items, n_shards=2, assignment="random")
    with pytest.raises(ValueError, match="empty"):
        ShardedIndex().search(queries, K)
    sharded = ShardedIndex(ExactIndex).build(items, n_shards=2)
    with pytest.raises(ValueError, match="larger than the catalogue"):
        sharded.search(queries, N_ITEMS + 1)
    with pytest.raises(ValueError, match="dimension"):
        sharded.search(queries[:, :4], K)
    with pytest.raises(FileNotFoundError, match="not a sharded index"):
        ShardedIndex.load(tmp_path)
    folder = sharded.save(tmp_path / "s")
    (folder / "sharded.json").write_text('{"format": "tt_helpers.sharded_index"', encoding="utf-8")
    with pytest.raises(IndexFileError, match="truncated or corrupted"):
        ShardedIndex.load(folder)
    good = sharded.save(tmp_path / "t")
    meta = json.loads((good / "sharded.json").read_text(encoding="utf-8"))
    meta["rows"][0][0] = meta["rows"][1][0]  # one item in two shards, another in none
    (good / "sharded.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(IndexFileError, match="exactly one shard"):
        ShardedIndex.load(good)
    meta = {"format": "tt_helpers.sharded_index", "format_version": 99}
    (folder / "sharded.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(IndexFileError, match="version 99"):
        ShardedIndex.load(folder)
