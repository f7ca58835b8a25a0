"""The semi-synthetic world: calibration, time order, a policy that sees only the past, determinism."""

import numpy as np
import pandas as pd
import pytest
import torch

from tt_helpers.catalog import Catalog
from tt_helpers.world import World, WorldConfig, calibrate_offset, simulate_world, true_preference_scores

N_USERS, N_ITEMS = 60, 120


@pytest.fixture(scope="module")
def ratings():
    rng = np.random.default_rng(0)
    taste = rng.normal(size=(N_USERS, 4)) @ rng.normal(size=(4, N_ITEMS))  # low-rank preferences
    rows = []
    for u in range(N_USERS):
        for i in np.argsort(-taste[u])[: rng.integers(10, 30)]:
            rows.append((f"u{u}", 500 + int(i), int(rng.integers(1, 6)), int(rng.integers(10**6))))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


@pytest.fixture(scope="module")
def catalog(ratings):
    return Catalog.from_frames(ratings)


def simulate(ratings, catalog, **overrides) -> World:
    config = WorldConfig(**{"periods": 5, "slate_size": 10, "engaged_share": 0.05, **overrides})
    return simulate_world(ratings, catalog, config)


def test_calibrated_offset_gives_the_target_mean_probability():
    logits = torch.randn(10_000) * 2 - 1
    for target in (0.01, 0.05, 0.5):
        offset = calibrate_offset(logits, target)
        assert float(torch.sigmoid(logits.double() + offset).mean()) == pytest.approx(target, abs=1e-6)
    with pytest.raises(ValueError, match="target"):
        calibrate_offset(logits, 1.0)


def test_a_uniform_slate_is_engaged_with_at_the_calibrated_share(ratings, catalog):
    world = simulate(ratings, catalog, periods=3, slate_size=35, exploration=1.0, engaged_share=0.08)
    share = world.log["engaged"].mean()
    n = len(world.log)
    assert share == pytest.approx(0.08, abs=4 * np.sqrt(0.08 * 0.92 / n))  # within 4 binomial sd
    assert float(world.probabilities.mean()) == pytest.approx(0.08, abs=1e-4)  # the calibration target


def test_truth_scores_are_standardised_and_follow_the_ratings(ratings, catalog):
    z = true_preference_scores(ratings, catalog)
    assert tuple(z.shape) == (catalog.n_users, catalog.n_items)
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-5)  # sanity check: standardised
    assert float(z.std()) == pytest.approx(1.0, abs=1e-4)
    rated = torch.zeros_like(z, dtype=torch.bool)
    rated[torch.as_tensor(catalog.user_index(ratings["user_id"])),
          torch.as_tensor(catalog.item_index(ratings["item_id"]))] = True
    assert float(z[rated].mean()) > float(z[~rated].mean()) + 1.0  # what users chose scores far higher


def test_the_same_seed_gives_the_same_world_and_another_seed_another(ratings, catalog):
    a, b = simulate(ratings, catalog), simulate(ratings, catalog)
    pd.testing.assert_frame_equal(a.log, b.log)
    c = simulate(ratings, catalog, seed=1)
    assert not a.log["item_idx"].equals(c.log["item_idx"])


def test_the_policy_sees_only_the_past(ratings, catalog):
    # rebuild each week's policy from the log's engagements of the earlier weeks only: the items the world
    # put in the policy slots must be exactly that policy's top items (users with engagements so far)
    from tt_helpers.world import _policy_scores

    world = simulate(ratings, catalog, periods=6, exploration=0.3)
    log, checked = world.log, 0
    for period in range(1, 6):
        before = log[(log["period"] < period) & log["engaged"]]
        engaged = torch.zeros(catalog.n_users, catalog.n_items, dtype=torch.bool)
        engaged[torch.as_tensor(before["user_idx"].to_numpy(copy=True)),
                torch.as_tensor(before["item_idx"].to_numpy(copy=True))] = True
        scores = _policy_scores(engaged, world.config.policy_l2).masked_fill(engaged, float("-inf"))
        shown = log[(log["period"] == period) & (log["source"] == "policy")]
        for user, items in shown.groupby("user_idx")["item_idx"]:
            if not engaged[user].any():
                continue  # a newcomer: served the most engaged items, checked below
            expected = set(torch.topk(scores[user], len(items)).indices.tolist())
            assert set(items) == expected, (period, user)
            checked += 1
    assert checked > 100
    # and simulating two more weeks leaves the first five untouched
    longer = simulate(ratings, catalog, periods=8, exploration=0.3)
    pd.testing.assert_frame_equal(world.log, longer.log[longer.log["period"] < 6].reset_index(drop=True))


