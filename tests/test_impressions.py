"""Simulated impressions (no leakage of the future, exact engagement labels, seeded) and the samplers built on them."""

import numpy as np
import pandas as pd
import pytest
import torch

from tt_helpers import impressions, splits
from tt_helpers.catalog import Catalog
from tt_helpers.experiments import fit_on_split as fit_two_tower
from tt_helpers.recipe import TwoTowerRecommender
from tt_helpers.sampling import (
    Batch,
    InBatchSampler,
    Negatives,
    NegativeSampler,
    PositiveSet,
    ScheduledSampler,
    WithPerExampleNegatives,
)
from tt_helpers.splits import Interactions
from tt_helpers.towers import TowerConfig
from tt_helpers.training import TrainConfig, batch_loss, training_data

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def interactions(rows, n_users=None, n_items=None) -> Interactions:
    """Interactions over catalogue ids 0..n-1 from (user, item, rating, timestamp) rows."""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    n_users = n_users or int(frame["user_id"].max()) + 1
    n_items = n_items or int(frame["item_id"].max()) + 1
    catalog = Catalog(np.arange(n_users), np.arange(n_items))
    frame = (
        catalog.add_indices(frame)
        .sort_values(["user_idx", "timestamp", "item_idx"], kind="stable")
        .reset_index(drop=True)
    )
    return Interactions(frame, catalog)


