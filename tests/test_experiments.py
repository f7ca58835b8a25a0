"""Runs: summaries over seeds, paired comparisons, selection on validation, intervals for plots."""

import numpy as np
import pandas as pd
import pytest

from tt_helpers import comparison
from tt_helpers.experiments import Runs

N_USERS = 40


def per_user(seed, level):
    rng = np.random.default_rng(seed)
    index = pd.Index(np.arange(N_USERS) * 3, name="user_idx")  # user ids that are not positions
    recall = np.clip(level + rng.normal(0, 0.15, N_USERS), 0, 1)
    ndcg = np.clip(0.6 * recall + rng.normal(0, 0.05, N_USERS), 0, 1)
    return pd.DataFrame({"Recall@100": recall, "NDCG@10": ndcg}, index=index)


def summary_of(frame):
    return {name: float(col.mean()) for name, col in frame.items()}


# model -> (per-user level, validation Recall@100 per seed, best epoch per seed)
MODELS = {
    "small": (0.30, [0.20, 0.22, 0.21], [3, 4, 3]),
    "large": (0.40, [0.26, 0.24, 0.25], [5, 6, 5]),
    "overfit": (0.45, [0.23, 0.22, 0.24], [2, 2, 3]),  # the best on test, not on validation
}


@pytest.fixture
def runs():
    runs = Runs("temporal per user")
    for m, (name, (level, validation, epochs)) in enumerate(MODELS.items()):
        for seed in range(3):
            frame = per_user(100 * m + seed, level)
            runs.add(
                name,
                summary_of(frame),
                frame,
                seed=seed,
                best_epoch=epochs[seed],
                **{"val_Recall@100": validation[seed]},
            )
    baseline = per_user(999, 0.35)
    runs.add("popular", summary_of(baseline), baseline)  # one deterministic run, no seed
    return runs


def test_table_means_are_the_means_over_seeds(runs):
    table = runs.table(["Recall@100", "NDCG@10"], digits=6)
    assert list(table.index) == ["small", "large", "overfit", "popular"]
    assert table.index.name == "temporal per user"
    for name in MODELS:
        frames = runs.per_user[name]
        for metric in ("Recall@100", "NDCG@10"):
            by_hand = np.mean([f[metric].mean() for f in frames])
            assert table.loc[name, metric] == pytest.approx(by_hand, abs=1e-6)
        assert table.loc[name, "seeds"] == 3
        assert table.loc[name, "validation Recall@100"] == pytest.approx(np.mean(MODELS[name][1]), abs=1e-6)
        assert table.loc[name, "best epochs"] == ", ".join(str(e) for e in MODELS[name][2])
    assert table.loc["popular", "seeds"] == 1
    assert table.loc["popular", "Recall@100"] == pytest.approx(
        runs.per_user["popular"][0]["Recall@100"].mean(), abs=1e-6
    )
    assert table.loc["popular", "best epochs"] == "-"
    assert list(runs.table(["Recall@100"], names=["overfit", "small"]).index) == ["overfit", "small"]
    with pytest.raises(KeyError, match="medium"):
        runs.table(["Recall@100"], names=["medium"])


def test_frame_has_one_row_per_run(runs):
    frame = runs.frame()
    assert len(frame) == 3 * 3 + 1
    assert frame.groupby("model").size().to_dict() == {"large": 3, "overfit": 3, "popular": 1, "small": 3}
    assert frame.loc[frame.model == "popular", "seed"].isna().all()


@pytest.mark.parametrize("metric", ["Recall@100", "NDCG@10"])
def test_compare_is_comparison_compare_on_the_stored_frames(runs, metric):
    ours = runs.compare("large", "small", metric)
    direct = comparison.compare(runs.per_user["large"], runs.per_user["small"], metric, names=("large", "small"))
    assert ours == direct
    assert ours.n_seeds_a == 3 and ours.n_users == N_USERS
    assert ours.a_beats_b  # a 0.1 gap over 40 users, seeds averaged
    against_baseline = runs.compare("small", "popular", metric, seed=3)
    assert against_baseline == comparison.compare(
        runs.per_user["small"], runs.per_user["popular"], metric, names=("small", "popular"), seed=3
    )
    table = runs.comparisons([("large", "small"), ("small", "popular")], metric)
    assert list(table.index) == ["large vs small", "small vs popular"]
    assert table.loc["large vs small", "difference"] == pytest.approx(round(direct.difference, 4))
    with pytest.raises(KeyError, match="medium"):
        runs.compare("medium", "small")


