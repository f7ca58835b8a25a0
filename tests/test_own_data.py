"""The public recipe on a reader's own data: detection, fitting, recommend's three sources, save and load."""

import contextlib
import io
import json
import multiprocessing
import shutil

import numpy as np
import pandas as pd
import pytest

import tt_helpers
from tt_helpers import (
    Catalog,
    UnknownIdError,
    fit_two_tower,
    fit_two_tower_per_seed,
    fit_two_tower_settings,
    load_recommender,
    screen_settings,
    temporal_user_split,
)
from tt_helpers.catalog import IdTypeError
from tt_helpers.examples import positive_examples
from tt_helpers.own_data import (
    RECIPE_DEFAULTS,
    RECIPE_FILE,
    WEIGHTS_FILE,
    FittedTwoTower,
    RecommenderFileError,
    detect_kind,
    valid_settings,
)
from tt_helpers.splits import Interactions

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

FAST = {"embedding_dim": 16, "max_epochs": 2, "early_stopping_metric": "Recall@10", "verbose": False}
N_USERS, N_ITEMS, PER_USER = 30, 50, 10
FEATURES_ONLY_USER, COLD_ITEM = "u-new", "i-cold"  # in the feature tables only


def interaction_log(seed=0, ids=str, feedback="rating"):
    """Users of two taste groups (parity), PER_USER interactions each; ``ids`` str ("u3", "i7") or int."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(N_USERS):
        liked = [i for i in range(N_ITEMS) if i % 2 == u % 2]
        for t, i in enumerate(rng.choice(liked, PER_USER, replace=False)):
            rows.append((u, int(i), float(rng.integers(1, 6)), 1000 + 10 * t))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    if ids is str:
        frame["user_id"] = "u" + frame["user_id"].astype(str)
        frame["item_id"] = "i" + frame["item_id"].astype(str)
    if feedback == "weight":
        frame = frame.rename(columns={"rating": "weight"})
    elif feedback is None:
        frame = frame.drop(columns="rating")
    return frame


def user_table():
    users = [f"u{u}" for u in range(N_USERS)] + [FEATURES_ONLY_USER]
    n = len(users)
    rng = np.random.default_rng(1)
    table = pd.DataFrame({
        "user_id": users,
        "age": rng.integers(16, 70, n).astype(float),  # many values: numeric
        "group": [("odd" if u % 2 else "even") for u in range(N_USERS)] + ["even"],  # categorical
        "tags": [list(rng.choice(["a", "b", "c", "d"], 2, replace=False)) for _ in range(n)],  # multi-valued
    })
    table.loc[0, "age"] = np.nan  # a missing value: u0's age goes to the missing bucket
    table.at[1, "tags"] = None  # a missing bag
    return table


def item_table():
    items = [f"i{i}" for i in range(N_ITEMS)] + [COLD_ITEM]
    return pd.DataFrame({
        "item_id": items,
        "title": [f"the film number {i}" for i in range(N_ITEMS)] + ["a film nobody saw"],  # text
        "studio": [i % 3 for i in range(N_ITEMS + 1)],  # few integers: categorical
        "year": [1950 + i for i in range(N_ITEMS)] + [None],  # many integers (and a missing one): numeric
    })


@pytest.fixture(scope="module")
def fitted():
    """String ids with ratings and both feature tables; the printed detection is captured."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fit = fit_two_tower(interaction_log(), user_table(), item_table(), **(FAST | {"verbose": True}))
    return fit, out.getvalue()


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    return fitted[0].save(tmp_path_factory.mktemp("saved") / "recommender")


def copy_of(saved, tmp_path):
    return shutil.copytree(saved, tmp_path / "copy")


