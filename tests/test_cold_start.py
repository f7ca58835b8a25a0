"""splits.make_items_cold: cold-start items are absent from training, present in test, drawn with a seed."""

import numpy as np
import pandas as pd
import pytest

from tt_helpers import splits
from tt_helpers.catalog import Catalog
from tt_helpers.datasets.movielens import MOVIELENS_ITEM_FEATURES
from tt_helpers.evaluation import evaluate
from tt_helpers.features import align_to_catalog, encode_table

KEY = ["user_id", "item_id", "timestamp"]


def make_ratings(seed=0, n_users=40, n_items=60, max_per_user=30):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(5, max_per_user + 1))
        for i in rng.choice(n_items, size=n, replace=False) + 1000:
            rows.append((u + 1, int(i), float(rng.integers(1, 6)), int(rng.integers(0, 1000))))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


@pytest.fixture
def split():
    ratings = make_ratings()
    return splits.temporal_user_split(ratings, Catalog.from_frames(ratings))


def keys(frame):
    return sorted(map(tuple, frame[KEY].to_numpy().tolist()))


def test_cold_items_lose_every_training_interaction_and_nothing_else(split):
    cold_split, cold = splits.make_items_cold(split, n_items=5, seed=1)
    assert len(cold) == 5 and np.all(np.diff(cold) > 0)  # sorted, distinct
    train, old = cold_split.train.frame, split.train.frame
    assert not train["item_idx"].isin(cold).any()
    assert keys(train) == keys(old[~old["item_idx"].isin(cold)])  # only the cold items' rows are gone
    assert old["item_idx"].isin(cold).any()  # ... and there were some to remove
    assert keys(cold_split.test.frame) == keys(split.test.frame)  # test untouched
    assert cold_split.catalog is split.catalog
    assert cold_split.train.positive_threshold == split.train.positive_threshold
    assert "made cold" in cold_split.protocol and split.protocol in cold_split.protocol
    assert (cold_split.train.item_counts(positives_only=False)[cold] == 0).all()


def test_cold_items_are_drawn_among_items_with_test_positives(split):
    candidates = set(split.test.positives()["item_idx"].tolist())
    for seed in range(5):
        _, cold = splits.make_items_cold(split, n_items=8, seed=seed)
        assert set(cold.tolist()) <= candidates


def test_seeded_and_fraction(split):
    _, a = splits.make_items_cold(split, n_items=6, seed=3)
    _, b = splits.make_items_cold(split, n_items=6, seed=3)
    _, c = splits.make_items_cold(split, n_items=6, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    n_candidates = split.test.positives()["item_idx"].nunique()
    _, d = splits.make_items_cold(split, fraction=0.25, seed=0)
    assert len(d) == int(np.floor(0.25 * n_candidates))
    _, everything = splits.make_items_cold(split, fraction=1.0, seed=0)
    assert len(everything) == n_candidates


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"n_items": 3, "fraction": 0.1}, {"n_items": 0}, {"n_items": 10_000}, {"fraction": 0.0}, {"fraction": 1.5}],
)
def test_bad_arguments(split, kwargs):
    with pytest.raises(ValueError):
        splits.make_items_cold(split, **kwargs)


def test_validation_never_sees_cold_items(split):
    cold_split, cold = splits.make_items_cold(split, n_items=5, seed=0)
    validation = cold_split.validation()
    for part in (validation.train.frame, validation.test.frame):
        assert not part["item_idx"].isin(cold).any()


def test_cold_items_map_to_the_oov_id_but_keep_their_features(split):
    cold_split, cold = splits.make_items_cold(split, n_items=5, seed=0)
    cat = cold_split.catalog
    items = pd.DataFrame({"item_id": cat.item_ids, "genres": [["a"] if i % 2 else ["b"] for i in range(cat.n_items)]})
    seen = cold_split.train.item_counts(positives_only=False) > 0
    table = encode_table(align_to_catalog(items, "item_id", cat.item_ids), MOVIELENS_ITEM_FEATURES[:2], seen)
    assert (table.columns["item_id"].ids[cold] == 0).all()  # OOV
    assert (table.columns["item_id"].ids[np.flatnonzero(seen)] > 0).all()
    bags = table.columns["genres"]
    assert ((bags.offsets[cold + 1] - bags.offsets[cold]) == 1).all()  # side features are still there


def test_relevance_restricted_to_cold_items(split):
    """A model that scores the cold items highest finds all of them; evaluation only counts cold items."""
    import torch

    cold_split, cold = splits.make_items_cold(split, n_items=5, seed=0)

    class ColdFirst:
        def score(self, user_idx):
            s = torch.zeros(len(user_idx), cold_split.catalog.n_items)
            s[:, torch.as_tensor(cold)] = 1.0
            return s

    result = evaluate(ColdFirst(), cold_split, ks=(5,), relevant_items=cold)
    assert result["Recall@5"] == pytest.approx(1.0)