def test_newcomers_are_served_the_most_engaged_items_not_an_arbitrary_tie(ratings, catalog):
    world = simulate(ratings, catalog, periods=4, exploration=0.5)
    log = world.log
    week0 = log[(log["period"] == 0) & log["engaged"]]
    newcomers = sorted(set(range(catalog.n_users)) - set(week0["user_idx"]))
    assert newcomers  # the fixture has users who engaged with nothing in week 0
    popularity = np.bincount(week0["item_idx"], minlength=catalog.n_items)
    week1 = log[(log["period"] == 1) & (log["source"] == "policy") & log["user_idx"].isin(newcomers)]
    served = week1.groupby("user_idx")["item_idx"].apply(list)
    assert len(served) == len(newcomers)
    fifth = np.sort(popularity)[-5]  # 5 policy slots of 10: the 5 most engaged items (ties at random)
    for items in served:
        assert len(items) == 5 and popularity[items].min() >= fifth > 0


def test_slates_hold_distinct_items_never_engaged_with_before(ratings, catalog):
    world = simulate(ratings, catalog, periods=6)
    log = world.log
    assert not log.duplicated(["user_idx", "period", "item_idx"]).any()
    engaged = log[log["engaged"]]
    first = engaged.groupby(["user_idx", "item_idx"])["period"].min()
    shown_after = log.merge(first.rename("first").reset_index(), on=["user_idx", "item_idx"])
    assert (shown_after["period"] <= shown_after["first"]).all()  # never shown again once engaged
    assert engaged.duplicated(["user_idx", "item_idx"]).sum() == 0


def test_exploration_sets_the_share_of_random_slots(ratings, catalog):
    world = simulate(ratings, catalog, exploration=0.3)
    later = world.log[world.log["period"] > 0]
    assert (later.groupby(["user_idx", "period"])["source"].apply(lambda s: (s == "exploration").sum()) == 3).all()
    assert (world.log[world.log["period"] == 0]["source"] == "exploration").all()  # nothing logged yet
    policy_only = simulate(ratings, catalog, exploration=0.0)
    assert (policy_only.log[policy_only.log["period"] > 0]["source"] == "policy").all()


def test_position_bias_scales_the_probability_of_lower_slots(ratings, catalog):
    flat = simulate(ratings, catalog, position_decay=0.0)
    biased = simulate(ratings, catalog, position_decay=1.0)
    row = biased.log.iloc[3]
    truth = float(biased.probabilities[row["user_idx"], row["item_idx"]])
    assert row["probability"] == pytest.approx(truth / (1 + row["position"]), rel=1e-6)
    assert biased.log["engaged"].mean() < flat.log["engaged"].mean()


def test_time_cuts_keep_later_periods_out_of_earlier_training_data(ratings, catalog):
    world = simulate(ratings, catalog, periods=6)
    split = world.split()
    assert split.train.frame["period"].max() == 4 and set(split.test.frame["period"]) == {5}
    validation = split.validation()
    assert validation.train.frame["period"].max() == 3 and set(validation.test.frame["period"]) == {4}
    log = world.impression_log()
    from tt_helpers.examples import training_data

    for train, last in ((split.train, 4), (validation.train, 3)):
        negatives = log.for_training(training_data(train, None, "any"))
        assert negatives["period"].max() <= last  # no impression from a later period
        assert not negatives["engaged"].any()  # impressions without engagement only
    assert len(split.train.frame) + len(split.test.frame) == int(world.log["engaged"].sum())