# --------------------------------------------------------------------------- settings and inputs


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="worker processes are forked")
def test_fits_per_seed_in_workers_are_the_loops_fits_and_the_first_report_is_printed_here(fitted, capsys):
    seeds = (0, 1, 2)
    fits = fit_two_tower_per_seed(interaction_log(), user_table(), item_table(), seeds=seeds,
                                  **(FAST | {"verbose": True}))
    assert capsys.readouterr().out == fitted[1]  # seed 0's report, as fit_two_tower printed it
    asked = ["u0", "u5", FEATURES_ONLY_USER]
    for seed, fit in zip(seeds, fits):
        alone = fitted[0] if seed == 0 else fit_two_tower(interaction_log(), user_table(), item_table(), seed=seed,
                                                          **FAST)
        assert fit.best_epoch == alone.best_epoch
        pd.testing.assert_frame_equal(fit.recommend(asked, k=5), alone.recommend(asked, k=5), check_exact=True)
    assert not fits[0].recommend(asked, k=5).equals(fits[1].recommend(asked, k=5))  # the seeds differ
    with pytest.raises(ValueError, match="seeds is empty"):
        fit_two_tower_per_seed(interaction_log(), seeds=())


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="worker processes are forked")
def test_a_screen_of_settings_gives_the_loops_fits_in_the_order_of_the_settings(fitted):
    fast = {k: v for k, v in FAST.items() if k != "embedding_dim"}
    settings = [{"embedding_dim": 16}, {"embedding_dim": 8, "use_history": False}]
    fits = fit_two_tower_settings(interaction_log(), user_table(), item_table(), settings=settings, seed=0, **fast)
    assert [fit.tower.embedding_dim for fit in fits] == [16, 8]
    assert [fit.tower.use_history for fit in fits] == [True, False]
    asked = ["u0", "u5", FEATURES_ONLY_USER]
    pd.testing.assert_frame_equal(fits[0].recommend(asked, k=5), fitted[0].recommend(asked, k=5),
                                  check_exact=True)  # the first setting is FAST: the fixture's fit
    alone = fit_two_tower(interaction_log(), user_table(), item_table(), seed=0, **(fast | settings[1]))
    pd.testing.assert_frame_equal(fits[1].recommend(asked, k=5), alone.recommend(asked, k=5), check_exact=True)
    with pytest.raises(ValueError, match="settings is empty"):
        fit_two_tower_settings(interaction_log(), settings=[])
    with pytest.raises(TypeError, match="seed is fit_two_tower_settings' own argument"):
        fit_two_tower_settings(interaction_log(), settings=[{"seed": 1}])


def test_defaults_are_valid_settings_and_overrides_reach_the_configs(fitted):
    fit, _ = fitted
    assert set(RECIPE_DEFAULTS) <= set(valid_settings())
    assert fit.tower.embedding_dim == 16 != RECIPE_DEFAULTS["embedding_dim"]  # the override
    assert fit.tower.temperature == RECIPE_DEFAULTS["temperature"] and fit.tower.use_history
    assert fit.training.max_epochs == 2 and fit.training.negatives == "in-batch" and fit.training.logq_correction
    assert fit.tower.user_features == ("user_id", "col:age", "col:group", "col:tags")
    assert fit.tower.item_features == ("item_id", "col:title", "col:studio", "col:year")


def test_unknown_override_is_a_clear_error_listing_the_valid_names():
    with pytest.raises(
        TypeError, match=r"\['embeding_dim'\] \(did you mean 'embedding_dim' for 'embeding_dim'\?\).*temperature"
    ):
        fit_two_tower(interaction_log(), embeding_dim=32)


def test_rating_and_weight_together_are_refused():
    log = interaction_log()
    log["weight"] = 1.0
    with pytest.raises(ValueError, match="both a rating and a weight column"):
        fit_two_tower(log, **FAST)


def test_too_short_histories_for_validation_give_a_clear_error():
    log = interaction_log().groupby("user_id").head(3)  # 3 interactions each: no user has a validation part
    with pytest.raises(ValueError, match="validation_fraction=0"):
        fit_two_tower(log, **FAST)


# --------------------------------------------------------------------------- feature detection


@pytest.mark.parametrize(
    "values, kind",
    [
        (["m", "f", "f", "m", None, "f"], "categorical"),
        ([1, 2, 3, 1, 2, 3], "categorical"),  # few integers
        (list(range(15)), "numeric"),  # few integers, but one per row: a quantity, not a code
        ([True, False, True], "categorical"),
        (list(range(100)), "numeric"),  # many integers
        ([0.5, 1.25, 3.0, np.nan], "numeric"),
        (pd.to_datetime(["2020-01-01", "2021-06-01", None]), "numeric"),
        ([["a", "b"], [], None, ("c",)], "multi-valued"),
        (["a long title", "another long one", "third title here", None], "text"),
        (["94110", "10001", "60601", "94110"], "categorical"),  # codes: no spaces
        ([None, np.nan, None], "ignore"),
    ],
)
def test_detect_kind(values, kind):
    assert detect_kind(pd.Series(values)) == kind


def test_detection_is_printed_and_recorded(fitted):
    fit, printed = fitted
    kinds = dict(zip(fit.features["column"], fit.features["kind"]))
    assert kinds == {"age": "numeric", "group": "categorical", "tags": "multi-valued", "title": "text",
                     "studio": "categorical", "year": "numeric"}
    assert "feature_kinds" in printed and "multi-valued" in printed and "quantile buckets" in printed
    assert fit.features.set_index("column").loc["group", "cardinality"] == 2