def test_best_on_validation_picks_the_highest_validation_metric_not_test(runs):
    assert runs.best_on_validation(["small", "large", "overfit"]) == "large"
    assert runs.best_on_validation(["small", "overfit"]) == "overfit"
    assert runs.best_on_validation(["small", "large", "popular"]) == "large"  # a baseline has no validation value
    test_best = runs.table(["Recall@100"]).drop(index="popular")["Recall@100"].idxmax()
    assert test_best == "overfit"  # selection on test would have picked another model
    with pytest.raises(KeyError, match="NDCG@10"):
        runs.best_on_validation(["small"], metric="NDCG@10")


def test_intervals_columns_and_values(runs):
    frame = runs.intervals("Recall@100", ["small", "popular"], seed=5)
    assert list(frame.columns) == ["mean", "low", "high"] and list(frame.index) == ["small", "popular"]
    seeds_averaged = pd.concat([f["Recall@100"] for f in runs.per_user["small"]], axis=1).mean(axis=1).to_numpy()
    assert frame.loc["small", "mean"] == pytest.approx(seeds_averaged.mean())
    mean, low, high = comparison.paired_bootstrap(seeds_averaged, np.zeros(N_USERS), seed=5)
    assert (frame.loc["small", "low"], frame.loc["small", "high"]) == pytest.approx((low, high))
    assert (frame["low"] < frame["mean"]).all() and (frame["mean"] < frame["high"]).all()
    assert list(runs.intervals("NDCG@10").index) == runs.names


def test_add_refuses_a_second_unseeded_run_of_a_name(runs):
    frame = per_user(7, 0.3)
    with pytest.raises(ValueError, match="popular"):
        runs.add("popular", summary_of(frame), frame)
    with pytest.raises(ValueError, match="small"):
        runs.add("small", summary_of(frame), frame)  # seeded runs recorded: a fourth one needs its seed too
    runs.add("small", summary_of(frame), frame, seed=3)
    assert len(runs.per_user["small"]) == 4 and runs.table(["Recall@100"]).loc["small", "seeds"] == 4


# --------------------------------------------------------------------------- refit, kept models


def tiny_split():
    from tt_helpers import splits
    from tt_helpers.catalog import Catalog

    rng = np.random.default_rng(0)
    rows = [(100 + u, 1000 + int(i), 5.0 if i % 2 == u % 2 else 2.0, 50 + k)
            for u in range(16) for k, i in enumerate(rng.choice(24, 10, replace=False))]
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return splits.temporal_user_split(ratings, Catalog.from_frames(ratings))


def test_refit_false_keeps_the_early_stopped_run_and_serves_with_the_whole_training_history():
    import torch

    from tt_helpers.experiments import fit_on_split
    from tt_helpers.towers import TowerConfig
    from tt_helpers.training import TrainConfig

    split = tiny_split()
    tower = TowerConfig(embedding_dim=8, user_features=(), use_history=True)
    training = TrainConfig(progress=False, batch_size=16, max_epochs=3, positives="any")
    kept = fit_on_split(split, tower, training, refit=False)
    refit = fit_on_split(split, tower, training)
    assert kept.best_epoch == refit.best_epoch  # the same early-stopped run chose both
    # the kept model's weights are the validation run's (trained on less data), not a refit's
    assert not torch.equal(kept.recommender.model.embed_items(), refit.recommender.model.embed_items())
    # ... and it reads each user's history from the whole training split at serving time
    served = kept.recommender.model.history
    assert len(served.items) == len(split.train.frame) > len(split.validation().train.frame)