def session_ratings(seed=0, n_users=30, n_items=40):
    """Users rate in sessions: bursts of ratings seconds apart, sessions days apart; popular items are rated more."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(5, 25))
        items = rng.choice(n_items, size=n, replace=False, p=weights / weights.sum())
        t = int(rng.integers(0, 10 * 86400))
        for i in items:
            t += int(rng.choice([0, 5, 40, 3 * 86400], p=[0.3, 0.4, 0.2, 0.1]))  # ties, seconds, a new session
            rows.append((u, int(i), float(rng.integers(1, 6)), t))
    return rows


@pytest.fixture(scope="module")
def train():
    return interactions(session_ratings())


def rating_time(train):
    frame = train.frame
    return {(u, i): t for u, i, t in zip(frame["user_idx"], frame["item_idx"], frame["timestamp"])}


# --------------------------------------------------------------------------- the simulation


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_impressions_are_labelled_exactly_by_the_window(train, temperature):
    window = 60
    log = impressions.simulate_impressions(
        train, slate_size=6, window_seconds=window, temperature=temperature, seed=3, keep_engaged=True
    )
    rated = rating_time(train)
    assert len(log) > 0 and log["engaged"].any() and (~log["engaged"]).any()
    for u, i, t, engaged in zip(log["user_idx"], log["item_idx"], log["timestamp"], log["engaged"]):
        when = rated.get((u, i))
        assert when is None or when >= t, "an item the user rated before the visit was shown"
        assert engaged == (when is not None and when <= t + window)
    # each visit shows distinct items at positions 0..k-1
    for _, slate in log.groupby(["user_idx", "timestamp"]):
        assert slate["item_idx"].is_unique
        assert sorted(slate["position"]) == list(range(len(slate)))
    # the default output is exactly the impressions without engagement
    negatives = impressions.simulate_impressions(
        train, slate_size=6, window_seconds=window, temperature=temperature, seed=3
    )
    expected = log.loc[~log["engaged"], impressions.IMPRESSION_COLUMNS].reset_index(drop=True)
    pd.testing.assert_frame_equal(negatives, expected)
    for u, i, t in zip(negatives["user_idx"], negatives["item_idx"], negatives["timestamp"]):
        when = rated.get((u, i))
        assert when is None or when > t + window


def test_a_visit_without_a_slate_has_nothing_to_show(train):
    log = impressions.simulate_impressions(train, slate_size=5, temperature=1.0, keep_engaged=True)
    shown = set(map(tuple, log[["user_idx", "timestamp"]].drop_duplicates().to_numpy()))
    frame = train.frame
    empty = 0
    for u, t in train.frame[["user_idx", "timestamp"]].drop_duplicates().to_numpy():
        if (u, t) in shown:
            continue
        empty += 1
        rated_by_someone = set(frame.loc[frame["timestamp"] < t, "item_idx"])
        rated_by_user = set(frame.loc[(frame["user_idx"] == u) & (frame["timestamp"] < t), "item_idx"])
        assert rated_by_someone <= rated_by_user, "a visit got no slate although some item could be shown"
    assert empty < len(shown)


def test_popularity_policy_uses_only_the_past():
    # item 1 is rated twice early; item 0 ten times, but only after the visit of user 2 at t=100
    rows = [(0, 1, 5.0, 10), (1, 1, 4.0, 11), (2, 5, 4.0, 100)] + [(3 + k, 0, 5.0, 1000 + k) for k in range(10)]
    train = interactions(rows, n_users=13, n_items=6)
    log = impressions.simulate_impressions(train, slate_size=1, temperature=0.0, keep_engaged=True)
    at_100 = log[(log["user_idx"] == 2) & (log["timestamp"] == 100)]
    assert at_100["item_idx"].tolist() == [1]  # with future popularity, item 0 would have been shown
    # the same visit served by a policy that knows the whole log shows item 0: the test above would catch a leak
    totals = np.log(np.bincount(train.frame["item_idx"], minlength=6).astype(float) + 1e-9)
    leaky = impressions.simulate_impressions(
        train, policy=lambda users, times: np.tile(totals, (len(users), 1)), slate_size=1, temperature=0.0
    )
    assert leaky.loc[(leaky["user_idx"] == 2) & (leaky["timestamp"] == 100), "item_idx"].tolist() == [0]


def test_past_popularity_counts_ratings_strictly_before(train):
    policy = impressions.PastPopularity(train)
    times = np.array(
        [train.frame["timestamp"].min(), int(train.frame["timestamp"].median()), train.frame["timestamp"].max() + 1]
    )
    counts = policy.counts(times)
    frame = train.frame
    for row, t in enumerate(times):
        expected = np.bincount(frame.loc[frame["timestamp"] < t, "item_idx"], minlength=train.n_items)
        np.testing.assert_array_equal(counts[row], expected)
    scores = policy(np.zeros(3, dtype=int), times)
    assert np.isneginf(scores[0]).all()  # before the first rating nothing can be shown


def test_temperature_zero_shows_the_top_unrated_items():
    rows = [
        (0, 0, 5.0, 1),
        (1, 0, 5.0, 2),
        (2, 0, 5.0, 3),
        (1, 1, 5.0, 4),
        (2, 1, 5.0, 5),
        (2, 2, 5.0, 6),
        (0, 3, 5.0, 50),
    ]
    train = interactions(rows, n_users=3, n_items=4)
    log = impressions.simulate_impressions(train, slate_size=2, temperature=0.0, keep_engaged=True)
    # user 0 at t=50 has rated item 0: the top unrated by past counts are item 1 (2 ratings), item 2 (1)
    visit = log[(log["user_idx"] == 0) & (log["timestamp"] == 50)].sort_values("position")
    assert visit["item_idx"].tolist() == [1, 2]


def test_simulation_is_seeded(train):
    a = impressions.simulate_impressions(train, temperature=1.0, seed=7)
    b = impressions.simulate_impressions(train, temperature=1.0, seed=7)
    c = impressions.simulate_impressions(train, temperature=1.0, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    # chunking does not change the draws' validity, and temperature 0 does not depend on the seed
    pd.testing.assert_frame_equal(
        impressions.simulate_impressions(train, temperature=0.0, seed=1),
        impressions.simulate_impressions(train, temperature=0.0, seed=2),
    )


def test_visit_subsampling(train):
    all_visits = impressions.visit_events(train)
    some = impressions.visit_events(train, max_events_per_user=2, seed=0)
    assert some.groupby("user_idx").size().max() <= 2
    assert set(map(tuple, some.to_numpy())) <= set(map(tuple, all_visits.to_numpy()))
    pd.testing.assert_frame_equal(some, impressions.visit_events(train, max_events_per_user=2, seed=0))


def test_bad_arguments(train):
    with pytest.raises(ValueError, match="slate_size"):
        impressions.simulate_impressions(train, slate_size=0)
    with pytest.raises(ValueError, match="unknown policy"):
        impressions.simulate_impressions(train, policy="random")
    with pytest.raises(ValueError, match="shape"):
        impressions.simulate_impressions(train, policy=lambda users, times: np.zeros((len(users), 2)))


# --------------------------------------------------------------------------- samplers


def pool_frame():
    # user 0: items 3, 4, 5 (4 twice); user 1: item 7; user 2: none; user 3: item 2, which is one of its positives
    return pd.DataFrame({"user_idx": [0, 0, 0, 0, 1, 3], "item_idx": [3, 4, 4, 5, 7, 2], "timestamp": 0, "position": 0})


def batch(users):
    users = torch.as_tensor(users)
    return Batch(users, torch.zeros_like(users), torch.ones(len(users)))


def test_impression_sampler_draws_only_from_the_users_pool():
    positives = PositiveSet(np.array([3]), np.array([2]), n_items=20, n_users=5)
    sampler = impressions.ImpressionNegativeSampler(
        pool_frame(), n_items=20, n_users=5, num_negatives=50, positives=positives
    )
    assert sampler.pool_of(0).tolist() == [3, 4, 5] and sampler.pool_of(1).tolist() == [7]
    assert sampler.pool_of(3).tolist() == []  # its only impression negative is a training positive
    assert sampler.fallback_users == 3  # users 2, 3, 4
    neg = sampler.sample(batch([0, 1, 0, 2, 3, 4]), torch.Generator().manual_seed(0))
    assert neg.ids.shape == (6, 50) and neg.log_q.shape == (6, 50)
    assert (neg.log_q == 0).all() and (sampler.log_q_of(torch.arange(4), 4) == 0).all()
    # uniform over distinct items
    assert set(neg.ids[0].tolist()) == {3, 4, 5} and set(neg.ids[2].tolist()) == {3, 4, 5}
    assert set(neg.ids[1].tolist()) == {7}
    for row in (3, 4, 5):  # fallback: uniform over the whole catalogue
        assert len(set(neg.ids[row].tolist())) > 10
    again = sampler.sample(batch([0, 1, 0, 2, 3, 4]), torch.Generator().manual_seed(0))
    assert torch.equal(neg.ids, again.ids)


def test_impression_sampler_is_uniform_over_a_pool():
    sampler = impressions.ImpressionNegativeSampler(pool_frame(), n_items=20, n_users=5, num_negatives=3000)
    ids = sampler.sample(batch([0]), torch.Generator().manual_seed(1)).ids[0]
    counts = torch.bincount(ids, minlength=20)[[3, 4, 5]].double()
    assert ((counts - 1000).abs() < 150).all(), counts  # item 4 was shown twice but is one item of the pool


def test_users_beyond_the_log_fall_back_to_uniform():
    sampler = impressions.ImpressionNegativeSampler(pool_frame(), n_items=20, n_users=2, num_negatives=40)
    ids = sampler.sample(batch([1, 9]), torch.Generator().manual_seed(0)).ids
    assert set(ids[0].tolist()) == {7} and len(set(ids[1].tolist())) > 10


def training_setup():
    train = interactions(session_ratings(seed=1))
    data = training_data(train, None, "liked")
    log = impressions.simulate_impressions(train, temperature=1.0, seed=0)
    data.extras["impressions"] = log
    return train, data, log


def test_random_and_impressions_factory():
    train, data, log = training_setup()
    sampler = impressions.random_and_impressions(num_negatives=20, share=0.25)(data)
    assert isinstance(sampler, WithPerExampleNegatives)
    users = torch.as_tensor(data.examples["user_idx"].to_numpy(copy=True)[:8])
    b = Batch(users, torch.as_tensor(data.examples["item_idx"].to_numpy(copy=True)[:8]), torch.ones(8))
    neg = sampler.sample(b, torch.Generator().manual_seed(0))
    assert neg.extra is not None and neg.extra.extra is None
    assert neg.ids.shape == (15,) and neg.extra.ids.shape == (8, 5) and neg.extra.log_q.shape == (8, 5)
    # each impression negative weighs like one uniform candidate: the uniform log q, a constant
    assert torch.allclose(neg.extra.log_q, torch.full((8, 5), float(np.log(15 / train.n_items))))
    assert torch.allclose(sampler.log_q_of(b.item_idx, 8), torch.full((8,), float(np.log(15 / train.n_items))))
    imp = sampler.extra
    for row, u in enumerate(users.tolist()):
        pool = set(imp.pool_of(u).tolist())
        if pool:
            assert set(neg.extra.ids[row].tolist()) <= pool
            assert not pool & set(data.examples.loc[data.examples["user_idx"] == u, "item_idx"])  # positives left out
    assert isinstance(
        impressions.random_and_impressions(num_negatives=8, share=1.0)(data), impressions.ImpressionNegativeSampler
    )
    with pytest.raises(ValueError, match="share"):
        impressions.random_and_impressions(share=0.0)


def test_staged_impressions_switch_after_the_random_epochs():
    _, data, _ = training_setup()
    sampler = impressions.staged_impressions(random_epochs=2, num_negatives=12, share=0.5)(data)
    assert isinstance(sampler, ScheduledSampler)
    b = batch(torch.as_tensor(data.examples["user_idx"].to_numpy(copy=True)[:4]))
    for epoch, combined in [(1, False), (2, False), (3, True), (5, True)]:
        sampler.start_epoch(epoch)
        neg = sampler.sample(b, torch.Generator().manual_seed(0))
        assert (neg.extra is not None) == combined
        assert (neg.ids.shape == (6,)) if combined else (neg.ids.shape == (12,))


def test_combined_negatives_give_the_loss_of_the_concatenated_candidates():
    split = splits.temporal_user_split(
        pd.DataFrame(session_ratings(seed=2), columns=["user_id", "item_id", "rating", "timestamp"])
    )
    recommender = TwoTowerRecommender(TowerConfig(embedding_dim=8), TrainConfig(progress=False))
    model, data = recommender.build(split.train)
    ex = data.examples.iloc[:12]
    b = Batch(
        torch.as_tensor(ex["user_idx"].to_numpy(copy=True)),
        torch.as_tensor(ex["item_idx"].to_numpy(copy=True)),
        torch.ones(12),
    )
    shared = torch.tensor([0, 1, 2, 5, 7])
    extra = torch.randint(split.catalog.n_items, (12, 4), generator=torch.Generator().manual_seed(0))
    shared_lq, extra_lq = torch.linspace(-2, 0, 5), torch.rand(12, 4, generator=torch.Generator().manual_seed(1))

    class Fixed(NegativeSampler):
        def __init__(self, negatives):
            self.negatives = negatives

        def sample(self, *args, **kwargs):
            return self.negatives

        def log_q_of(self, item_idx, batch_size):
            return torch.full(item_idx.shape, -1.0)

    combined = Fixed(Negatives(shared, shared_lq, extra=Negatives(extra, extra_lq)))
    flat = Fixed(
        Negatives(torch.cat([shared.expand(12, -1), extra], 1), torch.cat([shared_lq.expand(12, -1), extra_lq], 1))
    )
    for config in (TrainConfig(), TrainConfig(loss="bce"), TrainConfig(remove_accidental_hits=False)):
        a = batch_loss(model, b, combined, config, data, torch.Generator())
        c = batch_loss(model, b, flat, config, data, torch.Generator())
        assert torch.allclose(a, c, atol=1e-5), (config, a, c)


def test_in_batch_plus_per_example_keeps_the_batch_part():
    p = torch.full((10,), 0.1)
    extra = impressions.ImpressionNegativeSampler(pool_frame(), n_items=10, n_users=5, num_negatives=2)
    sampler = WithPerExampleNegatives(InBatchSampler(p), extra)
    b = Batch(torch.tensor([0, 1]), torch.tensor([4, 8]), torch.ones(2))
    neg = sampler.sample(b, torch.Generator().manual_seed(0))
    assert neg.n_from_batch == 2 and neg.ids.tolist() == [4, 8] and neg.extra.ids.shape == (2, 2)
    assert (neg.extra.log_q == 0).all()  # "sampler": the extra sampler's own log q
    with pytest.raises(ValueError, match="extra_log_q"):
        WithPerExampleNegatives(InBatchSampler(p), extra, extra_log_q="both")
    with pytest.raises(ValueError, match="shared"):
        WithPerExampleNegatives(extra, extra).sample(b, torch.Generator())


# --------------------------------------------------------------------------- one log per training set


def test_impression_log_serves_each_fit_its_own_simulation():
    ratings = pd.DataFrame(session_ratings(seed=3), columns=["user_id", "item_id", "rating", "timestamp"])
    split = splits.temporal_user_split(ratings)
    log = impressions.ImpressionLog.for_split(split, temperature=1.0, seed=0)
    validation = split.validation()
    for rule in ("liked", "any", "weighted"):
        assert log.for_training(training_data(split.train, None, rule)).equals(
            impressions.simulate_impressions(split.train, temperature=1.0, seed=0)
        )
        assert log.for_training(training_data(validation.train, None, rule)).equals(
            impressions.simulate_impressions(validation.train, temperature=1.0, seed=0)
        )
    # the validation fit never sees an impression decided by validation-period ratings
    cutoff = validation.train.frame.groupby("user_idx")["timestamp"].max()
    val_log = log.for_training(training_data(validation.train, None, "liked"))
    assert (val_log["timestamp"].to_numpy() <= cutoff.reindex(val_log["user_idx"]).to_numpy()).all()
    with pytest.raises(ValueError, match="no impressions were simulated"):
        log.for_training(training_data(split.validation().validation().train, None, "liked"))
    # the train part's whole log is kept: its impressions without engagement are the log served
    everything = impressions.simulate_impressions(split.train, temperature=1.0, seed=0, keep_engaged=True)
    assert log.train_with_engaged.equals(everything) and everything["engaged"].any()
    assert (
        log.train_with_engaged.loc[~everything["engaged"], impressions.IMPRESSION_COLUMNS]
        .reset_index(drop=True)
        .equals(log.train)
    )
    with pytest.raises(ValueError, match="train_with_engaged"):
        impressions.ImpressionLog.for_split(split, keep_engaged=True)
    data = training_data(split.train, None, "liked")
    with pytest.raises(KeyError, match="impressions"):
        impressions.impressions_of(data)
    data.extras["impressions"] = log.train
    assert impressions.impressions_of(data) is log.train  # a plain frame is used as given


def test_fit_two_tower_with_impression_negatives_end_to_end():
    ratings = pd.DataFrame(session_ratings(seed=4, n_users=40), columns=["user_id", "item_id", "rating", "timestamp"])
    split = splits.temporal_user_split(ratings)
    log = impressions.ImpressionLog.for_split(split, temperature=1.0, seed=0)
    for negatives in (
        impressions.impression_negatives(8),
        impressions.random_and_impressions(16, 0.25),
        impressions.staged_impressions(1, 16, 0.25),
    ):
        config = TrainConfig(negatives=negatives, batch_size=32, max_epochs=3, patience=3, progress=False)
        fit = fit_two_tower(split, TowerConfig(embedding_dim=8), config, extras={"impressions": log})
        assert 1 <= fit.best_epoch <= 3 and np.isfinite(fit.history["train_loss"]).all()


def test_score_separation():
    class Scores:
        def score(self, users):
            s = torch.zeros(len(users), 5)
            s[:, 2] = 1.0
            return s

    pairs = pd.DataFrame({"user_idx": [0, 1, 2, 3], "item_idx": [2, 2, 2, 2]})
    out = impressions.score_separation(Scores(), pairs, n_items=5, seed=0)
    assert out["mean score, true pairs"] == 1.0 and 0.5 <= out["AUC (true vs random pair)"] <= 1.0