def test_feature_kinds_override_and_ignore():
    fit = fit_two_tower(interaction_log(), user_table(), item_table(), validation_fraction=0,
                        feature_kinds={"year": "categorical", "tags": "ignore"}, **(FAST | {"max_epochs": 1}))
    kinds = dict(zip(fit.features["column"], fit.features["kind"]))
    assert kinds["year"] == "categorical" and kinds["tags"] == "ignore"
    assert "col:tags" not in fit.tower.user_features
    year = next(s for s in fit.recommender.model.item_tower.table.specs if s.name == "col:year")
    assert year.kind == "categorical"  # a vocabulary, not buckets
    with pytest.raises(ValueError, match="no feature table has"):
        fit_two_tower(interaction_log(), user_table(), feature_kinds={"shoe_size": "numeric"}, **FAST)
    with pytest.raises(ValueError, match="unknown kind"):
        fit_two_tower(interaction_log(), user_table(), feature_kinds={"age": "ordinal"}, **FAST)


def test_missing_values_go_to_the_missing_bucket(fitted):
    fit, _ = fitted
    table, catalog = fit.recommender.model.user_tower.table, fit.catalog
    u0, u1, u2 = catalog.user_index(["u0", "u1", "u2"])
    assert int(table.columns["col:age"].ids[u0]) == 0 < int(table.columns["col:age"].ids[u2])
    tags = table.columns["col:tags"]
    assert int(tags.offsets[u1 + 1] - tags.offsets[u1]) == 0 < int(tags.offsets[u2 + 1] - tags.offsets[u2])
    cold = catalog.item_index([COLD_ITEM])[0]
    assert int(fit.recommender.model.item_tower.table.columns["col:year"].ids[cold]) == 0  # year None


# --------------------------------------------------------------------------- recommend


def test_recommend_columns_ranks_and_exclude_seen(fitted):
    fit, _ = fitted
    log = interaction_log()
    recs = fit.recommend(["u3", "u4"], k=7)
    assert list(recs.columns) == ["user_id", "item_id", "score", "rank", "source"]
    for user, block in recs.groupby("user_id"):
        assert block["rank"].tolist() == list(range(1, 8))
        assert block["score"].is_monotonic_decreasing
        assert not set(block["item_id"]) & set(log.loc[log.user_id == user, "item_id"])
    everything = fit.recommend("u3", k=fit.catalog.n_items, exclude_seen=False)
    unseen = fit.recommend("u3", k=fit.catalog.n_items)
    assert len(everything) == N_ITEMS + 1 and len(unseen) == N_ITEMS + 1 - PER_USER  # fewer rows, not an error
    assert COLD_ITEM in set(everything["item_id"])  # an item of item_features only can be recommended


def test_the_three_sources(fitted):
    fit, _ = fitted
    recs = fit.recommend(["u3", FEATURES_ONLY_USER, "stranger"], k=5)
    assert recs.groupby("user_id", sort=False)["source"].first().to_dict() == {
        "u3": "model", FEATURES_ONLY_USER: "features", "stranger": "popular"}
    counts = interaction_log()["item_id"].value_counts()
    popular = recs[recs.source == "popular"]
    assert popular["score"].tolist() == sorted(counts, reverse=True)[:5]
    assert (counts[popular["item_id"]].to_numpy() == popular["score"].to_numpy()).all()
    new = fit.catalog.user_index([FEATURES_ONLY_USER])
    assert int(fit.recommender.model.user_tower.table.columns["user_id"].ids[new[0]]) == 0  # the OOV user id
    model_scores = fit.recommender.score(new)[0].numpy()
    served = recs[recs.source == "features"]
    assert np.allclose(served["score"], model_scores[fit.catalog.item_index(served["item_id"])])


def test_unknown_users_error_and_wrong_id_type(fitted):
    fit, _ = fitted
    with pytest.raises(UnknownIdError, match=r"'stranger'.*unknown_users='fallback'"):
        fit.recommend(["u3", "stranger"], unknown_users="error")
    assert fit.recommend([FEATURES_ONLY_USER], k=3, unknown_users="error")["source"].eq("features").all()
    with pytest.raises(IdTypeError, match="astype"):
        fit.recommend([3, 4])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        fit.recommend(["u3"], k=0)
    pd.testing.assert_frame_equal(fit.recommend(["u3"], k=500), fit.recommend(["u3"], k=N_ITEMS + 1))  # clamped


