"""evaluate() and tune() on a tiny hand-built split with a model whose scores are fixed."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from tt_helpers import evaluation, splits
from tt_helpers.catalog import Catalog


def ratings_frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def tiny_ratings():
    """Items 101..110 are rated; 111 appears only in the items table (index 10).

    user 1 (idx 0): 101..105 at t=1..5; test = 105 (idx 4, rating 5)       -> relevant {4}
    user 2 (idx 1): 101..105 at t=1..5; test = 105 rated 2                 -> no relevant item, skipped
    user 3 (idx 2): 101..110 at t=1..10; test = 109 (idx 8, 4 stars) and 110 (idx 9, 3 stars) -> relevant {8}
    user 4 (idx 3): 101..104; floor(0.2 * 4) = 0 test ratings              -> skipped
    """
    rows = []
    for t, (item, r) in enumerate(zip(range(101, 106), [5, 4, 3, 5, 5]), start=1):
        rows.append((1, item, float(r), t))
    for t, (item, r) in enumerate(zip(range(101, 106), [5, 5, 5, 5, 2]), start=1):
        rows.append((2, item, float(r), t))
    for t, (item, r) in enumerate(zip(range(101, 111), [5] * 8 + [4, 3]), start=1):
        rows.append((3, item, float(r), t))
    for t, item in enumerate(range(101, 105), start=1):
        rows.append((4, item, 5.0, t))
    return ratings_frame(rows).sample(frac=1.0, random_state=0)


def tiny_split(**kwargs):
    ratings = tiny_ratings()
    items = pd.DataFrame({"item_id": np.arange(101, 112)})
    return splits.temporal_user_split(ratings, Catalog.from_frames(ratings, items=items), **kwargs)


# Scores per user index (4 users x 11 items).
SCORES = torch.zeros(4, 11)
SCORES[0, :4] = torch.tensor([10.0, 9.0, 8.0, 7.0])  # training items first: must be excluded
SCORES[0, 4] = 1.0  # the test item -> rank 1 once training items are excluded
SCORES[0, 10] = 0.5  # the cold item -> rank 2
SCORES[2, :8] = 10.0  # training items
SCORES[2, 9] = 5.0  # test item rated 3 stars: not relevant, ranks 1
SCORES[2, 8] = 4.0  # test item rated 4 stars: relevant, ranks 2


class FixedModel:
    def __init__(self, scores):
        self.scores = scores
        self.fitted_on = []
        self.asked = []

    def fit(self, train):
        self.fitted_on.append(train)
        return self

    def score(self, user_idx):
        self.asked.extend(torch.as_tensor(user_idx).tolist())
        return self.scores[user_idx]


def test_split_is_as_described():
    split = tiny_split()
    assert split.catalog.n_items == 11 and split.catalog.n_users == 4
    test = split.test.frame
    assert sorted(zip(test["user_idx"], test["item_idx"])) == [(0, 4), (1, 4), (2, 8), (2, 9)]


def test_evaluate_hand_computed_means():
    model = FixedModel(SCORES)
    result = evaluation.evaluate(model, tiny_split(), ks=(2, 1))
    assert sorted(model.asked) == [0, 2]  # skipped users are not even scored
    expected = {
        "Recall@1": (1 + 0) / 2,
        "Recall@2": (1 + 1) / 2,
        "HitRate@1": 0.5,
        "HitRate@2": 1.0,
        "NDCG@1": 0.5,
        "NDCG@2": (1 + 1 / math.log2(3)) / 2,
        "MRR": (1 + 1 / 2) / 2,
        "Coverage@1": 2 / 11,  # {4, 9}
        "Coverage@2": 4 / 11,  # {4, 10} U {9, 8}
    }
    assert set(result) == set(expected)
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-6), name


def test_evaluate_per_user_rows():
    frame = evaluation.evaluate(FixedModel(SCORES), tiny_split(), ks=(1, 2, 5), per_user=True)
    assert isinstance(frame, pd.DataFrame)
    assert frame.index.name == "user_idx"
    assert frame.index.tolist() == [0, 2]  # one row per evaluated user
    assert frame.loc[0, "Recall@1"] == 1.0 and frame.loc[0, "MRR"] == 1.0 and frame.loc[0, "NDCG@1"] == 1.0
    assert frame.loc[2, "Recall@1"] == 0.0 and frame.loc[2, "Recall@2"] == 1.0
    assert frame.loc[2, "MRR"] == pytest.approx(0.5)
    assert frame.loc[2, "NDCG@2"] == pytest.approx(1 / math.log2(3), abs=1e-6)
    assert not any(c.startswith("Coverage") for c in frame.columns)


def test_training_items_are_excluded():
    # a model that scores exactly the user's training items highest still finds the test item at rank 1
    split = tiny_split()
    x = split.train.matrix(positives_only=False)
    scores = x * 100.0
    scores[0, 4] = 1.0
    scores[2, 8] = 1.0
    frame = evaluation.evaluate(FixedModel(scores), split, ks=(1,), per_user=True)
    assert frame["Recall@1"].tolist() == [1.0, 1.0]
    # low-rated training items are excluded too (user 1 rated item 103 with 3 stars in training)
    assert split.train.frame.query("user_idx == 0 and item_idx == 2")["rating"].item() == 3.0
    scores = torch.zeros(4, 11)
    scores[0, 2] = 100.0
    scores[0, 4] = 1.0
    frame = evaluation.evaluate(FixedModel(scores), split, ks=(1,), per_user=True)
    assert frame.loc[0, "Recall@1"] == 1.0


def test_threshold_decides_relevance():
    # with positives = rating >= 3, user 3's 110 (idx 9, 3 stars) becomes relevant; user 2's 2 stars still not
    frame = evaluation.evaluate(FixedModel(SCORES), tiny_split(positive_threshold=3.0), ks=(1, 2), per_user=True)
    assert frame.index.tolist() == [0, 2]
    assert frame.loc[2, "Recall@1"] == 0.5
    assert frame.loc[2, "MRR"] == 1.0
    # ... and with rating >= 2, user 2 is evaluated too
    frame = evaluation.evaluate(FixedModel(SCORES), tiny_split(positive_threshold=2.0), ks=(1,), per_user=True)
    assert frame.index.tolist() == [0, 1, 2]


def test_relevant_items_restricts_relevance_but_ranks_the_full_catalogue():
    frame = evaluation.evaluate(
        FixedModel(SCORES), tiny_split(), ks=(1, 2), relevant_items=np.array([8]), per_user=True
    )
    assert frame.index.tolist() == [2]
    # item 9 (not in the subset) still occupies rank 1
    assert frame.loc[2, "Recall@1"] == 0.0
    assert frame.loc[2, "MRR"] == 0.5
    frame = evaluation.evaluate(
        FixedModel(SCORES), tiny_split(), ks=(1,), relevant_items=np.array([4, 9]), per_user=True
    )
    assert frame.index.tolist() == [0]  # item 9 is rated 3 stars: in the subset but not a positive
    with pytest.raises(ValueError, match="no user has a relevant test item"):
        evaluation.evaluate(FixedModel(SCORES), tiny_split(), relevant_items=np.array([10]))


def test_a_test_item_already_rated_in_training_is_not_relevant():
    # user 1 re-rates item 10 at the end; the re-rating is their only test rating
    rows = [(1, 10, 5.0, 1), (1, 11, 5.0, 2), (1, 12, 5.0, 3), (1, 13, 5.0, 4), (1, 10, 5.0, 5)]
    rows += [(2, 10 + i, 5.0, i) for i in range(5)]  # user 2: test = item 14
    split = splits.temporal_user_split(ratings_frame(rows))
    assert split.test.frame[["user_id", "item_id"]].values.tolist() == [[1, 10], [2, 14]]
    frame = evaluation.evaluate(FixedModel(torch.zeros(2, 5)), split, ks=(1,), per_user=True)
    assert frame.index.tolist() == [1]


def test_batch_size_does_not_change_results():
    a = evaluation.evaluate(FixedModel(SCORES), tiny_split(), ks=(1, 2, 5))
    b = evaluation.evaluate(FixedModel(SCORES), tiny_split(), ks=(1, 2, 5), batch_size=1)
    assert a == pytest.approx(b)


@pytest.mark.parametrize("bad", [lambda s: s[:, :-1], lambda s: s[:1], lambda s: s.reshape(-1)])
def test_wrong_score_shape_raises(bad):
    class Bad(FixedModel):
        def score(self, user_idx):
            return bad(self.scores[user_idx])

    with pytest.raises(ValueError, match=r"model\.score returned shape .*expected \(2, 11\)"):
        evaluation.evaluate(Bad(SCORES), tiny_split())


def test_results_table():
    table = evaluation.results_table(
        {"a": {"Recall@10": 0.123456, "MRR": 0.5}, "b": {"Recall@10": 0.2, "MRR": 0.25}},
        columns=["MRR", "Recall@10"],
        digits=3,
    )
    assert table.index.tolist() == ["a", "b"]
    assert table.columns.tolist() == ["MRR", "Recall@10"]
    assert table.loc["a", "Recall@10"] == 0.123


# --- tune -------------------------------------------------------------------------------------


def tune_ratings():
    """3 users x 10 ratings, all positive. Test = last 2 by time; validation test = 8th; items 1..12."""
    rng = np.random.default_rng(3)
    rows = []
    for u in range(3):
        for t, item in enumerate(rng.choice(np.arange(1, 13), size=10, replace=False), start=1):
            rows.append((u, int(item), 5.0, t))
    return ratings_frame(rows)


def test_tune_picks_the_best_value_on_validation_and_never_touches_test():
    split = splits.temporal_user_split(tune_ratings())
    val = split.validation()
    n_users, n_items = split.catalog.n_users, split.catalog.n_items
    good_on_validation = torch.zeros(n_users, n_items)
    good_on_test = torch.zeros(n_users, n_items)
    for u, i in zip(val.test.frame["user_idx"], val.test.frame["item_idx"]):
        good_on_validation[u, i] = 1.0
    for u, i in zip(split.test.frame["user_idx"], split.test.frame["item_idx"]):
        good_on_test[u, i] = 1.0
    assert len(val.test.frame) == 3 and len(split.test.frame) == 6

    models = {}

    def make_model(value):
        scores = {1.0: good_on_test, 2.0: good_on_validation, 3.0: torch.zeros(n_users, n_items)}[value]
        models[value] = FixedModel(scores)
        return models[value]

    best, table = evaluation.tune(make_model, [1.0, 2.0, 3.0], split, metric="Recall@1", ks=(1, 5))
    assert best == 2.0  # would be 1.0 if tune looked at the test split
    assert table.index.name == "value"
    assert table.index.tolist() == [1.0, 2.0, 3.0]
    assert table.loc[2.0, "Recall@1"] == 1.0
    assert table.loc[1.0, "Recall@1"] == 0.0

    test_keys = set(map(tuple, split.test.frame[["user_id", "item_id"]].values.tolist()))
    val_test_keys = set(map(tuple, val.test.frame[["user_id", "item_id"]].values.tolist()))
    for model in models.values():
        assert len(model.fitted_on) == 1
        fitted = model.fitted_on[0].frame
        keys = set(map(tuple, fitted[["user_id", "item_id"]].values.tolist()))
        assert keys.isdisjoint(test_keys)
        assert keys.isdisjoint(val_test_keys)
        pd.testing.assert_frame_equal(fitted, val.train.frame)


def test_tune_on_another_metric_and_default_ks():
    split = splits.temporal_user_split(tune_ratings())

    def make_model(value):
        # value 0: all-zero scores (ties -> item index order); value 1: decreasing in the item index, the same order
        scores = torch.zeros(split.catalog.n_users, split.catalog.n_items)
        if value == 1.0:
            scores[:] = -torch.arange(split.catalog.n_items, dtype=torch.float32)  # same order as zeros
        return FixedModel(scores)

    best, table = evaluation.tune(make_model, [0.0, 1.0], split, metric="MRR")
    assert set(["Recall@10", "Recall@50", "Recall@100", "MRR"]) <= set(table.columns)
    assert table.loc[0.0, "MRR"] == pytest.approx(table.loc[1.0, "MRR"])  # identical rankings
    assert best == 0.0  # ties go to the first value of the grid



def test_tune_with_a_score_of_another_protocol_is_given_the_validation_split():
    split = splits.temporal_user_split(tune_ratings())
    val = split.validation()
    given = []

    def score(model, validation):
        given.append(validation)
        return {1.0: 0.2, 2.0: 0.7, 3.0: 0.5}[model.value]

    def make_model(value):
        model = FixedModel(torch.zeros(split.catalog.n_users, split.catalog.n_items))
        model.value = value
        return model

    best, table = evaluation.tune(make_model, [1.0, 2.0, 3.0], split, score=score)
    assert best == 2.0 and table.columns.tolist() == ["score"]
    assert table["score"].tolist() == [0.2, 0.7, 0.5]
    for validation in given:
        pd.testing.assert_frame_equal(validation.test.frame, val.test.frame)

def test_nan_scores_raise_instead_of_ranking_first():
    scores = SCORES.clone()
    scores[2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"NaN for user indices \[2\].*diverged"):
        evaluation.evaluate(FixedModel(scores), tiny_split(), ks=(1,))


# --------------------------------------------------------------------------- TFRS protocol


def test_interaction_hit_rate_counts_every_test_row_without_excluding_training_items():
    split = tiny_split()
    test = split.test.frame
    # user 0's test item (idx 4) scores 1.0, below its four training items: rank 5 when nothing is excluded
    rate = evaluation.interaction_hit_rate(FixedModel(SCORES), split, k=4)
    by_row = dict(zip(zip(test["user_idx"], test["item_idx"]), rate.to_numpy()))
    assert by_row[(0, 4)] == 0.0  # rank 5 > 4
    assert evaluation.interaction_hit_rate(FixedModel(SCORES), split, k=5)[0] == 1.0  # rank 5 <= 5
    # user 1's test row is rated 2 stars: it still counts in this protocol (every rating is a positive)
    assert 1 in rate.index
    assert len(rate) == len(test)
    # excluding training items moves user 0's test item to rank 1
    excluded = evaluation.interaction_hit_rate(FixedModel(SCORES), split, k=1, exclude_seen=True)
    assert excluded[0] == 1.0


def test_interaction_hit_rate_counts_ties_at_the_cut_against_the_model():
    split = tiny_split()
    flat = FixedModel(torch.zeros(4, 11))  # every item tied: no top-k of size < 11 contains them all
    assert evaluation.interaction_hit_rate(flat, split, k=10).sum() == 0.0
    assert evaluation.interaction_hit_rate(flat, split, k=11).mean() == 1.0
    with pytest.raises(ValueError, match="catalogue size"):
        evaluation.interaction_hit_rate(flat, split, k=12)


def test_relevance_is_kept_on_the_split_and_recomputed_when_a_frame_changes_in_place():
    split = tiny_split()
    first = evaluation.evaluate(FixedModel(SCORES), split, ks=(1, 2), per_user=True)
    kept = evaluation._Relevance.of(split)
    assert evaluation._Relevance.of(split) is kept  # the second evaluation reuses it
    again = evaluation.evaluate(FixedModel(SCORES), split, ks=(1, 2), per_user=True)
    pd.testing.assert_frame_equal(first, again)
    # user 2 (index 1) now rated the test item 5: it becomes relevant, and evaluate must see it
    test = split.test.frame
    test.loc[(test["user_idx"] == 1) & (test["item_idx"] == 4), "rating"] = 5.0
    changed = evaluation.evaluate(FixedModel(SCORES), split, ks=(1, 2), per_user=True)
    assert evaluation._Relevance.of(split) is not kept
    assert changed.index.tolist() == [0, 1, 2]
    assert changed.index.tolist() == evaluation.evaluate(FixedModel(SCORES), tiny_split_with(test), ks=(1,),
                                                         per_user=True).index.tolist()


def tiny_split_with(test: pd.DataFrame) -> splits.Split:
    split = tiny_split()
    return splits.Split(split.train, splits.Interactions(test.copy(), split.catalog), split.protocol, split.resplit)


def test_relevance_without_masks_for_large_catalogues_gives_the_same_results(monkeypatch):
    expected = evaluation.evaluate(FixedModel(SCORES), tiny_split(), ks=(1, 2, 5), per_user=True)
    monkeypatch.setattr(evaluation._Relevance, "MASK_LIMIT", 0)  # rows built per batch, as for big catalogues
    split = tiny_split()
    pd.testing.assert_frame_equal(evaluation.evaluate(FixedModel(SCORES), split, ks=(1, 2, 5), per_user=True), expected)
    assert evaluation._Relevance.of(split)._seen_mask is None
