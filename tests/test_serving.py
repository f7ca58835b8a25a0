"""The serving path: a recommender's user tower in front of an item index, the seen-item filter, the fingerprint
check, and the fresh serving process."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

import tt_helpers as tt
from tt_helpers import serving
from tt_helpers.index import AnnoyIndex, ExactIndex, ModelMismatchError

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

N_USERS, N_ITEMS, PER_USER = 24, 40, 10
NEWCOMER, STRANGER = "u-new", "stranger"  # in user_features only; nowhere


def interaction_log(seed=0):
    """Two taste groups (parity of the ids), PER_USER ratings per user, string ids."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(N_USERS):
        liked = [i for i in range(N_ITEMS) if i % 2 == u % 2]
        for t, i in enumerate(rng.choice(liked, PER_USER, replace=False)):
            rows.append((f"u{u}", f"i{i}", float(rng.integers(1, 6)), 1000 + 10 * t))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def user_table():
    users = [f"u{u}" for u in range(N_USERS)] + [NEWCOMER]
    return pd.DataFrame({"user_id": users, "group": [("odd" if u % 2 else "even") for u in range(N_USERS)] + ["odd"]})


@pytest.fixture(scope="module")
def fitted():
    return tt.fit_two_tower(interaction_log(), user_table(), embedding_dim=8, max_epochs=2,
                            early_stopping_metric="Recall@10", verbose=False)


@pytest.fixture(scope="module")
def exact(fitted):
    return ExactIndex().build(fitted.item_vectors(), ids=fitted.catalog.item_ids,
                              model_fingerprint=fitted.fingerprint())


USERS = ["u0", "u3", "u7", NEWCOMER, STRANGER]


def test_vectors_give_the_scores_recommend_ranks_by(fitted):
    users = ["u0", "u3", NEWCOMER]
    scores = fitted.user_vectors(users) @ fitted.item_vectors().T * fitted.score_scale
    expected = fitted.recommender.score(torch.as_tensor(fitted.catalog.user_index(users))).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    assert fitted.item_vectors().shape == (fitted.catalog.n_items, 8)
    with pytest.raises(tt.UnknownIdError):
        fitted.user_vectors([STRANGER])


@pytest.mark.parametrize("k", [7, N_ITEMS])
def test_exact_search_serves_what_recommend_returns(fitted, exact, k):
    served = serving.Retriever(fitted, exact).recommend(USERS, k=k)
    expected = fitted.recommend(USERS, k=k)
    pd.testing.assert_frame_equal(served.drop(columns="score"), expected.drop(columns="score"))
    np.testing.assert_allclose(served["score"], expected["score"], rtol=1e-5, atol=1e-5)
    assert served.groupby("user_id", sort=False)["source"].first().tolist() == ["model"] * 3 + ["features", "popular"]
    unfiltered = serving.Retriever(fitted, exact).recommend(USERS, k=k, exclude_seen=False)
    pd.testing.assert_frame_equal(unfiltered.drop(columns="score"),
                                  fitted.recommend(USERS, k=k, exclude_seen=False).drop(columns="score"))


def test_over_fetch_filtering_never_returns_seen_items(fitted):
    index = AnnoyIndex().build(fitted.item_vectors(), ids=fitted.catalog.item_ids, n_trees=3,
                               model_fingerprint=fitted.fingerprint())
    log = interaction_log()
    seen = log.groupby("user_id")["item_id"].apply(set)
    users = [f"u{u}" for u in range(N_USERS)]
    retriever = serving.Retriever(fitted, index)
    short = {}
    for over_fetch in (0, 3, "seen"):
        recs = retriever.recommend(users, k=10, over_fetch=over_fetch)
        for user, block in recs.groupby("user_id"):
            assert not set(block["item_id"]) & seen[user]
            assert block["rank"].tolist() == list(range(1, len(block) + 1))
        short[over_fetch] = 10 * len(users) - len(recs)
    assert short["seen"] == 0 < short[3] < short[0]  # too little over-fetch leaves lists short
    lists = retriever.item_lists(users, 10, over_fetch=0)
    assert lists.shape == (N_USERS, 10) and (lists == -1).sum() == short[0]
    assert not any(set(fitted.catalog.item_ids[row[row >= 0]]) & seen[u] for u, row in zip(users, lists))


def test_an_index_of_another_model_is_refused_with_a_clear_error(fitted, exact, tmp_path):
    other = copy.deepcopy(fitted)
    with torch.no_grad():
        next(other.recommender.model.item_tower.parameters()).add_(0.01)
    assert other.fingerprint() != fitted.fingerprint()
    foreign = ExactIndex().build(other.item_vectors(), ids=other.catalog.item_ids,
                                 model_fingerprint=other.fingerprint())
    with pytest.raises(ModelMismatchError, match="another model's item vectors.*rec.fingerprint"):
        serving.Retriever(fitted, foreign)
    with pytest.raises(ModelMismatchError, match="no fingerprint"):
        serving.Retriever(fitted, ExactIndex().build(fitted.item_vectors(), ids=fitted.catalog.item_ids))
    fitted.save(tmp_path / "rec")
    foreign.save(tmp_path / "foreign")
    with pytest.raises(ModelMismatchError, match="another model's vectors"):
        serving.Retriever.load(tmp_path / "rec", tmp_path / "foreign")
    assert tt.load_recommender(tmp_path / "rec").fingerprint() == fitted.fingerprint()  # stable across save/load


def test_retriever_input_errors(fitted, exact):
    with pytest.raises(ValueError, match="over_fetch must be 'seen'"):
        serving.Retriever(fitted, exact, over_fetch=-1)
    narrow = ExactIndex().build(fitted.item_vectors()[:, :4], ids=fitted.catalog.item_ids,
                                model_fingerprint=fitted.fingerprint())
    with pytest.raises(ValueError, match="dimension 4"):
        serving.Retriever(fitted, narrow)
    strangers = ExactIndex().build(fitted.item_vectors(), ids=[f"x{i}" for i in range(fitted.catalog.n_items)],
                                   model_fingerprint=fitted.fingerprint())
    with pytest.raises(ValueError, match="item ids the recommender does not know"):
        serving.Retriever(fitted, strangers)


def test_the_fresh_process_serves_the_same_lists(fitted, tmp_path):
    index = AnnoyIndex().build(fitted.item_vectors(), ids=fitted.catalog.item_ids, n_trees=3,
                               model_fingerprint=fitted.fingerprint())
    fitted.save(tmp_path / "rec")
    index.save(tmp_path / "index")
    users = [f"u{u}" for u in range(N_USERS)] + [NEWCOMER, STRANGER]
    latency = serving.measure_latency(tmp_path / "rec", tmp_path / "index", users, k=5, warmup=3, keep_lists=4,
                                      timeout=60)
    assert latency.seconds.shape == (len(users),) and (latency.seconds > 0).all()
    assert 0 < latency.p50_ms <= latency.p99_ms and latency.startup_seconds > 0
    in_process = serving.Retriever(fitted, index).recommend(users[:4], k=5)
    assert latency.lists == [block["item_id"].tolist() for _, block in in_process.groupby("user_id", sort=False)]
    assert list(latency.summary().index)[:2] == ["requests", "startup (s)"]
    with pytest.raises(RuntimeError, match="serving process failed"):
        serving.measure_latency(tmp_path / "rec", tmp_path / "missing", users[:2], timeout=60)
