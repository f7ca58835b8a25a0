"""Random, popularity and EASE baselines; an end-to-end check on MovieLens 100K when it is present."""

import os
import pathlib

import numpy as np
import pandas as pd
import pytest
import torch

from tt_helpers import evaluation, splits
from tt_helpers.baselines import EASE, NotFittedError, PopularRecommender, RandomRecommender
from tt_helpers.catalog import Catalog


def ratings_frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


@pytest.fixture
def train():
    """All ratings in train (a split with test_fraction=0). Items 1..5, plus item 6 only in the catalogue."""
    rows = [
        (1, 1, 5.0, 1), (1, 2, 4.0, 2), (1, 3, 1.0, 3),
        (2, 2, 5.0, 1), (2, 3, 4.0, 2), (2, 4, 5.0, 3),
        (3, 1, 4.0, 1), (3, 2, 2.0, 2), (3, 4, 4.0, 3), (3, 5, 5.0, 4),
        (4, 3, 3.0, 1), (4, 5, 4.0, 2),
    ]  # fmt: skip
    ratings = ratings_frame(rows)
    catalog = Catalog.from_frames(ratings, items=pd.DataFrame({"item_id": [1, 2, 3, 4, 5, 6]}))
    split = splits.temporal_user_split(ratings, catalog, test_fraction=0.0)
    assert len(split.test.frame) == 0 and len(split.train.frame) == len(rows)
    return split.train


# Positives (rating >= 4) of the fixture, users x items 1..6
X = np.array(
    [
        [1, 1, 0, 0, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [1, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1, 0],
    ],
    dtype=np.float64,
)


def test_fixture_matrix(train):
    assert np.array_equal(train.matrix().numpy(), X)


# --- EASE --------------------------------------------------------------------------------------


def ease_closed_form(x, l2):
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]  # B_ij = I_ij - P_ij / P_jj
    np.fill_diagonal(b, 0.0)
    return b


@pytest.mark.parametrize("l2", [0.5, 3.0, 500.0])
def test_ease_matches_closed_form(train, l2):
    model = EASE(l2=l2).fit(train)
    b = ease_closed_form(X, l2)
    assert np.allclose(np.diag(b), 0.0)  # the formula itself gives a zero diagonal
    assert np.allclose(model.weights.numpy(), b, atol=1e-6, rtol=1e-5)
    assert np.all(model.weights.diagonal().numpy() == 0.0)
    scores = model.score(torch.tensor([0, 1, 2, 3]))
    assert scores.shape == (4, 6)
    assert np.allclose(scores.numpy(), X @ b, atol=1e-6, rtol=1e-5)
    # rows come back in the order asked
    assert torch.allclose(model.score(torch.tensor([2, 0])), scores[[2, 0]])


def test_ease_weights_are_not_symmetric_division_by_row(train):
    # guard against dividing rows (P_ij / P_ii) instead of columns (P_ij / P_jj)
    model = EASE(l2=1.0).fit(train)
    p = np.linalg.inv(X.T @ X + np.eye(6))
    wrong = -p / np.diag(p)[:, None]
    np.fill_diagonal(wrong, 0.0)
    assert not np.allclose(model.weights.numpy(), wrong, atol=1e-4)


def test_ease_ignores_ratings_below_threshold(train):
    # user 1's one-star rating of item 3 must not connect items 1/2 with item 3
    model = EASE(l2=1.0).fit(train)
    assert torch.equal(model.history, torch.from_numpy(X).float())


def test_ease_cold_item_scores_zero(train):
    # item 6 has no training positive: no weight into or out of it
    model = EASE(l2=10.0).fit(train)
    assert torch.all(model.weights[:, 5] == 0) and torch.all(model.weights[5, :] == 0)
    assert torch.all(model.score(torch.arange(4))[:, 5] == 0)


@pytest.mark.parametrize("l2", [0.0, -1.0])
def test_ease_rejects_non_positive_l2(l2):
    with pytest.raises(ValueError, match="positive l2"):
        EASE(l2=l2)


# --- popular and random ------------------------------------------------------------------------


def test_popular_counts_positives_only(train):
    model = PopularRecommender().fit(train)
    # positives per item 1..6: item 2 has three ratings but one is 2 stars; item 3's 1- and 3-star don't count
    expected = [2.0, 2.0, 1.0, 2.0, 2.0, 0.0]
    assert X.sum(0).tolist() == expected
    scores = model.score(torch.tensor([0, 3, 1]))
    assert scores.shape == (3, 6)
    for row in scores:
        assert row.tolist() == expected
    # the returned tensor is the caller's to modify
    scores[0, 0] = 99.0
    assert model.score(torch.tensor([0]))[0, 0].item() == 2.0