def test_kept_models_are_evaluated_again_without_refitting():
    from tt_helpers import evaluation
    from tt_helpers.baselines import PopularRecommender
    from tt_helpers.experiments import run_variants
    from tt_helpers.towers import TowerConfig
    from tt_helpers.training import TrainConfig

    split = tiny_split()
    variants = {"ids": (TowerConfig(embedding_dim=8), TrainConfig(progress=False, batch_size=16, max_epochs=2))}
    runs = run_variants(split, variants, seeds=(0, 1), keep_models=True, ks=(5,))
    runs.add_baselines({"popular": PopularRecommender().fit(split.train)}, split, ks=(5,))
    assert [seed for seed, _ in runs.models["ids"]] == [0, 1]
    odd = np.arange(1, split.catalog.n_items, 2)
    again = runs.reevaluate(split, ks=(5,), relevant_items=odd)
    assert again.names == ["ids", "popular"]
    seed1 = runs.models["ids"][1][1]
    expected = evaluation.evaluate(seed1, split, ks=(5,), relevant_items=odd)["Recall@5"]
    assert again.frame().query("model == 'ids' and seed == 1")["Recall@5"].item() == pytest.approx(expected)
    assert again.frame()["best_epoch"].dropna().tolist() == runs.frame()["best_epoch"].dropna().tolist()
    with pytest.raises(KeyError, match="keep_models"):
        Runs("p").reevaluate(split, names=["ids"])


def test_later_seeds_train_for_the_epochs_the_first_seeds_validation_run_chose():
    from dataclasses import replace

    from tt_helpers import evaluation
    from tt_helpers.experiments import fit_on_split, run_variants
    from tt_helpers.towers import TowerConfig
    from tt_helpers.training import TrainConfig

    split = tiny_split()
    tower = TowerConfig(embedding_dim=8)
    training = TrainConfig(progress=False, batch_size=16, max_epochs=4, patience=1, early_stopping_metric="Recall@5")
    variants = {"ids": (tower, training)}
    once = run_variants(split, variants, seeds=(0, 1, 2), ks=(5,), keep_models=True, workers=1)
    per_seed = run_variants(split, variants, seeds=(0, 1, 2), ks=(5,), epochs_per_seed=True, workers=1)
    chosen = fit_on_split(split, tower, training).best_epoch  # seed 0's validation run
    frame, frame_per_seed = once.frame(), per_seed.frame()
    assert frame["best_epoch"].tolist() == [chosen] * 3
    # only seed 0 had a validation run; the others were trained on split.train for `chosen` epochs
    assert frame["val_Recall@5"].notna().tolist() == [True, False, False]
    assert frame_per_seed["val_Recall@5"].notna().all()
    for _, model in once.models["ids"]:
        assert len(model.history_) == chosen  # trained on the whole training split, no validation run
    # seed 0 is the same fit either way; seed 1's own validation run is the only difference
    pd.testing.assert_series_equal(frame.iloc[0], frame_per_seed.iloc[0], check_names=False)
    seed1 = fit_on_split(split, tower, replace(training, seed=1), epochs=chosen).recommender
    expected = evaluation.evaluate(seed1, split, ks=(5,))["Recall@5"]
    assert frame.loc[1, "Recall@5"] == pytest.approx(expected)
    table = once.table(["Recall@5"], validation_metric="Recall@5")
    assert table.loc["ids", "best epochs"] == str(chosen)  # one number: every seed trained as many
    assert table.loc["ids", "validation Recall@5"] == pytest.approx(round(frame.loc[0, "val_Recall@5"], 4))
    kept = run_variants(split, variants, seeds=(0, 1), ks=(5,), refit=False, workers=1).frame()
    assert kept["val_Recall@5"].notna().all()  # refit=False: every seed keeps its own validation run
    with pytest.raises(ValueError, match="refit=False"):
        fit_on_split(split, tower, training, refit=False, epochs=2)
    with pytest.raises(ValueError, match="seeds is empty"):
        run_variants(split, variants, seeds=(), ks=(5,))


