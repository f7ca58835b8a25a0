"""The recipe: fit/score like any recommender, early stopping then refit, and cold items through OOV."""

import os
import pathlib
import time

import numpy as np
import pandas as pd
import pytest
import torch

from tt_helpers import evaluation, splits
from tt_helpers.baselines import PopularRecommender
from tt_helpers.catalog import Catalog
from tt_helpers.experiments import FitResult, fit_on_split
from tt_helpers.recipe import TwoTowerRecommender
from tt_helpers.towers import TowerConfig
from tt_helpers.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


N_USERS, N_RATED = 20, 24
COLD = [2000, 2001, 2002]  # in the items table only; 2000 and 2001 have identical features
TEST_ONLY = 1023  # rated once, as one user's very last rating: in the test part only, so cold for the model
GENRES = ["Action", "Comedy", "Drama", "Horror"]


def synthetic_ratings(seed=0, per_user=10):
    """Two taste groups (parity of user and item); ties in time; item 1023 only ever rated last by user 100."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(N_USERS):
        for k, i in enumerate(rng.choice(N_RATED - 1, per_user, replace=False)):
            rating = 5.0 if i % 2 == u % 2 else float(rng.integers(1, 4))
            rows.append((100 + u, 1000 + int(i), rating, 50 + k // 2))
    rows.append((100, TEST_ONLY, 5.0, 1000))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def side_tables():
    users = pd.DataFrame(
        {
            "user_id": 100 + np.arange(N_USERS),
            "age": np.arange(N_USERS) * 3 + 15,
            "gender": ["F", "M"] * (N_USERS // 2),
            "occupation": ["student", "writer", "other", "artist"] * (N_USERS // 4),
            "zip_code": [f"{10000 + 7 * u}" for u in range(N_USERS)],
        }
    )
    ids = list(range(1000, 1000 + N_RATED)) + COLD
    items = pd.DataFrame(
        {
            "item_id": ids,
            "title": [f"Movie number {i}" for i in range(N_RATED)] + ["Same Title", "Same Title", "Other Story"],
            "year": [1970 + i for i in range(N_RATED)] + [1995, 1995, 1960],
            "genres": [[GENRES[i % 4], GENRES[(i // 4) % 4]] for i in range(N_RATED)]
            + [["Drama"], ["Drama"], ["Horror", "Comedy"]],
        }
    )
    return users, items


def synthetic_split():
    ratings = synthetic_ratings()
    users, items = side_tables()
    return splits.temporal_user_split(ratings, Catalog.from_frames(ratings, users, items))


def quiet(**kwargs):
    return TrainConfig(**{"progress": False, "batch_size": 16, "max_epochs": 2, **kwargs})


FEATURES = TowerConfig(
    user_features=("user_id", "age", "gender", "occupation", "zip_code"),
    item_features=("item_id", "genres", "year", "title"),
    embedding_dim=8,
    feature_dim=4,
    hidden_layers=(8,),
)


def test_split_has_the_intended_cold_items():
    split = synthetic_split()
    counts = split.train.item_counts(positives_only=False)
    cold = split.catalog.item_index(COLD + [TEST_ONLY])
    assert (counts[cold] == 0).all()
    assert split.test.frame.item_id.eq(TEST_ONLY).any()


def test_score_before_fit_raises_a_clear_error():
    with pytest.raises(RuntimeError, match=r"not fitted.*fit"):
        TwoTowerRecommender().score(torch.tensor([0]))


@pytest.mark.parametrize(
    "tower", [TowerConfig(embedding_dim=8), FEATURES, TowerConfig(embedding_dim=8, use_history=True)]
)
def test_score_shape_and_evaluation(tower):
    split = synthetic_split()
    users, items = side_tables()
    rec = TwoTowerRecommender(tower, quiet(), users, items).fit(split.train)
    assert len(rec.history_) == 2
    scores = rec.score(torch.tensor([0, 5, 19]))
    assert scores.shape == (3, split.catalog.n_items)
    assert torch.isfinite(scores).all()
    result = evaluation.evaluate(rec, split, ks=(5, 10))
    assert 0.0 <= result["Recall@10"] <= 1.0
    with pytest.raises(RuntimeError, match="validation"):
        _ = rec.best_epoch  # fitted without a validation split


def test_fit_on_split_refits_for_the_best_epoch():
    split = synthetic_split()
    training = quiet(max_epochs=8, patience=2, learning_rate=0.02, early_stopping_metric="NDCG@5")
    fit = fit_on_split(split, TowerConfig(embedding_dim=8, temperature=0.1), training)
    assert isinstance(fit, FitResult)
    metric = fit.history["val_NDCG@5"]
    assert fit.best_epoch == int(metric.idxmax())
    assert fit.best_epoch == int(metric.index[int(np.argmax(metric.to_numpy()))])
    assert len(fit.history) <= training.max_epochs
    assert 1 < fit.best_epoch < len(fit.history)  # with this seed: a peak at epoch 3, then early stopping
    # the final model is trained on the whole training split for exactly best_epoch epochs
    assert len(fit.recommender.history_) == fit.best_epoch
    assert "val_NDCG@5" not in fit.recommender.history_
    assert fit.recommender.score(torch.tensor([0])).shape == (1, split.catalog.n_items)


def test_fit_on_split_never_looks_at_test(monkeypatch):
    split = synthetic_split()
    seen_frames = []
    original = TwoTowerRecommender.fit

    def spy(self, train, validation=None, epochs=None):
        seen_frames.append(train.frame)
        if validation is not None:
            seen_frames.append(validation.test.frame)
        return original(self, train, validation, epochs)

    monkeypatch.setattr(TwoTowerRecommender, "fit", spy)
    fit_on_split(split, TowerConfig(embedding_dim=8), quiet(max_epochs=2, early_stopping_metric="NDCG@5"))
    assert len(seen_frames) == 3  # validation run (train + validation target), then the refit
    test_keys = set(zip(split.test.frame.user_id, split.test.frame.item_id))
    for frame in seen_frames:
        assert not test_keys & set(zip(frame.user_id, frame.item_id))


def cold_and_warm(split):
    cold = split.catalog.item_index(COLD + [TEST_ONLY])
    warm = np.flatnonzero(split.train.item_counts(positives_only=False) > 0)
    return cold, warm


def test_cold_items_share_the_oov_row_in_an_id_only_model():
    split = synthetic_split()
    rec = TwoTowerRecommender(TowerConfig(embedding_dim=8), quiet()).fit(split.train)
    cold, warm = cold_and_warm(split)
    ids = rec.model.item_tower.table.columns["item_id"].ids
    assert (ids[cold] == 0).all() and (ids[warm] > 0).all()
    emb = rec.model.embed_items()
    oov = torch.nn.functional.normalize(rec.model.item_tower.embeddings["item_id"].weight[0], dim=0)
    for i in cold:
        assert torch.equal(emb[i], emb[cold[0]])
        assert torch.allclose(emb[i], oov, atol=1e-6)
    assert not any(torch.allclose(emb[w], emb[cold[0]]) for w in warm)
    # so every user scores all cold items the same
    scores = rec.score(torch.arange(4))
    assert (scores[:, cold] == scores[:, cold[:1]]).all()


def test_cold_items_with_the_same_features_get_the_same_embedding():
    split = synthetic_split()
    users, items = side_tables()
    rec = TwoTowerRecommender(FEATURES, quiet(), users, items).fit(split.train)
    a, b, other = split.catalog.item_index(COLD)
    emb = rec.model.embed_items()
    assert torch.equal(emb[a], emb[b])  # both OOV id + identical genres, year, title
    assert not torch.allclose(emb[a], emb[other], atol=1e-4)  # OOV id, different features
    # a warm item's own id embedding keeps it apart from a cold item with the same side features
    with_features_of_a = items.assign(genres=[["Drama"]] * len(items), year=1995, title="Same Title")
    rec2 = TwoTowerRecommender(FEATURES, quiet(), users, with_features_of_a).fit(split.train)
    emb2 = rec2.model.embed_items()
    warm = np.flatnonzero(split.train.item_counts(positives_only=False) > 0)
    assert torch.equal(emb2[a], emb2[b])
    assert not torch.allclose(emb2[warm[0]], emb2[a], atol=1e-4)


# --------------------------------------------------------------------------- MovieLens 100K (optional)


def _movielens_dir():
    env = os.environ.get("TT_HELPERS_DATA")
    candidates = [pathlib.Path(env)] if env else []
    candidates.append(pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens")
    for root in candidates:
        if (root / "ml-100k" / "u.data").is_file():
            return root
    return None


def test_movielens_id_only_two_tower_beats_popularity():
    root = _movielens_dir()
    if root is None:
        pytest.skip("MovieLens 100K not found (set TT_HELPERS_DATA or put it in ../shared/data/movielens)")
    from tt_helpers.datasets import load_movielens

    started = time.perf_counter()
    ml = load_movielens("ml-100k", data_dir=root, download=False)
    split = splits.temporal_user_split(ml.ratings)
    popular = evaluation.evaluate(PopularRecommender().fit(split.train), split, ks=(100,))
    # one epoch is enough (measured Recall@100: popular 0.357, two-tower 0.419; seeds 1-3: 0.409-0.413)
    training = TrainConfig(progress=False, batch_size=256, learning_rate=0.05, seed=0)
    rec = TwoTowerRecommender(TowerConfig(embedding_dim=32, temperature=0.1), training).fit(split.train, epochs=1)
    two_tower = evaluation.evaluate(rec, split, ks=(100,))
    print(f"Recall@100 popular {popular['Recall@100']:.4f} two-tower {two_tower['Recall@100']:.4f} "
          f"({time.perf_counter() - started:.1f} s)")
    assert two_tower["Recall@100"] > popular["Recall@100"] + 0.02