def test_random_is_deterministic_per_seed_and_user(train):
    a = RandomRecommender(seed=0).fit(train)
    b = RandomRecommender(seed=0).fit(train)
    c = RandomRecommender(seed=1).fit(train)
    s = a.score(torch.tensor([0, 1, 2]))
    assert s.shape == (3, 6)
    assert torch.equal(s, b.score(torch.tensor([0, 1, 2])))
    # a user's row does not depend on which other users are in the batch, nor on the order
    assert torch.equal(a.score(torch.tensor([2, 0]))[0], s[2])
    assert torch.equal(a.score(torch.tensor([1]))[0], s[1])
    # different users, different seeds: different rows
    assert not torch.equal(s[0], s[1])
    assert not torch.equal(s, c.score(torch.tensor([0, 1, 2])))
    assert bool(((s >= 0) & (s < 1)).all())


@pytest.mark.parametrize(
    "model", [RandomRecommender(), PopularRecommender(), EASE()], ids=["random", "popular", "ease"]
)
def test_score_before_fit_raises(model):
    with pytest.raises(NotFittedError, match=r"not fitted: call \.fit"):
        model.score(torch.tensor([0]))


def test_fit_returns_self(train):
    for model in (RandomRecommender(), PopularRecommender(), EASE()):
        assert model.fit(train) is model


# --- end to end on MovieLens 100K ---------------------------------------------------------------


def _movielens_path():
    env = os.environ.get("TT_HELPERS_DATA")
    candidates = []
    if env:
        candidates += [pathlib.Path(env) / "ml-100k" / "u.data", pathlib.Path(env) / "u.data", pathlib.Path(env)]
    candidates.append(pathlib.Path(__file__).resolve().parents[1].parent / "shared/data/movielens/ml-100k/u.data")
    for path in candidates:
        if path.is_file():
            return path
    return None


@pytest.fixture(scope="module")
def movielens_split():
    path = _movielens_path()
    if path is None:
        pytest.skip("MovieLens 100K u.data not found (set TT_HELPERS_DATA or put it in ../shared/data/movielens)")
    ratings = pd.read_csv(path, sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    assert len(ratings) == 100_000
    return splits.temporal_user_split(ratings)


def test_movielens_default_split_sizes(movielens_split):
    assert len(movielens_split.train.frame) == 80_367
    assert len(movielens_split.test.frame) == 19_633
    assert movielens_split.catalog.n_users == 943 and movielens_split.catalog.n_items == 1682


def test_movielens_baselines_rank_as_expected(movielens_split):
    split = movielens_split
    res = {
        name: evaluation.evaluate(model.fit(split.train), split)
        for name, model in [("random", RandomRecommender(0)), ("popular", PopularRecommender()), ("ease", EASE(500.0))]
    }
    random, popular, ease = res["random"], res["popular"], res["ease"]
    # measured: random 0.004 / 0.064, popular 0.069 / 0.357, EASE 0.146 / 0.562 (Recall@10 / Recall@100)
    assert random["Recall@100"] == pytest.approx(0.064, abs=0.03)
    assert popular["Recall@10"] > random["Recall@10"] + 0.04
    assert popular["Recall@100"] > random["Recall@100"] + 0.2
    assert ease["Recall@10"] > popular["Recall@10"] + 0.05
    assert ease["Recall@50"] > popular["Recall@50"] + 0.1
    assert ease["Recall@100"] > popular["Recall@100"] + 0.1
    assert ease["NDCG@10"] > popular["NDCG@10"] + 0.05
    # popularity recommends the same short list to everybody; EASE personalises
    assert popular["Coverage@10"] < ease["Coverage@10"]


def test_ease_weights_fast_single_precision_agree_with_the_exact_ones():
    import torch

    from tt_helpers.baselines import ease_item_weights

    x = (torch.rand(200, 40, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    exact, fast = ease_item_weights(x, 10.0), ease_item_weights(x, 10.0, fast=True)
    assert torch.count_nonzero(exact.diagonal()) == 0 and torch.count_nonzero(fast.diagonal()) == 0
    assert torch.allclose(exact, fast, atol=1e-4)
