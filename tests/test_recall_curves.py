"""tt_helpers.evaluation.recall_curve and oracle_rerank_recall, by hand on a tiny split."""

import numpy as np
import pandas as pd
import pytest
import torch

from tt_helpers import evaluation
from tt_helpers.catalog import Catalog
from tt_helpers.splits import temporal_user_split


class FixedScores:
    def __init__(self, scores):
        self.scores = torch.as_tensor(scores, dtype=torch.float32)

    def fit(self, train):
        return self

    def score(self, user_idx):
        return self.scores[torch.as_tensor(user_idx)]


@pytest.fixture
def split():
    # Items 10..16 (indices 0..6). Test = last half of each user's ratings (test_fraction 0.5).
    # user 1: train 10, 11; test 12, 13 (both liked)           -> relevant {2, 3}
    # user 2: train 10, 14; test 15 (liked), 11 (rating 2)       -> relevant {5}
    ratings = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2, 2, 2, 2],
            "item_id": [10, 11, 12, 13, 10, 14, 15, 11],
            "rating": [5.0, 5.0, 5.0, 4.0, 5.0, 5.0, 5.0, 2.0],
            "timestamp": [1, 2, 3, 4, 1, 2, 3, 4],
        }
    )
    items = pd.DataFrame({"item_id": range(10, 17)})
    return temporal_user_split(ratings, Catalog.from_frames(ratings, items=items), test_fraction=0.5)


@pytest.fixture
def model():
    # user 0 ranking after excluding 0, 1: [4, 2, 6, 5, 3]  -> hits at ranks 2 and 5
    # user 1 ranking after excluding 0, 4: [1, 2, 5, 3, 6]  -> hit at rank 3
    return FixedScores(
        [
            [9, 9, 6, 2, 7, 3, 5],
            [9, 8, 7, 5, 9, 6, 1],
        ]
    )


def test_recall_curve_by_hand(split, model):
    curve = evaluation.recall_curve(model, split, max_k=100)
    assert curve.index.tolist() == list(range(1, 8))  # capped at the catalogue size
    user0 = np.array([0, 1, 1, 1, 2, 2, 2]) / 2
    user1 = np.array([0, 0, 1, 1, 1, 1, 1]) / 1
    np.testing.assert_allclose(curve.to_numpy(), (user0 + user1) / 2)


def test_recall_curve_matches_evaluate(split, model):
    curve = evaluation.recall_curve(model, split, max_k=5)
    result = evaluation.evaluate(model, split, ks=(1, 2, 3, 5))
    for k in (1, 2, 3, 5):
        assert curve[k] == pytest.approx(result[f"Recall@{k}"])


def test_oracle_rerank_recall_by_hand(split, model):
    table = evaluation.oracle_rerank_recall(model, split, candidate_sizes=[1, 2, 3, 5, 100], k=1)
    assert table.index.tolist() == [1, 2, 3, 5, 7]
    # hits in the top K: user 0 (2 relevant): 0, 1, 1, 2, 2; user 1 (1 relevant): 0, 0, 1, 1, 1
    np.testing.assert_allclose(table["retriever Recall@K"], [0, 0.25, 0.75, 1.0, 1.0])
    # oracle Recall@1 = min(hits, 1) / n_rel: user 0: 0, .5, .5, .5, .5; user 1: 0, 0, 1, 1, 1
    np.testing.assert_allclose(table["oracle-reranked Recall@1"], [0, 0.25, 0.75, 0.75, 0.75])
    np.testing.assert_allclose(table["retriever Recall@1"], 0.0)
    assert (table["oracle-reranked Recall@1"] <= table["retriever Recall@K"] + 1e-12).all()


def test_oracle_with_k_candidates_equals_the_retrievers_own_recall(split, model):
    table = evaluation.oracle_rerank_recall(model, split, candidate_sizes=[2], k=2)
    assert table.loc[2, "oracle-reranked Recall@2"] == pytest.approx(table.loc[2, "retriever Recall@2"])


def test_oracle_rejects_empty_candidate_sets(split, model):
    with pytest.raises(ValueError):
        evaluation.oracle_rerank_recall(model, split, candidate_sizes=[0])