def test_a_screens_validation_run_is_reused_not_run_again(monkeypatch):
    from dataclasses import replace

    from tt_helpers import experiments
    from tt_helpers.towers import TowerConfig
    from tt_helpers.training import TrainConfig

    split = tiny_split()
    training = TrainConfig(progress=False, batch_size=16, max_epochs=4, patience=1, early_stopping_metric="Recall@5")
    screened = {"tau 0.2": (TowerConfig(embedding_dim=8, temperature=0.2), training),
                "tau 0.5": (TowerConfig(embedding_dim=8, temperature=0.5), training)}
    screen = experiments.run_variants(split, screened, seeds=(0,), ks=(5,), refit=False, workers=1)
    assert set(screen.validation_runs) == {("tau 0.2", 0), ("tau 0.5", 0)}
    plain = experiments.run_variants(split, screened, seeds=(0, 1), ks=(5,), workers=1)

    chosen = []  # the validation runs made
    choose = experiments.choose_epochs
    monkeypatch.setattr(experiments, "choose_epochs", lambda *a, **k: chosen.append(a[1]) or choose(*a, **k))
    reused = experiments.run_variants(split, screened, seeds=(0, 1), ks=(5,), workers=1, reuse=screen)
    assert chosen == []  # both variants' epochs came from the screen
    pd.testing.assert_frame_equal(reused.frame(), plain.frame())  # the same runs, to the bit
    for name in screened:
        for a, b in zip(reused.per_user[name], plain.per_user[name]):
            pd.testing.assert_frame_equal(a, b)
    assert reused.validation_runs[("tau 0.2", 0)].chosen == screen.validation_runs[("tau 0.2", 0)].chosen

    # not the same fit: another config under the same name, another split, other arguments, another seed
    other = {"tau 0.2": (screened["tau 0.2"][0], replace(training, learning_rate=0.05))}
    experiments.run_variants(split, other, seeds=(0,), ks=(5,), workers=1, reuse=screen)
    experiments.run_variants(tiny_split(), screened, seeds=(0,), ks=(5,), workers=1, reuse=screen)
    experiments.run_variants(split, screened, seeds=(0,), ks=(5,), workers=1, reuse=screen, extras={})
    experiments.run_variants(split, screened, seeds=(1,), ks=(5,), workers=1, reuse=screen)
    assert len(chosen) == 1 + 2 + 2 + 2


def test_refit_false_takes_the_first_seeds_model_from_a_kept_validation_run(monkeypatch):
    from tt_helpers import experiments
    from tt_helpers.towers import TowerConfig
    from tt_helpers.training import TrainConfig

    split = tiny_split()
    training = TrainConfig(progress=False, batch_size=16, max_epochs=4, patience=1, early_stopping_metric="Recall@5")
    variant = (TowerConfig(embedding_dim=8), training)
    refitted = experiments.run_variants(split, {"refit": variant}, seeds=(0, 1), ks=(5,), workers=1,
                                        keep_models=True)  # its validation run keeps its model
    assert refitted.validation_runs[("refit", 0)].model is not None
    plain = experiments.run_variants(split, {"kept": variant}, seeds=(0, 1, 2), ks=(5,), refit=False, workers=1)

    fitted = []  # the validation runs made for refit=False
    fit_on_split = experiments.fit_on_split
    monkeypatch.setattr(experiments, "fit_on_split",
                        lambda *a, **k: fitted.append(a[2].seed) or fit_on_split(*a, **k))
    reused = experiments.run_variants(split, {"kept": variant}, seeds=(0, 1, 2), ks=(5,), refit=False, workers=1,
                                      reuse=refitted, keep_models=True)
    assert fitted == [1, 2]  # seed 0's early-stopped model is the refitted variant's validation run
    pd.testing.assert_frame_equal(reused.frame(), plain.frame())  # the same results, to the bit
    for a, b in zip(reused.per_user["kept"], plain.per_user["kept"]):
        pd.testing.assert_frame_equal(a, b)
    assert [seed for seed, _ in reused.models["kept"]] == [0, 1, 2]
    # without kept models (keep_models=False), nothing to reuse: seed 0 runs again
    bare = experiments.run_variants(split, {"refit": variant}, seeds=(0,), ks=(5,), workers=1)
    fitted.clear()
    experiments.run_variants(split, {"kept": variant}, seeds=(0,), ks=(5,), refit=False, workers=1, reuse=bare)
    assert fitted == [0]