def test_truth_split_asks_for_each_users_truly_best_unengaged_items(ratings, catalog):
    world = simulate(ratings, catalog, periods=6)
    split, truth = world.split(), world.truth_split(top_n=5)
    test_users = set(split.test.frame["user_idx"])
    assert set(truth.test.frame["user_idx"]) == test_users
    assert (truth.test.frame.groupby("user_idx").size() == 5).all()
    trained = set(zip(split.train.frame["user_idx"], split.train.frame["item_idx"]))
    assert not trained & set(zip(truth.test.frame["user_idx"], truth.test.frame["item_idx"]))
    user = next(iter(sorted(test_users)))
    chosen = truth.test.frame[truth.test.frame["user_idx"] == user]["item_idx"].to_numpy()
    p = world.probabilities[user].clone()
    p[[i for u, i in trained if u == user]] = -1
    assert set(chosen) == set(torch.topk(p, 5).indices.tolist())


def test_truth_among_shown_items_keeps_only_what_the_user_was_shown_in_training(ratings, catalog):
    world = simulate(ratings, catalog, periods=6)
    split, truth = world.split(), world.truth_split(top_n=5, shown_only=True)
    log = world.log[world.log["period"] < 5]
    shown = set(zip(log["user_idx"], log["item_idx"]))
    trained = set(zip(split.train.frame["user_idx"], split.train.frame["item_idx"]))
    pairs = set(zip(truth.test.frame["user_idx"], truth.test.frame["item_idx"]))
    assert pairs <= shown and not pairs & trained  # shown in a training week, not engaged in training
    assert set(truth.test.frame["user_idx"]) <= set(split.test.frame["user_idx"])
    assert "shown in training" in truth.protocol
    user = truth.test.frame["user_idx"].iloc[0]
    candidates = [i for u, i in shown - trained if u == user]
    p = world.probabilities[user, candidates]
    chosen = truth.test.frame[truth.test.frame["user_idx"] == user]["item_idx"]
    assert set(chosen) == {candidates[j] for j in torch.topk(p, min(5, len(candidates))).indices.tolist()}
    full = world.truth_split(top_n=5).test.frame
    assert pairs - set(zip(full["user_idx"], full["item_idx"]))  # a different truth from the full one


@pytest.mark.parametrize("bad, message", [
    ({"periods": 2}, "periods"), ({"exploration": 1.5}, "exploration"), ({"engaged_share": 0}, "engaged_share"),
    ({"preference_strength": -1}, "preference_strength"), ({"slate_size": 0}, "slate_size"),
])
def test_world_config_is_validated(bad, message):
    with pytest.raises(ValueError, match=message):
        WorldConfig(**bad)


def test_negative_profile_describes_each_kind_against_the_truth(ratings, catalog):
    world = simulate(ratings, catalog, periods=6)
    profile = world.negative_profile(seed=0, would_like_top=10)
    assert list(profile.index) == ["uniform", "in-batch", "impression", "(the positives)"]
    train = world.split().train.frame
    users, items = train["user_idx"].to_numpy(copy=True), train["item_idx"].to_numpy(copy=True)
    direct = float(world.probabilities[torch.as_tensor(users), torch.as_tensor(items)].mean())
    assert profile.loc["(the positives)", "mean true probability"] == pytest.approx(direct, rel=1e-6)
    popularity = profile["median training engagements"]
    assert popularity["in-batch"] >= popularity["uniform"]  # drawn in proportion to popularity
    assert 0 < profile.loc["uniform", "negatives"] <= len(train)  # accidental hits left out
    assert profile.loc["in-batch", "negatives"] < len(train)  # some in-batch draws are the user's own
    assert 0 < profile.loc["impression", "negatives"] <= len(train)  # users without a pool get none


def test_impression_negatives_of_the_profile_are_never_training_engagements(ratings, catalog):
    world = simulate(ratings, catalog, periods=6)
    log = world.log
    skipped_then_taken = log[~log["engaged"]].merge(
        log[log["engaged"] & (log["period"] < 5)][["user_idx", "item_idx"]], on=["user_idx", "item_idx"]
    )
    assert len(skipped_then_taken)  # the fixture has items skipped first and engaged with later
    profile = world.negative_profile(seed=0, would_like_top=10)
    assert profile.loc["impression", "share in the user's true top 10"] <= 1.0
    assert profile.loc["impression", "negatives"] <= len(world.split().train.frame)