def test_int_ids_with_weights():
    log = interaction_log(ids=int, feedback="weight")
    with pytest.warns(UserWarning, match="Recall@100 is 1 at every epoch"):  # 50 items: K covers them all
        fit_two_tower(log, **(FAST | {"early_stopping_metric": "Recall@100", "max_epochs": 1}))
    fit = fit_two_tower(log, **FAST)
    assert fit.training.positives == "weighted" and fit.settings["feedback"] == "weight"
    recs = fit.recommend(np.array([0, 1]), k=4)
    assert recs["user_id"].dtype == np.int64 and recs["item_id"].dtype == np.int64
    assert recs["source"].eq("model").all() and len(recs) == 8
    train = Interactions(fit.catalog.add_indices(log), fit.catalog)
    assert np.allclose(positive_examples(train, "weighted")["weight"], log["weight"])  # the loss' weights


def test_no_feedback_column_and_no_validation():
    fit = fit_two_tower(interaction_log(feedback=None), validation_fraction=0, **(FAST | {"max_epochs": 1}))
    assert fit.training.positives == "any" and fit.best_epoch == 1 and fit.validation_history is None
    assert fit.recommend(["u0"], k=3)["rank"].tolist() == [1, 2, 3]


# --------------------------------------------------------------------------- save and load


def test_save_and_load_give_the_same_recommendations(fitted, saved):
    fit, _ = fitted
    loaded = load_recommender(saved)
    assert isinstance(loaded, FittedTwoTower) and loaded.tower == fit.tower and loaded.training == fit.training
    users = ["u0", "u3", FEATURES_ONLY_USER, "stranger"]
    pd.testing.assert_frame_equal(loaded.recommend(users, k=20), fit.recommend(users, k=20))
    pd.testing.assert_frame_equal(loaded.features, fit.features)
    assert loaded.vocabularies == fit.vocabularies and loaded.best_epoch == fit.best_epoch
    recipe = json.loads((saved / RECIPE_FILE).read_text())
    assert recipe["format_version"] == 1 and recipe["tt_helpers_version"] == tt_helpers.__version__
    group = next(f for f in recipe["user_features"] if f["name"] == "col:group")
    assert group["vocabulary"] == ["even", "odd"]


def test_truncated_weights_give_a_clear_error(saved, tmp_path):
    folder = copy_of(saved, tmp_path)
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(RecommenderFileError, match=r"weights\.pt is truncated or corrupted.*Refit"):
        load_recommender(folder)


def test_corrupted_json_gives_a_clear_error(saved, tmp_path):
    folder = copy_of(saved, tmp_path)
    text = (folder / RECIPE_FILE).read_text()
    (folder / RECIPE_FILE).write_text(text[:200])
    with pytest.raises(RecommenderFileError, match=r"recipe\.json is not valid JSON.*Refit"):
        load_recommender(folder)
    recipe = json.loads(text)
    del recipe["catalog"]
    (folder / RECIPE_FILE).write_text(json.dumps(recipe))
    with pytest.raises(RecommenderFileError, match=r"recipe\.json is incomplete or corrupted.*Refit"):
        load_recommender(folder)


def test_other_format_version_and_missing_path(saved, tmp_path):
    folder = copy_of(saved, tmp_path)
    recipe = json.loads((folder / RECIPE_FILE).read_text())
    recipe["format_version"] = 99
    (folder / RECIPE_FILE).write_text(json.dumps(recipe))
    with pytest.raises(RecommenderFileError, match="format version 99.*reads format version 1"):
        load_recommender(folder)
    with pytest.raises(RecommenderFileError, match="does not exist"):
        load_recommender(tmp_path / "nowhere")
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(RecommenderFileError, match=r"weights\.pt is missing"):
        load_recommender(folder)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="worker processes are forked")
def test_a_screen_scores_each_setting_on_the_validation_split_and_never_reads_test():
    log = interaction_log()
    catalog = Catalog.from_frames(log, user_table(), item_table())
    split = temporal_user_split(log, catalog)
    seen = []

    def score(recommender, validation):
        seen.append(validation)
        return float(len(seen)) if recommender.tower.embedding_dim == 8 else 0.0

    fast = {k: v for k, v in FAST.items() if k != "embedding_dim"}
    scores = screen_settings(split, {"d 16": {"embedding_dim": 16}, "d 8": {"embedding_dim": 8}}, score,
                             user_features=user_table(), item_features=item_table(), **fast)
    assert list(scores.index) == ["d 16", "d 8"] and scores.idxmax() == "d 8"
    validation = split.validation()
    for given in seen:  # scored on the validation split, whose test part is a slice of split.train
        pd.testing.assert_frame_equal(given.test.frame, validation.test.frame)
    assert len(validation.train.frame) + len(validation.test.frame) == len(split.train.frame)
    with pytest.raises(ValueError, match="settings is empty"):
        screen_settings(split, {}, score)
